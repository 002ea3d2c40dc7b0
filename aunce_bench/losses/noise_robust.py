"""Noise-robust supervised AU losses that need more than one batch's logits
(docs/PROTOCOLS.md#baseline-losses).

- `ELR` (Liu et al. 2020, early-learning regularisation): class-weighted BCE plus lam * log(1 - <p, t>), where t
  is a running average of the model's own predictions per training frame and AU; it keeps the model close to
  what it learned before memorising noisy labels. Stateful (one target per frame): the supervised loop passes
  each batch's frame indices.
- `coteaching` (Han et al. 2018): two networks; each trains on the entries its peer finds easiest (smallest
  class-weighted BCE), a share `forget_rate` of each AU's labelled entries in the batch dropped, ramped up
  linearly over the first `ramp_epochs` epochs.
Both take labels in {1, 0, -1 missing} and skip missing entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from aunce_bench.losses.kinds import COTEACHING_LOSSES, SUPERVISED_LOSSES
from aunce_bench.losses.weighted import _check, _mean_over_labelled

__all__ = ["ELR", "coteaching"]


def _weighted_entries(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor):
    """(per-entry class-weighted BCE in float32 or wider, mask of labelled entries)."""
    _check(logits, labels, weights, two_class=False)
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    target = labels.to(x.device, x.dtype).clamp(min=0)
    loss = weights.to(x.device, x.dtype) * F.binary_cross_entropy_with_logits(x, target, reduction="none")
    return loss, labels.to(x.device) >= 0


@SUPERVISED_LOSSES.register("elr")
class ELR:
    """Early-learning regularisation for multi-label AUs: each entry is a two-class distribution (p, 1 - p)
    whose target (t1, t0) starts at zero and moves as t <- beta t + (1 - beta) (p, 1 - p) at every visit."""

    per_frame = True  # called with the batch's frame indices

    def __init__(self, n_frames: int, n_aus: int, *, beta: float = 0.7, lam: float = 3.0):
        if not 0 <= beta < 1:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.beta, self.lam = beta, lam
        self.targets = torch.zeros(n_frames, n_aus, 2)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *,
                 index: torch.Tensor) -> torch.Tensor:
        loss, labelled = _weighted_entries(logits, labels, weights)
        p = torch.sigmoid(logits.to(loss.dtype)).clamp(1e-4, 1 - 1e-4)  # the authors clamp likewise
        both = torch.stack([p, 1 - p], dim=-1)
        self.targets = self.targets.to(p.device)
        self.targets[index] = self.beta * self.targets[index] + (1 - self.beta) * both.detach().to(self.targets.dtype)
        agreement = (both * self.targets[index].to(p.dtype)).sum(-1)
        regulariser = torch.log(1 - agreement)
        return _mean_over_labelled(loss, labelled) + self.lam * _mean_over_labelled(regulariser, labelled)


@COTEACHING_LOSSES.register("coteaching")
def coteaching(logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
               epoch: int, *, forget_rate: float = 0.2, ramp_epochs: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss of network a, loss of network b) at `epoch` (0-based): each network's class-weighted BCE over the
    entries its peer keeps, per AU the ceil((1 - f) n) labelled entries of smallest peer loss, with
    f = forget_rate * min(1, epoch / ramp_epochs)."""
    if not 0 <= forget_rate < 1:
        raise ValueError(f"forget_rate must lie in [0, 1), got {forget_rate}")
    if ramp_epochs < 1:
        raise ValueError(f"ramp_epochs must be >= 1, got {ramp_epochs}")
    loss_a, labelled = _weighted_entries(logits_a, labels, weights)
    loss_b, _ = _weighted_entries(logits_b, labels, weights)
    forget = forget_rate * min(1.0, epoch / ramp_epochs)
    keep = torch.ceil((1 - forget) * labelled.sum(0)).long()  # per AU

    def small_loss(loss: torch.Tensor) -> torch.Tensor:
        """Mask of the `keep` labelled entries of smallest loss in each AU column."""
        rank = torch.where(labelled, loss.detach(), float("inf")).argsort(0).argsort(0)
        return labelled & (rank < keep)

    return _mean_over_labelled(loss_a, small_loss(loss_b)), _mean_over_labelled(loss_b, small_loss(loss_a))
