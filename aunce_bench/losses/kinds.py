"""The kinds of loss a recipe takes, one registry each, and the checks planning makes of a method's `loss`.

- supervised: (logits [B, K], labels [B, K], class weights [K]) -> loss; `recipe: supervised`, `supervised_probe`.
  A class with `per_frame = True` is built with (frames, AUs) and called with each batch's frame indices (ELR).
- co-teaching: (two networks' logits, labels, class weights, epoch) -> their two losses; `recipe: coteaching`.
- contrastive: (two views' embeddings, labels) -> loss; `recipe: contrastive_probe`.

A loss's keyword-only parameters are the options a method's `loss:` may set. The built-in losses register in
the modules of this package; importing `aunce_bench.losses` registers them all.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from aunce_bench.errors import UserError
from aunce_bench.registry import Registry, unknown_name

if TYPE_CHECKING:
    from aunce_bench.specs import LossSpec

SUPERVISED_LOSSES: Registry[Callable] = Registry("supervised loss", "aunce_bench.supervised_losses")
COTEACHING_LOSSES: Registry[Callable] = Registry("co-teaching loss", "aunce_bench.coteaching_losses")
CONTRASTIVE_LOSSES: Registry[Callable] = Registry("contrastive loss", "aunce_bench.contrastive_losses")
LOSS_KINDS: dict[str, Registry[Callable]] = {"supervised": SUPERVISED_LOSSES, "co-teaching": COTEACHING_LOSSES,
                                             "contrastive": CONTRASTIVE_LOSSES}


def loss_options(name: str, kind: str | None = None) -> dict[str, object]:
    """The keyword options of the loss `name` of `kind` (any kind if None) and their defaults."""
    registries = [LOSS_KINDS[kind]] if kind else [r for r in LOSS_KINDS.values() if name in r]
    parameters = inspect.signature(registries[0].get(name)).parameters
    return {key: p.default for key, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_loss(spec: LossSpec, where: str, kind: str | None, recipe: str) -> None:
    """A UserError naming `where` unless `spec` names a loss of `kind` (of any kind if None), the kind that
    recipe `recipe` takes, with only options its function takes."""
    if kind is None:
        if not any(spec.name in registry for registry in LOSS_KINDS.values()):
            every = [name for registry in LOSS_KINDS.values() for name in registry]
            raise UserError(f"{where}: field 'loss.name': {unknown_name('loss', spec.name, every)}")
    elif spec.name not in LOSS_KINDS[kind]:
        registry = LOSS_KINDS[kind]
        other = next((r for r in LOSS_KINDS.values() if spec.name in r), None)
        if other is None:
            raise UserError(f"{where}: field 'loss.name': {registry.unknown(spec.name)}")
        raise UserError(f"{where}: field 'loss.name': '{spec.name}' is a {other.kind}; recipe '{recipe}' takes a "
                        f"{registry.kind} (one of: {', '.join(registry.names())})")
    options = loss_options(spec.name, kind)
    unknown = [key for key in spec.model_dump() if key != "name" and key not in options]
    if unknown:
        raise UserError(f"{where}: field 'loss.{unknown[0]}': loss '{spec.name}' has no option '{unknown[0]}'; "
                        f"its options: {', '.join(options) or 'none'}")


def bind_loss(spec: LossSpec, kind: str) -> Callable:
    """The loss of `kind` named by `spec`, with the spec's extra fields bound as keyword arguments."""
    options = {key: value for key, value in spec.model_dump().items() if key != "name"}
    return functools.partial(LOSS_KINDS[kind].get(spec.name), **options)
