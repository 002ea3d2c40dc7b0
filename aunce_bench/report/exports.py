"""Stored runs as JSON, CSV or Markdown, one row per run; leaderboards likewise.

The JSON of `aunce-bench results --format json` is a contract other tools rely on: a list with one object per
run holding at least run_id, method, protocol, dataset, fold, seed, noise ("none", "symmetric:0.2"), status
("done" | "failed" | "running"), mean_f1 (0..1), per_au_f1 ("AU1" -> 0..1), chance_f1, wall_s, init and selection.

Stored strings (method and protocol names come from user YAMLs) are neutralised: Markdown cells escape HTML
and link markup, CSV cells that a spreadsheet would run as a formula (=, +, -, @ first) get a leading `'`.
"""

from __future__ import annotations

import csv
import html
import io
import json

from aunce_bench.report.aggregate import Leaderboard
from aunce_bench.report.bootstrap import Interval

_SCALARS = ("run_id", "method", "protocol", "dataset", "budget", "fold", "seed", "noise", "init", "selection", "status",
            "mean_f1", "chance_f1", "wall_s")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _au_columns(runs: list[dict]) -> list[str]:
    columns: list[str] = []
    for run in runs:
        columns += [au for au in run["per_au_f1"] if au not in columns]
    return columns


def _rows(runs: list[dict]) -> tuple[list[str], list[list]]:
    """One row per run: its scalars, the fold's name as runs print it (fold1, bp4d_to_disfa) beside its number,
    and an F1 column per AU."""
    aus = _au_columns(runs)
    header = [*_SCALARS[:6], "fold_name", *_SCALARS[6:], *(f"f1_{au}" for au in aus)]
    rows = [[run[key] for key in _SCALARS[:6]] + [run["spec"].get("fold_name")] + [run[key] for key in _SCALARS[6:]]
            + [run["per_au_f1"].get(au) for au in aus] for run in runs]
    return header, rows


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _csv_cell(value) -> str:
    """A CSV cell; text a spreadsheet would evaluate as a formula is prefixed with `'`."""
    text = _cell(value)
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text


def markdown_cell(value) -> str:
    """A Markdown table cell: HTML escaped, pipes, brackets and backticks made literal."""
    text = html.escape(_cell(value), quote=False)
    for character in "\\|[]`":
        text = text.replace(character, "\\" + character)
    return text


def format_runs(runs: list[dict], fmt: str) -> str:
    """Runs as JSON (a list of the stored dicts), CSV or Markdown (one row per run, an F1 column per AU)."""
    if fmt == "json":
        return json.dumps(runs, indent=2, allow_nan=False)
    header, rows = _rows(runs)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    return "\n".join(_markdown(header, [dict(zip(header, row)) for row in rows]))


_SETTING_FIELDS = ("protocol", "budget", "test", "data_fingerprint", "init", "decision_threshold",
                   "occurrence_threshold", "noise")
BOARD_FIELDS = (*_SETTING_FIELDS, "kind", "rank", "method", "family", "selection", "optimistic", "source", "runs",
                 "mean_f1", "std_f1", "difference_to_best", "ci_low", "ci_high", "measured_minus_reported")
_DIFFERENCE_FIELDS = ("difference_to_best", "ci_low", "ci_high")  # per AU in CSV: difference_to_best_AU1, ...


def _differences(interval: Interval | None, aus: list[str]) -> dict:
    """A row's difference to the best with its interval, of the mean F1 and per AU (`difference_to_best_AU1`, ...)."""
    if interval is None:
        return {}
    parts = [("", interval), *((f"_{au}", per_au) for au, per_au in zip(aus, interval.per_au))]
    return {f"{name}{suffix}": value for suffix, part in parts
            for name, value in zip(_DIFFERENCE_FIELDS, (part.difference, part.low, part.high))}


def board_rows(board: Leaderboard) -> list[dict]:
    """Measured rows (ranked), then the chance row and reported rows (no rank), for CSV and Markdown (which
    leaves out the per-AU differences to the best)."""
    setting = {name: getattr(board.setting, name) for name in _SETTING_FIELDS}
    rows = []
    for row in board.rows:
        family = f"{row.family} of {row.parent}" if row.parent else row.family
        rows.append({**setting, "kind": "measured", "rank": row.rank or None, "method": row.method, "family": family,
                     "selection": row.selection, "optimistic": row.optimistic, "runs": row.f1.n,
                     "mean_f1": row.f1.mean, "std_f1": row.f1.std, **_differences(row.significance, board.aus),
                     **{f"f1_{au}": row.per_au.get(au) for au in board.aus}})
    rows.append({**setting, "kind": "chance", "method": "chance (all-positive)", "mean_f1": board.chance["mean"],
                 **{f"f1_{au}": board.chance.get(au) for au in board.aus}})
    for reported in board.reported:
        rows.append({**setting, "kind": "reported", "method": reported.method, "source": reported.source,
                     "mean_f1": reported.mean, "measured_minus_reported": reported.difference,
                     **{f"f1_{au}": reported.per_au.get(au) for au in board.aus}})
    return rows


def _markdown(header: list[str], rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(markdown_cell(row.get(name)) for name in header) + " |" for row in rows]


def format_leaderboards(boards: list[Leaderboard], fmt: str) -> str:
    """Leaderboards as JSON (a list of boards), CSV (one table; F1 and difference-to-best columns of every board's
    AUs) or Markdown (one section per board)."""
    if fmt == "json":
        return json.dumps([board.to_dict() for board in boards], indent=2, allow_nan=False)
    if fmt == "csv":
        aus = _au_columns([{"per_au_f1": dict.fromkeys(board.aus)} for board in boards])
        header = [*BOARD_FIELDS, *(f"f1_{au}" for au in aus),
                  *(f"{name}_{au}" for au in aus for name in _DIFFERENCE_FIELDS)]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_csv_cell(row.get(name)) for name in header] for board in boards
                          for row in board_rows(board)])
        return out.getvalue().rstrip("\n")
    sections = []
    for board in boards:
        header = [*BOARD_FIELDS[len(_SETTING_FIELDS):], *(f"f1_{au}" for au in board.aus)]  # setting: the title
        notes = [f"> warning: {markdown_cell(warning)}" for warning in board.warnings]
        sections.append("\n".join([f"## {markdown_cell(board.setting.title)}", "", *_markdown(header, board_rows(board)),
                                    *([""] + notes if notes else [])]))
    return "\n\n".join(sections)
