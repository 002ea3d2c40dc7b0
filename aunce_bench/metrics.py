"""Per-AU detection metrics under the community evaluation convention.

Convention (as in ME-GraphAU/AUNCE/JAA-Net; docs/PROTOCOLS.md#evaluation): per AU, a frame is predicted
positive iff its probability is >= the threshold (0.5); TP/FP/FN are pooled over all frames of a test fold (never
averaged over subjects or sequences); F1 per AU, mean over AUs = the fold score. Frames whose label is missing
(-1) are excluded per AU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MISSING_LABEL = -1
DEFAULT_THRESHOLD = 0.5
ALL_GROUP = "all"


@dataclass(frozen=True)
class AUMetrics:
    """Metrics of one AU over the valid (non-missing) frames; `auc` is NaN when they hold one class only."""

    f1: float
    precision: float
    recall: float
    accuracy: float
    auc: float
    support: int
    positives: int


def _validate(probabilities: np.ndarray, labels: np.ndarray, au_names: Sequence[str]) -> None:
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be 2-D [frames, AUs], got shape {probabilities.shape}")
    if labels.shape != probabilities.shape:
        raise ValueError(f"labels shape {labels.shape} does not match probabilities shape {probabilities.shape}")
    if len(au_names) != probabilities.shape[1]:
        raise ValueError(f"{len(au_names)} AU names for {probabilities.shape[1]} probability columns")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities contain NaN or infinite values")
    if probabilities.size and (probabilities.min() < 0.0 or probabilities.max() > 1.0):
        raise ValueError(
            f"probabilities must lie in [0, 1], got range [{probabilities.min():g}, {probabilities.max():g}]"
        )
    if not np.all(np.isin(labels, (0, 1, MISSING_LABEL))):
        raise ValueError("labels must be 0 (absent), 1 (present) or -1 (missing)")


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (sklearn's zero_division=0)."""
    return numerator / denominator if denominator else 0.0


def _one_au(scores: np.ndarray, truth: np.ndarray, threshold: float) -> AUMetrics:
    from sklearn.metrics import roc_auc_score  # imported on first use: it takes a second, reports never need it

    valid = truth != MISSING_LABEL
    scores, truth = scores[valid], truth[valid] == 1
    predicted = scores >= threshold
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    support = int(truth.size)
    positives = int(truth.sum())
    one_class = positives in (0, support)
    return AUMetrics(
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        accuracy=_ratio(support - fp - fn, support),
        auc=math.nan if one_class else float(roc_auc_score(truth, scores)),
        support=support,
        positives=positives,
    )


def au_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    au_names: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, AUMetrics]:
    """Metrics per AU from probabilities [N, K] and labels [N, K] in {0, 1, -1}, keyed by AU name."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    _validate(probabilities, labels, au_names)
    return {name: _one_au(probabilities[:, k], labels[:, k], threshold) for k, name in enumerate(au_names)}


def mean_f1(metrics: dict[str, AUMetrics]) -> float:
    """Mean F1 over AUs: the fold score."""
    return float(np.mean([m.f1 for m in metrics.values()]))


def chance_au_f1(positive_rate: float) -> float:
    """F1 of predicting an AU present on every frame, given the share p of frames where it is: 2p / (1 + p)."""
    return 2 * positive_rate / (1 + positive_rate)


def chance_f1(labels: np.ndarray, au_names: Sequence[str]) -> float:
    """Mean F1 of predicting every AU present on every frame: per AU 2p / (1 + p), p the valid positive rate."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(au_names):
        raise ValueError(f"labels shape {labels.shape} does not match {len(au_names)} AU names")
    scores = []
    for k in range(labels.shape[1]):
        valid = labels[:, k] != MISSING_LABEL
        p = float(np.mean(labels[valid, k] == 1)) if valid.any() else 0.0
        scores.append(chance_au_f1(p))
    return float(np.mean(scores))


def grouped_au_metrics(
    probabilities: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    au_names: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, dict[str, AUMetrics]]:
    """Metrics per value of `groups` (one string per frame, e.g. a head-pose bin), plus "all" for every frame."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.asarray(groups).astype(str)
    if groups.shape != (probabilities.shape[0],):
        raise ValueError(f"groups shape {groups.shape} does not match {probabilities.shape[0]} frames")
    if ALL_GROUP in groups:
        raise ValueError(f"group value {ALL_GROUP!r} is reserved for the metrics over all frames")
    result = {ALL_GROUP: au_metrics(probabilities, labels, au_names, threshold)}
    for group in sorted(set(groups.tolist())):
        rows = groups == group
        result[group] = au_metrics(probabilities[rows], labels[rows], au_names, threshold)
    return result


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0.0 for one value) ignoring NaN, e.g. over folds or seeds.

    Both are NaN when no value is left.
    """
    kept = np.asarray(values, dtype=np.float64)
    kept = kept[~np.isnan(kept)]
    if kept.size == 0:
        return math.nan, math.nan
    std = float(np.std(kept, ddof=1)) if kept.size > 1 else 0.0
    return float(np.mean(kept)), std
