"""SynthAU profiles: which AUs a synthetic "dataset" labels, their statistics, and its capture style.

Both profiles render all 17 AUs on every face. `bp4d` mimics BP4D (12 labelled AUs, 41 subjects, bright
frontal studio light, warm balance, sharp faces); `disfa` mimics DISFA (8 labelled AUs, 27 subjects, side
light, cool balance, softer, noisier, more loosely aligned faces, as from lower-resolution video). Both are
framed as `aunce-bench prepare` frames real datasets: faces aligned to one template (`FRAMING`), so a face
takes the same place in the crop whichever profile it comes from. Training on one and testing on the other is
a real domain shift: the shared AUs look the same, the pictures do not. Another package adds a `Profile` through
the entry-point group `aunce_bench.synth_profiles`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from aunce_bench.data.synth.label_stats import LABEL_STATISTICS, LabelStatistics
from aunce_bench.data.synth.render import CaptureStyle
from aunce_bench.registry import Registry


@dataclass(frozen=True)
class Profile:
    name: str
    labels: LabelStatistics
    style: CaptureStyle
    subject_prefix: str

    @property
    def key(self) -> int:
        """Integer mixed into every random stream, so two profiles never share identities or labels."""
        return zlib.crc32(self.name.encode())

    @property
    def dataset_name(self) -> str:
        return f"synth_{self.name}"


# Where alignment puts a face in the crop (face_scale: crop widths per face unit; eye_height: fraction of the
# crop height), common to the profiles as to every prepared dataset (`aunce_bench.data.landmarks.TEMPLATE` is
# measured on these faces). Profiles framed apart would move every cue's position between them by more than
# the smaller AUs move their landmarks.
FRAMING = {"face_scale": 0.40, "eye_height": 0.40}

BP4D_STYLE = CaptureStyle(
    background_top=(0.10, 0.10, 0.12),
    background_bottom=(0.20, 0.19, 0.19),
    **FRAMING,
    light=(0.0, -0.3, 1.0),
    ambient=0.55,
    diffuse=0.55,
    colour_gains=(1.06, 1.0, 0.93),
    contrast=1.05,
    blur_sigma=0.35,
    noise_sigma=2.0,
    jpeg_quality=92,
    alignment_jitter=0.015,
    light_jitter=0.08,
)

DISFA_STYLE = CaptureStyle(
    background_top=(0.62, 0.64, 0.62),
    background_bottom=(0.42, 0.45, 0.43),
    **FRAMING,
    light=(0.75, -0.25, 0.6),
    ambient=0.42,
    diffuse=0.62,
    colour_gains=(0.90, 1.0, 1.07),
    contrast=0.9,
    blur_sigma=0.9,
    noise_sigma=5.0,
    jpeg_quality=70,
    alignment_jitter=0.03,
    light_jitter=0.15,
)

PROFILES: Registry[Profile] = Registry("profile", "aunce_bench.synth_profiles")
for _profile in (Profile("bp4d", LABEL_STATISTICS["bp4d"], BP4D_STYLE, subject_prefix="B"),
                 Profile("disfa", LABEL_STATISTICS["disfa"], DISFA_STYLE, subject_prefix="D")):
    PROFILES.register(_profile.name)(_profile)
