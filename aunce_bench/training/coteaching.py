"""Co-teaching (Han et al. 2018): two supervised AU classifiers trained together, each on the entries its peer
finds easiest (`losses.noise_robust.coteaching`); the first network is the one evaluated and selected."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from aunce_bench.data.loaders import FrameSet, in_order, supervised_transform
from aunce_bench.distributed import mean_over_ranks
from aunce_bench.losses import class_weights
from aunce_bench.models.backbones import input_normalisation
from aunce_bench.specs import OptimSpec
from aunce_bench.training.common import (BestState, TrainContext, ensure_finite, make_optimizer, make_scheduler,
                                         training_batches)
from aunce_bench.training.supervised import predict_logits, validation_f1

# (logits_a, logits_b, labels, weights, epoch) -> (loss_a, loss_b)
PairLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def train_coteaching(model_a: nn.Module, model_b: nn.Module, train: FrameSet, val: FrameSet | None, spec: OptimSpec,
                     loss_fn: PairLoss, crop: int, threshold: float, ctx: TrainContext) -> dict[str, float]:
    """Train both models (images -> logits [B, K]) on the same augmented batches, each with its own optimiser;
    with `val`, keep the epoch where model_a has the best validation mean F1 (both models' weights)."""
    device = ctx.device
    models = (ctx.prepare(model_a), ctx.prepare(model_b))
    weights = class_weights(train.labels).to(device)
    augment = supervised_transform(crop, *input_normalisation(model_a)).to(device)
    steps = len(train) // spec.batch_size
    optimizers = [make_optimizer(model.parameters(), spec) for model in models]
    schedulers = [make_scheduler(optimizer, spec, steps) for optimizer in optimizers]
    scaler = ctx.grad_scaler()  # one scaler for both optimisers: one backward pass of the summed losses
    best = BestState(*models)
    trained_a, trained_b = ctx.distribute(model_a), ctx.distribute(model_b)
    batches = training_batches(train, spec, ctx)
    val_batches = None if val is None else in_order(val, device)
    ctx.progress.stage("co-teaching", spec.epochs, steps)
    epoch_losses, limit = [], ctx.step_limit()
    for epoch in limit.epochs(spec.epochs):
        for model in models:
            model.train()
        losses, lr, started = [], optimizers[0].param_groups[0]["lr"], time.perf_counter()
        for step, (index, images) in enumerate(limit.batches(batches)):
            images = augment(images)
            labels = torch.from_numpy(train.labels[index.numpy()]).to(device)
            with ctx.autocast():
                logits_a, logits_b = trained_a(images), trained_b(images)
            loss_a, loss_b = loss_fn(logits_a, logits_b, labels, weights, epoch)
            values = [mean_over_ranks(loss.detach()) for loss in (loss_a, loss_b)]  # alike on every rank
            for value in values:
                ensure_finite(value, "co-teaching", epoch, step)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            # the two networks share no parameter: each gets its own loss's gradient
            scaler.scale(loss_a + loss_b).backward()
            for optimizer, scheduler in zip(optimizers, schedulers):
                scaler.step(optimizer)
                scheduler.step()
            scaler.update()
            losses.append(values[0].item())
            ctx.progress.batch(losses[-1])
        seconds = time.perf_counter() - started
        summary = {"loss": float(np.mean(losses))}
        epoch_losses.append(summary["loss"])
        if val is not None:
            probabilities = torch.sigmoid(predict_logits(model_a, val_batches, crop, ctx)).numpy()
            summary["val_f1"] = validation_f1(probabilities, val.labels, threshold)
            best.offer(summary["val_f1"], epoch)
        ctx.end_epoch("co-teaching", epoch, summary, lr=lr, images=2 * len(losses) * spec.batch_size, seconds=seconds)
    best.restore()
    return {"selected_epoch": (best.epoch if val is not None else spec.epochs - 1) + 1,
            "first_loss": epoch_losses[0], "final_loss": epoch_losses[-1]}
