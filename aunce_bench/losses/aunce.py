"""The AUNCE contrastive loss (docs/PROTOCOLS.md#aunce-as-released), vectorised over AUs and computed in
log space.

Extension over the released loss: labels may be -1 (missing). A missing entry is neither a positive nor a
negative of any anchor, and its own anchors are left out of the mean over anchors; an AU without any
valid anchor contributes 0 to the mean over AUs. The "official" mean positive still divides by the full 2B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from aunce_bench.losses.kinds import CONTRASTIVE_LOSSES

__all__ = ["POSITIVE_MODES", "VARIANTS", "aunce_loss", "validate_labels"]

POSITIVE_MODES = ("max", "mean", "aug")
VARIANTS = ("official", "paper")


def validate_labels(labels: torch.Tensor, shape: Sequence[int], name: str = "labels") -> None:
    """Raise ValueError unless `labels` has `shape` and only values 0, 1 or -1 (missing)."""
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(labels.shape)}")
    if not ((labels == 0) | (labels == 1) | (labels == -1)).all():
        raise ValueError(f"{name} may only contain 0, 1 or -1 (missing)")


def _masked_reduce(values: torch.Tensor, mask: torch.Tensor, rows_ok: torch.Tensor, reduce) -> torch.Tensor:
    """Reduce `values` over its last dim where `mask`; rows without any entry get a finite dummy.

    Filling empty rows with 0 instead of -inf keeps logsumexp's backward free of nan (exp(-inf - -inf));
    the caller discards those rows with `torch.where`, which passes them a zero gradient.
    """
    fill = torch.where(rows_ok.unsqueeze(-1), float("-inf"), 0.0).to(values.dtype)
    return reduce(torch.where(mask, values, fill))


@CONTRASTIVE_LOSSES.register("aunce")
def aunce_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 0.5,
    exponent_pos: float = 1.2,
    exponent_neg: float = 0.8,
    positive_probs: Sequence[float] = (0.2, 0.6, 0.2),
    positive_modes: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    variant: str = "official",
) -> torch.Tensor:
    """AUNCE loss of two views z1, z2 [B, K, D] (L2-normalised per AU) with labels [B, K] in {0, 1, -1}.

    Anchors are the 2B rows of cat(z1, z2); per AU k, S[a, l] = z[a, k].z[l, k] / temperature and the
    positives of a are the rows with its label ("official" includes a itself, "paper" excludes it but keeps
    its other view). One positive mode per AU (0 max, 1 mean, 2 other view) is drawn from `positive_probs`
    with `generator` unless `positive_modes` [K] is given. Negatives are weighted by exp((e - 1) S) with
    e = exponent_pos for occurring anchors, exponent_neg otherwise. Returns the mean over valid anchors,
    then over AUs, as a scalar. Runs in float32 (float64 inputs stay float64), also under autocast.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if z1.dim() != 3 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both have shape [B, K, D], got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ValueError("z1 and z2 must be floating-point tensors")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    B, K, _ = z1.shape
    if B == 0 or K == 0:
        raise ValueError(f"z1 and z2 need at least one sample and one AU, got shape {tuple(z1.shape)}")
    validate_labels(labels, (B, K))
    if positive_modes is None:
        probs = torch.as_tensor(positive_probs, dtype=torch.float)
        if probs.shape != (3,) or (probs < 0).any() or probs.sum() <= 0:
            raise ValueError(
                f"positive_probs must be 3 non-negative numbers with a positive sum, got {positive_probs}"
            )
        positive_modes = torch.multinomial(probs, K, replacement=True, generator=generator)
    elif positive_modes.shape != (K,) or positive_modes.is_floating_point() or not (
        (positive_modes >= 0) & (positive_modes <= 2)
    ).all():
        raise ValueError(f"positive_modes must be an integer tensor of shape [{K}] with values 0, 1 or 2")

    dtype = torch.promote_types(z1.dtype, torch.float32)
    # The released exp-then-power overflows fp16 once e*S > 11, so stay in log space and >= float32.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        n = 2 * B
        z = torch.cat([z1, z2]).to(dtype).transpose(0, 1)  # [K, 2B, D]
        y = torch.cat([labels, labels]).to(z.device).T  # [K, 2B]
        modes = positive_modes.to(z.device).view(K, 1)
        s = z @ z.transpose(1, 2) / temperature  # [K, 2B, 2B]

        valid = y >= 0
        pair_valid = valid.unsqueeze(2) & valid.unsqueeze(1)
        same = y.unsqueeze(2) == y.unsqueeze(1)
        pos = same & pair_valid
        neg = ~same & pair_valid
        if variant == "paper":
            pos &= ~torch.eye(n, dtype=torch.bool, device=z.device)
        n_pos = pos.sum(-1)
        has_pos = n_pos > 0  # every valid anchor: official has a itself, paper its other view a'
        has_neg = neg.any(-1)

        log_pos_max = _masked_reduce(s, pos, has_pos, lambda v: v.amax(-1))
        log_pos_sum = _masked_reduce(s, pos, has_pos, lambda v: torch.logsumexp(v, -1))
        # The released mean divides by 2B, not by |P| (the "paper" variant uses |P|).
        log_count = math.log(n) if variant == "official" else n_pos.clamp(min=1).to(dtype).log()
        other_view = (torch.arange(n, device=z.device) + B) % n
        log_pos_aug = s[:, torch.arange(n, device=z.device), other_view]
        log_pos = torch.where(
            modes == 0, log_pos_max, torch.where(modes == 1, log_pos_sum - log_count, log_pos_aug)
        )

        exponent = torch.where(y == 1, exponent_pos, exponent_neg).to(dtype).unsqueeze(-1)
        log_neg = _masked_reduce(exponent * s, neg, has_neg, lambda v: torch.logsumexp(v, -1))

        counted = valid & has_neg
        loss = torch.where(counted, F.softplus(log_neg - log_pos), 0.0)  # 0 without negatives, as released
        per_au = loss.sum(-1) / valid.sum(-1).clamp(min=1)
        return per_au.mean()
