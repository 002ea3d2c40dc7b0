"""The 5-point face landmark convention of the FrameIndex, the canonical template faces are aligned to, and the
similarity transform that aligns them.

Five points, in image coordinates (x right, y down, pixel centres at integers), image-left first in each pair:
the two eye centres, the nose tip, the two mouth corners (the points of MTCNN and RetinaFace; from the 68-point
iBUG scheme: the means of the eye contours 36-41 and 42-47, point 30, points 48 and 54). `SCHEMES` derives them
from the landmark schemes datasets ship; `GivenLandmarks` holds a frame's given points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aunce_bench.errors import UserError

FIVE_POINTS = ("eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right")

# Where the five points sit in each landmark scheme, by its point count (0-based indices): the two eye contours
# (image-left eye first), whose means are the eye centres, the nose tip and the two mouth corners (image-left first).
SCHEMES = {
    5: ((0,), (1,), 2, 3, 4),  # FIVE_POINTS themselves
    49: (range(19, 25), range(25, 31), 13, 31, 37),  # IntraFace (BP4D): iBUG without the jaw 0-16 and 60, 64
    66: (range(36, 42), range(42, 48), 30, 48, 54),  # DISFA: iBUG without the inner-mouth corners (60, 64)
    68: (range(36, 42), range(42, 48), 30, 48, 54),  # iBUG (300-W)
}

# Where aligned 256 px faces have their five points: the mean of SynthAU's frontal neutral faces (bp4d profile,
# 30 identities; tests/test_faces.py re-measures it), made left-right symmetric. Real datasets prepared with it
# frame faces as the embedded synthetic data does, so weights pretrained on one see the same layout in the other.
TEMPLATE_SIZE = 256
TEMPLATE = np.array([[83.0, 101.6], [172.0, 101.6], [127.5, 144.0], [88.8, 182.5], [166.2, 182.5]])


def five_from(points: np.ndarray) -> np.ndarray:
    """The five points [5, 2] of landmarks [N, 2] in the scheme of SCHEMES with N points."""
    left_eye, right_eye, nose_tip, mouth_left, mouth_right = SCHEMES[len(points)]
    return np.stack([points[list(left_eye)].mean(axis=0), points[list(right_eye)].mean(axis=0), points[nose_tip],
                     points[mouth_left], points[mouth_right]])


def five_from_68(points: np.ndarray) -> np.ndarray:
    """The five points [5, 2] of 68 iBUG landmarks [68, 2]."""
    return five_from(points)


@dataclass(frozen=True)
class GivenLandmarks:
    """Landmarks a dataset gives for a frame, aligned with instead of detected: the five points [5, 2] and the box
    around every given point (x_min, y_min, x_max, y_max), in 0-based frame pixels, and where they were read."""

    points: np.ndarray
    box: tuple[float, float, float, float]
    where: str  # FILE:LINE

    def check_inside(self, width: int, height: int) -> None:
        """A one-line UserError unless every given point lies in a width x height frame."""
        x_min, y_min, x_max, y_max = self.box
        if x_min < -0.5 or y_min < -0.5 or x_max > width - 0.5 or y_max > height - 0.5:
            raise UserError(f"{self.where}: landmarks outside the {width}x{height} px image (x {x_min:.1f} to "
                            f"{x_max:.1f}, y {y_min:.1f} to {y_max:.1f} in 0-based pixels); are they this image's, "
                            "x before y, in the order of the image list?")


def given_landmarks(points: np.ndarray, where: str) -> GivenLandmarks | None:
    """The GivenLandmarks of points [N, 2] (N in SCHEMES, 0-based frame pixels) read at `where` (FILE:LINE); None
    when every coordinate is NaN (none given). Partly missing or degenerate points are a one-line UserError."""
    points = np.asarray(points, np.float64)
    missing = np.isnan(points)
    if missing.all():
        return None
    if missing.any():
        raise UserError(f"{where}: {int(missing.any(axis=1).sum())} of {len(points)} points are missing; give every "
                        "point of a frame, or none (all NaN) to detect its face")
    if not np.isfinite(points).all():
        raise UserError(f"{where}: infinite coordinates; give pixel coordinates")
    five = five_from(points)
    if np.linalg.norm(five[1] - five[0]) < 1:
        raise UserError(f"{where}: the two eye centres coincide; are these {len(points)} points in the order of "
                        "their scheme?")
    box = (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())
    return GivenLandmarks(five, box, where)


def template(size: int) -> np.ndarray:
    """The five template points for `size` px aligned faces."""
    return (TEMPLATE + 0.5) * size / TEMPLATE_SIZE - 0.5


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation; no reflection) that maps the points `source`
    [n, 2] onto `target` [n, 2] with the least squared error (Umeyama 1991)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    u, singular, vt = np.linalg.svd(centred_target.T @ centred_source / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    scale = np.trace(np.diag(singular) @ sign) / (centred_source**2).sum(axis=1).mean()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * u @ sign @ vt
    matrix[:, 2] = target_mean - matrix[:, :2] @ source_mean
    return matrix


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [n, 2] mapped by a 2x3 affine matrix."""
    return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]


def roll_degrees(matrix: np.ndarray) -> float:
    """The rotation of a similarity, in degrees (positive: counter-clockwise on screen)."""
    return float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def normalised_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error of five points over the inter-ocular distance (the distance of the true eye
    centres), as face-alignment papers report NME."""
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[1] - truth[0]))
