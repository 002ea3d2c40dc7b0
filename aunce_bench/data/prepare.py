"""`aunce-bench prepare`: import a raw dataset, preprocess its faces, write a FrameIndex under the data root.

The importer of the format reads the annotation files (`formats/`), a landmark list (`--landmarks`,
`landmark_lists.py`) gives the frames it covers their distributors' landmarks, worker processes detect the
landmarks of the other frames and crop the aligned faces of each sequence (`faces.py`), and the index is
written atomically: a temporary sibling
folder renamed into place once complete, so an interrupted prepare never leaves a dataset that looks complete;
one process prepares an output folder at a time (the FrameIndex writer lock), a second one waits, then reuses
it. The index has the columns of SynthAU's (labels with -1 for missing, intensities where the format codes
them, neutral pose 0/0/0 with pose bin `frontal` or the FERA view, the five given or detected landmarks of
each aligned face), and its metadata records the subjects, official partitions, pose bins, face-finding counts
(given landmarks among them, with their source) and a content fingerprint. Beside the frames goes the
alignment gallery: the least confident aligned faces with their landmarks.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np

from aunce_bench.data.alignment_gallery import gallery_jpeg
from aunce_bench.data.faces import OUTPUT_SIZE, UnitCrops, load_detector, process_unit
from aunce_bench.data.formats import get_format
from aunce_bench.data.formats.common import Scan
from aunce_bench.data.index import (
    ALIGNMENT_GALLERY,
    FrameIndex,
    arrow_table,
    frame_features,
    is_complete,
    read_marker,
    writer_lock,
)
from aunce_bench.data.landmark_lists import attach_landmark_list
from aunce_bench.paths import check_writable, file_sha256, remove_left_work
from aunce_bench.data.workers import process_pool
from aunce_bench.errors import UserError

PREPARE_VERSION = 3  # bump when a change to importers or preprocessing changes prepared data (2: MTCNN landmarks,
# 3: landmarks given by the dataset)


@dataclass(frozen=True)
class Prepared:
    index: FrameIndex
    folder: Path
    reused: bool
    seconds: float


def prepare(format_name: str, root: Path, *, data_root: Path, images: Path | None = None, out: Path | None = None,
            align: bool = True, threshold: float = 2.0, name: str | None = None, workers: int | None = None,
            force: bool = False, landmarks: Path | None = None,
            progress: Callable[[int, int], None] | None = None) -> Prepared:
    """Prepare `root` (annotations as distributed) in the format `format_name`, aligning the frames a landmark
    list (`landmarks`) covers with its points; see the module docstring."""
    started = time.perf_counter()
    source = get_format(format_name)
    if not 0 < threshold <= 5:
        raise UserError(f"invalid --threshold: {threshold}; occurrence thresholds are intensities in (0, 5]")
    if workers is not None and workers < 1:
        raise UserError("invalid --workers: must be at least 1")
    if landmarks is not None and not align:
        raise UserError("--landmarks aligns the faces with the given points; it cannot go with --no-align")
    list_sha256 = None
    if landmarks is not None:
        landmarks = Path(landmarks)
        if not landmarks.is_file():
            raise UserError(f"--landmarks {landmarks}: no such file; pass the landmark list (one line per image)")
        list_sha256 = file_sha256(landmarks)
    root = Path(root)
    if not root.exists():
        raise UserError(f"--root {root}: no such file or folder; pass the annotation files as distributed (a folder; "
                        "csv: the CSV file)")
    images = Path(images) if images is not None else (root if root.is_dir() else root.parent)
    if not images.is_dir():
        raise UserError(f"--images {images}: no such folder; pass the folder that holds the frames or videos")
    dataset = name or source.dataset  # None: named by the files (megraphau_lists, csv), known after the scan
    scan = None if dataset else source.scan(root, images, threshold)
    dataset = dataset or scan.dataset
    if not re.fullmatch(r"[a-z0-9][a-z0-9_+-]*", dataset):
        raise UserError(f"invalid --name '{dataset}': use lower-case letters, digits, _ + - (e.g. gft)")
    out = Path(out) if out is not None else Path(data_root) / dataset
    rebuild = _prepare_command(format_name, root, images, out, align, threshold, name, landmarks)
    if is_complete(out) and not force:
        return Prepared(_reused(out, rebuild, landmarks, list_sha256), out, True, time.perf_counter() - started)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UserError(f"{out} exists and is not a prepared dataset; pass --force to replace it or choose another --out")
    scan = scan or source.scan(root, images, threshold)
    if landmarks is not None:
        attach_landmark_list(scan, landmarks)
    check_writable(out.parent)
    if align and any(given is None for unit in scan.units for given in unit.given):
        load_detector()  # fail before any work when alignment is impossible
    with writer_lock(out):
        if is_complete(out) and not force:  # another process prepared it while this one waited
            return Prepared(_reused(out, rebuild, landmarks, list_sha256), out, True, time.perf_counter() - started)
        remove_left_work(out)
        with _built(scan, dataset, align, workers or os.cpu_count() or 1, progress, out, list_sha256) as index:
            index.metadata.update({"format": format_name, "root": str(root.resolve()),
                                   "images": str(images.resolve()), "occurrence_threshold": threshold})
            gallery = gallery_jpeg(index) if align else None
            index.save(out, rebuild, {ALIGNMENT_GALLERY: gallery} if gallery else None)
    return Prepared(FrameIndex.load(out, rebuild), out, False, time.perf_counter() - started)


def _prepare_command(format_name: str, root: Path, images: Path, out: Path, align: bool, threshold: float,
                     name: str | None, landmarks: Path | None) -> str:
    """The `aunce-bench prepare` command that prepares the same dataset into `out` again, replacing it."""
    words = ["aunce-bench", "prepare", format_name, "--root", str(root.resolve()), "--out", str(out.resolve())]
    words += [] if images == (root if root.is_dir() else root.parent) else ["--images", str(images.resolve())]
    words += [] if align else ["--no-align"]
    words += [] if threshold == 2.0 else ["--threshold", str(threshold)]
    words += [] if name is None else ["--name", name]
    words += [] if landmarks is None else ["--landmarks", str(landmarks.resolve())]
    return shlex.join([*words, "--force"])


def _reused(out: Path, rebuild: str, landmarks: Path | None, list_sha256: str | None) -> FrameIndex:
    """The complete dataset at `out`, unless it was prepared with another landmark list (or with none, or with
    one where none is asked for): its crops differ from those asked for."""
    metadata = read_marker(out, rebuild)["metadata"]
    prepared_with = metadata.get("landmark_list_sha256")
    if prepared_with != list_sha256:
        was = f"with the landmark list {metadata['given_landmarks']}" if prepared_with else "without --landmarks"
        asked = f"with {landmarks}" if landmarks else "without landmarks"
        raise UserError(f"{out} was prepared {was}; pass --force to prepare it again {asked}, or choose another --out")
    return FrameIndex.load(out, rebuild)


@contextmanager
def _built(scan: Scan, dataset: str, align: bool, workers: int, progress: Callable[[int, int], None] | None,
           folder: Path, list_sha256: str | None) -> Iterator[FrameIndex]:
    """The FrameIndex of `scan`, written row by row into Arrow files beside `folder` and valid inside the block
    (see `arrow_table`): it holds one sequence's crops at a time (and those workers cropped ahead of the writer).
    `list_sha256`: the sha256 of the landmark list the scan's given landmarks come from, if any."""
    units = [unit for unit in scan.units if len(unit)]
    if not units:
        raise UserError(f"no labelled frames with images found for {dataset} ({scan.files} annotation files read, "
                        f"{scan.without_image} labelled frames without an image)")
    counts: Counter = Counter()
    digest = hashlib.sha256()
    if list_sha256:  # given landmarks are another preparation of the same frames
        digest.update(list_sha256.encode())
    subjects: set[str] = set()
    pose_bins: set[str] = set()

    def rows() -> Iterator[dict]:
        with process_pool(workers) as pool:
            processed: Iterator[UnitCrops] = pool.map(process_unit, units, repeat(align), repeat(OUTPUT_SIZE))
            for done, (unit, faces) in enumerate(zip(units, processed), start=1):
                counts.update(faces.counts)
                for row, (image, points, score) in enumerate(zip(faces.crops, faces.landmarks, faces.scores)):
                    if image is None:
                        continue
                    values = {"image": {"bytes": image, "path": None}, "labels": unit.labels[row],
                              "intensities": unit.intensities[row], "subject": unit.subject,
                              "sequence": unit.sequence, "frame": unit.frames[row], "yaw": 0.0, "pitch": 0.0,
                              "roll": 0.0, "pose_bin": unit.pose_bin, "dataset": dataset,
                              "landmarks": points.ravel(), "landmarks68": [], "face_score": score}
                    digest.update(repr([values[k] for k in ("subject", "sequence", "frame", "pose_bin", "labels",
                                                             "intensities")]).encode())
                    digest.update(image)
                    digest.update(np.asarray(points, np.float32).tobytes())
                    subjects.add(unit.subject)
                    pose_bins.add(unit.pose_bin)
                    yield values
                if progress:
                    progress(done, len(units))
        if not subjects:
            raise UserError(f"no frame of {dataset} could be read (every image or video frame was unreadable)")

    with arrow_table(rows, frame_features(len(scan.aus), len(scan.intensity_aus)), folder) as frames:
        metadata = {
            "source": "prepared", "prepare_version": PREPARE_VERSION, "fingerprint": digest.hexdigest(),
            "subjects": sorted(subjects), "sequences": len({(u.subject, u.sequence, u.pose_bin) for u in units}),
            "partitions": {name: [s for s in members if s in subjects] for name, members in scan.partitions.items()},
            "pose_bins": sorted(pose_bins), "align": align, "size": OUTPUT_SIZE,
            "faces": {key: counts.get(key, 0) for key in ("given", "detected", "previous_box", "centre_crop")},
            "given_landmarks": scan.given_from or None, "landmark_list_sha256": list_sha256,
            "skipped": {"unreadable": counts.get("unreadable", 0), "without_image": scan.without_image,
                        "unlabelled": scan.unlabelled},
            "annotation_files": scan.files,
        }
        yield FrameIndex(frames, scan.aus, scan.intensity_aus, dataset, metadata)
