"""A results store -> the dated Markdown results page (`aunce-bench results-page`, e.g. docs/RESULTS.md).

Measurements live on this generated page, never in the README: it states when and where the numbers were
made (machines with their thread counts, package versions, git revisions), then the leaderboards and noise
curves exactly as `report` aggregates them. Reported paper numbers appear only as rows labelled "reported".
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from aunce_bench.report.aggregate import leaderboards, noise_curves
from aunce_bench.report.exports import format_leaderboards, markdown_cell
from aunce_bench.results import ResultStore


def _counted(values: list[str]) -> str:
    return "; ".join(f"{value} ({count} run{'s' * (count > 1)})" for value, count in Counter(values).most_common())


def _versions(run: dict) -> str:
    versions = run["provenance"].get("versions", {})
    return ", ".join(f"{name} {versions[name]}" for name in sorted(versions))


def _noise_section(runs: list[dict]) -> list[str]:
    lines = []
    for curve in noise_curves(runs):
        levels = ["clean" if level == 0 else f"{level:g}" for level in curve.levels]
        lines += [f"### {markdown_cell(curve.setting.title)} · {curve.kind} noise", "",
                  "| method | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
        for label, stats in curve.points.items():
            cells = ["–" if s.mean is None else f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.std is not None else "")
                     + f" ({s.n})" for s in stats]
            lines.append(f"| {markdown_cell(label)} | " + " | ".join(cells) + " |")
        if curve.chance is not None:
            lines.append("| chance (all-positive) | " + " | ".join([f"{curve.chance:.3f}"] * len(levels)) + " |")
        lines.append("")
    return lines


def results_page(store: ResultStore, resamples: int, now: datetime | None = None) -> str:
    """The Markdown page of the done runs in `store`."""
    runs = [run for run in store.runs() if run["status"] == "done"]
    boards = leaderboards(runs, store, resamples)
    now = now or datetime.now(timezone.utc)
    revisions = sorted({str(run["provenance"].get("git_revision")) for run in runs})
    lines = [
        "# Measured results",
        "",
        f"Generated {now:%Y-%m-%d %H:%M} UTC by `aunce-bench results-page` from `{markdown_cell(store.path.name)}`: "
        f"{len(runs)} done runs. Every number below was measured by aunce-bench; rows marked `reported` are "
        "papers' numbers, for scale. Rows whose selection is `test_fold` chose their epoch on the test fold "
        "(optimistic) and are never ranked.",
        "",
        f"- machines: {markdown_cell(_counted([str(run['provenance'].get('device', 'unknown')) for run in runs]))}",
        f"- versions: {markdown_cell(_counted([_versions(run) for run in runs]))}",
        f"- git revisions: {markdown_cell(', '.join(revisions))}",
        "",
        "Mean F1 over AUs (F1 pooled over each test fold), mean ± sample std over folds and seeds; "
        f"`difference_to_best` with its 95 % paired-bootstrap interval over test subjects ({resamples:,} resamples).",
        "",
        "## Leaderboards",
        "",
        format_leaderboards(boards, "md") if boards else "No clean runs stored.",
        "",
    ]
    noise = _noise_section(runs)
    if noise:
        lines += ["## Label noise", "", "Mean F1 at each training-label noise rate (runs per cell in brackets).", "",
                  *noise]
    return "\n".join(lines).rstrip("\n") + "\n"
