"""Where aunce-bench writes: the cache root, a check that an output folder is writable, and the hidden work
folders beside an output folder while it is written.

Kept free of heavy imports, so that commands which only read results start fast.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from aunce_bench.errors import UserError


def default_cache_root() -> Path:
    return Path(os.environ.get("AUNCE_BENCH_CACHE", Path.home() / ".cache" / "aunce_bench"))


def probe_write(folder: Path) -> None:
    """Create `folder` where missing and a file in it, removed at once; OSError where either fails.

    The probe file gets a unique name, so processes checking the same folder at once never remove each other's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when `folder` cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: it is a file, not a folder; choose a writable output folder")
    try:
        probe_write(folder)
    except OSError as error:
        raise UserError(f"cannot write to {folder}: {error.strerror or error}; choose a writable output folder")


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
