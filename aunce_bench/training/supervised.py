"""Supervised training of an AU encoder and per-AU classifier with a weighted multi-label loss."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aunce_bench.data.loaders import (FrameBatches, FrameSet, eval_transform, in_order,
                                      training_transform)
from aunce_bench.models.backbones import input_normalisation
from aunce_bench.losses import class_weights
from aunce_bench.metrics import au_metrics, mean_f1
from aunce_bench.specs import OptimSpec, ViewSpec
from aunce_bench.training.common import (BestState, TrainContext, make_optimizer, make_scheduler, optimisation_step,
                                         training_batches)

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_logits(model: nn.Module, frames: FrameSet | FrameBatches, crop: int, ctx: TrainContext) -> torch.Tensor:
    """Model outputs for every frame (eval mode, centre crop, the run's precision), float32 on the CPU."""
    model.eval()
    transform = eval_transform(crop, *input_normalisation(model)).to(ctx.device)
    outputs = []
    for _, images in in_order(frames, ctx.device):
        images = transform(images)
        with ctx.autocast():
            outputs.append(model(images).float().cpu())
    return torch.cat(outputs)


def validation_f1(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    names = [str(k) for k in range(labels.shape[1])]
    return mean_f1(au_metrics(probabilities, labels, names, threshold))


def train_supervised(model: nn.Module, train: FrameSet, val: FrameSet | None, spec: OptimSpec,
                     loss_fn: LossFunction, crop: int, threshold: float, ctx: TrainContext,
                     views: ViewSpec | None = None) -> dict[str, float]:
    """Train `model` (images -> logits [B, K]); with `val`, keep the epoch of best validation mean F1.
    `views` switches parts of AUNCE's photometric augmentation on (default: crop and flip only)."""
    device = ctx.device
    ctx.prepare(model)
    weights = class_weights(train.labels).to(device)
    parts = (views or ViewSpec()).resolved(default=False)
    augment = training_transform(crop, *input_normalisation(model), **parts).to(device)
    optimizer = make_optimizer(model.parameters(), spec)
    scheduler = make_scheduler(optimizer, spec, len(train) // spec.batch_size)
    scaler = ctx.grad_scaler()
    best = BestState(model)
    trained = ctx.distribute(model)
    batches = training_batches(train, spec, ctx)
    val_batches = None if val is None else in_order(val, device)
    ctx.progress.stage("supervised", spec.epochs, len(batches))
    epoch_losses, limit = [], ctx.step_limit()
    for epoch in limit.epochs(spec.epochs):
        model.train()
        losses, lr, started = [], optimizer.param_groups[0]["lr"], time.perf_counter()
        for step, (index, images) in enumerate(limit.batches(batches)):
            images = augment(images)
            labels = torch.from_numpy(train.labels[index.numpy()]).to(device)
            extra = {"index": index} if getattr(loss_fn, "per_frame", False) else {}  # stateful losses (ELR)
            with ctx.autocast():
                logits = trained(images)
            loss = loss_fn(logits, labels, weights, **extra)
            losses.append(optimisation_step(loss, optimizer, scheduler, scaler, "supervised training", epoch, step))
            ctx.progress.batch(losses[-1])
        seconds = time.perf_counter() - started
        summary = {"loss": float(np.mean(losses))}
        epoch_losses.append(summary["loss"])
        if val is not None:
            probabilities = torch.sigmoid(predict_logits(model, val_batches, crop, ctx)).numpy()
            summary["val_f1"] = validation_f1(probabilities, val.labels, threshold)
            best.offer(summary["val_f1"], epoch)
        ctx.end_epoch("supervised", epoch, summary, lr=lr, images=len(losses) * spec.batch_size, seconds=seconds)
    best.restore()
    return {"selected_epoch": (best.epoch if val is not None else spec.epochs - 1) + 1,
            "first_loss": epoch_losses[0], "final_loss": epoch_losses[-1]}
