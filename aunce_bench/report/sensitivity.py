"""Stored sweep runs -> sensitivity tables: mean F1 per sweep point and per value of each swept parameter.

Runs whose method spec has `sweep_of` are sweep points (see `aunce_bench.sweep`). Done runs are grouped by
setting (`run_key`: never pooled across settings), base method, selection policy and the set of swept
parameters, so that each table is one sweep design. A point's F1 is the mean over its runs (folds x seeds); a
parameter value's (the marginal) is the mean over the points having that value of their means, i.e. averaged
over the other parameters. Intervals: when every point behind an estimate has at least MIN_BOOTSTRAP_RUNS
runs, the 95 % percentile bootstrap of that mean (runs resampled within each point); otherwise mean ± the
sample std of the runs pooled; none for a single run. The reference is the base method's own done runs of the
same setting and selection, on the folds and seeds that the sweep ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from aunce_bench.report.aggregate import Setting, row_label, run_key
from aunce_bench.report.bootstrap import LEVEL, RESAMPLES
from aunce_bench.sweep import value_text

MIN_BOOTSTRAP_RUNS = 10
BOOTSTRAP = f"{100 * LEVEL:g}% bootstrap"
STD = "std"


@dataclass(frozen=True)
class Estimate:
    """A mean F1 over `points` sweep points (`runs` runs) with its interval; `kind` says which interval (BOOTSTRAP
    or STD), None for a single run (no interval)."""

    mean: float
    low: float | None
    high: float | None
    kind: str | None
    points: int
    runs: int

    @classmethod
    def of(cls, points: list[list[float]], resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
        """The mean over points of their mean run F1, from each point's run values."""
        mean = float(np.mean([np.mean(values) for values in points]))
        pooled = [value for values in points for value in values]
        if len(pooled) == 1:
            return cls(mean, None, None, None, len(points), 1)
        if min(len(values) for values in points) >= MIN_BOOTSTRAP_RUNS:
            rng = np.random.default_rng(seed)
            draws = np.mean([rng.choice(values, size=(resamples, len(values))).mean(axis=1) for values in points],
                            axis=0)
            tail = (1 - LEVEL) / 2 * 100
            low, high = np.percentile(draws, [tail, 100 - tail])
            return cls(mean, float(low), float(high), BOOTSTRAP, len(points), len(pooled))
        std = float(np.std(pooled, ddof=1))
        return cls(mean, mean - std, mean + std, STD, len(points), len(pooled))

    def interval_text(self, scale: float = 1.0, digits: int = 3) -> str:
        """The interval as tables show it: `[0.412, 0.468] (95% bootstrap)`, `± 0.021 (std)` or `–` (one run)."""
        if self.kind is None:
            return "–"
        if self.kind == STD:
            return f"± {scale * (self.high - self.mean):.{digits}f} ({STD})"
        return f"[{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}] ({self.kind})"


@dataclass(frozen=True)
class PointResult:
    """One sweep point: its method name, its values (path -> value) and its F1 over its runs."""

    name: str
    values: dict[str, Any]
    f1: Estimate

    @property
    def labels(self) -> dict[str, str]:
        return {path: value_text(value) for path, value in self.values.items()}


@dataclass(frozen=True)
class Marginal:
    """One swept parameter: its values in order and, per value, the F1 averaged over the points having it."""

    path: str
    values: list
    f1: list[Estimate]

    @property
    def labels(self) -> list[str]:
        return [value_text(value) for value in self.values]

    @property
    def numeric(self) -> bool:
        return all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in self.values)


@dataclass(frozen=True)
class Sensitivity:
    """One sweep design in one setting: its points, a marginal per parameter, and the base method's reference F1
    (None when its runs on the sweep's folds and seeds are not stored) with its values of the swept parameters."""

    setting: Setting
    method: str
    selection: str
    params: list[str]
    points: list[PointResult]
    marginals: list[Marginal]
    reference: Estimate | None
    reference_values: dict[str, Any]

    @property
    def label(self) -> str:
        """The base method with its selection policy, as leaderboard rows name it."""
        return row_label(self.method, self.selection)

    @property
    def reference_labels(self) -> dict[str, str]:
        return {path: value_text(value) for path, value in self.reference_values.items()}


def _value_at(method: dict, path: str) -> Any:
    section, _, name = path.partition(".")
    return (method.get(section) or {}).get(name)


def sensitivities(runs: list[dict]) -> list[Sensitivity]:
    """One Sensitivity per setting, base method, selection policy and set of swept parameters of the done sweep
    runs among `runs` (the others' done runs serve as references)."""
    done = [run for run in runs if run["status"] == "done" and run["mean_f1"] is not None]
    designs: dict[tuple, list[dict]] = defaultdict(list)
    references: dict[tuple, list[dict]] = defaultdict(list)
    for run in done:
        key, sweep = run_key(run), run["spec"]["method"].get("sweep_of")
        if sweep:
            designs[key.setting, sweep["method"], key.selection, tuple(sorted(sweep["params"]))].append(run)
        else:
            references[key.setting, key.method, key.selection].append(run)
    result = []
    for (setting, method, selection, paths), design_runs in sorted(designs.items()):
        by_point: dict[str, list[dict]] = defaultdict(list)
        for run in design_runs:
            by_point[run["method"]].append(run)
        scores = {name: [run["mean_f1"] for run in point_runs] for name, point_runs in by_point.items()}
        points = sorted((PointResult(name, dict(point_runs[0]["spec"]["method"]["sweep_of"]["params"]),
                                     Estimate.of([scores[name]]))
                         for name, point_runs in by_point.items()),
                        key=lambda point: tuple(point.values[path] for path in paths))
        marginals = []
        for path in paths:
            values = sorted({point.values[path] for point in points})
            marginals.append(Marginal(path, values, [
                Estimate.of([scores[point.name] for point in points if point.values[path] == value]) for value in values
            ]))
        ran = {(run["spec"]["fold_name"], run["seed"]) for run in design_runs}
        base = [run for run in references.get((setting, method, selection), [])
                if (run["spec"]["fold_name"], run["seed"]) in ran]
        reference_values = {path: _value_at(base[0]["spec"]["method"], path) for path in paths} if base else {}
        result.append(Sensitivity(setting, method, selection, list(paths), points, marginals,
                                  Estimate.of([[run["mean_f1"] for run in base]]) if base else None,
                                  {path: value for path, value in reference_values.items() if value is not None}))
    return result
