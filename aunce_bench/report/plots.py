"""Figures of a report, drawn with matplotlib (no pyplot state) and returned as inline SVG text or saved as PNG.
F1 is plotted in percent, as the report's tables show it.

SVG text is written as <text> elements (escaped by matplotlib's XML writer), so names in figures stay plain
text; "$" is escaped so that no name is read as mathtext.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from aunce_bench.paths import check_writable, default_cache_root
from aunce_bench.report.aggregate import Leaderboard, LabelStats, NoiseCurve, PoseGrid
from aunce_bench.report.curves import BoardCurves
from aunce_bench.report.sensitivity import Sensitivity

STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "aunce-bench",  # deterministic element ids
    "font.family": "sans-serif",  # figures: DejaVu Sans, then CJK fonts (see _fonts)
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")
CHANCE_COLOUR = "#222222"
GALLERY_SHAPE = (2, 6)  # rows, columns of sample faces


# Installed fonts that draw CJK characters, tried after DejaVu Sans where matplotlib finds them.
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
             "WenQuanYi Zen Hei", "Droid Sans Fallback", "IPAGothic")


@functools.cache
def _fonts() -> tuple[tuple[str, ...], frozenset[int]]:
    """The sans-serif fonts figures fall back through for each character (DejaVu Sans, then any CJK font
    matplotlib finds) and the code points they draw between them."""
    from matplotlib import font_manager

    installed = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
    families = ("DejaVu Sans", *(name for name in sorted(installed) if name in CJK_FONTS or " CJK " in f" {name} "))
    drawn = set()
    for family in families:
        drawn.update(font_manager.get_font(installed[family]).get_charmap())
    return families, frozenset(drawn)


def _styled(function: Callable) -> Callable:
    @wraps(function)
    def styled(*args, **kwargs):
        with matplotlib.rc_context({**STYLE, "font.family": list(_fonts()[0])}):
            return function(*args, **kwargs)

    return styled


def _text(name: str) -> str:
    """`name` as figure text: "$" escaped (no mathtext); a character no font draws written as its escape
    (日 as \\u65e5), not as an empty box."""
    drawn = _fonts()[1]
    return "".join(c if ord(c) in drawn else c.encode("unicode_escape").decode("ascii") for c in name).replace(
        "$", r"\$")


def method_colours(methods: list[str]) -> dict[str, str]:
    """A stable colour per method (row label, sorted order), shared by every figure of a report."""
    return {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(sorted(set(methods)))}


@_styled
def svg(figure: Figure) -> str:
    """The figure as an <svg> element to inline in HTML (no XML prolog; scales with its container)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})  # undated: a page rebuilds byte for byte
    text = buffer.getvalue()
    return text[text.index("<svg"):]


@_styled
def save_png(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", dpi=150)
    return path


def _legend_right(figure: Figure, panels: list, left: float = 0.65, gap: float = 0.7, bottom: float = 0.55,
                  top: float = 0.35, handles: list | None = None) -> None:
    """Lay out a row of panels with margins in inches and the legend right of the last panel (of the lines
    drawn there, or of `handles`), widening the figure by the legend's measured width (a measure, not a draw:
    half the cost of bbox_inches="tight")."""
    legend = panels[-1].legend(**({"handles": handles} if handles is not None else {}), loc="upper left",
                               bbox_to_anchor=(1.0, 1.0))
    legend_width = legend.get_window_extent(FigureCanvasAgg(figure).get_renderer()).width / figure.dpi + 0.1
    width, height = figure.get_size_inches()
    figure.set_size_inches(width + legend_width, height)
    panel = (width - left - gap * (len(panels) - 1)) / len(panels)
    figure.subplots_adjust(left=left / (width + legend_width), right=width / (width + legend_width),
                           bottom=bottom / height, top=1 - top / height, wspace=gap / panel)


@_styled
def per_au_bars(board: Leaderboard, colours: dict[str, str]) -> Figure:
    """Grouped bars: F1 per AU, one bar per measured method; chance F1 per AU as a dashed tick."""
    aus, rows = board.aus, board.rows
    per_au = max(0.45, 0.1 * (len(rows) + 1))  # inches: room for the bars and an "AU10" label
    figure = Figure(figsize=(min(12.0, 1.2 + per_au * len(aus)), 2.6))
    axes = figure.subplots()
    x = np.arange(len(aus))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [np.nan if row.per_au.get(au) is None else 100 * row.per_au[au] for au in aus]
        axes.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=_text(row.label),
                 color=colours[row.label])
    chance = [np.nan if board.chance.get(au) is None else 100 * board.chance[au] for au in aus]
    axes.hlines(chance, x - 0.45, x + 0.45, colors=CHANCE_COLOUR, linestyles="dashed", linewidth=1,
                label="chance (all-positive)")
    axes.set_xticks(x, aus)
    axes.set_ylim(0, 100)
    axes.set_ylabel("F1 (%)")
    _legend_right(figure, [axes], bottom=0.35, top=0.15)
    return figure


NOISE_LINESTYLES = ("-", ":", "-.", (0, (3, 1, 1, 1, 1, 1)))  # per overlaid noise kind; chance is dashed


@_styled
def noise_figure(curves: list[NoiseCurve], colours: dict[str, str]) -> Figure:
    """Mean F1 (± std over folds and seeds) against the noise rate, one panel per test set; several noise kinds
    are overlaid in a panel, one line style per kind."""
    tests = list(dict.fromkeys(curve.setting.test_label for curve in curves))
    kinds = sorted({curve.kind for curve in curves})
    figure = Figure(figsize=(3.7 * len(tests) + (1.0 if len(kinds) > 1 else 0.0), 2.9))
    panels = figure.subplots(1, len(tests), squeeze=False)[0]
    for axes, test in zip(panels, tests):
        shown_curves = [curve for curve in curves if curve.setting.test_label == test]
        for curve in shown_curves:
            style = NOISE_LINESTYLES[kinds.index(curve.kind) % len(NOISE_LINESTYLES)]
            for method, stats in curve.points.items():
                shown = [(level, stat) for level, stat in zip(curve.levels, stats) if stat.mean is not None]
                spread = [np.nan if stat.std is None else 100 * stat.std for _, stat in shown]  # no bar for one run
                label = _text(method) if len(kinds) == 1 else f"{_text(method)} · {_text(curve.kind)}"
                axes.errorbar([level for level, _ in shown], [100 * stat.mean for _, stat in shown], yerr=spread,
                              marker="o", capsize=3, label=label, color=colours[method], linestyle=style)
        chance = shown_curves[0].chance
        if chance is not None:
            axes.axhline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance (all-positive)")
        axes.set_xticks(sorted({level for curve in shown_curves for level in curve.levels}))
        axes.set_xlabel(f"{_text(kinds[0])} noise rate (training labels)" if len(kinds) == 1
                        else "noise rate (training labels)")
        axes.set_ylabel("mean F1 (%)")
        axes.set_title(_text(test), fontsize=9)
    _legend_right(figure, list(panels))
    return figure


CURVE_POINTS = 60  # at most this many epochs drawn per curve (evenly spaced, first and last kept): a panel is ~2 in


def _thinned(epochs: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    if len(epochs) <= CURVE_POINTS:
        return [epochs, *values]
    chosen = np.unique(np.linspace(0, len(epochs) - 1, CURVE_POINTS).round().astype(int))
    return [epochs[chosen], *(value[chosen] for value in values)]


@_styled
def curves_figure(curves: BoardCurves, colours: dict[str, str]) -> Figure:
    """Small multiples of a leaderboard's training: one column per stage, loss on top and validation mean F1
    below (where any run recorded one); per row (method), the mean over its runs (folds x seeds) in its colour
    and the min-max band translucent; a shared init's pretraining as one dark line. Panels with nothing to draw
    (no validation F1 in pretraining) are left out: axes are most of the drawing time."""
    stages = curves.stages
    metrics = [("loss", 1.0, "loss"), ("val_f1", 100.0, "val. mean F1 (%)")][:2 if curves.has_val else 1]
    figure = Figure(figsize=(2.4 * len(stages) + 0.2, 1.6 * len(metrics) + 0.6))
    grid = figure.add_gridspec(len(metrics), len(stages))
    handles: dict[str, Line2D] = {}
    top_row, labelled, empty = [], set(), []  # labelled: metrics whose y label is placed (first panel of its row)
    for column, stage in enumerate(stages):
        drawn = []
        for row, (metric, scale, name) in enumerate(metrics):
            shown = [(curve, getattr(curve, metric)) for curve in stage.curves if getattr(curve, metric) is not None]
            if not shown:
                if row == 0:
                    top_row.append(figure.add_subplot(grid[row, column]))
                    top_row[-1].set_axis_off()
                empty.append((grid[row, column], f"no {name.split(' (')[0]}"))
                continue
            axes = figure.add_subplot(grid[row, column], sharex=drawn[0] if drawn else None)
            for curve, band in shown:
                colour = CHANCE_COLOUR if stage.shared else colours[curve.label]
                label = "shared by all rows" if stage.shared else _text(curve.label)
                epochs, mean, low, high = _thinned(curve.epochs, scale * band.mean, scale * band.low, scale * band.high)
                [line] = axes.plot(epochs, mean, color=colour, linewidth=1.2, label=label,
                                   marker="o" if len(epochs) == 1 else None, markersize=3)
                axes.fill_between(epochs, low, high, color=colour, alpha=0.18, linewidth=0)
                handles.setdefault(label, line)
            axes.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
            axes.yaxis.set_major_locator(MaxNLocator(nbins=3))
            if metric not in labelled:
                axes.set_ylabel(name)
                labelled.add(metric)
            if row == 0:
                top_row.append(axes)
            drawn.append(axes)
        for axes in drawn[:-1]:
            axes.xaxis.set_tick_params(labelbottom=False)
        if drawn:
            drawn[-1].set_xlabel("epoch")
        top_row[-1].set_title(_text(stage.stage), fontsize=9, y=1.0)  # placed: not measured (faster)
    band = Patch(color="grey", alpha=0.3, label="band: min–max over runs")
    _legend_right(figure, top_row, left=0.6, gap=0.55, bottom=0.45, top=0.3, handles=[*handles.values(), band])
    figure.subplots_adjust(hspace=0.15)
    for cell, text in empty:  # where the panel would be, once laid out
        box = cell.get_position(figure)
        figure.text((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2, text, ha="center", va="center", color="grey",
                    fontsize=8)
    return figure


def _annotate(axes, values: np.ndarray, threshold: float) -> None:
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            axes.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7,
                      color="white" if value < threshold else "black")


def _axes_at(figure: Figure, left: float, bottom: float, width: float, height: float):
    """Axes placed at a box given in inches from the figure's lower left corner."""
    figure_width, figure_height = figure.get_size_inches()
    return figure.add_axes((left / figure_width, bottom / figure_height, width / figure_width,
                            height / figure_height))


def _heatmap_figure(panels: int, rows: int, columns: int, cell: float, left: float, bottom: float, top: float,
                    gap: float) -> tuple[Figure, list, object]:
    """A row of heatmap panels of rows x columns square cells of `cell` inches and a colour bar right of them,
    laid out in inches: (figure, panel axes, colour bar axes). A fixed layout needs no measuring: a constrained
    layout more than doubled a heatmap's drawing time."""
    width, height = columns * cell, rows * cell
    colour_bar = (0.25, 0.15, 0.75)  # gap, bar, ticks and label
    figure = Figure(figsize=(left + panels * width + (panels - 1) * gap + sum(colour_bar), bottom + height + top))
    axes = [_axes_at(figure, left + i * (width + gap), bottom, width, height) for i in range(panels)]
    right = left + panels * width + (panels - 1) * gap
    bar = _axes_at(figure, right + colour_bar[0], bottom + 0.05 * height, colour_bar[1], 0.9 * height)
    return figure, axes, bar


@_styled
def pose_heatmaps(grid: PoseGrid) -> Figure:
    """Mean F1 (%) per yaw x pitch bin, one panel per method, on one colour scale."""
    values = 100 * np.stack(list(grid.methods.values()))
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    figure, panels, bar = _heatmap_figure(len(grid.methods), len(grid.pitches), len(grid.yaws), cell=0.45,
                                          left=0.75, bottom=0.6, top=0.3, gap=0.5)
    for axes, method, scores in zip(panels, grid.methods, values):
        image = axes.imshow(scores, cmap="viridis", vmin=low, vmax=high)
        _annotate(axes, scores, (low + high) / 2)
        axes.set_xticks(range(len(grid.yaws)), [f"{yaw:+d}" for yaw in grid.yaws])
        axes.set_yticks(range(len(grid.pitches)), [f"{pitch:+d}" for pitch in grid.pitches])
        axes.set_xlabel("yaw (°)")
        axes.set_title(_text(method), fontsize=9)
        axes.grid(False)
    panels[0].set_ylabel("pitch (°)")
    figure.colorbar(image, cax=bar, label="mean F1 (%)")
    return figure


@_styled
def phi_heatmap(stats: LabelStats) -> Figure:
    """Pairwise phi correlations of the AU labels (-1 blue .. +1 red)."""
    n = len(stats.aus)
    figure, [axes], bar = _heatmap_figure(1, n, n, cell=0.42, left=0.6, bottom=0.6, top=0.15, gap=0.0)
    phi = np.where(np.eye(n, dtype=bool), np.nan, stats.phi)  # the diagonal (1) is left blank
    image = axes.imshow(phi, cmap="RdBu_r", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(phi):
        if not np.isnan(value):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                      color="white" if abs(value) > 0.6 else "black")
    axes.set_xticks(range(n), stats.aus, rotation=90)
    axes.set_yticks(range(n), stats.aus)
    axes.grid(False)
    figure.colorbar(image, cax=bar, label="phi")
    return figure


@_styled
def sensitivity_figure(sweeps: list[Sensitivity]) -> Figure:
    """Mean F1 against each swept parameter's values (averaged over the other parameters), with the interval as
    error bars and the base method's mean F1 dashed: one row of panels per sweep (of one design, e.g. a sweep's
    test sets), one panel per parameter. A numeric axis is logarithmic when every value is positive and they span
    more than a factor 10."""
    columns = len(sweeps[0].marginals)
    figure = Figure(figsize=(3.4 * columns, 2.9 * len(sweeps)))
    panels = figure.subplots(len(sweeps), columns, squeeze=False)
    for row, sweep in zip(panels, sweeps):
        for axes, marginal in zip(row, sweep.marginals):
            values = marginal.values if marginal.numeric else list(range(len(marginal.values)))
            means = np.array([100 * estimate.mean for estimate in marginal.f1])
            low = np.array([np.nan if e.low is None else 100 * e.low for e in marginal.f1])
            high = np.array([np.nan if e.high is None else 100 * e.high for e in marginal.f1])
            error = np.clip([means - low, high - means], 0, None)  # a percentile interval may sit beside its mean
            axes.errorbar(values, means, yerr=error, marker="o", capsize=3, color=PALETTE[0],
                          label=f"{_text(sweep.label)}: sweep")
            if sweep.reference is not None:
                axes.axhline(100 * sweep.reference.mean, color=CHANCE_COLOUR, linestyle="--", linewidth=1,
                             label=f"{_text(sweep.label)}: base method")
            if marginal.numeric and min(values) > 0 and max(values) > 10 * min(values):
                axes.set_xscale("log")
                axes.minorticks_off()
            axes.set_xticks(values, [_text(label) for label in marginal.labels])
            axes.set_xlabel(_text(marginal.path))
            axes.set_ylabel("mean F1 (%)")
            axes.set_title(_text(sweep.setting.test_label), fontsize=9)
    _legend_right(figure, list(panels[0]))
    figure.subplots_adjust(hspace=0.6)
    return figure


def gallery_jpeg(config: dict, fingerprint: str) -> str:
    """Sample SynthAU faces of a run's data settings, captioned with their active AUs, as base64 JPEG.

    Rendering builds the profile's label process and faces (imports and work a report need not repeat), so
    the image, deterministic for a configuration, is kept in the cache (`$AUNCE_BENCH_CACHE`/gallery) under
    the run's data fingerprint, rendered by one report at a time (a lock beside it; the others wait and read
    it). JPEG at quality 90: the noisy faces take a fifth of their PNG size, and the page carries the image
    inline.
    """
    rows, columns = GALLERY_SHAPE
    cached = default_cache_root() / "gallery" / f"{config['profile']}-{fingerprint[:16]}-{rows}x{columns}.jpg"
    if not cached.is_file():
        from filelock import FileLock

        from aunce_bench.data.synth.gallery import sample_grid
        from aunce_bench.data.configs import SynthConfig

        check_writable(cached.parent)
        with FileLock(f"{cached}.lock"):
            if not cached.is_file():  # another report rendered it while this one waited
                partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
                sample_grid(SynthConfig(**config), rows, columns).save(partial, format="JPEG", quality=90,
                                                                       optimize=True)
                os.replace(partial, cached)
    return base64.b64encode(cached.read_bytes()).decode("ascii")
