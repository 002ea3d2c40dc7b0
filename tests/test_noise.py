import math

import numpy as np
import pytest

from aunce_bench.data.noise import NOISE_MODELS, FlipRates, NoiseNeedsData, NoiseSpec, apply_label_noise, sequence_rows


def clean_labels(n=200_000, n_aus=4, base_rate=0.2, missing=0.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_aus)) < base_rate).astype(np.int8)
    labels[rng.random(labels.shape) < missing] = -1
    return labels


@pytest.mark.parametrize(("text", "rho_10", "rho_01"), [("symmetric:0.2", 0.2, 0.2), ("missing_positive:0.2", 0.2, 0.0)])
def test_achieved_flip_rates_match_requested(text, rho_10, rho_01):
    labels = clean_labels()
    noisy, rates = apply_label_noise(labels, NoiseSpec.parse(text), seed=1)
    assert sorted(rates) == [0, 1, 2, 3]
    for k, achieved in rates.items():
        assert achieved.rho_10 == pytest.approx(rho_10, abs=0.01)
        assert achieved.rho_01 == pytest.approx(rho_01, abs=0.01)
        assert achieved.n_flipped == int(np.sum(noisy[:, k] != labels[:, k]))


def test_missing_positive_never_creates_positives():
    labels = clean_labels(n=20_000)
    noisy, _ = apply_label_noise(labels, NoiseSpec.parse("missing_positive:0.5"), seed=2)
    assert not np.any((noisy == 1) & (labels != 1))
    assert np.any((noisy == 0) & (labels == 1))


def test_missing_labels_untouched_and_input_not_modified():
    labels = clean_labels(n=20_000, missing=0.3)
    before = labels.copy()
    noisy, _ = apply_label_noise(labels, NoiseSpec.parse("symmetric:0.4"), seed=3)
    np.testing.assert_array_equal(labels, before)
    np.testing.assert_array_equal(noisy == -1, labels == -1)
    assert noisy.dtype == labels.dtype and noisy is not labels
    assert set(np.unique(noisy)) == {-1, 0, 1}


def test_deterministic_given_seed():
    labels = clean_labels(n=5_000)
    spec = NoiseSpec.parse("symmetric:0.3")
    first, first_rates = apply_label_noise(labels, spec, seed=7)
    again, again_rates = apply_label_noise(labels, spec, seed=7)
    other, _ = apply_label_noise(labels, spec, seed=8)
    np.testing.assert_array_equal(first, again)
    assert first_rates == again_rates
    assert not np.array_equal(first, other)


def test_clean_spec_returns_unchanged_copy():
    labels = clean_labels(n=1_000, missing=0.1)
    for text in ("none", "symmetric:0"):
        spec = NoiseSpec.parse(text)
        assert spec.is_clean
        noisy, rates = apply_label_noise(labels, spec, seed=0)
        np.testing.assert_array_equal(noisy, labels)
        assert noisy is not labels
        assert all(r == FlipRates(0.0, 0.0, 0) for r in rates.values())


def test_rates_are_nan_without_true_positives_or_negatives():
    labels = np.array([[1, 0], [1, 0], [-1, 0]], dtype=np.int8)
    _, rates = apply_label_noise(labels, NoiseSpec.parse("symmetric:0.5"), seed=0)
    assert math.isnan(rates[0].rho_01) and not math.isnan(rates[0].rho_10)
    assert math.isnan(rates[1].rho_10) and not math.isnan(rates[1].rho_01)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("none", "none"),
        ("symmetric:0.2", "symmetric:0.2"),
        ("symmetric:0.20", "symmetric:0.2"),
        ("missing_positive:0.25", "missing_positive:0.25"),
        ("symmetric:0", "none"),
        ("missing_positive:0.0", "none"),
    ],
)
def test_parse_round_trips(text, canonical):
    spec = NoiseSpec.parse(text)
    assert str(spec) == canonical
    assert NoiseSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("symmetric", "missing ':<rate>'"),
        ("symmetric:abc", "not a number"),
        ("symmetric:1.5", r"outside \[0, 1\)"),
        ("symmetric:1", r"outside \[0, 1\)"),
        ("symmetric:-0.1", r"outside \[0, 1\)"),
        ("symetric:0.2", "did you mean 'symmetric'"),
        ("gaussian:0.2", "unknown noise model 'gaussian'; known: "),
    ],
)
def test_parse_rejects_malformed(text, message):
    with pytest.raises(ValueError, match=message) as error:
        NoiseSpec.parse(text)
    text_of_error = str(error.value)
    assert "\n" not in text_of_error
    assert "asymmetric, boundary, missing_positive, symmetric, weak_intensity" in text_of_error


def test_registry_and_direct_construction():
    assert set(NOISE_MODELS) >= {"symmetric", "missing_positive"}
    rho_10, rho_01 = NOISE_MODELS["missing_positive"](0.3, np.array([0.1, 0.2, 0.5]))
    np.testing.assert_array_equal(rho_10, [0.3] * 3)
    np.testing.assert_array_equal(rho_01, [0.0] * 3)
    with pytest.raises(ValueError, match="unknown noise model 'gaussian'"):
        NoiseSpec("gaussian", 0.1)
    with pytest.raises(ValueError, match="takes no rate"):
        NoiseSpec("none", 0.1)


def test_asymmetric_noise_keeps_each_aus_expected_base_rate():
    rng = np.random.default_rng(0)
    rates = np.array([0.05, 0.2, 0.5])
    labels = (rng.random((200_000, 3)) < rates).astype(np.int8)
    labels[rng.random(labels.shape) < 0.1] = -1
    noisy, flips = apply_label_noise(labels, NoiseSpec.parse("asymmetric:0.3"), seed=1)
    for k, rate in enumerate(rates):
        known = labels[:, k] >= 0
        assert flips[k].rho_10 == pytest.approx(0.3, abs=0.01)
        assert flips[k].rho_01 == pytest.approx(0.3 * rate / (1 - rate), abs=0.005)
        assert (noisy[known, k] == 1).mean() == pytest.approx((labels[known, k] == 1).mean(), abs=0.005)
    assert np.array_equal(noisy == -1, labels == -1)
    rho_10, rho_01 = NOISE_MODELS["asymmetric"](0.5, np.array([0.9, 1.0, np.nan]))
    np.testing.assert_allclose(rho_01, [1.0, 0.0, 0.0])  # capped at 1; an AU all positive or unlabelled: none


def test_boundary_noise_moves_episode_edges_within_their_sequence():
    rng = np.random.default_rng(4)
    n_sequences, length = 40, 60
    labels = np.zeros((n_sequences * length, 2), dtype=np.int8)
    for s in range(n_sequences):
        for k in range(2):
            start = rng.integers(5, 25)
            labels[s * length + start: s * length + start + rng.integers(5, 20), k] = 1
    labels[rng.random(labels.shape) < 0.05] = -1
    shuffled = rng.permutation(len(labels))  # rows in any order: sequence_rows restores frame order
    sequence = np.repeat([f"S{s:02d}/T1" for s in range(n_sequences)], length)[shuffled]
    frame = np.tile(np.arange(length), n_sequences)[shuffled]
    labels = labels[shuffled]
    rows = sequence_rows(sequence, frame)
    assert len(rows) == n_sequences and all(np.all(np.diff(frame[r]) == 1) for r in rows)

    noisy, flips = apply_label_noise(labels, NoiseSpec.parse("boundary:0.3"), seed=0, sequences=rows)
    assert np.array_equal(noisy == -1, labels == -1)
    assert sum(f.n_flipped for f in flips.values()) > 0
    for r in rows:
        for k in range(2):
            labelled = r[labels[r, k] >= 0]  # edges move over the labelled frames
            clean, moved = labels[labelled, k], noisy[labelled, k]
            positive = np.flatnonzero(clean == 1)
            changed = np.flatnonzero(moved != clean)
            if len(changed):  # every change lies within 0.3 x the episode's length of one of its edges
                reach = round(0.3 * (positive[-1] - positive[0] + 1))
                edges = np.array([positive[0], positive[-1] + 1])
                assert np.abs(changed[:, None] - edges[None, :]).min(axis=1).max() <= reach
    again, _ = apply_label_noise(labels, NoiseSpec.parse("boundary:0.3"), seed=0, sequences=rows)
    assert np.array_equal(noisy, again)
    with pytest.raises(ValueError, match="needs the frames' sequences"):
        apply_label_noise(labels, NoiseSpec.parse("boundary:0.3"), seed=0)


def test_weak_intensity_noise_misses_the_weakest_positives_first():
    rng = np.random.default_rng(2)
    intensities = rng.uniform(0, 5, (3000, 2)).astype(np.float32)
    labels = (intensities >= 2).astype(np.int8)
    labels[rng.random(labels.shape) < 0.05] = -1
    noisy, flips = apply_label_noise(labels, NoiseSpec.parse("weak_intensity:0.25"), seed=0, intensities=intensities)
    assert np.array_equal(noisy == -1, labels == -1) and not (noisy > labels).any()  # only 1 -> 0
    for k in range(2):
        positive = labels[:, k] == 1
        missed = positive & (noisy[:, k] == 0)
        assert missed.sum() == round(0.25 * positive.sum())
        assert flips[k].rho_10 == pytest.approx(0.25, abs=1 / positive.sum()) and flips[k].rho_01 == 0
        # every missed positive is weaker than every kept one (an independent check of "nearest the threshold")
        assert intensities[missed, k].max() <= intensities[positive & ~missed, k].min()
    again, _ = apply_label_noise(labels, NoiseSpec.parse("weak_intensity:0.25"), seed=0, intensities=intensities)
    assert np.array_equal(noisy, again)


def test_weak_intensity_noise_refuses_data_without_intensities():
    labels = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.int8)
    with pytest.raises(NoiseNeedsData, match="needs the frames' intensities"):
        apply_label_noise(labels, NoiseSpec.parse("weak_intensity:0.2"), seed=0)
    no_intensity = np.full(labels.shape, np.nan, np.float32)
    with pytest.raises(NoiseNeedsData, match="AU column 0 has positives without one"):
        apply_label_noise(labels, NoiseSpec.parse("weak_intensity:0.2"), seed=0, intensities=no_intensity)
