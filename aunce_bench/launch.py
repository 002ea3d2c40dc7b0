"""Execute RunSpecs: data, noise, fit, predict, metrics, store.

Computing a run (compute_run, compute_outcome) never touches the store; writing it (start_run, record_outcome)
does, so that another executor (aunce_bench.executors) can compute runs elsewhere while one process writes.

Runs already done are skipped (unless redone, or their stored metrics or predictions are damaged). A run that
raises is stored as failed with the exception's type and message and the plan goes on; only an interrupt (Ctrl-C)
stops it, and the run it cut short is not stored at all (`Interrupted`): the next call runs it again.
A lock file per run id (beside the store) keeps two processes from executing the same run at once; the
operating system releases it when its holder dies, even by kill -9. In a distributed run (torchrun), rank 0
executes the plan and alone writes; the other ranks follow it run by run (see `follow`).
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from aunce_bench import __version__, distributed
from aunce_bench.data.configs import DataConfig, SynthConfig
from aunce_bench.data.loaders import DataLoading, FrameSet, load_frames
from aunce_bench.data.noise import NoiseNeedsData, apply_label_noise, sequence_rows
from aunce_bench.data.prepared import data_root, prepared_info
from aunce_bench.data.synth.generate import load_or_generate
from aunce_bench.embeddings import PROVENANCE_KEY, discard_embeddings, embeddings_intact, write_embeddings
from aunce_bench.errors import UserError
from aunce_bench.metrics import AUMetrics, au_metrics, chance_f1, grouped_au_metrics, mean_f1
from aunce_bench.protocols import split_validation
from aunce_bench.recipes import RECIPES, Recipe
from aunce_bench.results import ResultStore
from aunce_bench.specs import RunSpec
from aunce_bench.training.common import ExecutionOptions, Progress, TrainContext, TrainingDiverged
from aunce_bench.training.probe import extract_features


CHECKOUT = Path(__file__).resolve().parent.parent  # the source checkout, when the package runs from one


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while `runs` were executing: none of them is stored, neither done nor failed."""

    def __init__(self, runs: list[RunSpec]):
        super().__init__()
        self.runs = runs


@dataclass(frozen=True)
class RunOutcome:
    run: RunSpec
    status: str  # "done", "failed", "skipped" (already done, or running in another process)
    mean_f1: float | None = None
    chance_f1: float | None = None
    wall_s: float | None = None
    error: str | None = None  # why it failed or was skipped
    traceback: str | None = None  # of an unexpected exception, printed with --debug
    per_au: dict[str, dict[str, float]] | None = None  # AU -> f1, auc, precision, recall, train_rate, test_rate

    @property
    def mean_auc(self) -> float | None:
        values = [m["auc"] for m in (self.per_au or {}).values() if not np.isnan(m["auc"])]
        return float(np.mean(values)) if values else None


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "aunce_bench": __version__}
    for package in ("torch", "timm", "kornia", "numpy", "datasets"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "absent"
    return versions


def _git_revision() -> str | None:
    """The checkout's commit (with "-dirty" for uncommitted changes); None for an installed package."""
    if not (CHECKOUT / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(CHECKOUT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() + ("-dirty" if dirty else "")) if result.returncode == 0 else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run_frames(config: DataConfig, subjects: list[str], aus: list[int], root: Path,
               loading: DataLoading = DataLoading(), progress: Progress = Progress()) -> FrameSet:
    """The frames of `subjects` from a run's data: SynthAU (generated on demand, its rendering told to `progress`)
    or a prepared dataset, in memory or streamed as `loading` decides."""
    if isinstance(config, SynthConfig):
        task = f"SynthAU {config.profile} faces: rendering once, then cached"
        _, folder, _ = load_or_generate(config, progress=partial(progress.count, task))
        return load_frames(folder, subjects, aus, loading=loading)
    prepared = config
    info = prepared_info(root, prepared.dataset)
    if info.fingerprint != prepared.fingerprint:
        raise UserError(f"dataset {prepared.dataset} at {info.folder} was prepared again after this run was planned; "
                        "run the command again")
    return load_frames(info.folder, subjects, aus, frame_stride=prepared.frame_stride, image_size=prepared.image_size,
                       pose_bins=prepared.pose_bins, occurrence_threshold=prepared.occurrence_threshold, loading=loading)


def rate(labels: np.ndarray) -> float:
    """Share of frames with the AU present among those labelled (NaN where none is)."""
    known = labels >= 0
    return float(labels[known].mean()) if known.any() else float("nan")




def _metrics_table(metrics: dict[str, dict[str, AUMetrics]]) -> dict[str, dict[str, dict[str, float]]]:
    return {group: {au: vars(values) for au, values in per_au.items()} for group, per_au in metrics.items()}


@dataclass(frozen=True)
class RunResult:
    """A computed run, ready for the store; picklable, as a Ray task returns it to the driver."""
    metrics: dict[str, dict[str, dict[str, float]]]  # group -> AU -> metric -> value
    mean_f1: float
    chance_f1: float
    wall_s: float
    predictions: dict[str, np.ndarray]
    noise_rates: dict[str, dict[str, float]]
    provenance_update: dict
    per_au: dict[str, dict[str, float]]  # as RunOutcome.per_au
    history: list[dict]  # per epoch of each training stage, the init's pretraining first (see ResultStore.finish_run)
    embeddings: np.ndarray | None = None  # kept test-set embeddings [N, K, D] (unit per AU), with keep_embeddings
    test_labels: np.ndarray | None = None  # their labels [N, K]


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed: an expected failure's message, else the exception's type and message."""
    error: str
    wall_s: float | None
    traceback: str | None = None  # of an unexpected exception


def machine_provenance(device: torch.device) -> dict:
    """What a run records of where it computes: versions, git revision, device with its thread count."""
    return {"versions": _versions(), "git_revision": _git_revision(), "device": _device_name(device)}


def start_run(store: ResultStore, run: RunSpec, machine: dict, redo: bool = False) -> None:
    """Record the run as running, with `machine` (see machine_provenance) and its selection and init."""
    store.start_run(run.run_id, redo=redo, method=run.method.name, protocol=run.protocol, dataset=run.test_data.dataset_name,
                    budget=run.budget, fold=run.fold, seed=run.seed, noise=str(run.noise), spec=run.model_dump(mode="json"),
                    provenance={**machine, "selection": run.selection,
                                "init": {"init": str(run.init), "weights": run.init_hash}})


def execute_run(run: RunSpec, store: ResultStore, device: torch.device, progress: Progress,
                root: Path | None = None, redo: bool = False, keep_embeddings: bool = False,
                execution: ExecutionOptions = ExecutionOptions()) -> RunOutcome:
    """One run from data to stored metrics; failures are stored with their reason. Prepared datasets are
    looked up under `root` (see `data_root`); `redo` replaces a done run; `keep_embeddings` also stores the
    trained encoder's test-set embeddings (see aunce_bench.embeddings), outside the run's wall time;
    `execution` sets precision, memory format and compilation (recorded, not part of the run id)."""
    started = time.perf_counter()
    start_run(store, run, {**machine_provenance(device), "execution": asdict(execution)}, redo)
    try:
        return record_outcome(store, run, compute_outcome(run, device, progress, data_root(root), keep_embeddings,
                                                          execution))
    except KeyboardInterrupt:  # not a failure: the run is forgotten, and the plan stops
        store.discard_run(run.run_id)
        raise Interrupted([run]) from None
    except BaseException as error:  # never left looking complete, and the plan stops
        store.fail_run(run.run_id, type(error).__name__, time.perf_counter() - started)
        raise


def compute_run(run: RunSpec, device: torch.device, progress: Progress, root: Path,
                keep_embeddings: bool = False, execution: ExecutionOptions = ExecutionOptions()) -> RunResult:
    """Data, noise, fit, predict and metrics of one run, without touching the store."""
    started = time.perf_counter()
    pool = run_frames(run.train_data, run.train_subjects, run.aus, root, execution.data, progress)
    noise = run.noise
    sequences = sequence_rows(np.char.add(pool.keys["subject"].astype(str), "/" + pool.keys["sequence"].astype(str)),
                              pool.keys["frame"])
    try:
        noisy_labels, flips = apply_label_noise(pool.labels, noise, seed=run.seed, sequences=sequences,
                                                intensities=pool.intensities)
    except NoiseNeedsData as error:
        raise UserError(f"--noise {run.noise}: {error} ({run.train_data.dataset_name}); choose another noise "
                        "type for this dataset") from None
    pool = pool.with_labels(noisy_labels)  # noise hits the training folds only; test labels stay clean
    test = run_frames(run.test_data, run.test_subjects, run.aus, root, execution.data, progress)
    train, val = _selection_split(run, pool, test)
    _check_batches(run, train)
    data_s = time.perf_counter() - started

    recipe = RECIPES.get(run.method.recipe)(run, TrainContext(device, run.seed, progress, execution))
    fit_started = time.perf_counter()
    info = recipe.fit(train, val)
    train_s = time.perf_counter() - fit_started
    predict_started = time.perf_counter()
    probabilities = recipe.predict_proba(test)
    predict_s = time.perf_counter() - predict_started

    au_names = [f"AU{au}" for au in run.aus]
    if len(np.unique(test.keys["pose_bin"])) > 1:  # per-pose-bin breakdown besides "all"
        groups = np.char.add("pose:", test.keys["pose_bin"].astype(str))
        metrics = grouped_au_metrics(probabilities, test.labels, groups, au_names, run.decision_threshold)
    else:
        metrics = {"all": au_metrics(probabilities, test.labels, au_names, run.decision_threshold)}
    predictions = {key: values for key, values in test.keys.items()}
    for column, name in enumerate(au_names):
        predictions[f"prob_{name}"] = probabilities[:, column].astype(np.float32)
        predictions[f"label_{name}"] = test.labels[:, column]
    wall_s = time.perf_counter() - started
    per_au = {name: {"f1": m.f1, "auc": m.auc, "precision": m.precision, "recall": m.recall,
                     "train_rate": rate(train.labels[:, k]), "test_rate": rate(test.labels[:, k])}
              for k, (name, m) in enumerate(metrics["all"].items())}
    return RunResult(
        metrics=_metrics_table(metrics), mean_f1=mean_f1(metrics["all"]), chance_f1=chance_f1(test.labels, au_names),
        wall_s=wall_s, predictions=predictions,
        noise_rates={f"AU{run.aus[column]}": vars(rates) for column, rates in flips.items()},
        provenance_update={"timings_s": {"data": data_s, "train": train_s, "predict": predict_s},
                           "train_images_per_s": info.get("images_seen", 0) / max(train_s, 1e-9),
                           "frames": {"train": len(train), "val": 0 if val is None else len(val), "test": len(test)},
                           "training": info, "init": {**recipe.init_provenance, "weights": run.init_hash},
                           "execution": recipe.ctx.execution_record(),
                           "data_loading": {"budget_gib": execution.data.budget_bytes() / 2**30,
                                            "train": pool.images.describe(), "test": test.images.describe()}},
        per_au=per_au, history=_init_history(recipe, run) + recipe.ctx.history,
        embeddings=_test_embeddings(recipe, test, run) if keep_embeddings else None,
        test_labels=test.labels if keep_embeddings else None,
    )


def _failure(error: Exception, wall_s: float | None) -> RunFailure:
    """`error` as a run's failure; call it where the error is being handled (it takes the traceback from there)."""
    if isinstance(error, (TrainingDiverged, UserError)):  # expected failures: the message says what to change
        return RunFailure(str(error), wall_s)
    return RunFailure(type(error).__name__ + (f": {error}" if str(error) else ""), wall_s, traceback.format_exc())


def compute_outcome(run: RunSpec, device: torch.device, progress: Progress, root: Path,
                    keep_embeddings: bool = False, execution: ExecutionOptions = ExecutionOptions()
                    ) -> RunResult | RunFailure:
    """compute_run, its failure returned as a RunFailure; an interrupt propagates."""
    started = time.perf_counter()
    try:
        return compute_run(run, device, progress, root, keep_embeddings, execution)
    except Exception as error:
        return _failure(error, time.perf_counter() - started)


def record_outcome(store: ResultStore, run: RunSpec, computed: RunResult | RunFailure) -> RunOutcome:
    """Store a computed run as done (kept embeddings first, then predictions and metrics), or as failed with its
    reason; a result the store cannot take fails the run. The run must be running (see start_run)."""
    if isinstance(computed, RunResult):
        try:
            discard_embeddings(store, run.run_id)  # an earlier attempt's, from another encoder
            kept = {}
            if computed.embeddings is not None:
                kept[PROVENANCE_KEY] = write_embeddings(store, run.run_id, computed.embeddings, computed.test_labels,
                                                        [f"AU{au}" for au in run.aus])
            store.finish_run(run.run_id, metrics=computed.metrics, mean_f1=computed.mean_f1,
                             chance_f1=computed.chance_f1, wall_s=computed.wall_s, predictions=computed.predictions,
                             noise_rates=computed.noise_rates, provenance_update={**computed.provenance_update, **kept},
                             history=computed.history)
            return RunOutcome(run, "done", computed.mean_f1, computed.chance_f1, computed.wall_s, per_au=computed.per_au)
        except Exception as error:
            computed = _failure(error, computed.wall_s)
    store.fail_run(run.run_id, computed.error, computed.wall_s)
    return RunOutcome(run, "failed", error=computed.error, wall_s=computed.wall_s, traceback=computed.traceback)


def _selection_split(run: RunSpec, pool: FrameSet, test: FrameSet) -> tuple[FrameSet, FrameSet | None]:
    """(training frames, frames that select the epoch) under the run's selection policy: held-out validation
    subjects (strict), none (last_epoch: the final model), or the test fold itself (test_fold, optimistic)."""
    if run.selection == "strict":
        fit_subjects, _ = split_validation(run.train_subjects, run.validation_fraction, run.fold)
        in_fit = np.isin(pool.keys["subject"], fit_subjects)
        return pool.subset(in_fit), pool.subset(~in_fit)
    return pool, (test if run.selection == "test_fold" else None)


def _check_batches(run: RunSpec, train: FrameSet) -> None:
    """Refuse a run that would train on zero batches (batches drop their incomplete remainder)."""
    spec = run.method.train
    if spec is not None and len(train) < spec.batch_size:
        raise UserError(f"method {run.method.name}: field 'train.batch_size': {spec.batch_size} is more than the "
                        f"{len(train)} training frames of {run.fold_name}, so no batch would train; lower batch_size")
    if len(train) == 0:
        raise UserError(f"protocol {run.protocol}: {run.fold_name} has no training frames")


def _build_inits(runs: list[RunSpec], device: torch.device, progress: Progress) -> None:
    """Build the SynthFace backbones the runs start from before the first run, so that no run's wall time
    includes a build."""
    from aunce_bench.synthface import ensure_synthface, synthface_config

    for backbone, crop in sorted({(run.method.model.backbone, run.crop_size) for run in runs if run.init.kind == "synthface"}):
        ensure_synthface(synthface_config(backbone, crop), device, progress)


def _init_history(recipe: Recipe, run: RunSpec) -> list[dict]:
    """The history of the pretraining the run's backbone starts from, where the harness did it (SynthFace)."""
    if recipe.init_provenance.get("init") != "synthface":
        return []
    from aunce_bench.synthface import pretraining_history

    return pretraining_history(run.method.model.backbone, run.crop_size)


def _test_embeddings(recipe: Recipe, test: FrameSet, run: RunSpec) -> np.ndarray:
    """The trained encoder's unit per-AU embeddings [N, K, D] of the test frames (eval mode, centre crop, as the
    predictions)."""
    features = extract_features(recipe.encoder, test, run.crop_size, recipe.ctx)
    return torch.nn.functional.normalize(features, dim=-1).numpy()  # = AUEncoder.embed


def follow(runs: list[RunSpec], device: torch.device, root: Path | None = None, keep_embeddings: bool = False,
           execution: ExecutionOptions = ExecutionOptions()) -> None:
    """What a rank other than 0 of a distributed run (torchrun) does while rank 0 runs `execute` on the same plan:
    compute each run rank 0 computes, with it (training is shared; evaluation is repeated on every rank), and
    leave the store, its locks and all reporting to rank 0."""
    for run in runs:
        if distributed.agree(None):
            compute_outcome(run, device, Progress(), data_root(root), keep_embeddings, execution)


def _kept(store: ResultStore, run: RunSpec, redo: bool, keep_embeddings: bool = False) -> bool:
    """Whether a run is done and stays so: not asked to redo, its stored metrics and predictions are intact and,
    when embeddings are to be kept, its kept embeddings too."""
    return (store.status(run.run_id) == "done" and not redo and store.predictions_intact(run.run_id)
            and (not keep_embeddings or embeddings_intact(store, run.run_id)))


def execute(runs: list[RunSpec], store: ResultStore, device: torch.device, progress: Progress,
            on_skip=lambda run, reason: None, root: Path | None = None, redo: bool = False,
            keep_embeddings: bool = False, execution: ExecutionOptions = ExecutionOptions(),
            on_finish=lambda outcome: None) -> list[RunOutcome]:
    """Run each RunSpec not done yet (`redo`: every one); `on_skip(run, reason)` hears of each skipped run,
    `on_finish(outcome)` of each run executed (done or failed), once it is stored.
    `keep_embeddings` stores each run's test-set embeddings, redoing done runs that lack them; `execution` is
    how each run's models execute."""
    _build_inits([run for run in runs if not _kept(store, run, redo, keep_embeddings)], device, progress)
    locks = store.path.parent / f"{store.path.stem}.locks"
    locks.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for run in runs:
        progress.run_started(f"{run.method.name} {run.fold_name} seed {run.seed}")
        lock = FileLock(locks / f"{run.run_id}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            distributed.agree(False)
            outcome = RunOutcome(run, "skipped", error="running in another process")
        else:
            try:  # checked again under the lock: another process may have finished it meanwhile
                kept = _kept(store, run, redo, keep_embeddings)
                distributed.agree(not kept)  # the other ranks of a distributed run compute it with this one
                if kept:
                    outcome = RunOutcome(run, "skipped", error="already done")
                else:
                    was_done = store.status(run.run_id) == "done"
                    outcome = execute_run(run, store, device, progress, root, redo=was_done,
                                          keep_embeddings=keep_embeddings, execution=execution)
            finally:
                lock.release()
        if outcome.status == "skipped":
            on_skip(run, outcome.error)
        else:
            on_finish(outcome)
        outcomes.append(outcome)
        progress.run_finished()
    return outcomes
