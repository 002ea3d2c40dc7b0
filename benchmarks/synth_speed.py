"""SynthAU generation speed: faces/s of one process and of the parallel generator, side by side.

    python benchmarks/synth_speed.py [--size 112] [--faces 600]

Prints faces/s for (a) the per-face render + JPEG loop in one process, (b) `generate` with one worker
(labels, rendering, Arrow table), (c) `generate` with all cores, and the parallel speed-up (c)/(b).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from aunce_bench.data.synth.face import expressive_landmarks, neutral_landmarks
from aunce_bench.data.synth.generate import generate, identity_for, label_process
from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, encode_jpeg, render_face


def render_loop(size: int, faces: int) -> float:
    config = SynthConfig(image_size=size).resolved()
    style = PROFILES["bp4d"].style
    levels = label_process("bp4d").sequence_intensities(0, 0, 0, 490)
    identities = [identity_for(config, subject) for subject in range(8)]
    neutrals = [neutral_landmarks(identity) for identity in identities]
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for i in range(faces):
        identity, neutral, level = identities[i % 8], neutrals[i % 8], levels[i % len(levels)]
        face = render_face(identity, expressive_landmarks(neutral, level), level, Pose(3, -2, 1), style, size, rng)
        encode_jpeg(face.image, style.jpeg_quality)
    return faces / (time.perf_counter() - started)


def generator(size: int, faces: int, workers: int) -> float:
    subjects = max(workers * 4, 8)
    frames = max(1, faces // subjects)
    config = SynthConfig(subjects=subjects, sequences_per_subject=1, frames_per_sequence=frames, frame_stride=1,
                         image_size=size)
    started = time.perf_counter()
    index = generate(config, workers=workers)
    return len(index) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--faces", type=int, default=600)
    args = parser.parse_args()
    label_process("bp4d")  # calibrate once, outside the timings
    cores = os.cpu_count() or 1
    loop = render_loop(args.size, args.faces)
    single = generator(args.size, args.faces, workers=1)
    parallel = generator(args.size, args.faces * cores, workers=cores)
    print(f"SynthAU speed at {args.size}x{args.size}")
    print(f"  render + JPEG, one process      : {loop:7.0f} faces/s")
    print(f"  generate(), 1 worker            : {single:7.0f} faces/s")
    print(f"  generate(), {cores} workers           : {parallel:7.0f} faces/s")
    print(f"  parallel speed-up               : {parallel / single:7.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
