"""Linear evaluation: frozen-encoder features extracted once, per-AU linear classifiers trained on them."""

from __future__ import annotations

import time

import numpy as np
import torch

from aunce_bench.data.loaders import FrameBatches, FrameSet, batch_indices, eval_transform, in_order
from aunce_bench.models.backbones import input_normalisation
from aunce_bench.losses import class_weights, weighted_softmax_ce
from aunce_bench.models import PerAULinear
from aunce_bench.specs import OptimSpec
from aunce_bench.training.common import BestState, TrainContext, make_optimizer, make_scheduler, optimisation_step
from aunce_bench.training.supervised import validation_f1


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, frames: FrameSet | FrameBatches, crop: int, ctx: TrainContext
                     ) -> torch.Tensor:
    """Frozen node features [N, K, D] (eval mode, centre crop, the run's precision), float32 on the CPU."""
    encoder.eval()
    transform = eval_transform(crop, *input_normalisation(encoder)).to(ctx.device)
    features = []
    for _, images in in_order(frames, ctx.device):
        images = transform(images)
        with ctx.autocast():
            features.append(encoder(images).float().cpu())
    return torch.cat(features)


@torch.no_grad()
def recalibrate_batchnorm(encoder: torch.nn.Module, frames: FrameSet | FrameBatches, crop: int, ctx: TrainContext
                          ) -> None:
    """Re-estimate BatchNorm statistics on un-augmented training frames.

    Contrastive pretraining leaves running statistics of heavily augmented views (colour jitter, grayscale,
    blur); the probe sees clean centre crops. The released AUNCE code sidesteps this by keeping the frozen
    encoder in train mode (batch statistics); exact statistics of the clean frames do the same deterministically.
    """
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:  # e.g. Swin (LayerNorms): nothing to re-estimate
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    encoder.train()
    transform = eval_transform(crop, *input_normalisation(encoder)).to(ctx.device)
    for _, images in in_order(frames, ctx.device):
        images = transform(images)
        with ctx.autocast():
            encoder(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    encoder.eval()


def probe_probabilities(head: PerAULinear, features: torch.Tensor) -> np.ndarray:
    """P(AU present) [N, K] from a 2-way softmax per AU."""
    head.eval()
    with torch.no_grad():
        return torch.softmax(head(features.to(next(head.parameters()).device)), dim=-1)[..., 1].cpu().numpy()


def train_probe(features: torch.Tensor, labels: np.ndarray, val_features: torch.Tensor | None,
                val_labels: np.ndarray | None, spec: OptimSpec, threshold: float, ctx: TrainContext
                ) -> tuple[PerAULinear, dict[str, float]]:
    """Per-AU Linear(D -> 2) with weighted softmax cross-entropy (AUNCE's linear evaluation) on cached features."""
    device = ctx.device
    head = PerAULinear(features.shape[1], features.shape[2], 2).to(device)
    features, targets = features.to(device), torch.from_numpy(labels).to(device)
    weights = class_weights(labels).to(device)
    optimizer = make_optimizer(head.parameters(), spec)
    scheduler = make_scheduler(optimizer, spec, -(-len(labels) // spec.batch_size))
    scaler = ctx.grad_scaler()
    best = BestState(head)
    ctx.progress.stage("linear probe", spec.epochs, -(-len(labels) // spec.batch_size))
    limit = ctx.step_limit()
    for epoch in limit.epochs(spec.epochs):
        head.train()
        losses, lr, started = [], optimizer.param_groups[0]["lr"], time.perf_counter()
        for step, index in enumerate(limit.batches(batch_indices(len(labels), spec.batch_size, ctx.generator))):
            index = index.to(device)
            with ctx.autocast():
                logits = head(features[index])
            loss = weighted_softmax_ce(logits, targets[index], weights)
            losses.append(optimisation_step(loss, optimizer, scheduler, scaler, "linear probe", epoch, step))
            ctx.progress.batch(losses[-1])
        seconds = time.perf_counter() - started
        summary = {"loss": float(np.mean(losses))}
        if val_features is not None:
            summary["val_f1"] = validation_f1(probe_probabilities(head, val_features), val_labels, threshold)
            best.offer(summary["val_f1"], epoch)
        ctx.end_epoch("linear probe", epoch, summary, lr=lr, images=len(labels), seconds=seconds)
    best.restore()
    return head, {"probe_selected_epoch": (best.epoch if val_features is not None else spec.epochs - 1) + 1,
                  "probe_final_loss": summary["loss"]}
