"""Embedding diagnostics of a run's trained encoder (`aunce-bench diagnose`), from its kept test-set embeddings.

Per AU, over the labelled test frames (at most `MAX_FRAMES`, drawn with a fixed seed), with z the unit per-AU
embeddings and pairs i != j counted once:
- cosine similarity of positive pairs (same label) and negative pairs (different labels), as histograms;
- alignment (Wang & Isola 2020, alpha = 2): mean ||z_i - z_j||^2 over positive pairs (lower: tighter classes);
- uniformity (t = 2): log mean exp(-2 ||z_i - z_j||^2) over all pairs (lower: more spread over the sphere);
- the von Mises-Fisher concentration kappa of each class, by the approximation of Banerjee et al. (2005),
  kappa = R (d - R^2) / (1 - R^2) with R the mean resultant length: scipy's `vonmises_fisher.fit` (1.17)
  returns 1e-8 for any sample once d is above a few hundred (its Bessel ratio underflows);
- hard negatives and AUNCE's re-weighting: per anchor class, the share of its negatives that are
  hard, more similar to the anchor than the anchor's mean positive (another frame of its class), and the mean
  weight AUNCE gives its negatives, exp((e - 1) s_al / temperature) with e = exponent_pos where the anchor's AU
  is present and exponent_neg where absent (above 1: up-weighted relative to InfoNCE). Every negative pair is one
  negative of an anchor of each class. ("Weighted above 1" would not do as the hard count: the encoder's node
  features end in a ReLU, so every cosine is >= 0 and every negative of a present anchor is up-weighted.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from markupsafe import Markup
from scipy.special import logsumexp

from aunce_bench.embeddings import KeptEmbeddings, load_embeddings
from aunce_bench.errors import UserError
from aunce_bench.report import plots
from aunce_bench.report.build import environment
from aunce_bench.results import ResultStore

MAX_FRAMES = 2000  # per AU: 2000 frames are about 2 million pairs
BINS = np.linspace(-1.0, 1.0, 41)
# aunce_loss's defaults, used for runs trained with another loss
AUNCE_DEFAULTS = {"temperature": 0.5, "exponent_pos": 1.2, "exponent_neg": 0.8}
POSITIVE_COLOUR, NEGATIVE_COLOUR = "#1f77b4", "#d62728"


@dataclass(frozen=True)
class Reweighting:
    """AUNCE's negative weights exp((e - 1) s / temperature), e = exponent_pos (AU present) or exponent_neg."""

    temperature: float
    exponent_pos: float
    exponent_neg: float
    source: str  # where the values come from, for the page

    @classmethod
    def of_loss(cls, loss: dict | None) -> Reweighting:
        """The run's own values where its loss is `aunce`, else AUNCE's defaults."""
        name = (loss or {}).get("name")
        if name == "aunce":
            return cls(**{key: float(loss.get(key, default)) for key, default in AUNCE_DEFAULTS.items()},
                       source="the run's aunce loss")
        return cls(**AUNCE_DEFAULTS, source=f"AUNCE's defaults (the run's loss is {name or 'none'})")


@dataclass(frozen=True)
class ClassStats:
    """One class (AU absent or present) of one AU; None where it has too few frames (or no negatives)."""

    frames: int
    kappa: float | None  # vMF concentration (inf: every embedding the same); None below 2 frames
    hard_share: float | None  # of its anchors' negatives, the share more similar than the anchor's mean positive
    mean_weight: float | None  # of its anchors' negatives


@dataclass(frozen=True)
class AUDiagnostics:
    au: str
    labelled: int  # labelled test frames
    frames: int  # of which analysed (at most MAX_FRAMES)
    positive_counts: np.ndarray  # histogram over BINS of positive-pair cosines
    negative_counts: np.ndarray
    positive_mean: float | None  # mean cosine of positive pairs
    negative_mean: float | None
    alignment: float | None
    uniformity: float | None
    absent: ClassStats
    present: ClassStats

    @property
    def positive_pairs(self) -> int:
        return int(self.positive_counts.sum())

    @property
    def negative_pairs(self) -> int:
        return int(self.negative_counts.sum())


def vmf_kappa(x: np.ndarray) -> float | None:
    """vMF concentration of unit vectors x [n, d] (Banerjee et al. 2005); None for fewer than 2 vectors."""
    if len(x) < 2:
        return None
    r = float(np.linalg.norm(x.mean(axis=0)))
    d = x.shape[1]
    return math.inf if 1 - r * r <= 1e-12 else r * (d - r * r) / (1 - r * r)


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _class_stats(x: np.ndarray, others: np.ndarray, exponent: float, temperature: float) -> ClassStats:
    """Stats of one class x [n, D] against the frames of the other class [m, D] (its anchors' negatives)."""
    negative_dots = x @ others.T  # [n, m]
    log_weights = (exponent - 1) * negative_dots / temperature
    hard = None
    if len(x) >= 2 and others.size:
        own = x @ x.T
        mean_positive = (own.sum(axis=1) - np.diag(own)) / (len(x) - 1)
        hard = float((negative_dots > mean_positive[:, None]).mean())
    return ClassStats(len(x), vmf_kappa(x), hard, _mean(np.exp(log_weights).ravel()))


def au_diagnostics(z: np.ndarray, labels: np.ndarray, au: str, reweighting: Reweighting,
                   max_frames: int = MAX_FRAMES, seed: int | list[int] = 0) -> AUDiagnostics:
    """The diagnostics of one AU from unit embeddings z [N, D] and labels [N] (-1: missing, left out)."""
    labelled = np.flatnonzero(labels >= 0)
    rows = labelled
    if len(labelled) > max_frames:
        rows = np.sort(np.random.default_rng(seed).choice(labelled, max_frames, replace=False))
    x, y = z[rows], labels[rows]
    first, second = np.triu_indices(len(rows), k=1)
    gram = x @ x.T
    dots = gram[first, second]
    squared = np.diag(gram)
    distances = squared[first] + squared[second] - 2 * dots  # ||z_i - z_j||^2
    same = y[first] == y[second]
    positive, negative = dots[same], dots[~same]
    uniformity = float(logsumexp(-2 * distances) - math.log(len(distances))) if len(distances) else None
    return AUDiagnostics(
        au=au, labelled=len(labelled), frames=len(rows),
        positive_counts=np.histogram(np.clip(positive, -1, 1), BINS)[0],
        negative_counts=np.histogram(np.clip(negative, -1, 1), BINS)[0],
        positive_mean=_mean(positive), negative_mean=_mean(negative),
        alignment=_mean(distances[same]), uniformity=uniformity,
        absent=_class_stats(x[y == 0], x[y == 1], reweighting.exponent_neg, reweighting.temperature),
        present=_class_stats(x[y == 1], x[y == 0], reweighting.exponent_pos, reweighting.temperature),
    )


def diagnose(kept: KeptEmbeddings, reweighting: Reweighting, max_frames: int = MAX_FRAMES,
             seed: int = 0) -> list[AUDiagnostics]:
    """The diagnostics of every AU of a run's kept embeddings (frames drawn per AU with seed [seed, AU index])."""
    return [au_diagnostics(kept.z[:, k], kept.labels[:, k], au, reweighting, max_frames, [seed, k])
            for k, au in enumerate(kept.aus)]


def histogram_figure(results: list[AUDiagnostics]) -> Figure:
    """One panel per AU: the densities of positive-pair and negative-pair cosine similarity."""
    with matplotlib.rc_context(plots.STYLE):
        columns = min(4, len(results))
        rows = -(-len(results) // columns)
        figure = Figure(figsize=(2.9 * columns, 2.1 * rows + 0.5), layout="constrained")
        panels = figure.subplots(rows, columns, squeeze=False, sharex=True)
        width = np.diff(BINS)
        for axes, result in zip(panels.flat, results):
            for counts, colour, label in ((result.positive_counts, POSITIVE_COLOUR, "positive pairs (same label)"),
                                          (result.negative_counts, NEGATIVE_COLOUR, "negative pairs")):
                if counts.sum():
                    axes.stairs(counts / counts.sum() / width, BINS, fill=True, alpha=0.35, color=colour, label=label)
            axes.set_title(f"{result.au} · {result.frames} frames", fontsize=9)
            axes.set_xlim(-1, 1)
        for axes in panels.flat[len(results):]:
            axes.set_visible(False)
        for axes in panels[-1]:
            axes.set_xlabel("cosine similarity")
        for axes in panels[:, 0]:
            axes.set_ylabel("density")
        figure.legend(*panels.flat[0].get_legend_handles_labels(), loc="outside upper center", ncols=2)
        return figure


def number(value: float | None, digits: int = 3) -> str:
    """A diagnostic for a table: "–" when there is none, "∞" for a collapsed class."""
    if value is None:
        return "–"
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


@dataclass(frozen=True)
class DiagnosticsPage:
    run: dict
    results: list[AUDiagnostics]
    reweighting: Reweighting
    html: Path
    png: Path


def stored_run(store: ResultStore, run_id: str) -> dict:
    """The stored run `run_id` (a dict of `ResultStore.runs`); a one-line UserError for an unknown id."""
    found = [run for run in store.runs() if run["run_id"] == run_id]
    if not found:
        raise UserError(f"no run {run_id} in {store.path}; `aunce-bench results --db {store.path}` lists the "
                        "stored runs and their ids")
    return found[0]


def write_diagnostics(store: ResultStore, run_id: str, folder: Path, rerun: str | None = None) -> DiagnosticsPage:
    """Diagnose a stored run from its kept embeddings: `folder`/<run_id>.html (self-contained) and .png.
    `rerun`: the command that keeps its embeddings, for the errors (default: built from the stored run)."""
    run = stored_run(store, run_id)
    kept = load_embeddings(store, run, rerun)
    reweighting = Reweighting.of_loss(run["spec"]["method"].get("loss"))
    results = diagnose(kept, reweighting)
    figure = histogram_figure(results)
    html = environment().get_template("diagnostics.html.j2").render(
        run=run, results=results, reweighting=reweighting, frames=kept.z.shape[0], dim=kept.z.shape[2],
        max_frames=MAX_FRAMES, number=number, svg=Markup(plots.svg(figure)))
    folder.mkdir(parents=True, exist_ok=True)
    page = DiagnosticsPage(run, results, reweighting, folder / f"{run_id}.html", folder / f"{run_id}.png")
    page.html.write_text(html)
    plots.save_png(figure, page.png)
    return page
