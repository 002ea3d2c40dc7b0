"""Declarative specs: protocols and methods from YAML, resolved into hashed RunSpecs.

A protocol (`protocols/<name>.yaml`) says what data, which AUs, which folds, which policies and how much
compute each budget (`quick`, `standard`, `full`; on prepared real data `quick` and `full`) spends. A method
(`methods/<name>.yaml`) is a recipe with its hyperparameters, optional per-budget overrides, a citation and
the numbers its paper reports; `include: OTHER` starts from another method's fields (ablations). A
`RunSpec` is one (method, protocol, budget, fold, seed, noise) with everything resolved; its content hash is
the run id.

Names are looked up in the folders of `AUNCE_BENCH_PATH` (each may hold `methods/` and `protocols/`), then
among the built-in YAMLs shipped inside the package (`aunce_bench/builtin`); a path to a YAML file works
anywhere. Every field is typed strictly (no coercion from strings) and bounded; duplicate keys are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, PlainValidator, PrivateAttr, Tag,
                      ValidationError, field_validator, model_validator)

from aunce_bench import __version__
from aunce_bench.data.configs import DataConfig, data_source
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.errors import UserError
from aunce_bench.registry import unknown_name

BUILTIN = Path(str(files("aunce_bench.builtin")))  # package data: a real folder in wheels and editable installs
SEARCH_PATH_VARIABLE = "AUNCE_BENCH_PATH"
BUDGETS = ("quick", "standard", "full")
REAL_BUDGETS = ("quick", "full")  # protocols on prepared real data
# Backbone initialisation of a budget that names none: CPU budgets start from the embedded
# SynthFace backbone, `full` (the paper setting) from timm's ImageNet weights.
DEFAULT_INIT = {"quick": "synthface", "standard": "synthface", "full": "imagenet"}


# ------------------------------------------------------------------------------------ initialisation
INIT_KINDS = ("scratch", "imagenet", "synthface", "checkpoint")
INIT_HELP = "scratch, imagenet, synthface or checkpoint:PATH"


@dataclass(frozen=True)
class Init:
    """A backbone initialisation, parsed from `scratch`, `imagenet`, `synthface` or `checkpoint:PATH`."""

    kind: str
    path: Path | None = None

    @classmethod
    def of(cls, text: str | None) -> "Init":
        """The init a spec's `model.init` names; unset means scratch (runs stored before inits were recorded)."""
        return cls.parse(text) if text else cls("scratch")

    @classmethod
    def parse(cls, text: str) -> "Init":
        kind, _, rest = text.partition(":")
        if kind == "checkpoint":
            if not rest:
                raise ValueError("checkpoint needs a path: checkpoint:PATH")
            return cls(kind, Path(rest).expanduser())
        if kind not in INIT_KINDS or rest:
            raise ValueError(f"unknown init '{text}'; choose {INIT_HELP}")
        return cls(kind)

    def __str__(self) -> str:
        return f"checkpoint:{self.path}" if self.kind == "checkpoint" else self.kind


def check_init(text: str) -> str:
    """The init as written, if it parses (a pydantic validator of spec fields)."""
    Init.parse(text)
    return text


# Model-selection policies: validation subjects; the released scripts' final model; the published
# practice, the best epoch on the test fold (optimistic: the test labels choose the model).
SELECTIONS = ("strict", "last_epoch", "test_fold")
OPTIMISTIC_SELECTIONS = ("test_fold",)
Selection = Literal["strict", "last_epoch", "test_fold"]


class Strict(BaseModel):
    """Spec fields: unknown keys refused, no coercion (`"16"` is not an int, `1e3` is not an int)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ----------------------------------------------------------------------------------------- protocols
class SynthData(Strict):
    """SynthAU, rendered with `overrides` on top of the budget's data settings (SynthConfig fields)."""

    source: Literal["synth"] = "synth"
    profile: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class PreparedData(Strict):
    """A real dataset prepared with `aunce-bench prepare` into `<data root>/<dataset>`, loaded with `overrides` on
    top of the budget's data settings (PreparedConfig fields: frame_stride, image_size, pose_bins)."""

    source: Literal["prepared"]
    dataset: str
    overrides: dict[str, Any] = Field(default_factory=dict)


DataSpec = Annotated[Union[Annotated[SynthData, Tag("synth")], Annotated[PreparedData, Tag("prepared")]],
                     Discriminator(data_source)]


class KFoldSplit(Strict):
    """Subject-independent k folds: the data's subjects split into k parts in order; fold k tests on part
    n+1-k (docs/PROTOCOLS.md#splits)."""

    kind: Literal["kfold"]
    n_folds: int = Field(3, ge=2, le=100)


def parts_sha256(parts: list[list[str]]) -> str:
    """The hash that pins a protocol's subject parts: sha256 of their compact JSON."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


class PartsSplit(Strict):
    """Subject-independent folds over pinned subject parts (the published splits,
    docs/PROTOCOLS.md#splits): fold k tests on part n+1-k and trains on the others. `sha256`
    (`parts_sha256`) pins the lists against silent edits."""

    kind: Literal["parts"]
    parts: list[list[str]] = Field(min_length=2)
    sha256: str

    @model_validator(mode="after")
    def _pinned(self) -> "PartsSplit":
        subjects = [subject for part in self.parts for subject in part]
        twice = next((s for s in subjects if subjects.count(s) > 1), None)
        if twice:
            raise ValueError(f"subject {twice} is in more than one part")
        actual = parts_sha256(self.parts)
        if actual != self.sha256:
            raise ValueError(f"the subject parts do not match their pinned sha256 {self.sha256[:12]}... (edited without "
                             f"updating the hash?); if the edit is deliberate, set sha256: {actual}")
        return self


class PartitionSplit(Strict):
    """The dataset's official partitions, recorded by `prepare`: train on `train`, test on `test`."""

    kind: Literal["partition"]
    train: str = "train"
    test: str = "validation"


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

    data: dict[str, Any] = Field(default_factory=dict, description="data settings of train and test data "
                                 "(SynthConfig fields; for prepared data frame_stride, image_size, pose_bins)")
    test_data: dict[str, Any] = Field(default_factory=dict, description="extra settings of the test data")
    crop_size: int = Field(ge=16, le=1024, description="network input: random crops in training, centre crop at test")
    init: str | None = Field(None, description="backbone initialisation of every method at this budget (unless "
                             "its YAML says otherwise): scratch, imagenet, synthface or checkpoint:PATH; "
                             "default: synthface at quick and standard, imagenet at full")

    _init = field_validator("init")(lambda value: value if value is None else check_init(value))


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
    split: KFoldSplit | PartsSplit | PartitionSplit | CrossSplit = Field(discriminator="kind")
    aus: list[int] | None = None
    selection: Selection = "strict"
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    occurrence_threshold: float = Field(2.0, gt=0.0, le=5.0)
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    reference: PaperReference | None = None
    budgets: dict[Literal["quick", "standard", "full"], Budget]
    _path: Path | None = PrivateAttr(None)  # the YAML it was loaded from, for messages

    @property
    def where(self) -> str:
        """How messages name this protocol: its YAML file, else its name."""
        return str(self._path) if self._path else f"protocol {self.name}"

    @property
    def sources(self) -> list[SynthData | PreparedData]:
        if self.split.kind == "cross":
            return [data for direction in self.split.directions for data in (direction.train, direction.test)]
        return [self.data] if self.data is not None else []

    @property
    def synthetic(self) -> bool:
        return all(data.source == "synth" for data in self.sources)

    @model_validator(mode="after")
    def _complete(self) -> "ProtocolSpec":
        required = BUDGETS if self.synthetic else REAL_BUDGETS
        missing = [name for name in required if name not in self.budgets]
        if missing:
            kind = "synthetic" if self.synthetic else "prepared"
            raise ValueError(f"budgets: missing {', '.join(missing)} (a protocol on {kind} data defines "
                             f"{', '.join(required)})")
        if self.split.kind != "cross" and self.data is None:
            raise ValueError(f"data: a {self.split.kind} protocol needs a data source")
        if self.split.kind == "partition" and self.data.source != "prepared":
            raise ValueError("split: partitions are recorded by 'aunce-bench prepare'; use a prepared data source")
        return self

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise UserError(f"invalid budget: protocol {self.name} has no '{name}' budget; choose one of: "
                            f"{', '.join(self.budgets)}")
        return self.budgets[name]

    @property
    def default_budget(self) -> str:
        """`standard` where the protocol has it (synthetic data), else `full`."""
        return "standard" if "standard" in self.budgets else "full"


# ------------------------------------------------------------------------------------------- methods
class ModelSpec(Strict):
    backbone: str = "resnet18"
    graph: bool = True
    dim: int | None = Field(None, ge=8, le=8192)
    init: str | None = Field(None, description="scratch, imagenet, synthface or checkpoint:PATH; default: the "
                             "protocol budget's (resolved in a RunSpec)")

    _init = field_validator("init")(lambda value: value if value is None else check_init(value))


class OptimSpec(Strict):
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    batch_size: int = Field(ge=2, le=65536)
    epochs: int = Field(ge=1, le=10000)
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning rate over the steps")
    sampler: Literal["shuffle", "rare_au"] = Field(
        "shuffle", description="how training batches are drawn: shuffle (every frame once an epoch) or rare_au "
        "(with replacement, each frame weighted by the inverse base rate of its rarest present AU)")


class LossSpec(Strict):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)  # loss keyword arguments (checked at planning)
    name: str


class ViewSpec(Strict):
    """The training views of a method's encoder stage. Random crop and flip are always on; a part left unset
    keeps the recipe's default: on for contrastive pretraining (AUNCE's two-view augmentation, as released),
    off for supervised training (crop and flip only, ME-GraphAU practice)."""

    colour_jitter: bool | None = Field(None, description="brightness, contrast, saturation 0.4, hue 0.1, p 0.8")
    grayscale: bool | None = Field(None, description="p 0.2")
    blur: bool | None = Field(None, description="Gaussian, sigma 0.1-2 px at 224 px, scaled with the crop")

    def resolved(self, default: bool) -> dict[str, bool]:
        """Each part on or off, unset parts taking `default`."""
        return {part: default if value is None else value for part, value in self.model_dump().items()}


class ReportedResult(Strict):
    dataset: str
    source: str
    per_au: dict[str, float]
    mean: float


# What a method is, for the report's family column and filter: presentation metadata, outside the run id.
FAMILIES = ("supervised", "noise-robust", "contrastive", "ablation", "floor", "sweep", "other")
# MethodSpec fields that describe a run without changing what it computes: left out of the run id, so that a
# stored run stays done when they are added or edited.
DESCRIPTIVE_METHOD_FIELDS = ("family", "ablation_of", "sweep_of")


class SweepPoint(Strict):
    """Where a swept method comes from: the base method and the parameter values of this point (dotted paths)."""

    method: str
    params: dict[str, Any]


class MethodSpec(Strict):
    name: str
    description: str = ""
    citation: str = ""
    family: Literal["supervised", "noise-robust", "contrastive", "ablation", "floor", "sweep", "other"] = "other"
    ablation_of: str | None = Field(None, description="the method whose mechanism this ablation removes (the "
                                    "report lists its rows under that method's)")
    sweep_of: SweepPoint | None = None
    recipe: str
    model: ModelSpec = ModelSpec()
    loss: LossSpec | None = None  # None for recipes that train no encoder (init_linear)
    train: OptimSpec | None = None
    probe: OptimSpec | None = None
    views: ViewSpec | None = Field(None, description="training views; unset: the recipe's default")
    budgets: dict[Literal["quick", "standard", "full"], dict[str, Any]] = Field(default_factory=dict)
    reported: list[ReportedResult] = Field(default_factory=list)
    _path: Path | None = PrivateAttr(None)  # the YAML it was loaded from, for messages

    @model_validator(mode="after")
    def _probe_shuffles(self) -> "MethodSpec":
        if self.probe is not None and self.probe.sampler != "shuffle":
            raise ValueError("probe.sampler: the linear probe draws shuffled batches (its loss weights the classes); "
                             "set the sampler under train, for the encoder's stage")
        return self

    @property
    def where(self) -> str:
        """How messages name this method: its YAML file, else its name."""
        return str(self._path) if self._path else f"method {self.name}"

    def for_budget(self, budget: str) -> "MethodSpec":
        """This method with the budget's overrides merged in (nested keys merge, values replace)."""
        merged = MethodSpec.model_validate(_deep_merge(self.model_dump(exclude={"budgets"}), self.budgets.get(budget, {})))
        merged._path = self._path
        return merged


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------------------------- runs
def _noise_spec(value: Any) -> NoiseSpec:
    if isinstance(value, NoiseSpec):
        return value
    if not isinstance(value, str):
        raise ValueError(f"give a noise spec such as 'symmetric:0.2' or 'none', got {value!r}")
    return NoiseSpec.parse(value)


# A NoiseSpec in a RunSpec, stored (and hashed into the run id) as its canonical text, e.g. "symmetric:0.2".
Noise = Annotated[NoiseSpec, PlainValidator(_noise_spec), PlainSerializer(str, return_type=str)]


class RunSpec(Strict):
    """One fully resolved run; its content hash is the run id."""

    method: MethodSpec
    protocol: str
    selection: Selection
    validation_fraction: float
    decision_threshold: float
    budget: str
    crop_size: int
    fold: int
    fold_name: str
    seed: int
    noise: Noise
    aus: list[int]
    train_data: DataConfig
    test_data: DataConfig
    train_subjects: list[str]
    test_subjects: list[str]
    data_fingerprint: str
    init_hash: str | None = Field(None, description="what pins the init's weights: timm tag, file sha256 or "
                                  "SynthFace configuration hash")
    code_version: str = __version__

    @property
    def init(self) -> Init:
        return Init.of(self.method.model.init)

    @property
    def run_id(self) -> str:
        # `views` and a stage's `sampler` join the identity only when a method sets them, so runs of methods
        # without them keep their ids
        method: dict[str, Any] = {name: True for name in DESCRIPTIVE_METHOD_FIELDS}
        if self.method.views is None:
            method["views"] = True
        for stage in ("train", "probe"):
            if getattr(self.method, stage) is not None and getattr(self.method, stage).sampler == "shuffle":
                method[stage] = {"sampler": True}
        fields = self.model_dump(mode="json", exclude={"method": method})
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Found:
    """A method or protocol YAML and where it came from ("built-in" or the AUNCE_BENCH_PATH folder)."""

    name: str
    path: Path
    origin: str


def _search_folders(kind: str) -> list[tuple[Path, str]]:
    """(folder, origin) to look for `kind` ("methods" or "protocols") in: AUNCE_BENCH_PATH, then built-in."""
    user = [Path(entry).expanduser() for entry in os.environ.get(SEARCH_PATH_VARIABLE, "").split(os.pathsep) if entry]
    return [(folder / kind, str(folder)) for folder in user] + [(BUILTIN / kind, "built-in")]


def available(kind: str) -> list[Found]:
    """Every `kind` YAML by name; a name on AUNCE_BENCH_PATH shadows a built-in one of the same name."""
    found: dict[str, Found] = {}
    for folder, origin in _search_folders(kind):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, Found(path.stem, path, origin))
    return sorted(found.values(), key=lambda item: item.name)


def _resolve(reference: str, kind: str) -> Path:
    label = kind.removesuffix("s")
    path = Path(reference).expanduser()
    if path.is_file():
        return path
    known = {item.name: item.path for item in available(kind)}
    if reference in known:
        return known[reference]
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a {label} file; pass a {label} name (aunce-bench list {kind}) or "
                        f"the path of a {label} YAML file")
    if path.suffix in (".yaml", ".yml") or path.exists():
        raise UserError(f"{label} file {path} does not exist")
    raise UserError(f"{unknown_name(label, reference, known)} (add folders holding {kind}/NAME.yaml to "
                    f"${SEARCH_PATH_VARIABLE}, or pass a path)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path) -> dict:
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected UTF-8 YAML)")
    except OSError as error:
        raise UserError(f"{path}: cannot read ({error.strerror or error})")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(error, 'problem', None) or error})")
    if not isinstance(content, dict):
        raise UserError(f"{path}: expected a mapping of fields at the top level")
    return content


def _validate(model: type[BaseModel], content: dict, path: Path):
    try:
        return model.model_validate(content)
    except ValidationError as error:
        raise UserError(f"{path}: {validation_message(error)}")


def validation_message(error: ValidationError) -> str:
    """The first problem of a pydantic error as `field 'a.b': message (got VALUE)`."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) or first["type"] in ("missing", "value_error") else f" (got {given!r})"
    return f"field '{field}': {message}{shown}"


def load_protocol(reference: str) -> ProtocolSpec:
    path = _resolve(reference, "protocols")
    protocol = _validate(ProtocolSpec, _load_yaml(path), path)
    protocol._path = path
    return protocol


def _method_fields(path: Path, including: tuple[Path, ...] = ()) -> dict:
    """A method YAML's fields; `include: NAME` (a method name, or a YAML path relative to this file) takes
    that method's fields first and merges these over them (nested keys merge, values and lists replace)."""
    content = _load_yaml(path)
    base = content.pop("include", None)
    if base is None:
        return content
    if not isinstance(base, str):
        raise UserError(f"{path}: field 'include': give a method name or a YAML path")
    if Path(base).suffix in (".yaml", ".yml"):
        looked = (path.parent / base, Path(base).expanduser())  # beside this file, then here
        found = [candidate for candidate in looked if candidate.is_file()]
        if not found:
            folders = " and ".join(dict.fromkeys(str(candidate.parent.absolute()) for candidate in looked))
            raise UserError(f"{path}: include '{base}': no such file (looked in {folders})")
        base_path = found[0]
    else:
        try:
            base_path = _resolve(base, "methods")
        except UserError as error:
            raise UserError(f"{path}: include '{base}': {error}") from None
    if base_path.resolve() in [p.resolve() for p in (*including, path)]:
        raise UserError(f"{path}: field 'include': '{base}' includes this file again (a cycle)")
    return _deep_merge(_method_fields(base_path, (*including, path)), content)


def load_method(reference: str) -> MethodSpec:
    path = _resolve(reference, "methods")
    method = _validate(MethodSpec, _method_fields(path), path)
    method._path = path
    return method


def list_protocols() -> list[str]:
    return [item.name for item in available("protocols")]


def list_methods() -> list[str]:
    return [item.name for item in available("methods")]
