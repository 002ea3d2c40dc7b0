"""A documented CSV format for any other corpus (GFT among them): one row per frame.

`--root` is the CSV file (UTF-8, comma-separated, a header row). Columns, matched by name:

- `image` (required): the image path, relative to the image folder (default: the CSV's folder);
- `subject` (required): the subject id; folds and partitions are subject-independent;
- `AU<k>` (at least one, e.g. `AU1,AU2,AU12`): 1 present, 0 absent, 9, -1 or empty for missing;
- `sequence` (optional, default `1`): the video or task the frame belongs to (face tracking and frame
  subsampling work per sequence);
- `frame` (optional, default the row order): the frame number within the sequence;
- `pose_bin` (optional, default `frontal`): a view or pose label; metrics are reported per pose bin;
- `partition` (optional): an official partition such as `train` / `validation`, for protocols with
  `split: {kind: partition}`;
- landmarks (optional, all ten or none): `eye_left_x, eye_left_y, eye_right_x, eye_right_y, nose_tip_x,
  nose_tip_y, mouth_left_x, mouth_left_y, mouth_right_x, mouth_right_y`, the five points of
  `landmarks.FIVE_POINTS` in 0-based pixels of the image (x right, y down, pixel centres at integers; `left`:
  image-left). `prepare` aligns a row's face with them; rows whose ten cells are empty are detected.

Other columns are ignored. The dataset is named with `--name` (e.g. `--name gft`). The image list (what the
lines of a `--landmarks` list follow) is the data rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aunce_bench.data.formats.common import (FRONTAL, AnnotationError, Scan, Unit, Unlabelled, au_number,
                                             expect_cells, integer, no_images_error, occurrence, read_rows)
from aunce_bench.data.landmarks import FIVE_POINTS, GivenLandmarks, given_landmarks
from aunce_bench.errors import UserError

REQUIRED = ("image", "subject")
OPTIONAL = ("sequence", "frame", "pose_bin", "partition")
LANDMARK_COLUMNS = tuple(f"{point}_{axis}" for point in FIVE_POINTS for axis in "xy")


def scan_csv(root: Path, images: Path, threshold: float) -> Scan:
    if not root.is_file():
        raise UserError(f"--root {root}: not a file; for the generic format pass the CSV file itself")
    rows = read_rows(root)
    header = next(rows, (1, []))[1]
    columns = {name.lower(): i for i, name in enumerate(header)}
    absent = [name for name in REQUIRED if name not in columns]
    if absent:
        raise AnnotationError(root, 1, f"header has no '{absent[0]}' column (required: image, subject, AU<k>...)")
    au_cells = [(au_number(name), i) for i, name in enumerate(header)
                if name.lower().startswith("au") and au_number(name) is not None]
    if not au_cells:
        raise AnnotationError(root, 1, "header has no AU columns (AU1, AU2, ...)")
    aus = tuple(au for au, _ in au_cells)
    if len(set(aus)) != len(aus):
        raise AnnotationError(root, 1, "header names an AU twice")
    landmark_cells = [columns.get(name) for name in LANDMARK_COLUMNS]
    if None in landmark_cells and any(cell is not None for cell in landmark_cells):
        absent = LANDMARK_COLUMNS[landmark_cells.index(None)]
        raise AnnotationError(root, 1, f"header has landmark columns but no '{absent}'; give all ten "
                                       f"({', '.join(LANDMARK_COLUMNS)}) or none")
    with_landmarks = None not in landmark_cells
    units: dict[tuple[str, str, str], list] = {}
    partitions: dict[str, list[str]] = {}
    unlabelled, without_image, first = Unlabelled(), 0, None
    for order, (line, cells) in enumerate(rows):
        expect_cells(cells, len(header), root, line)
        value = {name: cells[columns[name]] for name in (*REQUIRED, *OPTIONAL) if name in columns}
        if not value["image"] or not value["subject"]:
            raise AnnotationError(root, line, "empty image or subject")
        labels = [occurrence(cells[i], root, line, au, ("9", "-1", "")) for au, i in au_cells]
        first = first or (line, value["image"])
        if not unlabelled.keep(labels):
            continue
        image = images / value["image"]
        if not image.is_file():
            without_image += 1
            continue
        frame = integer(value["frame"], root, line, "frame") if value.get("frame") else order
        key = (value["subject"], value.get("sequence") or "1", value.get("pose_bin") or FRONTAL)
        given = _given([cells[i] for i in landmark_cells], root, line) if with_landmarks else None
        units.setdefault(key, []).append((frame, labels, image, order, given))
        if value.get("partition"):
            members = partitions.setdefault(value["partition"], [])
            if value["subject"] not in members:
                members.append(value["subject"])
    if first is None:
        raise AnnotationError(root, None, "no rows after the header")
    if not units and without_image:
        raise no_images_error(root, first[0], images / first[1])
    scanned = []
    for (subject, sequence, pose_bin), rows_of_unit in sorted(units.items()):
        unit = Unit(subject, sequence, pose_bin=pose_bin)
        for frame, labels, image, listed, given in sorted(rows_of_unit, key=lambda row: row[0]):
            unit.add(frame, labels, image, listed=listed, given=given)
        scanned.append(unit)
    return Scan(root.stem, aus, scanned, partitions=partitions, without_image=without_image,
                unlabelled=unlabelled.count, files=1, listed=order + 1, image_list=f"the data rows of {root.name}",
                given_from=f"{root} (landmark columns)" if with_landmarks else "")


def _given(cells: list[str], path: Path, line: int) -> GivenLandmarks | None:
    """The landmarks of a row's ten landmark cells (all empty: none)."""
    values = []
    for name, cell in zip(LANDMARK_COLUMNS, cells):
        try:
            values.append(float(cell) if cell else float("nan"))
        except ValueError:
            raise AnnotationError(path, line, f"{name} '{cell}' is not a number") from None
    return given_landmarks(np.array(values).reshape(len(FIVE_POINTS), 2), f"{path}:{line}")
