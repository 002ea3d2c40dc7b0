"""The result store's numbers tied to their evidence (a digest per done run, checked on every read), its health
checked before a plan trains, and a store in a read-only folder still readable.

Root writes anywhere, so where a test needs a folder that cannot be written it either runs the command through
`as_user` (setpriv without CAP_DAC_OVERRIDE makes root bound by the folder's mode), or makes SQLite's -wal and
-shm files unopenable (folders in their place), which SQLite meets exactly as it meets a folder it cannot write
them in."""

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aunce_bench import results
from aunce_bench.cli import app
from aunce_bench.errors import UserError
from aunce_bench.results import DamagedMetrics, ResultStore
from test_results import finish, mean_f1, one_line, start

runner = CliRunner()
REDO = "aunce-bench run --method aunce --protocol bp4d-3fold --budget quick --folds 1 --seeds 0 --noise none"


def as_user(command: list[str]) -> list[str]:
    """`command`, run so that file modes bind it: as it is for a user other than root; for root through setpriv,
    without the capabilities that let root ignore them. Skips the test where neither is possible."""
    if os.geteuid() != 0:
        return command
    setpriv = [shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    try:
        usable = subprocess.run([*setpriv, "true"], capture_output=True).returncode == 0
    except OSError:
        usable = False
    if not usable:
        pytest.skip("root without setpriv: folder modes cannot bind this process")
    return [*setpriv, *command]


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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def test_opening_and_reading_a_store_writes_nothing(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    before = sha256(db)
    with ResultStore(db) as store:
        store.runs()
        store.check_ready()
    assert sha256(db) == before and not Path(f"{db}-wal").exists()


def damage_history(db: Path) -> None:
    """Garble the one page of table history: quick_check sees it; nothing that decides whether a run is done
    reads it."""
    with connected(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'history'").fetchone()
    with open(db, "r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\xa5" * page_size)


HISTORY = [{"stage": "supervised", "epoch": 1, "loss": 0.5, "lr": 1e-3, "val_f1": None, "images_per_s": 9.0}]


def test_check_ready_finds_a_damaged_database(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        start(store, "r1")
        finish(store, "r1", history=HISTORY)
    damage_history(db)
    with ResultStore(db) as store:
        assert store.predictions_intact("r1")  # a plan would skip the run
        with pytest.raises(UserError) as error:
            store.check_ready()
    assert one_line(error).startswith(f"{db}: results database damaged (quick_check: ")
    assert one_line(error).endswith("); restore it from a copy or pass another --db (the runs' predictions beside "
                                    "it are intact)")


@pytest.fixture
def tiniest(tmp_path, monkeypatch):
    """The `aunce-bench run` options of the tiniest method on the tiniest protocol, and its one planned run stored
    as done (fake metrics, with a history) in `tmp_path/r.sqlite`, as a rerun would skip it."""
    from aunce_bench.data.noise import NoiseSpec
    from aunce_bench.launch import start_run
    from aunce_bench.protocols import plan_runs
    from aunce_bench.specs import load_method, load_protocol
    from test_store_concurrency import TINIEST_METHOD, TINIEST_PROTOCOL

    monkeypatch.setenv("AUNCE_BENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "method.yaml").write_text(TINIEST_METHOD)
    (tmp_path / "protocol.yaml").write_text(TINIEST_PROTOCOL)
    [run] = plan_runs(load_method(str(tmp_path / "method.yaml")), load_protocol(str(tmp_path / "protocol.yaml")),
                      "quick", [1], [0], NoiseSpec("none", 0.0))
    with ResultStore(tmp_path / "r.sqlite") as store:
        start_run(store, run, {})
        finish(store, run.run_id, history=HISTORY)
    return ["run", "--method", str(tmp_path / "method.yaml"), "--protocol", str(tmp_path / "protocol.yaml"),
            "--quick", "--folds", "1", "--db", str(tmp_path / "r.sqlite")]


def test_run_on_a_damaged_database_stops_before_training_and_writes_nothing(tiniest, tmp_path):
    db = tmp_path / "r.sqlite"
    damage_history(db)
    before = sha256(db)
    result = runner.invoke(app, tiniest)  # its one run is done: it would be skipped
    assert result.exit_code == 2 and "skipping" not in result.stdout
    assert result.stderr.startswith(f"error: {db}: results database damaged (quick_check: ")
    assert len(result.stderr.splitlines()) == 1 and sha256(db) == before


def unwritable() -> Path:
    """A folder no file can be created in, even by root (/sys), else skip."""
    try:
        with open("/sys/.aunce-bench-write-test", "x"):
            pass
    except OSError:
        return Path("/sys")
    os.remove("/sys/.aunce-bench-write-test")
    pytest.skip("/sys is writable here")


def test_run_with_an_unwritable_predictions_folder_stops_before_training(tiniest, tmp_path):
    predictions = tmp_path / "r.predictions"
    shutil.rmtree(predictions)
    predictions.symlink_to(unwritable(), target_is_directory=True)
    message = (f"{predictions}: cannot write run predictions there (Permission denied); make the folder writable, "
               "or pass a --db in a writable folder")
    with ResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(UserError) as error:
            store.check_ready()
        assert one_line(error) == message
        start(store, "new")
        with pytest.raises(UserError) as error:  # were it writable when checked, still one line after training
            finish(store, "new")
        assert one_line(error) == message and store.status("new") == "running"
    result = runner.invoke(app, tiniest)
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n"


def unopenable_log(db: Path) -> None:
    """Folders where SQLite's -wal and -shm files go: it can neither create nor open them, as in a read-only
    folder."""
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").mkdir()


def test_a_store_sqlite_cannot_write_beside_opens_read_only(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    before = sha256(db)
    unopenable_log(db)
    with ResultStore(db) as store:
        assert store.read_only and [run["run_id"] for run in store.runs()] == ["r1", "r2"]
        assert store.au_metrics("r1")["AU12"]["f1"] == 0.5 and store.predictions("r1").num_rows == 3
        with pytest.raises(UserError) as error:
            store.check_ready()
        assert one_line(error) == (f"{db}: cannot write the results database (opened read-only: SQLite cannot write "
                                   "beside it); pass a --db in a writable folder (SQLite also writes -wal and -shm "
                                   "files there)")
        with pytest.raises(UserError) as error:
            start(store, "new")
        assert one_line(error).startswith(f"{db}: cannot write the results database (attempt to write a readonly "
                                          "database)")
    result = runner.invoke(app, ["results", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert [run["run_id"] for run in json.loads(result.stdout)] == ["r1", "r2"]
    assert sha256(db) == before


def test_a_read_only_store_of_an_older_schema_is_refused_with_one_line(tmp_path):
    db = tmp_path / "r.sqlite"
    two_runs(db)
    with connected(db) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN metrics_sha256")
        conn.execute("PRAGMA user_version = 3")
    unopenable_log(db)
    with pytest.raises(UserError) as error:
        ResultStore(db)
    assert one_line(error) == (f"{db}: results database has schema version 3, and upgrading it to 4 needs a writable "
                               "folder; copy it with r.predictions to a writable folder and pass that --db")


def test_results_read_a_store_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    two_runs(folder / "r.sqlite")
    command = as_user([sys.executable, "-m", "aunce_bench.cli", "results", "--db", str(folder / "r.sqlite")])
    folder.chmod(0o555)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env=os.environ | {"OMP_NUM_THREADS": "1"})
    finally:
        folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert [run["run_id"] for run in json.loads(result.stdout)] == ["r1", "r2"]
    assert sorted(entry.name for entry in folder.iterdir()) == ["r.predictions", "r.sqlite"]
