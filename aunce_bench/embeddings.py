"""Kept test-set embeddings of a run (`aunce-bench run --keep-embeddings`), beside the result store.

`<db stem>.embeddings/<run_id>.npz` holds `z` (the trained encoder's per-AU unit vectors, float16 [N, K, D]),
`labels` (the clean test labels, int8 [N, K], -1 missing) and `aus` (names). It is written atomically (a temporary
file, then os.replace) before the run is marked done, and its sha256 is stored in the run's provenance under
"embeddings": a run without that record has no embeddings, and a file that no longer matches it is refused.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aunce_bench.errors import UserError
from aunce_bench.results import ResultStore

PROVENANCE_KEY = "embeddings"


@dataclass(frozen=True)
class KeptEmbeddings:
    z: np.ndarray  # float64 [N, K, D], unit norm per frame and AU
    labels: np.ndarray  # int [N, K] in {0, 1, -1 (missing)}
    aus: list[str]


def embeddings_path(store: ResultStore, run_id: str) -> Path:
    return store.path.parent / f"{store.path.stem}.embeddings" / f"{run_id}.npz"


def write_embeddings(store: ResultStore, run_id: str, z: np.ndarray, labels: np.ndarray, aus: list[str]) -> dict:
    """Write a run's embeddings atomically; returns the record for its provenance (file, sha256, frames, dim)."""
    path = embeddings_path(store, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{run_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, z=np.asarray(z, dtype=np.float16), labels=np.asarray(labels, dtype=np.int8),
                     aus=np.asarray(aus))
        sha256 = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"file": path.name, "sha256": sha256, "frames": int(z.shape[0]), "dim": int(z.shape[2])}


def discard_embeddings(store: ResultStore, run_id: str) -> None:
    """Remove the embeddings of an earlier attempt of the run (they belong to another encoder)."""
    embeddings_path(store, run_id).unlink(missing_ok=True)


def _matches(path: Path, record: dict | None) -> bool:
    try:
        return record is not None and hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    except FileNotFoundError:
        return False


def embeddings_intact(store: ResultStore, run_id: str) -> bool:
    """Whether the run has kept embeddings whose file matches the sha256 stored with it."""
    return _matches(embeddings_path(store, run_id), (store.provenance(run_id) or {}).get(PROVENANCE_KEY))


def run_command(run: dict, db: Path) -> str:
    """The `aunce-bench run` command that (re)does the stored run `run`, keeping its embeddings."""
    options = ["--method", run["method"], "--protocol", run["protocol"], "--budget", str(run["budget"]),
               "--folds", str(run["fold"]), "--seeds", str(run["seed"]), "--noise", run["noise"],
               "--selection", str(run["selection"]), "--init", str(run["init"]), "--db", str(db)]
    return shlex.join(["aunce-bench", "run", *options, "--keep-embeddings"])


def load_embeddings(store: ResultStore, run: dict, rerun: str | None = None) -> KeptEmbeddings:
    """The kept embeddings of the stored run `run` (a dict of `ResultStore.runs`), renormalised in float64.

    Raises a one-line UserError, naming `rerun` (default: `run_command`) as the fix, when the run is not done,
    kept none, or its file is missing or damaged."""
    run_id, rerun = run["run_id"], rerun or run_command(run, store.path)
    if run["status"] != "done":
        raise UserError(f"run {run_id} is {run['status']}, not done; run `{rerun}`")
    record = run["provenance"].get(PROVENANCE_KEY)
    if record is None:
        raise UserError(f"no embeddings kept for run {run_id}; run `{rerun}`")
    path = embeddings_path(store, run_id)
    if not path.exists():
        raise UserError(f"{path}: embeddings of run {run_id} are missing; run `{rerun}`, which redoes it")
    if not _matches(path, record):
        raise UserError(f"{path}: embeddings damaged (sha256 mismatch); run `{rerun}`, which redoes it")
    try:
        with np.load(path, allow_pickle=False) as data:
            z, labels, aus = data["z"].astype(np.float64), data["labels"].astype(np.int64), data["aus"].tolist()
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: embeddings not readable ({error}); run `{rerun}`, which redoes it") from error
    norms = np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)  # an all-zero node stays zero
    return KeptEmbeddings(z / norms, labels, aus)
