"""Declarative specs: protocols and methods from YAML, resolved into hashed RunSpecs.

A protocol (`protocols/<name>.yaml`) says what data, which AUs, which folds, which policies and how much
compute each budget (`quick`, `standard`, `full`) spends. A method (`methods/<name>.yaml`) is a recipe
with its hyperparameters, optional per-budget overrides, a citation and the numbers its paper reports.
A `RunSpec` is one (method, protocol, budget, fold, seed, noise) with everything resolved; its content
hash is the run id.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aunce_bench import __version__
from aunce_bench.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
METHODS_DIR = PROJECT_ROOT / "methods"
PROTOCOLS_DIR = PROJECT_ROOT / "protocols"
BUDGETS = ("quick", "standard", "full")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- protocols
class DataSpec(Strict):
    """A data source. `synth` renders SynthAU with `overrides` on top of the budget's data settings."""

    source: Literal["synth"] = "synth"
    profile: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class KFoldSplit(Strict):
    """Subject-independent k folds: subjects split into k parts; fold k tests on part n+1-k (FACTS.md s3)."""

    kind: Literal["kfold"]
    n_folds: int = Field(3, ge=2)


class CrossDirection(Strict):
    name: str
    train: DataSpec
    test: DataSpec


class CrossSplit(Strict):
    """Cross-dataset: each direction trains on every subject of one source and tests on another."""

    kind: Literal["cross"]
    directions: list[CrossDirection] = Field(min_length=1)


class Budget(Strict):
    """How much data and compute a budget spends (method schedules come from the method's overrides)."""

    data: dict[str, Any] = Field(default_factory=dict, description="SynthConfig settings of train and test data")
    test_data: dict[str, Any] = Field(default_factory=dict, description="extra settings of the test data")
    crop_size: int = Field(ge=16, description="network input: random crops in training, centre crop at test")


class PaperReference(Strict):
    """Which reported numbers (the `reported` entries of method YAMLs, matched by dataset) a protocol's
    leaderboard shows as reference rows; `same_setting` when the protocol reproduces the paper's setting,
    so that measured-minus-reported differences mean something."""

    dataset: str
    same_setting: bool = False


class ProtocolSpec(Strict):
    name: str
    description: str = ""
    data: DataSpec | None = None
    test_data_overrides: dict[str, Any] = Field(default_factory=dict)
    split: KFoldSplit | CrossSplit = Field(discriminator="kind")
    aus: list[int] | None = None
    selection: Literal["strict", "official"] = "strict"
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    occurrence_threshold: float = Field(2.0, gt=0.0, le=5.0)
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    reference: PaperReference | None = None
    budgets: dict[Literal["quick", "standard", "full"], Budget]

    @model_validator(mode="after")
    def _complete(self) -> "ProtocolSpec":
        missing = [name for name in BUDGETS if name not in self.budgets]
        if missing:
            raise ValueError(f"budgets: missing {', '.join(missing)} (every protocol defines quick, standard, full)")
        if self.split.kind == "kfold" and self.data is None:
            raise ValueError("data: a kfold protocol needs a data source")
        return self


# ------------------------------------------------------------------------------------------- methods
class ModelSpec(Strict):
    backbone: str = "resnet18"
    graph: bool = True
    dim: int | None = Field(None, ge=8)
    checkpoint_path: str | None = None


class OptimSpec(Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(ge=2)
    epochs: int = Field(ge=1)
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning rate over the steps")


class LossSpec(Strict):
    model_config = ConfigDict(extra="allow", frozen=True)  # loss-specific keyword arguments
    name: str


class ReportedResult(Strict):
    dataset: str
    source: str
    per_au: dict[str, float]
    mean: float


class MethodSpec(Strict):
    name: str
    description: str = ""
    citation: str = ""
    recipe: str
    model: ModelSpec = ModelSpec()
    loss: LossSpec
    train: OptimSpec
    probe: OptimSpec | None = None
    budgets: dict[Literal["quick", "standard", "full"], dict[str, Any]] = Field(default_factory=dict)
    reported: list[ReportedResult] = Field(default_factory=list)

    def for_budget(self, budget: str) -> "MethodSpec":
        """This method with the budget's overrides merged in (nested keys merge, values replace)."""
        merged = _deep_merge(self.model_dump(exclude={"budgets"}), self.budgets.get(budget, {}))
        return MethodSpec.model_validate(merged)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------------------------- runs
class RunSpec(Strict):
    """One fully resolved run; its content hash is the run id."""

    method: MethodSpec
    protocol: str
    selection: Literal["strict", "official"]
    validation_fraction: float
    decision_threshold: float
    budget: str
    crop_size: int
    fold: int
    fold_name: str
    seed: int
    noise: str
    aus: list[int]
    train_data: dict[str, Any]
    test_data: dict[str, Any]
    train_subjects: list[str]
    test_subjects: list[str]
    data_fingerprint: str
    code_version: str = __version__

    @property
    def run_id(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------- loading
def _known(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.yaml"))


def _resolve(reference: str, folder: Path, kind: str) -> Path:
    path = Path(reference)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"{kind} file {path} does not exist")
        return path
    candidate = folder / f"{reference}.yaml"
    if candidate.is_file():
        return candidate
    known = _known(folder)
    close = difflib.get_close_matches(reference, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"unknown {kind} '{reference}'{hint}; known: {', '.join(known)}")


def _load_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(error, 'problem', error)})")
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a mapping of fields at the top level")
    return content


def _validate(model: type[BaseModel], content: dict, path: Path):
    try:
        return model.model_validate(content)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{path}: field '{field}': {message}")


def load_protocol(reference: str) -> ProtocolSpec:
    path = _resolve(reference, PROTOCOLS_DIR, "protocol")
    return _validate(ProtocolSpec, _load_yaml(path), path)


def load_method(reference: str) -> MethodSpec:
    path = _resolve(reference, METHODS_DIR, "method")
    return _validate(MethodSpec, _load_yaml(path), path)


def list_protocols() -> list[str]:
    return _known(PROTOCOLS_DIR)


def list_methods() -> list[str]:
    return _known(METHODS_DIR)
