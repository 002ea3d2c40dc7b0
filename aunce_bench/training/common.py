"""What every training loop shares: optimisers, finite-loss checks, progress reporting, model selection, and how
models execute (precision, memory format, compilation)."""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from aunce_bench import distributed
from aunce_bench.data.loaders import (DataLoading, FrameBatches, FrameSet, ShuffledBatches, WeightedBatches,
                                      rare_au_weights)
from aunce_bench.errors import UserError
from aunce_bench.models.backbones import TokenBackbone
from aunce_bench.specs import OptimSpec

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> autocast dtype


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is stored as failed with this message."""


class Progress:
    """Receives progress; the CLI subclasses it with rich bars, tests use it silently."""

    def run_started(self, label: str) -> None: ...

    def run_finished(self) -> None: ...

    def stage(self, name: str, epochs: int, batches_per_epoch: int) -> None: ...

    def batch(self, loss: float) -> None: ...

    def epoch(self, epoch: int, summary: dict[str, float]) -> None: ...

    def count(self, task: str, done: int, total: int) -> None:
        """A one-off task outside training (e.g. rendering data) has done `done` of `total` units."""


@dataclass(frozen=True)
class ExecutionOptions:
    """How a run's models execute. These change speed, not the run's identity: an option that changes speed, memory
    or the last digits, not what a number means, stays out of the run id and is recorded in the run's provenance.

    precision: "fp32", or "bf16" / "fp16" autocast around forward passes (losses compute in float32; fp16 scales
    its gradients). channels_last: the channels-last memory format for convolutional backbones; None means on
    CUDA, off on the CPU. compile: torch.compile the image models, falling back to eager with a warning.
    data: how frames are read (in memory or streamed; see DataLoading). max_steps: each training stage stops after
    this many optimiser steps (the smoke test `run --max-steps`, which stores nothing; see StepLimit)."""

    precision: str = "fp32"
    channels_last: bool | None = None
    compile: bool = False
    data: DataLoading = DataLoading()
    max_steps: int | None = None

    def wants_channels_last(self, device: torch.device) -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def check(self, device: torch.device) -> None:
        """A UserError naming the option where the precision is unknown or pointless on `device`, or the data
        loading is invalid."""
        self.data.check()
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"invalid --max-steps: {self.max_steps}; give 1 or more")
        if self.precision not in PRECISIONS:
            raise UserError(f"invalid --precision: '{self.precision}'; choose {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and device.type == "cpu":
            raise UserError("invalid --precision: fp16 is for CUDA devices (CPUs lack fast fp16 arithmetic and it "
                            "needs loss scaling); on the CPU use --precision bf16")


@dataclass
class TrainContext:
    device: torch.device
    seed: int
    progress: Progress = field(default_factory=Progress)
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)
    generator: torch.Generator = field(init=False)
    compile_error: str | None = field(init=False, default=None)  # why --compile fell back to eager, if it did
    channels_last_used: bool = field(init=False, default=False)  # whether a backbone runs channels-last
    ranks: distributed.DistributedEnv | None = field(init=False, default=None)  # torchrun's processes, if several
    history: list[dict] = field(init=False, default_factory=list)  # per epoch of each stage (see end_epoch)

    def __post_init__(self) -> None:
        self.execution.check(self.device)
        torch.manual_seed(self.seed)  # model initialisation and kornia's augmentation draws
        self.generator = torch.Generator().manual_seed(self.seed)  # batch order and loss draws: alike on all ranks
        self.ranks = distributed.joined()
        if self.device.type == "cuda" and torch.cuda.get_device_capability(self.device) >= (8, 0):
            torch.backends.cuda.matmul.allow_tf32 = True  # Ampere and later: TF32 tensor cores for float32
            torch.backends.cudnn.allow_tf32 = True

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move an image model to the device, in channels-last format where asked and convolutional, compiled where
        asked (once; a model prepared again is left as it is)."""
        model.to(self.device)
        if self.execution.wants_channels_last(self.device):
            for backbone in (m for m in model.modules() if isinstance(m, TokenBackbone) and m.convolutional):
                backbone.use_channels_last()
                self.channels_last_used = True
        compiled = isinstance(vars(model).get("forward"), _CompiledForward)
        if self.execution.compile and self.compile_error is None and not compiled:
            try:
                model.forward = _CompiledForward(model, torch.compile(model.forward), self)
            except Exception as error:  # e.g. a Python version Dynamo does not support
                self.compile_failed(error)
        return model

    def step_limit(self) -> "StepLimit":
        """A new training stage's limit of optimiser steps (none unless execution.max_steps is set)."""
        return StepLimit(self.execution.max_steps)

    def distribute(self, model: nn.Module) -> nn.Module:
        """The module to train: under torchrun with several processes, `model` with its BatchNorms computing global
        batch statistics, in DistributedDataParallel, and each rank drawing its own augmentations from here on;
        `model` itself otherwise. Only calls of the returned module's forward synchronise gradients."""
        if self.ranks is None:
            return model
        torch.manual_seed(self.seed + 1_000_003 * self.ranks.rank)
        return distributed.wrap_ddp(distributed.sync_batchnorm(model, self.device), self.ranks, self.device)

    def end_epoch(self, stage: str, epoch: int, summary: dict[str, float], *, lr: float, images: int,
                  seconds: float) -> None:
        """Record epoch `epoch` (from 0) of a training stage in the run's history and report it: its mean loss and
        validation F1 (from `summary`), the learning rate of its first step, and the `images` it trained on (frames
        for the probe, both views for contrastive stages) per second of its `seconds` of training."""
        self.history.append({"stage": stage, "epoch": epoch + 1, "loss": summary.get("loss"), "lr": lr,
                             "val_f1": summary.get("val_f1"), "images_per_s": images / seconds if seconds > 0 else None})
        self.progress.epoch(epoch, {**summary, "img/s": images / seconds if seconds > 0 else float("nan")})

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's precision (a no-op for fp32); put forward passes in it, not the losses."""
        dtype = PRECISIONS[self.execution.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Gradient scaling for fp16 (its small range underflows gradients); a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.execution.precision == "fp16")

    def compile_failed(self, error: Exception) -> None:
        """Record why compiling failed and warn, once per run."""
        if self.compile_error is None:
            self.compile_error = f"{type(error).__name__}: {next(iter(str(error).strip().splitlines()), '')}"
            warnings.warn(f"--compile: torch.compile failed ({self.compile_error}); running uncompiled", RuntimeWarning,
                          stacklevel=2)

    def execution_record(self) -> dict:
        """The run's execution as it happened, for its provenance."""
        return {"precision": self.execution.precision, "channels_last": self.channels_last_used,
                "compile": self.execution.compile, "compiled": self.execution.compile and self.compile_error is None,
                "compile_error": self.compile_error,
                "tf32": self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
                "processes": 1 if self.ranks is None else self.ranks.world_size}


class StepLimit:
    """At most `steps` optimiser steps over a training stage's epochs (None: no limit). The stage iterates
    `epochs(...)` and, in each, `batches(...)`: both end once the steps are spent, the last epoch partway."""

    def __init__(self, steps: int | None):
        self.left = steps

    def epochs(self, count: int) -> Iterator[int]:
        return (epoch for epoch in range(count) if self.left != 0)

    def batches(self, batches: Iterable) -> Iterator:
        if self.left is None:
            yield from batches
            return
        for batch in itertools.islice(batches, self.left):
            self.left -= 1
            yield batch


class _CompiledForward:
    """A module's compiled forward, installed as its `forward`: where a compiled call raises (compiling happens on
    the first call of each new input kind), the module goes back to its eager forward for good, with a warning."""

    def __init__(self, module: nn.Module, compiled, ctx: TrainContext):
        self.module, self.compiled, self.ctx = module, compiled, ctx

    def __call__(self, *args, **kwargs):
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:
            del self.module.forward  # the class's eager forward again
            self.ctx.compile_failed(error)
            return self.module.forward(*args, **kwargs)


def training_batches(train: FrameSet, spec: OptimSpec, ctx: TrainContext) -> FrameBatches:
    """The batches of a training stage, drawn as `spec.sampler` says, on the context's device."""
    if spec.sampler == "rare_au":
        plan = WeightedBatches(rare_au_weights(train.labels), spec.batch_size, ctx.generator, ranks=ctx.ranks)
    else:
        plan = ShuffledBatches(len(train), spec.batch_size, ctx.generator, ranks=ctx.ranks)
    return train.batches(plan, ctx.device)


def make_optimizer(parameters: Iterable[nn.Parameter], spec: OptimSpec) -> torch.optim.Optimizer:
    parameters = [p for p in parameters if p.requires_grad]
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(parameters, lr=spec.lr, weight_decay=spec.weight_decay, momentum=0.9)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: OptimSpec, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate schedule: constant, or cosine decay to zero over all steps."""
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, spec.epochs * steps_per_epoch))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def ensure_finite(loss: torch.Tensor, stage: str, epoch: int, batch: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"{stage}: loss became {loss.item()} at epoch {epoch + 1}, batch {batch + 1} "
                               "(lower the learning rate or check the inputs)")


def optimisation_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, stage: str,
                      epoch: int, batch: int) -> float:
    """Check the loss, back-propagate (scaled for fp16), step optimiser and schedule; returns the loss value (its
    mean over the ranks of a distributed run, so that every rank agrees on it)."""
    value = distributed.mean_over_ranks(loss.detach())
    ensure_finite(value, stage, epoch, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return value.item()


class BestState:
    """Keeps the modules' weights from the epoch with the best validation score."""

    def __init__(self, *modules: nn.Module):
        self.modules = modules
        self.score = float("-inf")
        self.epoch = -1
        self.states: list[dict] | None = None

    def offer(self, score: float, epoch: int) -> None:
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.states = [copy.deepcopy(module.state_dict()) for module in self.modules]

    def restore(self) -> None:
        if self.states is not None:
            for module, state in zip(self.modules, self.states):
                module.load_state_dict(state)
