"""Stored runs -> leaderboards, noise curves, pose grids, cross-dataset rows and label statistics.

The one aggregation code path: `aunce-bench results --leaderboard`, `report`, `noise-curve` and the Python
API take their numbers from here. Only done runs count. `run_key` derives what makes runs comparable: a
`Setting` (protocol, budget, test set, init, thresholds, noise; a k-fold protocol's folds together, each
direction of a cross-dataset protocol on its own) plus method and selection policy. A leaderboard is one
clean setting; its rows are the methods under each selection policy, the optimistic `test_fold` ones flagged
and never ranked. Noise curves join the settings that differ only in noise. F1 values are
fractions in [0, 1]; paper numbers, reported in percent, are divided by 100.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from aunce_bench.data.noise import CLEAN, NoiseSpec
from aunce_bench.errors import UserError
from aunce_bench.metrics import MISSING_LABEL, chance_au_f1, summarise
from aunce_bench.report.bootstrap import RESAMPLES, Interval, paired_difference, subject_counts
from aunce_bench.results import ResultStore, column_array
from aunce_bench.specs import (FAMILIES, OPTIMISTIC_SELECTIONS, Init, PaperReference, list_methods, list_protocols,
                               load_method, load_protocol)

LEGACY_SELECTIONS = {"official": "last_epoch"}  # the name stores written before test_fold existed used
POSE_GROUP = re.compile(r"pose:yaw([+-]?\d+)_pitch([+-]?\d+)")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _data_name(config: dict) -> str:
    return str(config.get("dataset") or config.get("profile"))


def is_synthetic(config: dict) -> bool:
    """Whether a run's data settings describe SynthAU (rather than a prepared real dataset)."""
    return config.get("source", "synth") == "synth"


def dataset_label(config: dict) -> str:
    """How a run's train or test data is named in reports, e.g. "SynthAU bp4d"."""
    return f"SynthAU {_data_name(config)}" if is_synthetic(config) else _data_name(config)


@dataclass(frozen=True, order=True)
class Setting:
    """What a leaderboard's numbers share: protocol, budget, test set (the test dataset, or a cross-dataset
    direction, and the data's content: `data_fingerprint` changes when a dataset is prepared again or SynthAU's
    generator changes), backbone init, decision and occurrence thresholds and training-label noise. Its rows are
    the methods under each selection policy (`RunKey`)."""

    protocol: str
    budget: str
    test: str
    cross: bool
    init: str = "scratch"
    decision_threshold: float = 0.5
    occurrence_threshold: float | None = 2.0
    noise: str = CLEAN
    data_fingerprint: str = ""

    @property
    def test_label(self) -> str:
        """The test set as shown: its name and the start of its data fingerprint ("SynthAU bp4d (data 88168257)")."""
        return f"{self.test} (data {self.data_fingerprint[:8]})" if self.data_fingerprint else self.test

    @property
    def title(self) -> str:
        parts = [self.protocol, self.budget, self.test_label, f"init {self.init}",
                 f"threshold {self.decision_threshold:g}"]
        if self.occurrence_threshold is not None and self.occurrence_threshold != 2.0:
            parts.append(f"occurrence ≥ {self.occurrence_threshold:g}")
        if self.noise != CLEAN:
            parts.append(f"noise {self.noise}")
        return " · ".join(parts)

    def clean(self) -> Setting:
        """The same setting with clean training labels (a noise curve's setting)."""
        return replace(self, noise=CLEAN)


@dataclass(frozen=True, order=True)
class RunKey:
    """Everything that changes the meaning of a run's number: its setting, method and model-selection
    policy. Runs pool (mean ± std, bootstrap pairs) only within one key; `run_key` is the one place it is derived."""

    setting: Setting
    method: str
    selection: str

    @property
    def label(self) -> str:
        return row_label(self.method, self.selection)


def row_label(method: str, selection: str) -> str:
    """How a row or curve is named: the method, with its selection policy unless strict (flagged where
    optimistic), e.g. `aunce [test_fold, optimistic]`."""
    if selection == "strict":
        return method
    return f"{method} [{selection}{', optimistic' if selection in OPTIMISTIC_SELECTIONS else ''}]"


def run_key(run: dict) -> RunKey:
    """The comparability key of a stored run, from its RunSpec."""
    spec = run["spec"]
    train, test = dataset_label(spec["train_data"]), dataset_label(spec["test_data"])
    cross = train != test
    setting = Setting(run["protocol"], str(run["budget"]), spec["fold_name"] if cross else test, cross, run_init(run),
                      float(spec["decision_threshold"]), spec["test_data"].get("occurrence_threshold"), run["noise"],
                      spec["data_fingerprint"])
    selection = LEGACY_SELECTIONS.get(spec["selection"], spec["selection"])
    return RunKey(setting, run["method"], selection)


def run_init(run: dict) -> str:
    """A stored run's backbone init with what pins its weights (`synthface:1a2b3c4d5e6f`); runs stored before
    inits were recorded started from scratch."""
    spec = run["spec"]
    init = str(Init.of(spec["method"]["model"].get("init")))
    weights = spec.get("init_hash")
    return init if init == "imagenet" or not weights else f"{init.split(':')[0]}:{weights.split(':')[-1][:12]}"


def _machine(run: dict) -> str:
    """Where and how a run ran: its device with the CPU thread count, and its precision unless fp32 (with TF32
    where on), which change the numbers in the last digits."""
    execution = run["provenance"].get("execution", {})
    parts = [str(run["provenance"].get("device", "unknown"))]
    if execution.get("precision", "fp32") != "fp32":
        parts.append(execution["precision"])
    if execution.get("tf32"):
        parts.append("TF32")
    return ", ".join(parts)


@dataclass(frozen=True)
class Stat:
    """Mean and sample std over runs (folds x seeds) and their number; None where undefined (std of one run)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        kept = [v for v in values if v is not None and not math.isnan(v)]
        mean, std = summarise(kept)
        return cls(_none_if_nan(mean), _none_if_nan(std) if len(kept) > 1 else None, len(kept))


@dataclass
class MethodRow:
    """One measured method under one selection policy on a leaderboard; optimistic rows (test_fold) are
    flagged and never ranked (rank 0)."""

    method: str
    selection: str
    run_ids: list[str]
    f1: Stat
    per_au: dict[str, float | None]
    machines: list[str] = field(default_factory=list)  # distinct devices (with thread counts, precisions) of the runs
    family: str = "other"  # the method's family (MethodSpec.family)
    parent: str | None = None  # the method this row is an ablation or sweep point of
    rank: int = 0
    significance: Interval | None = None  # difference to the best ranked row, mean and per AU; None for it

    @property
    def label(self) -> str:
        return row_label(self.method, self.selection)

    @property
    def optimistic(self) -> bool:
        return self.selection in OPTIMISTIC_SELECTIONS


@dataclass(frozen=True)
class ReportedRow:
    """A paper's number (never ranked); `difference` = measured - reported where the setting is the same."""

    method: str
    source: str
    per_au: dict[str, float | None]
    mean: float
    difference: float | None


@dataclass
class Leaderboard:
    setting: Setting
    aus: list[str]
    decision_threshold: float
    rows: list[MethodRow]
    chance: dict[str, float | None]  # AU -> chance F1, and "mean"
    reference: PaperReference | None = None
    reported: list[ReportedRow] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """One line per row that pools runs made on different devices, CPU thread counts or precisions (their
        numbers differ in the last digits even for the same run ids)."""
        return [f"{self.setting.title}: {row.label} pools runs from {len(row.machines)} machines or precisions "
                f"({'; '.join(row.machines)}); numbers differ slightly across devices, thread counts and precisions"
                for row in self.rows if len(row.machines) > 1]

    @property
    def grouped_rows(self) -> list[MethodRow]:
        """The rows in rank order, except that ablations and sweep points follow the first row of the method they
        derive from (when it is on this board), so that they read as a group under it."""
        present = {row.method for row in self.rows}
        children = defaultdict(list)
        for row in self.rows:
            if row.parent in present and row.parent != row.method:
                children[row.parent].append(row)
        ordered, placed = [], set()

        def place(row: MethodRow) -> None:
            ordered.append(row)
            if row.method not in placed:
                placed.add(row.method)
                for child in children[row.method]:
                    place(child)

        for row in self.rows:
            if row.parent not in present or row.parent == row.method:
                place(row)
        return ordered + [row for row in self.rows if not any(row is other for other in ordered)]

    @property
    def families(self) -> list[str]:
        """The families of the rows, in FAMILIES order (the report's filter)."""
        return [family for family in FAMILIES if any(row.family == family for row in self.rows)]

    @property
    def compared_rows(self) -> list[MethodRow]:
        """The ranked rows but the best (the first), in `grouped_rows` order: the rows of the per-AU differences."""
        return [row for row in self.grouped_rows if row.rank and row is not self.rows[0]]

    def below_chance(self, row: MethodRow) -> bool:
        """Whether a row's mean F1 is below the chance row's (every AU predicted present on the same frames)."""
        chance = self.chance.get("mean")
        return row.f1.mean is not None and chance is not None and row.f1.mean < chance

    def best(self, column: str) -> float | None:
        """The highest value of a column ("mean" or an AU) among ranked rows, which the page marks; None where
        no value beats another (one row, or every row equal, e.g. all 0). Rows tied at the top are all best."""
        values = [row.f1.mean if column == "mean" else row.per_au.get(column) for row in self.rows
                  if not row.optimistic]
        values = [v for v in values if v is not None]
        return max(values) if values and max(values) > min(values) else None

    def to_dict(self) -> dict:
        """Plain JSON: the leaderboard exports and the data embedded in the HTML report."""
        def interval(value: Interval | None) -> dict | None:
            if value is None:
                return None
            per_au = {"per_au": dict(zip(self.aus, map(interval, value.per_au)))} if value.per_au else {}
            return {"difference": value.difference, "low": value.low, "high": value.high, "pairs": value.pairs,
                    "significant": value.significant, **per_au}

        return {
            "protocol": self.setting.protocol, "budget": self.setting.budget, "test": self.setting.test,
            "data_fingerprint": self.setting.data_fingerprint, "init": self.setting.init,
            "cross_dataset": self.setting.cross, "aus": self.aus, "decision_threshold": self.decision_threshold,
            "occurrence_threshold": self.setting.occurrence_threshold, "noise": self.setting.noise,
            "rows": [{"rank": row.rank or None, "method": row.method, "family": row.family, "parent": row.parent,
                      "selection": row.selection,
                      "optimistic": row.optimistic, "runs": row.f1.n, "mean_f1": row.f1.mean,
                      "std_f1": row.f1.std, "per_au_f1": row.per_au, "difference_to_best": interval(row.significance),
                      "run_ids": row.run_ids, "machines": row.machines} for row in self.rows],
            "warnings": self.warnings,
            "chance": {"mean_f1": self.chance["mean"], "per_au_f1": {au: self.chance.get(au) for au in self.aus}},
            "reported": [{"method": r.method, "source": r.source, "mean_f1": r.mean, "per_au_f1": r.per_au,
                          "measured_minus_reported": r.difference} for r in self.reported],
            "reference_dataset": self.reference.dataset if self.reference else None,
            "same_setting": bool(self.reference and self.reference.same_setting),
        }


def _by(runs: Iterable[dict], key: Callable[[dict], object]) -> dict:
    groups: dict = defaultdict(list)
    for run in runs:
        groups[key(run)].append(run)
    return dict(groups)


def _aus(runs: list[dict]) -> list[str]:
    aus: list[str] = []
    for run in runs:
        aus += [au for au in run["per_au_f1"] if au not in aus]
    return aus


def _test_sets(runs: list[dict]) -> list[dict]:
    """One run per distinct test set (fold and data), in the order met."""
    return list({(run["spec"]["fold_name"], run["spec"]["data_fingerprint"]): run for run in reversed(runs)}
                .values())[::-1]


def _chance(runs: list[dict], aus: list[str], rates: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    """Chance F1 (every AU predicted present) per AU and overall, averaged over the distinct test sets."""
    tests = _test_sets(runs)
    chance: dict[str, float | None] = {}
    for au in aus:
        per_test = [rates.get(run["run_id"], {}).get(au) for run in tests]
        chance[au] = Stat.of(chance_au_f1(rate) for rate in per_test if rate is not None).mean
    chance["mean"] = Stat.of(run["chance_f1"] for run in tests).mean
    return chance


def _paper_reference(protocol: str) -> PaperReference | None:
    return load_protocol(protocol).reference if protocol in list_protocols() else None


def _reported_entries(runs: list[dict]) -> list[tuple[str, dict]]:
    """(method, reported entry) from the stored specs, then from methods/*.yaml for methods not stored."""
    entries: dict[tuple, tuple[str, dict]] = {}
    for run in runs:
        for entry in run["spec"]["method"].get("reported", []):
            entries.setdefault((run["method"], entry["dataset"], entry["source"]), (run["method"], entry))
    stored = {run["method"] for run in runs}
    for name in list_methods():
        method = load_method(name)
        if method.name not in stored:
            for entry in method.reported:
                entries.setdefault((method.name, entry.dataset, entry.source), (method.name, entry.model_dump()))
    return list(entries.values())


def _reported_rows(reference: PaperReference | None, entries: list[tuple[str, dict]], rows: list[MethodRow],
                   aus: list[str]) -> list[ReportedRow]:
    if reference is None:
        return []
    # the papers select on the test fold: compare with that row where measured, else with the strict one
    preference = ("test_fold", "strict", "last_epoch")
    chosen = sorted(rows, key=lambda row: -preference.index(row.selection) if row.selection in preference else -9)
    measured = {row.method: row.f1.mean for row in chosen}
    result = []
    for method, entry in entries:
        if entry["dataset"] != reference.dataset:
            continue
        mean = entry["mean"] / 100
        ours = measured.get(method)
        difference = ours - mean if reference.same_setting and ours is not None else None
        per_au = {au: entry["per_au"][au] / 100 if au in entry["per_au"] else None for au in aus}
        result.append(ReportedRow(method, entry["source"], per_au, mean, difference))
    return result


def _rank(rows: list[MethodRow]) -> list[MethodRow]:
    """Best mean F1 first; equal means share a rank; rows without a mean come last; optimistic rows (selected on
    the test fold) follow the ranked ones, unranked."""
    rows = sorted(rows, key=lambda row: (row.optimistic, row.f1.mean is None, -(row.f1.mean or 0.0), row.label))
    means = [row.f1.mean for row in rows if row.f1.mean is not None and not row.optimistic]
    for row in rows:
        if not row.optimistic:
            row.rank = 1 + (sum(m > row.f1.mean for m in means) if row.f1.mean is not None else len(means))
    return rows


def _predictions(store: ResultStore, run_id: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return store.predictions(run_id, columns)
    except FileNotFoundError as error:
        raise UserError(f"{error}; reports need the predictions folder {store.predictions_dir.name} beside "
                        f"{store.path.name}")


class _Counts:
    """Per-subject TP/FP/FN of runs, read from their stored predictions once."""

    def __init__(self, store: ResultStore):
        self.store, self.cache = store, {}

    def __call__(self, run: dict, aus: list[str], subjects: list[str]) -> np.ndarray:
        key = (run["run_id"], tuple(aus), tuple(subjects))
        if key not in self.cache:
            columns = ["subject", *(f"{kind}_{au}" for au in aus for kind in ("prob", "label"))]
            self.cache[key] = subject_counts(_predictions(self.store, run["run_id"], columns), aus,
                                             run["spec"]["decision_threshold"], subjects)
        return self.cache[key]


def _defined_family(method: str) -> tuple[str, str | None]:
    """(family, ablation_of) of the method YAML of that name on the search path, for runs stored before methods
    had families; ("other", None) when there is none."""
    if method not in list_methods():
        return "other", None
    try:
        spec = load_method(method)
    except UserError:
        return "other", None
    return spec.family, spec.ablation_of


def method_family(run: dict) -> tuple[str, str | None]:
    """(family, parent) of a stored run's method: the family its spec recorded, and the method it is an ablation
    or a sweep point of."""
    method = run["spec"]["method"]
    if "family" not in method:
        return _defined_family(method["name"])
    return method["family"], method.get("ablation_of") or (method.get("sweep_of") or {}).get("method")


def _significance(row_runs: list[dict], best_runs: list[dict], aus: list[str], counts: _Counts,
                  resamples: int) -> Interval | None:
    """Paired bootstrap of (method - best), of the mean F1 and per AU of `aus`, runs paired by fold and seed; None
    without a pair."""
    best = {(r["spec"]["fold_name"], r["seed"]): r for r in best_runs}
    folds: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for run in row_runs:
        other = best.get((run["spec"]["fold_name"], run["seed"]))
        if other is not None:
            subjects = sorted(set(run["spec"]["test_subjects"]) | set(other["spec"]["test_subjects"]))
            folds[run["spec"]["fold_name"]].append((counts(run, aus, subjects), counts(other, aus, subjects)))
    if not folds:
        return None
    return paired_difference([folds[name] for name in sorted(folds)], resamples)


def leaderboards(runs: list[dict], store: ResultStore, resamples: int = RESAMPLES) -> list[Leaderboard]:
    """One leaderboard per setting of the clean done runs, rows ranked, with chance, reported rows and the
    paired bootstrap interval of each method's difference to the best (of the mean F1 and per AU)."""
    clean = [run for run in runs if run["status"] == "done" and run["noise"] == CLEAN]
    rates = store.positive_rates()
    counts = _Counts(store)
    entries = _reported_entries(clean)
    references = {protocol: _paper_reference(protocol) for protocol in {run["protocol"] for run in clean}}
    boards = []
    for setting, board_runs in sorted(_by(clean, lambda run: run_key(run).setting).items()):
        aus = _aus(board_runs)
        by_row = {(key.method, key.selection): row_runs for key, row_runs in _by(board_runs, run_key).items()}
        rows = _rank([
            MethodRow(method, selection, [r["run_id"] for r in row_runs], Stat.of(r["mean_f1"] for r in row_runs),
                      {au: Stat.of(r["per_au_f1"].get(au) for r in row_runs).mean for au in aus},
                      sorted({_machine(r) for r in row_runs}), *method_family(row_runs[-1]))
            for (method, selection), row_runs in by_row.items()
        ])
        best = rows[0]
        for row in rows:
            if row is not best:
                row.significance = _significance(by_row[row.method, row.selection], by_row[best.method, best.selection],
                                                 aus, counts, resamples)
        reference = references[setting.protocol]
        boards.append(Leaderboard(
            setting, aus, board_runs[0]["spec"]["decision_threshold"], rows, _chance(board_runs, aus, rates),
            reference, _reported_rows(reference, entries, rows, aus),
        ))
    return boards


# ------------------------------------------------------------------------------------------ noise
@dataclass
class NoiseCurve:
    """Mean F1 per method measured under the noise (row label: method and selection) at each rate of one noise
    kind; level 0 is the clean run."""

    setting: Setting
    kind: str
    levels: list[float]
    points: dict[str, list[Stat]]  # method -> one Stat per level
    chance: float | None  # every AU predicted present on the same (clean) test labels, at every level

    def drop(self, method: str, level: int) -> float | None:
        """Clean mean F1 minus the mean F1 at `levels[level]`."""
        clean, noisy = self.points[method][0].mean, self.points[method][level].mean
        return None if clean is None or noisy is None else clean - noisy


def noise_curves(runs: list[dict]) -> list[NoiseCurve]:
    """One curve set per setting and noise kind that has noisy done runs."""
    curves = []
    done = [run for run in runs if run["status"] == "done"]
    for setting, setting_runs in sorted(_by(done, lambda run: run_key(run).setting.clean()).items()):
        parsed = [(NoiseSpec.parse(run["noise"]), run_key(run).label, run) for run in setting_runs]
        for kind in sorted({noise.kind for noise, _, _ in parsed if not noise.is_clean}):
            chosen = [(0.0 if noise.is_clean else noise.rate, label, run) for noise, label, run in parsed
                      if noise.is_clean or noise.kind == kind]
            levels = sorted({0.0} | {level for level, _, _ in chosen})
            labels = sorted({label for level, label, _ in chosen if level > 0})  # methods measured under noise
            points = {label: [Stat.of(run["mean_f1"] for level, other, run in chosen
                                      if other == label and level == at) for at in levels]
                      for label in labels}
            chance = Stat.of(run["chance_f1"] for run in _test_sets([run for _, _, run in chosen])).mean
            curves.append(NoiseCurve(setting, kind, levels, points, chance))
    return curves


# ------------------------------------------------------------------------------------------- pose
@dataclass
class PoseGrid:
    """Mean F1 (over AUs, then runs) per yaw x pitch bin, per method (row label): arrays [pitches, yaws], NaN
    if absent."""

    setting: Setting
    yaws: list[int]
    pitches: list[int]
    methods: dict[str, np.ndarray]


def pose_grids(runs: list[dict]) -> list[PoseGrid]:
    """One grid per setting whose clean done runs store per-pose-bin metrics (groups "pose:yaw.._pitch..")."""
    grids = []
    clean = [run for run in runs if run["status"] == "done" and run["noise"] == CLEAN]
    for setting, setting_runs in sorted(_by(clean, lambda run: run_key(run).setting).items()):
        scores: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in setting_runs:
            for group, per_au in run["groups"].items():
                match = POSE_GROUP.fullmatch(group)
                values = [v for v in per_au.values() if v is not None]
                if match and values:
                    scores[run_key(run).label][(int(match[1]), int(match[2]))].append(float(np.mean(values)))
        if not scores:
            continue
        bins = {key for per_bin in scores.values() for key in per_bin}
        yaws, pitches = sorted({yaw for yaw, _ in bins}), sorted({pitch for _, pitch in bins}, reverse=True)
        methods = {method: np.array([[np.mean(per_bin[(yaw, pitch)]) if per_bin.get((yaw, pitch)) else np.nan
                                      for yaw in yaws] for pitch in pitches])
                   for method, per_bin in sorted(scores.items())}
        grids.append(PoseGrid(setting, yaws, pitches, methods))
    return grids


# ---------------------------------------------------------------------------------- cross-dataset
@dataclass(frozen=True)
class CrossRow:
    """A method (row label) on one cross-dataset direction, next to its in-domain score on the target dataset
    (same AUs, selection, budget, init and thresholds, from a k-fold protocol on the same preparation of that
    dataset) when stored."""

    setting: Setting
    method: str
    aus: list[str]
    cross: Stat
    in_domain: Stat | None
    in_domain_protocol: str | None

    @property
    def drop(self) -> float | None:
        if self.in_domain is None or self.in_domain.mean is None or self.cross.mean is None:
            return None
        return self.in_domain.mean - self.cross.mean


def _mean_over(run: dict, aus: list[str]) -> float | None:
    values = [run["per_au_f1"].get(au) for au in aus]
    return None if any(v is None for v in values) else float(np.mean(values))


def cross_dataset(runs: list[dict]) -> list[CrossRow]:
    clean = [run for run in runs if run["status"] == "done" and run["noise"] == CLEAN]
    settings = _by(clean, lambda run: run_key(run).setting)
    rows = []
    for setting, setting_runs in sorted(settings.items()):
        if not setting.cross:
            continue
        for method, method_runs in sorted(_by(setting_runs, lambda run: run_key(run).label).items()):
            aus = _aus(method_runs)
            target = dataset_label(method_runs[0]["spec"]["test_data"])
            prepared = method_runs[0]["spec"]["test_data"].get("fingerprint")  # None on SynthAU
            same = ("budget", "init", "decision_threshold", "occurrence_threshold")
            candidates = {
                other: [r for r in other_runs if run_key(r).label == method and not r["groups"]
                        and _mean_over(r, aus) is not None and r["spec"]["test_data"].get("fingerprint") == prepared]
                for other, other_runs in settings.items()
                if not other.cross and other.test == target
                and all(getattr(other, name) == getattr(setting, name) for name in same)
            }
            candidates = {other: found for other, found in candidates.items() if found}
            chosen = min(candidates, key=lambda other: (-len(candidates[other]), other)) if candidates else None
            in_domain = Stat.of(_mean_over(r, aus) for r in candidates[chosen]) if chosen else None
            rows.append(CrossRow(setting, method, aus, Stat.of(_mean_over(r, aus) for r in method_runs), in_domain,
                                 chosen.protocol if chosen else None))
    return rows


# ------------------------------------------------------------------------------------------ labels
@dataclass(frozen=True)
class LabelStats:
    """Base rates and pairwise phi of a test dataset's labels, with where they were read."""

    dataset: str
    source: str
    frames: int
    subjects: int
    aus: list[str]
    base_rates: list[float | None]
    phi: np.ndarray  # [K, K], NaN where undefined


def _phi(a: np.ndarray, b: np.ndarray) -> float:
    valid = (a != MISSING_LABEL) & (b != MISSING_LABEL)
    if not valid.any():
        return math.nan
    x, y = a[valid] == 1, b[valid] == 1
    px, py, pxy = x.mean(), y.mean(), (x & y).mean()
    denominator = math.sqrt(px * (1 - px) * py * (1 - py))
    return float((pxy - px * py) / denominator) if denominator > 0 else math.nan


def label_stats(runs: list[dict], store: ResultStore) -> list[LabelStats]:
    """Per test dataset, the stored test labels of one protocol, budget and data preparation (the one with the
    most test sets), one run per test set."""
    result = []
    done = [run for run in runs if run["status"] == "done"]
    for dataset, dataset_runs in sorted(_by(done, lambda run: dataset_label(run["spec"]["test_data"])).items()):
        groups = _by(dataset_runs, lambda run: (run["protocol"], str(run["budget"]), run["spec"]["data_fingerprint"]))
        chosen = min(groups, key=lambda key: (-len(_test_sets(groups[key])), key))
        tests = _test_sets(groups[chosen])
        aus = _aus(tests)
        columns = ["subject", *(f"label_{au}" for au in aus)]  # a run may lack some: read what it has
        tables = [_predictions(store, run["run_id"], columns) for run in tests]
        labels = np.concatenate([
            np.stack([column_array(table, f"label_{au}") if f"label_{au}" in table.column_names
                      else np.full(table.num_rows, MISSING_LABEL) for au in aus], axis=1) for table in tables
        ])
        subjects = {s for table in tables for s in table.column("subject").to_pylist()}
        rates = [_none_if_nan(float(np.mean(column[column != MISSING_LABEL] == 1)))
                 if (column != MISSING_LABEL).any() else None for column in labels.T]
        phi = np.array([[_phi(labels[:, i], labels[:, j]) for j in range(len(aus))] for i in range(len(aus))])
        protocol, budget, data_fingerprint = chosen
        source = f"{protocol} · {budget} · data {data_fingerprint[:8]}, {len(tests)} test set(s)"
        result.append(LabelStats(dataset, source, len(labels), len(subjects), aus, rates, phi))
    return result
