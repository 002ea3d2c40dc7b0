"""Cue audit of SynthAU: how, and how strongly, the renderer expresses each AU at a given image size.

For identities drawn from a seed no protocol uses, each AU is rendered alone at intensity 0 and at
`AUDIT_INTENSITY` (frontal, the same capture noise for both), and measured inside the AU's region (the box
around the landmarks it moves, plus a margin):

- `geometry_px`: the largest landmark displacement, in pixels of the image;
- `change`: the RMS pixel change (0-255 scale) of the whole cue, and of its two parts rendered apart:
  `geometry_change` (landmarks moved, skin unchanged) and `appearance_change` (wrinkles, bulges and
  furrows at the neutral landmarks);
- `brightness_share`: the share of the change's energy along the grey axis (equal change of R, G and B);
  the rest is a change of colour, which grayscale views remove and hue/saturation jitter mimics;
- `identity_spread`: the RMS spread of the same region's pixels across neutral identities, and
  `cue_to_spread` = change / spread: below about 0.5 a cue is smaller than the faces' own differences.

`profile_offset_px` compares two profiles' capture styles: how far the AU's landmarks sit apart when the same
neutral faces are captured in the profile's style and in `other`'s. When that offset exceeds `geometry_px`, a
position cue learned on one profile reads the other's neutral faces as active (or inactive) ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aunce_bench.data.synth.face import (AU_COLUMN, AU_DISPLACEMENTS, expressive_landmarks, neutral_landmarks,
                                         sample_identity)
from aunce_bench.data.synth.generate import IDENTITY_STREAM, RENDER_STREAM, keyed_rng
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, render_face

AUDIT_SEED = 0xA0D17  # no protocol, pool or test draws identities from this seed
AUDIT_INTENSITY = 3.0
REGION_MARGIN = 0.12  # face units around the AU's landmarks


@dataclass(frozen=True)
class CueRow:
    au: int
    profile: str
    size: int
    geometry_px: float
    change: float
    geometry_change: float
    appearance_change: float
    brightness_share: float
    identity_spread: float
    cue_to_spread: float
    profile_offset_px: float | None


@dataclass(frozen=True)
class _Face:
    image: np.ndarray  # float [S, S, 3]
    landmarks: np.ndarray  # [68, 2] px


def moved_landmarks(au: int) -> np.ndarray:
    """Indices of the landmarks that `au` displaces."""
    return np.flatnonzero(np.abs(AU_DISPLACEMENTS[au]).sum(axis=1) > 0)


def _renders(profile: str, size: int, identities: int, au: int | None,
             style_of: str | None = None) -> dict[str, list[_Face]]:
    """Per identity of `profile`: the neutral face and, for `au`, the full cue, its geometry alone and its
    appearance alone, captured in the style of `style_of` (default: the profile's own)."""
    chosen = PROFILES[profile]
    style = PROFILES[style_of or profile].style
    out: dict[str, list[_Face]] = {"neutral": [], "full": [], "geometry": [], "appearance": []}
    for subject in range(identities):
        identity = sample_identity(keyed_rng(AUDIT_SEED, chosen.key, IDENTITY_STREAM, subject))
        neutral = neutral_landmarks(identity)
        rest = np.zeros(len(RENDERED_AUS))
        active = rest.copy()
        if au is not None:
            active[AU_COLUMN[au]] = AUDIT_INTENSITY
        moved = expressive_landmarks(neutral, active)
        conditions = {"neutral": (neutral, rest), "full": (moved, active), "geometry": (moved, rest),
                      "appearance": (neutral, active)}
        for name, (landmarks, levels) in conditions.items():
            if au is None and name != "neutral":
                continue
            rng = keyed_rng(AUDIT_SEED, chosen.key, RENDER_STREAM, subject)  # the same capture for every condition
            face = render_face(identity, landmarks, levels, Pose(), style, size, rng)
            out[name].append(_Face(face.image.astype(np.float64), face.landmarks))
    return out


def _region(faces: list[_Face], au: int, size: int, unit_px: float) -> tuple[slice, slice]:
    """The box (rows, columns) around the AU's landmarks on the mean neutral face."""
    points = np.mean([face.landmarks[moved_landmarks(au)] for face in faces], axis=0)
    margin = REGION_MARGIN * unit_px
    low = np.clip(np.floor(points.min(axis=0) - margin), 0, size - 1).astype(int)
    high = np.clip(np.ceil(points.max(axis=0) + margin) + 1, 1, size).astype(int)
    return slice(low[1], high[1]), slice(low[0], high[0])


def _rms(differences: np.ndarray) -> float:
    return float(np.sqrt(np.mean(differences**2)))


def audit(profile: str, size: int, identities: int = 24, other: str | None = None,
          aus: tuple[int, ...] | None = None) -> list[CueRow]:
    """One `CueRow` per AU (default: the profile's labelled AUs) at image `size`."""
    aus = aus or PROFILES[profile].labels.labelled_aus
    unit_px = PROFILES[profile].style.face_scale * size
    rows = []
    other_neutral = _renders(profile, size, identities, None, style_of=other)["neutral"] if other else None
    for au in aus:
        faces = _renders(profile, size, identities, au)
        rows_box, cols_box = _region(faces["neutral"], au, size, unit_px)
        neutral = np.stack([face.image[rows_box, cols_box] for face in faces["neutral"]])

        def change(name: str) -> np.ndarray:
            return np.stack([face.image[rows_box, cols_box] for face in faces[name]]) - neutral

        full = change("full")
        grey = 3 * float(np.mean(full.mean(axis=-1) ** 2))  # energy of the projection on (1, 1, 1) / sqrt(3)
        share = grey / max(float(np.mean(np.sum(full**2, axis=-1))), 1e-12)
        spread = float(np.sqrt(np.mean(neutral.var(axis=0))))
        moved = moved_landmarks(au)
        geometry = np.mean([np.linalg.norm(f.landmarks[moved] - n.landmarks[moved], axis=1).max()
                            for f, n in zip(faces["full"], faces["neutral"])])
        offset = None
        if other_neutral is not None:
            here = np.mean([face.landmarks[moved] for face in faces["neutral"]], axis=0)
            there = np.mean([face.landmarks[moved] for face in other_neutral], axis=0)
            offset = float(np.linalg.norm(there - here, axis=1).mean())
        rows.append(CueRow(au, profile, size, float(geometry), _rms(full), _rms(change("geometry")),
                           _rms(change("appearance")), share, spread, _rms(full) / max(spread, 1e-9),
                           offset))
    return rows

