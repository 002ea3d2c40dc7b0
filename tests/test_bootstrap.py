"""Paired subject bootstrap: against an independent frame-level computation, and sanity checks."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import f1_score

from aunce_bench.report.bootstrap import paired_difference, subject_counts

AUS = ["AU1", "AU4", "AU12"]
THRESHOLD = 0.4


def predictions(rng, subjects, skill, frames=12):
    """A predictions table: per subject `frames` frames, labels with some missing, probabilities with `skill`."""
    n = len(subjects) * frames
    table = {"subject": np.repeat(subjects, frames)}
    for au in AUS:
        labels = (rng.random(n) < 0.35).astype(np.int8)
        labels[rng.random(n) < 0.1] = -1
        table[f"prob_{au}"] = 1 / (1 + np.exp(-(skill * (2 * (labels == 1) - 1) + rng.normal(0, 1, n))))
        table[f"label_{au}"] = labels
    return table


def same_labels(table, other):
    """`other` with the labels of `table` (two methods on the same test frames)."""
    return other | {f"label_{au}": table[f"label_{au}"] for au in AUS}


def slow_au_f1(table, chosen):
    """sklearn's F1 per AU on the frames of the chosen subjects (with repeats), missing excluded."""
    rows = np.concatenate([np.flatnonzero(table["subject"] == subject) for subject in chosen])
    scores = []
    for au in AUS:
        labels, probs = table[f"label_{au}"][rows], table[f"prob_{au}"][rows]
        valid = labels != -1
        scores.append(f1_score(labels[valid], probs[valid] >= THRESHOLD, zero_division=0))
    return np.array(scores)


def test_bootstrap_matches_an_independent_frame_level_loop():
    rng = np.random.default_rng(1)
    folds = {"fold1": [f"S{i:02d}" for i in range(7)], "fold2": [f"T{i:02d}" for i in range(5)]}
    seeds = (0, 1)
    runs = {}  # fold -> list of (table a, table b), one pair per seed
    for fold, subjects in folds.items():
        runs[fold] = []
        for _ in seeds:
            a = predictions(rng, subjects, skill=1.5)
            runs[fold].append((a, same_labels(a, predictions(rng, subjects, skill=0.8))))
    resamples = 60

    fast = paired_difference(
        [[(subject_counts(pa.table(a), AUS, THRESHOLD, sorted(folds[fold])),
           subject_counts(pa.table(b), AUS, THRESHOLD, sorted(folds[fold]))) for a, b in runs[fold]]
         for fold in folds],
        resamples=resamples, seed=7)

    draw = np.random.default_rng(7)  # the documented order: fold by fold, one multinomial per fold
    differences = np.zeros((resamples, len(AUS)))
    for fold, subjects in folds.items():
        subjects = sorted(subjects)
        weights = draw.multinomial(len(subjects), np.full(len(subjects), 1 / len(subjects)), size=resamples)
        for b in range(resamples):
            chosen = [subject for subject, count in zip(subjects, weights[b]) for _ in range(count)]
            differences[b] += np.mean([slow_au_f1(a, chosen) - slow_au_f1(other, chosen)
                                       for a, other in runs[fold]], axis=0) / len(folds)
    observed = np.mean([np.mean([slow_au_f1(a, sorted(folds[fold])) - slow_au_f1(b, sorted(folds[fold]))
                                 for a, b in runs[fold]], axis=0) for fold in folds], axis=0)
    low, high = np.percentile(differences.mean(axis=1), [2.5, 97.5])
    assert fast.difference == pytest.approx(observed.mean(), abs=1e-12)
    assert (fast.low, fast.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert fast.pairs == 4
    assert len(fast.per_au) == len(AUS)  # per AU: the same resamples
    for k, interval in enumerate(fast.per_au):
        low, high = np.percentile(differences[:, k], [2.5, 97.5])
        assert interval.difference == pytest.approx(observed[k], abs=1e-12)
        assert (interval.low, interval.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_difference_to_itself_is_exactly_zero():
    rng = np.random.default_rng(2)
    subjects = [f"S{i}" for i in range(9)]
    counts = subject_counts(pa.table(predictions(rng, subjects, skill=1.0)), AUS, 0.5, subjects)
    interval = paired_difference([[(counts, counts)]], resamples=500)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert not interval.significant
    assert [(au.difference, au.low, au.high) for au in interval.per_au] == [(0.0, 0.0, 0.0)] * len(AUS)


def test_a_clearly_better_method_gets_an_interval_above_zero():
    rng = np.random.default_rng(3)
    subjects = [f"S{i}" for i in range(12)]
    good = predictions(rng, subjects, skill=3.0, frames=30)
    poor = same_labels(good, predictions(rng, subjects, skill=0.2, frames=30))
    counts = [subject_counts(pa.table(t), AUS, 0.5, subjects) for t in (good, poor)]
    interval = paired_difference([[tuple(counts)]], resamples=1000)
    assert 0 < interval.low < interval.difference < interval.high and interval.significant
    flipped = paired_difference([[tuple(reversed(counts))]], resamples=1000)
    assert flipped.high < 0 and flipped.difference == pytest.approx(-interval.difference)


def test_counts_exclude_missing_labels_and_reject_unknown_subjects():
    table = pa.table({"subject": ["a", "a", "b"], "prob_AU1": [0.9, 0.9, 0.1], "label_AU1": [1, -1, 1]})
    counts = subject_counts(table, ["AU1"], 0.5, ["a", "b"])
    np.testing.assert_array_equal(counts[:, 0], [[1, 0, 0], [0, 0, 1]])  # the missing frame counts nowhere
    with pytest.raises(ValueError, match="outside the test set"):
        subject_counts(table, ["AU1"], 0.5, ["a"])
