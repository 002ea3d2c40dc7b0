"""What every training loop shares: optimisers, finite-loss checks, progress reporting, model selection."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from aunce_bench.specs import OptimSpec


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is stored as failed with this message."""


class Progress:
    """Receives progress; the CLI subclasses it with rich bars, tests use it silently."""

    def run_started(self, label: str) -> None: ...

    def run_finished(self) -> None: ...

    def stage(self, name: str, epochs: int, batches_per_epoch: int) -> None: ...

    def batch(self, loss: float) -> None: ...

    def epoch(self, epoch: int, summary: dict[str, float]) -> None: ...


@dataclass
class TrainContext:
    device: torch.device
    seed: int
    progress: Progress = field(default_factory=Progress)
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)  # model initialisation and kornia's augmentation draws
        self.generator = torch.Generator().manual_seed(self.seed)  # batch order and loss draws


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
                      scheduler: torch.optim.lr_scheduler.LRScheduler, stage: str, epoch: int, batch: int) -> float:
    """Check the loss, back-propagate, step optimiser and schedule; returns the loss value."""
    ensure_finite(loss, stage, epoch, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


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
