"""FERA 2017 occurrence codes and multi-view videos (docs/PROTOCOLS.md#formats).

`FERA17_TR_F001_T1.csv` (training partition; `VA` validation) holds the occurrence codes of task T1 of
subject F001: a header row whose first column is the frame number and whose other columns name AUs ('1',
'AU01', ...), then one row per frame, values 0, 1, or 9 / -1 (missing). The 9 rendered views of that sequence
are the videos `FERA17_TR_F001_T1_{1..9}.mp4`; data row i (0-based) is frame i of each video. Files are
found anywhere under the annotation and image folders. The view is stored as pose bin `view1`..`view9` (the
view angles are not confirmed, so yaw/pitch stay unknown). Subjects are named with their partition
(`TR_F001`, `VA_F001`): the partitions reuse subject codes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from aunce_bench.data.formats.common import (VIDEO_EXTENSIONS, AnnotationError, Scan, Unit, Unlabelled,
                                             au_columns, expect_cells, integer, occurrence, read_rows)
from aunce_bench.errors import UserError

FERA17_AUS = (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)
PARTITIONS = {"TR": "train", "VA": "validation"}
_LABELS = re.compile(r"^FERA17_(TR|VA)_([FM]\d{3})_(T\d+)\.csv$", re.IGNORECASE)
_VIDEO = re.compile(r"^FERA17_(TR|VA)_([FM]\d{3})_(T\d+)_(\d)$", re.IGNORECASE)
_FRAME_HEADERS = ("0", "frame", "frames")


def scan_fera17(root: Path, images: Path, threshold: float) -> Scan:
    if not root.is_dir():
        raise UserError(f"--root {root}: no such folder; pass the folder that holds the FERA 2017 occurrence files")
    label_files = sorted(p for p in root.rglob("*.csv") if _LABELS.match(p.name))
    if not label_files:
        raise UserError(f"no FERA 2017 occurrence files (FERA17_TR_F001_T1.csv) under {root}; pass --root the "
                        "folder that holds them")
    views: dict[tuple[str, str, str], dict[int, Path]] = defaultdict(dict)
    for path in sorted(images.rglob("*")) if images.is_dir() else []:
        match = _VIDEO.match(path.stem)
        if match and path.suffix.lower() in VIDEO_EXTENSIONS:
            split, subject, task, view = match.groups()
            views[(split.upper(), subject, task)][int(view)] = path
    units, partitions, unlabelled = [], {}, Unlabelled()
    for path in label_files:
        split, subject, task = _LABELS.match(path.name).groups()
        split = split.upper()
        videos = views.get((split, subject, task))
        if not videos:
            raise AnnotationError(path, 2, f"no videos for it: expected FERA17_{split}_{subject}_{task}_1.mp4 .. _9.mp4 "
                                           f"under {images}")
        rows = _read(path, unlabelled)
        name = f"{split}_{subject}"
        for view, video in sorted(videos.items()):
            unit = Unit(name, task, video=video, pose_bin=f"view{view}")
            for index, frame, labels in rows:
                unit.add(frame, labels, index)
            units.append(unit)
        members = partitions.setdefault(PARTITIONS[split], [])
        if name not in members:
            members.append(name)
    return Scan("fera17", FERA17_AUS, units, partitions=partitions, unlabelled=unlabelled.count,
                files=len(label_files))


def _read(path: Path, unlabelled: Unlabelled) -> list[tuple[int, int, list[int]]]:
    """(video frame index, frame number, labels) of every labelled row."""
    rows = list(read_rows(path))
    header = rows[0][1] if rows else []
    if not header or header[0].lower() not in _FRAME_HEADERS:
        raise AnnotationError(path, 1, f"header must start with the frame column ('Frame' or '0'), got "
                                       f"'{header[0] if header else ''}'")
    columns = au_columns(header, FERA17_AUS, path)
    labelled = []
    for index, (line, cells) in enumerate(rows[1:]):
        expect_cells(cells, len(header), path, line)
        frame = integer(cells[0], path, line, "frame number")
        labels = [occurrence(cells[c], path, line, au, ("9", "-1")) for au, c in zip(FERA17_AUS, columns)]
        if unlabelled.keep(labels):
            labelled.append((index, frame, labels))
    return labelled
