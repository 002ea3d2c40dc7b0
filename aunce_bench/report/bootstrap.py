"""Paired bootstrap over test subjects of F1 differences (per AU and their mean), from stored per-frame probabilities.

Frames of one subject are not independent (AUs come in episodes, subjects differ), so the unit resampled is
the test subject. Per run, `subject_counts` reduces the predictions to TP/FP/FN counts per subject and AU;
a resample is then a vector of subject multiplicities, and pooled counts are one matrix product, so a
thousand resamples cost milliseconds. F1 follows the evaluation convention of `aunce_bench.metrics`
(pooled over the fold, 0 when undefined, missing labels excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from aunce_bench.metrics import MISSING_LABEL
from aunce_bench.results import column_array

RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean-F1 difference (a - b), its bootstrap interval, how many paired runs it rests on, and the same per AU
    (`per_au`, in the order of the counts' AUs, from the same resamples; empty in the per-AU intervals)."""

    difference: float
    low: float
    high: float
    pairs: int
    per_au: tuple[Interval, ...] = ()

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def subject_counts(table: pa.Table, aus: Sequence[str], threshold: float, subjects: Sequence[str]) -> np.ndarray:
    """TP, FP, FN per subject and AU: float array [len(subjects), len(aus), 3], rows in the order of `subjects`.

    `table` holds a run's predictions (columns subject, prob_<AU>, label_<AU>); frames whose label is missing
    are left out of that AU's counts.
    """
    position = {name: i for i, name in enumerate(subjects)}
    frames = table.column("subject").to_pylist()
    unknown = set(frames) - position.keys()
    if unknown:
        raise ValueError(f"predictions hold subjects outside the test set: {sorted(unknown)[:3]}")
    index = np.fromiter((position[name] for name in frames), dtype=np.int64, count=len(frames))
    counts = np.zeros((len(subjects), len(aus), 3))
    for k, au in enumerate(aus):
        predicted = column_array(table, f"prob_{au}") >= threshold
        label = column_array(table, f"label_{au}")
        truth, valid = label == 1, label != MISSING_LABEL
        for c, hit in enumerate((predicted & truth, predicted & ~truth & valid, ~predicted & truth)):
            counts[:, k, c] = np.bincount(index, weights=hit, minlength=len(subjects))
    return counts


def au_f1(weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """F1 per AU pooled over subjects weighted by `weights` [B, S]: one row per row of weights, [B, K]."""
    tp, fp, fn = np.moveaxis(np.einsum("bs,skc->bkc", weights, counts), -1, 0)
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def paired_difference(folds: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]], resamples: int = RESAMPLES,
                      seed: int = 0, level: float = LEVEL) -> Interval:
    """Bootstrap intervals of the F1 differences a - b over paired runs: of the mean over AUs, and per AU.

    `folds` holds, per fold, the (counts of a, counts of b) of its paired runs (one pair per seed), each
    [S, K, 3] over the fold's test subjects (`subject_counts`). Each resample draws, fold by fold in the given
    order, subject multiplicities from one multinomial (S draws with replacement, `numpy.random.default_rng
    (seed)`) shared by both methods, all pairs of the fold and all AUs; an AU's difference is averaged over the
    fold's pairs, then over folds, and the mean-F1 difference is its mean over AUs. Each percentile interval
    holds `level` of the resampled differences.
    """
    if not folds or not all(folds):
        raise ValueError("paired_difference needs at least one pair of runs in every fold")
    rng = np.random.default_rng(seed)
    n_aus = folds[0][0][0].shape[1]
    draws, observed = np.zeros((resamples, n_aus)), np.zeros(n_aus)
    for pairs in folds:
        n_subjects = pairs[0][0].shape[0]
        weights = rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=resamples).astype(float)
        everyone = np.ones((1, n_subjects))
        draws += np.mean([au_f1(weights, a) - au_f1(weights, b) for a, b in pairs], axis=0)
        observed += np.mean([au_f1(everyone, a)[0] - au_f1(everyone, b)[0] for a, b in pairs], axis=0)
    draws, observed = draws / len(folds), observed / len(folds)
    tail = (1 - level) / 2 * 100
    n_pairs = sum(len(pairs) for pairs in folds)

    def interval(values: np.ndarray, difference: float, per_au: tuple[Interval, ...] = ()) -> Interval:
        low, high = np.percentile(values, [tail, 100 - tail])
        return Interval(float(difference), float(low), float(high), n_pairs, per_au)

    per_au = tuple(interval(draws[:, k], observed[k]) for k in range(n_aus))
    return interval(draws.mean(axis=1), observed.mean(), per_au)
