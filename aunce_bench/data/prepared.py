"""Prepared real datasets under the data root: where they live, what they hold, and how a budget loads them.

`aunce-bench prepare` writes each dataset as a FrameIndex at `<data root>/<dataset>` (`bp4d`, `disfa`, ...).
The data root is `--data-root`, else `$AUNCE_BENCH_DATA`, else `~/.cache/aunce_bench/data`. A folder without
the index's completion marker was interrupted and is never used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aunce_bench.data.formats import prepare_command
from aunce_bench.data.index import MARKER_FILE, is_complete, read_marker
from aunce_bench.errors import UserError

DATA_ROOT_ENV = "AUNCE_BENCH_DATA"


def data_root(explicit: Path | None = None) -> Path:
    """`explicit`, else $AUNCE_BENCH_DATA, else ~/.cache/aunce_bench/data."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(DATA_ROOT_ENV, Path.home() / ".cache" / "aunce_bench" / "data"))


@dataclass(frozen=True)
class PreparedInfo:
    """What a prepared dataset holds, read from its completion marker (no frames are loaded)."""

    folder: Path
    aus: list[int]
    intensity_aus: list[int]
    subjects: list[str]
    partitions: dict[str, list[str]]
    pose_bins: list[str]
    fingerprint: str


def prepared_info(root: Path, dataset: str) -> PreparedInfo:
    """The prepared `dataset` under `root`, or a one-line error saying where it looked and what to run."""
    folder = Path(root) / dataset
    if not folder.exists():
        raise UserError(f"dataset {dataset} is not prepared: no {folder} under the data root {root} (--data-root or "
                        f"${DATA_ROOT_ENV}); prepare it with: {prepare_command(dataset, root)}")
    if not is_complete(folder):
        raise UserError(f"dataset {dataset} at {folder} is incomplete (no {MARKER_FILE}: an interrupted or failed "
                        f"prepare); prepare it again with: {prepare_command(dataset, root)} --force")
    marker = read_marker(folder, f"{prepare_command(dataset, root)} --force")
    metadata = marker["metadata"]
    if metadata.get("source") != "prepared":
        raise UserError(f"{folder} holds a {metadata.get('source', 'unknown')} frame index, not a prepared dataset; "
                        f"prepare it with: {prepare_command(dataset, root)} --force")
    return PreparedInfo(folder, marker["aus"], marker["intensity_aus"], metadata["subjects"],
                        metadata["partitions"], metadata["pose_bins"], metadata["fingerprint"])
