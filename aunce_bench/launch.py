"""Execute RunSpecs: data, noise, fit, predict, metrics, store. Runs already done are skipped."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from aunce_bench import __version__
from aunce_bench.data.loaders import FrameSet, load_frames
from aunce_bench.data.noise import NoiseSpec, apply_label_noise
from aunce_bench.data.prepared import PreparedConfig, data_root, prepared_info
from aunce_bench.data.synth.generate import SynthConfig, load_or_generate
from aunce_bench.errors import UserError
from aunce_bench.metrics import AUMetrics, au_metrics, chance_f1, grouped_au_metrics, mean_f1
from aunce_bench.protocols import split_validation
from aunce_bench.registry import get_recipe
from aunce_bench.results import ResultStore
from aunce_bench.specs import PROJECT_ROOT, RunSpec
from aunce_bench.training.common import Progress, TrainContext, TrainingDiverged


@dataclass(frozen=True)
class RunOutcome:
    run: RunSpec
    status: str  # "done", "skipped" (already done), "failed"
    mean_f1: float | None = None
    chance_f1: float | None = None
    wall_s: float | None = None
    error: str | None = None
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
    try:
        result = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (result.stdout.strip() + ("-dirty" if dirty else "")) if result.returncode == 0 else None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def run_frames(config: dict, subjects: list[str], aus: list[int], root: Path) -> FrameSet:
    """The frames of `subjects` from a run's data: SynthAU (generated on demand) or a prepared dataset."""
    if config.get("source") != "prepared":
        _, folder, _ = load_or_generate(SynthConfig(**config))
        return load_frames(folder, subjects, aus)
    prepared = PreparedConfig(**config)
    info = prepared_info(root, prepared.dataset)
    if info.fingerprint != prepared.fingerprint:
        raise UserError(f"dataset {prepared.dataset} at {info.folder} was prepared again after this run was planned; "
                        "run the command again")
    return load_frames(info.folder, subjects, aus, frame_stride=prepared.frame_stride, image_size=prepared.image_size,
                       pose_bins=prepared.pose_bins, occurrence_threshold=prepared.occurrence_threshold)


def rate(labels: np.ndarray) -> float:
    """Share of frames with the AU present among those labelled (NaN where none is)."""
    known = labels >= 0
    return float(labels[known].mean()) if known.any() else float("nan")


def _dataset(config: dict) -> str:
    return config.get("dataset") or config["profile"]


def _metrics_table(metrics: dict[str, dict[str, AUMetrics]]) -> dict[str, dict[str, dict[str, float]]]:
    return {group: {au: vars(values) for au, values in per_au.items()} for group, per_au in metrics.items()}


def execute_run(run: RunSpec, store: ResultStore, device: torch.device, progress: Progress,
                root: Path | None = None) -> RunOutcome:
    """One run from data to stored metrics; failures are stored with their reason. Prepared datasets are
    looked up under `root` (see `data_root`)."""
    started = time.perf_counter()
    root = data_root(root)
    store.start_run(run.run_id, method=run.method.name, protocol=run.protocol, dataset=_dataset(run.test_data),
                    budget=run.budget, fold=run.fold, seed=run.seed, noise=run.noise, spec=run.model_dump(mode="json"),
                    provenance={"versions": _versions(), "git_revision": _git_revision(),
                                "device": _device_name(device), "selection": run.selection,
                                "init": {"init": run.init, "weights": run.init_hash}})
    try:
        pool = run_frames(run.train_data, run.train_subjects, run.aus, root)
        noise = NoiseSpec.parse(run.noise)
        noisy_labels, flips = apply_label_noise(pool.labels, noise, seed=run.seed)
        pool = pool.with_labels(noisy_labels)  # noise hits the training folds only; test labels stay clean
        if run.selection == "strict":
            fit_subjects, _ = split_validation(run.train_subjects, run.validation_fraction, run.fold)
            in_fit = np.isin(pool.keys["subject"], fit_subjects)
            train, val = pool.subset(in_fit), pool.subset(~in_fit)
        else:
            train, val = pool, None
        test = run_frames(run.test_data, run.test_subjects, run.aus, root)
        data_s = time.perf_counter() - started

        recipe = get_recipe(run.method.recipe)(run, TrainContext(device, run.seed, progress))
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
        store.finish_run(
            run.run_id, metrics=_metrics_table(metrics), mean_f1=mean_f1(metrics["all"]),
            chance_f1=chance_f1(test.labels, au_names), wall_s=wall_s, predictions=predictions,
            noise_rates={f"AU{run.aus[column]}": vars(rates) for column, rates in flips.items()},
            provenance_update={"timings_s": {"data": data_s, "train": train_s, "predict": predict_s},
                               "train_images_per_s": info.get("images_seen", 0) / max(train_s, 1e-9),
                               "frames": {"train": len(train), "val": 0 if val is None else len(val),
                                          "test": len(test)},
                               "training": info, "init": {**recipe.init_provenance, "weights": run.init_hash}},
        )
        per_au = {name: {"f1": m.f1, "auc": m.auc, "precision": m.precision, "recall": m.recall,
                         "train_rate": rate(train.labels[:, k]), "test_rate": rate(test.labels[:, k])}
                  for k, (name, m) in enumerate(metrics["all"].items())}
        return RunOutcome(run, "done", mean_f1(metrics["all"]), chance_f1(test.labels, au_names), wall_s, per_au=per_au)
    except TrainingDiverged as error:
        store.fail_run(run.run_id, str(error), time.perf_counter() - started)
        return RunOutcome(run, "failed", error=str(error), wall_s=time.perf_counter() - started)
    except BaseException as error:  # interrupted or crashed: never left looking complete
        reason = type(error).__name__ + (f": {error}" if str(error) else "")
        store.fail_run(run.run_id, reason, time.perf_counter() - started)
        raise


def _build_inits(runs: list[RunSpec], device: torch.device, progress: Progress) -> None:
    """Build the SynthFace backbones the runs start from before the first run, so that no run's wall time
    includes a build."""
    from aunce_bench.synthface import ensure_synthface, synthface_config

    for backbone, crop in sorted({(run.method.model.backbone, run.crop_size) for run in runs if run.init == "synthface"}):
        ensure_synthface(synthface_config(backbone, crop), device, progress)


def execute(runs: list[RunSpec], store: ResultStore, device: torch.device, progress: Progress,
            on_skip=lambda run: None, root: Path | None = None) -> list[RunOutcome]:
    _build_inits([run for run in runs if store.status(run.run_id) != "done"], device, progress)
    outcomes = []
    for run in runs:
        if store.status(run.run_id) == "done":
            on_skip(run)
            outcomes.append(RunOutcome(run, "skipped"))
            continue
        progress.run_started(f"{run.method.name} {run.fold_name} seed {run.seed}")
        outcomes.append(execute_run(run, store, device, progress, root))
        progress.run_finished()
    return outcomes
