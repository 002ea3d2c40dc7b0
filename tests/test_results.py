"""ResultStore: round trips, interrupted and failed runs, restarts, concurrency across processes, damaged
predictions and databases."""

import json
import math
import multiprocessing
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from aunce_bench.errors import UserError
from aunce_bench import results
from aunce_bench.results import DamagedPredictions, ResultStore

NAN = float("nan")


def metric(f1, auc=0.7, support=10, positives=4):
    return {"f1": f1, "precision": 0.5, "recall": 0.6, "accuracy": 0.8, "auc": auc, "support": support,
            "positives": positives}


def start(store, run_id, *, method="aunce", fold=1, seed=0, noise="none", protocol="bp4d-3fold", redo=False):
    store.start_run(
        run_id, method=method, protocol=protocol, dataset="synth-bp4d", budget="quick", fold=fold, seed=seed,
        noise=noise, spec={"lr": 1e-3, "aus": [12, 1, 4]}, provenance={"git": "abc123", "device": "cpu"}, redo=redo,
    )


def mean_f1(f1):
    """The mean F1 of a run that `finish` stores with AU12's F1 `f1`."""
    return (f1 + 0.25 + 0.125) / 3


def finish(store, run_id, f1=0.5, history=None):
    store.finish_run(
        run_id,
        metrics={"all": {"AU12": metric(f1), "AU1": metric(0.25, auc=NAN), "AU4": metric(0.125)},
                 "pose:yaw+20_pitch+0": {"AU12": metric(0.4), "AU1": metric(NAN)}},
        mean_f1=mean_f1(f1), chance_f1=0.3, wall_s=12.5,
        predictions={"key": np.array(["s1/a/0", "s1/a/1", "s2/b/0"]), "prob": np.arange(9.0).reshape(3, 3) / 9},
        noise_rates={"AU12": {"rho_10": 0.2, "rho_01": 0.1, "n_flipped": 7}},
        provenance_update={"images_per_s": 123.0}, history=history,
    )


def stored_before_checksums(store, run_id):
    """Make a done run look stored before predictions had checksums, then upgraded (its digest recorded then)."""
    with store._transaction() as conn:
        conn.execute("UPDATE runs SET predictions_sha256 = NULL WHERE run_id = ?", (run_id,))
        conn.execute("UPDATE runs SET metrics_sha256 = ? WHERE run_id = ?", (results._stored_digest(conn, run_id),
                                                                               run_id))


def metric_rows(path, run_id):
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM au_metrics WHERE run_id = ?", (run_id,)).fetchone()[0]


def test_round_trip(tmp_path):
    db = tmp_path / "nested" / "results.sqlite"
    with ResultStore(db) as store:
        start(store, "r1")
        history = [{"stage": "contrastive pretraining", "epoch": epoch, "loss": 5.0 - epoch, "lr": 1e-3,
                    "val_f1": None, "images_per_s": 80.0} for epoch in (1, 2)]
        history.append({"stage": "linear probe", "epoch": 1, "loss": 0.6, "lr": 1e-2, "val_f1": 0.4,
                        "images_per_s": 9000.0})
        finish(store, "r1", history=history)
        [run] = store.runs()
        assert run == {
            "run_id": "r1", "method": "aunce", "protocol": "bp4d-3fold", "dataset": "synth-bp4d", "budget": "quick",
            "fold": 1, "seed": 0, "noise": "none", "status": "done", "mean_f1": mean_f1(0.5),
            "per_au_f1": {"AU12": 0.5, "AU1": 0.25, "AU4": 0.125}, "chance_f1": 0.3, "wall_s": 12.5, "error": None,
            "groups": {"pose:yaw+20_pitch+0": {"AU12": 0.4, "AU1": None}},
            "noise_rates": {"AU12": {"rho_10": 0.2, "rho_01": 0.1, "n_flipped": 7}}, "history": history,
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


def test_a_discarded_run_is_gone_but_a_done_or_failed_one_stays(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        for run_id in ("r1", "r2", "r3"):
            start(store, run_id, seed=int(run_id[1]))
        finish(store, "r2")
        store.fail_run("r3", "boom")
        for run_id in ("r1", "r2", "r3"):
            store.discard_run(run_id)
        assert store.status("r1") is None and store.status("r2") == "done" and store.status("r3") == "failed"
        start(store, "r1")  # the next plan runs it again
        assert store.status("r1") == "running"


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


def test_done_runs_are_never_failed_nor_restarted_without_redo(tmp_path):
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
        assert all(math.isclose(run["mean_f1"], mean_f1(int(run["run_id"][1]) / 10)) for run in runs)
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


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_flipped_bytes_in_predictions_are_caught_by_the_checksum(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        finish(store, "r1")
        assert store.predictions_intact("r1")
        path = tmp_path / "r.predictions" / "r1.parquet"
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 8] = bytes(255 - byte for byte in data[middle:middle + 8])
        path.write_bytes(data)
        with pytest.raises(DamagedPredictions) as error:
            store.predictions("r1")
        assert one_line(error) == (
            f"{path}: predictions damaged (sha256 mismatch); run its 'aunce-bench run' command again, which redoes it "
            "(run r1: method aunce, protocol bp4d-3fold, budget quick, fold 1, seed 0, noise none)")
        assert isinstance(error.value, UserError) and not store.predictions_intact("r1")


def test_truncated_predictions_are_damaged(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        for run_id in ("r1", "old"):
            start(store, run_id, seed=len(run_id))
            finish(store, run_id)
            path = tmp_path / "r.predictions" / f"{run_id}.parquet"
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        stored_before_checksums(store, "old")  # only Parquet itself can tell
        with pytest.raises(DamagedPredictions, match=r"r1\.parquet: predictions damaged \(sha256 mismatch\)"):
            store.predictions("r1")
        with pytest.raises(DamagedPredictions) as error:
            store.predictions("old", ["prob"])
        assert one_line(error).startswith(f"{path}: predictions damaged (not readable as Parquet); run its 'aunce-bench run' command again")
        assert not store.predictions_intact("r1") and not store.predictions_intact("old")


def test_predictions_intact_only_for_done_runs_with_their_file(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        for run_id in ("done", "unchecked", "lost", "running"):
            start(store, run_id, seed=len(run_id))
        for run_id in ("done", "unchecked", "lost"):
            finish(store, run_id)
        stored_before_checksums(store, "unchecked")
        (tmp_path / "r.predictions" / "lost.parquet").unlink()
        assert [store.predictions_intact(run_id) for run_id in ("done", "unchecked", "lost", "running", "nope")] == [
            True, True, False, False, False]
        assert store.predictions("unchecked").num_rows == 3
        with pytest.raises(FileNotFoundError, match="no predictions for run lost \\(status: done\\)"):
            store.predictions("lost")


def test_redo_replaces_a_done_run(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        finish(store, "r1", f1=0.5)
        start(store, "r1", redo=True)
        assert store.status("r1") == "running" and metric_rows(tmp_path / "r.sqlite", "r1") == 0
        assert store.runs()[0]["noise_rates"] == {} and "images_per_s" not in store.runs()[0]["provenance"]
        assert not (tmp_path / "r.predictions" / "r1.parquet").exists()
        finish(store, "r1", f1=0.75)
        [run] = store.runs()
        assert (run["status"], run["mean_f1"], run["per_au_f1"]["AU12"]) == ("done", mean_f1(0.75), 0.75)
        assert store.predictions_intact("r1")


def test_schema_version_1_is_upgraded_and_its_runs_stay_readable(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        start(store, "r1")
        finish(store, "r1")
    with sqlite3.connect(db) as conn:  # as aunce-bench wrote it before checksums
        conn.execute("ALTER TABLE runs DROP COLUMN predictions_sha256")
        conn.execute("ALTER TABLE runs DROP COLUMN metrics_sha256")
        conn.execute("DROP TABLE history")
        conn.execute("PRAGMA user_version = 1")
    with ResultStore(db) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == results.SCHEMA_VERSION
        assert store._conn.execute("SELECT predictions_sha256 FROM runs").fetchone()[0] is None
        assert store.predictions_intact("r1") and store.predictions("r1").num_rows == 3
        assert store.runs()[0]["history"] == []  # stored before histories were
        start(store, "r2", seed=1)
        finish(store, "r2", history=[{"stage": "supervised", "epoch": 1, "loss": 0.7, "lr": 1e-3, "val_f1": None,
                                      "images_per_s": 50.0}])
        assert store._conn.execute("SELECT predictions_sha256 FROM runs WHERE run_id = 'r2'").fetchone()[0]
        assert store.runs()[1]["history"] == [{"stage": "supervised", "epoch": 1, "loss": 0.7, "lr": 1e-3,
                                               "val_f1": None, "images_per_s": 50.0}]


def test_damaged_database_page_gives_one_line_naming_the_file(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        for i in range(40):  # runs, metrics and noise rates over many pages
            start(store, f"r{i}", seed=i)
            finish(store, f"r{i}")
        page_size = store._conn.execute("PRAGMA page_size").fetchone()[0]
    assert db.stat().st_size > 8 * page_size and not Path(f"{db}-wal").exists()  # all of it checkpointed
    with open(db, "r+b") as file:  # page 2, the root of table runs
        file.seek(page_size)
        file.write(b"\xa5" * page_size)
    with ResultStore(db) as store:  # page 1 (header and schema) is intact: opening works
        for call in (store.runs, lambda: store.status("r1"), lambda: start(store, "new")):
            with pytest.raises(UserError) as error:
                call()
            assert one_line(error).startswith(f"{db}: results database damaged (database disk image is malformed); "
                                              "restore it from a copy or pass another --db")


def test_not_a_database_gives_one_line(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 1000)
    with pytest.raises(UserError) as error:
        ResultStore(junk)
    assert one_line(error) == f"{junk}: not a results database (file is not a database); pass another --db"


def test_read_only_folder_gives_one_line(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anywhere but in a read-only file system such as /proc
        folder = Path("/proc")
    with pytest.raises(UserError) as error:
        ResultStore(folder / "x.sqlite")
    assert one_line(error).startswith(f"{folder / 'x.sqlite'}: cannot write the results database (unable to open "
                                      "database file); pass a --db in a writable folder")
    with pytest.raises(UserError) as error:
        ResultStore(folder / "sub" / "x.sqlite")
    assert one_line(error).startswith(f"{folder / 'sub' / 'x.sqlite'}: cannot create its folder")


def test_database_locked_past_the_busy_timeout_gives_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "BUSY_TIMEOUT_S", 0.2)
    with ResultStore(tmp_path / "r.sqlite") as store:
        start(store, "r1")
        with sqlite3.connect(tmp_path / "r.sqlite", isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer that does not let go
            with pytest.raises(UserError) as error:
                start(store, "r2", seed=1)
            other.execute("ROLLBACK")
        assert one_line(error) == (f"{tmp_path / 'r.sqlite'}: results database stayed locked for 0.2 s (database is "
                                   "locked); run fewer processes that write to one --db at a time")
        assert store.runs()[0]["run_id"] == "r1"
