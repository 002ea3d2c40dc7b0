"""`--executor ray`: each run a task on a local Ray instance (2 CPUs, started once for this module) while the
command's process alone writes the store; the same numbers as the local executor, resume across executors, and
failures (a run that raises, a worker that dies) stored as failed while the other runs finish."""

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.embeddings import embeddings_intact
from aunce_bench.results import ResultStore
from test_report import FAST

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """A local Ray instance whose workers read the test session's data cache and carry tests/ray_faults.py."""
    ray = pytest.importorskip("ray", reason="the Ray executor's tests need Ray: pip install -e '.[test]' "
                                            "(or '.[ray]')")
    base = tmp_path_factory.getbasetemp()
    ray.init(num_cpus=2, logging_level=logging.WARNING, runtime_env={
        "env_vars": {"AUNCE_BENCH_CACHE": str(base / "cache"), "AUNCE_BENCH_DATA": str(base / "no-data"),
                     "PYTHONPATH": str(Path(__file__).parent)},  # as conftest's isolated_cache
        "worker_process_setup_hook": "ray_faults.install"})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def fast_wce(tiny_specs, tmp_path_factory):
    """tiny_wce trained for one epoch."""
    path = tmp_path_factory.mktemp("methods") / "tiny_wce.yaml"
    path.write_text((tiny_specs / "tiny_wce.yaml").read_text().replace(*FAST["tiny_wce"]))
    return path


@pytest.fixture
def one_thread():
    """Local runs with one torch thread, as each Ray task here has (--cpus-per-run 1): numbers match only at
    equal thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(method, protocol, db, *extra):
    return runner.invoke(app, ["run", "--method", str(method), "--protocol", str(protocol), "--quick", "--db", str(db),
                               *extra])


def test_ray_runs_equal_local_runs_resume_across_executors_and_are_written_by_the_driver(
        ray_instance, fast_wce, tiny_specs, tmp_path, one_thread):
    protocol, db, reference = tiny_specs / "tiny_easy.yaml", tmp_path / "results.sqlite", tmp_path / "local.sqlite"
    local = _run(fast_wce, protocol, db, "--folds", "1", "--keep-embeddings")
    assert local.exit_code == 0 and "1 done, 0 failed, 0 skipped of 1 run(s)" in local.stdout, local.output

    distributed = _run(fast_wce, protocol, db, "--keep-embeddings", "--executor", "ray")
    assert distributed.exit_code == 0, distributed.output
    assert "2 done, 0 failed, 1 skipped of 3 run(s)" in distributed.stdout
    assert "already done, skipping: tiny_wce fold1 seed 0" in distributed.stdout
    assert sorted(line.split(" (")[0] for line in distributed.stdout.splitlines() if line.startswith("done: ")) == [
        "done: tiny_wce fold2 seed 0 noise none", "done: tiny_wce fold3 seed 0 noise none"]  # one line per run
    with ResultStore(db) as store:
        stored = {run["fold"]: run for run in store.runs()}
        assert all(run["status"] == "done" and embeddings_intact(store, run["run_id"]) for run in stored.values())
    assert "executor" not in stored[1]["provenance"]
    for fold in (2, 3):  # computed in a task (which cannot open a store: tests/ray_faults.py), stored by the driver
        assert stored[fold]["provenance"]["executor"]["name"] == "ray"
        assert stored[fold]["provenance"]["device"].endswith("(1 threads)")

    again = _run(fast_wce, protocol, db, "--keep-embeddings", "--executor", "ray")
    assert again.exit_code == 0 and "0 done, 0 failed, 3 skipped of 3 run(s)" in again.stdout, again.output
    with ResultStore(db) as store:
        assert [run["provenance"] for run in store.runs()] == [stored[fold]["provenance"] for fold in (1, 2, 3)]

    assert _run(fast_wce, protocol, reference, "--folds", "2,3").exit_code == 0
    with ResultStore(db) as on_ray, ResultStore(reference) as here:
        for expected in here.runs():
            run_id = expected["run_id"]
            actual = stored[expected["fold"]]
            assert actual["run_id"] == run_id
            assert actual["mean_f1"] == pytest.approx(expected["mean_f1"], abs=1e-6)
            assert on_ray.au_metrics(run_id) == {au: pytest.approx(metrics, abs=1e-6)
                                                 for au, metrics in here.au_metrics(run_id).items()}
            for column in ("prob_AU4", "prob_AU12"):
                np.testing.assert_allclose(on_ray.predictions(run_id, [column]).column(0).to_numpy(),
                                           here.predictions(run_id, [column]).column(0).to_numpy(), atol=1e-6)


def test_a_run_that_raises_and_a_worker_that_dies_are_stored_failed_while_the_other_run_finishes(
        ray_instance, fast_wce, tiny_specs, tmp_path):
    db = tmp_path / "results.sqlite"
    result = _run(fast_wce, tiny_specs / "tiny_easy_frequent.yaml", db, "--executor", "ray")  # see ray_faults.py
    assert result.exit_code == 1
    assert "1 done, 2 failed, 0 skipped of 3 run(s)" in result.stdout
    failed = sorted(line for line in result.stderr.splitlines() if line.startswith("failed: "))
    assert failed[0].startswith("failed: tiny_wce fold2 seed 0") and failed[0].endswith("RuntimeError: disk went away")
    assert failed[1].startswith("failed: tiny_wce fold3 seed 0") and ": WorkerCrashedError: " in failed[1]
    assert "error: 2 of 3 run(s) failed; --debug prints the tracebacks" in result.stderr
    statuses = {run["fold"]: (run["status"], (run["error"] or "").split(":")[0]) for run in ResultStore(db).runs()}
    assert statuses == {1: ("done", ""), 2: ("failed", "RuntimeError"), 3: ("failed", "WorkerCrashedError")}


def test_a_run_refused_inside_its_task_is_stored_failed_with_its_one_line_reason(ray_instance, tiny_specs, tmp_path):
    method = tmp_path / "huge_batch.yaml"
    method.write_text((tiny_specs / "tiny_wce.yaml").read_text().replace("batch_size: 32", "batch_size: 4096"))
    db = tmp_path / "results.sqlite"
    result = _run(method, tiny_specs / "tiny_easy.yaml", db, "--folds", "1", "--executor", "ray")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    (stored,) = ResultStore(db).runs()
    assert stored["status"] == "failed" and "no batch would train" in stored["error"]
    assert "field 'train.batch_size': 4096 is more than the" in result.stderr


def test_a_run_size_no_node_can_hold_is_refused_before_anything_is_submitted(ray_instance, fast_wce, tiny_specs,
                                                                            tmp_path):
    db = tmp_path / "results.sqlite"
    result = _run(fast_wce, tiny_specs / "tiny_easy.yaml", db, "--executor", "ray", "--gpus-per-run", "1")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("error: invalid --gpus-per-run: 1; no node of the Ray cluster has that many GPUs "
                                     "(the most: 0)")
    assert ResultStore(db).runs() == []


def test_without_ray_the_ray_executor_is_refused_with_one_line(fast_wce, tiny_specs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    result = _run(fast_wce, tiny_specs / "tiny_easy.yaml", tmp_path / "results.sqlite", "--executor", "ray")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: Ray is not installed: pip install 'aunce-bench[ray]'"
    assert not (tmp_path / "results.sqlite").exists()


@pytest.mark.parametrize("command", ["run", "noise-curve", "sweep"])
@pytest.mark.parametrize("options, message", [
    (["--executor", "slurm"], "error: invalid --executor: 'slurm'; choose local or ray"),
    (["--ray-address", "auto"], "error: --ray-address needs --executor ray"),
])
def test_executor_options_are_checked_by_every_command_that_runs(command, options, message, fast_wce, tiny_specs,
                                                                  tmp_path):
    method, out = str(fast_wce), str(tmp_path / "out")
    arguments = {"run": ["run", "--method", method],
                 "noise-curve": ["noise-curve", "--methods", method, "--noise-type", "symmetric", "--out", out],
                 "sweep": ["sweep", "--method", method, "--param", "train.lr=0.001", "--out", out]}[command]
    result = runner.invoke(app, [*arguments, "--protocol", str(tiny_specs / "tiny_easy.yaml"), "--quick", "--db",
                                 str(tmp_path / "results.sqlite"), *options])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == message
