"""ResultStore: the one store of runs, a SQLite database plus per-frame predictions as Parquet.

`runs` holds one row per run (status running -> done | failed, the resolved spec and provenance as JSON; an
interrupted run's row is removed, see discard_run),
`au_metrics` the per-AU metrics per group ("all" or a pose bin such as "pose:yaw+20_pitch+0"), and
`noise_rates` the realised label-noise rates. Predictions live in `<db stem>.predictions/<run_id>.parquet`
beside the database. A run becomes "done" only in the transaction that stores its metrics, after its
Parquet file is in place, so nothing half-written is ever marked complete; the file's sha256 is stored with
the run and checked on every read. That transaction also records a digest of the run's stored numbers
(`metrics_sha256`, see _metrics_digest), checked, with its mean F1 against its per-AU F1, on every read of a
done run. Several processes may share one store (WAL journal, 30 s busy timeout, one short transaction per
call); opening writes nothing unless the schema needs creating or upgrading. A database SQLite cannot write
(a read-only folder) opens read-only. NaN is stored as NULL and read back as None. A damaged, locked or
unwritable database raises a one-line UserError naming it; `check_ready` finds such problems before a plan
trains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import shlex
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aunce_bench.errors import UserError
from aunce_bench.paths import probe_write
from aunce_bench.specs import Init

SCHEMA_VERSION = 4
STATUSES = ("running", "done", "failed")
METRIC_FIELDS = ("f1", "precision", "recall", "accuracy", "auc", "support", "positives")
COUNT_FIELDS = ("support", "positives")
NOISE_FIELDS = ("rho_10", "rho_01", "n_flipped")
HISTORY_FIELDS = ("stage", "epoch", "loss", "lr", "val_f1", "images_per_s")
BUSY_TIMEOUT_S = 30.0

# Per epoch of each training stage of a run, in the order trained.
_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS history (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    loss REAL,
    lr REAL,
    val_f1 REAL,
    images_per_s REAL,
    PRIMARY KEY (run_id, stage, epoch)
)
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    protocol TEXT NOT NULL,
    dataset TEXT NOT NULL,
    budget,
    fold INTEGER,
    seed INTEGER,
    noise TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    mean_f1 REAL,
    chance_f1 REAL,
    wall_s REAL,
    error TEXT,
    spec_json TEXT NOT NULL,
    provenance_json TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    predictions_sha256 TEXT,
    metrics_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS runs_order ON runs (protocol, method, noise, fold, seed, started_at);
CREATE TABLE IF NOT EXISTS au_metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    grp TEXT NOT NULL,
    au TEXT NOT NULL,
    f1 REAL,
    precision REAL,
    recall REAL,
    accuracy REAL,
    auc REAL,
    support INTEGER,
    positives INTEGER,
    PRIMARY KEY (run_id, grp, au)
);
CREATE TABLE IF NOT EXISTS noise_rates (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    au TEXT NOT NULL,
    rho_10 REAL,
    rho_01 REAL,
    n_flipped INTEGER,
    PRIMARY KEY (run_id, au)
);
""" + _HISTORY_TABLE
# What a done run's digest covers (see _metrics_digest): which run it is, and its numbers.
DIGESTED_RUN_FIELDS = ("run_id", "method", "protocol", "dataset", "budget", "fold", "seed", "noise", "mean_f1",
                       "chance_f1", "predictions_sha256")


def _metrics_digest(run: Mapping, metric_rows: list[Mapping], noise_rows: list[Mapping]) -> str:
    """sha256 of a run's DIGESTED_RUN_FIELDS, all its au_metrics rows (every group) and noise_rates rows, as
    stored (rows sorted by key; floats exactly, by repr)."""
    content = [[run[name] for name in DIGESTED_RUN_FIELDS],
               sorted([row["grp"], row["au"], *(row[name] for name in METRIC_FIELDS)] for row in metric_rows),
               sorted([row["au"], *(row[name] for name in NOISE_FIELDS)] for row in noise_rows)]
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def _stored_digest(conn: sqlite3.Connection, run_id: str) -> str:
    """_metrics_digest of the run as the database holds it now."""
    run = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    metric_rows = conn.execute("SELECT * FROM au_metrics WHERE run_id = ?", (run_id,)).fetchall()
    noise_rows = conn.execute("SELECT * FROM noise_rates WHERE run_id = ?", (run_id,)).fetchall()
    return _metrics_digest(run, metric_rows, noise_rows)


def _digest_done_runs(conn: sqlite3.Connection) -> None:
    """Record the digest of each run done before digests were: what it holds at this upgrade is what later reads
    are checked against (the upgrade cannot know whether it was intact before; its mean F1 is still checked
    against its per-AU F1 on every read)."""
    for (run_id,) in conn.execute("SELECT run_id FROM runs WHERE status = 'done'").fetchall():
        conn.execute("UPDATE runs SET metrics_sha256 = ? WHERE run_id = ?", (_stored_digest(conn, run_id), run_id))


# What brings a database of schema version N (the key) to N + 1, statements or functions of the connection; a
# new database gets _SCHEMA.
_MIGRATIONS = {1: ("ALTER TABLE runs ADD COLUMN predictions_sha256 TEXT",),  # NULL: stored before checksums
               2: (_HISTORY_TABLE,),  # runs stored before it have no history
               3: ("ALTER TABLE runs ADD COLUMN metrics_sha256 TEXT", _digest_done_runs)}
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_UNWRITABLE = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_IOERR,
               sqlite3.SQLITE_FULL)


class DamagedPredictions(UserError):
    """A run's predictions file no longer matches what finish_run wrote, or is no Parquet file: redo the run."""


class DamagedMetrics(UserError):
    """A done run's stored numbers no longer match the digest recorded when it finished, or its mean F1 is not
    the mean of its per-AU F1: redo the run."""


def _code(error: sqlite3.DatabaseError) -> int:
    """The primary result code of an SQLite error (0 where it has none)."""
    return (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF


def _damaged_database(path: Path, detail: str) -> str:
    return (f"{path}: results database damaged ({detail}); restore it from a copy or pass another --db "
            "(the runs' predictions beside it are intact)")


def _unwritable_database(path: Path, detail: str) -> str:
    return (f"{path}: cannot write the results database ({detail}); pass a --db in a writable folder "
            "(SQLite also writes -wal and -shm files there)")


def _database_problem(path: Path, error: sqlite3.DatabaseError) -> str | None:
    """One line on what `error` says about the database at `path` and what to do; None for errors that are
    not the database's (a bug in a query, a constraint)."""
    code = _code(error)
    if code == sqlite3.SQLITE_NOTADB:
        return f"{path}: not a results database ({error}); pass another --db"
    if code == sqlite3.SQLITE_CORRUPT:
        return _damaged_database(path, str(error))
    if code in _BUSY:
        return (f"{path}: results database stayed locked for {BUSY_TIMEOUT_S:g} s ({error}); run fewer "
                "processes that write to one --db at a time")
    if code in _UNWRITABLE:
        return _unwritable_database(path, str(error))
    return None


def _one_line_errors(method):
    """`method` with failures of the database itself (damaged, locked, unwritable) raised as one-line UserErrors."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            problem = _database_problem(self.path, error)
            if problem is None:
                raise
            raise UserError(problem) from error

    return guarded


def _real(value: Any) -> float | None:
    """A float for SQLite: None for missing or non-finite values (NaN is stored as NULL)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    value = _real(value)
    return None if value is None else int(value)


def _plain(value: Any) -> Any:
    """`value` with numpy types, tuples and non-finite floats made plain JSON (NaN -> None)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), allow_nan=False, default=str, sort_keys=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _column(values: Any) -> pa.Array:
    """A Parquet column: 1-D arrays as they are, 2-D arrays [N, K] as fixed-size lists of K values."""
    array = np.asarray(values)
    if array.ndim == 1:
        return pa.array(array)
    if array.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    raise ValueError(f"prediction columns must be 1-D or 2-D arrays, got shape {array.shape}")


def column_array(table: pa.Table, name: str) -> np.ndarray:
    """A numeric prediction column (no nulls) as a NumPy array, through DLPack: pyarrow's to_numpy() imports
    pandas, a third of a second that a report does not otherwise spend."""
    return np.from_dlpack(table.column(name).combine_chunks())


class ResultStore:
    """Runs, per-AU metrics, noise rates and predictions of one results database."""

    @_one_line_errors
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.predictions_dir = self.path.parent / f"{self.path.stem}.predictions"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"{self.path}: cannot create its folder ({error.strerror}); pass a --db in a writable "
                            "folder") from error
        self.read_only = False  # opened read-only: SQLite cannot write the database (see _open_read_only)
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            if _code(error) not in _UNWRITABLE or not self.path.is_file():
                problem = _database_problem(self.path, error)
                raise UserError(problem or f"{self.path}: not a usable results database ({error}); pass another --db"
                                ) from error
            self._open_read_only(error)

    def _connect(self, target: str | Path, uri: bool = False) -> None:
        self._conn = sqlite3.connect(target, timeout=BUSY_TIMEOUT_S, isolation_level=None, uri=uri)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _open(self) -> None:
        """Connect read-write in WAL mode; create or upgrade the schema where the database needs it."""
        self._connect(self.path)
        try:
            self._enable_wal()
            self._conn.execute("PRAGMA foreign_keys = ON")
            if self._schema_version() == SCHEMA_VERSION:
                return
            with self._transaction() as conn:
                version = self._schema_version()  # again under the write lock: another process may have upgraded
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                else:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[step]:
                            conn.execute(statement) if isinstance(statement, str) else statement(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise

    def _open_read_only(self, unwritable: sqlite3.DatabaseError) -> None:
        """Connect read-only to a database SQLite cannot write (`unwritable` says why), so that it can still be
        read: mode=ro, else, where its folder cannot hold the -shm file SQLite needs, immutable=1, unless a
        write-ahead log waits beside it (immutable would ignore it). It must have this schema version."""
        wal = Path(f"{self.path}-wal")
        modes = ["mode=ro"] + ([] if wal.is_file() and wal.stat().st_size else ["immutable=1"])
        for mode in modes:
            try:
                self._connect(f"{self.path.absolute().as_uri()}?{mode}", uri=True)
                version = self._schema_version()
            except sqlite3.DatabaseError as error:
                self._conn.close()
                if _code(error) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):  # no -shm file, none made
                    continue
                raise
            except BaseException:
                self._conn.close()
                raise
            self.read_only = True
            if version != SCHEMA_VERSION:
                self._conn.close()
                raise UserError(f"{self.path}: results database has schema version {version}, and upgrading it to "
                                f"{SCHEMA_VERSION} needs a writable folder; copy it with {self.predictions_dir.name} "
                                "to a writable folder and pass that --db")
            return
        raise UserError(_unwritable_database(self.path, str(unwritable)))

    def _schema_version(self) -> int:
        """The database's schema version; a newer one than this aunce-bench reads is a one-line UserError."""
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: results database has schema version {version}, this aunce-bench reads up "
                            f"to {SCHEMA_VERSION}; upgrade aunce-bench or pass another --db")
        return version

    def _enable_wal(self) -> None:
        """Switch to WAL; SQLite answers "locked" at once (no busy wait) while another process switches."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back if it raises (unless SQLite already has)."""
        self._conn.execute(begin)
        try:
            yield self._conn
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @_one_line_errors
    def check_ready(self) -> None:
        """What a plan needs of the store before it trains, else a one-line UserError: the database passes
        quick_check, has this schema version and can be written (file and folder), and the predictions folder
        can be written. Writes nothing to the database."""
        if self.read_only:
            raise UserError(_unwritable_database(self.path, "opened read-only: SQLite cannot write beside it"))
        problem = self._conn.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise UserError(_damaged_database(self.path, f"quick_check: {' '.join(problem.split())}"))
        if (version := self._schema_version()) != SCHEMA_VERSION:
            raise UserError(f"{self.path}: results database has schema version {version}, this aunce-bench writes "
                            f"{SCHEMA_VERSION}; pass another --db")
        try:
            probe_write(self.path.parent)
        except OSError as error:
            raise UserError(_unwritable_database(self.path, error.strerror or str(error))) from error
        if not os.access(self.path, os.W_OK):  # not opened: closing a file SQLite has open drops its locks on it
            raise UserError(_unwritable_database(self.path, "the file is read-only"))
        try:
            probe_write(self.predictions_dir)
        except OSError as error:
            raise self._unwritable_predictions(error) from error

    def _unwritable_predictions(self, error: OSError) -> UserError:
        return UserError(f"{self.predictions_dir}: cannot write run predictions there ({error.strerror or error}); "
                         "make the folder writable, or pass a --db in a writable folder")

    def prediction_path(self, run_id: str) -> Path:
        """Where the run's per-frame test predictions are (Parquet; exists once the run is done)."""
        return self.predictions_dir / f"{run_id}.parquet"

    @_one_line_errors
    def status(self, run_id: str) -> str | None:
        """The run's status ("running", "done", "failed"), None for an unknown run."""
        row = self._conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else row["status"]

    @_one_line_errors
    def provenance(self, run_id: str) -> dict | None:
        """The run's stored provenance (start_run's, merged with finish_run's update), None for an unknown run."""
        row = self._conn.execute("SELECT provenance_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else json.loads(row["provenance_json"])

    @_one_line_errors
    def start_run(
        self,
        run_id: str,
        *,
        method: str,
        protocol: str,
        dataset: str,
        budget: str | int | float | None,
        fold: int | None,
        seed: int | None,
        noise: str,
        spec: dict,
        provenance: dict,
        redo: bool = False,
    ) -> None:
        """Record the run as "running", replacing a failed or interrupted attempt, or with `redo` a done run, with
        its rows and predictions."""
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-'")
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is not None and row["status"] == "done" and not redo:
                raise ValueError(f"run {run_id} is already done; it is restarted only with redo=True")
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
            conn.execute(
                "INSERT INTO runs (run_id, method, protocol, dataset, budget, fold, seed, noise, status, "
                "spec_json, provenance_json, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (
                    run_id,
                    method,
                    protocol,
                    dataset,
                    _plain(budget),
                    None if fold is None else int(fold),
                    None if seed is None else int(seed),
                    noise,
                    _dumps(spec),
                    _dumps(provenance),
                    _now(),
                ),
            )
            try:
                self.prediction_path(run_id).unlink(missing_ok=True)
            except OSError as error:
                raise self._unwritable_predictions(error) from error

    @_one_line_errors
    def finish_run(
        self,
        run_id: str,
        *,
        metrics: dict[str, dict[str, dict[str, float]]],
        mean_f1: float,
        chance_f1: float,
        wall_s: float,
        predictions: dict[str, np.ndarray],
        noise_rates: dict[str, dict[str, float]] | None = None,
        provenance_update: dict | None = None,
        history: list[dict] | None = None,
    ) -> None:
        """Store predictions, then metrics, noise rates, history and provenance, and mark the run "done", atomically.

        `metrics` maps group -> AU name -> {f1, precision, recall, accuracy, auc, support, positives} and
        must hold group "all"; `provenance_update` is merged (top-level keys) into the stored provenance;
        `history` holds one {stage, epoch, loss, lr, val_f1, images_per_s} per epoch of each training stage.
        """
        status = self.status(run_id)
        if status != "running":
            raise ValueError(f"run {run_id} is {status or 'unknown'}; only a running run can finish")
        if "all" not in metrics:
            raise ValueError(f"run {run_id}: metrics need group 'all', got {sorted(metrics)}")
        for group, per_au in metrics.items():
            for au, values in per_au.items():
                unknown = set(values) - set(METRIC_FIELDS)
                if unknown:
                    raise ValueError(f"run {run_id}: unknown metrics {sorted(unknown)} for {group}/{au}")
        table = pa.table({name: _column(values) for name, values in predictions.items()})
        predictions_sha256 = self._write_predictions(run_id, table)
        with self._transaction() as conn:
            row = conn.execute("SELECT status, provenance_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] != "running":
                raise ValueError(f"run {run_id} stopped running before it could finish")
            self._insert_metrics(conn, run_id, metrics)
            conn.executemany(
                "INSERT INTO noise_rates (run_id, au, rho_10, rho_01, n_flipped) VALUES (?, ?, ?, ?, ?)",
                [
                    (run_id, au, _real(rates.get("rho_10")), _real(rates.get("rho_01")), _count(rates.get("n_flipped")))
                    for au, rates in (noise_rates or {}).items()
                ],
            )
            conn.executemany(
                "INSERT INTO history (run_id, stage, epoch, loss, lr, val_f1, images_per_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, str(entry["stage"]), int(entry["epoch"]), *(_real(entry.get(name)) for name in HISTORY_FIELDS[2:]))
                 for entry in history or []],
            )
            provenance = json.loads(row["provenance_json"]) | _plain(provenance_update or {})
            conn.execute(
                "UPDATE runs SET status = 'done', error = NULL, mean_f1 = ?, chance_f1 = ?, wall_s = ?, "
                "provenance_json = ?, finished_at = ?, predictions_sha256 = ? WHERE run_id = ?",
                (_real(mean_f1), _real(chance_f1), _real(wall_s), _dumps(provenance), _now(), predictions_sha256,
                 run_id),
            )
            conn.execute("UPDATE runs SET metrics_sha256 = ? WHERE run_id = ?", (_stored_digest(conn, run_id), run_id))

    def _write_predictions(self, run_id: str, table: pa.Table) -> str:
        """Write the Parquet file atomically (a temporary file in the same folder, then os.replace); its sha256."""
        try:
            self.predictions_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.predictions_dir, prefix=f".{run_id}.", suffix=".tmp")
        except OSError as error:
            raise self._unwritable_predictions(error) from error
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            sha256 = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
            os.replace(tmp, self.prediction_path(run_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256

    @staticmethod
    def _insert_metrics(conn: sqlite3.Connection, run_id: str, metrics: dict[str, dict[str, dict[str, float]]]) -> None:
        conn.executemany(
            f"INSERT INTO au_metrics (run_id, grp, au, {', '.join(METRIC_FIELDS)}) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(METRIC_FIELDS))})",
            [
                (
                    run_id,
                    group,
                    au,
                    *((_count if name in COUNT_FIELDS else _real)(values.get(name)) for name in METRIC_FIELDS),
                )
                for group, per_au in metrics.items()
                for au, values in per_au.items()
            ],
        )

    @_one_line_errors
    def fail_run(self, run_id: str, reason: str, wall_s: float | None = None) -> None:
        """Mark a running (or failed) run "failed" with `reason`; a done run is never demoted."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row["status"] == "done":
                raise ValueError(f"run {run_id} is {row['status'] if row else 'unknown'}; it cannot be failed")
            conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, wall_s = COALESCE(?, wall_s), finished_at = ? "
                "WHERE run_id = ?",
                (reason, _real(wall_s), _now(), run_id),
            )

    @_one_line_errors
    def discard_run(self, run_id: str) -> None:
        """Remove a running run with its rows, as if it had never started: an interrupted run is neither done nor
        failed, and the next plan runs it again. A run in any other status stays."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM runs WHERE run_id = ? AND status = 'running'", (run_id,))

    def _read_checked(self, conn: sqlite3.Connection, where: str, params: dict
                      ) -> tuple[list[sqlite3.Row], dict[str, list[sqlite3.Row]], dict[str, list[sqlite3.Row]]]:
        """The runs rows matching `where` (in the order of `runs`), and their au_metrics and noise_rates rows by run
        id (in stored order); every done run among them checked (see _check)."""
        runs = conn.execute(
            f"SELECT * FROM runs WHERE {where} ORDER BY protocol, method, noise, fold, seed, started_at, run_id", params
        ).fetchall()
        metric_rows, noise_rows = (
            _by_run(conn.execute(f"SELECT * FROM {table} WHERE run_id IN (SELECT run_id FROM runs WHERE {where}) "
                                 "ORDER BY rowid", params))
            for table in ("au_metrics", "noise_rates"))
        for run in runs:
            if run["status"] == "done":
                self._check(run, metric_rows.get(run["run_id"], []), noise_rows.get(run["run_id"], []))
        return runs, metric_rows, noise_rows

    def _check(self, run: sqlite3.Row, metric_rows: list[sqlite3.Row], noise_rows: list[sqlite3.Row]) -> None:
        """Raise DamagedMetrics where a done run's rows no longer match the digest recorded when it finished, or its
        mean F1 is not the mean of its per-AU F1 (group "all"), as metrics.mean_f1 defines it."""
        if run["metrics_sha256"] is None:
            raise self._damaged_metrics(run, "have no digest (written outside aunce-bench)")
        if _metrics_digest(run, metric_rows, noise_rows) != run["metrics_sha256"]:
            raise self._damaged_metrics(run, "differ from the digest recorded when it finished")
        f1 = [row["f1"] for row in metric_rows if row["grp"] == "all"]
        if run["mean_f1"] is not None and f1 and None not in f1:
            mean = math.fsum(f1) / len(f1)
            if not math.isclose(run["mean_f1"], mean, rel_tol=1e-9, abs_tol=1e-12):
                raise self._damaged_metrics(run, f"hold mean F1 {run['mean_f1']!r}, not the mean {mean!r} of its "
                                                 "per-AU F1")

    def _damaged_metrics(self, run: sqlite3.Row, problem: str) -> DamagedMetrics:
        spec = json.loads(run["spec_json"])
        options = {"--method": run["method"], "--protocol": run["protocol"], "--budget": run["budget"],
                   "--folds": run["fold"], "--seeds": run["seed"], "--noise": run["noise"],
                   "--selection": spec.get("selection"), "--init": spec.get("method", {}).get("model", {}).get("init"),
                   "--db": self.path}
        command = ["aunce-bench", "run", *(str(part) for option, value in options.items() if value is not None
                                           for part in (option, value)), "--redo"]
        return DamagedMetrics(f"{self.path}: stored metrics of run {run['run_id']} ({_which(run)}) {problem} (damaged "
                              f"or modified); redo it with: {shlex.join(command)}")

    @_one_line_errors
    def runs(self, *, method: str | None = None, protocol: str | None = None, status: str | None = None) -> list[dict]:
        """One JSON-ready dict per run, ordered by protocol, method, noise, fold, seed, start time; a done run whose
        stored numbers are damaged is a DamagedMetrics.

        Keys: run_id, method, protocol, dataset, budget, fold, seed, noise, status, mean_f1, per_au_f1 (AU ->
        F1 of group "all", in stored order), chance_f1, wall_s, error, groups (other group -> AU -> F1),
        noise_rates (AU -> {rho_10, rho_01, n_flipped}), history (per epoch of each training stage, in order:
        {stage, epoch, loss, lr, val_f1, images_per_s}), init (backbone initialisation), init_hash (what pins
        its weights), selection, spec, provenance.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        where = (
            "(:method IS NULL OR method = :method) AND (:protocol IS NULL OR protocol = :protocol) "
            "AND (:status IS NULL OR status = :status)"
        )
        params = {"method": method, "protocol": protocol, "status": status}
        with self._transaction("BEGIN") as conn:
            rows, metric_rows, noise_rows = self._read_checked(conn, where, params)
            history = _by_run(conn.execute(
                f"SELECT * FROM history WHERE run_id IN (SELECT run_id FROM runs WHERE {where}) ORDER BY rowid", params
            ))
        result = []
        for row in rows:
            groups: dict[str, dict[str, float | None]] = {}
            for metric in metric_rows.get(row["run_id"], []):
                groups.setdefault(metric["grp"], {})[metric["au"]] = metric["f1"]
            spec = json.loads(row["spec_json"])
            result.append(
                {
                    "run_id": row["run_id"],
                    "method": row["method"],
                    "protocol": row["protocol"],
                    "dataset": row["dataset"],
                    "budget": row["budget"],
                    "fold": row["fold"],
                    "seed": row["seed"],
                    "noise": row["noise"],
                    "status": row["status"],
                    "mean_f1": row["mean_f1"],
                    "per_au_f1": groups.get("all", {}),
                    "chance_f1": row["chance_f1"],
                    "wall_s": row["wall_s"],
                    "error": row["error"],
                    "groups": {group: per_au for group, per_au in groups.items() if group != "all"},
                    "noise_rates": {noise["au"]: {name: noise[name] for name in NOISE_FIELDS}
                                    for noise in noise_rows.get(row["run_id"], [])},
                    "history": [{name: entry[name] for name in HISTORY_FIELDS}
                                for entry in history.get(row["run_id"], [])],
                    "init": str(Init.of(spec.get("method", {}).get("model", {}).get("init"))),
                    "init_hash": spec.get("init_hash"),
                    "selection": spec.get("selection"),
                    "spec": spec,
                    "provenance": json.loads(row["provenance_json"]),
                }
            )
        return result

    @_one_line_errors
    def au_metrics(self, run_id: str, group: str = "all") -> dict[str, dict[str, float | None]]:
        """AU -> {f1, precision, recall, accuracy, auc, support, positives} of one group (None where NaN); a done run
        whose stored numbers are damaged is a DamagedMetrics."""
        with self._transaction("BEGIN") as conn:
            _, metric_rows, _ = self._read_checked(conn, "run_id = :run_id", {"run_id": run_id})
        return {row["au"]: {name: row[name] for name in METRIC_FIELDS}
                for row in metric_rows.get(run_id, []) if row["grp"] == group}

    @_one_line_errors
    def positive_rates(self) -> dict[str, dict[str, float | None]]:
        """run_id -> AU -> share of the valid test frames where the AU is present (group "all"); a done run whose
        stored numbers are damaged is a DamagedMetrics."""
        with self._transaction("BEGIN") as conn:
            _, metric_rows, _ = self._read_checked(conn, "1", {})
        rates: dict[str, dict[str, float | None]] = {}
        for run_id, rows in metric_rows.items():
            for row in rows:
                if row["grp"] == "all":
                    support = row["support"]
                    rates.setdefault(run_id, {})[row["au"]] = row["positives"] / support if support else None
        return rates

    @_one_line_errors
    def predictions(self, run_id: str, columns: list[str] | None = None) -> pa.Table:
        """The run's per-frame predictions as stored by finish_run: every column, or only `columns` (names it lacks are skipped).

        Raises FileNotFoundError where the file is missing, DamagedPredictions where it no longer matches the
        sha256 stored with the run or does not read as Parquet, DamagedMetrics where the run's stored numbers (that
        sha256 among them) are damaged.
        """
        path = self.prediction_path(run_id)
        with self._transaction("BEGIN") as conn:
            runs, _, _ = self._read_checked(conn, "run_id = :run_id", {"run_id": run_id})
        run = runs[0] if runs else None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no predictions for run {run_id} (status: {run['status'] if run else 'unknown run'}); "
                f"expected {path}"
            ) from None
        if run is not None and run["predictions_sha256"] not in (None, hashlib.sha256(data).hexdigest()):
            raise self._damaged(run_id, run, "sha256 mismatch")
        try:
            # one file: no dataset machinery (pq.read_table imports pandas)
            with pq.ParquetFile(pa.BufferReader(data)) as file:
                return file.read(columns=columns)
        except pa.ArrowException as error:
            raise self._damaged(run_id, run, "not readable as Parquet") from error

    def _damaged(self, run_id: str, run: sqlite3.Row | None, reason: str) -> DamagedPredictions:
        which = f"run {run_id}" if run is None else f"run {run_id}: {_which(run)}"
        return DamagedPredictions(f"{self.prediction_path(run_id)}: predictions damaged ({reason}); run its "
                                  f"'aunce-bench run' command again, which redoes it ({which})")

    def predictions_intact(self, run_id: str) -> bool:
        """Whether the run is done, its stored numbers match their digest, and its predictions file is there and
        matches its sha256 (for a run stored before checksums: reads as Parquet)."""
        if self.status(run_id) != "done":
            return False
        try:
            self.predictions(run_id)
        except (FileNotFoundError, DamagedPredictions, DamagedMetrics):
            return False
        return True


def _by_run(rows: Iterator[sqlite3.Row]) -> dict[str, list[sqlite3.Row]]:
    """Rows grouped by their run_id, in order."""
    grouped: dict[str, list[sqlite3.Row]] = {}
    for row in rows:
        grouped.setdefault(row["run_id"], []).append(row)
    return grouped


def _which(run: Mapping) -> str:
    """What a run is, for messages: method, protocol, budget, fold, seed and noise."""
    return (f"method {run['method']}, protocol {run['protocol']}, budget {run['budget']}, fold {run['fold']}, "
            f"seed {run['seed']}, noise {run['noise']}")
