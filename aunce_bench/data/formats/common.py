"""What every raw-format importer produces, and the helpers they share.

An importer reads a corpus's annotation files as distributed (docs/PROTOCOLS.md#formats) and returns a `Scan`: the
dataset's AUs and one `Unit` per sequence (the frames of one image folder or video, in order) with labels
(1 present, 0 absent, -1 missing), intensities where the format has them, where each frame's image is, and
landmarks where the dataset gives them. Formats of image files also number their image list (`Scan.image_list`),
whose order a landmark list's lines follow. A malformed annotation raises `AnnotationError`, one line naming the
file and line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aunce_bench.data.index import MISSING_LABEL
from aunce_bench.data.landmarks import GivenLandmarks
from aunce_bench.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRONTAL = "frontal"
_AU_NAME = re.compile(r"^(?:au)?0*(\d+)$", re.IGNORECASE)


class AnnotationError(UserError):
    """A problem in an annotation file, reported as `FILE:LINE: message`."""

    def __init__(self, path: Path, line: int | None, message: str):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass
class Unit:
    """One sequence: rows in frame order, images as files (`images`) or frames of a `video`."""

    subject: str
    sequence: str
    frames: list[int] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    intensities: list[list[float]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    video: Path | None = None
    video_frames: list[int] = field(default_factory=list)  # 0-based frame index in `video` of each row
    pose_bin: str = FRONTAL
    listed: list[int] = field(default_factory=list)  # each row's entry in the scan's image list (-1: none)
    given: list[GivenLandmarks | None] = field(default_factory=list)  # the dataset's landmarks of each row

    def add(self, frame: int, labels: list[int], image: Path | int, intensities: list[float] = (), listed: int = -1,
            given: GivenLandmarks | None = None) -> None:
        """Append a row; `image` is a file, or a 0-based frame index of `self.video`."""
        self.frames.append(frame)
        self.labels.append(labels)
        self.intensities.append(list(intensities))
        (self.video_frames if self.video is not None else self.images).append(image)
        self.listed.append(listed)
        self.given.append(given)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Scan:
    """An importer's result: what to preprocess and what the rows mean."""

    dataset: str
    aus: tuple[int, ...]
    units: list[Unit]
    intensity_aus: tuple[int, ...] = ()
    partitions: dict[str, list[str]] = field(default_factory=dict)  # official partition -> subjects
    without_image: int = 0  # labelled frames whose image file is absent (skipped)
    unlabelled: int = 0  # frames with every label missing (dropped)
    files: int = 0  # annotation files read
    listed: int = 0  # entries of the format's image list: every image its annotation rows name, in reading order
    image_list: str = ""  # what those entries are, for messages ("": the format has no image list)
    given_from: str = ""  # where the rows' given landmarks come from ("": none)


class Unlabelled:
    """Counts rows dropped because every label is missing."""

    def __init__(self):
        self.count = 0

    def keep(self, labels: list[int]) -> bool:
        if all(value == MISSING_LABEL for value in labels):
            self.count += 1
            return False
        return True


def read_rows(path: Path, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-blank line of a text table."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, cells in enumerate(csv.reader(handle, delimiter=delimiter), start=1):
                cells = [cell.strip() for cell in cells]
                if any(cells):
                    yield number, cells
    except UnicodeDecodeError:
        raise AnnotationError(path, None, "not a text file")


def au_number(name: str) -> int | None:
    """The AU a column header names ('AU12', 'au01', '12'), or None."""
    match = _AU_NAME.match(name.strip())
    return int(match.group(1)) if match else None


def au_columns(header: list[str], wanted: tuple[int, ...], path: Path, first: int = 1) -> list[int]:
    """Column index of each AU in `wanted`, read from the header's cells from column `first` on."""
    found: dict[int, int] = {}
    for column, cell in enumerate(header[first:], start=first):
        au = au_number(cell)
        if au is None:
            raise AnnotationError(path, 1, f"header column {column + 1} '{cell}' does not name an AU")
        if au in found:
            raise AnnotationError(path, 1, f"header names AU{au} twice (columns {found[au] + 1} and {column + 1})")
        found[au] = column
    absent = [au for au in wanted if au not in found]
    if absent:
        raise AnnotationError(path, 1, f"header has no column for AU{absent[0]} (expected AUs "
                                       f"{', '.join(map(str, wanted))}; got '{','.join(header)}')")
    return [found[au] for au in wanted]


def occurrence(cell: str, path: Path, line: int, au: int, missing: tuple[str, ...]) -> int:
    """1 or 0 for '1' / '0'; -1 for the format's missing codes; anything else is an error."""
    if cell in ("0", "1"):
        return int(cell)
    if cell in missing:
        return MISSING_LABEL
    allowed = ", ".join(("0", "1", *missing))
    raise AnnotationError(path, line, f"AU{au} value '{cell}' is not one of {allowed}")


def integer(cell: str, path: Path, line: int, what: str) -> int:
    try:
        return int(cell)
    except ValueError:
        raise AnnotationError(path, line, f"{what} '{cell}' is not an integer")


def expect_cells(cells: list[str], count: int, path: Path, line: int) -> None:
    if len(cells) != count:
        raise AnnotationError(path, line, f"{len(cells)} values where the header has {count} columns")


def numbered_images(folder: Path) -> dict[int, Path]:
    """Images of a folder by frame number: '2440.jpg', '0042.png' and '00042.jpg' are frames 2440, 42, 42."""
    images: dict[int, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.stem.isdigit():
                images.setdefault(int(path.stem), path)
    return images


def files_by_stem(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """Every file under `folder` (recursively) with one of `extensions`, by file stem."""
    found: dict[str, Path] = {}
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in extensions and path.is_file():
                found.setdefault(path.stem, path)
    return found


def find_folder(root: Path, candidates: tuple[str, ...], holds: str, what: str) -> Path:
    """The first of `root / candidate` holding files matching the glob `holds`, or a one-line error."""
    if not root.is_dir():
        raise UserError(f"--root {root}: no such folder; pass the folder that holds the {what}")
    for candidate in candidates:
        folder = root / candidate
        if folder.is_dir() and any(folder.glob(holds)):
            return folder
    looked = ", ".join(str(root / c) for c in candidates)
    raise UserError(f"no {what} ({holds}) in {looked}; pass --root the folder that holds them")


def no_images_error(path: Path, line: int, expected: Path) -> AnnotationError:
    return AnnotationError(path, line, f"no image for any frame of this file (expected e.g. {expected}); "
                                       "pass --images the folder that holds the frames")
