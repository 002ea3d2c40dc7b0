"""BP4D and BP4D+ occurrence codes (docs/PROTOCOLS.md#formats).

`AUCoding/AU_OCC/F001_T1.csv`, one file per subject x task. The header row names the columns: column `0`
is the frame number, every other column an AU number (BP4D: `0,1,2,...,99`; BP4D+: only the coded AUs, the
12 BP4D AUs at non-contiguous positions). The header is always read, never assumed. Values: 0 absent,
1 present, 9 unknown (missing: -1 in the FrameIndex). Frame `2440` of `F001_T1` is the image
`F001/T1/2440.jpg` under the image folder, with or without zero padding (`2440.jpg`, `0042.jpg`), any of
the extensions jpg, jpeg, png, bmp. The image list (what a landmark list's lines follow) is every data row of
the occurrence files, files in name order.
"""

from __future__ import annotations

import re
from pathlib import Path

from aunce_bench.data.formats.common import (AnnotationError, Scan, Unit, Unlabelled, au_columns, expect_cells,
                                             find_folder, integer, no_images_error, numbered_images, occurrence,
                                             read_rows)

BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
_FILE = re.compile(r"^([FM]\d{3})_(T\d+)\.csv$")
_FRAME_HEADERS = ("0", "frame")


def scan_bp4d(root: Path, images: Path, threshold: float) -> Scan:
    """BP4D: 41 subjects x 8 tasks."""
    return _scan(root, images, "bp4d")


def scan_bp4d_plus(root: Path, images: Path, threshold: float) -> Scan:
    """BP4D+: 140 subjects x up to 10 tasks, only the coded AUs as columns."""
    return _scan(root, images, "bp4d_plus")


def _scan(root: Path, images: Path, dataset: str) -> Scan:
    folder = find_folder(root, ("AUCoding/AU_OCC", "AU_OCC", "."), "[FM][0-9][0-9][0-9]_T*.csv",
                         "occurrence files F001_T1.csv")
    units, unlabelled, without_image, files, listed = [], Unlabelled(), 0, 0, 0
    for path in sorted(folder.glob("*.csv")):
        match = _FILE.match(path.name)
        if not match:
            continue
        subject, task = match.groups()
        unit, missing, listed = _read(path, subject, task, images / subject / task, unlabelled, listed)
        units.append(unit)
        without_image += missing
        files += 1
    return Scan(dataset, BP4D_AUS, units, without_image=without_image, unlabelled=unlabelled.count, files=files,
                listed=listed, image_list="every data row of the occurrence files, files in name order "
                                      "(F001_T1.csv, F001_T2.csv, ...)")


def _read(path: Path, subject: str, task: str, image_folder: Path, unlabelled: Unlabelled,
          listed: int) -> tuple[Unit, int, int]:
    """The sequence of one occurrence file, its labelled frames without an image, and the image list's length
    after its rows (`listed` before them)."""
    rows = read_rows(path)
    header = next(rows, (1, []))[1]
    if not header or header[0].lower() not in _FRAME_HEADERS:
        first = header[0] if header else ""
        raise AnnotationError(path, 1, f"header must start with column 0 (the frame number), got '{first}'; "
                                       "is the header row missing?")
    columns = au_columns(header, BP4D_AUS, path)
    images = numbered_images(image_folder)
    unit, missing, first_line, seen = Unit(subject, task), 0, None, set()
    for line, cells in rows:
        entry, listed = listed, listed + 1  # the row's entry in the image list
        expect_cells(cells, len(header), path, line)
        frame = integer(cells[0], path, line, "frame number")
        if frame in seen:
            raise AnnotationError(path, line, f"frame {frame} appears twice")
        seen.add(frame)
        first_line = first_line or (line, frame)
        labels = [occurrence(cells[c], path, line, au, ("9",)) for au, c in zip(BP4D_AUS, columns)]
        if not unlabelled.keep(labels):
            continue
        if frame not in images:
            missing += 1
            continue
        unit.add(frame, labels, images[frame], listed=entry)
    if first_line is None:
        raise AnnotationError(path, None, "no frames after the header")
    if not unit and missing:
        raise no_images_error(path, first_line[0], image_folder / f"{first_line[1]}.jpg")
    return unit, missing, listed
