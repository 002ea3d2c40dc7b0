"""Face preprocessing of raw frames: detection and alignment to square crops with OpenCV Haar cascades.

Per frame: the largest face (`haarcascade_frontalface_default`) on a downscaled, equalised grey copy; the two
eyes (`haarcascade_eye`) in the upper part of that face; the frame is rotated about the face centre so that
the eye line is level (when both eyes are found), and a square of the face box plus a margin is cropped and
resized. A frame without a detectable face takes the previous detected box of its sequence, else a centre
crop; both are counted. `align=False` (datasets distributed as cropped faces) only centre-crops to a square
and resizes. Videos are decoded frame by frame with `cv2.VideoCapture`.

The cascades ship with opencv-python(-headless) 4.x; OpenCV 5 wheels dropped them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from aunce_bench.data.formats.common import Unit
from aunce_bench.errors import UserError

OUTPUT_SIZE = 256  # aligned faces, as the paper settings (FACTS.md s7)
MARGIN = 0.2  # crop side = face box side x (1 + 2 MARGIN)
DETECT_MAX_SIDE = 480  # detection runs on a copy at most this large
MAX_TILT = 30.0  # degrees; a steeper "eye line" is a false eye detection
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Box:
    """A square crop: centre, side (pixels of the source frame) and the rotation that levels the eyes."""

    cx: float
    cy: float
    side: float
    angle: float = 0.0


def cascades_available() -> bool:
    return hasattr(cv2, "CascadeClassifier") and Path(_cascade_path("haarcascade_eye.xml")).is_file()


def _cascade_path(name: str) -> str:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    return str(Path(folder) / name) if folder else name


@lru_cache(maxsize=1)
def cascades():
    if not cascades_available():
        raise UserError(f"face alignment needs OpenCV's Haar cascades, which OpenCV {cv2.__version__} does not ship: "
                        "pip install 'opencv-python-headless>=4.8,<5', or pass --no-align for already cropped faces")
    return (cv2.CascadeClassifier(_cascade_path("haarcascade_frontalface_default.xml")),
            cv2.CascadeClassifier(_cascade_path("haarcascade_eye.xml")))


def detect(image: np.ndarray) -> Box | None:
    """The crop box of the largest face in a BGR frame, levelled on the eyes when both are found; None if no face."""
    face_cascade, eye_cascade = cascades()
    scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    smallest = max(24, min(grey.shape) // 8)
    faces = face_cascade.detectMultiScale(cv2.equalizeHist(grey), 1.1, 5, minSize=(smallest, smallest))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
    upper = grey[y: y + h * 6 // 10, x: x + w]
    eyes = eye_cascade.detectMultiScale(upper, 1.05, 5, minSize=(max(8, w // 8), max(8, w // 8)))
    return Box((x + w / 2) / scale, (y + h / 2) / scale, w * (1 + 2 * MARGIN) / scale, _eye_angle(eyes, w))


def _eye_angle(eyes: np.ndarray, face_width: int) -> float:
    """Tilt of the line through the two largest eye boxes (degrees, positive: right eye lower), or 0."""
    if len(eyes) < 2:
        return 0.0
    largest = sorted(eyes, key=lambda box: box[2] * box[3], reverse=True)[:2]
    (lx, ly), (rx, ry) = sorted((x + w / 2, y + h / 2) for x, y, w, h in largest)
    if rx - lx < face_width / 5:  # the same eye found twice
        return 0.0
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    return angle if abs(angle) <= MAX_TILT else 0.0


def centre_box(image: np.ndarray) -> Box:
    height, width = image.shape[:2]
    return Box(width / 2, height / 2, min(height, width))


def crop(image: np.ndarray, box: Box, size: int = OUTPUT_SIZE) -> np.ndarray:
    """The box, rotated by its angle (counter-clockwise) about its centre, as a size x size image."""
    matrix = cv2.getRotationMatrix2D((box.cx, box.cy), box.angle, size / box.side)
    matrix[0, 2] += size / 2 - box.cx
    matrix[1, 2] += size / 2 - box.cy
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _frames(unit: Unit) -> Iterator[tuple[np.ndarray | None, Path | None]]:
    """(BGR frame or None when unreadable, its image file or None for video frames) of every row."""
    if unit.video is None:
        for path in unit.images:
            yield cv2.imread(str(path), cv2.IMREAD_COLOR), path
        return
    capture = cv2.VideoCapture(str(unit.video))
    if not capture.isOpened():
        raise UserError(f"{unit.video}: OpenCV cannot open this video")
    try:
        position, frame = -1, None
        for wanted in unit.video_frames:  # ascending
            while position < wanted and frame is not False:
                ok, image = capture.read()
                position, frame = position + 1, image if ok else False
            yield (frame if position == wanted and frame is not False else None), None
    finally:
        capture.release()


def _encode(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buffer.tobytes()


def process_unit(unit: Unit, align: bool, size: int = OUTPUT_SIZE) -> tuple[list[bytes | None], dict[str, int]]:
    """JPEG crops of a sequence's rows (None: unreadable frame) and counts of how each face was found."""
    counts: Counter = Counter()
    crops: list[bytes | None] = []
    previous: Box | None = None
    for image, path in _frames(unit):
        if image is None:
            counts["unreadable"] += 1
            crops.append(None)
            continue
        if not align:
            square = image.shape[0] == image.shape[1] == size
            if square and path is not None and path.suffix.lower() in (".jpg", ".jpeg"):
                crops.append(path.read_bytes())  # already a crop of the right size: keep the original bytes
            else:
                crops.append(_encode(crop(image, centre_box(image), size)))
            continue
        box = detect(image)
        if box is not None:
            counts["detected"] += 1
            counts["eyes_levelled"] += box.angle != 0.0
            previous = box
        elif previous is not None:
            box = previous
            counts["previous_box"] += 1
        else:
            box = centre_box(image)
            counts["centre_crop"] += 1
        crops.append(_encode(crop(image, box, size)))
    return crops, dict(counts)
