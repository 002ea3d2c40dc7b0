"""How long `aunce-bench report` takes on a store of 1,000 runs.

Fills a fresh store through ResultStore with synthetic runs (resolved RunSpecs of the shipped protocols and
methods, small prediction tables whose probabilities follow a per-method skill, metrics computed from them
by aunce_bench.metrics, a per-epoch training history of each stage): 5 methods x 4 protocols (k-fold bp4d
and disfa, cross-dataset, pose bins) x 6 noise settings x seeds, then times the `report` command end to end
(a fresh process, as a user runs it), twice, with a fresh cache: the first run renders the SynthAU galleries,
the second finds them cached. Filling takes minutes; `--keep DIR` keeps the store, and `--db DIR/results.sqlite`
times a kept store again.

    python benchmarks/report_speed.py [--runs 1000] [--keep DIR] [--db EXISTING]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.synth.generate import POSE_BINS, pose_bin_name
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.metrics import au_metrics, chance_f1, grouped_au_metrics, mean_f1
from aunce_bench.protocols import plan_runs
from aunce_bench.results import ResultStore
from aunce_bench.specs import load_method, load_protocol

PROTOCOLS = ("synth_bp4d_3fold", "synth_disfa_3fold", "synth_cross_dataset", "synth_pose")
METHODS = {"aunce": 1.1, "wce": 1.3, "wce_linear": 1.0, "wce_focal": 1.2, "aunce_paper": 0.9}  # name -> skill
NOISE = ("none", "symmetric:0.1", "symmetric:0.2", "symmetric:0.4", "missing_positive:0.2", "missing_positive:0.4")
FRAMES_PER_SUBJECT = 6


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "little"))


def _test_set(run) -> dict[str, np.ndarray]:
    """Frames of the run's test subjects (every pose bin for pose protocols) with labels at the profile's base
    rates; the same for every method, seed and noise of a fold."""
    rates = PROFILES[run.test_data.dataset_name].labels.base_rates
    bins = [pose_bin_name(*b) for b in POSE_BINS] if getattr(run.test_data, "pose", None) == "bins" else ["frontal"]
    rng = _rng(run.protocol, run.fold_name)
    n = len(run.test_subjects) * FRAMES_PER_SUBJECT
    keys = {"subject": np.repeat(run.test_subjects, FRAMES_PER_SUBJECT), "sequence": np.full(n, "T1"),
            "frame": np.tile(np.arange(FRAMES_PER_SUBJECT), len(run.test_subjects))}
    labels = (rng.random((n, len(run.aus))) < np.array([rates[au] for au in run.aus])).astype(np.int8)
    labels[rng.random(labels.shape) < 0.02] = -1  # a few missing labels
    return {"keys": {name: np.tile(values, len(bins)) for name, values in keys.items()}
            | {"pose_bin": np.repeat(bins, n)}, "labels": np.tile(labels, (len(bins), 1))}


def _stages(run) -> list[tuple[str, int]]:
    """(stage, epochs) a run of this recipe trains, in order, as its stored history names them."""
    method = run.method
    pretraining = [("init pretraining (SynthFace)", 8)] if run.init == "synthface" else []
    train = method.train.epochs if method.train else 0
    probe = [("linear probe", method.probe.epochs)] if method.probe else []
    stages = {"contrastive_probe": [("contrastive pretraining", train), *probe], "coteaching": [("co-teaching", train)],
              "frozen_probe": probe}.get(method.recipe, [("supervised", train), *probe])
    return pretraining + stages


def history(run, skill: float) -> list[dict]:
    """A plausible per-epoch history: loss decaying with noise, validation F1 rising towards the method's skill
    (none for pretraining stages or without a validation set); the init's pretraining the same for every run."""
    entries = []
    for stage, epochs in _stages(run):
        shared = stage.startswith("init pretraining")
        rng = _rng("history", run.crop_size) if shared else _rng("history", run.run_id, stage)
        validated = stage in ("supervised", "co-teaching", "linear probe") and run.selection == "strict"
        for epoch in range(1, epochs + 1):
            progress = 1 - np.exp(-3 * epoch / epochs)
            entries.append({"stage": stage, "epoch": epoch, "loss": float(2.5 - 1.8 * progress + rng.normal(0, 0.04)),
                            "lr": 1e-3, "images_per_s": float(rng.uniform(80, 120)),
                            "val_f1": float(0.25 * skill * progress + rng.normal(0, 0.01)) if validated else None})
    return entries


def _store_run(store: ResultStore, run, skill: float) -> None:
    data = _test_set(run)
    labels, keys = data["labels"], data["keys"]
    noise = run.noise
    margin = skill * (1 - (1.5 if noise.kind == "symmetric" else 0.8) * noise.rate)
    rng = _rng(run.run_id)
    probabilities = 1 / (1 + np.exp(-(margin * (2 * (labels == 1) - 1) + rng.normal(0, 1.2, labels.shape) - 0.3)))
    names = [f"AU{au}" for au in run.aus]
    if len(set(keys["pose_bin"])) > 1:
        metrics = grouped_au_metrics(probabilities, labels, np.char.add("pose:", keys["pose_bin"]), names)
    else:
        metrics = {"all": au_metrics(probabilities, labels, names)}
    predictions = dict(keys)
    for column, name in enumerate(names):
        predictions[f"prob_{name}"] = probabilities[:, column].astype(np.float32)
        predictions[f"label_{name}"] = labels[:, column]
    store.start_run(run.run_id, method=run.method.name, protocol=run.protocol, dataset=run.test_data.dataset_name,
                    budget=run.budget, fold=run.fold, seed=run.seed, noise=str(run.noise),
                    spec=run.model_dump(mode="json"),
                    provenance={"versions": {"python": sys.version.split()[0]}, "git_revision": None,
                                "device": "synthetic (benchmark)", "selection": run.selection})
    store.finish_run(run.run_id, metrics={group: {au: vars(m) for au, m in per_au.items()}
                                          for group, per_au in metrics.items()},
                     mean_f1=mean_f1(metrics["all"]), chance_f1=chance_f1(labels, names),
                     wall_s=float(rng.uniform(200, 1200)), predictions=predictions,
                     provenance_update={"timings_s": {"train": 100.0}, "train_images_per_s": 100.0},
                     history=history(run, skill))


def planned(n_runs: int) -> list[tuple[object, float]]:
    """(RunSpec, skill) for n_runs runs, seed by seed, so that whole seeds come first."""
    protocols = [load_protocol(name) for name in PROTOCOLS]
    base = {"aunce": load_method("aunce"), "wce": load_method("wce"), "wce_linear": load_method("wce_linear")}
    methods = {name: base.get(name) or base[name.split("_")[0]].model_copy(update={"name": name})
               for name in METHODS}
    runs = []
    seed = 0
    while len(runs) < n_runs:
        for name, method in methods.items():
            for protocol in protocols:
                for noise in NOISE:
                    runs += [(run, METHODS[name]) for run in
                             plan_runs(method, protocol, "standard", None, [seed], NoiseSpec.parse(noise))]
        seed += 1
    return runs[:n_runs]


def fill(db: Path, n_runs: int) -> None:
    started = time.perf_counter()
    with ResultStore(db) as store:
        for run, skill in planned(n_runs):
            _store_run(store, run, skill)
    print(f"filled {db} with {n_runs} runs in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="keep the filled store and the report in this folder")
    parser.add_argument("--db", type=Path, help="time the report on this existing store (e.g. one kept by --keep) "
                                                "instead of filling one; --runs is ignored")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="aunce-report-speed-"))
    if args.db:
        if not args.db.is_file():
            sys.exit(f"error: no store at {args.db}")
        db = args.db
        with ResultStore(db) as store:
            n_runs = len(store.runs(status="done"))
    else:
        db, n_runs = folder / "results.sqlite", args.runs
        fill(db, n_runs)
    command = [sys.executable, "-m", "aunce_bench.cli", "report", "--db", str(db), "--out", str(folder / "report")]
    with tempfile.TemporaryDirectory(prefix="aunce-report-cache-") as cache:  # a fresh gallery cache
        environment = os.environ | {"AUNCE_BENCH_CACHE": cache}
        for attempt in ("first (renders the SynthAU galleries)", "second (galleries cached)"):
            started = time.perf_counter()
            subprocess.run(command, check=True, env=environment, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            print(f"aunce-bench report on {n_runs} runs, {attempt}: {seconds:.2f} s (target < 5 s)")
    print(f"index.html: {(folder / 'report' / 'index.html').stat().st_size / 1e6:.1f} MB in {folder / 'report'}")


if __name__ == "__main__":
    main()
