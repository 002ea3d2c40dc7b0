"""What a lent GPU does with the paper's setting, in one short run (bash benchmarks/gpu_check.sh).

    python benchmarks/gpu_check.py --out gpu_check.json            # on a CUDA machine, a few minutes
    python benchmarks/gpu_check.py --smoke --out smoke.json        # the same code path on a CPU, tiny shapes

1. CUDA and bf16 sanity, and the measured bf16 matrix-product peak (an 8192^3 product, mean of 10 after warm-up).
2. One AUNCE training step at the paper's shapes (Swin-B, two 224 px views of 32 faces, 12 AUs, bf16 autocast,
   AdamW): images/s, and the step's FLOPs (counted by torch's FlopCounterMode) per second as a fraction of the
   measured peak.
3. The `wce` step likewise (one view, class-weighted BCE).
4. A 2-epoch `full`-budget `aunce` run through the CLI (`--precision bf16 --init scratch`, no download) on a
   small SynthAU set rendered at 256 px: its status, mean F1 (meaningless after 2 epochs; the point is that the
   paper's path runs end to end) and wall time.
A JSON summary goes to --out; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from aunce_bench.data.loaders import contrastive_transform, supervised_transform
from aunce_bench.losses import aunce_loss, class_weights, weighted_bce
from aunce_bench.models import PerAULinear, create_encoder
from aunce_bench.models.backbones import input_normalisation

PAPER = {"backbone": "swin_base_patch4_window7_224", "crop": 224, "image": 256, "batch": 32, "steps": 10}
SMOKE = {"backbone": "resnet18", "crop": 56, "image": 64, "batch": 8, "steps": 2}
AUS = 12


def matmul_peak(device: torch.device, size: int, repeats: int = 10) -> float:
    """Measured bf16 matrix-product rate, TFLOP/s."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronise(device)
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e12


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(kind: str, shapes: dict, device: torch.device) -> dict:
    """Images/s and achieved TFLOP/s of the aunce (two views) or wce step, bf16 autocast, AdamW."""
    encoder = create_encoder(shapes["backbone"], AUS, image_size=shapes["crop"]).to(device)
    head = PerAULinear(AUS, encoder.dim, 1).to(device)
    parameters = list(encoder.parameters()) + (list(head.parameters()) if kind == "wce" else [])
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    normalisation = input_normalisation(encoder)
    augment = (contrastive_transform if kind == "aunce" else supervised_transform)(shapes["crop"], *normalisation)
    augment = augment.to(device)
    images = torch.randint(0, 255, (shapes["batch"], 3, shapes["image"], shapes["image"]), dtype=torch.uint8,
                           device=device)
    labels = torch.randint(0, 2, (shapes["batch"], AUS), device=device)
    weights = class_weights(labels.cpu()).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            if kind == "aunce":
                z1, z2 = encoder.embed(torch.cat([augment(images), augment(images)])).chunk(2)
                loss = aunce_loss(z1, z2, labels, positive_probs=(0.2, 0.6, 0.2))
            else:
                loss = weighted_bce(head(encoder(augment(images))), labels, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up (kernel selection, allocator)
    with FlopCounterMode(display=False) as counter:
        step()
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(shapes["steps"]):
        step()
    _synchronise(device)
    seconds = (time.perf_counter() - started) / shapes["steps"]
    views = 2 if kind == "aunce" else 1
    return {"images_per_s": views * shapes["batch"] / seconds, "step_s": seconds,
            "tflop_per_step": counter.get_total_flops() / 1e12,
            "tflop_per_s": counter.get_total_flops() / seconds / 1e12}


FULL_PROTOCOL = """\
name: gpu_check_synth
description: A small SynthAU set rendered at 256 px, for the GPU check's full-budget run.
data: {{source: synth, profile: bp4d, overrides: {{subjects: 12, sequences_per_subject: 2, frame_stride: 20, image_size: {image}}}}}
split: {{kind: kfold, n_folds: 3}}
budgets:
  quick: &small {{crop_size: {crop}, init: scratch}}
  standard: *small
  full: *small
"""
FULL_METHOD = """\
name: gpu_check_aunce
include: aunce
budgets:
  full: {{model: {{backbone: {backbone}}}, train: {{epochs: 2}}, probe: {{epochs: 2}}}}
"""


def full_run(shapes: dict, device: str, folder: Path) -> dict:
    """A 2-epoch full-budget aunce run through the CLI: status, mean F1, wall time and the CLI's last lines."""
    (folder / "protocol.yaml").write_text(FULL_PROTOCOL.format(**shapes))
    (folder / "method.yaml").write_text(FULL_METHOD.format(**shapes))
    command = [sys.executable, "-m", "aunce_bench.cli", "run", "--method", str(folder / "method.yaml"),
               "--protocol", str(folder / "protocol.yaml"), "--budget", "full", "--folds", "1", "--device", device,
               "--precision", "bf16", "--init", "scratch", "--db", str(folder / "results.sqlite")]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    summary = {"exit_code": result.returncode, "wall_s": time.perf_counter() - started,
               "last_lines": (result.stdout + result.stderr).strip().splitlines()[-3:]}
    if result.returncode == 0:
        listed = subprocess.run([sys.executable, "-m", "aunce_bench.cli", "results", "--db",
                                 str(folder / "results.sqlite"), "--format", "json"], capture_output=True, text=True)
        run = json.loads(listed.stdout)[0]
        summary.update(status=run["status"], mean_f1=run["mean_f1"], run_wall_s=run["wall_s"])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the code path only")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke on a CPU")
    shapes = SMOKE if args.smoke else PAPER
    summary = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)",
               "torch": torch.__version__, "shapes": shapes,
               "bf16_supported": device.type == "cpu" or torch.cuda.is_bf16_supported()}
    summary["matmul_bf16_tflops"] = matmul_peak(device, 512 if args.smoke else 8192)
    for kind in ("aunce", "wce"):
        summary[f"{kind}_step"] = step = training_step(kind, shapes, device)
        step["fraction_of_peak"] = step["tflop_per_s"] / summary["matmul_bf16_tflops"]
    with tempfile.TemporaryDirectory() as folder:
        summary["full_run"] = full_run(shapes, device.type, Path(folder))
    args.out.write_text(json.dumps(summary, indent=2))

    table = Table(title=f"GPU check: {summary['device']}, torch {summary['torch']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("bf16 matmul, TFLOP/s", f"{summary['matmul_bf16_tflops']:.1f}")
    for kind in ("aunce", "wce"):
        step = summary[f"{kind}_step"]
        table.add_row(f"{kind} step, images/s", f"{step['images_per_s']:.1f}")
        table.add_row(f"{kind} step, TFLOP/s (fraction of matmul peak)",
                      f"{step['tflop_per_s']:.2f} ({step['fraction_of_peak']:.3f})")
    full = summary["full_run"]
    table.add_row("full-budget run, 2 epochs", f"exit {full['exit_code']}, {full.get('status', 'no run stored')}, "
                  f"mean F1 {full.get('mean_f1', float('nan')):.3f}, {full['wall_s']:.0f} s")
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
