"""The SynthAU label process reproduces the label statistics of BP4D and DISFA
(docs/PROTOCOLS.md#label-statistics)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.stats import multivariate_normal, norm

from aunce_bench.data.synth import labels
from aunce_bench.data.synth.label_stats import LABEL_STATISTICS, RENDERED_AUS, LabelStatistics
from aunce_bench.data.synth.labels import (
    CALIBRATED_KERNEL_WIDTHS,
    LabelProcess,
    SimulatedLabels,
    calibrate_kernel_width,
    episode_lengths,
    nearest_correlation,
    per_subject_base_rates,
    phi,
    tetrachoric_correlation,
)

SEED = 7
N_SUBJECTS = 400
PROFILE_KEYS = {"bp4d": 0, "disfa": 1}
COLUMN = {au: k for k, au in enumerate(RENDERED_AUS)}

# docs/PROTOCOLS.md#label-statistics, written out here so that a changed profile cannot silently move the targets.
REPORTED_BASE_RATES = {
    "bp4d": {1: 0.211, 2: 0.171, 4: 0.203, 6: 0.461, 7: 0.549, 10: 0.594, 12: 0.562,
             14: 0.466, 15: 0.169, 17: 0.343, 23: 0.165, 24: 0.151},
    "disfa": {1: 0.050, 2: 0.043, 4: 0.152, 6: 0.079, 9: 0.042, 12: 0.129, 25: 0.277, 26: 0.088},
}  # fmt: skip
REPORTED_PHI = {"bp4d": {(1, 2): 0.46, (7, 12): 0.35}, "disfa": {(1, 2): 0.63, (12, 25): 0.46}}
AU12_EPISODE_BAND = {"bp4d": (60, 200), "disfa": (35, 140)}  # measured medians: 123 and 71


@pytest.fixture(scope="module", params=["bp4d", "disfa"])
def simulated(request) -> tuple[str, LabelProcess, SimulatedLabels]:
    """One labels-only generation per profile: 400 subjects, default sequences and frames."""
    name = request.param
    process = LabelProcess(LABEL_STATISTICS[name], PROFILE_KEYS[name])
    return name, process, process.simulate(SEED, N_SUBJECTS)


def test_shapes_types_and_range(simulated):
    name, _, sim = simulated
    stats = LABEL_STATISTICS[name]
    n_rows = N_SUBJECTS * stats.sequences_per_subject * stats.frames_per_sequence
    assert sim.intensities.shape == (n_rows, len(RENDERED_AUS))
    assert sim.intensities.dtype == np.float32
    assert sim.intensities.min() >= 0.0 and sim.intensities.max() <= 5.0
    assert sim.intensities.max() == 5.0
    trace = (sim.intensities > 0) & (sim.intensities < 2)
    assert 0.0 < trace.mean() < (sim.intensities == 0).mean()  # trace intensities exist, zeros dominate
    assert np.array_equal(np.unique(sim.subject_index), np.arange(N_SUBJECTS))
    assert sim.sequence_index.max() == stats.sequences_per_subject - 1
    assert np.array_equal(sim.frame_index[: stats.frames_per_sequence], np.arange(stats.frames_per_sequence))


def test_base_rates_match_facts(simulated):
    name, _, sim = simulated
    rates = sim.occurrence.mean(axis=0)
    for au, target in REPORTED_BASE_RATES[name].items():
        assert abs(rates[COLUMN[au]] - target) <= 0.03, (name, au, rates[COLUMN[au]], target)


def test_unlabelled_base_rates_match_profile(simulated):
    name, _, sim = simulated
    rates = sim.occurrence.mean(axis=0)
    for au, target in LABEL_STATISTICS[name].base_rates.items():
        assert abs(rates[COLUMN[au]] - target) <= 0.03, (name, au, rates[COLUMN[au]], target)


def test_phi_matches_facts(simulated):
    name, _, sim = simulated
    occ = sim.occurrence
    for (a, b), target in REPORTED_PHI[name].items():
        measured = phi(occ[:, COLUMN[a]], occ[:, COLUMN[b]])
        assert abs(measured - target) <= 0.1, (name, a, b, measured, target)
    assert phi(occ[:, COLUMN[6]], occ[:, COLUMN[12]]) > 0.4  # smile: cheek raiser with lip corner puller


def test_all_phi_targets_within_tolerance(simulated):
    name, _, sim = simulated
    stats, occ = LABEL_STATISTICS[name], sim.occurrence
    for i, a in enumerate(RENDERED_AUS):
        for b in RENDERED_AUS[i + 1 :]:
            measured = phi(occ[:, COLUMN[a]], occ[:, COLUMN[b]])
            assert abs(measured - stats.phi_target(a, b)) <= 0.1, (name, a, b, measured)


def test_subjects_differ(simulated):
    name, _, sim = simulated
    per_subject = per_subject_base_rates(sim.occurrence, sim.subject_index)
    assert per_subject.shape == (N_SUBJECTS, len(RENDERED_AUS))
    au12 = per_subject[:, COLUMN[12]]
    assert 0.1 <= au12.std() <= 0.3, (name, au12.std())
    assert au12.max() - au12.min() > 0.5


def test_episode_lengths(simulated):
    name, _, sim = simulated
    occ12 = sim.occurrence[:, COLUMN[12]]
    lengths = episode_lengths(occ12, sim.sequence_key)
    assert lengths.sum() == occ12.sum()
    low, high = AU12_EPISODE_BAND[name]
    assert low <= np.median(lengths) <= high, (name, np.median(lengths))
    stats = LABEL_STATISTICS[name]
    for au in RENDERED_AUS:  # every AU within 25 % of its profile median
        median = np.median(episode_lengths(sim.occurrence[:, COLUMN[au]], sim.sequence_key))
        assert abs(median / stats.episode_median[au] - 1) <= 0.25, (name, au, median)


def test_subset_generation_equals_full_simulation(simulated):
    name, process, sim = simulated
    for sequence in range(LABEL_STATISTICS[name].sequences_per_subject):
        rows = sim.intensities[(sim.subject_index == 5) & (sim.sequence_index == sequence)]
        assert np.array_equal(process.sequence_intensities(SEED, 5, sequence), rows)


def test_determinism_and_seed_dependence():
    stats = LABEL_STATISTICS["bp4d"]
    first = LabelProcess(stats, 0).sequence_intensities(11, 3, 2)
    again = LabelProcess(stats, 0).sequence_intensities(11, 3, 2)
    assert np.array_equal(first, again)
    process = LabelProcess(stats, 0)
    assert not np.array_equal(first, process.sequence_intensities(12, 3, 2))
    assert not np.array_equal(first, process.sequence_intensities(11, 4, 2))
    assert not np.array_equal(first, process.sequence_intensities(11, 3, 1))
    assert not np.array_equal(first, LabelProcess(stats, 1).sequence_intensities(11, 3, 2))
    assert np.array_equal(process.subject_offsets(11, 3), process.subject_offsets(11, 3))
    small = process.simulate(11, n_subjects=3, sequences_per_subject=2, frames_per_sequence=50)
    assert small.intensities.shape == (3 * 2 * 50, len(RENDERED_AUS))
    assert np.array_equal(small.intensities, process.simulate(11, 3, 2, 50).intensities)


def test_episode_lengths_respects_sequence_boundaries():
    occ = np.array([1, 1, 0, 1, 1, 1, 1, 0, 0, 1], dtype=bool)
    assert episode_lengths(occ).tolist() == [2, 4, 1]
    key = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    assert episode_lengths(occ, key).tolist() == [2, 2, 2, 1]
    assert episode_lengths(occ.reshape(2, 5)).tolist() == [2, 2, 2, 1]
    assert episode_lengths(np.zeros(5, dtype=bool)).size == 0


def test_phi_and_per_subject_rates_helpers():
    a = np.array([1, 1, 0, 0], dtype=bool)
    assert phi(a, a) == pytest.approx(1.0)
    assert phi(a, ~a) == pytest.approx(-1.0)
    assert phi(a, np.array([1, 0, 1, 0], dtype=bool)) == pytest.approx(0.0)
    assert np.isnan(phi(a, np.ones(4, dtype=bool)))
    rates = per_subject_base_rates(np.array([1, 0, 1, 1, 0]), np.array([4, 4, 9, 9, 9]))
    assert rates.tolist() == pytest.approx([0.5, 2 / 3])


@pytest.mark.parametrize(
    "target, rate_a, rate_b", [(0.46, 0.211, 0.171), (-0.26, 0.203, 0.562), (0.63, 0.05, 0.043)]
)
def test_tetrachoric_correlation_reproduces_phi(target, rate_a, rate_b):
    rho = tetrachoric_correlation(target, rate_a, rate_b)
    upper = [-norm.isf(rate_a), -norm.isf(rate_b)]  # P(x_a > t_a, x_b > t_b) by symmetry
    both = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf(upper)
    spread = np.sqrt(rate_a * (1 - rate_a) * rate_b * (1 - rate_b))
    assert (both - rate_a * rate_b) / spread == pytest.approx(target, abs=2e-3)


def test_nearest_correlation():
    valid = np.array([[1.0, 0.3], [0.3, 1.0]])
    assert np.array_equal(nearest_correlation(valid), valid)
    invalid = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    fixed = nearest_correlation(invalid)
    assert np.allclose(np.diag(fixed), 1.0)
    assert np.linalg.eigvalsh(fixed)[0] > 0
    assert np.abs(fixed - invalid).max() < 0.9


def test_label_statistics_validation():
    stats = LABEL_STATISTICS["disfa"]
    with pytest.raises(ValueError, match="outside"):
        dataclasses.replace(stats, phi={(12, 15): -0.5})  # rare AUs cannot be that anti-correlated
    with pytest.raises(ValueError, match="cover"):
        dataclasses.replace(stats, base_rates={1: 0.1})
    with pytest.raises(ValueError, match="a < b"):
        dataclasses.replace(stats, phi={(2, 1): 0.2})
    assert stats.phi_target(25, 12) == stats.phi_target(12, 25) == 0.46
    assert stats.phi_target(1, 26) == 0.0
    for profile in LABEL_STATISTICS.values():
        assert isinstance(profile, LabelStatistics)
        assert set(profile.labelled_aus) <= set(RENDERED_AUS)


@pytest.mark.parametrize("key", sorted(CALIBRATED_KERNEL_WIDTHS))
def test_shipped_kernel_widths_are_what_calibration_gives(key):
    assert calibrate_kernel_width(*key) == CALIBRATED_KERNEL_WIDTHS[key]  # exactly: generated data stays the same


def test_built_in_profiles_need_no_calibration(monkeypatch):
    def calibrate(*key):
        raise AssertionError(f"kernel width {key} is not shipped in CALIBRATED_KERNEL_WIDTHS")

    monkeypatch.setattr(labels, "calibrate_kernel_width", calibrate)
    for stats in LABEL_STATISTICS.values():
        assert [labels.kernel_width(stats, au) for au in RENDERED_AUS]
