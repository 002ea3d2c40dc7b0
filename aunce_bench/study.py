"""Controlled studies: factors changed one at a time from a method's setting, each point an ordinary stored run.

A study YAML (built-in under `builtin/studies/`, or a path) names a protocol, a budget, folds and seeds, a
`reference` method, the `focus_aus` the question is about, and factors; each factor lists points (a method,
optionally another init or face size). `plan_study` turns it into RunSpecs: every point, and the reference in
each point's setting, so each point can be paired with the reference on the same test frames. `study_table` reads the
stored runs back by run id: mean F1, the focus AUs' mean and the other AUs' mean, each with the paired-bootstrap
interval of (point - reference) over test subjects.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError

from aunce_bench.errors import UserError
from aunce_bench.report.bootstrap import RESAMPLES, Interval, paired_difference, subject_counts
from aunce_bench.results import ResultStore
from aunce_bench.specs import (BUILTIN, ProtocolSpec, RunSpec, Strict, _load_yaml, load_method, load_protocol,
                               validation_message)


class StudyPoint(Strict):
    method: str
    init: str | None = Field(None, description="backbone initialisation (default: the budget's)")
    image_size: int | None = Field(None, ge=32, le=512, description="faces of this many pixels, the crop in "
                                   "proportion (default: the budget's)")

    @property
    def label(self) -> str:
        changes = [f"init {self.init}"] * bool(self.init) + [f"{self.image_size} px"] * bool(self.image_size)
        return self.method + (f" ({', '.join(changes)})" if changes else "")


class StudySpec(Strict):
    name: str
    description: str = ""
    protocol: str
    budget: Literal["quick", "standard", "full"]
    folds: list[int] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    reference: str = Field(description="the method each point is compared with, in the point's own setting")
    focus_aus: list[int] = Field(min_length=1)
    factors: dict[str, list[StudyPoint]] = Field(min_length=1)


def available_studies() -> list[str]:
    return sorted(path.stem for path in (BUILTIN / "studies").glob("*.yaml"))


def load_study(reference: str) -> StudySpec:
    """A study by built-in name or YAML path; a one-line UserError naming the file and field otherwise."""
    path = Path(reference).expanduser()
    if path.is_dir() and reference not in available_studies():
        raise UserError(f"{path} is a folder, not a study file; pass a study name ({', '.join(available_studies())}) "
                        "or the path of a study YAML file")
    if path.suffix not in (".yaml", ".yml"):
        if reference not in available_studies():
            raise UserError(f"unknown study '{reference}'; known: {', '.join(available_studies())} (or pass a path)")
        path = BUILTIN / "studies" / f"{reference}.yaml"
    elif not path.is_file():
        raise UserError(f"study file {path} does not exist")
    try:
        return StudySpec.model_validate(_load_yaml(path))
    except ValidationError as error:
        raise UserError(f"{path}: {validation_message(error)}")


@dataclass(frozen=True)
class PlannedPoint:
    factor: str
    point: StudyPoint
    runs: list[RunSpec]
    reference_runs: list[RunSpec]


def plan_study(study: StudySpec, root: Path | None = None) -> list[PlannedPoint]:
    """Every point's runs and its reference runs (same protocol, budget, folds, seeds and init)."""
    from aunce_bench.protocols import parse_noise, plan_runs

    protocol = load_protocol(study.protocol)

    def runs(method: str, point: StudyPoint) -> list[RunSpec]:
        resized = protocol if point.image_size is None else at_image_size(protocol, study.budget, point.image_size)
        return plan_runs(load_method(method), resized, study.budget, study.folds, study.seeds, parse_noise("none"),
                         root, None, point.init)

    return [PlannedPoint(factor, point, runs(point.method, point), runs(study.reference, point))
            for factor, points in study.factors.items() for point in points]


def at_image_size(protocol: ProtocolSpec, budget: str, size: int) -> ProtocolSpec:
    """`protocol` with the budget's faces rendered at `size` px and its crop scaled in proportion. The runs keep
    the protocol's name; their data fingerprint differs, so leaderboards keep them apart."""
    current = protocol.budget(budget)
    base = current.data.get("image_size")
    if base is None:
        raise UserError(f"{protocol.where}: budget '{budget}' sets no data.image_size to scale from")
    crop = round(current.crop_size * size / base)
    changed = current.model_copy(update={"data": {**current.data, "image_size": size}, "crop_size": crop})
    resized = protocol.model_copy(update={"budgets": {**protocol.budgets, budget: changed}})
    resized._path = protocol._path
    return resized


def unique_runs(points: list[PlannedPoint]) -> list[RunSpec]:
    """The runs of a planned study, each once, in plan order."""
    seen: dict[str, RunSpec] = {}
    for planned in points:
        for run in [*planned.reference_runs, *planned.runs]:
            seen.setdefault(run.run_id, run)
    return list(seen.values())


@dataclass(frozen=True)
class StudyRow:
    factor: str
    label: str
    runs: int
    mean_f1: float | None
    focus_f1: float | None
    other_f1: float | None
    reference_f1: float | None  # the reference's runs paired with the point's
    versus: dict[str, Interval | None]  # "mean", "focus", "other" -> paired interval of (point - reference)


def _group_mean(runs: list[dict], aus: list[str]) -> float | None:
    """The mean over runs of each run's mean F1 over `aus`; None without runs or AUs."""
    if not runs or not aus:
        return None
    return float(np.mean([np.mean([run["per_au_f1"][au] for au in aus]) for run in runs]))


def study_table(study: StudySpec, points: list[PlannedPoint], store: ResultStore,
                resamples: int = RESAMPLES) -> list[StudyRow]:
    """One row per point, from the done runs of the plan found in `store` (by run id)."""
    done = {run["run_id"]: run for run in store.runs(protocol=study.protocol, status="done")}
    focus = {f"AU{au}" for au in study.focus_aus}
    rows = []
    for planned in points:
        found = [done[r.run_id] for r in planned.runs if r.run_id in done]
        reference = {(done[r.run_id]["spec"]["fold_name"], done[r.run_id]["seed"]): done[r.run_id]
                     for r in planned.reference_runs if r.run_id in done}
        aus = list(found[0]["per_au_f1"]) if found else []
        groups = {"mean": aus, "focus": [au for au in aus if au in focus],
                  "other": [au for au in aus if au not in focus]}
        # each group's interval from the same resamples (one seed, the same subjects): comparable across groups
        versus = {name: _paired(found, reference, group, store, resamples) if group else None
                  for name, group in groups.items()}
        paired = [reference[key] for key in ((r["spec"]["fold_name"], r["seed"]) for r in found) if key in reference]
        rows.append(StudyRow(planned.factor, planned.point.label, len(found), _group_mean(found, groups["mean"]),
                             _group_mean(found, groups["focus"]), _group_mean(found, groups["other"]),
                             _group_mean(paired, groups["mean"]), versus))
    return rows


def _paired(runs: list[dict], reference: dict[tuple[str, int], dict], aus: list[str], store: ResultStore,
            resamples: int) -> Interval | None:
    """Paired bootstrap of (run - reference) over the AUs `aus`, runs paired by fold and seed."""
    folds: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run in runs:
        other = reference.get((run["spec"]["fold_name"], run["seed"]))
        if other is None:
            continue
        subjects = sorted(set(run["spec"]["test_subjects"]) | set(other["spec"]["test_subjects"]))
        folds[run["spec"]["fold_name"]].append(tuple(_counts(store, r, aus, subjects) for r in (run, other)))
    if not folds:
        return None
    return paired_difference([folds[name] for name in sorted(folds)], resamples)


def _counts(store: ResultStore, run: dict, aus: list[str], subjects: list[str]) -> np.ndarray:
    columns = ["subject", *(f"{kind}_{au}" for au in aus for kind in ("prob", "label"))]
    return subject_counts(store.predictions(run["run_id"], columns), aus, run["spec"]["decision_threshold"], subjects)
