"""Name -> component lookups: method recipes, losses, datasets, noise models.

Third-party packages add methods through the entry-point group `aunce_bench.methods`: an entry point
named N pointing to a `Recipe` subclass makes `recipe: N` usable in a method YAML.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from aunce_bench.data.formats import FORMATS
from aunce_bench.data.noise import NOISE_MODELS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.errors import UserError
from aunce_bench.losses import aunce_loss, contrastive, supervised, weighted_bce
from aunce_bench.losses.noise_robust import ELR, coteaching
from aunce_bench.specs import LossSpec

if TYPE_CHECKING:
    from aunce_bench.recipes import Recipe

RECIPES: dict[str, type["Recipe"]] = {}
SUPERVISED_LOSSES: dict[str, Callable] = {"wce": weighted_bce, "bce": supervised.bce, "focal": supervised.focal,
                                           "asl": supervised.asymmetric, "gce": supervised.gce, "elr": ELR}
PAIR_LOSSES: dict[str, Callable] = {"coteaching": coteaching}  # two networks' logits (recipe coteaching)
CONTRASTIVE_LOSSES: dict[str, Callable] = {"aunce": aunce_loss, "supcon": contrastive.supcon,
                                           "simclr": contrastive.simclr, "hcl": contrastive.hcl}
DATASETS: dict[str, str] = {
    profile.dataset_name: f"SynthAU, {profile.name} profile: {len(profile.labels.labelled_aus)} labelled AUs, "
    f"{profile.labels.n_subjects} subjects (embedded, generated on demand)"
    for profile in PROFILES.values()
} | {
    f.name: f"{f.description} (licensed; aunce-bench prepare {f.name})" for f in FORMATS.values() if f.dataset
}
__all__ = ["CONTRASTIVE_LOSSES", "DATASETS", "NOISE_MODELS", "PAIR_LOSSES", "RECIPES", "SUPERVISED_LOSSES", "get_recipe",
           "loss"]


def register_recipe(name: str):
    def register(cls):
        RECIPES[name] = cls
        return cls

    return register


def _unknown(kind: str, name: str, known) -> UserError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserError(f"unknown {kind} '{name}'{hint}; known: {', '.join(sorted(known))}")


def get_recipe(name: str) -> type["Recipe"]:
    import aunce_bench.recipes  # noqa: F401  (registers the built-in recipes)

    if name not in RECIPES:
        for entry in entry_points(group="aunce_bench.methods"):
            if entry.name == name:
                RECIPES[name] = entry.load()
    if name not in RECIPES:
        raise _unknown("recipe", name, RECIPES)
    return RECIPES[name]


def check_loss(spec: LossSpec, where: str) -> None:
    """A UserError naming `where` unless `spec` names a known loss and only options its function takes."""
    table = SUPERVISED_LOSSES | PAIR_LOSSES | CONTRASTIVE_LOSSES
    if spec.name not in table:
        raise UserError(f"{where}: field 'loss.name': {_unknown('loss', spec.name, table)}")
    options = loss_options(spec.name)
    unknown = [key for key in spec.model_dump() if key != "name" and key not in options]
    if unknown:
        raise UserError(f"{where}: field 'loss.{unknown[0]}': loss '{spec.name}' has no option '{unknown[0]}'; "
                        f"its options: {', '.join(options) or 'none'}")


def loss_options(name: str) -> dict[str, object]:
    """The keyword options of the known loss `name` (what a method's `loss` may set) and their defaults."""
    parameters = inspect.signature((SUPERVISED_LOSSES | PAIR_LOSSES | CONTRASTIVE_LOSSES)[name]).parameters
    return {key: p.default for key, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def loss(spec: LossSpec, table: dict[str, Callable]) -> Callable:
    """The loss function named by `spec`, with the spec's extra fields bound as keyword arguments."""
    if spec.name not in table:
        raise _unknown("loss", spec.name, table)
    options = {key: value for key, value in spec.model_dump().items() if key != "name"}
    return functools.partial(table[spec.name], **options)
