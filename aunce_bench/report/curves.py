"""Stored per-epoch histories -> the report's training curves.

Per leaderboard, per training stage and per row (method and selection): loss and validation F1 against epoch,
the mean over the row's runs (folds x seeds) with the min-max band. Only the epochs every run of the row reached
in that stage are kept (a run stopped early, or a ragged history, would otherwise pull the mean); how many were
left out is counted. A None value (no validation set, a loss not recorded) is left out of that epoch's mean and
band. The init's pretraining done by the harness (SynthFace) is the same for every run starting from it: it is
drawn once per leaderboard, over all its runs. Runs stored before histories were have none: they are counted,
and draw nothing.

Each run's own curves are small hand-written SVG polylines (sparklines), computed here so that the template only
inserts numbers: a report of hundreds of runs would spend seconds in matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from aunce_bench.report.aggregate import Leaderboard

SHARED_PREFIX = "init pretraining"  # the harness's pretraining of a shared init: "init pretraining (SynthFace)"
STAGE_ORDER = ("contrastive pretraining", "supervised", "co-teaching", "linear probe")  # known stages, as trained
METRICS = ("loss", "val_f1")
SPARK_POINTS = 32  # at most this many points per sparkline (evenly spaced epochs, first and last kept)
SPARK_BOX = (100, 100)  # viewBox of a sparkline; the page scales it (preserveAspectRatio none)


def is_shared(stage: str) -> bool:
    """Whether a stage is the pretraining of a shared init (the same for every run starting from it)."""
    return stage.startswith(SHARED_PREFIX)


def _stage_order(stages: Iterable[str]) -> list[str]:
    """Shared pretraining first, then the known stages in training order, then others in the order met."""
    met = list(dict.fromkeys(stages))
    return sorted(met, key=lambda stage: (not is_shared(stage), STAGE_ORDER.index(stage) if stage in STAGE_ORDER
                                          else len(STAGE_ORDER), met.index(stage)))


@dataclass(frozen=True)
class Band:
    """Mean, min and max over runs per epoch; NaN at an epoch where no run has a value."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class MethodCurve:
    """One row's (or, for a shared stage, the whole board's) curves in one stage."""

    label: str  # the row label (its colour in every figure); the stage name for a shared stage
    epochs: np.ndarray  # the epochs every run reached, ascending
    loss: Band | None  # None where no run recorded a value
    val_f1: Band | None
    runs: int  # runs with this stage
    dropped: int  # epochs left out: reached by some of the runs only


@dataclass(frozen=True)
class StageCurves:
    stage: str
    shared: bool
    curves: list[MethodCurve]

    @property
    def has_val(self) -> bool:
        return any(curve.val_f1 is not None for curve in self.curves)


@dataclass(frozen=True)
class BoardCurves:
    """The training curves of a leaderboard: its stages, and how many of its runs store no history."""

    stages: list[StageCurves]
    runs: int
    without_history: int

    @property
    def has_val(self) -> bool:
        return any(stage.has_val for stage in self.stages)

    @property
    def dropped(self) -> int:
        """Epochs left out of some curve because not every run of its row reached them."""
        return sum(curve.dropped for stage in self.stages for curve in stage.curves)


def _band(matrix: np.ndarray) -> Band | None:
    """Mean, min and max of the columns of a runs x epochs matrix, ignoring NaN; None if all NaN."""
    present = ~np.isnan(matrix)
    if not present.any():
        return None
    count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, matrix, 0.0).sum(axis=0) / count
    low = np.where(present, matrix, np.inf).min(axis=0)
    high = np.where(present, matrix, -np.inf).max(axis=0)
    empty = count == 0
    return Band(np.where(empty, np.nan, mean), np.where(empty, np.nan, low), np.where(empty, np.nan, high))


def _value(entry: dict, name: str) -> float:
    value = entry.get(name)
    return np.nan if value is None else float(value)


def stage_curve(label: str, histories: list[list[dict]]) -> MethodCurve | None:
    """The curve of runs' entries of one stage (one non-empty list per run); None without a common epoch."""
    per_run = [{int(entry["epoch"]): entry for entry in history} for history in histories]
    common = set.intersection(*(set(epochs) for epochs in per_run))
    if not common:
        return None
    epochs = np.array(sorted(common))
    bands = {name: _band(np.array([[_value(run[epoch], name) for epoch in epochs] for run in per_run]))
             for name in METRICS}
    return MethodCurve(label, epochs, bands["loss"], bands["val_f1"], len(per_run),
                       len(set().union(*per_run)) - len(common))


def _by_stage(history: list[dict]) -> dict[str, list[dict]]:
    stages: dict[str, list[dict]] = {}
    for entry in history:
        stages.setdefault(str(entry["stage"]), []).append(entry)
    return stages


def board_curves(board: Leaderboard, runs_by_id: dict[str, dict]) -> BoardCurves:
    """Per stage of a leaderboard's runs, one curve per row (in the board's row order), a shared stage's one
    curve over all runs."""
    rows = [(row.label, [_by_stage(runs_by_id[run_id].get("history") or []) for run_id in row.run_ids])
            for row in board.grouped_rows]
    staged = [stages for _, row_runs in rows for stages in row_runs]
    stages = []
    for stage in _stage_order(name for run in staged for name in run):
        groups = [(stage, staged)] if is_shared(stage) else rows
        curves = []
        for label, group in groups:
            histories = [run[stage] for run in group if stage in run]
            if histories and (curve := stage_curve(label, histories)):
                curves.append(curve)
        if curves:
            stages.append(StageCurves(stage, is_shared(stage), curves))
    return BoardCurves(stages, len(staged), sum(not run for run in staged))


# ------------------------------------------------------------------------------------- per-run sparklines
@dataclass(frozen=True)
class Spark:
    """A polyline of values against epoch in a SPARK_BOX viewBox, with the range it spans."""

    points: str  # "x,y x,y ..." (y down)
    low: float
    high: float
    first: float
    last: float


@dataclass(frozen=True)
class RunStage:
    stage: str
    epochs: int
    loss: Spark | None
    val_f1: Spark | None


def _spark(epochs: np.ndarray, values: np.ndarray) -> Spark | None:
    keep = ~np.isnan(values)
    epochs, values = epochs[keep], values[keep]
    if not len(values):
        return None
    if len(values) > SPARK_POINTS:
        chosen = np.unique(np.linspace(0, len(values) - 1, SPARK_POINTS).round().astype(int))
        shown_epochs, shown = epochs[chosen], values[chosen]
    else:
        shown_epochs, shown = epochs, values
    width, height = SPARK_BOX
    low, high = float(values.min()), float(values.max())
    span_x = max(float(epochs[-1] - epochs[0]), 1.0)
    x = (shown_epochs - epochs[0]) / span_x * width if len(values) > 1 else np.full(1, width / 2)
    y = height - (shown - low) / (high - low) * height if high > low else np.full(len(shown), height / 2)
    points = " ".join(f"{a},{b}" for a, b in np.rint(np.column_stack([x, y])).astype(int).tolist())
    if len(values) == 1:  # one epoch: a short flat tick
        points = f"{width / 2 - 4:.0f},{height / 2:.0f} {width / 2 + 4:.0f},{height / 2:.0f}"
    return Spark(points, low, high, float(values[0]), float(values[-1]))


def run_curves(run: dict) -> list[RunStage]:
    """A run's own curves per stage, its shared pretraining left out (drawn once per leaderboard); [] for a run
    stored without a history."""
    stages = _by_stage(run.get("history") or [])
    result = []
    for stage in _stage_order(stages):
        if is_shared(stage):
            continue
        entries = sorted(stages[stage], key=lambda entry: int(entry["epoch"]))
        epochs = np.array([int(entry["epoch"]) for entry in entries], dtype=float)
        loss, val_f1 = (_spark(epochs, np.array([_value(entry, name) for entry in entries])) for name in METRICS)
        if loss or val_f1:
            result.append(RunStage(stage, len(entries), loss, val_f1))
    return result
