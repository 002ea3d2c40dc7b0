"""The Markdown page of a controlled study: how to reproduce it, its table, what each factor moved, and the cue
audit of the SynthAU data it ran on."""

from __future__ import annotations

import datetime as dt

import numpy as np

from aunce_bench.data.loaders import batch_positive_share
from aunce_bench.data.synth.cue_audit import AUDIT_INTENSITY, CueRow
from aunce_bench.data.configs import GENERATOR_VERSION
from aunce_bench.report.bootstrap import Interval
from aunce_bench.study import StudyRow, StudySpec


def _f1(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def interval_text(value: Interval | None) -> str:
    if value is None:
        return ""
    mark = "**" if value.significant else ""
    return f"{mark}{value.difference:+.3f}{mark} [{value.low:+.3f}, {value.high:+.3f}]"


def table_lines(study: StudySpec, rows: list[StudyRow]) -> list[str]:
    focus = ", ".join(f"AU{au}" for au in study.focus_aus)
    ref = study.reference
    lines = [f"| factor | point | runs | mean F1 | {focus} | other AUs | {ref} mean F1 | mean F1 − {ref} | "
             f"{focus} − {ref} | other AUs − {ref} |", "|" + "---|" * 10]
    for row in rows:
        lines.append(f"| {row.factor} | {row.label} | {row.runs} | {_f1(row.mean_f1)} | {_f1(row.focus_f1)} | "
                     f"{_f1(row.other_f1)} | {_f1(row.reference_f1)} | {interval_text(row.versus['mean'])} | "
                     f"{interval_text(row.versus['focus'])} | {interval_text(row.versus['other'])} |")
    return lines


def findings(study: StudySpec, rows: list[StudyRow]) -> list[str]:
    """Per factor, how far each point moved the focus AUs' gap to the reference, against the factor's first point."""
    lines = []
    for factor in study.factors:
        points = [row for row in rows if row.factor == factor and row.versus["focus"] is not None]
        if len(points) < 2:
            continue
        base = points[0]
        for row in points[1:]:
            shift = row.versus["focus"].difference - base.versus["focus"].difference
            lines.append(f"- {factor}: {row.label} moves the focus AUs' gap to {study.reference} by {shift:+.3f} "
                         f"against {base.label} ({interval_text(base.versus['focus'])} -> "
                         f"{interval_text(row.versus['focus'])}).")
    return lines


def cue_lines(rows: list[CueRow]) -> list[str]:
    """The cue-audit table; the offset column where the rows compare two profiles."""
    offsets = any(row.profile_offset_px is not None for row in rows)
    lines = ["| AU | geometry (px) | change | geometry part | appearance part | grey share | identity spread | "
             "cue / spread" + (" | offset to the other profile (px)" if offsets else "") + " |",
             "|" + "---|" * (9 if offsets else 8)]
    for row in rows:
        extra = f" | {row.profile_offset_px:.2f}" if offsets else ""
        lines.append(f"| AU{row.au} | {row.geometry_px:.2f} | {row.change:.1f} | {row.geometry_change:.1f} | "
                     f"{row.appearance_change:.1f} | {row.brightness_share:.2f} | {row.identity_spread:.1f} | "
                     f"{row.cue_to_spread:.2f}{extra} |")
    return lines


def batch_lines(aus: list[int], labels: np.ndarray) -> list[str]:
    """Each AU's expected share of positives in a training batch under each sampler, from training labels."""
    shares = {sampler: batch_positive_share(labels, sampler) for sampler in ("shuffle", "rare_au")}
    lines = ["| AU | shuffle (the base rate) | rare_au |", "|---|---|---|"]
    for k, au in enumerate(aus):
        lines.append(f"| AU{au} | {shares['shuffle'][k]:.3f} | {shares['rare_au'][k]:.3f} |")
    return lines


def study_markdown(study: StudySpec, rows: list[StudyRow], audits: dict[str, list[CueRow]], command: str,
                   db_name: str, batch: tuple[list[int], np.ndarray] | None = None) -> str:
    """The whole page; `audits` holds cue-audit rows per profile (offsets to the other profile, if any), `batch`
    the AUs and training labels of the study's first fold (for the batch-composition table)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Study: {study.name}", "",
        f"Generated {now} by `aunce-bench study {study.name} --page ...` from `{db_name}`. Every number below was "
        "measured by aunce-bench; nothing here is a paper's.", "",
        study.description.strip(), "",
        f"Reproduce (runs what is missing, skips what is stored, prints the table): `{command}`", "",
        f"Data: SynthAU generator {GENERATOR_VERSION} (runs on data of another version have other run ids and are "
        "not read). Setting: protocol "
        f"`{study.protocol}`, budget `{study.budget}`, folds {', '.join(map(str, study.folds))}, "
        f"seeds {', '.join(map(str, study.seeds))}. Each point is compared with `{study.reference}` in its own "
        "setting (same folds, seeds, init and test frames): the difference with its 95 % paired-bootstrap interval "
        "over test subjects (bold: the interval excludes 0). F1 is averaged over the runs of a point.", "",
        "## Table", "", *table_lines(study, rows), "",
        "## What each factor moved", "", *(findings(study, rows) or ["- no factor has two measured points yet"]), "",
        "## Cue audit of the data", "",
        f"Each AU rendered alone at intensity 0 and {AUDIT_INTENSITY:g} on the same identities and capture (frontal), "
        "measured in the box around the landmarks it moves: geometry = largest landmark displacement in pixels; "
        "change = RMS pixel change (0-255) of the whole cue, then of its geometry and appearance parts rendered "
        "apart; grey share = share of the change along the grey axis (the rest is colour, which grayscale and hue "
        "or saturation jitter act on); identity spread = RMS spread of the box across neutral identities"
        + "; offset = mean distance (px) of the AU's landmarks between the two profiles' neutral faces: a position "
        "cue learned on one profile misreads the other's faces when it exceeds the geometry.", "",
    ]
    if batch is not None:
        lines += ["## Batch composition", "",
                  f"The expected share of each AU's positives in a training batch, on the training subjects of fold "
                  f"{study.folds[0]}: shuffled batches hold each AU at its base rate; the `rare_au` sampler (the "
                  "`*_rareau` variants) draws each frame with the inverse base rate of its rarest present AU.", "",
                  *batch_lines(*batch), ""]
    for profile, audit_rows in audits.items():
        size = audit_rows[0].size if audit_rows else 0
        lines += [f"### SynthAU {profile}, {size} px", "", *cue_lines(audit_rows), ""]
    return "\n".join(lines)
