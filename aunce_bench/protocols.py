"""Protocol expansion: a protocol x budget becomes folds, and folds x seeds x noise become RunSpecs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.synth.generate import SynthConfig, subject_names
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.errors import UserError
from aunce_bench.specs import Budget, DataSpec, MethodSpec, ProtocolSpec, RunSpec


@dataclass(frozen=True)
class FoldPlan:
    """One fold: which data and subjects train, which test, on which AUs."""

    index: int  # 1-based
    name: str
    train_data: SynthConfig
    test_data: SynthConfig
    train_subjects: list[str]
    test_subjects: list[str]
    aus: list[int]


def data_config(data: DataSpec, protocol: ProtocolSpec, budget: Budget, test: bool) -> SynthConfig:
    """The SynthAU configuration of a data source under a budget (test data may add settings)."""
    settings = {**budget.data, "occurrence_threshold": protocol.occurrence_threshold, **data.overrides}
    if test:
        settings.update({**protocol.test_data_overrides, **budget.test_data})
    try:
        return SynthConfig(profile=data.profile, **settings).resolved()
    except ValueError as error:
        raise UserError(f"protocol {protocol.name}: invalid data settings: {error}".splitlines()[0])


def _labelled(config: SynthConfig) -> list[int]:
    return list(PROFILES[config.profile].labels.labelled_aus)


def _aus(protocol: ProtocolSpec, train: SynthConfig, test: SynthConfig) -> list[int]:
    available = [au for au in _labelled(train) if au in _labelled(test)]
    if protocol.aus is None:
        return available
    absent = [au for au in protocol.aus if au not in available]
    if absent:
        raise UserError(f"protocol {protocol.name}: field 'aus': AU {absent[0]} is not labelled in both "
                        f"train and test data (available: {available})")
    return list(protocol.aus)


def fold_plans(protocol: ProtocolSpec, budget_name: str) -> list[FoldPlan]:
    budget = protocol.budgets[budget_name]
    if protocol.split.kind == "kfold":
        train = data_config(protocol.data, protocol, budget, test=False)
        test = data_config(protocol.data, protocol, budget, test=True)
        subjects = subject_names(train)
        n_folds = protocol.split.n_folds
        if len(subjects) < n_folds:
            raise UserError(f"protocol {protocol.name}: {len(subjects)} subjects cannot make {n_folds} folds")
        parts = [list(part) for part in np.array_split(np.array(subjects), n_folds)]
        plans = []
        for k in range(1, n_folds + 1):
            test_part = parts[n_folds - k]  # fold 1 tests the last part, as in FACTS.md s3
            train_subjects = [s for s in subjects if s not in test_part]
            plans.append(FoldPlan(k, f"fold{k}", train, test, train_subjects, test_part, _aus(protocol, train, test)))
        return plans
    plans = []
    for k, direction in enumerate(protocol.split.directions, start=1):
        train = data_config(direction.train, protocol, budget, test=False)
        test = data_config(direction.test, protocol, budget, test=True)
        plans.append(FoldPlan(k, direction.name, train, test, subject_names(train), subject_names(test),
                              _aus(protocol, train, test)))
    return plans


def split_validation(subjects: list[str], fraction: float, fold: int) -> tuple[list[str], list[str]]:
    """Hold out validation subjects from the training subjects (deterministic per fold)."""
    count = max(1, int(round(fraction * len(subjects))))
    held_out = set(np.random.default_rng(fold).choice(subjects, size=count, replace=False).tolist())
    return [s for s in subjects if s not in held_out], [s for s in subjects if s in held_out]


def parse_noise(text: str) -> NoiseSpec:
    try:
        return NoiseSpec.parse(text)
    except ValueError as error:
        raise UserError(f"invalid --noise: {error}")


def plan_runs(method: MethodSpec, protocol: ProtocolSpec, budget: str, folds: list[int] | None,
              seeds: list[int], noise: NoiseSpec) -> list[RunSpec]:
    """Every RunSpec of a method on a protocol: selected folds x seeds, one noise setting."""
    plans = fold_plans(protocol, budget)
    if folds:
        wrong = [k for k in folds if not 1 <= k <= len(plans)]
        if wrong:
            raise UserError(f"invalid --folds: fold {wrong[0]} is out of range; {protocol.name} has folds "
                            f"1-{len(plans)}")
        plans = [plan for plan in plans if plan.index in folds]
    resolved = method.for_budget(budget)
    runs = []
    for plan in plans:
        fingerprint = hashlib.sha256((plan.train_data.content_hash() + plan.test_data.content_hash()).encode())
        for seed in seeds:
            runs.append(RunSpec(
                method=resolved, protocol=protocol.name, selection=protocol.selection,
                validation_fraction=protocol.validation_fraction, decision_threshold=protocol.decision_threshold,
                budget=budget, crop_size=protocol.budgets[budget].crop_size, fold=plan.index, fold_name=plan.name,
                seed=seed, noise=str(noise), aus=plan.aus, train_data=plan.train_data.model_dump(),
                test_data=plan.test_data.model_dump(), train_subjects=plan.train_subjects,
                test_subjects=plan.test_subjects, data_fingerprint=fingerprint.hexdigest()[:20],
            ))
    return runs
