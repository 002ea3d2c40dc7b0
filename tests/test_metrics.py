import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from aunce_bench.metrics import (
    AUMetrics,
    au_metrics,
    chance_f1,
    grouped_au_metrics,
    mean_f1,
    summarise,
)

AUS = ["AU1", "AU2", "AU4", "AU12"]


def random_fold(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(AUS))) < [0.05, 0.2, 0.4, 0.6]).astype(np.int8)
    probabilities = np.clip(0.35 * labels + rng.random(labels.shape) * 0.7, 0.0, 1.0)
    labels[rng.random(labels.shape) < 0.1] = -1
    return probabilities, labels


def test_matches_sklearn_per_au_on_valid_frames():
    probabilities, labels = random_fold()
    metrics = au_metrics(probabilities, labels, AUS)
    assert list(metrics) == AUS
    for k, name in enumerate(AUS):
        valid = labels[:, k] != -1
        truth, scores = labels[valid, k], probabilities[valid, k]
        predicted = (scores >= 0.5).astype(int)
        m = metrics[name]
        assert m.f1 == pytest.approx(f1_score(truth, predicted))
        assert m.precision == pytest.approx(precision_score(truth, predicted))
        assert m.recall == pytest.approx(recall_score(truth, predicted))
        assert m.accuracy == pytest.approx(accuracy_score(truth, predicted))
        assert m.auc == pytest.approx(roc_auc_score(truth, scores))
        assert m.support == valid.sum()
        assert m.positives == truth.sum()
    assert mean_f1(metrics) == pytest.approx(np.mean([m.f1 for m in metrics.values()]))


def test_counts_are_pooled_not_averaged_over_groups():
    # Group a: 1 TP, 1 FN (F1 2/3). Group b: 8 TP, 0 errors (F1 1). Pooled: 9 TP, 1 FN -> 18/19.
    labels = np.array([[1]] * 10)
    probabilities = np.array([[0.9], [0.1]] + [[0.9]] * 8)
    groups = np.array(["a", "a"] + ["b"] * 8)
    grouped = grouped_au_metrics(probabilities, labels, groups, ["AU1"])
    assert grouped["a"]["AU1"].f1 == pytest.approx(2 / 3)
    assert grouped["b"]["AU1"].f1 == pytest.approx(1.0)
    assert grouped["all"]["AU1"].f1 == pytest.approx(18 / 19)
    assert grouped["all"]["AU1"].f1 != pytest.approx((2 / 3 + 1.0) / 2)


def test_threshold_is_inclusive():
    labels = np.array([[1], [0]])
    m = au_metrics(np.array([[0.5], [np.nextafter(0.5, 0.0)]]), labels, ["AU1"])["AU1"]
    assert (m.f1, m.precision, m.recall, m.accuracy) == (1.0, 1.0, 1.0, 1.0)
    m = au_metrics(np.array([[0.7], [0.7]]), labels, ["AU1"], threshold=0.7)["AU1"]
    assert m.precision == 0.5


def test_one_class_au_has_nan_auc_and_zero_scores_when_undefined():
    labels = np.array([[0, 1], [0, 0], [-1, 1]])
    probabilities = np.array([[0.2, 0.8], [0.1, 0.3], [0.9, 0.6]])
    metrics = au_metrics(probabilities, labels, ["AU1", "AU2"])
    only_negatives = metrics["AU1"]
    assert math.isnan(only_negatives.auc)
    assert only_negatives == AUMetrics(
        f1=0.0, precision=0.0, recall=0.0, accuracy=1.0, auc=only_negatives.auc, support=2, positives=0
    )
    assert metrics["AU2"].auc == 1.0


def test_chance_f1_equals_all_positive_prediction():
    _, labels = random_fold(seed=1)
    labels[:, 0] = np.where(labels[:, 0] == 1, 0, labels[:, 0])  # an AU with no positives scores 0
    expected = mean_f1(au_metrics(np.ones(labels.shape), labels, AUS))
    assert chance_f1(labels, AUS) == pytest.approx(expected)
    assert au_metrics(np.ones(labels.shape), labels, AUS)["AU1"].f1 == 0.0


def test_grouped_all_equals_ungrouped():
    probabilities, labels = random_fold(seed=2)
    groups = np.random.default_rng(3).choice(["frontal", "left", "right"], size=len(labels))
    grouped = grouped_au_metrics(probabilities, labels, groups, AUS)
    assert sorted(grouped) == ["all", "frontal", "left", "right"]
    ungrouped = au_metrics(probabilities, labels, AUS)
    for name in AUS:
        assert grouped["all"][name] == ungrouped[name]
    assert sum(grouped[g]["AU2"].support for g in ("frontal", "left", "right")) == ungrouped["AU2"].support


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        (np.full((3, 2), 0.5), np.zeros((3, 1), int), "does not match"),
        (np.array([[0.5, np.nan]]), np.zeros((1, 2), int), "NaN"),
        (np.array([[0.5, 1.2]]), np.zeros((1, 2), int), r"\[0, 1\]"),
        (np.array([[0.5, -0.1]]), np.zeros((1, 2), int), r"\[0, 1\]"),
        (np.array([[0.5, 0.5]]), np.array([[0, 9]]), "-1"),
        (np.array([0.5, 0.5]), np.array([0, 1]), "2-D"),
    ],
)
def test_invalid_inputs_raise(probabilities, labels, message):
    with pytest.raises(ValueError, match=message):
        au_metrics(probabilities, labels, ["AU1", "AU2"])


def test_invalid_au_names_and_groups_raise():
    with pytest.raises(ValueError, match="AU names"):
        au_metrics(np.full((2, 2), 0.5), np.zeros((2, 2), int), ["AU1"])
    with pytest.raises(ValueError, match="groups"):
        grouped_au_metrics(np.full((2, 1), 0.5), np.zeros((2, 1), int), np.array(["a"]), ["AU1"])
    with pytest.raises(ValueError, match="reserved"):
        grouped_au_metrics(np.full((2, 1), 0.5), np.zeros((2, 1), int), np.array(["a", "all"]), ["AU1"])


def test_summarise():
    assert summarise([0.6, 0.7, 0.8]) == (pytest.approx(0.7), pytest.approx(0.1))
    assert summarise([0.6, math.nan, 0.8]) == (pytest.approx(0.7), pytest.approx(np.std([0.6, 0.8], ddof=1)))
    assert summarise([0.65]) == (0.65, 0.0)
    mean, std = summarise([math.nan])
    assert math.isnan(mean) and math.isnan(std)
