"""Synthetic label noise for multi-label AU data (docs/PROTOCOLS.md#label-noise).

A noise model gives, per AU, rho_10 = P(observed 0 | true 1) and rho_01 = P(observed 1 | true 0).
AU positives are rare, so a symmetric per-entry flip mostly creates false positives: `apply_label_noise`
reports the achieved flip rates per AU. Noise is meant for training labels only; test labels stay clean.

To add a model, write a function (rate, base_rates) -> (rho_10, rho_01), where base_rates [K] are the clean
labels' positive rates per AU, and decorate it with `@register_noise_model("name")` (another package names it
in the entry-point group `aunce_bench.noise_models`); `NoiseSpec.parse("name:0.2")` then accepts it. A model
that needs more than the labels is a function (rate, labels, context, rng) -> noisy labels, registered with
`needs=` (or carrying it as its `needs` attribute): "sequences" (`boundary`: the row indices of each sequence
in frame order) or "intensities" (`weak_intensity`: the true AU intensities [N, K], NaN where unknown).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aunce_bench.registry import Registry

MISSING_LABEL = -1
CLEAN = "none"

NoiseModel = Callable[[float, np.ndarray], tuple[np.ndarray, np.ndarray]]
ContextNoiseModel = Callable[[float, np.ndarray, object, np.random.Generator], np.ndarray]
NOISE_MODELS: Registry[NoiseModel | ContextNoiseModel] = Registry("noise model", "aunce_bench.noise_models")
CONTEXTS = ("sequences", "intensities")  # what a model's `needs` attribute may name, beside the labels


class NoiseNeedsData(ValueError):
    """The training data lack what a noise model needs (e.g. AU intensities)."""


def register_noise_model(name: str, needs: str | None = None) -> Callable:
    """Decorator adding a noise model under `name`: (rate, base_rates [K]) -> (rho_10 [K], rho_01 [K]), or
    with `needs` (one of CONTEXTS) (rate, labels [N, K], that context, rng) -> noisy labels."""
    if needs is not None and needs not in CONTEXTS:
        raise ValueError(f"needs must be one of {CONTEXTS}, got {needs!r}")

    def register(model):
        if name == CLEAN:
            raise ValueError(f"noise model name {name!r} is reserved")
        if needs is not None:
            model.needs = needs
        return NOISE_MODELS.register(name)(model)

    return register


@register_noise_model("symmetric")
def symmetric(rate: float, base_rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every label flips with probability `rate`, whatever its true value."""
    return np.full(len(base_rates), rate), np.full(len(base_rates), rate)


@register_noise_model("missing_positive")
def missing_positive(rate: float, base_rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True positives are missed with probability `rate` (annotators overlook subtle AUs); no false positives."""
    return np.full(len(base_rates), rate), np.zeros(len(base_rates))


@register_noise_model("asymmetric")
def asymmetric(rate: float, base_rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional flips that keep each AU's expected base rate: a share `rate` of the true positives
    flips to 0 and as many negatives, in expectation, flip to 1 (rho_01 = rate * b / (1 - b) for base rate b,
    at most 1). Half the noisy positives are then wrong while the label balance looks untouched."""
    b = np.nan_to_num(np.asarray(base_rates, dtype=float), nan=0.0).clip(0.0, 1.0)
    rho_01 = np.divide(rate * b, 1.0 - b, out=np.zeros_like(b), where=b < 1.0).clip(max=1.0)
    return np.full(len(b), rate), rho_01


@register_noise_model("boundary", needs="sequences")
def boundary(rate: float, labels: np.ndarray, sequences: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Annotator timing errors: the onset and the offset of every episode (a run of positive frames of an AU
    within a sequence) move independently by a uniform whole number of frames in [-r, r], r = round(rate x the
    episode's length), counted over the AU's labelled frames (missing labels stay missing and split nothing).
    Episodes may shrink away or merge."""
    noisy = labels.copy()
    for rows in sequences:
        for k in range(labels.shape[1]):
            labelled = rows[labels[rows, k] >= 0]
            positive = np.concatenate(([0], (labels[labelled, k] == 1).astype(np.int8), [0]))
            starts, ends = np.flatnonzero(np.diff(positive) == 1), np.flatnonzero(np.diff(positive) == -1)
            shifted = np.zeros(len(labelled), dtype=np.int8)
            for start, end in zip(starts, ends):
                reach = int(round(rate * (end - start)))
                onset = np.clip(start + rng.integers(-reach, reach + 1), 0, len(labelled))
                offset = np.clip(end + rng.integers(-reach, reach + 1), 0, len(labelled))
                shifted[onset:offset] = 1
            noisy[labelled, k] = shifted
    return noisy


@register_noise_model("weak_intensity", needs="intensities")
def weak_intensity(rate: float, labels: np.ndarray, intensities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Missed subtle AUs: per AU, the share `rate` of its positives whose true intensity is nearest the occurrence
    threshold (the lowest among the positives) flip to 0; ties are broken at random. Needs the intensities of
    every AU with positives (SynthAU's true ones, DISFA's coded ones)."""
    noisy = labels.copy()
    for k in range(labels.shape[1]):
        positives = np.flatnonzero(labels[:, k] == 1)
        if not len(positives):
            continue
        level = intensities[positives, k]
        if np.isnan(level).any():
            raise NoiseNeedsData(f"weak_intensity noise needs the intensity of every positive label, and AU column "
                                 f"{k} has positives without one")
        order = np.lexsort((rng.random(len(positives)), level))  # weakest first, random among equals
        noisy[positives[order[:int(round(rate * len(positives)))]], k] = 0
    return noisy


def sequence_rows(sequences: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
    """Row indices of each sequence (an id per row, e.g. "subject/sequence"), in frame order."""
    order = np.lexsort((frames, sequences))
    boundaries = np.flatnonzero(sequences[order][1:] != sequences[order][:-1]) + 1
    return np.split(order, boundaries) if len(order) else []


def _format_error(text: str, detail: str) -> str:
    return (
        f"invalid noise spec {text!r}: {detail}; expected '{CLEAN}' or '<kind>:<rate>' with rate in [0, 1), "
        f"e.g. 'symmetric:0.2'; known kinds: {', '.join(NOISE_MODELS)}"
    )


@dataclass(frozen=True)
class NoiseSpec:
    """A noise model name (a key of NOISE_MODELS, or "none") and its rate in [0, 1)."""

    kind: str
    rate: float

    def __post_init__(self) -> None:
        if self.kind != CLEAN and self.kind not in NOISE_MODELS:
            raise ValueError(str(NOISE_MODELS.unknown(self.kind)))
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"noise rate must lie in [0, 1), got {self.rate!r}")
        if self.kind == CLEAN and self.rate != 0.0:
            raise ValueError(f"noise kind {CLEAN!r} takes no rate, got {self.rate!r}")

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """Parse "none" or "<kind>:<rate>", e.g. "symmetric:0.2"; "<kind>:0" means no noise."""
        stripped = text.strip()
        if stripped == CLEAN:
            return cls(CLEAN, 0.0)
        kind, sep, rate_text = stripped.partition(":")
        if not sep:
            raise ValueError(_format_error(text, "missing ':<rate>'"))
        if kind not in NOISE_MODELS:
            raise ValueError(f"invalid noise spec {text!r}: {NOISE_MODELS.unknown(kind)}")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(_format_error(text, f"rate {rate_text!r} is not a number")) from None
        if not 0.0 <= rate < 1.0:
            raise ValueError(_format_error(text, f"rate {rate_text!r} is outside [0, 1)"))
        return cls(CLEAN, 0.0) if rate == 0.0 else cls(kind, rate)

    @property
    def is_clean(self) -> bool:
        """True when the spec changes no label."""
        return self.kind == CLEAN or self.rate == 0.0

    def __str__(self) -> str:
        """Canonical text that `parse` reads back: "none" or e.g. "symmetric:0.2"."""
        return CLEAN if self.is_clean else f"{self.kind}:{self.rate!r}"


@dataclass(frozen=True)
class FlipRates:
    """Achieved noise on one AU column: flip fractions among true positives / negatives (NaN if none)."""

    rho_10: float
    rho_01: float
    n_flipped: int


def apply_label_noise(labels: np.ndarray, spec: NoiseSpec, seed: int, sequences: list[np.ndarray] | None = None,
                      intensities: np.ndarray | None = None) -> tuple[np.ndarray, dict[int, FlipRates]]:
    """Return noisy labels (a new array) and the achieved flip rates per AU column.

    `labels` is [N, K] with 1 present, 0 absent, -1 missing; missing entries never change. Under a flip-rate
    model each known label flips independently with its AU's rho_10 (if 1) or rho_01 (if 0); the other models
    get what they need: `sequences` (`sequence_rows`) or `intensities` [N, K] (NaN where unknown); without it
    they raise NoiseNeedsData. Draws come from np.random.default_rng(seed).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D [frames, AUs], got shape {labels.shape}")
    noisy = labels.copy()
    n_aus = labels.shape[1]
    needs = None if spec.is_clean else getattr(NOISE_MODELS.get(spec.kind), "needs", None)
    if needs is not None:
        context = {"sequences": sequences, "intensities": intensities}[needs]
        if context is None:
            raise NoiseNeedsData(f"{spec.kind} noise needs the frames' {needs}, which this data lacks")
        noisy = NOISE_MODELS[spec.kind](spec.rate, labels, context, np.random.default_rng(seed))
    elif not spec.is_clean:
        known = labels >= 0
        base_rates = np.array([(labels[known[:, k], k] == 1).mean() if known[:, k].any() else np.nan
                               for k in range(n_aus)])
        rho_10, rho_01 = NOISE_MODELS[spec.kind](spec.rate, base_rates)
        draws = np.random.default_rng(seed).random(labels.shape)
        positive, negative = labels == 1, labels == 0
        flip = (positive & (draws < rho_10)) | (negative & (draws < rho_01))
        noisy[flip] = 1 - labels[flip]

    rates = {}
    for k in range(n_aus):
        positive, negative = labels[:, k] == 1, labels[:, k] == 0
        flipped = noisy[:, k] != labels[:, k]
        rates[k] = FlipRates(
            rho_10=float(flipped[positive].mean()) if positive.any() else math.nan,
            rho_01=float(flipped[negative].mean()) if negative.any() else math.nan,
            n_flipped=int(flipped.sum()),
        )
    return noisy, rates
