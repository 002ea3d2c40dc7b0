"""Hyperparameter sweeps: `--param PATH=VALUES` options become sweep points, each an ordinary MethodSpec.

A parameter is a dotted path into a method (`loss.temperature`, `train.lr`, `probe.epochs`, `model.dim`) with
a list of values (`0.05,0.1,0.2`, read as YAML scalars: `0.5` float, `3` int, `true` bool, other words text)
or, for random sweeps, a range: `LOW:HIGH` (uniform) or `LOW:HIGH:log` (log-uniform), integers when both
bounds are. A grid is the Cartesian product of the lists; a random sweep draws N points with a seeded numpy
Generator, floats rounded to 4 significant digits (readable names), lists sampled as choices.

A point is the base method resolved for the budget with the values set on top (so they beat the budget's own
overrides), named `BASE[temperature=0.1]` (a parameter's last path component where no other swept parameter
shares it, else its full path; parameters in path order), with `family: sweep` and `sweep_of` naming the base
and the values. The name is in the run id: each point is its own setting, and a repeated sweep finds its done
points in the store.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from aunce_bench.errors import UserError
from aunce_bench.registry import did_you_mean
from aunce_bench.specs import MethodSpec, ModelSpec, OptimSpec, ProtocolSpec, SweepPoint, validation_message

NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
INTEGER = re.compile(r"[-+]?\d+")
RANGE = re.compile(r"(?P<low>[^:,]+):(?P<high>[^:,]+)(:(?P<scale>[^:,]*))?")
SIGNIFICANT_DIGITS = 4
# Fields a sweep may not set: the init is part of a run's setting (compare inits with --init), not a parameter.
FIXED_FIELDS = {"model.init": "the init is part of the setting; compare inits with separate sweeps using --init"}
PARAM_EXAMPLE = "--param loss.temperature=0.1,0.5"


@dataclass(frozen=True)
class Range:
    """Where a random sweep draws a parameter: uniform or log-uniform in [low, high], integers when both bounds are."""

    low: int | float
    high: int | float
    log: bool
    integer: bool

    def draw(self, rng: np.random.Generator) -> int | float:
        if self.integer and not self.log:
            return int(rng.integers(self.low, self.high, endpoint=True))
        if self.log:
            value = float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        else:
            value = float(rng.uniform(self.low, self.high))
        return int(round(value)) if self.integer else float(f"{value:.{SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class Param:
    """One `--param` option: its dotted path and either its values or (random sweeps) its range."""

    path: str
    text: str  # the option as written, for messages
    values: tuple = ()
    range: Range | None = None

    def error(self, reason: str) -> UserError:
        return UserError(f"invalid --param {self.text}: {reason}")


def value_text(value: Any) -> str:
    """A value as names and tables show it: `true`, `0.1`, `1e-05`, `cosine`."""
    return str(value).lower() if isinstance(value, bool) else str(value)


# -------------------------------------------------------------------------------------------- parsing
def _scalar(item: str, param: Param) -> Any:
    """One listed value: a number (`1e-3` too, which YAML reads as text), else a YAML boolean or word."""
    if NUMBER.fullmatch(item):
        return int(item) if INTEGER.fullmatch(item) else float(item)
    try:
        value = yaml.safe_load(item)
    except yaml.YAMLError:
        raise param.error(f"cannot read the value '{item}'; give numbers, true/false or words")
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return item  # YAML 1.1 forms such as 1:30 or 0x1f: kept as written, never silently converted
    raise param.error(f"'{item}' is not a single value; a sweep sets numbers, true/false or words")


def _range(match: re.Match, param: Param) -> Range:
    low, high = (_scalar(match[bound].strip(), param) for bound in ("low", "high"))
    scale = match["scale"]
    if scale not in (None, "log"):
        raise param.error(f"unknown scale '{scale}'; write LOW:HIGH (uniform) or LOW:HIGH:log (log-uniform)")
    if not low < high:
        raise param.error(f"the range's low bound {low} must be below its high bound {high}")
    if scale == "log" and low <= 0:
        raise param.error("a log range needs a low bound above 0")
    return Range(low, high, scale == "log", isinstance(low, int) and isinstance(high, int))


def _parse_param(text: str, random: bool) -> Param:
    path, equals, written = (part.strip() for part in text.partition("="))
    if not equals or not path:
        raise UserError(f"invalid --param '{text}': expected PATH=VALUES, e.g. {PARAM_EXAMPLE}")
    param = Param(path, text)
    match = RANGE.fullmatch(written)
    if match and all(NUMBER.fullmatch(match[bound].strip()) for bound in ("low", "high")):
        if not random:
            raise param.error("a range LOW:HIGH is for random sweeps; add --random N, or list the values: A,B,C")
        return Param(path, text, range=_range(match, param))
    items = [item.strip() for item in written.split(",")]
    if not written:
        raise param.error(f"give at least one value, e.g. {PARAM_EXAMPLE}")
    if not all(items):
        raise param.error("an empty value in the list; separate values with single commas")
    values = [_scalar(item, param) for item in items]
    twice = next((value for i, value in enumerate(values) if value in values[:i]), None)
    if twice is not None:
        raise param.error(f"the value {value_text(twice)} is listed twice")
    return Param(path, text, tuple(values))


def parse_params(options: list[str], random: bool) -> list[Param]:
    """The `--param` options, in path order; `random`: ranges allowed (a random sweep)."""
    if not options:
        raise UserError(f"invalid --param: give at least one parameter to sweep, e.g. {PARAM_EXAMPLE}")
    params = [_parse_param(text, random) for text in options]
    paths = [param.path for param in params]
    twice = next((path for i, path in enumerate(paths) if path in paths[:i]), None)
    if twice:
        raise UserError(f"invalid --param: '{twice}' is given twice; list its values in one option, e.g. "
                        f"--param {twice}=A,B")
    return sorted(params, key=lambda param: param.path)


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the listed values: path -> value per point."""
    return [dict(zip((param.path for param in params), values))
            for values in itertools.product(*(param.values for param in params))]


def random_points(params: list[Param], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` draws (ranges drawn, lists chosen from) with `numpy.random.default_rng(seed)`; repeated draws kept once."""
    if count < 1:
        raise UserError(f"invalid --random: {count}; draw at least 1 point")
    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = []
    for _ in range(count):
        point = {param.path: param.range.draw(rng) if param.range else param.values[int(rng.integers(len(param.values)))]
                 for param in params}
        if point not in points:
            points.append(point)
    return points


# ------------------------------------------------------------------------------------- sweep points
def sweepable(method: MethodSpec) -> dict[str, Any]:
    """The paths a sweep may set on a (budget-resolved) method, with their current values: model, train and probe
    fields, and the loss's options that take a single value (numbers, true/false or words)."""
    from aunce_bench.losses import loss_options

    paths = {f"model.{name}": getattr(method.model, name) for name in ModelSpec.model_fields
             if f"model.{name}" not in FIXED_FIELDS}
    for section in ("train", "probe"):
        if getattr(method, section) is not None:
            paths |= {f"{section}.{name}": getattr(getattr(method, section), name) for name in OptimSpec.model_fields}
    if method.loss is not None:
        options = loss_options(method.loss.name) | (method.loss.model_extra or {})
        paths |= {f"loss.{name}": value for name, value in options.items() if isinstance(value, (bool, int, float, str))}
    return paths


def _check_path(param: Param, method: MethodSpec, paths: dict[str, Any]) -> None:
    if param.path in paths:
        return
    if param.path in FIXED_FIELDS:
        raise param.error(FIXED_FIELDS[param.path])
    from aunce_bench.losses import loss_options

    section, _, name = param.path.partition(".")
    if section == "loss" and method.loss is not None and name in loss_options(method.loss.name):
        raise param.error(f"loss option '{name}' does not take a single value; a sweep sets numbers, true/false "
                          "or words")
    raise param.error(f"{method.name} has no parameter '{param.path}'{did_you_mean(param.path, paths)}; it has: "
                      f"{', '.join(paths)}")


def _loss_value(param: Param, value: Any, current: Any) -> Any:
    """A loss option's value checked against its current value's type (the loss takes any keyword): a number for
    a number (an int becomes a float where the option is a float), true/false for a flag, a word for a word."""
    if isinstance(current, bool) or isinstance(value, bool):
        fits = isinstance(value, bool) and isinstance(current, bool)
    elif isinstance(current, float):
        fits, value = isinstance(value, (int, float)), float(value) if isinstance(value, int) else value
    else:
        fits = isinstance(value, type(current))
    if not fits:
        kind = "true or false" if isinstance(current, bool) else "a word" if isinstance(current, str) else (
            "a number" if isinstance(current, float) else "a whole number")
        raise param.error(f"value {value_text(value)}: {param.path} takes {kind} (it is {value_text(current)})")
    return value


def _with_values(method: MethodSpec, values: dict[str, Any], params: dict[str, Param]) -> MethodSpec:
    """The method with `values` (path -> value) set, validated as a method YAML is."""
    fields = method.model_dump()
    for path, value in values.items():
        section, _, name = path.partition(".")
        fields[section][name] = value
    try:
        return MethodSpec.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        param = params.get(".".join(str(part) for part in first["loc"]))
        if param is None:
            raise UserError(f"invalid --param: {validation_message(error)}")
        raise param.error(f"value {value_text(values[param.path])}: {first['msg'].removeprefix('Value error, ')}")


def sweep_methods(method: MethodSpec, protocol: ProtocolSpec, budget: str, params: list[Param],
                  points: list[dict[str, Any]], init: str | None = None) -> list[MethodSpec]:
    """One MethodSpec per point: `method` resolved for the budget (see `resolved_method`) with the point's values
    set on top; a bad path or value is a UserError naming its --param."""
    from aunce_bench.protocols import resolved_method

    resolved, _ = resolved_method(method, protocol, budget, init)
    paths = sweepable(resolved)
    by_path = {param.path: param for param in params}
    for param in params:
        _check_path(param, resolved, paths)
    specs = []
    for point in points:
        values = {path: _loss_value(by_path[path], value, paths[path]) if path.startswith("loss.") else value
                  for path, value in point.items()}
        spec = _with_values(resolved, values, by_path)
        stored = {path: _value_at(spec, path) for path in values}
        specs.append(spec.model_copy(update={"name": point_name(method.name, stored), "family": "sweep", "reported": [],
                                             "sweep_of": SweepPoint(method=method.name, params=stored)}))
    return specs


def _value_at(method: MethodSpec, path: str) -> Any:
    section, _, name = path.partition(".")
    return getattr(getattr(method, section), name)


def point_name(base: str, values: dict[str, Any]) -> str:
    """`BASE[temperature=0.1,...]`: each parameter by its last path component unless another shares it."""
    last = [path.rsplit(".", 1)[-1] for path in values]
    labels = [name if last.count(name) == 1 else path for path, name in zip(values, last)]
    return f"{base}[{','.join(f'{label}={value_text(value)}' for label, value in zip(labels, values.values()))}]"
