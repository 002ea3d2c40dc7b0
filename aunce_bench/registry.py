"""Name -> component look-ups: one `Registry` per kind of component, filled by its decorator.

Each registry lives beside the components it holds, which register themselves with its decorator; another
package adds components through the registry's entry-point group (an entry point named N that points to the
component makes N usable), loaded once, the first time a name is missing or the registry is listed:

    registry             module                              entry-point group               a method/CLI names it as
    RECIPES              aunce_bench.recipes                 aunce_bench.methods             recipe: N
    SUPERVISED_LOSSES    aunce_bench.losses                  aunce_bench.supervised_losses   loss: {name: N}
    COTEACHING_LOSSES    aunce_bench.losses                  aunce_bench.coteaching_losses   loss: {name: N}
    CONTRASTIVE_LOSSES   aunce_bench.losses                  aunce_bench.contrastive_losses  loss: {name: N}
    NOISE_MODELS         aunce_bench.data.noise              aunce_bench.noise_models        --noise N:0.2
    FORMATS              aunce_bench.data.formats            aunce_bench.formats             aunce-bench prepare N
    PROFILES             aunce_bench.data.synth.profiles     aunce_bench.synth_profiles      profile: N

A recipe's `loss_kind` names the loss registry its method's loss is looked up in (`aunce_bench.losses.LOSS_KINDS`).
A new loss is one decorated function in the module of its kind, plus the method YAML that names it:

    @SUPERVISED_LOSSES.register("squared")  # in aunce_bench/losses/supervised.py
    def squared(logits, labels, weights, *, scale: float = 1.0):  # keyword-only options: what `loss:` may set
        ...

then `loss: {name: squared, scale: 2.0}` in a method with `recipe: supervised`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from aunce_bench.errors import UserError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """The hint ` (did you mean 'X'?)` naming the known name closest to `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UserError:
    """The one error for a name that is not among `known`: "unknown KIND 'NAME' (did you mean 'X'?); known: ..."."""
    known = sorted(known)
    return UserError(f"unknown {kind} '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")


class Registry(Generic[T]):
    """Components of one `kind` by name: `@registry.register(name)` adds one (a name is taken once), `get(name)`
    (or `registry[name]`) finds one or raises the one UserError of `unknown_name`; iterating gives the names,
    sorted. Entry points of `entry_point_group` join on the first miss or listing."""

    def __init__(self, kind: str, entry_point_group: str):
        self.kind, self.entry_point_group = kind, entry_point_group
        self._entries: dict[str, T] = {}
        self._plugins_loaded = False

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.entry_point_group!r}: {', '.join(self._entries)})"

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding its target under `name`; a name already taken is refused."""

        def add(component: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered ({self._entries[name]!r})")
            self._entries[name] = component
            return component

        return add

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in metadata.entry_points(group=self.entry_point_group):
            where = f"entry point '{entry.name}' = {entry.value} of group {self.entry_point_group}"
            try:
                component = entry.load()
            except Exception as error:  # a broken plugin: name it, not a traceback
                raise UserError(f"{where}: does not load ({type(error).__name__}: {error})") from error
            if entry.name in self._entries and self._entries[entry.name] is not component:
                raise UserError(f"{where}: {self.kind} '{entry.name}' is already registered; rename the entry point")
            self._entries[entry.name] = component  # loading its module may have registered it already

    def get(self, name: str) -> T:
        if name not in self:
            raise self.unknown(name)
        return self._entries[name]

    __getitem__ = get

    def unknown(self, name: str) -> UserError:
        """The error for `name`, which is not registered: the closest known name and all of them."""
        return unknown_name(self.kind, name, self.names())

    def names(self) -> list[str]:
        """Every registered name, entry points included, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
