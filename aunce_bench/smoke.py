"""Smoke test of a budget's exact configuration (`aunce-bench run --max-steps N`), meant for `full` on the CPU.

The runs are planned as usual (backbone, crop and image size, loss, optimiser, batch size, init) and each
training stage, encoder training and linear probe alike, stops after N optimiser steps (ExecutionOptions.max_steps).
Only the data is cut: SynthAU renders SUBJECTS_PER_FOLD subjects per fold, one sequence each, with just the frames
that N batches of the first stage take (image size and crop stay the budget's), and the test is those few frames.
It says per stage the steps done, the loss and the seconds per step, and stores nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from aunce_bench.data.prepared import data_root
from aunce_bench.errors import UserError
from aunce_bench.launch import RunFailure, compute_outcome
from aunce_bench.protocols import split_validation
from aunce_bench.specs import ProtocolSpec, RunSpec
from aunce_bench.training.common import ExecutionOptions, Progress

SUBJECTS_PER_FOLD = 2  # SynthAU subjects rendered per fold of the protocol (those of a k-fold test part)


def check_smoke(max_steps: int | None, batch_size: int | None, conflicts: dict[str, bool]) -> None:
    """Refuse --smoke-batch-size without --max-steps, a batch under 2, and --max-steps with any option in
    `conflicts` (option -> given) that stores or runs elsewhere."""
    if max_steps is None:
        if batch_size is not None:
            raise UserError("--smoke-batch-size needs --max-steps")
        return
    if batch_size is not None and batch_size < 2:
        raise UserError(f"invalid --smoke-batch-size: {batch_size}; give 2 or more")
    given = [option for option, on in conflicts.items() if on]
    if given:
        raise UserError(f"--max-steps is a smoke test in this process that stores nothing; it cannot be combined "
                        f"with {given[0]}")


def smoke_runs(plan: Callable[[ProtocolSpec], list[RunSpec]], protocol: ProtocolSpec, budget: str, steps: int,
               batch_size: int | None) -> tuple[list[RunSpec], list[str]]:
    """The runs `plan` makes of `protocol` with its SynthAU data cut to what `steps` batches of each run's first
    training stage take, every stage's batch size capped at `batch_size` (None: as planned); and lines saying so."""
    if not protocol.synthetic:
        raise UserError(f"--max-steps: {protocol.where} reads prepared data; the smoke test cuts SynthAU data only")
    folds = protocol.split.n_folds if protocol.split.kind == "kfold" else 1
    cut = {"subjects": SUBJECTS_PER_FOLD * folds, "sequences_per_subject": 1}
    runs = [_capped(run, batch_size) for run in plan(_with_data(protocol, budget, cut))]
    needed = max(steps * (run.method.train or run.method.probe).batch_size for run in runs)
    frames = -(-needed // min(len(_fit_subjects(run)) for run in runs))  # per subject
    cut["frames_per_sequence"] = frames * max(run.train_data.frame_stride for run in runs)
    planned = plan(_with_data(protocol, budget, cut))
    runs = [_capped(run, batch_size) for run in planned]
    method, first = runs[0].method, runs[0]
    lines = [f"smoke: {method.name} on {protocol.name}, {budget} budget: {steps} optimiser step(s) of each training "
             f"stage, then evaluation; nothing is stored",
             f"smoke: model {_fields(method.model)}; {first.crop_size} px crops of {first.train_data.image_size} px "
             f"faces"]
    lines += [f"smoke: {name} {_fields(spec)}" for name, spec in (("loss", method.loss), ("train", method.train),
                                                                   ("probe", method.probe)) if spec is not None]
    lines.append(f"smoke: data cut to what the steps take: SynthAU with {cut['subjects']} subjects, one sequence of "
                 f"{frames} frame(s) each (image size and crop as the budget)")
    reduced = [f"{name} {getattr(planned[0].method, name).batch_size} -> {getattr(method, name).batch_size}"
               for name in ("train", "probe") if getattr(method, name) != getattr(planned[0].method, name)]
    if reduced:
        lines.append(f"smoke: batch reduced by --smoke-batch-size {batch_size}: {', '.join(reduced)}")
    return runs, lines


def _with_data(protocol: ProtocolSpec, budget: str, cut: dict) -> ProtocolSpec:
    settings = protocol.budget(budget)
    budgets = {**protocol.budgets, budget: settings.model_copy(update={"data": {**settings.data, **cut}})}
    return protocol.model_copy(update={"budgets": budgets})


def _capped(run: RunSpec, batch_size: int | None) -> RunSpec:
    if batch_size is None:
        return run
    stages = {name: spec.model_copy(update={"batch_size": min(spec.batch_size, batch_size)})
              for name in ("train", "probe") if (spec := getattr(run.method, name)) is not None}
    return run.model_copy(update={"method": run.method.model_copy(update=stages)})


def _fit_subjects(run: RunSpec) -> list[str]:
    """The subjects a run trains on: under strict selection, those left after its validation subjects."""
    if run.selection == "strict":
        return split_validation(run.train_subjects, run.validation_fraction, run.fold)[0]
    return run.train_subjects


def _fields(spec) -> str:
    return ", ".join(f"{name} {value}" for name, value in spec.model_dump(exclude_none=True).items())


@dataclass
class StageSteps:
    """The optimiser steps of one training stage of one run: their losses and seconds."""

    run: str
    name: str
    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        after_first = self.seconds[1:] or self.seconds
        return (f"{self.run} {self.name}: {len(self.losses)} steps, loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f}, "
                f"{np.mean(after_first):.2f} s/step after a first step of {self.seconds[0]:.2f} s")


class StepTimes(Progress):
    """Times each optimiser step, from its stage's start or the step before (an epoch's validation left out), and
    says each as it ends."""

    def __init__(self, say: Callable[[str], None]):
        self.say, self.label, self.stages, self.mark = say, "", [], 0.0

    def run_started(self, label: str) -> None:
        self.label = label

    def stage(self, name: str, epochs: int, batches_per_epoch: int) -> None:
        self.stages.append(StageSteps(self.label, name))
        self.mark = time.perf_counter()

    def batch(self, loss: float) -> None:
        now, stage = time.perf_counter(), self.stages[-1]
        stage.losses.append(loss)
        stage.seconds.append(now - self.mark)
        self.mark = now
        self.say(f"{stage.run} {stage.name}: step {len(stage.losses)}, loss {loss:.4f}, {stage.seconds[-1]:.2f} s")

    def epoch(self, epoch: int, summary: dict[str, float]) -> None:
        self.mark = time.perf_counter()


def smoke(plan: Callable[[ProtocolSpec], list[RunSpec]], protocol: ProtocolSpec, budget: str, device: torch.device,
          root: Path | None, execution: ExecutionOptions, steps: int, batch_size: int | None,
          say: Callable[[str], None]) -> list[RunFailure]:
    """Run the smoke test (see the module's docstring) of the runs `plan` makes of `protocol`, saying what it does
    through `say`; the runs that failed."""
    execution = replace(execution, max_steps=steps)
    execution.check(device)
    runs, lines = smoke_runs(plan, protocol, budget, steps, batch_size)
    for line in lines:
        say(line)
    progress, failures = StepTimes(say), []
    for run in runs:
        label = f"{run.fold_name} seed {run.seed}"
        progress.run_started(label)
        first_stage = len(progress.stages)
        computed = compute_outcome(run, device, progress, data_root(root), execution=execution)
        for stage in progress.stages[first_stage:]:
            say(str(stage))
        if isinstance(computed, RunFailure):
            say(f"{label}: failed: {computed.error.splitlines()[0]}")
            failures.append(computed)
        else:
            frames = computed.provenance_update["frames"]
            say(f"{label}: trained on {frames['train']} frames, evaluated on {frames['test']} test frames: mean F1 "
                f"{computed.mean_f1:.3f} (chance {computed.chance_f1:.3f})")
    say("smoke: nothing stored")
    return failures
