"""Rasterise a SynthAU face: pose, anti-aliased drawing, lighting and the capture chain.

`render_face` draws flat-coloured shapes with OpenCV's anti-aliased, sub-pixel primitives on a canvas
`SUPERSAMPLE` times the requested size, downsamples it (area filter), then applies what a camera adds:
shading from a directional light, colour balance, blur, sensor noise; `encode_jpeg` adds compression.
It also returns where the 68 landmarks project in the image: the ground truth of face alignment.
A `CaptureStyle` holds the settings of one capture setup (one per SynthAU profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from aunce_bench.data.synth.face import Identity, appearance

SUPERSAMPLE = 2
_SHIFT = 4  # OpenCV sub-pixel bits
_ONE = 1 << _SHIFT

# Head ellipsoid (face units): its projected outline is the skull and cheeks silhouette.
_HEAD_CENTRE = np.array([0.0, -0.25, -0.45])
_HEAD_AXES = np.array([0.98, 1.08, 0.85])
_PIVOT = np.array([0.0, 0.1, -0.6])  # head rotates about the top of the neck


def _sphere_points(count: int) -> np.ndarray:
    """Evenly spread unit vectors (Fibonacci sphere)."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = np.pi * (1 + 5**0.5) * index
    return np.stack([np.cos(azimuth) * np.sin(polar), np.cos(polar), np.sin(azimuth) * np.sin(polar)], axis=1)


_UNIT_SPHERE = _sphere_points(160)
_ARC = np.linspace(0.0, 1.0, 9)


@dataclass(frozen=True)
class CaptureStyle:
    """How one capture setup frames, lights and degrades faces."""

    background_top: tuple[float, float, float]
    background_bottom: tuple[float, float, float]
    face_scale: float  # crop widths per face unit
    eye_height: float  # where alignment puts the eyes, as a fraction of the crop height
    light: tuple[float, float, float]  # direction towards the light (x right, y down, z to camera)
    ambient: float
    diffuse: float
    colour_gains: tuple[float, float, float]
    contrast: float
    blur_sigma: float  # pixels at 112 px, scaled with the image size
    noise_sigma: float  # sensor noise, 0-255 scale
    jpeg_quality: int
    alignment_jitter: float  # std of the crop shift (fraction of the size) and of the log scale
    light_jitter: float


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees: yaw > 0 turns the nose to the image right, pitch > 0 lifts it."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0


def rotation_matrix(pose: Pose) -> np.ndarray:
    yaw, pitch, roll = np.radians([pose.yaw, pose.pitch, pose.roll])
    about_y = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    about_x = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    about_z = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    return about_z @ about_x @ about_y


@lru_cache(maxsize=256)
def _catmull_rom_weights(count: int, samples: int, closed: bool) -> np.ndarray:
    """Matrix mapping `count` control points to a Catmull-Rom curve with `samples` points per segment."""
    eye = np.eye(count)
    if closed:
        ext = np.vstack([eye[-1], eye, eye[0], eye[1]])
    else:
        ext = np.vstack([2 * eye[0] - eye[1], eye, 2 * eye[-1] - eye[-2]])
    p0, p1, p2, p3 = ext[:-3, None], ext[1:-2, None], ext[2:-1, None], ext[3:, None]
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[None, :, None]
    weights = 0.5 * (
        2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3
    )
    weights = weights.reshape(-1, count)
    return weights if closed else np.vstack([weights, eye[-1]])


def _smooth(points: np.ndarray, samples: int = 4, closed: bool = False) -> np.ndarray:
    """Catmull-Rom curve through 2D `points`, `samples` points per segment."""
    return _catmull_rom_weights(len(points), samples, closed) @ points


def _colour(rgb) -> tuple[int, int, int]:
    return tuple(int(min(max(c * 255.0, 0.0), 255.0)) for c in rgb)


def _mix(a, b, t: float) -> tuple[float, float, float]:
    return tuple((1 - t) * x + t * y for x, y in zip(a, b))


class _Canvas:
    """Anti-aliased sub-pixel drawing on an RGB uint8 image."""

    def __init__(self, size: int, unit_px: float):
        self.image = np.zeros((size, size, 3), np.uint8)
        self.unit_px = unit_px

    @staticmethod
    def _fixed(points: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(points) * _ONE).astype(np.int32)

    def _thickness(self, width_units: float) -> int:
        return max(1, int(round(width_units * self.unit_px)))

    def fill(self, points: np.ndarray, rgb) -> None:
        cv2.fillPoly(self.image, [self._fixed(points)], _colour(rgb), cv2.LINE_AA, _SHIFT)

    def lines(self, curves: list[np.ndarray], rgb, width_units: float, closed: bool = False) -> None:
        cv2.polylines(self.image, [self._fixed(c) for c in curves], closed, _colour(rgb),
                      self._thickness(width_units), cv2.LINE_AA, _SHIFT)

    def ellipse(self, centre, axes_units, angle: float, rgb, width_units: float | None = None) -> None:
        axes = (int(axes_units[0] * self.unit_px * _ONE), int(axes_units[1] * self.unit_px * _ONE))
        thickness = -1 if width_units is None else self._thickness(width_units)
        cv2.ellipse(self.image, tuple(int(v) for v in self._fixed(centre)), axes, angle, 0, 360,
                    _colour(rgb), thickness, cv2.LINE_AA, _SHIFT)


class _Projector:
    """Face units -> canvas pixels for one pose, aligned so the eyes sit at the style's anchor."""

    def __init__(self, pose: Pose, unit_px: float, anchor: np.ndarray, anchor_3d: np.ndarray):
        self.rotation = rotation_matrix(pose)
        self.unit_px = unit_px
        self.offset = np.zeros(2)
        self.offset = anchor - self(anchor_3d)[0]

    def rotate(self, points: np.ndarray) -> np.ndarray:
        return (points - _PIVOT) @ self.rotation.T + _PIVOT

    def __call__(self, points: np.ndarray) -> np.ndarray:
        rotated = self.rotate(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        perspective = 8.0 / (8.0 - rotated[:, 2:3])
        return rotated[:, :2] * perspective * self.unit_px + self.offset


def _head_points(identity: Identity) -> np.ndarray:
    axes = _HEAD_AXES * [identity.face_width, identity.face_length, 1.0]
    points = _HEAD_CENTRE + _UNIT_SPHERE * axes
    return points[points[:, 1] < 0.3]


def _hair_cap(identity: Identity) -> np.ndarray:
    """3D outline of the hair seen from the front: hairline (or fringe) edge, then over the crown."""
    width = 0.99 * identity.face_width
    x = np.linspace(-width, width, 15)
    hairline = identity.hairline + 0.22 * (x / width) ** 2
    if identity.hair_style == 2:  # fringe falls to just above the brows
        hairline = np.maximum(hairline, -0.66 + 0.12 * (x / width) ** 2 - 0.04 * np.cos(9 * x))
    axes = _HEAD_AXES * [identity.face_width, identity.face_length, 1.0]
    rel = np.clip(1 - (x / axes[0]) ** 2 - ((hairline - _HEAD_CENTRE[1]) / axes[1]) ** 2, 0, 1)
    front = np.stack([x, hairline, _HEAD_CENTRE[2] + axes[2] * np.sqrt(rel) + 0.03], axis=1)
    angle = np.linspace(0, np.pi, 15)
    crown = np.stack(
        [np.cos(angle) * axes[0] * 1.06, _HEAD_CENTRE[1] - np.sin(angle) * axes[1] * 1.06, np.full(15, -0.2)], axis=1
    )
    return np.vstack([front, crown])


def _offset(points: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    return points + np.array([dx, dy, 0.0])


class RenderedFace(NamedTuple):
    image: np.ndarray  # [size, size, 3] uint8 RGB
    landmarks: np.ndarray  # [68, 2] float32: where the 68 landmarks project, in pixels of `image` (x right, y down)


def render_face(
    identity: Identity,
    landmarks: np.ndarray,
    intensities: np.ndarray,
    pose: Pose,
    style: CaptureStyle,
    size: int,
    rng: np.random.Generator,
    cue_strength: float = 1.0,
    noise_scale: float = 1.0,
) -> RenderedFace:
    """Render one face [size, size, 3] uint8 RGB from its expressive 3D `landmarks` [68, 3], with the landmarks'
    image positions."""
    canvas_size = size * SUPERSAMPLE
    unit_px = style.face_scale * canvas_size * float(np.exp(rng.normal(0, style.alignment_jitter)))
    anchor = canvas_size * (np.array([0.5, style.eye_height]) + rng.normal(0, style.alignment_jitter, 2))
    # Align on the neutral eye line, so an expression never shifts the crop.
    between_eyes = np.array([[0.0, -0.19 * identity.face_length, 0.25]])
    project = _Projector(pose, unit_px, anchor, between_eyes)
    canvas = _Canvas(canvas_size, unit_px)
    cues = appearance(identity, intensities, cue_strength)
    skin, hair = identity.skin, identity.hair_colour
    textures = np.random.default_rng(identity.seed)  # identity-fixed texture placement

    _draw_background(canvas, style)
    head_2d = project(_head_points(identity))
    lm = project(landmarks)
    if identity.hair_style == 1:  # long hair falls behind the head
        hull = cv2.convexHull(head_2d.astype(np.float32)).reshape(-1, 2)
        centre = hull.mean(axis=0)
        canvas.fill(centre + (hull - centre) * [1.15, 1.05] + [0, 0.35 * unit_px], hair)
    _draw_neck_and_body(canvas, lm, unit_px, skin, identity)
    for side in (-1, 1):
        ear = project(np.array([[side * 0.97 * identity.face_width, -0.12, -0.5]]))[0]
        canvas.ellipse(ear, (0.1, 0.21), 0.0, _mix(skin, (0.4, 0.2, 0.15), 0.15))
    centre = head_2d.mean(axis=0)
    features = centre + (lm - centre) * 1.06  # the skin extends a little beyond every feature
    silhouette = cv2.convexHull(np.vstack([head_2d, features]).astype(np.float32)).reshape(-1, 2)
    canvas.fill(silhouette, skin)

    _draw_eyes(canvas, lm, identity, rng)
    _draw_wrinkles(canvas, project, landmarks, lm, cues, identity, textures)
    if identity.beard > 0:
        _draw_beard(canvas, lm, identity, textures)
    _draw_brows(canvas, project, landmarks, identity)
    _draw_nose(canvas, lm, skin, style)
    _draw_mouth(canvas, lm, identity)
    if identity.beard > 0.5:  # moustache over the upper lip
        top = np.vstack([lm[48], lm[49:54] + [0, -0.015 * unit_px], lm[54]])
        canvas.fill(np.vstack([top, _smooth(lm[53:48:-1] + [0, -0.07 * unit_px])]), _mix(skin, hair, 0.75))
    if identity.glasses:
        _draw_glasses(canvas, project, landmarks)
    canvas.fill(project(_hair_cap(identity)), hair)

    image = cv2.resize(canvas.image, (size, size), interpolation=cv2.INTER_AREA)
    # canvas pixel centres -> image pixel centres under the area downsampling
    landmarks_2d = ((lm + 0.5) / SUPERSAMPLE - 0.5).astype(np.float32)
    return RenderedFace(_capture(image, head_2d / SUPERSAMPLE, style, rng, noise_scale), landmarks_2d)


@lru_cache(maxsize=16)
def _background(style: CaptureStyle, size: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size)[:, None]
    colours = (1 - ramp) * np.array(style.background_top) + ramp * np.array(style.background_bottom)
    return np.repeat((colours * 255).astype(np.uint8)[:, None, :], size, axis=1)


def _draw_background(canvas: _Canvas, style: CaptureStyle) -> None:
    canvas.image[:] = _background(style, canvas.image.shape[0])


def _draw_neck_and_body(canvas: _Canvas, lm: np.ndarray, unit_px: float, skin, identity: Identity) -> None:
    down = np.array([0.0, 1.0]) * unit_px
    neck = np.array([lm[4] + 0.1 * down, lm[12] + 0.1 * down, lm[12] + 1.6 * down, lm[4] + 1.6 * down])
    canvas.fill(neck, _mix(skin, (0, 0, 0), 0.2))
    chin = lm[8]
    shoulders = np.array([chin + [-3 * unit_px, 0.75 * unit_px], chin + [3 * unit_px, 0.75 * unit_px],
                          chin + [3 * unit_px, 3 * unit_px], chin + [-3 * unit_px, 3 * unit_px]])
    shirt = np.random.default_rng(identity.seed + 1).uniform(0.1, 0.8, 3)
    canvas.fill(_smooth(shoulders, 3, closed=True), shirt)


def _draw_eyes(canvas: _Canvas, lm: np.ndarray, identity: Identity, rng: np.random.Generator) -> None:
    skin = identity.skin
    unit_px = canvas.unit_px
    for eye in (lm[36:42], lm[42:48]):
        upper, lower = _smooth(eye[0:4], 4), _smooth(eye[[3, 4, 5, 0]], 4)
        canvas.fill(np.vstack([upper, lower]), (0.93, 0.92, 0.9))
        width = np.linalg.norm(eye[3] - eye[0])
        centre = (eye[0] + eye[3]) / 2 + rng.normal(0, 0.04, 2) * width
        canvas.ellipse(centre, (0.072, 0.072), 0, identity.iris_colour)
        canvas.ellipse(centre, (0.03, 0.03), 0, (0.03, 0.03, 0.03))
        up = np.array([0.0, -0.13 * unit_px])
        canvas.fill(np.vstack([upper, upper[::-1] + up]), skin)  # lids hide the iris outside the opening
        canvas.fill(np.vstack([lower, lower[::-1] - up]), skin)
        canvas.lines([upper], (0.12, 0.08, 0.07), 0.022)
        canvas.lines([lower], _mix(skin, (0.2, 0.1, 0.1), 0.35), 0.01)
        canvas.lines([_smooth(eye[0:4], 4)[2:-2] + [0, -0.045 * unit_px]], _mix(skin, (0, 0, 0), 0.25), 0.01)


def _wrinkle_colour(skin, strength: float):
    return _mix(skin, (skin[0] * 0.45, skin[1] * 0.35, skin[2] * 0.33), strength)


def _draw_wrinkles(canvas, project, landmarks, lm, cues, identity, textures) -> None:
    skin = identity.skin
    width = 0.014

    def draw(curves_3d: list[np.ndarray], strength: float, w: float = width) -> None:
        if strength > 0.02:
            canvas.lines([_smooth(project(c)) for c in curves_3d], _wrinkle_colour(skin, strength), w)

    # Forehead lines (AU1 centre, AU2 sides), following the brows.
    brow_top = min(landmarks[17:27, 1].min(), -0.5)
    for row in range(3):
        y = brow_top - 0.1 - 0.075 * row + textures.normal(0, 0.01)
        centre = np.linspace(-0.28, 0.28, 5)
        wave = 0.012 * np.sin(centre * 7 + row)
        draw([np.stack([centre, y + wave + 0.03 * centre**2, np.full(5, 0.36)], axis=1)], cues["forehead_center"])
        for side in (-1, 1):
            lateral = side * np.linspace(0.3, 0.68, 4)
            draw([np.stack([lateral, y + 0.05 * (lateral**2), 0.36 - 0.25 * lateral**2], axis=1)],
                 cues["forehead_lateral"])
    # Glabella (AU4): vertical furrows between the inner brows.
    inner_r, inner_l = landmarks[21], landmarks[22]
    for t in (0.33, 0.67):
        x = inner_r[0] + t * (inner_l[0] - inner_r[0])
        draw([np.array([[x, inner_r[1] - 0.02, 0.38], [x * 1.3, inner_r[1] + 0.05, 0.38], [x * 1.2, inner_r[1] + 0.1, 0.38]])],
             cues["glabella"])
    # Crow's feet (AU6) at the outer eye corners; lower-lid furrow (AU6/AU7); cheek raise (AU6/AU12).
    for corner, lower, side in ((36, [41, 40], -1), (45, [46, 47], 1)):
        c = landmarks[corner]
        draw([np.array([c + [side * 0.04, dy * 0.4, 0], c + [side * 0.13, dy, -0.05]]) for dy in (-0.06, 0.0, 0.07)],
             cues["crows_feet"])
        lid = landmarks[[corner, *lower]]
        draw([_offset(lid, dy=0.055) + [0, 0, 0.02]], cues["lower_lid_furrow"], 0.012)
        cheek = (landmarks[corner] + landmarks[48 if side < 0 else 54]) / 2 + [side * 0.05, -0.02 - 0.05 * cues["cheek_raise"], 0.1]
        if cues["cheek_raise"] > 0.02:
            canvas.ellipse(project(cheek)[0], (0.16, 0.1), 0, _mix(skin, (1, 0.85, 0.8), 0.18 * cues["cheek_raise"]))
    # Nose wrinkles (AU9) across the bridge.
    for t in (0.3, 0.45, 0.6):
        y = landmarks[27, 1] + t * (landmarks[30, 1] - landmarks[27, 1]) * 0.8
        draw([np.array([[-0.07, y, 0.5], [0, y - 0.01, 0.52], [0.07, y, 0.5]])], cues["nose_wrinkles"], 0.012)
    # Nasolabial folds (neutral depth + AU10/AU12), from the nose wing past the lip corner.
    for wing, corner, side in ((31, 48, -1), (35, 54, 1)):
        a, b = landmarks[wing], landmarks[corner]
        fold = np.array([a + [side * 0.07, -0.02, 0], b + [side * 0.08, -0.09, 0], b + [side * 0.06, 0.06, 0]])
        draw([fold], cues["nasolabial"], 0.018)
        draw([np.array([b + [side * 0.04, -0.045, 0], b + [side * 0.06, -0.005, 0], b + [side * 0.05, 0.035, 0]])],
             cues["dimples"], 0.028)
        draw([np.array([b + [side * 0.01, 0.02, 0], b + [side * 0.03, 0.07, 0], b + [side * 0.04, 0.12, 0]])],
             cues["corner_lines"], 0.014)
        draw([np.array([b + [side * 0.04, 0.03, 0], b + [side * 0.1, 0.12, 0], b + [side * 0.14, 0.22, 0]])],
             cues["lip_stretch"], 0.012)
    # Lip press (AU24) bulges above and below the lips.
    draw([_offset(landmarks[49:54], dy=-0.05), _offset(landmarks[55:60], dy=0.045)], cues["lip_press_bulge"], 0.012)
    # Chin (AU17): mentolabial sulcus deepens, chin boss wrinkles ("orange peel").
    draw([_offset(landmarks[[58, 57, 56]], dy=0.07)], 0.2 + 0.6 * cues["chin_wrinkles"], 0.014)
    if cues["chin_wrinkles"] > 0.02:
        spots = lm[8] + (textures.uniform(-1, 1, (9, 2)) * [0.13, 0.06] + [0, -0.11]) * canvas.unit_px
        strokes = [np.array([p, p + [0.025 * canvas.unit_px, 0.006 * canvas.unit_px]]) for p in spots]
        canvas.lines(strokes, _wrinkle_colour(skin, cues["chin_wrinkles"]), 0.012)


def _draw_beard(canvas: _Canvas, lm: np.ndarray, identity: Identity, textures: np.random.Generator) -> None:
    unit_px = canvas.unit_px
    region = np.vstack([lm[2:15], lm[54] + [0.05 * unit_px, 0], lm[[55, 56, 57, 58, 59]] + [0, 0.03 * unit_px],
                        lm[48] + [-0.05 * unit_px, 0]])
    canvas.fill(region, _mix(identity.skin, identity.hair_colour, 0.45 * identity.beard))
    # Stubble: identity-fixed points between the jaw line and the lower lip.
    count = int(80 * identity.beard)
    jaw = lm[textures.integers(3, 14, count)]
    lip = lm[textures.integers(55, 60, count)]
    t = textures.uniform(0.05, 0.9, (count, 1))
    points = jaw * (1 - t) + lip * t
    strokes = [np.array([p, p + textures.normal(0, 0.012 * unit_px, 2)]) for p in points]
    canvas.lines(strokes, identity.hair_colour, 0.012)


def _draw_brows(canvas: _Canvas, project, landmarks: np.ndarray, identity: Identity) -> None:
    thickness = identity.brow_thickness * np.array([0.6, 0.8, 1.0, 1.1, 1.15])
    colour = _mix(identity.hair_colour, identity.skin, 0.2)
    for brow in (landmarks[17:22], landmarks[26:21:-1]):  # outer -> inner for both
        top = project(_offset(brow, dy=0) - np.outer(thickness * 0.55, [0, 1, 0]))
        bottom = project(brow + np.outer(thickness * 0.45, [0, 1, 0]))
        canvas.fill(np.vstack([_smooth(top, 3), _smooth(bottom[::-1], 3)]), colour)


def _draw_nose(canvas: _Canvas, lm: np.ndarray, skin, style: CaptureStyle) -> None:
    shade_side = -1 if style.light[0] > 0 else 1
    unit_px = canvas.unit_px
    bridge = lm[27:31] + [shade_side * 0.06 * unit_px, 0]
    canvas.lines([_smooth(bridge)], _mix(skin, (0, 0, 0), 0.18), 0.02)
    for wing in (lm[[31, 32]], lm[[35, 34]]):
        outer = np.vstack([wing[0] + [0, -0.08 * unit_px], wing[0] + [(wing[0] - wing[1])[0] * 0.3, -0.02 * unit_px],
                           wing[0] + [0, 0.015 * unit_px], wing[1] + [0, 0.01 * unit_px]])
        canvas.lines([_smooth(outer)], _mix(skin, (0, 0, 0), 0.35), 0.014)
        nostril = (wing[0] * 0.4 + wing[1] * 0.6) + [0, -0.005 * unit_px]
        canvas.ellipse(nostril, (0.045, 0.02), 0, _mix(skin, (0, 0, 0), 0.7))


def _draw_mouth(canvas: _Canvas, lm: np.ndarray, identity: Identity) -> None:
    inner_upper, inner_lower = lm[60:65], lm[[60, 67, 66, 65, 64]]
    gap = inner_lower[:, 1] - inner_upper[:, 1]
    if gap.max() > 0.5:
        canvas.fill(np.vstack([_smooth(inner_upper), _smooth(inner_lower[::-1])]), (0.22, 0.06, 0.07))
        teeth = inner_upper + np.stack([np.zeros(5), np.minimum(0.08 * canvas.unit_px, 0.85 * gap)], axis=1)
        canvas.fill(np.vstack([_smooth(inner_upper), _smooth(teeth[::-1])]), (0.9, 0.88, 0.82))
    lips = identity.lip_colour
    canvas.fill(np.vstack([_smooth(lm[48:55]), _smooth(inner_upper[::-1])]), lips)
    canvas.fill(np.vstack([_smooth(lm[[54, 55, 56, 57, 58, 59, 48]]), _smooth(inner_lower)]), _mix(lips, (1, 1, 1), 0.08))
    canvas.lines([_smooth(inner_upper)], _mix(identity.lip_colour, (0, 0, 0), 0.55), 0.012)


def _draw_glasses(canvas: _Canvas, project, landmarks: np.ndarray) -> None:
    angle = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rims = []
    for eye in (landmarks[36:42], landmarks[42:48]):
        centre = eye.mean(axis=0) + [0, 0.01, 0]
        ring = np.stack([centre[0] + 0.24 * np.cos(angle), centre[1] + 0.15 * np.sin(angle), np.full(24, 0.45)], axis=1)
        rims.append(project(ring))
    frame = (0.08, 0.07, 0.07)
    canvas.lines(rims, frame, 0.025, closed=True)
    inner_r, inner_l = rims[0][0], rims[1][12]
    canvas.lines([np.array([inner_r, (inner_r + inner_l) / 2 + [0, -0.02 * canvas.unit_px], inner_l])], frame, 0.025)
    canvas.lines([np.array([rims[0][12], project(np.array([[-0.95, -0.2, -0.2]]))[0]]),
                  np.array([rims[1][0], project(np.array([[0.95, -0.2, -0.2]]))[0]])], frame, 0.02)


_SHADING_GRID = 32  # the smooth shading field is computed on a coarse grid, then resized


def _capture(image: np.ndarray, head_outline: np.ndarray, style: CaptureStyle, rng: np.random.Generator,
             noise_scale: float) -> np.ndarray:
    """Directional shading over the head, colour balance, contrast, blur and sensor noise."""
    size = image.shape[0]
    grid = (np.arange(_SHADING_GRID, dtype=np.float32) + 0.5) * (size / _SHADING_GRID)
    centre = head_outline.mean(axis=0)
    radii = np.maximum(head_outline.max(axis=0) - head_outline.min(axis=0), 1.0) / 2
    nx = ((grid - centre[0]) / radii[0])[None, :]
    ny = ((grid - centre[1]) / radii[1])[:, None]
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    light = np.array(style.light) + rng.normal(0, style.light_jitter, 3)
    light = light / np.linalg.norm(light)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    shade = cv2.resize((style.ambient + style.diffuse * lambert).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_LINEAR)
    gains = np.asarray(style.colour_gains, np.float32) * style.contrast
    out = image.astype(np.float32) * shade[..., None] * gains + 128.0 * (1 - style.contrast)
    sigma = style.blur_sigma * size / 112 * noise_scale
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out += rng.standard_normal(out.shape, dtype=np.float32) * (style.noise_sigma * noise_scale)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB image (the capture chain's compression step)."""
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return buffer.tobytes()
