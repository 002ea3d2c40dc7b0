"""Stored runs as JSON (the DESIGN.md s4 schema), CSV or Markdown, one row per run."""

from __future__ import annotations

import csv
import io
import json

_SCALARS = ("run_id", "method", "protocol", "dataset", "budget", "fold", "seed", "noise", "status", "mean_f1",
            "chance_f1", "wall_s")


def _au_columns(runs: list[dict]) -> list[str]:
    columns: list[str] = []
    for run in runs:
        columns += [au for au in run["per_au_f1"] if au not in columns]
    return columns


def _rows(runs: list[dict]) -> tuple[list[str], list[list]]:
    aus = _au_columns(runs)
    header = [*_SCALARS, *(f"f1_{au}" for au in aus)]
    rows = [[run[key] for key in _SCALARS] + [run["per_au_f1"].get(au) for au in aus] for run in runs]
    return header, rows


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_runs(runs: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(runs, indent=2, allow_nan=False)
    header, rows = _rows(runs)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[_cell(v) for v in row] for row in rows])
        return out.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)
