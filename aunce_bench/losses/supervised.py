"""Supervised multi-label AU losses beside WCE, for `recipe: supervised` (docs/PROTOCOLS.md#baseline-losses).

Each takes logits [B, K], labels [B, K] in {1, 0, -1 missing} and the class weights [K] the recipe passes (used
only by the class-weighted losses), skips missing entries and averages over the labelled ones. Where a
library implements the loss it is called: torchvision's `sigmoid_focal_loss`, timm's
`AsymmetricLossMultiLabel`; GCE has no library implementation and is written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel
from torchvision.ops import sigmoid_focal_loss

from aunce_bench.losses.kinds import SUPERVISED_LOSSES
from aunce_bench.losses.weighted import _check, _mean_over_labelled

__all__ = ["asymmetric", "bce", "focal", "gce"]


def _per_entry(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor):
    """(logits in float32 or wider, targets with missing as 0, mask of labelled entries)."""
    _check(logits, labels, weights, two_class=False)
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return x, labels.to(x.device, x.dtype).clamp(min=0), labels.to(x.device) >= 0


@SUPERVISED_LOSSES.register("bce")
def bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Unweighted BCE: the naive floor that ignores AU imbalance."""
    x, target, labelled = _per_entry(logits, labels, weights)
    return _mean_over_labelled(F.binary_cross_entropy_with_logits(x, target, reduction="none"), labelled)


@SUPERVISED_LOSSES.register("focal")
def focal(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, alpha: float = 0.25,
          gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t, torchvision's implementation."""
    x, target, labelled = _per_entry(logits, labels, weights)
    return _mean_over_labelled(sigmoid_focal_loss(x, target, alpha=alpha, gamma=gamma, reduction="none"), labelled)


@SUPERVISED_LOSSES.register("asl")
def asymmetric(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, gamma_neg: float = 4.0,
               gamma_pos: float = 1.0, clip: float = 0.05) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al. 2021), timm's implementation. It sums over entries, so the labelled entries
    are passed as one row and the sum divided by their number."""
    x, target, labelled = _per_entry(logits, labels, weights)
    loss = AsymmetricLossMultiLabel(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)
    return loss(x[labelled].view(1, -1), target[labelled].view(1, -1)) / labelled.sum().clamp(min=1)


@SUPERVISED_LOSSES.register("gce")
def gce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, q: float = 0.7) -> torch.Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu 2018), class-weighted: w_k (1 - p_y^q) / q per entry, with p_y
    the predicted probability of the observed label. q -> 0 is weighted BCE, q = 1 the noise-robust MAE."""
    if not 0 < q <= 1:
        raise ValueError(f"q must lie in (0, 1], got {q}")
    x, target, labelled = _per_entry(logits, labels, weights)
    log_p_y = -F.binary_cross_entropy_with_logits(x, target, reduction="none")
    loss = weights.to(x.device, x.dtype) * (1 - torch.exp(q * log_p_y)) / q
    return _mean_over_labelled(loss, labelled)
