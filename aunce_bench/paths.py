"""Where aunce-bench writes: the cache root, and a check that an output folder is writable.

Kept free of heavy imports, so that commands which only read results start fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from aunce_bench.errors import UserError


def default_cache_root() -> Path:
    return Path(os.environ.get("AUNCE_BENCH_CACHE", Path.home() / ".cache" / "aunce_bench"))


def check_writable(folder: Path) -> None:
    """Fail early, with one line, when `folder` cannot be created or written."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write to {folder}: it is a file, not a folder; choose a writable output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to {folder}: {error.strerror or error}; choose a writable output folder")
