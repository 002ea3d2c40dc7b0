"""Contrastive baselines of AUNCE, per AU, for `recipe: contrastive_probe` (docs/PROTOCOLS.md#baseline-losses).

Each takes the two views' unit-norm per-AU embeddings z1, z2 [B, K, D] and labels [B, K] in {1, 0, -1 missing},
and returns the mean over AUs of a loss over the 2B stacked views of that AU, like `aunce_loss`:
- `supcon`: supervised contrastive (Khosla et al. 2020) with the AU's binary label as the class; frames whose
  label is missing are left out of that AU's loss. pytorch-metric-learning's `SupConLoss`.
- `simclr`: NT-Xent (Chen et al. 2020), self-supervised: the other view is the only positive, labels unused.
  pytorch-metric-learning's `NTXentLoss`.
- `hcl`: hard-negative contrastive (Robinson et al. 2021), self-supervised: negatives re-weighted by
  exp(beta * s) and debiased with the class prior tau_plus; beta = 0 is DCL (Chuang et al. 2020). No library
  implements it: written out after the authors' release.
`generator` is accepted for the contrastive loop's common call and unused (these losses draw nothing).
"""

from __future__ import annotations

import math

import torch
from pytorch_metric_learning.losses import NTXentLoss, SupConLoss
from pytorch_metric_learning.reducers import MeanReducer

from aunce_bench.losses.aunce import validate_labels
from aunce_bench.losses.kinds import CONTRASTIVE_LOSSES

__all__ = ["hcl", "simclr", "supcon"]


def _check(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float) -> None:
    if z1.dim() != 3 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both have shape [B, K, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"contrastive losses need at least 2 frames per batch, got {z1.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    validate_labels(labels, z1.shape[:2])


def _views(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The 2B stacked views per AU, [K, 2B, D], in float32 or wider."""
    return torch.cat([z1, z2]).to(torch.promote_types(z1.dtype, torch.float32)).transpose(0, 1)


@CONTRASTIVE_LOSSES.register("supcon")
def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.1,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-AU supervised contrastive loss: positives of an anchor are the other views with its AU label."""
    _check(z1, z2, labels, temperature)
    loss_fn = SupConLoss(temperature=temperature, reducer=MeanReducer())
    y = torch.cat([labels, labels]).to(z1.device)
    per_au = []
    for k, z in enumerate(_views(z1, z2)):
        valid = y[:, k] >= 0
        if valid.sum() >= 2:
            per_au.append(loss_fn(z[valid], y[valid, k]))
    return torch.stack(per_au).mean() if per_au else z1.sum() * 0.0


@CONTRASTIVE_LOSSES.register("simclr")
def simclr(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.5,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-AU NT-Xent: each view's positive is the other view of its frame; labels are not used."""
    _check(z1, z2, labels, temperature)
    loss_fn = NTXentLoss(temperature=temperature)
    frame = torch.arange(z1.shape[0], device=z1.device).repeat(2)
    return torch.stack([loss_fn(z, frame) for z in _views(z1, z2)]).mean()


@CONTRASTIVE_LOSSES.register("hcl")
def hcl(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *, temperature: float = 0.5,
        tau_plus: float = 0.1, beta: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-AU hard-negative contrastive loss (Robinson et al. 2021), self-supervised; beta = 0 gives DCL.

    For anchor a with other view a' and the N = 2B - 2 other views as negatives, s = z.z / temperature:
    Ng = (sum_n w_n e^s_n / mean_n w_n - tau_plus N e^s_a') / (1 - tau_plus) with w_n = e^(beta s_n), clamped
    below at N e^(-1 / temperature); loss = -log(e^s_a' / (e^s_a' + Ng)), mean over anchors, then AUs."""
    _check(z1, z2, labels, temperature)
    if not 0 <= tau_plus < 1:
        raise ValueError(f"tau_plus must lie in [0, 1), got {tau_plus}")
    z = _views(z1, z2)
    n = z.shape[1]
    s = z @ z.transpose(1, 2) / temperature  # [K, 2B, 2B]
    other_view = (torch.arange(n, device=z.device) + n // 2) % n
    positive = s[:, torch.arange(n, device=z.device), other_view]  # [K, 2B]
    negative = torch.ones(n, n, dtype=torch.bool, device=z.device)
    negative[torch.arange(n), torch.arange(n)] = False
    negative[torch.arange(n), other_view] = False
    s_neg = s[:, negative].view(z.shape[0], n, n - 2)
    n_neg = n - 2
    importance = torch.exp(beta * s_neg)
    reweighted = (importance * torch.exp(s_neg)).sum(-1) / importance.mean(-1)
    ng = (reweighted - tau_plus * n_neg * torch.exp(positive)) / (1 - tau_plus)
    ng = ng.clamp(min=n_neg * math.exp(-1 / temperature))
    return (torch.log(torch.exp(positive) + ng) - positive).mean()
