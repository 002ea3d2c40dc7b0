"""`aunce-bench show RUN_ID`: one stored run in the terminal: what it was, how it scored per AU, how each training
stage went (text sparklines of its per-epoch history) and where its files are."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from aunce_bench.embeddings import PROVENANCE_KEY, embeddings_path
from aunce_bench.errors import UserError
from aunce_bench.report.aggregate import dataset_label, method_family
from aunce_bench.results import ResultStore

SPARKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 40


def find_run(store: ResultStore, run_id: str) -> dict:
    """The stored run whose id is `run_id` or, uniquely, starts with it."""
    runs = store.runs()
    exact = [run for run in runs if run["run_id"] == run_id]
    matches = exact or [run for run in runs if run["run_id"].startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no run '{run_id}' in {store.path}; 'aunce-bench results --format md' lists the stored runs")
    raise UserError(f"run id prefix '{run_id}' matches {len(matches)} runs in {store.path}; give more of the id")


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """Values as one character each (their means over equal chunks when there are more than `width`), scaled from
    their minimum (▁) to their maximum (█); a missing value is a space."""
    if len(values) > width:
        chunks = [values[len(values) * i // width:len(values) * (i + 1) // width] for i in range(width)]
        values = [_mean([v for v in chunk if v is not None]) for chunk in chunks]
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return ""
    low, high = min(present), max(present)
    scale = (len(SPARKS) - 1) / (high - low) if high > low else 0.0
    return "".join(" " if v is None or not math.isfinite(v) else SPARKS[round((v - low) * scale)] for v in values)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _general(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def show_run(console: Console, store: ResultStore, run: dict) -> None:
    """Print a run: summary, spec, per-AU metrics, training curves and files."""
    spec, provenance = run["spec"], run["provenance"]
    family, parent = method_family(run)
    family = f"{family} of {parent}" if parent else family
    fold = spec.get("fold_name") or f"fold{run['fold']}"
    console.print(f"[bold]run {run['run_id']}[/bold]: {run['method']} ({family}) on {run['protocol']} {fold}, seed "
                  f"{run['seed']}, noise {run['noise']}, {run['budget']} budget: [bold]{run['status']}[/bold]",
                  highlight=False)
    if run["status"] == "done":
        console.print(f"mean F1 {_number(run['mean_f1'])} (chance {_number(run['chance_f1'])}), "
                      f"{_number(run['wall_s'], 0)} s on {provenance.get('device', '?')}", highlight=False)
    elif run["error"]:
        console.print(f"error: {run['error']}", markup=False, highlight=False)
    _print_spec(console, run)
    if run["status"] == "done":
        _print_per_au(console, store, run)
    _print_curves(console, run["history"])
    _print_files(console, store, run)


def _print_spec(console: Console, run: dict) -> None:
    spec = run["spec"]
    method = spec.get("method", {})
    model, loss = method.get("model", {}), method.get("loss") or {}
    lines = [
        ("data", f"train {dataset_label(spec['train_data'])} -> test {dataset_label(spec['test_data'])}, "
                 f"crop {spec.get('crop_size')} px, AUs {', '.join(f'AU{au}' for au in spec.get('aus', []))}"),
        ("model", f"{model.get('backbone')} (graph {'on' if model.get('graph') else 'off'}, dim "
                  f"{model.get('dim') or 'the backbone width'}), init {run['init']}"),
        ("recipe", f"{method.get('recipe')}, loss {loss.get('name', '–')}"
                   + "".join(f", {key} {value}" for key, value in loss.items() if key != "name")),
    ]
    for stage in ("train", "probe"):
        optim = method.get(stage)
        if optim:
            lines.append((stage, f"{optim['optimizer']} lr {optim['lr']}, batch {optim['batch_size']}, "
                                 f"{optim['epochs']} epochs, {optim.get('schedule', 'constant')} schedule"))
    lines.append(("selection", f"{run['selection']}, decision threshold {spec.get('decision_threshold')}"))
    table = Table.grid(padding=(0, 2))
    for name, text in lines:
        table.add_row(Text(name, style="dim"), Text(text))
    console.print(table)


def _print_per_au(console: Console, store: ResultStore, run: dict) -> None:
    table = Table(title="per AU, test fold")
    for column in ("AU", "F1", "precision", "recall", "AUC", "frames", "positives"):
        table.add_column(column, justify="left" if column == "AU" else "right")
    for au, values in store.au_metrics(run["run_id"]).items():
        table.add_row(au, *(_number(values[name]) for name in ("f1", "precision", "recall", "auc")),
                      str(values["support"]), str(values["positives"]))
    console.print(table)


def _print_curves(console: Console, history: list[dict]) -> None:
    if not history:
        console.print("training curves: none stored (runs stored before per-epoch histories were recorded)")
        return
    table = Table(title="training curves, per epoch (sparklines from each row's minimum to its maximum)")
    for column in ("stage", "epochs", "series", "first", "curve", "last"):
        table.add_column(column, justify="right" if column in ("epochs", "first", "last") else "left")
    stages = list(dict.fromkeys(entry["stage"] for entry in history))
    for stage in stages:
        entries = [entry for entry in history if entry["stage"] == stage]
        for series in ("loss", "val_f1", "lr"):
            values = [entry[series] for entry in entries]
            if all(value is None for value in values):
                continue
            table.add_row(stage if series == "loss" else "", str(len(entries)) if series == "loss" else "",
                          series, _general(values[0]), sparkline(values), _general(values[-1]))
    console.print(table)


def _print_files(console: Console, store: ResultStore, run: dict) -> None:
    files = [("store", store.path.resolve())]
    if run["status"] == "done":
        files.append(("predictions", store.prediction_path(run["run_id"]).resolve()))
    if PROVENANCE_KEY in run["provenance"]:
        files.append(("embeddings", embeddings_path(store, run["run_id"]).resolve()))
    for name, path in files:
        console.print(f"{name}: {path}{'' if path.exists() else ' (missing)'}", markup=False, highlight=False)
