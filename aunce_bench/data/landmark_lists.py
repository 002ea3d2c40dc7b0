"""Landmark lists in the JAA-Net format: the landmarks a dataset's distributors annotated, one line per image.

`aunce-bench prepare --landmarks FILE` reads a text file with one line per entry of the format's image list
(`Scan.image_list`: BP4D, every data row of the occurrence files in name order; DISFA, every frame of the
label files; ...), in its order. A line holds 2N whitespace-separated numbers `x1 y1 x2 y2 ...` in 1-based
pixel coordinates, N one of LIST_POINTS: 49 (BP4D's IntraFace points), 66 (DISFA's: the 68 iBUG points without
the inner-mouth corners 61 and 65) or 68 (iBUG). A line of `nan` values, or an empty line, gives none: that
frame is detected. The five points of `landmarks.FIVE_POINTS` are derived from each line (`landmarks.SCHEMES`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aunce_bench.data.formats.common import AnnotationError, Scan
from aunce_bench.data.landmarks import GivenLandmarks, given_landmarks
from aunce_bench.errors import UserError

LIST_POINTS = {49: "BP4D's IntraFace points", 66: "DISFA's", 68: "iBUG"}


def read_landmark_list(path: Path) -> tuple[list[GivenLandmarks | None], int]:
    """The landmarks of every line of a landmark list (None: none on that line) and its points per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--landmarks {path}: no such file; pass the landmark list (one line per image)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AnnotationError(path, None, "not a text file; a landmark list holds numbers x1 y1 x2 y2 ...") from None
    given: list[GivenLandmarks | None] = []
    count, first = 0, 0  # points per line, and the first line that has them
    for line, text in enumerate(lines, start=1):
        cells = text.split()
        if not cells:
            given.append(None)
            continue
        try:
            values = np.array(cells, dtype=np.float64)
        except ValueError:
            bad = next(cell for cell in cells if not _is_number(cell))
            raise AnnotationError(path, line, f"'{bad}' is not a number") from None
        if len(values) % 2:
            raise AnnotationError(path, line, f"{len(values)} numbers: an odd count, where each point has x and y")
        points = len(values) // 2
        if points not in LIST_POINTS:
            known = [f"{n} ({name}, {2 * n} numbers)" for n, name in LIST_POINTS.items()]
            raise AnnotationError(path, line, f"{len(values)} numbers ({points} points); a line holds "
                                              f"{', '.join(known[:-1])} or {known[-1]} points")
        if count and points != count:
            raise AnnotationError(path, line, f"{points} points where line {first} has {count}; give one scheme")
        count, first = count or points, first or line
        given.append(given_landmarks(values.reshape(points, 2) - 1.0, f"{path}:{line}"))  # 1-based -> 0-based
    return given, count


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def attach_landmark_list(scan: Scan, path: Path) -> None:
    """Give the rows of `scan` the landmarks of the list at `path`, whose lines follow the scan's image list."""
    path = Path(path)
    if not scan.image_list:
        raise UserError(f"--landmarks {path}: this format has no image list for the lines to follow; landmark "
                        "lists work with bp4d, bp4d_plus, disfa, megraphau_lists and csv")
    if scan.given_from:
        raise UserError(f"--landmarks {path}: {scan.given_from} already gives landmarks; use one or the other")
    given, points = read_landmark_list(path)
    if len(given) != scan.listed:
        raise AnnotationError(path, min(len(given), scan.listed) + 1,
                              f"{len(given)} lines for {scan.listed} images; a landmark list has one line per image "
                              f"of {scan.dataset}'s image list, in its order: {scan.image_list}")
    for unit in scan.units:
        unit.given = [given[entry] if entry >= 0 else None for entry in unit.listed]
    scan.given_from = f"{path.resolve()} ({points} points per line)"

