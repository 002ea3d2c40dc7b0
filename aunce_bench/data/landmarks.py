"""The 5-point face landmark convention of the FrameIndex, the canonical template faces are aligned to, and the
similarity transform that aligns them.

Five points, in image coordinates (x right, y down, pixel centres at integers), image-left first in each pair:
the two eye centres, the nose tip, the two mouth corners (the points of MTCNN and RetinaFace; from the 68-point
iBUG scheme: the means of the eye contours 36-41 and 42-47, point 30, points 48 and 54).
"""

from __future__ import annotations

import numpy as np

FIVE_POINTS = ("eye_left", "eye_right", "nose_tip", "mouth_left", "mouth_right")

# Where aligned 256 px faces have their five points: the mean of SynthAU's frontal neutral faces (bp4d profile,
# 30 identities; tests/test_faces.py re-measures it), made left-right symmetric. Real datasets prepared with it
# frame faces as the embedded synthetic data does, so weights pretrained on one see the same layout in the other.
TEMPLATE_SIZE = 256
TEMPLATE = np.array([[83.0, 101.6], [172.0, 101.6], [127.5, 144.0], [88.8, 182.5], [166.2, 182.5]])


def five_from_68(points: np.ndarray) -> np.ndarray:
    """The five points [5, 2] of 68 iBUG landmarks [68, 2]."""
    return np.stack([points[36:42].mean(axis=0), points[42:48].mean(axis=0), points[30], points[48], points[54]])


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
