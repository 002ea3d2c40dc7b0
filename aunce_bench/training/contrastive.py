"""Contrastive pretraining of an AU encoder on two augmented views per image (AUNCE,
docs/PROTOCOLS.md#aunce-as-released)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from aunce_bench.data.loaders import FrameSet, training_transform
from aunce_bench.distributed import gather, gather_with_grad
from aunce_bench.models.backbones import input_normalisation
from aunce_bench.specs import OptimSpec, ViewSpec
from aunce_bench.training.common import (TrainContext, make_optimizer, make_scheduler, optimisation_step,
                                         training_batches)

# (z1 [B,K,D], z2 [B,K,D], labels [B,K], generator) -> scalar loss
ContrastiveLoss = Callable[..., torch.Tensor]


class _Embedding(torch.nn.Module):
    """`encoder.embed` as a module's forward (DistributedDataParallel synchronises calls of forward only)."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.embed(images)


def pretrain_contrastive(encoder: torch.nn.Module, train: FrameSet, spec: OptimSpec, loss_fn: ContrastiveLoss,
                         crop: int, ctx: TrainContext, views: ViewSpec | None = None) -> dict[str, float]:
    """Train `encoder.embed` (images -> L2-normalised [B, K, D]) for `spec.epochs`; the last epoch is kept.
    `views` switches parts of AUNCE's augmentation off (default: all on)."""
    device = ctx.device
    ctx.prepare(encoder)
    parts = (views or ViewSpec()).resolved(default=True)
    augment = training_transform(crop, *input_normalisation(encoder), **parts).to(device)
    optimizer = make_optimizer(encoder.parameters(), spec)
    scheduler = make_scheduler(optimizer, spec, len(train) // spec.batch_size)
    scaler = ctx.grad_scaler()
    embed = ctx.distribute(_Embedding(encoder))
    batches = training_batches(train, spec, ctx)
    ctx.progress.stage("contrastive pretraining", spec.epochs, len(batches))
    first_epoch_loss, limit = None, ctx.step_limit()
    for epoch in limit.epochs(spec.epochs):
        encoder.train()
        losses, lr, started = [], optimizer.param_groups[0]["lr"], time.perf_counter()
        for step, (index, images) in enumerate(limit.batches(batches)):
            views = torch.cat([augment(images), augment(images)])  # two independent views, one forward pass
            with ctx.autocast():
                z1, z2 = embed(views).chunk(2)
            labels = torch.from_numpy(train.labels[index.numpy()]).to(device)
            # the loss sees the global batch: every rank's embeddings, in rank order, with their gradients
            z1, z2, labels = gather_with_grad(z1), gather_with_grad(z2), gather(labels)
            loss = loss_fn(z1, z2, labels, generator=ctx.generator)
            losses.append(optimisation_step(loss, optimizer, scheduler, scaler, "contrastive pretraining", epoch,
                                            step))
            ctx.progress.batch(losses[-1])
        epoch_loss = float(np.mean(losses))
        first_epoch_loss = epoch_loss if first_epoch_loss is None else first_epoch_loss
        ctx.end_epoch("contrastive pretraining", epoch, {"loss": epoch_loss}, lr=lr,
                      images=2 * len(losses) * spec.batch_size, seconds=time.perf_counter() - started)
    return {"pretrain_first_loss": first_epoch_loss, "pretrain_final_loss": epoch_loss}
