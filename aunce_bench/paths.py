"""Where aunce-bench writes: the cache root, a check that an output folder is writable, the hidden work folders
beside an output folder while it is written, and a file's sha256.

Kept free of heavy imports, so that commands which only read results start fast.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from aunce_bench.errors import UserError


CACHE_VARIABLE = "AUNCE_BENCH_CACHE"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE, Path.home() / ".cache" / "aunce_bench"))


def probe_write(folder: Path) -> None:
    """Create `folder` where missing and a file in it, removed at once; OSError where either fails.

    The probe file gets a unique name, so processes checking the same folder at once never remove each other's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when `folder` cannot be created or written; for a folder in the cache, the line
    names $AUNCE_BENCH_CACHE."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: it is a file, not a folder; {_fix(folder)}")
    try:
        probe_write(folder)
    except OSError as error:
        raise UserError(f"cannot write to {folder}: {error.strerror or error}; {_fix(folder)}")


def _fix(folder: Path) -> str:
    """How to get a writable `folder`: another output folder or, in the cache, another cache root."""
    root = default_cache_root()
    if not folder.absolute().is_relative_to(root.absolute()):
        return "choose a writable output folder"
    named = (f"${CACHE_VARIABLE}={root}" if CACHE_VARIABLE in os.environ else
             f"{root} (the default; ${CACHE_VARIABLE} is not set)")
    if root.exists() and not root.is_dir():
        return f"the cache root {named} is a file; set ${CACHE_VARIABLE} to a writable folder"
    return f"it is in the cache root {named}; make that writable, or set ${CACHE_VARIABLE} to a writable folder"


# What a writer does in a hidden folder beside its output: build it (partial), move an old copy aside
# (replaced), or hold an Arrow cache while writing frames (arrow).
WORK_KINDS = ("partial", "replaced", "arrow")


def work_folder(output: Path, kind: str) -> Path:
    """A fresh hidden folder beside `output`, `.NAME.KIND-xxxxxxxx`, on the same disk so it can be renamed there.
    It gets the permissions of any new folder (the umask's), not mkdtemp's owner-only ones: renamed into place, it
    is what the people sharing a data root read."""
    if kind not in WORK_KINDS:
        raise ValueError(f"kind must be one of {WORK_KINDS}, got {kind!r}")
    while True:
        folder = output.parent / f".{output.name}.{kind}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def remove_left_work(output: Path) -> None:
    """Remove the work folders of `output` that a writer killed before cleaning up (out of memory, SIGKILL) left
    behind; they can hold gigabytes. Call it only holding the lock every writer of `output` holds, so that no
    work folder of `output` is in use."""
    made_by_work_folder = re.compile(rf"\.{re.escape(output.name)}\.({'|'.join(WORK_KINDS)})-[a-z0-9_]{{8}}")
    if output.parent.is_dir():
        for sibling in output.parent.iterdir():
            if made_by_work_folder.fullmatch(sibling.name) and sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
