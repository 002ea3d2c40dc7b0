"""The latent temporal label process of SynthAU.

Every frame of every SynthAU sequence gets a continuous intensity in [0, 5] for each of the 17
rendered AUs (column order `RENDERED_AUS`); an AU *occurs* when its intensity is >= 2, the
community convention for DISFA-style intensities (docs/PROTOCOLS.md#evaluation). The process is built so that
occurrences reproduce a `LabelStatistics` profile: base rates, pairwise phi correlations,
median episode lengths and a large between-subject spread of per-subject base rates.

Model, per AU k (latent x is standard normal at every frame):

    x_k(t) = sqrt(w) * u_k + sqrt(1 - w) * g_k(t)
    intensity_k(t) = clip(2 + gain * (x_k(t) - theta_k), 0, 5),  theta_k = Phi^-1(1 - rate_k)

with ``gain = INTENSITY_GAIN`` above the threshold and the steeper ``TRACE_GAIN`` below it.

* ``u ~ N(0, R_u)`` is a per-subject offset (constant over all its sequences), ``w`` the profile's
  `subject_weight`. Expressive subjects have high offsets and therefore high base rates.
* ``g`` is a smooth, unit-variance Gaussian process drawn per sequence: correlated white noise
  ``L @ eps`` filtered along time with a Gaussian kernel of width ``sigma_k``. Smooth paths cross
  the threshold rarely, so episodes are long (an AR(1) process would flicker). ``sigma_k`` is
  calibrated by simulation so the median episode length matches the target.
* ``R`` is the latent (tetrachoric) correlation giving the target phi at the thresholds.
  Filtering two noises with different widths shrinks their lag-0 correlation by the overlap of
  the kernels, so the noise correlation is ``R / overlap`` (projected to a valid correlation),
  and ``R_u`` takes up what that projection lost, so that ``corr(x) = w R_u + (1 - w) corr(g) ~ R``.

Randomness is keyed, never sequential: the offsets of subject s come from
``SeedSequence([seed, profile_key, SUBJECT_STREAM_TAG, s])`` and the noise of sequence q of
subject s from ``SeedSequence([seed, profile_key, SEQUENCE_STREAM_TAG, s, q])``, so any subset of
sequences can be generated in any order, in any process, with identical results.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize
from scipy.ndimage import gaussian_filter1d
from scipy.special import ndtri

from aunce_bench.data.synth.label_stats import RENDERED_AUS, LabelStatistics

OCCURRENCE_THRESHOLD = 2.0
"""An AU occurs in a frame when its intensity is >= this value."""
MAX_INTENSITY = 5.0
INTENSITY_GAIN = 2.0
"""Intensity units per latent standard deviation above the threshold (5 is reached 1.5 SD above)."""
TRACE_GAIN = 4.0
"""Intensity units per latent standard deviation below the threshold: only the 0.5-SD band under
the threshold gives sub-threshold "trace" intensities in (0, 2); most inactive frames are 0."""

SUBJECT_STREAM_TAG = 0x4C424C53  # "LBLS": label process, subject offsets
SEQUENCE_STREAM_TAG = 0x4C424C51  # "LBLQ": label process, sequence noise
CALIBRATION_SEED = 0x4C424C43  # "LBLC": fixed seed of the kernel-width calibration

_TRUNCATE = 4.0  # Gaussian kernels are cut at 4 sigma (scipy's default)
_CALIBRATION_FRAMES = 100_000  # frames simulated per calibration step
_MAX_CHUNK_VALUES = 20_000_000  # bound on noise values held at once by `simulate`


# ----------------------------------------------------------------------------- statistics helpers


def normal_isf(rate):
    """Phi^-1(1 - rate): the standard normal value exceeded with probability `rate` (what
    scipy.stats.norm.isf computes, without importing scipy.stats: 0.3 s)."""
    return -ndtri(rate)


def occurrence(intensities: np.ndarray) -> np.ndarray:
    """Boolean occurrence (intensity >= `OCCURRENCE_THRESHOLD`), same shape as `intensities`."""
    return np.asarray(intensities) >= OCCURRENCE_THRESHOLD


def phi(a: np.ndarray, b: np.ndarray) -> float:
    """Phi coefficient (Pearson correlation) of two binary arrays; NaN if either is constant."""
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    pa, pb, pab = a.mean(), b.mean(), (a & b).mean()
    denominator = math.sqrt(pa * (1 - pa) * pb * (1 - pb))
    return float((pab - pa * pb) / denominator) if denominator > 0 else float("nan")


def episode_lengths(occurrence: np.ndarray, sequence_key: np.ndarray | None = None) -> np.ndarray:
    """Lengths of all episodes (maximal runs of consecutive active frames inside one sequence).

    Args:
        occurrence: either 2-D ``[n_sequences, n_frames]`` (one row per sequence), or 1-D
            frames of one or more sequences laid end to end.
        sequence_key: for 1-D input, any label of the sequence each frame belongs to (frames of a
            sequence contiguous); an episode never spans a change of key. None: one sequence.

    Returns:
        int64 array of episode lengths, in order of appearance.
    """
    occ = np.asarray(occurrence, dtype=bool)
    if occ.ndim == 2:
        sequence_key = np.repeat(np.arange(occ.shape[0]), occ.shape[1])
        occ = occ.ravel()
    n = occ.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # cut[i]: a sequence boundary lies just before frame i (cut[n]: after the last frame)
    cut = np.ones(n + 1, dtype=bool)
    if sequence_key is not None:
        key = np.asarray(sequence_key)
        cut[1:-1] = key[1:] != key[:-1]
    else:
        cut[1:-1] = False
    previous_on = np.concatenate(([False], occ[:-1])) & ~cut[:-1]
    next_on = np.concatenate((occ[1:], [False])) & ~cut[1:]
    starts = np.flatnonzero(occ & ~previous_on)
    ends = np.flatnonzero(occ & ~next_on)
    return (ends - starts + 1).astype(np.int64)


def per_subject_base_rates(occurrence: np.ndarray, subject_index: np.ndarray) -> np.ndarray:
    """Base rate of each subject: ``[n_subjects, n_aus]`` (or ``[n_subjects]`` for 1-D input).

    Rows follow the sorted unique values of `subject_index`.
    """
    occ = np.asarray(occurrence, dtype=np.float64)
    _, inverse = np.unique(np.asarray(subject_index), return_inverse=True)
    counts = np.bincount(inverse)
    if occ.ndim == 1:
        return np.bincount(inverse, weights=occ) / counts
    return np.stack([np.bincount(inverse, weights=occ[:, k]) / counts for k in range(occ.shape[1])], 1)


# ------------------------------------------------------------------------ model construction


def tetrachoric_correlation(phi_target: float, rate_a: float, rate_b: float) -> float:
    """Latent correlation rho of a standard bivariate normal that gives occurrence phi `phi_target`.

    Occurrence of AU a is ``x_a > Phi^-1(1 - rate_a)``. Uses Plackett's identity
    ``d P(x_a > t_a, x_b > t_b) / d rho = bivariate normal density at (t_a, t_b)`` and solves
    ``integral_0^rho density = phi * sqrt(rate_a (1-rate_a) rate_b (1-rate_b))`` by bisection
    (Brent). Targets beyond what |rho| <= 0.995 reaches are clipped to that bound.
    """
    if phi_target == 0.0:
        return 0.0
    ta, tb = normal_isf(rate_a), normal_isf(rate_b)
    wanted = phi_target * math.sqrt(rate_a * (1 - rate_a) * rate_b * (1 - rate_b))

    def density(r: float) -> float:
        q = 1.0 - r * r
        return math.exp(-(ta * ta - 2 * r * ta * tb + tb * tb) / (2 * q)) / (2 * math.pi * math.sqrt(q))

    def excess(r: float) -> float:
        return integrate.quad(density, 0.0, r, epsabs=1e-12, epsrel=1e-10)[0] - wanted

    bound = 0.995 if phi_target > 0 else -0.995
    if excess(bound) * np.sign(phi_target) <= 0:
        return bound
    return float(optimize.brentq(excess, 0.0, bound, xtol=1e-10))


def nearest_correlation(matrix: np.ndarray, min_eigenvalue: float = 1e-2, iterations: int = 200) -> np.ndarray:
    """The positive-definite correlation matrix nearest to the symmetric `matrix` (Frobenius norm).

    Higham's (2002) alternating projections with Dykstra's correction between the matrices
    with eigenvalues >= `min_eigenvalue` and those with unit diagonal; a final eigenvalue clip
    and diagonal rescale (a congruence) guarantees positive definiteness. A matrix that
    already qualifies is returned unchanged.
    """
    target = np.asarray(matrix, dtype=np.float64)
    current = (target + target.T) / 2
    if np.linalg.eigvalsh(current)[0] >= min_eigenvalue and np.allclose(np.diag(current), 1.0):
        return current
    correction = np.zeros_like(current)
    for _ in range(iterations):
        shifted = current - correction
        values, vectors = np.linalg.eigh(shifted)
        positive = (vectors * np.maximum(values, min_eigenvalue)) @ vectors.T
        correction = positive - shifted
        current = positive.copy()
        np.fill_diagonal(current, 1.0)
    values, vectors = np.linalg.eigh(current)
    clipped = (vectors * np.maximum(values, min_eigenvalue)) @ vectors.T
    scale = 1.0 / np.sqrt(np.diag(clipped))
    result = clipped * scale[:, None] * scale[None, :]
    np.fill_diagonal(result, 1.0)
    return result


def _kernel_radius(sigma: float) -> int:
    """Half-width of scipy's truncated Gaussian kernel."""
    return int(_TRUNCATE * float(sigma) + 0.5)


def _kernels(sigmas: np.ndarray) -> np.ndarray:
    """Discrete Gaussian kernels ``[len(sigmas), 2 R + 1]``, centred on a common grid."""
    radius = max(_kernel_radius(s) for s in sigmas)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    return np.stack([gaussian_filter1d(impulse, s, mode="constant", truncate=_TRUNCATE) for s in sigmas])


def kernel_overlap(sigmas: np.ndarray) -> np.ndarray:
    """Lag-0 correlation of two white noises filtered with kernels of the given widths.

    ``[K, K]`` matrix, about ``sqrt(2 s1 s2 / (s1^2 + s2^2))``: the factor by which filtering
    shrinks the correlation of perfectly correlated noises.
    """
    kernels = _kernels(np.asarray(sigmas, dtype=np.float64))
    gram = kernels @ kernels.T
    norms = np.sqrt(np.diag(gram))
    return gram / norms[:, None] / norms[None, :]


def _smooth(noise: np.ndarray, sigma: float, pad: int, n_frames: int) -> np.ndarray:
    """Filter each row of white `noise` ``[B, n_frames + 2 pad]`` and return the unit-variance middle."""
    kernel_norm = math.sqrt(float(np.sum(_kernels(np.array([sigma]))[0] ** 2)))
    filtered = gaussian_filter1d(noise, sigma, axis=-1, mode="constant", truncate=_TRUNCATE)
    return filtered[..., pad : pad + n_frames] / kernel_norm


@functools.lru_cache(maxsize=None)
def calibrate_kernel_width(base_rate: float, episode_median: float, subject_weight: float, n_frames: int) -> float:
    """Kernel width sigma (frames) whose process gives median episode length `episode_median`.

    Deterministic: simulates one AU of the model (per-sequence offsets with weight
    `subject_weight`, threshold at `base_rate`) on ~100k frames cut into sequences of
    `n_frames` with fixed random numbers, and solves for sigma with Brent's method in
    log(sigma). Finite sequences cut episodes, so calibrate at the length you generate.
    Cached per argument tuple; takes well under a second.
    """
    theta = float(normal_isf(base_rate))
    n_sequences = max(16, math.ceil(_CALIBRATION_FRAMES / n_frames))
    pad_max = _kernel_radius(n_frames)
    rng = np.random.default_rng(CALIBRATION_SEED)
    offsets = math.sqrt(subject_weight) * rng.standard_normal((n_sequences, 1))
    white = rng.standard_normal((n_sequences, n_frames + 2 * pad_max))

    def log_ratio(log_sigma: float) -> float:
        sigma = math.exp(log_sigma)
        pad = _kernel_radius(sigma)
        window = white[:, pad_max - pad : pad_max + n_frames + pad]
        latent = offsets + math.sqrt(1 - subject_weight) * _smooth(window, sigma, pad, n_frames)
        lengths = episode_lengths(latent >= theta)
        return math.log(max(float(np.median(lengths)) if lengths.size else 0.0, 0.5) / episode_median)

    # Rice's formula for a Gaussian-filtered process gives a mean episode length of about
    # rate * 2 pi sqrt(2) sigma exp(theta^2 / 2): the starting guess, widened into a bracket.
    guess = episode_median / (base_rate * 2 * math.pi * math.sqrt(2) * math.exp(theta**2 / 2))
    a, b = math.log(guess / 2), math.log(guess * 2)
    while log_ratio(a) > 0 and a > math.log(0.3):
        a -= math.log(2)
    while log_ratio(b) < 0 and b < math.log(n_frames):
        b += math.log(2)
    if log_ratio(a) > 0 or log_ratio(b) < 0:
        raise ValueError(
            f"median episode length {episode_median} unreachable at base rate {base_rate}"
            f" with {n_frames}-frame sequences"
        )
    return math.exp(optimize.brentq(log_ratio, a, b, xtol=5e-3))


# What `calibrate_kernel_width` returns for the built-in profiles (bp4d, disfa), by its arguments.
# Calibrating takes about a second per profile in every process that builds their LabelProcess (each
# generation worker, a report's SynthAU gallery); tests/test_synth_labels.py recalibrates every entry
# and compares exactly.
CALIBRATED_KERNEL_WIDTHS: dict[tuple[float, float, float, int], float] = {
    (0.03, 15.0, 0.3, 4845): 9.725187930197146,
    (0.04, 20.0, 0.3, 4845): 11.774640435983331,
    (0.04, 25.0, 0.25, 490): 15.695974116936261,
    (0.042, 20.0, 0.3, 4845): 12.099252358125344,
    (0.043, 24.0, 0.3, 4845): 14.778210371412474,
    (0.05, 20.0, 0.25, 490): 11.788642369161025,
    (0.05, 22.0, 0.3, 4845): 13.094218055874423,
    (0.079, 60.0, 0.3, 4845): 33.13542226232002,
    (0.08, 25.0, 0.3, 4845): 13.116755634012124,
    (0.088, 19.0, 0.3, 4845): 9.791876757487623,
    (0.1, 25.0, 0.25, 490): 13.549767284761222,
    (0.1, 40.0, 0.3, 4845): 22.098140991478903,
    (0.12, 50.0, 0.3, 4845): 25.68284271072429,
    (0.129, 71.0, 0.3, 4845): 34.85149517933083,
    (0.151, 35.0, 0.25, 490): 17.429953274248817,
    (0.152, 25.0, 0.3, 4845): 11.181271993009036,
    (0.165, 30.0, 0.25, 490): 14.721850524165543,
    (0.169, 30.0, 0.25, 490): 14.925194043209865,
    (0.171, 34.0, 0.25, 490): 16.662253009646108,
    (0.203, 32.0, 0.25, 490): 15.10109603183742,
    (0.211, 32.0, 0.25, 490): 14.691074453757738,
    (0.277, 69.0, 0.3, 4845): 26.646869014945434,
    (0.343, 40.0, 0.25, 490): 15.977955946941716,
    (0.35, 60.0, 0.25, 490): 26.197517106433878,
    (0.461, 110.0, 0.25, 490): 41.939349104694514,
    (0.466, 70.0, 0.25, 490): 25.937173113082526,
    (0.549, 77.0, 0.25, 490): 26.16568126796024,
    (0.562, 123.0, 0.25, 490): 40.769671208382064,
    (0.594, 100.0, 0.25, 490): 33.58722806857323,
}


def kernel_width(stats: LabelStatistics, au: int) -> float:
    """`calibrate_kernel_width` for an AU of a profile; looked up when in `CALIBRATED_KERNEL_WIDTHS`."""
    key = (
        float(stats.base_rates[au]),
        float(stats.episode_median[au]),
        float(stats.subject_weight),
        int(stats.frames_per_sequence),
    )
    return CALIBRATED_KERNEL_WIDTHS[key] if key in CALIBRATED_KERNEL_WIDTHS else calibrate_kernel_width(*key)


# ---------------------------------------------------------------------------------- the process


@dataclass(frozen=True)
class SimulatedLabels:
    """Labels of many sequences, frames laid end to end (subject-major, then sequence, then frame).

    Attributes:
        intensities: float32 ``[n_frames_total, 17]`` in [0, 5], columns `RENDERED_AUS`.
        subject_index: int32 ``[n_frames_total]``.
        sequence_index: int32 ``[n_frames_total]``, index of the sequence within its subject.
        frame_index: int32 ``[n_frames_total]``, index of the frame within its sequence.
    """

    intensities: np.ndarray
    subject_index: np.ndarray
    sequence_index: np.ndarray
    frame_index: np.ndarray

    @property
    def occurrence(self) -> np.ndarray:
        """Boolean ``[n_frames_total, 17]``."""
        return occurrence(self.intensities)

    @property
    def sequence_key(self) -> np.ndarray:
        """int64 label unique to each (subject, sequence), for `episode_lengths`."""
        return (self.subject_index.astype(np.int64) << 32) | self.sequence_index.astype(np.int64)


class LabelProcess:
    """Generates SynthAU AU intensities that reproduce a `LabelStatistics` profile.

    Args:
        stats: the target profile (`LABEL_STATISTICS["bp4d"]` or `["disfa"]`).
        profile_key: integer mixed into every random key, distinct per profile, so that two
            profiles never share random numbers for the same seed.

    Construction calibrates the kernel widths (about a second the first time in a process, cached
    afterwards) unless they are shipped (`CALIBRATED_KERNEL_WIDTHS`: the built-in profiles).
    Attributes of interest, all in `RENDERED_AUS` order: `thresholds`, `latent_correlation` (R),
    `subject_correlation` (R_u), `noise_correlation`, `kernel_widths`.
    """

    def __init__(self, stats: LabelStatistics, profile_key: int) -> None:
        self.stats = stats
        self.profile_key = int(profile_key)
        rates = np.array([stats.base_rates[au] for au in RENDERED_AUS])
        self.thresholds = normal_isf(rates)
        n_aus = len(RENDERED_AUS)
        latent = np.eye(n_aus)
        for i in range(n_aus):
            for j in range(i + 1, n_aus):
                target = stats.phi_target(RENDERED_AUS[i], RENDERED_AUS[j])
                latent[i, j] = latent[j, i] = tetrachoric_correlation(target, rates[i], rates[j])
        self.latent_correlation = nearest_correlation(latent)
        self.kernel_widths = np.array([kernel_width(stats, au) for au in RENDERED_AUS])
        overlap = kernel_overlap(self.kernel_widths)
        self.noise_correlation = nearest_correlation(self.latent_correlation / overlap)
        # The temporal part reaches correlation noise * overlap, short of R where the projection
        # had to give way; the subject offsets absorb the remainder so that the total matches R.
        w = stats.subject_weight
        temporal = self.noise_correlation * overlap
        self.subject_correlation = (
            nearest_correlation((self.latent_correlation - (1 - w) * temporal) / w) if w > 0 else np.eye(n_aus)
        )
        self._subject_factor = np.linalg.cholesky(self.subject_correlation)
        self._noise_factor = np.linalg.cholesky(self.noise_correlation)
        self._pads = [_kernel_radius(s) for s in self.kernel_widths]
        self._pad = max(self._pads)

    def subject_offsets(self, seed: int, subject_index: int) -> np.ndarray:
        """Latent offsets u ~ N(0, R_u) of one subject, float64 ``[17]`` (before the sqrt(w) weight)."""
        rng = np.random.default_rng(
            np.random.SeedSequence([int(seed), self.profile_key, SUBJECT_STREAM_TAG, int(subject_index)])
        )
        return self._subject_factor @ rng.standard_normal(len(RENDERED_AUS))

    def sequence_intensities(
        self, seed: int, subject_index: int, sequence_index: int, n_frames: int | None = None
    ) -> np.ndarray:
        """Intensities of one sequence, float32 ``[n_frames, 17]`` in [0, 5].

        `n_frames` defaults to the profile's `frames_per_sequence`; the result depends on it
        (it is not a prefix of a longer sequence).
        """
        return self._intensities(seed, [(int(subject_index), int(sequence_index))], n_frames)[0]

    def simulate(
        self,
        seed: int,
        n_subjects: int | None = None,
        sequences_per_subject: int | None = None,
        frames_per_sequence: int | None = None,
    ) -> SimulatedLabels:
        """Labels of subjects ``0..n_subjects-1``, each with the same number of sequences and frames.

        Defaults come from the profile. Rows equal `sequence_intensities` of the same keys.
        """
        n_subjects = self.stats.n_subjects if n_subjects is None else int(n_subjects)
        n_sequences = self.stats.sequences_per_subject if sequences_per_subject is None else int(sequences_per_subject)
        n_frames = self.stats.frames_per_sequence if frames_per_sequence is None else int(frames_per_sequence)
        keys = [(s, q) for s in range(n_subjects) for q in range(n_sequences)]
        chunk = max(1, _MAX_CHUNK_VALUES // ((n_frames + 2 * self._pad) * len(RENDERED_AUS)))
        intensities = np.concatenate(
            [self._intensities(seed, keys[i : i + chunk], n_frames) for i in range(0, len(keys), chunk)]
        ).reshape(-1, len(RENDERED_AUS))
        per_sequence = np.ones(n_frames, dtype=np.int32)
        return SimulatedLabels(
            intensities=intensities,
            subject_index=np.repeat(np.arange(n_subjects, dtype=np.int32), n_sequences * n_frames),
            sequence_index=np.kron(np.tile(np.arange(n_sequences, dtype=np.int32), n_subjects), per_sequence),
            frame_index=np.tile(np.arange(n_frames, dtype=np.int32), n_subjects * n_sequences),
        )

    def _intensities(self, seed: int, keys: list[tuple[int, int]], n_frames: int | None) -> np.ndarray:
        """Intensities of the (subject, sequence) `keys`, float32 ``[len(keys), n_frames, 17]``."""
        n_frames = self.stats.frames_per_sequence if n_frames is None else int(n_frames)
        n_aus, pad = len(RENDERED_AUS), self._pad
        offsets = {s: self.subject_offsets(seed, s) for s in dict.fromkeys(s for s, _ in keys)}
        noise = np.empty((len(keys), n_aus, n_frames + 2 * pad))
        for row, (s, q) in enumerate(keys):
            rng = np.random.default_rng(
                np.random.SeedSequence([int(seed), self.profile_key, SEQUENCE_STREAM_TAG, s, q])
            )
            noise[row] = self._noise_factor @ rng.standard_normal((n_aus, n_frames + 2 * pad))
        w = self.stats.subject_weight
        latent = np.empty((len(keys), n_frames, n_aus))
        for k in range(n_aus):
            own_pad = self._pads[k]
            window = noise[:, k, pad - own_pad : pad + n_frames + own_pad]
            latent[:, :, k] = math.sqrt(1 - w) * _smooth(window, self.kernel_widths[k], own_pad, n_frames)
        latent += math.sqrt(w) * np.stack([offsets[s] for s, _ in keys])[:, None, :]
        excess = latent - self.thresholds
        intensity = OCCURRENCE_THRESHOLD + np.where(excess >= 0, INTENSITY_GAIN, TRACE_GAIN) * excess
        return np.clip(intensity, 0.0, MAX_INTENSITY).astype(np.float32)
