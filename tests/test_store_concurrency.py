"""Several processes on one result store: writers and readers of ResultStore, concurrent `aunce-bench run`
commands, and a run killed with SIGKILL then run again."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from aunce_bench.results import ResultStore
from test_results import finish, start

WRITER_PREFIXES, RUNS_PER_WRITER = "pqrs", 8  # 4 writer processes, runs p0..p7, q0..q7, ...

# What the runs learn is not the point here: the smallest SynthAU data and model, one epoch.
TINIEST_PROTOCOL = """\
name: tiniest
description: The smallest SynthAU protocol, for tests of the result store.
data: {source: synth, profile: bp4d}
split: {kind: kfold, n_folds: 3}
aus: [4, 12]
selection: last_epoch
budgets:
  quick: &tiniest {data: {subjects: 6, sequences_per_subject: 1, frame_stride: 20, image_size: 32}, crop_size: 32,
                   init: scratch}
  standard: *tiniest
  full: *tiniest
"""
TINIEST_METHOD = """\
name: tiniest
recipe: supervised
model: {backbone: resnet18, graph: false, dim: 16}
loss: {name: wce}
train: {optimizer: adamw, lr: 2.0e-3, weight_decay: 1.0e-4, batch_size: 16, epochs: 1}
"""


def _write_runs(db, prefix):
    with ResultStore(db) as store:
        for i in range(RUNS_PER_WRITER):
            start(store, f"{prefix}{i}", seed=i)
            finish(store, f"{prefix}{i}", f1=i / 10)


def _read_runs(db, stop):
    """Read the store until `stop` is set: done runs never vanish and always have intact predictions."""
    done = set()
    with ResultStore(db) as store:
        while not stop.is_set():
            now_done = {run["run_id"] for run in store.runs(status="done")}
            assert done <= now_done, f"done runs vanished: {sorted(done - now_done)}"
            assert all(store.predictions_intact(run_id) for run_id in now_done - done)
            done = now_done


def test_writer_and_reader_processes_share_one_store(tmp_path):
    db = tmp_path / "shared.sqlite"
    ResultStore(db).close()  # readers start on an existing store
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    readers = [ctx.Process(target=_read_runs, args=(db, stop)) for _ in range(2)]
    writers = [ctx.Process(target=_write_runs, args=(db, prefix)) for prefix in WRITER_PREFIXES]
    for process in readers + writers:
        process.start()
    for writer in writers:
        writer.join(120)
    stop.set()
    for reader in readers:
        reader.join(60)
    assert [process.exitcode for process in writers + readers] == [0] * (len(writers) + len(readers))
    with ResultStore(db) as store:
        runs = store.runs()
        assert sorted(run["run_id"] for run in runs) == [f"{p}{i}" for p in WRITER_PREFIXES for i in range(RUNS_PER_WRITER)]
        assert all(run["status"] == "done" and run["error"] is None for run in runs)
        assert all(store.predictions_intact(run["run_id"]) for run in runs)
    assert not list((tmp_path / "shared.predictions").glob(".*.tmp"))


@pytest.fixture(scope="module")
def run_command(tmp_path_factory):
    """`aunce-bench run ARGS...` of the tiniest method on the tiniest protocol, as a subprocess command line, and
    its environment: one thread, a data cache shared by the tests of this module."""
    specs = tmp_path_factory.mktemp("specs")
    (specs / "method.yaml").write_text(TINIEST_METHOD)
    (specs / "protocol.yaml").write_text(TINIEST_PROTOCOL)
    env = os.environ | {"OMP_NUM_THREADS": "1", "AUNCE_BENCH_CACHE": str(tmp_path_factory.mktemp("shared-cache"))}

    def command(db, *args):
        return [sys.executable, "-m", "aunce_bench.cli", "run", "--method", str(specs / "method.yaml"), "--protocol",
                str(specs / "protocol.yaml"), "--quick", "--init", "scratch", "--db", str(db), *args]

    return command, env


def test_concurrent_run_commands_share_one_store(run_command, tmp_path):
    command, env = run_command
    db = tmp_path / "results.sqlite"
    processes = [subprocess.Popen(command(db, "--folds", "1", "--seeds", str(seed)), env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in range(4)]
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [stderr[-2000:] for _, stderr in outputs]
    assert not any("Traceback" in stderr for _, stderr in outputs)
    with ResultStore(db) as store:
        runs = store.runs()
        assert sorted(run["seed"] for run in runs) == [0, 1, 2, 3]
        assert all(run["status"] == "done" and run["error"] is None for run in runs)
        assert all(store.predictions_intact(run["run_id"]) for run in runs)


def test_run_killed_mid_way_is_redone_and_finished_runs_are_skipped(run_command, tmp_path):
    command, env = run_command
    db = tmp_path / "results.sqlite"
    arguments = command(db, "--folds", "1", "--seeds", "0,1")
    with ResultStore(db) as store:
        process = subprocess.Popen(arguments, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while True:  # until the first run is done and the second running
            runs = {run["status"]: run for run in store.runs()}
            if "done" in runs and "running" in runs:
                break
            if process.poll() is not None:
                pytest.fail(f"the run ended (status {process.returncode}) before it could be killed: "
                            f"{process.stderr.read()[-2000:]}")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
        finished, killed = runs["done"], runs["running"]
        assert store.status(killed["run_id"]) == "running"  # SIGKILL left no chance to record a failure

        again = subprocess.run(arguments, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        assert f"already done, skipping: tiniest fold1 seed {finished['seed']}" in again.stdout
        runs = {run["run_id"]: run for run in store.runs()}
        assert sorted(runs) == sorted([finished["run_id"], killed["run_id"]])
        assert all(run["status"] == "done" and run["error"] is None for run in runs.values())
        assert runs[finished["run_id"]]["provenance"] == finished["provenance"]  # skipped, not redone
        assert runs[killed["run_id"]]["provenance"]["timings_s"]["train"] > 0  # redone to the end
        assert all(store.predictions_intact(run_id) for run_id in runs)
