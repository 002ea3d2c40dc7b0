"""Aggregates and figures -> the self-contained HTML report and the leaderboard exports beside it.

The page inlines its CSS, script and figures (SVG; gallery images as data: JPEG), so it opens without a
network. Templates are rendered by jinja2 with autoescaping: every stored string (method, protocol,
source, config) is escaped; only the SVG text that matplotlib writes is inserted as markup.
"""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from pathlib import Path

from jinja2 import Environment, PackageLoader
from markupsafe import Markup
from matplotlib.figure import Figure

from aunce_bench.errors import UserError
from aunce_bench.report import plots
from aunce_bench.report.aggregate import (
    Leaderboard,
    NoiseCurve,
    cross_dataset,
    dataset_label,
    is_synthetic,
    label_stats,
    leaderboards,
    noise_curves,
    pose_grids,
    run_key,
)
from aunce_bench.report.bootstrap import RESAMPLES
from aunce_bench.report.curves import board_curves, run_curves
from aunce_bench.report.exports import format_leaderboards
from aunce_bench.report.sensitivity import MIN_BOOTSTRAP_RUNS, Sensitivity, sensitivities
from aunce_bench.results import ResultStore

EXPORTS = {"json": "leaderboards.json", "csv": "leaderboards.csv", "md": "leaderboards.md"}
RUN_FIELDS = ("method", "seed", "noise")  # the spec fields in which the runs of one setup differ
DIFFERENCE_SCALE = 0.05  # the least F1 difference that gets the full colour in the per-AU differences


def _pct(value: float | None) -> str:
    """An F1 fraction as a percentage, "–" when missing."""
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _signed(value: float | None) -> str:
    """A difference of fractions in percentage points with its sign (typographic minus)."""
    return "–" if value is None else f"{100 * value:+.1f}".replace("-", "−")


def _num(value: float | None) -> str:
    """A sort key for a table cell: the value, or empty when missing."""
    return "" if value is None or math.isnan(value) else repr(float(value))


def _diverging(value: float, scale: float) -> str:
    """A difference's cell colour: white at 0, towards blue above and red below, at |value| >= `scale` 60% of the
    way (dark text stays readable)."""
    share = 0.6 * min(abs(value) / scale, 1.0)
    r, g, b = (round(255 + (c - 255) * share) for c in ((33, 102, 172) if value > 0 else (178, 24, 43)))
    return f"rgb({r}, {g}, {b})"


def _difference_scale(board: Leaderboard) -> float:
    """The |difference| that gets the full colour in a board's per-AU differences: the largest one there, at least
    DIFFERENCE_SCALE (so that a board of small differences stays pale)."""
    return max([DIFFERENCE_SCALE, *(abs(au.difference) for row in board.compared_rows if row.significance
                                    for au in row.significance.per_au)])


def environment() -> Environment:
    env = Environment(loader=PackageLoader("aunce_bench.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(pct=_pct, signed=_signed, num=_num, diverging=_diverging)
    return env


def _inline(figure: Figure) -> Markup:
    return Markup(plots.svg(figure))  # matplotlib escapes the text it writes into the SVG


def noise_page(curves: list[NoiseCurve], colours: dict[str, str]) -> tuple[str, Figure]:
    """The standalone noise-curve page of one protocol, budget and noise kind, and its figure."""
    figure = plots.noise_figure(curves, colours)
    setting = curves[0].setting
    html = environment().get_template("noise_curve.html.j2").render(
        protocol=setting.protocol, budget=setting.budget, kind=" and ".join(sorted({curve.kind for curve in curves})),
        curves=curves, svg=_inline(figure))
    return html, figure


def sweep_page(sweeps: list[Sensitivity], protocol: str, budget: str) -> tuple[str, Figure]:
    """The standalone page of one sweep (one design; a row per test set) and its figure."""
    figure = plots.sensitivity_figure(sweeps)
    html = environment().get_template("sweep.html.j2").render(
        protocol=protocol, budget=budget, method=sweeps[0].label, params=sweeps[0].params, sweeps=sweeps,
        min_bootstrap_runs=MIN_BOOTSTRAP_RUNS, svg=_inline(figure))
    return html, figure


def _diagnosed(runs: list[dict], out: Path) -> list[dict]:
    """The runs whose diagnostics page (`aunce-bench diagnose --out` this report's folder) exists."""
    return [run for run in runs if (out / "diagnostics" / f"{run['run_id']}.html").is_file()]


def _galleries(runs: list[dict]) -> list[dict]:
    """One gallery per synthetic test dataset, from the data settings of a run testing on it."""
    specs = {dataset_label(run["spec"]["test_data"]): run["spec"] for run in runs
             if is_synthetic(run["spec"]["test_data"])}
    return [{"dataset": name, "jpeg": plots.gallery_jpeg(spec["test_data"], spec["data_fingerprint"])}
            for name, spec in sorted(specs.items())]


def _alignment_galleries(runs: list[dict], data_root: Path) -> dict[str, str]:
    """Base64 JPEG alignment galleries (written by `prepare`) of the prepared test datasets under `data_root`, by
    dataset label; a dataset prepared again since its runs (another fingerprint) shows none."""
    from aunce_bench.data.index import ALIGNMENT_GALLERY
    from aunce_bench.data.prepared import prepared_info

    galleries = {}
    for config in {(run["spec"]["test_data"]["dataset"], run["spec"]["test_data"].get("fingerprint")):
                   run["spec"]["test_data"] for run in runs if not is_synthetic(run["spec"]["test_data"])}.values():
        try:
            info = prepared_info(data_root, config["dataset"])
        except UserError:  # not prepared on this machine
            continue
        gallery = info.folder / ALIGNMENT_GALLERY
        if info.fingerprint == config.get("fingerprint") and gallery.is_file():
            galleries[dataset_label(config)] = base64.b64encode(gallery.read_bytes()).decode("ascii")
    return galleries


def _config_text(config: dict) -> str:
    """A configuration as one line per top-level field: `name: value`, the value as compact JSON."""
    return "\n".join(f"{name}: {json.dumps(value, sort_keys=True)}" for name, value in sorted(config.items()))


def _provenance(runs: list[dict], own_curves: dict[str, list]) -> dict:
    """The runs' configurations with each distinct part shown once: {"methods": [...], "protocols": [...]}.

    A run's spec is its method's configuration (an entry of "methods", shared by every run of that method), its
    seed and noise, and its setup: the rest (budget, fold, subjects, data), shared by the runs of a protocol that
    differ only in method, seed and noise. Each protocol lists its setups, and each setup its runs, each run
    marked with whether it has its own curves (`own_curves`: run id -> run_curves).
    """
    methods: dict[str, dict] = {}  # configuration text -> method entry
    setups: dict[str, dict[str, dict]] = defaultdict(dict)  # protocol -> configuration text -> setup
    for run in runs:
        spec = run["spec"]
        method_text = _config_text(spec["method"])
        if method_text not in methods:
            methods[method_text] = {"id": f"method-config-{len(methods) + 1}", "name": run["method"],
                                    "config": method_text, "runs": 0}
        methods[method_text]["runs"] += 1
        setup_text = _config_text({name: value for name, value in spec.items() if name not in RUN_FIELDS})
        protocol_setups = setups[run["protocol"]]
        if setup_text not in protocol_setups:
            protocol_setups[setup_text] = {"title": f"{spec['fold_name']} · {run['budget']} budget",
                                           "config": setup_text, "runs": []}
        protocol_setups[setup_text]["runs"].append({**run, "method_id": methods[method_text]["id"],
                                                    "has_curves": bool(own_curves.get(run["run_id"]))})
    protocols = [{"name": name, "setups": list(setups[name].values()),
                  "runs": sum(len(setup["runs"]) for setup in setups[name].values())} for name in sorted(setups)]
    return {"methods": list(methods.values()), "protocols": protocols}


def _training_curves(boards: list, runs: list[dict], own_curves: dict[str, list], colours: dict[str, str]) -> dict:
    """Per leaderboard its training curves (figure, or None where none of its runs stores a history) and the
    runs with their own curves (`own_curves`: run id -> run_curves); then the runs on no leaderboard (noisy
    ones) that have curves; "any": whether there is a curve to show at all."""
    by_id = {run["run_id"]: run for run in runs}
    items, placed = [], set()
    for board in boards:
        curves = board_curves(board, by_id)
        ids = [run_id for row in board.grouped_rows for run_id in row.run_ids]
        placed.update(ids)
        svg = _inline(plots.curves_figure(curves, colours)) if curves.stages else None
        items.append({"board": board, "curves": curves, "svg": svg,
                      "runs": [{"run": by_id[run_id], "stages": own_curves[run_id]} for run_id in ids
                               if own_curves[run_id]]})
    other = [{"run": run, "stages": own_curves[run["run_id"]]} for run in runs
             if run["run_id"] not in placed and own_curves[run["run_id"]]]
    return {"boards": items, "other": other, "any": bool(other) or any(item["svg"] or item["runs"] for item in items)}


def build_report(db: Path, out: Path, resamples: int = RESAMPLES, data_root: Path | None = None
                 ) -> tuple[Path, list[str]]:
    """Write `out`/index.html and the leaderboard exports from the done runs of `db`; returns the page and the
    leaderboards' warnings (rows pooling runs of different machines). Prepared datasets' alignment galleries are
    looked up under `data_root` (default: `prepared.data_root()`)."""
    from aunce_bench.data.prepared import data_root as default_data_root

    with ResultStore(db) as store:
        stored = store.runs()
        runs = [run for run in stored if run["status"] == "done"]
        if not runs:
            raise UserError(f"{db} holds no done runs ({len(stored)} failed or unfinished); run 'aunce-bench run' "
                            "first or pass another --db")
        boards = leaderboards(runs, store, resamples)
        labels = label_stats(runs, store)
    alignment = _alignment_galleries(runs, default_data_root(data_root))
    colours = plots.method_colours([run_key(run).label for run in runs])
    own_curves = {run["run_id"]: run_curves(run) for run in runs}
    noise_groups: dict[tuple, list[NoiseCurve]] = defaultdict(list)
    for curve in noise_curves(runs):  # one figure per setting but the test set (cross-dataset directions together)
        noise_groups[(curve.setting.protocol, curve.setting.budget, curve.setting.init,
                      curve.setting.decision_threshold, curve.setting.occurrence_threshold, curve.kind)].append(curve)
    page = environment().get_template("report.html.j2").render(
        db=str(db), n_done=len(runs), n_other=len(stored) - len(runs), resamples=resamples,
        boards=[{"board": board, "bars": _inline(plots.per_au_bars(board, colours)),
                 "scale": _difference_scale(board)} for board in boards],
        training=_training_curves(boards, runs, own_curves, colours),
        noise=[{"protocol": protocol, "budget": budget, "init": init, "kind": kind, "curves": curves,
                "svg": _inline(plots.noise_figure(curves, colours))}
               for (protocol, budget, init, _, _, kind), curves in sorted(noise_groups.items(), key=str)],
        sensitivity=[{"sweep": sweep, "svg": _inline(plots.sensitivity_figure([sweep]))} for sweep in sensitivities(runs)],
        min_bootstrap_runs=MIN_BOOTSTRAP_RUNS,
        pose=[{"grid": grid, "svg": _inline(plots.pose_heatmaps(grid))} for grid in pose_grids(runs)],
        cross=cross_dataset(runs),
        labels=[{"stats": stats, "svg": _inline(plots.phi_heatmap(stats)), "alignment": alignment.get(stats.dataset)}
                for stats in labels],
        galleries=_galleries(runs),
        diagnosed=_diagnosed(runs, out),
        provenance=_provenance(runs, own_curves),
        data=[board.to_dict() for board in boards],
    )
    out.mkdir(parents=True, exist_ok=True)
    for fmt, name in EXPORTS.items():
        (out / name).write_text(format_leaderboards(boards, fmt) + "\n")
    index = out / "index.html"
    index.write_text(page)
    return index, [warning for board in boards for warning in board.warnings]
