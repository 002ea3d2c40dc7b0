"""DISFA intensity codes (docs/PROTOCOLS.md#formats).

`ActionUnit_Labels/SN001/SN001_au1.txt`, one file per subject x AU (AUs 1 2 4 5 6 9 12 15 17 20 25 26), no
header, lines `frame,intensity` with frames 1-based and intensities 0-5. Occurrence = intensity >=
`threshold` (2, the community standard; some tools use 1). The index keeps the intensities, so a protocol's
`occurrence_threshold` re-derives labels without preparing again. Data line i (0-based) is the image
`SN001/i.png` under the image folder (any of jpg, jpeg, png, bmp; zero padding allowed). The image list (what a
landmark list's lines follow) is every frame of the label files, subjects in name order.
"""

from __future__ import annotations

import re
from pathlib import Path

from aunce_bench.data.formats.common import (AnnotationError, Scan, Unit, expect_cells, find_folder, integer,
                                             no_images_error, numbered_images, read_rows)
from aunce_bench.errors import UserError

DISFA_CODED_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
_SUBJECT = re.compile(r"^SN\d{3}$")


def scan_disfa(root: Path, images: Path, threshold: float) -> Scan:
    folder = find_folder(root, ("ActionUnit_Labels", "."), "SN[0-9][0-9][0-9]/SN*_au*.txt",
                         "label files SN001/SN001_au1.txt")
    units, without_image, files, listed = [], 0, 0, 0
    for subject_folder in sorted(p for p in folder.iterdir() if p.is_dir() and _SUBJECT.match(p.name)):
        subject = subject_folder.name
        frames, intensities = _read_subject(subject_folder, subject)
        files += len(DISFA_CODED_AUS)
        images_by_index = numbered_images(images / subject)
        first_file = subject_folder / f"{subject}_au{DISFA_CODED_AUS[0]}.txt"
        if not images_by_index:
            raise no_images_error(first_file, 1, images / subject / "0.png")
        unit = Unit(subject, "1")
        for index, (frame, levels) in enumerate(zip(frames, intensities)):
            if index not in images_by_index:
                without_image += 1
                continue
            unit.add(frame, [int(level >= threshold) for level in levels], images_by_index[index], levels,
                     listed=listed + index)
        units.append(unit)
        listed += len(frames)
    return Scan("disfa", DISFA_CODED_AUS, units, intensity_aus=DISFA_CODED_AUS, without_image=without_image,
                files=files, listed=listed, image_list="every frame of the label files, subjects in name order "
                                                       "(SN001 frames 1, 2, ..., then SN002, ...)")


def _read_subject(folder: Path, subject: str) -> tuple[list[int], list[list[float]]]:
    """Frame numbers and per-frame intensities [frames][AUs] of one subject; all AU files must agree on frames."""
    frames: list[int] | None = None
    columns: list[list[float]] = []
    reference = None
    for au in DISFA_CODED_AUS:
        path = folder / f"{subject}_au{au}.txt"
        if not path.is_file():
            raise UserError(f"{path}: missing; DISFA ships one label file per subject and AU "
                            f"({', '.join(f'{subject}_au{a}.txt' for a in DISFA_CODED_AUS[:2])}, ...)")
        file_frames, levels, lines = [], [], []
        for line, cells in read_rows(path):
            expect_cells(cells, 2, path, line)
            lines.append(line)
            file_frames.append(integer(cells[0], path, line, "frame number"))
            level = integer(cells[1], path, line, f"AU{au} intensity")
            if not 0 <= level <= 5:
                raise AnnotationError(path, line, f"AU{au} intensity {level} is outside 0-5")
            levels.append(float(level))
        if frames is None:
            frames, reference = file_frames, path
        elif file_frames != frames:
            row = next((i for i, (a, b) in enumerate(zip(file_frames, frames)) if a != b),
                       min(len(frames), len(file_frames)))
            line = lines[row] if row < len(lines) else (lines[-1] if lines else 1)
            raise AnnotationError(path, line, f"frames differ from {reference.name} ({len(file_frames)} frames "
                                              f"here, {len(frames)} there)")
        columns.append(levels)
    if not frames:
        raise AnnotationError(folder / f"{subject}_au{DISFA_CODED_AUS[0]}.txt", None, "no frames")
    return frames, [list(row) for row in zip(*columns)]
