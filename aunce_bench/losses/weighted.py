"""Class-weighted supervised AU losses: weights (docs/PROTOCOLS.md#label-statistics), weighted BCE and
the AUNCE linear-probe softmax cross-entropy (docs/PROTOCOLS.md#baseline-losses). Labels use -1 for missing;
missing entries are skipped and the losses average over the non-missing entries (0 when there is none)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aunce_bench.losses.aunce import validate_labels
from aunce_bench.losses.kinds import SUPERVISED_LOSSES

__all__ = ["class_weights", "weighted_bce", "weighted_softmax_ce"]


def class_weights(labels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-AU weights w_k = (1/r_k) / sum_j(1/r_j) * K from labels [N, K] in {0, 1, -1}, as in ME-GraphAU/AUNCE.

    r_k is the positive rate over the non-missing entries of AU k, clamped to [1/N, 1 - 1/N] so that an
    AU without positives (or without negatives) gets a finite weight. Returns float32 [K].
    """
    labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape [N, K], got {tuple(labels.shape)}")
    validate_labels(labels, labels.shape)
    n = labels.shape[0]
    if n < 2:
        raise ValueError(f"class_weights needs at least 2 labelled frames, got {n}")
    labelled = (labels >= 0).sum(0)
    if (labelled == 0).any():
        missing = torch.nonzero(labelled == 0).flatten().tolist()
        raise ValueError(f"AU columns {missing} have no labelled (non-missing) entry; cannot compute a rate")
    rate = ((labels == 1).sum(0).double() / labelled.double()).clamp(1 / n, 1 - 1 / n)
    inverse = 1 / rate
    return (inverse / inverse.sum() * labels.shape[1]).float()


def _check(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, two_class: bool) -> None:
    if logits.dim() != 2 + two_class or (two_class and logits.shape[-1] != 2):
        shape = "[B, K, 2]" if two_class else "[B, K]"
        raise ValueError(f"logits must have shape {shape}, got {tuple(logits.shape)}")
    validate_labels(labels, logits.shape[:2])
    if weights.shape != (logits.shape[1],):
        raise ValueError(f"weights must have shape [{logits.shape[1]}], got {tuple(weights.shape)}")


def _mean_over_labelled(loss: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
    return torch.where(labelled, loss, 0.0).sum() / labelled.sum().clamp(min=1)


@SUPERVISED_LOSSES.register("wce")
def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of w_k * BCE-with-logits over the non-missing entries of logits/labels [B, K] (WCE)."""
    _check(logits, labels, weights, two_class=False)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        x = logits.to(dtype)
        target = labels.to(x.device, dtype).clamp(min=0)
        loss = weights.to(x.device, dtype) * F.binary_cross_entropy_with_logits(x, target, reduction="none")
        return _mean_over_labelled(loss, labels.to(x.device) >= 0)


def weighted_softmax_ce(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, min_prob: float = 1e-3
) -> torch.Tensor:
    """AUNCE linear-probe loss: per-AU softmax over logits [B, K, 2], probabilities clamped at `min_prob`,
    mean of -w_k log p_y over the non-missing entries."""
    _check(logits, labels, weights, two_class=True)
    if not 0 < min_prob < 0.5:
        raise ValueError(f"min_prob must lie in (0, 0.5), got {min_prob}")
    with torch.autocast(device_type=logits.device.type, enabled=False):
        dtype = torch.promote_types(logits.dtype, torch.float32)
        x = logits.to(dtype)
        labelled = labels.to(x.device) >= 0
        index = labels.to(x.device, torch.long).clamp(min=0).unsqueeze(-1)
        prob = F.softmax(x, dim=-1).gather(-1, index).squeeze(-1).clamp(min=min_prob)
        loss = -weights.to(x.device, dtype) * prob.log()
        return _mean_over_labelled(loss, labelled)
