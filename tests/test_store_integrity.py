"""The result store's numbers tied to their evidence: a digest per done run, recorded when it finishes (or, for
runs done before digests, at the upgrade) and checked on every read, with its mean F1 against its per-AU F1."""

import sqlite3
import struct
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aunce_bench import results
from aunce_bench.cli import app
from aunce_bench.results import DamagedMetrics, ResultStore
from test_results import finish, mean_f1, one_line, start

runner = CliRunner()
REDO = "aunce-bench run --method aunce --protocol bp4d-3fold --budget quick --folds 1 --seeds 0 --noise none"


@contextmanager
def connected(db: Path):
    """A plain SQLite connection to `db`, past the store: committed and closed when the block ends."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def flip_bit(value: float, bit: int) -> float:
    """`value` with one bit of its IEEE 754 double flipped (0: the lowest of the mantissa)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", value))
    (flipped,) = struct.unpack(">d", struct.pack(">Q", bits ^ (1 << bit)))
    return flipped


def integrity(db: Path) -> str:
    with connected(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def two_runs(db: Path, f1: float = 0.5) -> None:
    with ResultStore(db) as store:
        start(store, "r1")
        finish(store, "r1", f1=f1)
        start(store, "r2", seed=1)
        finish(store, "r2")


def damaged(db: Path, problem: str, redo: str = REDO) -> str:
    return (f"{db}: stored metrics of run r1 (method aunce, protocol bp4d-3fold, budget quick, fold 1, seed 0, "
            f"noise none) {problem} (damaged or modified); redo it with: {redo} --db {db} --redo")


DIFFERS = "differ from the digest recorded when it finished"


def test_a_bit_flipped_in_mean_f1_fails_every_read_of_the_run(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    with connected(db) as conn:  # the lowest bit: no check of the mean against the per-AU F1 could see it
        conn.execute("UPDATE runs SET mean_f1 = ? WHERE run_id = 'r1'", (flip_bit(mean_f1(0.5), 0),))
    assert integrity(db) == "ok"
    with ResultStore(db) as store:
        reads = [store.runs, lambda: store.runs(status="done"), lambda: store.au_metrics("r1"),
                 lambda: store.au_metrics("r1", "pose:yaw+20_pitch+0"), store.positive_rates,
                 lambda: store.predictions("r1")]
        for read in reads:
            with pytest.raises(DamagedMetrics) as error:
                read()
            assert one_line(error) == damaged(db, DIFFERS)
        assert not store.predictions_intact("r1")  # so `run` redoes it rather than skipping it
        assert store.predictions_intact("r2") and store.au_metrics("r2")["AU12"]["f1"] == 0.5


def test_a_bit_flipped_in_one_au_f1_inside_the_file_fails_results_leaderboard_and_report(tmp_path):
    db, f1 = tmp_path / "r.sqlite", 0.6180339887
    two_runs(db, f1)  # closed: the write-ahead log is checkpointed into the file
    data = bytearray(db.read_bytes())
    [offset] = [i for i in range(len(data) - 7) if data[i:i + 8] == struct.pack(">d", f1)]  # AU12's F1 of r1
    data[offset + 7] ^= 0x01
    db.write_bytes(data)
    assert integrity(db) == "ok"
    with ResultStore(db) as store:
        with pytest.raises(DamagedMetrics) as error:
            store.au_metrics("r1")
        assert one_line(error) == damaged(db, DIFFERS)
    for command in (["results"], ["results", "--leaderboard"], ["report", "--out", str(tmp_path / "report")]):
        result = runner.invoke(app, [*command, "--db", str(db)])
        assert result.exit_code == 2 and result.stderr == f"error: {damaged(db, DIFFERS)}\n", command


def test_a_mean_f1_that_is_not_the_mean_of_the_per_au_f1_is_refused(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    with ResultStore(db) as store, store._transaction() as conn:  # flipped before its digest was recorded
        conn.execute("UPDATE runs SET mean_f1 = ? WHERE run_id = 'r1'", (flip_bit(mean_f1(0.5), 50),))
        conn.execute("UPDATE runs SET metrics_sha256 = ? WHERE run_id = 'r1'", (results._stored_digest(conn, "r1"),))
    with ResultStore(db) as store, pytest.raises(DamagedMetrics) as error:
        store.runs()
    assert one_line(error) == damaged(db, f"hold mean F1 {flip_bit(mean_f1(0.5), 50)!r}, not the mean "
                                          f"{mean_f1(0.5)!r} of its per-AU F1")


def test_a_done_run_without_a_digest_is_refused_and_the_command_names_selection_and_init(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        store.start_run("r1", method="aunce", protocol="bp4d-3fold", dataset="synth-bp4d", budget="quick", fold=1,
                        seed=0, noise="none", spec={"selection": "strict", "method": {"model": {"init": "imagenet"}}},
                        provenance={})
        finish(store, "r1")
        store._conn.execute("UPDATE runs SET metrics_sha256 = NULL")  # as a row written outside aunce-bench
        with pytest.raises(DamagedMetrics) as error:
            store.runs()
    assert one_line(error) == damaged(db, "have no digest (written outside aunce-bench)",
                                      f"{REDO} --selection strict --init imagenet")


def test_the_upgrade_to_digests_ties_the_runs_done_before_it(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    with connected(db) as conn:  # as aunce-bench wrote it before digests
        conn.execute("ALTER TABLE runs DROP COLUMN metrics_sha256")
        conn.execute("PRAGMA user_version = 3")
    with ResultStore(db) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == results.SCHEMA_VERSION == 4
        assert all(digest for (digest,) in store._conn.execute("SELECT metrics_sha256 FROM runs"))
        before = store.runs()
        assert [run["mean_f1"] for run in before] == [mean_f1(0.5)] * 2
    with connected(db) as conn:
        conn.execute("UPDATE au_metrics SET f1 = ? WHERE run_id = 'r1' AND grp != 'all' AND au = 'AU12'",
                     (flip_bit(0.4, 0),))
    with ResultStore(db) as store, pytest.raises(DamagedMetrics) as error:
        store.runs()
    assert one_line(error) == damaged(db, DIFFERS)
