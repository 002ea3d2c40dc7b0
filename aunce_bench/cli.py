"""The `aunce-bench` command line: thin commands over the library.

User errors (bad options, unknown names, unwritable paths) print one line `error: ...` on stderr and
exit with status 2, without a traceback.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from aunce_bench.errors import UserError

class _NoFlagTypes:
    """Help that writes no value type after a flag: typer's rich help writes `<bool>` after each one, --help
    included (its plain help writes none)."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        super().format_help(ctx, formatter)


class _Command(_NoFlagTypes, TyperCommand):
    pass


class _Group(_NoFlagTypes, TyperGroup):
    pass


class _Typer(typer.Typer):
    """typer.Typer whose commands are _Command (pass it cls=_Group for its own help)."""

    def command(self, *args, **kwargs):
        return super().command(*args, **{"cls": _Command, **kwargs})


app = _Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
             help="Benchmark harness and leaderboard for facial action unit (AU) detection.")
console = Console()

# pydantic field -> the CLI option that sets it, for one-line validation errors.
_OPTION_OF_FIELD = {
    "profile": "--profile", "subjects": "--subjects", "sequences_per_subject": "--sequences",
    "frames_per_sequence": "--frames", "frame_stride": "--stride", "image_size": "--size", "seed": "--seed",
    "occurrence_threshold": "--threshold", "pose": "--pose", "difficulty": "--difficulty", "crop_size": "--size",
    "objective": "--objective",
}


@contextmanager
def _user_errors():
    """Turn user errors into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        typer.echo(f"error: invalid {_OPTION_OF_FIELD.get(field, field)}: {message}", err=True)
        raise typer.Exit(2)


@app.callback()
def _main() -> None:
    """Benchmark harness and leaderboard for facial action unit (AU) detection."""


@app.command()
def synth(
    profile: Annotated[str, typer.Option(help="SynthAU profile: bp4d or disfa")] = "bp4d",
    subjects: Annotated[Optional[int], typer.Option(help="subjects (default: the profile's, 41 or 27)")] = None,
    sequences: Annotated[Optional[int], typer.Option(help="sequences per subject (default: the profile's)")] = None,
    frames: Annotated[Optional[int], typer.Option(help="frames per sequence (default: the profile's)")] = None,
    stride: Annotated[int, typer.Option(help="render every n-th frame (labels evolve at the full rate)")] = 10,
    size: Annotated[int, typer.Option(help="image size in pixels (>= 32)")] = 112,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    threshold: Annotated[float, typer.Option(help="occurrence = intensity >= threshold")] = 2.0,
    pose: Annotated[str, typer.Option(help="frontal (near-frontal jitter) or bins (15 yaw x pitch bins)")] = "frontal",
    difficulty: Annotated[float, typer.Option(help="divides the AU cue to nuisance ratio (1 = default)")] = 1.0,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: a cache folder keyed by the config)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="worker processes (default: all cores)")] = None,
    gallery: Annotated[Optional[Path], typer.Option(help="also write a gallery PNG here")] = None,
    gallery_only: Annotated[bool, typer.Option(help="write the gallery without generating the dataset")] = False,
    force: Annotated[bool, typer.Option("--force", help="generate again, replacing the frame index at the output "
                                                        "folder (a damaged cache)")] = False,
) -> None:
    """Generate a SynthAU dataset (a FrameIndex on disk) and optionally a gallery PNG."""
    from aunce_bench.console import progress_for
    from aunce_bench.data.synth.generate import load_or_generate
    from aunce_bench.data.configs import SynthConfig
    from aunce_bench.paths import check_writable

    with _user_errors():
        config = SynthConfig(profile=profile, subjects=subjects, sequences_per_subject=sequences,
                             frames_per_sequence=frames, frame_stride=stride, image_size=size, seed=seed,
                             occurrence_threshold=threshold, pose=pose, difficulty=difficulty).resolved()
        if workers is not None and workers < 1:
            raise UserError("invalid --workers: must be at least 1")
        if gallery_only and gallery is None:
            raise UserError("--gallery-only needs --gallery PATH")
        if gallery is not None:
            check_writable(gallery.parent)
        if not gallery_only:
            started = time.perf_counter()
            with progress_for(console, total_runs=None) as progress:
                index, folder, reused = load_or_generate(
                    config, out, workers, progress=partial(progress.count, "rendering subjects"), force=force)
            _print_summary(index, folder, reused, time.perf_counter() - started)
        if gallery is not None:
            from aunce_bench.data.synth.gallery import write_gallery

            console.print(f"gallery: {write_gallery(config, gallery)}")


def _print_summary(index, folder: Path, reused: bool, seconds: float) -> None:
    labels = index.label_matrix()
    table = Table(title=f"{index.name} base rates", show_header=True)
    table.add_column("AU")
    table.add_column("base rate", justify="right")
    for column, au in enumerate(index.aus):
        known = labels[:, column] >= 0
        table.add_row(f"AU{au}", f"{labels[known, column].mean():.3f}")
    console.print(table)
    subjects = len(set(index.frames["subject"]))
    if reused:
        console.print(f"already generated, reused: {folder} (pass --force to generate it again)")
    else:
        console.print(f"wrote {len(index)} frames of {subjects} subjects to {folder} "
                      f"in {seconds:.1f} s ({len(index) / seconds:.0f} faces/s)")


def _chosen_budget(quick: bool, budget: str | None) -> str | None:
    """The budget `--quick` / `--budget` name (None: the protocol's default); both at once, or an unknown name,
    is refused."""
    from aunce_bench.specs import BUDGETS

    if quick and budget is not None:
        raise UserError(f"--quick and --budget {budget} both choose a budget; pass one of them "
                        "(--quick is --budget quick)")
    budget = "quick" if quick else budget
    if budget is not None and budget not in BUDGETS:
        raise UserError(f"invalid --budget: '{budget}'; choose one of: {', '.join(BUDGETS)}")
    return budget


def _int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"invalid {option}: expected comma-separated integers like 1,2, got '{text}'")


def _db_path(db: Optional[Path]) -> Path:
    return db or Path(os.environ.get("AUNCE_BENCH_DB", "results.sqlite"))


_SELECTION_HELP = ("model selection: strict (best epoch on validation subjects held out of the training folds), "
                   "last_epoch (the final model, as the released scripts) or test_fold (best epoch on the test fold, "
                   "the published practice: optimistic, flagged in every table); default: the protocol's")
_DATA_ROOT_HELP = "where prepared datasets live (default $AUNCE_BENCH_DATA or ~/.cache/aunce_bench/data)"
_INIT_HELP = ("backbone initialisation: scratch, imagenet (timm's weights), synthface (the embedded SynthFace "
              "backbone) or checkpoint:PATH; default: the method's, else the protocol budget's")


# Options several commands share, declared once
_QuickOption = Annotated[bool, typer.Option("--quick", help="use the protocol's quick budget (smoke test)")]
_BudgetOption = Annotated[Optional[str], typer.Option(
    help="quick, standard or full (default: standard, or full where a protocol on real data has no standard)")]
_FoldsOption = Annotated[Optional[str], typer.Option(help="folds to run, e.g. 1,2 (default: all)")]
_SeedsOption = Annotated[str, typer.Option(help="seeds, e.g. 0,1")]
_SelectionOption = Annotated[Optional[str], typer.Option(help=_SELECTION_HELP)]
_InitOption = Annotated[Optional[str], typer.Option(help=_INIT_HELP)]
_DbOption = Annotated[Optional[Path], typer.Option(help="result database (default results.sqlite or $AUNCE_BENCH_DB)")]
_DataRootOption = Annotated[Optional[Path], typer.Option(help=_DATA_ROOT_HELP)]
_DeviceOption = Annotated[str, typer.Option(help="cpu or cuda")]
_DebugOption = Annotated[bool, typer.Option("--debug", help="print the traceback of each failed run")]


_ExecutorOption = Annotated[str, typer.Option(
    "--executor", help="local (one run after another in this process) or ray (each run a Ray task; this process "
                       "writes the store)")]
_RayAddressOption = Annotated[Optional[str], typer.Option(
    help="with --executor ray: the cluster to join, e.g. auto (the one `ray start` began on this machine) or "
         "HOST:PORT (default: $RAY_ADDRESS, else a new local instance)")]
_CpusPerRunOption = Annotated[Optional[int], typer.Option(
    help="with --executor ray: CPUs each run reserves, and its torch threads (default 1)")]
_GpusPerRunOption = Annotated[Optional[float], typer.Option(
    help="with --executor ray: GPUs each run reserves, fractions share one (default: 1 with --device cuda, else 0)")]
_TrackOption = Annotated[Optional[list[str]], typer.Option(
    "--track", help="also log each finished run to an experiment tracker: tensorboard or mlflow; repeatable (pip "
                    "install 'aunce-bench\\[tensorboard,mlflow]'); a tracker that fails warns, the run stands")]
_TrackDirOption = Annotated[Optional[Path], typer.Option(
    help="with --track: where TensorBoard event files (TRACK_DIR/tensorboard/RUN_ID) and the local MLflow store "
         "(TRACK_DIR/mlflow.db; $MLFLOW_TRACKING_URI names a server instead) go (default: tracking)")]


def _tracking(track: list[str] | None, track_dir: Path | None) -> tuple[list[str], Path]:
    """The checked --track names and --track-dir."""
    from aunce_bench.trackers import check_trackers

    if track_dir is not None and not track:
        raise UserError("--track-dir needs --track tensorboard or --track mlflow")
    return check_trackers(track or []), track_dir or Path("tracking")


def _executor(name: str, ray_address: str | None, cpus_per_run: int | None, gpus_per_run: float | None, device):
    """None for the local executor, the checked RayOptions for --executor ray."""
    from aunce_bench.executors import ray_options

    if name == "ray":
        return ray_options(ray_address, cpus_per_run, gpus_per_run, device)
    if name != "local":
        raise UserError(f"invalid --executor: '{name}'; choose local or ray")
    given = [option for option, value in (("--ray-address", ray_address), ("--cpus-per-run", cpus_per_run),
                                          ("--gpus-per-run", gpus_per_run)) if value is not None]
    if given:
        raise UserError(f"{given[0]} needs --executor ray")
    return None


def _init(text: str | None) -> str | None:
    """--init as given, if it parses."""
    from aunce_bench.specs import Init

    if text is None:
        return None
    try:
        return str(Init.parse(text))
    except ValueError as error:
        raise UserError(f"invalid --init: {error}")


@app.command()
def run(
    method: Annotated[str, typer.Option(help="method name (aunce-bench list methods) or path to a method YAML")],
    protocol: Annotated[str, typer.Option(help="protocol name (aunce-bench list protocols) or path to a protocol YAML")],
    quick: _QuickOption = False,
    budget: _BudgetOption = None,
    folds: _FoldsOption = None,
    seeds: _SeedsOption = "0",
    noise: Annotated[str, typer.Option(help="training-label noise TYPE:RATE, e.g. symmetric:0.2")] = "none",
    selection: _SelectionOption = None,
    init: _InitOption = None,
    db: _DbOption = None,
    data_root: _DataRootOption = None,
    device: _DeviceOption = "cpu",
    precision: _PrecisionOption = "fp32",
    channels_last: _ChannelsLastOption = None,
    compile_models: _CompileOption = False,
    data_loading: _DataLoadingOption = "auto",
    memory_budget: _MemoryBudgetOption = None,
    data_workers: _DataWorkersOption = None,
    redo: Annotated[bool, typer.Option("--redo", help="run again runs already done (replacing their results)")] = False,
    keep_embeddings: Annotated[bool, typer.Option(
        "--keep-embeddings", help="also store the trained encoder's test-set embeddings for `aunce-bench diagnose` "
                                  "(redoes done runs that lack them)")] = False,
    debug: _DebugOption = False,
    executor: _ExecutorOption = "local",
    ray_address: _RayAddressOption = None,
    cpus_per_run: _CpusPerRunOption = None,
    gpus_per_run: _GpusPerRunOption = None,
    nproc: Annotated[int, typer.Option(
        help="train each run in N processes (torchrun, DistributedDataParallel): one per GPU with --device cuda, "
             "else CPU processes; the batch size stays global")] = 1,
    track: _TrackOption = None,
    track_dir: _TrackDirOption = None,
    max_steps: Annotated[Optional[int], typer.Option(help=_MAX_STEPS_HELP)] = None,
    smoke_batch_size: Annotated[Optional[int], typer.Option(
        help="with --max-steps: cap every training stage's batch size at B, and say so (a quick check of the code "
             "path; the steps then do not cost what the configured batch costs)")] = None,
) -> None:
    """Run a method on a protocol, fold by fold and seed by seed, and store the results."""

    from aunce_bench.console import print_run_summary
    from aunce_bench.protocols import parse_noise, plan_runs
    from aunce_bench.results import ResultStore
    from aunce_bench.smoke import check_smoke, smoke
    from aunce_bench.specs import load_method, load_protocol

    with _user_errors():
        budget = _chosen_budget(quick, budget)
        _check_selection(selection)
        trackers, track_dir = _tracking(track, track_dir)
        check_smoke(max_steps, smoke_batch_size, {f"--executor {executor}": executor != "local",
                                                  f"--nproc {nproc}": nproc > 1, "--redo": redo,
                                                  "--keep-embeddings": keep_embeddings, "--track": bool(trackers)})
        ranks = _ranks(nproc, executor, device)
        torch_device = _torch_device(device, here=executor == "local", ranks=ranks)
        on_ray = _executor(executor, ray_address, cpus_per_run, gpus_per_run, torch_device)
        execution = _execution(precision, channels_last, compile_models, torch_device,
                               (data_loading, memory_budget, data_workers))
        method_spec, protocol_spec = load_method(method), load_protocol(protocol)
        budget = budget or protocol_spec.default_budget
        plan = partial(plan_runs, method_spec, budget=budget, folds=_int_list(folds, "--folds"),
                       seeds=_int_list(seeds, "--seeds") or [0], noise=parse_noise(noise), root=data_root,
                       selection=selection, init=_init(init))
        if max_steps is not None:
            failures = smoke(plan, protocol_spec, budget, torch_device, data_root, execution, max_steps,
                             smoke_batch_size, lambda line: console.print(line, markup=False, soft_wrap=True))
            for failure in failures:
                if debug and failure.traceback:
                    typer.echo(failure.traceback, err=True)
            raise typer.Exit(1 if failures else 0)
        runs = plan(protocol_spec)
        if nproc > 1 and ranks is None:  # checked once, then this command runs again in nproc processes
            _check_divisible_batches(runs, nproc)
            raise typer.Exit(_torchrun(nproc))
        store = ResultStore(_db_path(db))
        if ranks is not None and ranks.rank > 0:
            from aunce_bench.launch import follow

            return follow(runs, torch_device, data_root, keep_embeddings, execution)
        outcomes = _execute(runs, store, torch_device, data_root, redo, keep_embeddings, on_ray=on_ray,
                            execution=execution, trackers=trackers, track_dir=track_dir)
        print_run_summary(console, method_spec.name, protocol_spec.name, budget, outcomes)
        _finish(outcomes, debug)


_MAX_STEPS_HELP = (
    "smoke test of the budget's exact configuration (meant for --budget full on the CPU): backbone, crop and image "
    "size, loss, optimiser, batch size and init as planned, for N optimiser steps of each training stage (encoder "
    "and probe), then evaluation; only the data is cut, to the SynthAU frames the steps take (2 subjects per fold, "
    "one short sequence each; image size and crop as the budget). Prints steps, loss and seconds per step per "
    "stage; stores nothing")


def _ranks(nproc: int, executor: str, device: str):
    """This process's DistributedEnv inside the torchrun launch of `run --nproc N` (its process group joined, other
    ranks silent); None before the launch, and for --nproc 1."""
    import atexit

    from aunce_bench import distributed

    if nproc < 1:
        raise UserError(f"invalid --nproc: {nproc}; give 1 or more")
    if nproc > 1 and executor != "local":
        raise UserError("--nproc trains each run in several local processes; it cannot be combined with --executor "
                        f"{executor} (give each Ray task GPUs with --gpus-per-run instead)")
    env = distributed.DistributedEnv.from_environment()
    if nproc == 1 or env is None:
        return None
    if env.world_size != nproc:
        raise UserError(f"--nproc {nproc}, but torchrun started {env.world_size} processes; run aunce-bench itself, "
                        "not under torchrun: it starts torchrun")
    distributed.init_process_group("cuda" if device.startswith("cuda") else "cpu")
    atexit.register(distributed.destroy_process_group)
    console.quiet = env.rank > 0
    return env


def _check_divisible_batches(runs, nproc: int) -> None:
    for run in runs:
        spec = run.method.train
        if spec is not None and spec.batch_size % nproc:
            raise UserError(f"method {run.method.name}: field 'train.batch_size': {spec.batch_size} is not a multiple "
                            f"of --nproc {nproc} (each process takes an equal share of every batch); choose a "
                            f"multiple of {nproc}")


def _torchrun(nproc: int) -> int:
    """Run this command line again in `nproc` processes, launched as `torchrun --standalone` launches them (its
    API: torchrun's own parser would take --nproc for its --nproc-per-node); the exit status."""
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)("-m", "aunce_bench.cli", *sys.argv[1:])
    except ChildFailedError as error:
        typer.echo(f"error: a process of --nproc {nproc} failed: {' '.join(str(error).split())[:300]}", err=True)
        return 1
    return 0




def _check_selection(selection: str | None) -> None:
    from aunce_bench.specs import SELECTIONS

    if selection is not None and selection not in SELECTIONS:
        raise UserError(f"invalid --selection: '{selection}'; choose {', '.join(SELECTIONS)}")


def _execute(runs, store, device, data_root, redo=False, keep_embeddings=False, on_ray=None, *, execution,
             trackers=(), track_dir=None):
    """Run what is not done yet, with progress bars, here or (`on_ray`: RayOptions) as Ray tasks, which are said one
    line each as they finish; skipped runs are said so. Each run executed is logged, as stored, to `trackers` (with
    `track_dir`), whose warnings are said one line each."""
    from aunce_bench.console import progress_for
    from aunce_bench.executors import execute_on_ray
    from aunce_bench.launch import execute
    from aunce_bench.trackers import log_run

    def tracked(o):
        if trackers:
            (stored,) = [r for r in store.runs(method=o.run.method.name, protocol=o.run.protocol)
                         if r["run_id"] == o.run.run_id]
            for warning in log_run(stored, trackers, track_dir):
                console.print(warning, markup=False, soft_wrap=True)  # one line, however wide

    def skipped(r, reason):
        console.print(f"{reason}, skipping: {r.method.name} {r.fold_name} seed {r.seed} noise {r.noise} ({r.run_id})",
                      markup=False)  # names may hold brackets, e.g. sweep points

    def finished(o):
        f1 = f", mean F1 {o.mean_f1:.3f}" if o.mean_f1 is not None else f": {(o.error or '').splitlines()[0]}"
        console.print(f"{o.status}: {o.run.method.name} {o.run.fold_name} seed {o.run.seed} noise {o.run.noise} "
                      f"({o.run.run_id}){f1}", markup=False)
        tracked(o)

    store.check_ready()  # before any training, also where every run would be skipped
    try:
        with progress_for(console, total_runs=len(runs)) as progress:
            if on_ray is not None:
                return execute_on_ray(runs, store, device, progress, on_ray, on_skip=skipped, on_finish=finished,
                                      root=data_root, redo=redo, keep_embeddings=keep_embeddings, execution=execution)
            return execute(runs, store, device, progress, on_skip=skipped, root=data_root, redo=redo,
                           keep_embeddings=keep_embeddings, execution=execution, on_finish=tracked)
    except KeyboardInterrupt as interrupt:  # Ctrl-C: the runs it cut short are not stored (launch.Interrupted)
        for r in getattr(interrupt, "runs", []):
            typer.echo(f"interrupted: {r.method.name} {r.fold_name} seed {r.seed} noise {r.noise} ({r.run_id}) not "
                       "stored, neither done nor failed; run the same command again to redo it", err=True)
        if not getattr(interrupt, "runs", []):
            typer.echo("interrupted: no run was in progress; run the same command again to go on", err=True)
        raise typer.Exit(130)


def _finish(outcomes, debug: bool) -> None:
    """The plan's tally (done / failed / skipped), each failure's reason (and traceback with --debug); exit
    status 1 when any run failed."""
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "failed", "skipped")}
    console.print(", ".join(f"{count} {status}" for status, count in counts.items()) + f" of {len(outcomes)} run(s)")
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        run = outcome.run
        if debug and outcome.traceback:
            typer.echo(outcome.traceback, err=True)
        typer.echo(f"failed: {run.method.name} {run.fold_name} seed {run.seed} noise {run.noise} ({run.run_id}): "
                   f"{outcome.error.splitlines()[0] if outcome.error else 'no reason recorded'}", err=True)
    if failed:
        hint = "" if debug else "; --debug prints the tracebacks"
        typer.echo(f"error: {len(failed)} of {len(outcomes)} run(s) failed{hint}", err=True)
        raise typer.Exit(1)


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(
        help="raw format: bp4d, disfa, bp4d_plus, affwild2, fera17, megraphau_lists or csv")],
    root: Annotated[Path, typer.Option(help="the annotation files as distributed (a folder; csv: the CSV file)")],
    images: Annotated[Optional[Path], typer.Option(
        help="folder of the frames or videos in the conventional layout (default: --root)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: DATA_ROOT/<dataset>)")] = None,
    align: Annotated[bool, typer.Option(
        "--align/--no-align", help="detect and align faces (--no-align: frames are already cropped faces)")] = True,
    data_root: _DataRootOption = None,
    threshold: Annotated[float, typer.Option(help="DISFA: occurrence = intensity >= threshold")] = 2.0,
    name: Annotated[Optional[str], typer.Option(
        help="name of the prepared dataset (default: the format's; megraphau_lists: bp4d or disfa; csv: the file's stem)")] = None,
    workers: Annotated[Optional[int], typer.Option(help="worker processes (default: all cores)")] = None,
    force: Annotated[bool, typer.Option("--force", help="prepare again, replacing what is at the output folder")] = False,
    landmarks: Annotated[Optional[Path], typer.Option(
        help="landmark list (JAA-Net format): one line per image of the format's image list, x1 y1 x2 y2 ... "
             "(1-based; 49, 66 or 68 points); its frames are aligned with these points, the others detected")] = None,
) -> None:
    """Import a real dataset's annotations and frames into a prepared FrameIndex (aligned 256 px faces)."""
    from aunce_bench.console import progress_for
    from aunce_bench.data.prepare import prepare as prepare_dataset
    from aunce_bench.data.prepared import data_root as resolve_root

    with _user_errors():
        with progress_for(console, total_runs=None) as progress:
            result = prepare_dataset(dataset, root, data_root=resolve_root(data_root), images=images, out=out,
                                     align=align, threshold=threshold, name=name, workers=workers, force=force,
                                     landmarks=landmarks, progress=partial(progress.count, "aligning faces (sequences)"))
        _print_prepared(result)


def _print_prepared(result) -> None:
    import numpy as np

    from aunce_bench.data.index import ALIGNMENT_GALLERY

    index, metadata = result.index, result.index.metadata
    labels = index.label_matrix()
    table = Table(title=f"{index.name} labels")
    for column in ("AU", "base rate", "present", "missing"):
        table.add_column(column, justify="left" if column == "AU" else "right")
    for column, au in enumerate(index.aus):
        known = labels[:, column] >= 0
        rate = f"{labels[known, column].mean():.3f}" if known.any() else "-"
        table.add_row(f"AU{au}", rate, str(int((labels[:, column] == 1).sum())), str(int((~known).sum())))
    console.print(table)
    console.print(f"{index.name}: {len(index)} frames, {len(metadata['subjects'])} subjects, "
                  f"{metadata['sequences']} sequences")
    faces, skipped = metadata["faces"], metadata["skipped"]
    if metadata["align"]:
        given = f"{faces['given']} aligned with given landmarks, " if metadata.get("given_landmarks") else ""
        console.print(f"faces: {given}{faces['detected']} detected, {faces['previous_box']} aligned as the previous "
                      f"frame, {faces['centre_crop']} centre crops")
        if metadata.get("given_landmarks"):
            console.print(f"given landmarks: {metadata['given_landmarks']}")
        if "face_score" in index.frames.column_names:
            scores = np.asarray(index.frames["face_score"], dtype=np.float32)
            if np.isfinite(scores).any():
                console.print(f"landmark confidence: median {np.nanmedian(scores):.3f}, lowest {np.nanmin(scores):.3f}")
        if (result.folder / ALIGNMENT_GALLERY).is_file():
            console.print(f"alignment gallery (least confident faces first): {result.folder / ALIGNMENT_GALLERY}")
    else:
        console.print("faces: not aligned (--no-align): frames centre-cropped to a square and resized")
    console.print(f"skipped: {skipped['without_image']} without an image, {skipped['unreadable']} unreadable, "
                  f"{skipped['unlabelled']} with every AU missing")
    if metadata["partitions"]:
        console.print("partitions: " + ", ".join(f"{k} {len(v)} subjects" for k, v in metadata["partitions"].items()))
    if result.reused:
        console.print(f"already prepared: {result.folder} (pass --force to prepare again)")
    else:
        console.print(f"wrote {len(index)} frames to {result.folder} in {result.seconds:.1f} s")


_PrecisionOption = Annotated[str, typer.Option(
    help="fp32, or mixed precision bf16 or fp16 (autocast; fp16 needs CUDA); speed only: the run id stays the same")]
_ChannelsLastOption = Annotated[Optional[bool], typer.Option(
    "--channels-last/--no-channels-last",
    help="channels-last memory format for convolutional backbones (default: on with CUDA, off on the CPU)")]
_CompileOption = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the models (runs uncompiled, with a warning, where compiling fails)")]


_DataLoadingOption = Annotated[str, typer.Option(
    help="where frames are read from: memory (decoded once), streaming (decoded per batch by worker processes), "
         "or auto: memory when a dataset's decoded frames fit --memory-budget; speed only: the run id stays the same")]
_MemoryBudgetOption = Annotated[Optional[float], typer.Option(
    help="GiB of decoded frames per dataset that --data-loading auto keeps in memory (default: 30% of this "
         "machine's memory)")]
_DataWorkersOption = Annotated[Optional[int], typer.Option(
    help="processes decoding streamed frames (default: one per spare CPU core, at most 8; 0: none)")]


def _execution(precision: str, channels_last: bool | None, compile_models: bool, device,
               data: tuple[str, float | None, int | None]):
    """The checked ExecutionOptions of --precision, --channels-last, --compile and (--data-loading,
    --memory-budget, --data-workers)."""
    from aunce_bench.data.loaders import DataLoading
    from aunce_bench.training.common import ExecutionOptions

    options = ExecutionOptions(precision, channels_last, compile_models, DataLoading(*data))
    options.check(device)
    return options


def _torch_device(name: str, here: bool = True, ranks=None):
    """--device as a torch device; `here`: it must exist on this machine (not so for runs sent to Ray tasks);
    `ranks`: in a distributed run, each process has the GPU of its local rank."""
    import torch

    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"invalid --device: '{name}'; choose cpu or cuda")
    if here and name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("invalid --device: CUDA is not available on this machine; use --device cpu")
    if ranks is not None and name.startswith("cuda"):
        return torch.device("cuda", ranks.local_rank)
    return torch.device(name)


def _stored(db: Optional[Path]) -> Path:
    """The result database to read: it must exist (reading never creates one)."""
    path = _db_path(db)
    if not path.is_file():
        raise UserError(f"no result database at {path}; run 'aunce-bench run' first or pass --db")
    return path


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="a stored run's id, or a unique start of it ('aunce-bench results' "
                                               "lists them)")],
    db: _DbOption = None,
) -> None:
    """One stored run: what it was, its per-AU metrics, its training curves (sparklines) and its files."""
    from aunce_bench.results import ResultStore
    from aunce_bench.show import find_run, show_run

    with _user_errors():
        store = ResultStore(_stored(db))
        show_run(console, store, find_run(store, run_id))


@app.command()
def results(
    db: _DbOption = None,
    format: Annotated[str, typer.Option(help="json, csv or md")] = "json",
    method: Annotated[Optional[str], typer.Option(help="only this method")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="only this protocol")] = None,
    leaderboard: Annotated[bool, typer.Option("--leaderboard", help="aggregated leaderboards (as `report`) "
                                              "instead of one row per run")] = False,
) -> None:
    """Print stored runs (one object per run), or the aggregated leaderboards, as JSON, CSV or Markdown."""
    from aunce_bench.report.aggregate import leaderboards
    from aunce_bench.report.exports import format_leaderboards, format_runs
    from aunce_bench.results import ResultStore

    with _user_errors():
        if format not in ("json", "csv", "md"):
            raise UserError(f"invalid --format: '{format}'; choose json, csv or md")
        with ResultStore(_stored(db)) as store:
            runs = store.runs(method=method, protocol=protocol)
            if leaderboard:
                boards = leaderboards(runs, store)
                typer.echo(format_leaderboards(boards, format))
                for warning in (warning for board in boards for warning in board.warnings):
                    typer.echo(f"warning: {warning}", err=True)
            else:
                typer.echo(format_runs(runs, format))


def _check_resamples(resamples: int) -> None:
    if resamples < 100:
        raise UserError(f"invalid --resamples: {resamples}; use at least 100")


@app.command("results-page")
def results_page(
    out: Annotated[Path, typer.Option(help="the Markdown page to write, e.g. results/RESULTS.md")],
    db: _DbOption = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples of the difference-to-best intervals")] = 1000,
) -> None:
    """Write the dated results page (machines, versions, leaderboards, noise curves) from a store as Markdown."""
    from aunce_bench.paths import check_writable
    from aunce_bench.report.results_page import results_page as page
    from aunce_bench.results import ResultStore

    with _user_errors():
        _check_resamples(resamples)
        check_writable(out.parent)
        with ResultStore(_stored(db)) as store:
            text = page(store, resamples)
        out.write_text(text)
        console.print(f"wrote {out} ({len(text.splitlines())} lines)")


_PARAM_HELP = ("PATH=VALUES, repeatable: a method field (loss.temperature, train.lr, probe.epochs, model.dim) and "
               "its values, e.g. loss.temperature=0.05,0.1,0.5 (the grid is every combination); with --random also "
               "ranges LOW:HIGH (uniform) or LOW:HIGH:log (log-uniform)")


@app.command()
def sweep(
    method: Annotated[str, typer.Option(help="base method name or path to a method YAML")],
    protocol: Annotated[str, typer.Option(help="protocol name or path to a protocol YAML")],
    param: Annotated[Optional[list[str]], typer.Option("--param", help=_PARAM_HELP)] = None,
    random_draws: Annotated[Optional[int], typer.Option(
        "--random", help="draw N points from the --param ranges and lists instead of the grid")] = None,
    sweep_seed: Annotated[Optional[int], typer.Option(help="seed of the --random draws (default 0)")] = None,
    quick: _QuickOption = False,
    budget: _BudgetOption = None,
    folds: _FoldsOption = None,
    seeds: _SeedsOption = "0",
    selection: _SelectionOption = None,
    init: _InitOption = None,
    db: _DbOption = None,
    out: Annotated[Path, typer.Option(help="output folder of the plot (PNG) and tables (HTML)")] = Path("reports"),
    data_root: _DataRootOption = None,
    device: _DeviceOption = "cpu",
    precision: _PrecisionOption = "fp32",
    channels_last: _ChannelsLastOption = None,
    compile_models: _CompileOption = False,
    data_loading: _DataLoadingOption = "auto",
    memory_budget: _MemoryBudgetOption = None,
    data_workers: _DataWorkersOption = None,
    debug: _DebugOption = False,
    executor: _ExecutorOption = "local",
    ray_address: _RayAddressOption = None,
    cpus_per_run: _CpusPerRunOption = None,
    gpus_per_run: _GpusPerRunOption = None,
    track: _TrackOption = None,
    track_dir: _TrackDirOption = None,
) -> None:
    """Run a method at each point of a parameter grid or random draw (reusing stored runs), then tabulate and plot
    mean F1 per parameter value."""
    from aunce_bench.data.noise import CLEAN, NoiseSpec
    from aunce_bench.paths import check_writable
    from aunce_bench.protocols import plan_runs
    from aunce_bench.report import plots
    from aunce_bench.report.build import sweep_page
    from aunce_bench.report.sensitivity import sensitivities
    from aunce_bench.results import ResultStore
    from aunce_bench.specs import load_method, load_protocol
    from aunce_bench.sweep import grid_points, parse_params, random_points, sweep_methods

    with _user_errors():
        budget = _chosen_budget(quick, budget)
        if sweep_seed is not None and random_draws is None:
            raise UserError("invalid --sweep-seed: it seeds --random N; a grid sweep draws nothing")
        _check_selection(selection)
        trackers, track_dir = _tracking(track, track_dir)
        params = parse_params(param or [], random=random_draws is not None)
        points = grid_points(params) if random_draws is None else random_points(params, random_draws, sweep_seed or 0)
        method_spec, protocol_spec = load_method(method), load_protocol(protocol)
        budget = budget or protocol_spec.default_budget
        torch_device = _torch_device(device, here=executor == "local")
        on_ray = _executor(executor, ray_address, cpus_per_run, gpus_per_run, torch_device)
        execution = _execution(precision, channels_last, compile_models, torch_device,
                               (data_loading, memory_budget, data_workers))
        point_specs = sweep_methods(method_spec, protocol_spec, budget, params, points, _init(init))
        check_writable(out)
        runs = [run for point in point_specs
                for run in plan_runs(point, protocol_spec, budget, _int_list(folds, "--folds"),
                                     _int_list(seeds, "--seeds") or [0], NoiseSpec(CLEAN, 0.0), data_root, selection,
                                     _init(init))]
        console.print(f"{len(point_specs)} point(s) x {len(runs) // len(point_specs)} run(s): "
                      + ", ".join(point.name for point in point_specs), markup=False)
        store = ResultStore(_db_path(db))
        outcomes = _execute(runs, store, torch_device, data_root, on_ray=on_ray, execution=execution,
                            trackers=trackers, track_dir=track_dir)
        planned = {run.run_id for run in runs}
        stored = [run for run in store.runs(protocol=protocol_spec.name)
                  if run["run_id"] in planned or run["method"] == method_spec.name]  # the points, the base's runs
        results = sensitivities(stored)
        if results:
            stem = out / _file_name(f"sweep_{protocol_spec.name}_{budget}_{method_spec.name}")
            html, figure = sweep_page(results, protocol_spec.name, budget)
            stem.with_suffix(".html").write_text(html)
            plots.save_png(figure, stem.with_suffix(".png"))
            for result in results:
                for table in _sensitivity_tables(result):
                    console.print(table)
            console.print(f"wrote {stem.with_suffix('.html')} and {stem.with_suffix('.png')}")
        _finish(outcomes, debug)


def _sensitivity_tables(sweep) -> list[Table]:
    """Rich tables of a sweep: per parameter (value, points, runs, mean F1, interval), then per point."""
    from rich.markup import escape

    base = sweep.reference
    reference = (f"base method {sweep.label}: " + ("no runs stored on these folds and seeds" if base is None else
                 f"{base.mean:.3f}{' ' + base.interval_text() if base.kind else ''} over {base.runs} run(s)"))
    tables = []
    for marginal in sweep.marginals:
        table = Table(title=escape(f"mean F1 per {marginal.path} ({sweep.label}, {sweep.setting.title})"),
                      caption=escape(reference))
        for column in (marginal.path, "points", "runs", "mean F1", "interval"):
            table.add_column(column, justify="left" if column in (marginal.path, "interval") else "right")
        for label, estimate in zip(marginal.labels, marginal.f1):
            table.add_row(escape(label), str(estimate.points), str(estimate.runs), f"{estimate.mean:.3f}",
                          estimate.interval_text())
        tables.append(table)
    table = Table(title=escape(f"mean F1 per point ({sweep.label}, {sweep.setting.title})"))
    for column in ("point", *sweep.params, "runs", "mean F1", "interval"):
        table.add_column(column, justify="right" if column in ("runs", "mean F1") else "left")
    for point in sweep.points:
        table.add_row(escape(point.name), *(escape(point.labels[path]) for path in sweep.params), str(point.f1.runs),
                      f"{point.f1.mean:.3f}", point.f1.interval_text())
    return [*tables, table]


@app.command()
def report(
    db: _DbOption = None,
    out: Annotated[Path, typer.Option(help="output folder: index.html and leaderboard exports")] = Path("reports"),
    resamples: Annotated[int, typer.Option(help="bootstrap resamples of the significance column")] = 1000,
    data_root: Annotated[Optional[Path], typer.Option(help=_DATA_ROOT_HELP + " (for their alignment galleries)")] = None,
) -> None:
    """Write the HTML report (leaderboards, noise curves, pose, cross-dataset, labels, provenance) and exports."""
    from aunce_bench.paths import check_writable
    from aunce_bench.report.build import build_report

    with _user_errors():
        _check_resamples(resamples)
        path = _stored(db)
        check_writable(out)
        started = time.perf_counter()
        index, warnings = build_report(path, out, resamples, data_root)
        for warning in warnings:
            typer.echo(f"warning: {warning}", err=True)
        console.print(f"report: {index} ({time.perf_counter() - started:.1f} s)")


def _levels(text: str) -> list[float]:
    """Noise rates from "0,0.1,0.2": sorted, distinct, each in [0, 1); 0 (the clean run) is always included."""
    try:
        levels = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels:
        raise UserError(f"invalid --levels: expected comma-separated rates like 0,0.1,0.2, got '{text}'")
    outside = [level for level in levels if not 0.0 <= level < 1.0]
    if outside:
        raise UserError(f"invalid --levels: rate {outside[0]:g} is outside [0, 1)")
    if max(levels) == 0.0:
        raise UserError("invalid --levels: give at least one rate above 0, e.g. 0,0.2")
    return sorted(set(levels) | {0.0})


@app.command("noise-curve")
def noise_curve(
    methods: Annotated[str, typer.Option(help="comma-separated method names or YAML paths, e.g. aunce,wce")],
    protocol: Annotated[str, typer.Option(help="protocol name or path to a protocol YAML")],
    noise_type: Annotated[str, typer.Option(help="label-noise model, e.g. symmetric; several, comma-separated "
                                            "(e.g. boundary,weak_intensity), are overlaid in one plot")],
    levels: Annotated[str, typer.Option(help="noise rates in [0, 1); 0 is the clean run")] = "0,0.1,0.2,0.4",
    quick: _QuickOption = False,
    budget: _BudgetOption = None,
    folds: _FoldsOption = None,
    seeds: _SeedsOption = "0",
    db: _DbOption = None,
    out: Annotated[Path, typer.Option(help="output folder of the plot (PNG) and table (HTML)")] = Path("reports"),
    device: _DeviceOption = "cpu",
    precision: _PrecisionOption = "fp32",
    channels_last: _ChannelsLastOption = None,
    compile_models: _CompileOption = False,
    data_loading: _DataLoadingOption = "auto",
    memory_budget: _MemoryBudgetOption = None,
    data_workers: _DataWorkersOption = None,
    data_root: _DataRootOption = None,
    init: _InitOption = None,
    selection: _SelectionOption = None,
    debug: _DebugOption = False,
    executor: _ExecutorOption = "local",
    ray_address: _RayAddressOption = None,
    cpus_per_run: _CpusPerRunOption = None,
    gpus_per_run: _GpusPerRunOption = None,
    track: _TrackOption = None,
    track_dir: _TrackDirOption = None,
) -> None:
    """Run methods at several label-noise rates (reusing stored runs), then plot and tabulate mean F1 per rate."""
    from aunce_bench.data.noise import CLEAN, NOISE_MODELS, NoiseSpec
    from aunce_bench.paths import check_writable
    from aunce_bench.protocols import plan_runs
    from aunce_bench.report.aggregate import noise_curves
    from aunce_bench.report.build import noise_page
    from aunce_bench.report import plots
    from aunce_bench.results import ResultStore
    from aunce_bench.specs import load_method, load_protocol

    with _user_errors():
        budget = _chosen_budget(quick, budget)
        kinds = list(dict.fromkeys(kind.strip() for kind in noise_type.split(",") if kind.strip()))
        unknown = [kind for kind in kinds if kind not in NOISE_MODELS]
        if unknown or not kinds:
            raise UserError(f"invalid --noise-type: {NOISE_MODELS.unknown(unknown[0] if unknown else noise_type)}")
        _check_selection(selection)
        trackers, track_dir = _tracking(track, track_dir)
        rates = _levels(levels)
        method_specs = [load_method(name.strip()) for name in methods.split(",") if name.strip()]
        if not method_specs:
            raise UserError("invalid --methods: name at least one method, e.g. aunce,wce")
        protocol_spec = load_protocol(protocol)
        budget = budget or protocol_spec.default_budget
        torch_device = _torch_device(device, here=executor == "local")
        on_ray = _executor(executor, ray_address, cpus_per_run, gpus_per_run, torch_device)
        execution = _execution(precision, channels_last, compile_models, torch_device,
                               (data_loading, memory_budget, data_workers))
        check_writable(out)
        fold_list, seed_list = _int_list(folds, "--folds"), _int_list(seeds, "--seeds") or [0]
        noises = list(dict.fromkeys(NoiseSpec(CLEAN, 0.0) if rate == 0 else NoiseSpec(kind, rate)
                                    for kind in kinds for rate in rates))  # the clean runs once
        runs = [run for method_spec in method_specs for noise in noises
                for run in plan_runs(method_spec, protocol_spec, budget, fold_list, seed_list, noise, data_root,
                                     selection, _init(init))]
        store = ResultStore(_db_path(db))
        outcomes = _execute(runs, store, torch_device, data_root, on_ray=on_ray, execution=execution,
                            trackers=trackers, track_dir=track_dir)
        planned = {run.run_id for run in runs}
        curves = noise_curves([run for run in store.runs(protocol=protocol_spec.name) if run["run_id"] in planned])
        if curves:
            stem = out / _file_name(f"noise_curve_{protocol_spec.name}_{budget}_{'+'.join(kinds)}")
            html, figure = noise_page(curves, plots.method_colours([label for curve in curves for label in curve.points]))
            stem.with_suffix(".html").write_text(html)
            plots.save_png(figure, stem.with_suffix(".png"))
            for curve in curves:
                console.print(_noise_table(curve))
            console.print(f"wrote {stem.with_suffix('.html')} and {stem.with_suffix('.png')}")
        _finish(outcomes, debug)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _noise_table(curve) -> Table:
    """Mean F1 ± std per method and rate, and the drop from the clean run (a rich table)."""
    table = Table(title=f"mean F1 under {curve.kind} training-label noise: {curve.setting.title}")
    table.add_column("method")
    for level in curve.levels:
        table.add_column("clean" if level == 0 else f"{level:g}", justify="right")
    for level in curve.levels[1:]:
        table.add_column(f"drop {level:g}", justify="right")
    for method, stats in curve.points.items():
        cells = ["–" if s.mean is None else f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.std is not None else "")
                 for s in stats]
        drops = [curve.drop(method, i) for i in range(1, len(curve.levels))]
        table.add_row(method, *cells, *(f"{d:+.3f}" if d is not None else "–" for d in drops))
    if curve.chance is not None:
        table.add_row("chance (all-positive)", *[f"{curve.chance:.3f}"] * len(curve.levels),
                      *["–"] * (len(curve.levels) - 1), style="italic")
    return table


@app.command()
def diagnose(
    run_id: Annotated[Optional[str], typer.Argument(help="a stored run's id ('aunce-bench results' lists them)")] = None,
    method: Annotated[Optional[str], typer.Option(help="instead of RUN_ID: the run's method (name or YAML path)")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="with --method: the run's protocol (name or YAML path)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="with --method: the protocol's quick budget")] = False,
    budget: Annotated[Optional[str], typer.Option(
        help="with --method: quick, standard or full (default: as 'aunce-bench run')")] = None,
    fold: Annotated[int, typer.Option(help="with --method: the run's fold")] = 1,
    seed: Annotated[int, typer.Option(help="with --method: the run's seed")] = 0,
    db: _DbOption = None,
    out: Annotated[Path, typer.Option(help="report folder: writes diagnostics/RUN_ID.html and .png in it")] = Path("reports"),
    data_root: _DataRootOption = None,
) -> None:
    """Diagnose a run's trained encoder from the test-set embeddings kept by 'run --keep-embeddings': per AU,
    positive- and negative-pair cosine similarity, alignment, uniformity, vMF concentration per class and AUNCE's
    hard negatives (an HTML page and a PNG)."""
    import shlex

    from aunce_bench.data.noise import CLEAN, NoiseSpec
    from aunce_bench.paths import check_writable
    from aunce_bench.protocols import plan_runs
    from aunce_bench.report.diagnostics import write_diagnostics
    from aunce_bench.results import ResultStore
    from aunce_bench.specs import load_method, load_protocol

    with _user_errors():
        if run_id is not None and (method or protocol):
            raise UserError("give a RUN_ID or --method and --protocol, not both")
        if run_id is None and not (method and protocol):
            raise UserError("give a RUN_ID ('aunce-bench results' lists them), or --method and --protocol")
        path = _stored(db)
        if run_id is None:
            budget = _chosen_budget(quick, budget)
            method_spec, protocol_spec = load_method(method), load_protocol(protocol)
            budget = budget or protocol_spec.default_budget
            run_id = plan_runs(method_spec, protocol_spec, budget, [fold], [seed], NoiseSpec(CLEAN, 0.0),
                               data_root)[0].run_id
            rerun = shlex.join(["aunce-bench", "run", "--method", method, "--protocol", protocol, "--budget", budget,
                                "--folds", str(fold), "--seeds", str(seed), "--db", str(path), "--keep-embeddings"])
            with ResultStore(path) as store:
                if store.status(run_id) is None:
                    raise UserError(f"no run of {method_spec.name} on {protocol_spec.name} ({budget} budget, fold "
                                    f"{fold}, seed {seed}, clean labels) in {path}; run `{rerun}`")
        check_writable(out)
        with ResultStore(path) as store:
            page = write_diagnostics(store, run_id, out / "diagnostics", rerun if method else None)
        console.print(_diagnostics_table(page))
        console.print(f"wrote {page.html} and {page.png}")


def _diagnostics_table(page) -> Table:
    """Per AU: alignment, uniformity, vMF concentration per class and the shares of hard negatives (a rich table)."""
    from aunce_bench.report.diagnostics import number

    run = page.run
    table = Table(title=f"embedding diagnostics: {run['method']} on {run['protocol']}, {run['budget']} budget, fold "
                        f"{run['fold']}, seed {run['seed']} ({run['run_id']})",
                  caption="κ: vMF concentration per class; hard: share of the negatives of present / absent "
                          "anchors more similar to the anchor than its mean positive")
    for column in ("AU", "frames", "align", "uniform", "κ absent", "κ present", "hard present", "hard absent"):
        table.add_column(column, justify="left" if column == "AU" else "right")
    for r in page.results:
        table.add_row(r.au, str(r.frames), number(r.alignment), number(r.uniformity), number(r.absent.kappa, 1),
                      number(r.present.kappa, 1), number(r.present.hard_share), number(r.absent.hard_share))
    return table


init_app = _Typer(cls=_Group, no_args_is_help=True,
                  help="Backbone initialisations: list, show and build SynthFace backbones.")
app.add_typer(init_app, name="init")


@init_app.command("list")
def init_list() -> None:
    """The SynthFace builds in the cache, newest first."""
    from aunce_bench.synthface import cached_builds, synthface_root

    with _user_errors():
        cards = cached_builds()
        table = Table(title=f"SynthFace builds in {synthface_root()}")
        for column in ("name", "objective", "input px", "pool frames", "epochs", "loss first -> final", "build s",
                       "built at"):
            table.add_column(column)
        for card in cards:
            losses = card["losses"]
            table.add_row(card["name"], card["objective"], str(card["config"]["crop_size"]), str(card["pool"]["frames"]),
                          str(card["epochs"]), f"{losses['first_epoch']:.3f} -> {losses['final_epoch']:.3f}",
                          f"{card['wall_s']['total']:.0f}", card["built_at"])
        console.print(table)
        if not cards:
            console.print("none yet: a run with --init synthface builds one, or 'aunce-bench init build'")


@init_app.command("show")
def init_show(name: Annotated[str, typer.Argument(help="a build's name (or its start), from 'aunce-bench init list'")]
              ) -> None:
    """Print the model card of a SynthFace build (JSON)."""
    import json

    from aunce_bench.synthface import cached_builds

    with _user_errors():
        cards = cached_builds()
        found = [card for card in cards if card["name"].startswith(name)]
        if len(found) != 1:
            known = ", ".join(card["name"] for card in cards) or "none"
            raise UserError(f"{'no' if not found else 'more than one'} SynthFace build named '{name}'; known: {known}")
        typer.echo(json.dumps(found[0], indent=2))


@init_app.command("build")
def init_build(
    backbone: Annotated[str, typer.Option(help="timm backbone name")] = "resnet18",
    size: Annotated[Optional[int], typer.Option(help="network input size in pixels (default: the protocol budget's "
                                                     "crop size)")] = None,
    objective: Annotated[str, typer.Option(help="landmarks (3D landmarks + head pose) or simclr")] = "landmarks",
    protocol: Annotated[str, typer.Option(help="protocol whose budget sets the input size")] = "synth_bp4d_3fold",
    quick: Annotated[bool, typer.Option("--quick", help="the protocol's quick budget")] = False,
    budget: Annotated[Optional[str], typer.Option(help="quick, standard or full (default: standard)")] = None,
    device: _DeviceOption = "cpu",
) -> None:
    """Build a SynthFace backbone ahead of time (runs with --init synthface build it on first use)."""
    from aunce_bench.console import progress_for
    from aunce_bench.specs import load_protocol
    from aunce_bench.synthface import SynthFaceConfig, ensure_synthface, read_card

    with _user_errors():
        if size is None:
            spec = load_protocol(protocol)
            size = spec.budget(_chosen_budget(quick, budget) or spec.default_budget).crop_size
        config = SynthFaceConfig(backbone=backbone, crop_size=size, objective=objective)
        torch_device = _torch_device(device)
        with progress_for(console, total_runs=None) as progress:
            folder, built = ensure_synthface(config, torch_device, progress)
        card = read_card(folder)
        console.print(f"{'built' if built else 'already built'} {card['name']}: loss {card['losses']['first_epoch']:.3f} -> {card['losses']['final_epoch']:.3f} "
                      f"over {card['epochs']} epochs, built in {card['wall_s']['total']:.0f} s; {folder}")


@app.command("cue-audit")
def cue_audit_command(
    size: Annotated[int, typer.Option(help="image size in pixels (the quick budget renders 64, standard 72)")] = 64,
    identities: Annotated[int, typer.Option(help="identities per profile")] = 24,
) -> None:
    """How SynthAU expresses each labelled AU at an image size, per profile: landmark displacement in pixels, the
    pixel change split into shape and appearance, against the spread across identities, and how far the AU's
    landmarks sit apart when the same faces are captured in the other profile's style."""
    from aunce_bench.data.synth.cue_audit import AUDIT_INTENSITY, audit
    from aunce_bench.data.synth.profiles import PROFILES

    with _user_errors():
        if size < 32 or identities < 2:
            raise UserError("invalid --size or --identities: use a size of at least 32 px and at least 2 identities")
        for profile in PROFILES:
            other = next(p for p in PROFILES if p != profile)
            table = Table(title=f"SynthAU {profile}, {size} px: each AU alone at intensity 0 and {AUDIT_INTENSITY:g}, "
                                f"{identities} identities")
            for column in ("AU", "geometry px", "change", "geometry part", "appearance part", "grey share",
                           "identity spread", "cue / spread", f"offset to {other} px"):
                table.add_column(column, justify="right")
            for row in audit(profile, size, identities, other=other):
                table.add_row(f"AU{row.au}", *(f"{v:.2f}" for v in (
                    row.geometry_px, row.change, row.geometry_change, row.appearance_change, row.brightness_share,
                    row.identity_spread, row.cue_to_spread, row.profile_offset_px)))
            console.print(table)


@app.command("study")
def study_command(
    name: Annotated[str, typer.Argument(help="study name (built-in: lip_aus) or path to a study YAML")],
    db: _DbOption = None,
    run_missing: Annotated[bool, typer.Option("--run/--no-run", help="run the points not stored yet, skipping "
                                              "stored ones (default), or only read the store")] = True,
    page: Annotated[Optional[Path], typer.Option(help="also write the study's Markdown page here (table, what each "
                                                 "factor moved, cue audit of the data)")] = None,
    device: _DeviceOption = "cpu",
    data_root: _DataRootOption = None,
    identities: Annotated[int, typer.Option(help="identities per profile in the page's cue audit")] = 24,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 1000,
    debug: _DebugOption = False,
) -> None:
    """Run a controlled study (factors changed one at a time, each point paired with a reference method in its
    own setting) and print its table: mean F1, the focus AUs, the other AUs, each against the reference."""
    from aunce_bench.results import ResultStore
    from aunce_bench.study import load_study, plan_study, study_table, unique_runs

    with _user_errors():
        _check_resamples(resamples)
        spec = load_study(name)
        points = plan_study(spec, data_root)
        outcomes = []
        with ResultStore(_db_path(db)) as store:
            if run_missing:
                torch_device = _torch_device(device)
                execution = _execution("fp32", None, False, torch_device, ("auto", None, None))
                outcomes = _execute(unique_runs(points), store, torch_device, data_root, execution=execution)
            rows = study_table(spec, points, store, resamples)
        _print_study(spec, rows)
        if page is not None:
            _write_study_page(spec, points, rows, name, page, store.path.name, identities, data_root)
        if outcomes:
            _finish(outcomes, debug)


def _print_study(spec, rows) -> None:
    from aunce_bench.report.study_page import interval_text

    focus = ", ".join(f"AU{au}" for au in spec.focus_aus)
    table = Table(title=f"{spec.name}: {spec.protocol} {spec.budget}, folds {spec.folds}, seeds {spec.seeds}; "
                        f"each point minus {spec.reference} in its own setting, 95 % paired bootstrap")
    for column in ("factor", "point", "runs", "mean F1", focus, "other AUs", f"mean − {spec.reference}",
                   f"{focus} − {spec.reference}", f"other − {spec.reference}"):
        table.add_column(column)
    per_point = len(spec.folds) * len(spec.seeds)
    for row in rows:
        table.add_row(row.factor, row.label, f"{row.runs} of {per_point} runs",
                      *(f"{v:.3f}" if v is not None else "" for v in (row.mean_f1, row.focus_f1, row.other_f1)),
                      *(interval_text(row.versus[part]).replace("**", "") for part in ("mean", "focus", "other")))
    console.print(table)


def _write_study_page(spec, points, rows, name: str, page: Path, db_name: str, identities: int,
                      data_root: Optional[Path]) -> None:
    from aunce_bench.data.synth.cue_audit import audit
    from aunce_bench.data.prepared import data_root as resolve_root
    from aunce_bench.launch import run_frames
    from aunce_bench.data.synth.profiles import PROFILES
    from aunce_bench.report.study_page import study_markdown
    from aunce_bench.specs import load_protocol

    budget = load_protocol(spec.protocol).budget(spec.budget)
    size = budget.data.get("image_size", 112)
    profiles = list(PROFILES)
    audits = {profile: audit(profile, size, identities, other=next(p for p in profiles if p != profile))
              for profile in profiles}
    first = points[0].runs[0]
    train = run_frames(first.train_data, first.train_subjects, first.aus, resolve_root(data_root))
    text = study_markdown(spec, rows, audits, f"aunce-bench study {name}", db_name, (first.aus, train.labels))
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text + "\n")
    console.print(f"wrote {page}")


@app.command("list")
def list_components(
    what: Annotated[str, typer.Argument(help="methods, protocols or datasets")],
) -> None:
    """List the available methods, protocols or datasets, and where each comes from."""
    from aunce_bench.data.formats import FORMATS
    from aunce_bench.data.synth.profiles import PROFILES
    from aunce_bench.specs import SEARCH_PATH_VARIABLE, available, load_method, load_protocol

    with _user_errors():
        if what not in ("methods", "protocols", "datasets"):
            raise UserError(f"invalid argument '{what}': choose methods, protocols or datasets")
        table = Table(show_header=True)
        table.add_column("name")
        table.add_column("description")
        if what == "datasets":
            for _, profile in PROFILES.items():
                table.add_row(profile.dataset_name, f"SynthAU, {profile.name} profile: "
                              f"{len(profile.labels.labelled_aus)} labelled AUs, {profile.labels.n_subjects} subjects "
                              "(embedded, generated on demand)")
            for name, source in FORMATS.items():
                if source.dataset:
                    table.add_row(name, f"{source.description} (licensed; aunce-bench prepare {name})")
        elif what == "methods":
            table.add_column("family")
            table.add_column("from")
            for item in available(what):
                method = load_method(str(item.path))
                family = f"{method.family} of {method.ablation_of}" if method.ablation_of else method.family
                table.add_row(item.name, " ".join(method.description.split()), family, item.origin)
        else:
            table.add_column("from")
            for item in available(what):
                table.add_row(item.name, " ".join(load_protocol(str(item.path)).description.split()), item.origin)
        console.print(table)
        if what != "datasets":
            console.print(f"more {what}: folders on ${SEARCH_PATH_VARIABLE} holding {what}/NAME.yaml, or a YAML path")


if __name__ == "__main__":
    app()
