"""FrameIndex: the one table of frames every data source produces, stored with HF `datasets` (Arrow).

A row is one face image with its labels (one column per AU in `aus`, 1 present, 0 absent, -1 missing),
intensities (per AU in `intensity_aus`, -1 where unknown), subject, sequence, frame number, head pose and
source dataset. On disk a FrameIndex is a `save_to_disk` folder plus `frame_index.json`, written last:
a folder without it was interrupted and is never loaded as complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from aunce_bench.errors import UserError

MARKER_FILE = "frame_index.json"
MISSING_LABEL = -1


def frame_features(n_labels: int, n_intensities: int) -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "labels": datasets.List(datasets.Value("int8"), length=n_labels),
            # Arrow has no fixed-size list of length 0: without intensities the lists are empty, of no fixed size
            "intensities": datasets.List(datasets.Value("float32"), length=n_intensities or -1),
            "subject": datasets.Value("string"),
            "sequence": datasets.Value("string"),
            "frame": datasets.Value("int32"),
            "yaw": datasets.Value("float32"),
            "pitch": datasets.Value("float32"),
            "roll": datasets.Value("float32"),
            "pose_bin": datasets.Value("string"),
            "dataset": datasets.Value("string"),
        }
    )


@dataclass
class FrameIndex:
    """A table of frames and what its columns mean."""

    frames: datasets.Dataset
    aus: tuple[int, ...]
    intensity_aus: tuple[int, ...]
    name: str
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def au_names(self) -> list[str]:
        return [f"AU{au}" for au in self.aus]

    def label_matrix(self) -> np.ndarray:
        """Labels as int8 [N, K] (1, 0, or -1 for missing)."""
        return np.asarray(self.frames.with_format("numpy")["labels"], dtype=np.int8).reshape(len(self), len(self.aus))

    def intensity_matrix(self) -> np.ndarray:
        """Intensities as float32 [N, len(intensity_aus)] (-1 where unknown)."""
        if not self.intensity_aus:
            return np.zeros((len(self), 0), dtype=np.float32)
        values = self.frames.with_format("numpy")["intensities"]
        return np.asarray(values, dtype=np.float32).reshape(len(self), len(self.intensity_aus))

    def save(self, path: Path) -> None:
        """Write atomically: a temporary sibling folder is renamed into place once complete."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        progress_bars = not datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # callers show their own progress
        try:
            self.frames.save_to_disk(str(staging / "frames"))
            marker = {"name": self.name, "aus": list(self.aus), "intensity_aus": list(self.intensity_aus),
                      "rows": len(self), "metadata": self.metadata}
            (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
            if path.exists():
                shutil.rmtree(path)
            os.replace(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if progress_bars:
                datasets.enable_progress_bars()

    @classmethod
    def load(cls, path: Path) -> "FrameIndex":
        path = Path(path)
        marker_path = path / MARKER_FILE
        if not marker_path.is_file():
            raise UserError(f"{path}: not a complete frame index (no {MARKER_FILE}); generate or prepare it again")
        marker = read_marker(path)
        frames = datasets.load_from_disk(str(path / "frames"))
        return cls(frames, tuple(marker["aus"]), tuple(marker["intensity_aus"]), marker["name"], marker["metadata"])


def is_complete(path: Path) -> bool:
    return (Path(path) / MARKER_FILE).is_file()


def read_marker(path: Path) -> dict:
    """The completion marker of a complete FrameIndex folder: name, aus, intensity_aus, rows, metadata."""
    return json.loads((Path(path) / MARKER_FILE).read_text())
