"""SynthAU: the embedded synthetic AU face dataset (known true intensities, labels and head pose)."""

from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.generate import POSE_BINS, generate, load_or_generate
from aunce_bench.data.synth.profiles import PROFILES

__all__ = ["POSE_BINS", "PROFILES", "SynthConfig", "generate", "load_or_generate"]
