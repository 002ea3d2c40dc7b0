"""Geometry of a SynthAU face: an identity, its 68 landmarks in 3D, and how each AU moves them.

Coordinates are face-centred: x towards the image right, y down, z towards the camera, and one unit is
half the width of an average face. Landmarks follow the iBUG 68-point order (jaw 0-16, brows 17-26,
nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67); indices below 36 on the image-left side
are the subject's right.

An AU acts in two ways, as in FACS: it changes the face's shape first, by displacing landmarks
(`AU_DISPLACEMENTS`, given at intensity 5, and `LIP_NARROWING`: AU23 and AU24 narrow the red parts of the
lips by a share of their own height), then the skin's appearance (furrows, wrinkles, bulges:
`appearance`). Identities carry neutral versions of the same cues (high brows, upturned mouth corners, deep
nasolabial folds, narrow eyes) so that, as on real faces, a cue alone does not tell whether an AU is active.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aunce_bench.data.synth.label_stats import RENDERED_AUS

AU_COLUMN = {au: column for column, au in enumerate(RENDERED_AUS)}

# Index of the mirror-image landmark (left <-> right), iBUG order.
MIRROR = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 16, -1))  # brows
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]  # inner lips
)


@dataclass(frozen=True)
class Identity:
    """One synthetic subject: face shape, feature placement, colouring and occluders."""

    male: bool
    face_width: float
    face_length: float
    jaw_squareness: float  # superellipse exponent of the jaw line (2 round, 3 square)
    eye_spacing: float
    eye_width: float
    eye_openness: float  # neutral lid aperture; narrow eyes resemble AU6/AU7
    brow_height: float  # neutral brow offset; high brows resemble AU1+2, low brows AU4
    brow_inner_tilt: float  # neutral inner-brow raise; resembles AU1
    brow_thickness: float
    nose_length: float
    nose_width: float
    mouth_width: float
    upper_lip: float
    lower_lip: float
    mouth_corner: float  # neutral corner height; upturned corners resemble AU12, downturned AU15
    age: float  # 0..1, depth of neutral forehead lines, crow's feet and glabella lines
    nasolabial: float  # neutral nasolabial fold depth; resembles AU10/AU12
    skin: tuple[float, float, float]  # RGB 0..1
    lip_colour: tuple[float, float, float]
    hair_colour: tuple[float, float, float]
    iris_colour: tuple[float, float, float]
    hair_style: int  # 0 short, 1 long, 2 fringe over the forehead (hides AU1/AU2 forehead lines)
    hairline: float  # y of the hairline in face units
    glasses: bool  # frames partly hide AU6/AU7 lid and cheek cues
    beard: float  # 0 none .. 1 full; hides AU17 chin wrinkles and AU14 dimples
    seed: int  # per-identity texture (stubble, wrinkle jitter)


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in (1 - t) * a + t * b)


_SKIN_LIGHT, _SKIN_DARK = np.array([0.96, 0.80, 0.70]), np.array([0.36, 0.22, 0.14])
_HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.25, 0.16, 0.09], [0.45, 0.30, 0.16], [0.75, 0.60, 0.38], [0.55, 0.52, 0.50]]
)
_IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.35, 0.45, 0.6], [0.3, 0.42, 0.25], [0.12, 0.08, 0.05]])


def sample_identity(rng: np.random.Generator, nuisance: float = 1.0) -> Identity:
    """Draw an identity; `nuisance` scales the neutral look-alikes of AU cues (0 removes them)."""

    def spread(sd: float) -> float:
        return float(rng.normal(0.0, sd))

    def confound(sd: float) -> float:
        return float(rng.normal(0.0, sd * nuisance))

    male = bool(rng.random() < 0.5)
    tone = float(rng.beta(2.0, 2.0))
    skin = np.array(_lerp(_SKIN_LIGHT, _SKIN_DARK, tone)) * (1 + rng.normal(0, 0.03, 3))
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * (1 + rng.normal(0, 0.08, 3))
    lips = skin * np.array([0.92, 0.62, 0.62]) * (1 + rng.normal(0, 0.04, 3))
    return Identity(
        male=male,
        face_width=1.0 + spread(0.05) + (0.03 if male else -0.02),
        face_length=1.0 + spread(0.05),
        jaw_squareness=float(np.clip(2.4 + spread(0.3) + (0.3 if male else 0.0), 1.8, 3.4)),
        eye_spacing=0.42 + spread(0.025),
        eye_width=0.17 + spread(0.012),
        eye_openness=float(np.clip(1.0 + confound(0.15), 0.55, 1.5)),
        brow_height=confound(0.035) + (0.015 if male else -0.01),
        brow_inner_tilt=confound(0.025),
        brow_thickness=float(np.clip(0.05 + spread(0.01) + (0.015 if male else 0.0), 0.025, 0.09)),
        nose_length=1.0 + spread(0.06),
        nose_width=1.0 + spread(0.08),
        mouth_width=1.0 + spread(0.06),
        upper_lip=float(np.clip(1.0 + spread(0.2), 0.5, 1.6)),
        lower_lip=float(np.clip(1.0 + spread(0.2), 0.5, 1.6)),
        mouth_corner=confound(0.025),
        age=float(np.clip(rng.beta(1.6, 3.0) * (0.5 + nuisance / 2), 0.0, 1.0)),
        nasolabial=float(np.clip(abs(confound(0.25)) + 0.05, 0.0, 0.8)),
        skin=tuple(float(v) for v in np.clip(skin, 0, 1)),
        lip_colour=tuple(float(v) for v in np.clip(lips, 0, 1)),
        hair_colour=tuple(float(v) for v in np.clip(hair, 0, 1)),
        iris_colour=tuple(float(v) for v in _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]),
        hair_style=int(rng.choice(3, p=[0.5, 0.3, 0.2] if male else [0.2, 0.55, 0.25])),
        hairline=-0.98 + spread(0.06),
        glasses=bool(rng.random() < 0.2),
        beard=float(rng.uniform(0.4, 1.0)) if male and rng.random() < 0.35 else 0.0,
        seed=int(rng.integers(2**31)),
    )


def neutral_landmarks(identity: Identity) -> np.ndarray:
    """The identity's 68 landmarks [68, 3] with every AU at intensity 0."""
    points = np.zeros((68, 3))
    # Jaw: a superellipse from ear level (subject's right) round the chin to ear level (left).
    t = np.linspace(0.0, 1.0, 17)
    exponent = 2.0 / identity.jaw_squareness
    cos, sin = np.cos(np.pi * t), np.sin(np.pi * t)
    points[0:17, 0] = -0.93 * np.sign(cos) * np.abs(cos) ** exponent
    points[0:17, 1] = -0.22 + 1.22 * np.abs(sin) ** exponent
    points[0:17, 2] = -0.45 + 0.7 * np.abs(sin) ** 2

    # Brows: inner end near the nose bridge, arched.
    s = np.linspace(0.0, 1.0, 5)  # 0 outer .. 1 inner
    brow_x = -(0.80 - 0.66 * s)
    brow_y = -0.48 - 0.07 * np.sin(np.pi * (0.35 + 0.6 * s)) + identity.brow_height - identity.brow_inner_tilt * s**2
    points[17:22] = np.stack([brow_x, brow_y, 0.22 + 0.14 * s], axis=1)

    # Nose bridge (27-30) and base (31-35).
    length = identity.nose_length
    points[27:31] = np.stack([np.zeros(4), -0.26 + np.linspace(0, 0.46, 4) * length, np.linspace(0.34, 0.62, 4)], axis=1)
    base_x = np.array([-0.19, -0.10, 0.0, 0.10, 0.19]) * identity.nose_width
    points[31:36] = np.stack([base_x, 0.24 * length + np.array([0, 0.025, 0.04, 0.025, 0]), [0.38, 0.45, 0.5, 0.45, 0.38]], axis=1)

    # Right eye (36 outer corner, 37-38 upper lid, 39 inner corner, 40-41 lower lid).
    cx, w = -identity.eye_spacing, identity.eye_width
    up, low = 0.075 * identity.eye_openness, 0.06 * identity.eye_openness
    points[36:42] = [
        [cx - w, -0.19, 0.18],
        [cx - 0.35 * w, -0.19 - up, 0.25],
        [cx + 0.35 * w, -0.19 - up * 0.95, 0.26],
        [cx + w, -0.18, 0.22],
        [cx + 0.35 * w, -0.19 + low, 0.25],
        [cx - 0.35 * w, -0.19 + low, 0.24],
    ]

    # Lips: outer contour 48-59 (48 right corner, upper lip to 54, lower lip back) and inner 60-67.
    mw = 0.36 * identity.mouth_width
    upper, lower = 0.10 * identity.upper_lip, 0.12 * identity.lower_lip  # red parts: about the adult mean heights
    y0, corner = 0.58, 0.58 - identity.mouth_corner
    points[48:55] = [
        [-mw, corner, 0.30],
        [-0.62 * mw, y0 - 0.8 * upper, 0.40],
        [-0.22 * mw, y0 - upper - 0.01, 0.45],
        [0.0, y0 - 0.85 * upper, 0.46],
        [0.22 * mw, y0 - upper - 0.01, 0.45],
        [0.62 * mw, y0 - 0.8 * upper, 0.40],
        [mw, corner, 0.30],
    ]
    points[55:60] = [
        [0.6 * mw, y0 + 0.8 * lower, 0.38],
        [0.25 * mw, y0 + lower, 0.42],
        [0.0, y0 + lower + 0.005, 0.43],
        [-0.25 * mw, y0 + lower, 0.42],
        [-0.6 * mw, y0 + 0.8 * lower, 0.38],
    ]
    points[60:65] = [
        [-0.88 * mw, corner, 0.31],
        [-0.4 * mw, y0 + 0.002, 0.40],
        [0.0, y0 + 0.004, 0.41],
        [0.4 * mw, y0 + 0.002, 0.40],
        [0.88 * mw, corner, 0.31],
    ]
    points[65:68] = points[[63, 62, 61]]

    # Mirror the subject's right side onto the left.
    right_side = [*range(17, 22), *range(36, 42)]
    points[MIRROR[right_side]] = points[right_side] * [-1, 1, 1]
    points[:, 0] *= identity.face_width
    points[:, 1] *= identity.face_length
    return points


def _symmetric(moves: dict[int, tuple[float, float, float]]) -> np.ndarray:
    """A [68, 3] displacement from moves given on one side; mirrored landmarks get the mirrored move."""
    field = np.zeros((68, 3))
    for index, (dx, dy, dz) in moves.items():
        field[index] = (dx, dy, dz)
        field[MIRROR[index]] = (-dx, dy, dz)
    return field


def _jaw_drop() -> np.ndarray:
    field = np.zeros((68, 3))
    weight = np.sin(np.linspace(0, np.pi, 17)) ** 1.5
    field[0:17, 1] = 0.16 * weight
    field[[55, 56, 57, 58, 59]] = (0, 0.13, -0.02)
    field[[65, 66, 67]] = (0, 0.11, -0.02)
    field[[48, 54, 60, 64]] = (0, 0.05, 0)
    field[[48, 60]] += (0.02, 0, 0)
    field[[54, 64]] += (-0.02, 0, 0)
    field[[49, 50, 51, 52, 53, 61, 62, 63]] = (0, 0.02, 0)
    return field


# Landmark displacement of each AU at intensity 5 (FACS appearance changes, simplified).
AU_DISPLACEMENTS: dict[int, np.ndarray] = {
    1: _symmetric({21: (0.01, -0.13, 0), 20: (0, -0.09, 0), 19: (0, -0.04, 0), 38: (0, -0.01, 0)}),
    2: _symmetric({17: (-0.01, -0.13, 0), 18: (0, -0.10, 0), 19: (0, -0.05, 0), 37: (0, -0.012, 0)}),
    4: _symmetric({21: (0.06, 0.08, 0), 20: (0.04, 0.065, 0), 19: (0.02, 0.04, 0), 18: (0, 0.025, 0),
                   37: (0, 0.015, 0), 38: (0, 0.02, 0)}),
    5: _symmetric({37: (0, -0.05, 0.01), 38: (0, -0.05, 0.01)}),
    6: _symmetric({40: (0, -0.035, 0), 41: (0, -0.04, 0), 36: (0.012, -0.012, 0), 37: (0, 0.008, 0)}),
    7: _symmetric({40: (0, -0.045, 0.01), 41: (0, -0.05, 0.01), 37: (0, 0.015, 0), 38: (0, 0.012, 0),
                   39: (-0.005, 0, 0)}),
    9: _symmetric({31: (0.01, -0.045, 0), 32: (0, -0.04, 0), 29: (0, -0.02, 0), 21: (0.01, 0.04, 0),
                   49: (0, -0.02, 0), 50: (0, -0.02, 0)}) + _symmetric({33: (0, -0.035, 0)}),
    10: _symmetric({49: (0, -0.04, 0.01), 50: (0, -0.065, 0.01), 61: (0, -0.055, 0.01), 31: (0, -0.015, 0)})
    + _symmetric({51: (0, -0.06, 0.01), 62: (0, -0.05, 0.01)}),
    12: _symmetric({48: (-0.10, -0.09, -0.02), 60: (-0.09, -0.085, -0.02), 49: (-0.03, -0.03, 0),
                    59: (-0.04, -0.04, 0), 58: (-0.01, -0.01, 0)}),
    14: _symmetric({48: (0.035, -0.02, -0.05), 60: (0.03, -0.015, -0.05), 49: (0.01, 0, -0.01), 59: (0.01, 0, -0.01)}),
    15: _symmetric({48: (-0.015, 0.10, 0), 60: (-0.012, 0.095, 0), 49: (0, 0.03, 0), 59: (-0.005, 0.05, 0),
                    58: (0, 0.02, 0)}),
    17: _symmetric({55: (0, -0.045, 0.02), 56: (0, -0.05, 0.02), 65: (0, -0.03, 0), 66: (0, -0.03, 0),
                    7: (0, -0.02, 0.02), 6: (0, -0.01, 0), 48: (0, 0.02, 0), 60: (0, 0.02, 0)})
    + _symmetric({57: (0, -0.05, 0.02), 8: (0, -0.025, 0.03)}),
    20: _symmetric({48: (-0.10, 0.015, -0.01), 60: (-0.09, 0.015, -0.01), 49: (-0.04, 0.01, 0),
                    59: (-0.04, -0.01, 0), 50: (-0.015, 0.01, 0), 58: (-0.015, -0.01, 0)}),
    # AU23 and AU24 narrow the red parts (LIP_NARROWING); the fields add what else moves: AU23 draws the corners
    # in and rolls the lips in, AU24 presses the lips back against the teeth
    23: _symmetric({48: (0.04, 0, -0.01), 60: (0.035, 0, -0.01), 49: (0.01, 0, -0.015), 59: (0.01, 0, -0.015)})
    + _symmetric({51: (0, 0, -0.015), 57: (0, 0, -0.015)}),
    24: _symmetric({49: (0, 0, -0.02), 50: (0, 0, -0.02), 58: (0, 0, -0.02), 59: (0, 0, -0.02),
                    61: (0, 0.005, 0), 67: (0, -0.005, 0), 48: (-0.01, 0, 0)})
    + _symmetric({51: (0, 0, -0.02), 57: (0, 0, -0.02)}),
    25: _symmetric({61: (0, -0.02, 0), 67: (0, 0.07, 0), 59: (0, 0.045, 0), 58: (0, 0.05, 0), 49: (0, -0.01, 0)})
    + _symmetric({62: (0, -0.02, 0), 66: (0, 0.075, 0), 57: (0, 0.05, 0)}),
    26: _jaw_drop(),
}


# Share of each red part's height that an AU removes at intensity 5 (FACS: AU23 tightens the lips, making their
# red parts narrower; AU24 presses them together, narrowing them further). Together they remove at most
# MAX_NARROWING.
LIP_NARROWING = {23: 0.5, 24: 0.65}
MAX_NARROWING = 0.85
_OUTER_UPPER, _INNER_UPPER = [49, 50, 51, 52, 53], [60, 61, 62, 63, 64]
_OUTER_LOWER, _INNER_LOWER = [55, 56, 57, 58, 59], [64, 65, 66, 67, 60]


def _narrow_lips(points: np.ndarray, share: float) -> None:
    """Move the outer lip contours `share` of the way towards the inner ones (at the same x), in place."""
    for outer, inner in ((_OUTER_UPPER, _INNER_UPPER), (_OUTER_LOWER, _INNER_LOWER)):
        order = np.argsort(points[inner, 0])
        line = np.interp(points[outer, 0], points[inner, 0][order], points[inner, 1][order])
        points[outer, 1] += share * (line - points[outer, 1])


def expressive_landmarks(neutral: np.ndarray, intensities: np.ndarray, cue_strength: float = 1.0) -> np.ndarray:
    """Landmarks [68, 3] of a face showing AU `intensities` (0-5, RENDERED_AUS order)."""
    points = neutral.copy()
    for au, field in AU_DISPLACEMENTS.items():
        level = intensities[AU_COLUMN[au]] / 5.0
        if level > 0:
            points += (cue_strength * level) * field
    narrowing = sum(min(1.0, cue_strength * intensities[AU_COLUMN[au]] / 5.0) * share
                    for au, share in LIP_NARROWING.items())
    if narrowing > 0:
        _narrow_lips(points, min(narrowing, MAX_NARROWING))
    # Inner lips never cross: the lower inner lip stays at or below the upper one.
    points[65:68, 1] = np.maximum(points[65:68, 1], points[[63, 62, 61], 1])
    return points


def appearance(identity: Identity, intensities: np.ndarray, cue_strength: float = 1.0) -> dict[str, float]:
    """Strength (0..1) of each skin-appearance cue, from the AUs and the identity's neutral wrinkles."""

    def au(number: int) -> float:
        return min(1.0, cue_strength * float(intensities[AU_COLUMN[number]]) / 5.0)

    age = identity.age
    return {
        "forehead_center": min(1.0, 0.9 * au(1) + 0.3 * au(2) + 0.35 * age),
        "forehead_lateral": min(1.0, 0.9 * au(2) + 0.2 * au(1) + 0.3 * age),
        "glabella": min(1.0, 0.95 * au(4) + 0.25 * au(9) + 0.3 * age),
        "crows_feet": min(1.0, 0.95 * au(6) + 0.35 * age),
        "lower_lid_furrow": min(1.0, 0.6 * au(6) + 0.8 * au(7) + 0.15 * age),
        "cheek_raise": min(1.0, 0.8 * au(6) + 0.15 * au(12)),
        "nose_wrinkles": au(9),
        "nasolabial": min(1.0, identity.nasolabial + 0.5 * au(10) + 0.6 * au(12) + 0.2 * au(6) + 0.2 * au(9)),
        "dimples": au(14),
        "corner_lines": au(15),
        "chin_wrinkles": au(17),
        "lip_press_bulge": max(au(24), 0.5 * au(23)),
        "lip_stretch": au(20),
    }
