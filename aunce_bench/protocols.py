"""Protocol expansion: a protocol x budget becomes folds, and folds x seeds x noise become RunSpecs.

Data sources are SynthAU (generated on demand) or prepared real datasets under the data root; planning a
protocol on prepared data reads their completion markers (subjects, AUs, partitions, fingerprint) and fails
with the `prepare` command to run when a dataset is absent or incomplete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from aunce_bench.data.configs import DataConfig, PreparedConfig, SynthConfig
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.prepared import data_root, prepared_info
from aunce_bench.data.synth.generate import subject_names
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.errors import UserError
from aunce_bench.specs import DEFAULT_INIT, DataSpec, MethodSpec, ProtocolSpec, RunSpec, validation_message


@dataclass(frozen=True)
class FoldPlan:
    """One fold: which data and subjects train, which test, on which AUs."""

    index: int  # 1-based
    name: str
    train_data: DataConfig
    test_data: DataConfig
    train_subjects: list[str]
    test_subjects: list[str]
    aus: list[int]


@dataclass(frozen=True)
class _Data:
    """A data source resolved under a budget: its loading configuration and what it holds."""

    config: DataConfig
    subjects: list[str]
    aus: list[int]
    partitions: dict[str, list[str]]
    where: str  # for messages


def _resolve(data: DataSpec, protocol: ProtocolSpec, budget_name: str, test: bool, root: Path) -> _Data:
    budget = protocol.budget(budget_name)
    settings = {**budget.data, "occurrence_threshold": protocol.occurrence_threshold, **data.overrides}
    if test:
        settings.update({**protocol.test_data_overrides, **budget.test_data})
    info = prepared_info(root, data.dataset) if data.source == "prepared" else None
    try:
        if info is None:
            config = SynthConfig(profile=data.profile, **settings).resolved()
        else:
            config = PreparedConfig(dataset=data.dataset, fingerprint=info.fingerprint, **settings)
    except ValidationError as error:
        raise UserError(f"{protocol.where}: data settings of budget '{budget_name}': "
                        f"{validation_message(error)}")
    except ValueError as error:
        raise UserError(f"{protocol.where}: data settings of budget '{budget_name}': {error}")
    if info is None:
        return _Data(config, subject_names(config), list(PROFILES[config.profile].labels.labelled_aus), {},
                     f"SynthAU {config.profile}")
    unknown = [b for b in config.pose_bins or [] if b not in info.pose_bins]
    if unknown:
        raise UserError(f"{protocol.where}: pose bin '{unknown[0]}' is not in {data.dataset} at {info.folder} "
                        f"(it has: {', '.join(info.pose_bins)})")
    return _Data(config, info.subjects, info.aus, info.partitions, f"{data.dataset} at {info.folder}")


def _aus(protocol: ProtocolSpec, train: _Data, test: _Data) -> list[int]:
    available = [au for au in train.aus if au in test.aus]
    if protocol.aus is None:
        return available
    absent = [au for au in protocol.aus if au not in available]
    if absent:
        raise UserError(f"{protocol.where}: field 'aus': AU {absent[0]} is not labelled in both "
                        f"train and test data (available: {available})")
    return list(protocol.aus)


def _parts(protocol: ProtocolSpec, data: _Data) -> list[list[str]]:
    """The subject parts of a k-fold protocol: pinned in the YAML, or the data's subjects split in order."""
    split = protocol.split
    if split.kind == "parts":
        absent = [s for part in split.parts for s in part if s not in data.subjects]
        if absent:
            raise UserError(f"{protocol.where}: subject {absent[0]} of its parts is not in {data.where} "
                            f"({len(absent)} of {sum(map(len, split.parts))} missing); prepare the complete dataset")
        return [list(part) for part in split.parts]
    if len(data.subjects) < split.n_folds:
        raise UserError(f"{protocol.where}: {len(data.subjects)} subjects cannot make {split.n_folds} folds")
    return [list(part) for part in np.array_split(np.array(data.subjects), split.n_folds)]


def _partition(protocol: ProtocolSpec, data: _Data, name: str) -> list[str]:
    if name not in data.partitions:
        known = ", ".join(data.partitions) or "none"
        raise UserError(f"{protocol.where}: {data.where} has no '{name}' partition (it has: {known})")
    return list(data.partitions[name])


def fold_plans(protocol: ProtocolSpec, budget_name: str, root: Path | None = None) -> list[FoldPlan]:
    """The folds of a protocol under a budget; prepared data is looked up under `root` (see `data_root`)."""
    root = data_root(root)
    split = protocol.split
    if split.kind == "cross":
        plans = []
        for k, direction in enumerate(split.directions, start=1):
            train = _resolve(direction.train, protocol, budget_name, False, root)
            test = _resolve(direction.test, protocol, budget_name, True, root)
            plans.append(FoldPlan(k, direction.name, train.config, test.config, train.subjects, test.subjects,
                                  _aus(protocol, train, test)))
        return plans
    train = _resolve(protocol.data, protocol, budget_name, False, root)
    test = _resolve(protocol.data, protocol, budget_name, True, root)
    aus = _aus(protocol, train, test)
    if split.kind == "partition":
        train_subjects, test_subjects = _partition(protocol, train, split.train), _partition(protocol, test, split.test)
        shared = sorted(set(train_subjects) & set(test_subjects))
        if shared:
            raise UserError(f"{protocol.where}: subject {shared[0]} is in both the '{split.train}' and the "
                            f"'{split.test}' partition of {train.where}")
        return [FoldPlan(1, split.test, train.config, test.config, train_subjects, test_subjects, aus)]
    parts = _parts(protocol, train)
    plans = []
    for k in range(1, len(parts) + 1):
        test_part = parts[len(parts) - k]  # fold 1 tests the last part, as published
        train_subjects = [s for part in parts if part is not test_part for s in part]
        plans.append(FoldPlan(k, f"fold{k}", train.config, test.config, train_subjects, test_part, aus))
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


def resolved_method(method: MethodSpec, protocol: ProtocolSpec, budget: str, init: str | None = None
                    ) -> tuple[MethodSpec, str | None]:
    """The method under the budget's overrides, its backbone init resolved, and what pins the init's weights.

    The init is `init` (the command line) if given, else the method's for this budget, else the protocol
    budget's, else DEFAULT_INIT of the budget."""
    from aunce_bench.models.backbones import check_backbone
    from aunce_bench.models.init import resolve_init
    from aunce_bench.losses import check_loss
    from aunce_bench.recipes import RECIPES

    try:
        resolved = method.for_budget(budget)
    except ValidationError as error:
        raise UserError(f"{method.where}: budget '{budget}' overrides: {validation_message(error)}")
    try:
        recipe = RECIPES.get(resolved.recipe)
    except UserError as error:
        raise UserError(f"{method.where}: field 'recipe': {error}") from None
    missing = [name for name in recipe.needs if getattr(resolved, name) is None]
    if missing:
        raise UserError(f"{method.where}: recipe {resolved.recipe} needs the field '{missing[0]}'")
    if resolved.views is not None and not recipe.takes_views:
        raise UserError(f"{method.where}: field 'views': recipe {resolved.recipe} trains with fixed views; remove "
                        "the field, or use a supervised or contrastive_probe recipe")
    if resolved.loss is not None:
        check_loss(resolved.loss, method.where, recipe.loss_kind, resolved.recipe)
    check_backbone(resolved.model.backbone, method.where)
    chosen = init or resolved.model.init or protocol.budget(budget).init or DEFAULT_INIT[budget]
    _check_synthface_crop(chosen, protocol, budget)
    where = ("invalid init" if init or not (resolved.model.init or protocol.budget(budget).init) else
             f"{method.where}: field 'model.init'" if resolved.model.init else
             f"{protocol.where}: field 'budgets.{budget}.init'")  # what set the init, for its messages
    chosen, init_hash = resolve_init(chosen, resolved.model.backbone, protocol.budgets[budget].crop_size, where)
    return resolved.model_copy(update={"model": resolved.model.model_copy(update={"init": chosen})}), init_hash


def _check_synthface_crop(init: str, protocol: ProtocolSpec, budget: str) -> None:
    """A SynthFace init needs the budget's network input to be one a build takes."""
    from aunce_bench.synthface import MIN_CROP_SIZE

    crop = protocol.budgets[budget].crop_size
    if init == "synthface" and crop < MIN_CROP_SIZE:
        raise UserError(f"{protocol.where}: field 'budgets.{budget}.crop_size': {crop} px is smaller than the "
                        f"{MIN_CROP_SIZE} px a SynthFace init needs; use a crop_size of at least {MIN_CROP_SIZE}, or "
                        "another init (e.g. --init scratch)")


def _check_pool_disjoint(plans: list[FoldPlan], protocol: ProtocolSpec) -> None:
    """SynthFace pretrains on identities of POOL_SEED: a protocol rendering with that seed would share them."""
    from aunce_bench.synthface import POOL_SEED

    for plan in plans:
        for data in (plan.train_data, plan.test_data):
            if isinstance(data, SynthConfig) and data.seed == POOL_SEED:
                raise UserError(f"{protocol.where}: SynthAU seed {POOL_SEED} renders the SynthFace "
                                "pretraining identities; choose another seed or another --init")


def _check_crop(plans: list[FoldPlan], protocol: ProtocolSpec, budget: str) -> None:
    """The network input is cropped from the stored faces: it cannot be larger than them."""
    from aunce_bench.data.faces import OUTPUT_SIZE

    crop = protocol.budgets[budget].crop_size
    for plan in plans:
        for data in (plan.train_data, plan.test_data):
            size = data.image_size or OUTPUT_SIZE
            if crop > size:
                raise UserError(f"{protocol.where}: field 'budgets.{budget}.crop_size': {crop} px is larger "
                                f"than the {size} px faces of its data; lower crop_size or raise data.image_size")


def plan_runs(method: MethodSpec, protocol: ProtocolSpec, budget: str, folds: list[int] | None,
              seeds: list[int], noise: NoiseSpec, root: Path | None = None,
              selection: str | None = None, init: str | None = None) -> list[RunSpec]:
    """Every RunSpec of a method on a protocol: selected folds x seeds, one noise setting.

    `selection` overrides the protocol's model-selection policy (strict, last_epoch or test_fold), `init` the
    backbone initialisation (see `resolved_method`)."""
    plans = fold_plans(protocol, budget, root)
    _check_crop(plans, protocol, budget)
    if folds:
        wrong = [k for k in folds if not 1 <= k <= len(plans)]
        if wrong:
            raise UserError(f"invalid --folds: fold {wrong[0]} is out of range; {protocol.name} has folds "
                            f"1-{len(plans)}")
        plans = [plan for plan in plans if plan.index in folds]
    resolved, init_hash = resolved_method(method, protocol, budget, init)
    if resolved.model.init == "synthface":
        _check_pool_disjoint(plans, protocol)
    runs = []
    for plan in plans:
        fingerprint = hashlib.sha256((plan.train_data.content_hash() + plan.test_data.content_hash()).encode())
        for seed in seeds:
            runs.append(RunSpec(
                method=resolved, protocol=protocol.name, selection=selection or protocol.selection,
                validation_fraction=protocol.validation_fraction, decision_threshold=protocol.decision_threshold,
                budget=budget, crop_size=protocol.budgets[budget].crop_size, fold=plan.index, fold_name=plan.name,
                seed=seed, noise=noise, aus=plan.aus, train_data=plan.train_data,
                test_data=plan.test_data, train_subjects=plan.train_subjects,
                test_subjects=plan.test_subjects, data_fingerprint=fingerprint.hexdigest()[:20], init_hash=init_hash,
            ))
    return runs
