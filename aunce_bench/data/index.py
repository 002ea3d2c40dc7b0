"""FrameIndex: the one table of frames every data source produces, stored with HF `datasets` (Arrow).

A row is one face image with its labels (one column per AU in `aus`, 1 present, 0 absent, -1 missing),
intensities (per AU in `intensity_aus`, -1 where unknown), subject, sequence, frame number, head pose, source
dataset and face landmarks in the image's pixels: `landmarks`, the five points of `landmarks.FIVE_POINTS` as
x0, y0, x1, y1, ... (NaN where the face was not found in that frame), `landmarks68`, the 68 iBUG points where the
source has them (SynthAU's true ones; empty otherwise), and `face_score`, the landmark detector's confidence (1 for
true landmarks, NaN where not detected). Indexes written before landmarks were stored lack the three columns.

On disk a FrameIndex is a `save_to_disk` folder plus `frame_index.json`, written last: a folder without it was
interrupted and is never loaded as complete. The marker records the sha256 of every file under `frames/`,
checked on each load, and the command that writes the folder again. A folder written before hashes were
recorded gets them on its first load (what it holds then is what later loads are checked against), or is
refused where they cannot be recorded: no folder is used unchecked. Prepared datasets also keep their alignment
gallery in the folder (`EXTRA_FILES`). Writers hold a lock beside the folder (`<folder>.lock`) and never delete
a complete folder in place: a replaced one is renamed aside first, so a reader that opened its files keeps them.
Writers build the table row by row (`arrow_table`), so no list of all images is ever held in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from filelock import FileLock

from aunce_bench.data.landmarks import FIVE_POINTS
from aunce_bench.errors import UserError
from aunce_bench.paths import file_sha256, work_folder

MARKER_FILE = "frame_index.json"
FRAMES_FOLDER = "frames"
ALIGNMENT_GALLERY = "alignment_gallery.jpg"  # prepared datasets: the least confident aligned faces
EXTRA_FILES = (ALIGNMENT_GALLERY,)
MARKER_KEYS = ("name", "aus", "intensity_aus", "rows", "metadata")
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
            "landmarks": datasets.List(datasets.Value("float32"), length=2 * len(FIVE_POINTS)),
            "landmarks68": datasets.List(datasets.Value("float32")),
            "face_score": datasets.Value("float32"),
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

    def landmarks(self) -> np.ndarray | None:
        """The five landmarks of every frame, float32 [N, 5, 2] in image pixels (NaN where not found), or None for
        an index written before landmarks were stored."""
        if "landmarks" not in self.frames.column_names:
            return None
        values = self.frames.with_format("numpy")["landmarks"]
        return np.asarray(values, dtype=np.float32).reshape(len(self), len(FIVE_POINTS), 2)

    def save(self, path: Path, rebuild: str, extra_files: dict[str, bytes] | None = None) -> None:
        """Write atomically under `writer_lock(path)`: a temporary sibling folder is renamed into place once
        complete. `rebuild` is the command that writes the folder again (for messages about a damaged copy).
        `extra_files` (name in EXTRA_FILES -> bytes) are written beside the frames. A frame index already at
        `path` is replaced; a folder holding anything else is refused."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with writer_lock(path):
            if path.exists() and not _holds_only_a_frame_index(path):
                raise UserError(f"{path} holds files that are not a frame index; choose another output folder")
            staging = work_folder(path, "partial")
            aside = None
            try:
                with _progress_bars_off():
                    self.frames.save_to_disk(str(staging / FRAMES_FOLDER))
                for name, content in (extra_files or {}).items():
                    if name not in EXTRA_FILES:
                        raise ValueError(f"{name} is not one of a frame index's extra files {EXTRA_FILES}")
                    (staging / name).write_bytes(content)
                marker = {"name": self.name, "aus": list(self.aus), "intensity_aus": list(self.intensity_aus),
                          "rows": len(self), "metadata": self.metadata, "files": _file_hashes(staging),
                          "rebuild": rebuild}
                marker["sha256"] = _marker_digest(marker)
                (staging / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
                if path.exists():  # renamed aside, not deleted in place: a reader may have its files open
                    aside = work_folder(path, "replaced")
                    os.replace(path, aside)
                os.replace(staging, path)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)

    @classmethod
    def load(cls, path: Path, rebuild: str | None = None) -> "FrameIndex":
        """Load a complete FrameIndex after checking its files against the sha256 recorded when it was saved; a
        folder written before hashes were recorded gets them now (see _record_hashes). A damaged folder is a
        one-line UserError naming the file and how to rebuild it: the command recorded in the marker, else
        `rebuild`."""
        path = Path(path)
        marker_path = path / MARKER_FILE
        if not marker_path.is_file():
            raise UserError(f"{path}: not a complete frame index (no {MARKER_FILE}); generate or prepare it again")
        marker = read_marker(path, rebuild)
        if "files" not in marker:
            return _record_hashes(path, rebuild)
        how = _how_to_rebuild(path, marker.get("rebuild") or rebuild)
        for name, expected in marker["files"].items():
            if not (path / name).is_file():
                raise UserError(f"{path / name}: missing from the frame index; {how}")
            if file_sha256(path / name) != expected:
                raise UserError(f"{path / name}: content differs from the sha256 recorded when it was written "
                                f"(damaged or modified); {how}")
        return cls(_frames(path, marker, how), tuple(marker["aus"]), tuple(marker["intensity_aus"]), marker["name"],
                   marker["metadata"])


def _frames(path: Path, marker: dict, how: str) -> datasets.Dataset:
    """The frames table of the FrameIndex folder `path`, with as many rows as its marker says."""
    try:
        frames = datasets.load_from_disk(str(path / FRAMES_FOLDER))
    except (OSError, ValueError) as error:
        raise UserError(f"{path / FRAMES_FOLDER}: unreadable frames ({_one_line(error)}); {how}")
    if len(frames) != marker["rows"]:
        raise UserError(f"{path / FRAMES_FOLDER}: {len(frames)} rows, its marker says {marker['rows']}; {how}")
    return frames


def _record_hashes(path: Path, rebuild: str | None) -> FrameIndex:
    """Load a FrameIndex folder written before content hashes were recorded, and record them in its marker (with
    `rebuild`, where known), atomically under `writer_lock(path)`: from now on its files are checked like any
    other's. Its frames must load first. Where the marker cannot be written (a read-only folder), a one-line
    UserError says how to rebuild it."""
    how = _how_to_rebuild(path, rebuild)
    try:
        with writer_lock(path):
            marker = read_marker(path, rebuild)  # again under the lock: another process may have recorded them
            if "files" in marker:
                return FrameIndex.load(path, rebuild)
            files = _file_hashes(path)
            frames = _frames(path, marker, how)
            marker = {**marker, "files": files, **({"rebuild": rebuild} if rebuild else {})}
            marker["sha256"] = _marker_digest(marker)
            fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{MARKER_FILE}-")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(json.dumps(marker, indent=2, sort_keys=True))
                shutil.copymode(path / MARKER_FILE, staged)  # as readable as the marker it replaces
                os.replace(staged, path / MARKER_FILE)
            finally:
                Path(staged).unlink(missing_ok=True)
    except OSError as error:
        raise UserError(f"{path}: written before content hashes were recorded, and they cannot be recorded now "
                        f"({error.strerror or _one_line(error)}); make it and {path.parent} writable, or {how}"
                        ) from error
    return FrameIndex(frames, tuple(marker["aus"]), tuple(marker["intensity_aus"]), marker["name"], marker["metadata"])


@contextmanager
def arrow_table(rows: Callable[[], Iterator[dict]], features: datasets.Features,
                folder: Path | None = None) -> Iterator[datasets.Dataset]:
    """The table of the rows that `rows()` yields, one at a time: `Dataset.from_generator` writes them to Arrow
    files a batch at a time in a fresh temporary cache beside `folder` (the FrameIndex folder about to be written,
    so on the same disk), memory-mapped and removed when the block exits: save the table inside the block.
    Without `folder` the cache is in the system's temporary folder and the table is read into memory, usable
    after the block. The cache is never the user's HF cache and never reused: its fingerprint is random, so
    nothing is hashed (`rows` may hold a process pool) and nothing stale comes back. A UserError raised while
    generating comes out as itself, not wrapped by `datasets`."""
    if folder is not None:
        Path(folder).parent.mkdir(parents=True, exist_ok=True)
    cache = work_folder(Path(folder), "arrow") if folder else tempfile.mkdtemp(prefix="aunce-bench-arrow-")
    try:
        with _progress_bars_off():
            try:
                table = datasets.Dataset.from_generator(
                    rows, features=features, cache_dir=cache, keep_in_memory=folder is None,
                    fingerprint=datasets.fingerprint.generate_random_fingerprint())
            except datasets.exceptions.DatasetGenerationError as error:
                if isinstance(error.__cause__, UserError):
                    raise error.__cause__ from None
                raise
        yield table
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@contextmanager
def _progress_bars_off() -> Iterator[None]:
    """HF datasets' progress bars off inside the block: callers show their own progress."""
    enabled = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def writer_lock(path: Path) -> FileLock:
    """The lock that writers of the FrameIndex folder `path` hold: `<path>.lock` beside it, re-entrant within
    a process (one instance per path)."""
    return FileLock(f"{Path(path).absolute()}.lock", is_singleton=True)


def is_complete(path: Path) -> bool:
    return (Path(path) / MARKER_FILE).is_file()


def read_marker(path: Path, rebuild: str | None = None) -> dict:
    """The completion marker of a complete FrameIndex folder: name, aus, intensity_aus, rows, metadata and,
    since content hashes are recorded, files, rebuild and its own sha256. An unreadable or altered one is a
    one-line UserError saying how to rebuild the folder (`rebuild`: the command, when the caller knows it)."""
    marker_path = Path(path) / MARKER_FILE
    try:
        marker = json.loads(marker_path.read_text())
    except (OSError, ValueError) as error:
        problem = _one_line(error)
    else:
        if not isinstance(marker, dict) or not all(key in marker for key in MARKER_KEYS):
            problem = f"expected the keys {', '.join(MARKER_KEYS)}"
        elif marker.get("sha256", _marker_digest(marker)) != _marker_digest(marker):
            problem = "content differs from the sha256 recorded in it"
        else:
            return marker
    raise UserError(f"{marker_path}: damaged frame index marker ({problem}); {_how_to_rebuild(path, rebuild)}")


def _marker_digest(marker: dict) -> str:
    """sha256 of a marker's fields other than its own digest."""
    fields = {key: value for key, value in marker.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _how_to_rebuild(path: Path, rebuild: str | None) -> str:
    if rebuild:
        return f"rebuild it with: {rebuild}"
    return f"delete {path}, or rebuild it with its 'aunce-bench synth' or 'aunce-bench prepare' command and --force"


def _holds_only_a_frame_index(path: Path) -> bool:
    """Whether `path` is a folder with nothing but a FrameIndex's entries (complete, partial or empty)."""
    return path.is_dir() and {entry.name for entry in path.iterdir()} <= {MARKER_FILE, FRAMES_FOLDER, *EXTRA_FILES}


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`/frames, by path relative to `folder`."""
    files = sorted(file for file in (folder / FRAMES_FOLDER).rglob("*") if file.is_file())
    return {file.relative_to(folder).as_posix(): file_sha256(file) for file in files}


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
