"""ResultStore: round trips, interrupted and failed runs, restarts, concurrency across processes."""

import json
import math
import multiprocessing
import sqlite3

import numpy as np
import pytest

from aunce_bench.errors import UserError
from aunce_bench.results import ResultStore

NAN = float("nan")


def metric(f1, auc=0.7, support=10, positives=4):
    return {"f1": f1, "precision": 0.5, "recall": 0.6, "accuracy": 0.8, "auc": auc, "support": support,
            "positives": positives}


def start(store, run_id, *, method="aunce", fold=1, seed=0, noise="none", protocol="bp4d-3fold"):
    store.start_run(
        run_id, method=method, protocol=protocol, dataset="synth-bp4d", budget="quick", fold=fold, seed=seed,
        noise=noise, spec={"lr": 1e-3, "aus": [12, 1, 4]}, provenance={"git": "abc123", "device": "cpu"},
    )


def finish(store, run_id, f1=0.5):
    store.finish_run(
        run_id,
        metrics={"all": {"AU12": metric(f1), "AU1": metric(0.25, auc=NAN), "AU4": metric(0.125)},
                 "pose:yaw+20_pitch+0": {"AU12": metric(0.4), "AU1": metric(NAN)}},
        mean_f1=f1, chance_f1=0.3, wall_s=12.5,
        predictions={"key": np.array(["s1/a/0", "s1/a/1", "s2/b/0"]), "prob": np.arange(9.0).reshape(3, 3) / 9},
        noise_rates={"AU12": {"rho_10": 0.2, "rho_01": 0.1, "n_flipped": 7}},
        provenance_update={"images_per_s": 123.0},
    )


def metric_rows(path, run_id):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM au_metrics WHERE run_id = ?", (run_id,)).fetchone()[0]


def test_round_trip(tmp_path):
    db = tmp_path / "nested" / "results.sqlite"
    with ResultStore(db) as store:
        start(store, "r1")
        finish(store, "r1")
        [run] = store.runs()
        assert run == {
            "run_id": "r1", "method": "aunce", "protocol": "bp4d-3fold", "dataset": "synth-bp4d", "budget": "quick",
            "fold": 1, "seed": 0, "noise": "none", "status": "done", "mean_f1": 0.5,
            "per_au_f1": {"AU12": 0.5, "AU1": 0.25, "AU4": 0.125}, "chance_f1": 0.3, "wall_s": 12.5, "error": None,
            "groups": {"pose:yaw+20_pitch+0": {"AU12": 0.4, "AU1": None}},
            "noise_rates": {"AU12": {"rho_10": 0.2, "rho_01": 0.1, "n_flipped": 7}},
            "init": "scratch", "init_hash": None, "selection": None,  # derived from the spec (none recorded here)
            "spec": {"lr": 1e-3, "aus": [12, 1, 4]},
            "provenance": {"git": "abc123", "device": "cpu", "images_per_s": 123.0},
        }
        assert list(run["per_au_f1"]) == ["AU12", "AU1", "AU4"]
        assert json.loads(json.dumps(store.runs(), allow_nan=False)) == [run]
        assert store.au_metrics("r1")["AU12"] == metric(0.5)
        assert store.au_metrics("r1")["AU1"]["auc"] is None
        table = store.predictions("r1")
        assert table.column("key").to_pylist() == ["s1/a/0", "s1/a/1", "s2/b/0"]
        np.testing.assert_array_equal(np.stack(table.column("prob").to_numpy(zero_copy_only=False)),
                                      np.arange(9.0).reshape(3, 3) / 9)
        assert (tmp_path / "nested" / "results.predictions" / "r1.parquet").is_file()
        assert not list((tmp_path / "nested" / "results.predictions").glob("*.tmp"))
    with ResultStore(db) as again:
        assert again.runs() == [run]
        assert again._conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_wal_mode_and_foreign_keys_are_on(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000


def test_interrupted_run_stays_running(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        start(store, "r2", seed=1)
        finish(store, "r2")
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.status("r1") == "running"
        assert [run["run_id"] for run in store.runs(status="done")] == ["r2"]
        [running] = store.runs(status="running")
        assert running["mean_f1"] is None and running["per_au_f1"] == {}
        with pytest.raises(FileNotFoundError, match="no predictions for run r1 \\(status: running\\)"):
            store.predictions("r1")


def test_failure_inside_finish_run_leaves_the_run_running(tmp_path, monkeypatch):
    def boom(conn, run_id, metrics):
        raise RuntimeError("disk full")

    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        monkeypatch.setattr(ResultStore, "_insert_metrics", staticmethod(boom))
        with pytest.raises(RuntimeError, match="disk full"):
            finish(store, "r1")
        assert (tmp_path / "r.predictions" / "r1.parquet").is_file()
        assert store.status("r1") == "running"
        assert metric_rows(tmp_path / "r.sqlite", "r1") == 0
        assert store.au_metrics("r1") == {} and store.runs(status="done") == []
        assert store.runs()[0]["noise_rates"] == {} and "images_per_s" not in store.runs()[0]["provenance"]


def test_fail_then_restart_clears_old_rows(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        with store._transaction() as conn:  # rows of an attempt that died half-way
            conn.execute("INSERT INTO au_metrics (run_id, grp, au, f1) VALUES ('r1', 'all', 'AU99', 0.9)")
        store.fail_run("r1", "CUDA out of memory", wall_s=3.0)
        [run] = store.runs()
        assert (run["status"], run["error"], run["wall_s"]) == ("failed", "CUDA out of memory", 3.0)
        start(store, "r1")
        assert store.status("r1") == "running" and metric_rows(tmp_path / "r.sqlite", "r1") == 0
        assert store.runs()[0]["error"] is None
        finish(store, "r1")
        assert store.runs()[0]["per_au_f1"] == {"AU12": 0.5, "AU1": 0.25, "AU4": 0.125}


def test_done_runs_are_never_restarted_or_failed(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        finish(store, "r1")
        with pytest.raises(ValueError, match="already done"):
            start(store, "r1")
        with pytest.raises(ValueError, match="cannot be failed"):
            store.fail_run("r1", "late")
        with pytest.raises(ValueError, match="only a running run can finish"):
            finish(store, "r1")
        assert store.status("r1") == "done" and store.status("nope") is None


def test_runs_are_filtered_and_in_a_stable_order(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "b", method="weighted", fold=2)
        start(store, "c", method="aunce", fold=2, noise="symmetric:0.2")
        start(store, "a", method="aunce", fold=2)
        start(store, "d", method="aunce", fold=1)
        assert [run["run_id"] for run in store.runs()] == ["d", "a", "c", "b"]
        assert [run["run_id"] for run in store.runs(method="aunce", protocol="bp4d-3fold")] == ["d", "a", "c"]
        assert store.runs(protocol="disfa") == []


def _write_runs(db, prefix):
    with ResultStore(db) as store:
        for i in range(5):
            start(store, f"{prefix}{i}", seed=i)
            finish(store, f"{prefix}{i}", f1=i / 10)


def test_two_processes_write_concurrently(tmp_path):
    db = tmp_path / "shared.sqlite"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_write_runs, args=(db, prefix)) for prefix in ("p", "q")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    with ResultStore(db) as store:
        runs = store.runs(status="done")
        assert sorted(run["run_id"] for run in runs) == [f"{p}{i}" for p in "pq" for i in range(5)]
        assert all(math.isclose(run["mean_f1"], int(run["run_id"][1]) / 10) for run in runs)
        assert store.predictions("q4").num_rows == 3


def test_bad_input_is_refused(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="invalid run id"):
            start(store, "../escape")
        start(store, "r1")
        with pytest.raises(ValueError, match="group 'all'"):
            store.finish_run("r1", metrics={}, mean_f1=0, chance_f1=0, wall_s=0, predictions={})
        with pytest.raises(ValueError, match="unknown metrics"):
            store.finish_run("r1", metrics={"all": {"AU1": {"F1": 0.1}}}, mean_f1=0, chance_f1=0, wall_s=0,
                             predictions={})
        assert store.status("r1") == "running"
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(UserError, match="junk.sqlite"):
        ResultStore(tmp_path / "junk.sqlite")
