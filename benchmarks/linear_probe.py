"""Linear probe on cached features vs re-encoding every epoch, measured side by side.

    python benchmarks/linear_probe.py [--frames 1024] [--epochs 20] [--size 64]

The frozen encoder's features are extracted once and the per-AU linear heads train on them (what
aunce-bench does); the alternative runs the frozen encoder over every frame in every epoch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from aunce_bench.data.loaders import FrameSet
from aunce_bench.models import create_encoder
from aunce_bench.specs import OptimSpec
from aunce_bench.training.common import TrainContext
from aunce_bench.training.probe import extract_features, train_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device("cpu")
    ctx = TrainContext(device, 0)
    rng = np.random.default_rng(0)
    frames = FrameSet(torch.from_numpy(rng.integers(0, 255, (args.frames, 3, args.size, args.size), dtype=np.uint8)),
                      rng.integers(0, 2, (args.frames, 12)).astype(np.int8))
    encoder = create_encoder("resnet18", 12)
    spec = OptimSpec(optimizer="adam", lr=1e-3, batch_size=256, epochs=args.epochs)

    started = time.perf_counter()
    features = extract_features(encoder, frames, args.size, ctx)
    train_probe(features, frames.labels, None, None, spec, 0.5, TrainContext(device, 0))
    cached = time.perf_counter() - started

    started = time.perf_counter()
    one_epoch = spec.model_copy(update={"epochs": 1})
    for _ in range(args.epochs):
        features = extract_features(encoder, frames, args.size, ctx)
        train_probe(features, frames.labels, None, None, one_epoch, 0.5, TrainContext(device, 0))
    reencoded = time.perf_counter() - started

    print(f"linear probe, {args.frames} frames at {args.size}px, {args.epochs} epochs, resnet18 on {device}")
    print(f"  cached features (extract once)  : {cached:7.2f} s")
    print(f"  re-encode every epoch           : {reencoded:7.2f} s")
    print(f"  speed-up of caching             : {reencoded / cached:7.1f}x")


if __name__ == "__main__":
    main()
