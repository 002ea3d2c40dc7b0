"""The Ray executor: each planned run is a Ray task, and this process (the driver) alone writes the store.

The driver skips the runs already done, builds what the others share (SynthFace backbones, SynthAU data) once,
then per run takes its lock (as `launch.execute` does), marks it running and submits its computation as a task
with the declared resources. Tasks return their results (metrics, predictions, kept embeddings) and never open
the store; the driver stores each result as it arrives. A task that raised, or whose worker died, is stored as
failed with the original exception's type and message, and the other runs go on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from aunce_bench.errors import UserError
from aunce_bench.launch import (Interrupted, RunFailure, RunOutcome, RunResult, _build_inits, _kept,
                                compute_outcome, machine_provenance, record_outcome, start_run)
from aunce_bench.results import ResultStore
from aunce_bench.specs import RunSpec
from aunce_bench.training.common import ExecutionOptions, Progress

RAY_MISSING = "Ray is not installed: pip install 'aunce-bench[ray]'"


@dataclass(frozen=True)
class RayOptions:
    address: str | None  # the cluster to join ("auto": the one `ray start` began here); None: $RAY_ADDRESS, else local
    cpus_per_run: int  # CPUs each task reserves, and its torch threads
    gpus_per_run: float  # GPUs each task reserves (fractions share one)


def import_ray():
    """The ray module, or a one-line UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def ray_options(address: str | None, cpus_per_run: int | None, gpus_per_run: float | None,
                device: torch.device) -> RayOptions:
    """Checked options of the Ray executor; GPUs per run default to 1 on CUDA, else 0."""
    import_ray()
    cpus = 1 if cpus_per_run is None else cpus_per_run
    gpus = (1.0 if device.type == "cuda" else 0.0) if gpus_per_run is None else gpus_per_run
    if cpus < 1:
        raise UserError(f"invalid --cpus-per-run: {cpus}; use at least 1")
    if gpus < 0:
        raise UserError(f"invalid --gpus-per-run: {gpus:g}; use 0 or more")
    return RayOptions(address, cpus, gpus)


def _compute_in_task(run: RunSpec, device_name: str, root: Path | None, keep_embeddings: bool,
                     execution: ExecutionOptions, threads: int) -> RunResult | RunFailure:
    """A run's computation inside a Ray task, with `threads` torch threads; cuda means the GPU Ray assigned to
    the task (CUDA_VISIBLE_DEVICES). The result's provenance names this machine and node."""
    import ray

    from aunce_bench.data.prepared import data_root

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    node = ray.util.get_node_ip_address()
    if device.type == "cuda" and not torch.cuda.is_available():
        return RunFailure(f"--device {device_name}: no GPU visible to the Ray task on node {node}; pass "
                          "--gpus-per-run 1 (or a fraction), on a cluster with GPUs", None)
    computed = compute_outcome(run, device, Progress(), data_root(root), keep_embeddings, execution)
    if isinstance(computed, RunResult):
        where = machine_provenance(device) | {"executor": {"name": "ray", "node": node}}
        computed = replace(computed, provenance_update=computed.provenance_update | where)
    return computed


def _task_result(ray, ref) -> RunResult | RunFailure:
    """What a finished task returned, or why it did not: the original exception of a task that raised, the
    error of a worker that died or a task that was cancelled."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(error.cause, BaseException) else error
        return RunFailure(type(cause).__name__ + (f": {cause}" if str(cause) else ""), None, str(error))
    except ray.exceptions.RayError as error:
        return RunFailure(f"{type(error).__name__}: {error}", None)


def _generate_synth_data(runs: list[RunSpec]) -> None:
    """Generate the SynthAU data the runs read, once, before any task would."""
    from aunce_bench.data.configs import SynthConfig
    from aunce_bench.data.synth.generate import load_or_generate

    configs = {config for run in runs for config in (run.train_data, run.test_data) if isinstance(config, SynthConfig)}
    for config in sorted(configs, key=SynthConfig.content_hash):
        load_or_generate(config)


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (None: $RAY_ADDRESS, else start a local instance) unless this process is
    connected already; whether it connected now (and so disconnects at the end)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise UserError(f"invalid --ray-address: no Ray cluster at {address} ({error}); start one with "
                        "`ray start --head`, or omit --ray-address for a local instance") from None
    return True


def _check_resources(ray, options: RayOptions) -> None:
    """Refuse a run size that no node of the cluster can hold (its tasks would wait for ever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    for option, resource, wanted in (("--cpus-per-run", "CPU", options.cpus_per_run),
                                     ("--gpus-per-run", "GPU", options.gpus_per_run)):
        most = max((node.get(resource, 0) for node in nodes), default=0)
        if wanted > most:
            raise UserError(f"invalid {option}: {wanted:g}; no node of the Ray cluster has that many {resource}s "
                            f"(the most: {most:g})")


def execute_on_ray(runs: list[RunSpec], store: ResultStore, device: torch.device, progress: Progress,
                   options: RayOptions, on_skip=lambda run, reason: None, on_finish=lambda outcome: None,
                   root: Path | None = None, redo: bool = False, keep_embeddings: bool = False,
                   execution: ExecutionOptions = ExecutionOptions()) -> list[RunOutcome]:
    """`launch.execute` with each run computed in a Ray task; `on_finish(outcome)` hears of each run the driver
    stored. Returns the outcomes in the order of `runs`."""
    ray = import_ray()
    todo = [run for run in runs if not _kept(store, run, redo, keep_embeddings)]
    connected = bool(todo) and _connect(ray, options.address)  # all done: no cluster needed
    try:
        if todo:
            _check_resources(ray, options)
        builder = device if device.type == "cpu" or torch.cuda.is_available() else torch.device("cpu")
        _build_inits(todo, builder, progress)
        _generate_synth_data(todo)
        return _drive(ray, runs, store, device, progress, options, on_skip, on_finish, root, redo, keep_embeddings,
                      execution)
    finally:
        if connected:
            ray.shutdown()


def _drive(ray, runs, store, device, progress, options, on_skip, on_finish, root, redo, keep_embeddings,
           execution) -> list[RunOutcome]:
    """Submit the runs not done, holding each one's lock while its task is in flight, and store each result as
    it completes; an interrupt cancels the tasks in flight and forgets their runs (`Interrupted`), another
    exception stores them as failed."""
    locks = store.path.parent / f"{store.path.stem}.locks"
    locks.mkdir(parents=True, exist_ok=True)
    task = ray.remote(_compute_in_task).options(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run,
                                                max_retries=0)  # a crashed run is stored failed, redone by resume
    machine = machine_provenance(torch.device("cpu")) | {  # the task's own replaces it when the run is done
        "device": f"Ray task ({options.cpus_per_run} CPU, {options.gpus_per_run:g} GPU requested)",
        "execution": asdict(execution)}
    outcomes: list[RunOutcome | None] = [None] * len(runs)
    in_flight = {}  # task ref -> (index in runs, lock)
    try:
        for index, run in enumerate(runs):
            lock = FileLock(locks / f"{run.run_id}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                outcomes[index] = RunOutcome(run, "skipped", error="running in another process")
            else:
                if _kept(store, run, redo, keep_embeddings):  # checked again under the lock
                    lock.release()
                    outcomes[index] = RunOutcome(run, "skipped", error="already done")
                else:
                    try:
                        start_run(store, run, machine, redo=store.status(run.run_id) == "done")
                        ref = task.remote(run, str(device), root, keep_embeddings, execution, options.cpus_per_run)
                        in_flight[ref] = (index, lock)
                    except BaseException:
                        lock.release()
                        raise
            if outcomes[index] is not None:
                on_skip(run, outcomes[index].error)
                progress.run_finished()
        while in_flight:
            progress.run_started(f"{len(in_flight)} run(s) in flight")
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            index, lock = in_flight[ref]
            outcomes[index] = record_outcome(store, runs[index], _task_result(ray, ref))
            del in_flight[ref]
            lock.release()
            on_finish(outcomes[index])
            progress.run_finished()
    except BaseException as error:  # nothing in flight is left looking complete, and the plan stops
        interrupted = isinstance(error, KeyboardInterrupt)
        for ref, (index, lock) in in_flight.items():
            ray.cancel(ref, force=True)
            if interrupted:
                store.discard_run(runs[index].run_id)
            elif store.status(runs[index].run_id) == "running":
                store.fail_run(runs[index].run_id, type(error).__name__)
            lock.release()
        if interrupted:
            raise Interrupted([runs[index] for index, _ in in_flight.values()]) from None
        raise
    return outcomes
