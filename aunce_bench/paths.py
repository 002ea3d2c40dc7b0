"""Where aunce-bench writes: the cache root, and a check that an output folder is writable.

Kept free of heavy imports, so that commands which only read results start fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from aunce_bench.errors import UserError


def default_cache_root() -> Path:
    return Path(os.environ.get("AUNCE_BENCH_CACHE", Path.home() / ".cache" / "aunce_bench"))


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when `folder` cannot be created or written.

    The probe file gets a unique name, so processes checking the same folder at once never remove each other's.
    """
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: it is a file, not a folder; choose a writable output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to {folder}: {error.strerror or error}; choose a writable output folder")
