"""Training throughput: the harness's training loops against the bare model, and execution options on this CPU.

    python benchmarks/throughput.py [--steps 3] [--rounds 2]

In one process, at the quick budget's shapes of synth_bp4d_3fold (resnet18 with the AU blocks and graph, 56 px
crops of 64 px SynthAU frames, batch 64, 12 AUs, init scratch):

(a) per method (wce, aunce): images/s of the harness's training loop (`train_supervised`, `pretrain_contrastive`
    on SynthAU frames: batch sampling, augmentation, the method's loss, optimiser and schedule) and of the bare
    model's forward + backward + optimiser step on pre-made tensors of the same shape. Their ratio is the
    pipeline's efficiency (target: at least 0.85 on 2 cores). aunce's images are both views (128 a step).
    Frames come from memory; "wce, streamed" reads them as streamed data (one decoding worker process, which
    shares the cores with training here), its harness call an epoch of 4x the steps with the worker's start-up.
(b) the bare wce step's images/s in bf16, channels-last and compiled, each relative to fp32 (compiling time is
    printed apart, not counted).

Measurements alternate in rounds (`--rounds` x `--steps` steps each), so that a change in the machine's load
hits every column alike; the first step of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from aunce_bench.data.loaders import DataLoading
from aunce_bench.data.noise import NoiseSpec
from aunce_bench.data.prepared import data_root
from aunce_bench.launch import run_frames
from aunce_bench.losses import bind_loss
from aunce_bench.protocols import plan_runs
from aunce_bench.recipes import RECIPES
from aunce_bench.specs import RunSpec, load_method, load_protocol
from aunce_bench.training.common import ExecutionOptions, TrainContext, make_optimizer
from aunce_bench.training.contrastive import pretrain_contrastive
from aunce_bench.training.supervised import train_supervised

PROTOCOL, BUDGET = "synth_bp4d_3fold", "quick"
CPU = torch.device("cpu")


def planned(method: str) -> RunSpec:
    return plan_runs(load_method(method), load_protocol(PROTOCOL), BUDGET, [1], [0], NoiseSpec.parse("none"),
                     init="scratch")[0]


class Measured:
    """A step function timed over rounds: images/s of the timed calls. `warm_up` (default: one `step`) runs first,
    not counted."""

    def __init__(self, step: Callable[[], None], images_per_call: int, warm_up: Callable[[], None] | None = None):
        self.step, self.images_per_call = step, images_per_call
        self.seconds, self.images = 0.0, 0
        (warm_up or step)()

    def measure(self, calls: int) -> None:
        started = time.perf_counter()
        for _ in range(calls):
            self.step()
        self.seconds += time.perf_counter() - started
        self.images += calls * self.images_per_call

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def bare_step(model: torch.nn.Module, forward: Callable, batch: torch.Tensor, run: RunSpec,
              ctx: TrainContext) -> Callable[[], None]:
    """Forward + backward + optimiser step of `model` on one pre-made batch, with the run's optimiser."""
    optimizer = make_optimizer(model.parameters(), run.method.train)
    scaler = ctx.grad_scaler()

    def step() -> None:
        model.train()
        with ctx.autocast():
            output = forward(batch)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(output.float().square().mean()).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def pipeline(method: str, steps: int, loading: DataLoading = DataLoading("memory")) -> tuple[Measured, Measured]:
    """(harness, bare) step functions of `method`'s training loop, its frames read as `loading` says; the harness
    call trains `steps` batches."""
    run = planned(method)
    spec = run.method.train.model_copy(update={"epochs": 1})
    pool = run_frames(run.train_data, run.train_subjects, run.aus, data_root(), loading)
    frames = pool.subset(np.arange(steps * spec.batch_size))
    ctx = TrainContext(CPU, 0)
    recipe = RECIPES.get(run.method.recipe)(run, ctx)
    loss_fn = bind_loss(run.method.loss, recipe.loss_kind)
    if method == "wce":
        model, forward, images = recipe.model, recipe.model, spec.batch_size

        def train(on) -> None:
            train_supervised(model, on, None, spec, loss_fn, run.crop_size, run.decision_threshold, ctx)
    else:
        model, forward, images = recipe.encoder, recipe.encoder.embed, 2 * spec.batch_size

        def train(on) -> None:
            pretrain_contrastive(model, on, spec, loss_fn, run.crop_size, ctx)
    batch = torch.randn(images, 3, run.crop_size, run.crop_size)
    one_batch = frames.subset(np.arange(spec.batch_size))
    return (Measured(lambda: train(frames), steps * images, warm_up=lambda: train(one_batch)),
            Measured(bare_step(model, forward, batch, run, ctx), images))


VARIANTS = {"fp32": ExecutionOptions(), "bf16": ExecutionOptions("bf16"),
            "channels_last": ExecutionOptions(channels_last=True), "compile": ExecutionOptions(compile=True)}


def variant(options: ExecutionOptions) -> tuple[Measured, TrainContext, float]:
    """The bare wce step under `options`: (its measure, its context, warm-up seconds incl. compiling)."""
    run = planned("wce")
    ctx = TrainContext(CPU, 0, execution=options)
    model = ctx.prepare(RECIPES.get(run.method.recipe)(run, ctx).model)
    batch = torch.randn(run.method.train.batch_size, 3, run.crop_size, run.crop_size)
    started = time.perf_counter()
    measured = Measured(bare_step(model, model, batch, run, ctx), run.method.train.batch_size)
    measured.step()  # a second warm-up step, for the compiled model's guards and caches to settle
    return measured, ctx, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per measurement and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    console.print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}; "
                  f"{PROTOCOL} {BUDGET} shapes, {args.rounds} rounds x {args.steps} steps")
    started = time.perf_counter()

    pipelines = {method: pipeline(method, args.steps) for method in ("wce", "aunce")}
    # an epoch of 4x the steps: the decoding worker starts once per epoch, as in training
    pipelines["wce, streamed"] = pipeline("wce", 4 * args.steps, DataLoading("streaming", workers=1))
    variants = {name: variant(options) for name, options in VARIANTS.items()}
    for _ in range(args.rounds):
        for harness, bare in pipelines.values():
            harness.measure(1)  # one harness call trains `steps` batches
            bare.measure(args.steps)
        for measured, _, _ in variants.values():
            measured.measure(args.steps)

    table = Table(title="pipeline efficiency: harness training loop vs bare forward+backward+step")
    for column in ("method", "images/step", "harness images/s", "bare images/s", "efficiency"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, (harness, bare) in pipelines.items():
        table.add_row(method, str(bare.images_per_call), f"{harness.images_per_s:.1f}", f"{bare.images_per_s:.1f}",
                      f"{harness.images_per_s / bare.images_per_s:.2f}")
    console.print(table)

    table = Table(title="bare wce step (batch 64, 56 px) by execution option, on this CPU")
    for column in ("option", "images/s", "vs fp32", "warm-up s", "note"):
        table.add_column(column, justify="left" if column in ("option", "note") else "right")
    fp32 = variants["fp32"][0].images_per_s
    for name, (measured, ctx, warm_up) in variants.items():
        record = ctx.execution_record()
        note = {"compile": "compiled" if record["compiled"] else f"fell back: {record['compile_error']}",
                "channels_last": f"channels-last {'applied' if record['channels_last'] else 'not applied'}"
                }.get(name, "")
        table.add_row(name, f"{measured.images_per_s:.1f}", f"{measured.images_per_s / fp32:.2f}", f"{warm_up:.1f}",
                      note)
    console.print(table)
    console.print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
