"""Output of `aunce-bench run` and friends: progress (rich bars on a terminal, timestamped lines elsewhere) and
the run summary table."""

from __future__ import annotations

import math
import time
from datetime import datetime

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichBars, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from aunce_bench.metrics import summarise
from aunce_bench.training.common import Progress

PLAIN_BATCH_EVERY_S = 60.0  # off a terminal, a line on the running epoch at most this often
PLAIN_EPOCH_EVERY_S = 10.0  # and a line per epoch at most this often, besides each stage's first and last epoch


def progress_for(console: Console, total_runs: int | None) -> Progress:
    """Rich bars where `console` is a terminal; one timestamped line per stage, epoch and run elsewhere (a log
    file, CI, a cluster job), where bars would print nothing until the end."""
    return RichProgress(console, total_runs) if console.is_terminal else PlainProgress(console, total_runs)


def format_summary(summary: dict[str, float]) -> str:
    """An epoch's numbers for people: counts as integers, images per second without decimals."""
    parts = []
    for key, value in summary.items():
        if value != value:  # NaN
            continue
        if key == "img/s" or float(value).is_integer():
            parts.append(f"{key} {value:,.0f}")
        else:
            parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


def duration(seconds: float) -> str:
    """1h02m, 3m05s or 42s."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class RichProgress(Progress):
    """Three bars with elapsed time and ETA: runs, epochs of the current stage (or units of a one-off task such as
    rendering), batches of the current epoch."""

    def __init__(self, console: Console, total_runs: int | None):
        """`total_runs` None hides the runs bar (a single stage, e.g. a SynthFace build)."""
        self.bars = RichBars(TextColumn("{task.description:<42}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                             TimeRemainingColumn(), console=console)
        self.runs = self.bars.add_task("runs", total=total_runs, info="", visible=total_runs is not None)
        self.epochs = self.bars.add_task("epochs", total=None, info="", visible=False)
        self.batches = self.bars.add_task("batches", total=None, info="", visible=False)
        self._task = None

    def __enter__(self) -> "RichProgress":
        self.bars.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.__exit__(*exc)

    def run_started(self, label: str) -> None:
        self.bars.update(self.runs, info=label)

    def run_finished(self) -> None:
        self.bars.advance(self.runs)

    def stage(self, name: str, epochs: int, batches_per_epoch: int) -> None:
        self._task = None
        self.bars.reset(self.epochs, total=epochs, description=name, info="", visible=True)
        self.bars.reset(self.batches, total=max(batches_per_epoch, 1), description="  batches", info="", visible=True)

    def batch(self, loss: float) -> None:
        self.bars.update(self.batches, advance=1, info=f"loss {loss:.4f}")

    def epoch(self, epoch: int, summary: dict[str, float]) -> None:
        self.bars.update(self.epochs, completed=epoch + 1, info=format_summary(summary))
        self.bars.reset(self.batches, total=self.bars.tasks[self.batches].total, info="")

    def count(self, task: str, done: int, total: int) -> None:
        if task != self._task:
            self._task = task
            self.bars.reset(self.epochs, total=total, description=task, info="", visible=True)
            self.bars.update(self.batches, visible=False)
        self.bars.update(self.epochs, completed=done)


class PlainProgress(Progress):
    """One timestamped line per run and stage; per epoch (loss, images per second, elapsed time and the stage's
    ETA) for a stage's first and last epoch and at most every PLAIN_EPOCH_EVERY_S seconds between (a probe's
    epochs take milliseconds); per tenth of a one-off task; on the running epoch at most every
    PLAIN_BATCH_EVERY_S seconds."""

    def __init__(self, console: Console, total_runs: int | None):
        self.console, self.total_runs = console, total_runs
        self.runs_started = 0
        self.run_label = ""
        self.run_clock = self.stage_clock = self.batch_said = time.monotonic()
        self.stage_name, self.epochs, self.batches_per_epoch, self.batches_done = "", 0, 0, 0
        self._task, self._task_said = None, -1

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _say(self, text: str) -> None:
        prefix = f"{self.run_label}: " if self.run_label else ""
        self.console.print(f"{datetime.now():%H:%M:%S} {prefix}{text}", markup=False, highlight=False,
                           soft_wrap=True)

    def _eta(self, done: float, total: float) -> str:
        elapsed = time.monotonic() - self.stage_clock
        eta = duration(elapsed / done * (total - done)) if done > 0 else "?"
        return f"elapsed {duration(elapsed)}, ETA {eta}"

    def run_started(self, label: str) -> None:
        self.runs_started += 1
        self.run_label, self.run_clock = label, time.monotonic()
        of = f"/{self.total_runs}" if self.total_runs else ""
        self._say(f"run {self.runs_started}{of} started")

    def run_finished(self) -> None:
        self._say(f"run finished in {duration(time.monotonic() - self.run_clock)}")
        self.run_label = ""

    def stage(self, name: str, epochs: int, batches_per_epoch: int) -> None:
        self.stage_name, self.epochs, self.batches_per_epoch, self.batches_done = name, epochs, batches_per_epoch, 0
        self.stage_clock = self.batch_said = time.monotonic()
        self._say(f"{name}: {epochs} epoch(s) of {batches_per_epoch} batch(es)")

    def batch(self, loss: float) -> None:
        self.batches_done += 1
        if time.monotonic() - self.batch_said >= PLAIN_BATCH_EVERY_S:
            self.batch_said = time.monotonic()
            epoch = (self.batches_done - 1) // max(self.batches_per_epoch, 1) + 1
            self._say(f"{self.stage_name}: epoch {epoch}/{self.epochs}, batch "
                      f"{self.batches_done - (epoch - 1) * self.batches_per_epoch}/{self.batches_per_epoch}, "
                      f"loss {loss:.4f}, {self._eta(self.batches_done, self.epochs * self.batches_per_epoch)}")

    def epoch(self, epoch: int, summary: dict[str, float]) -> None:
        self.batches_done = (epoch + 1) * self.batches_per_epoch
        edge = epoch == 0 or epoch + 1 == self.epochs
        if not edge and time.monotonic() - self.batch_said < PLAIN_EPOCH_EVERY_S:
            return
        self.batch_said = time.monotonic()
        numbers = format_summary(summary).replace("  ", ", ")
        self._say(f"{self.stage_name}: epoch {epoch + 1}/{self.epochs}{', ' + numbers if numbers else ''}, "
                  f"{self._eta(epoch + 1, self.epochs)}")

    def count(self, task: str, done: int, total: int) -> None:
        if task != self._task:
            self._task, self._task_said, self.stage_clock = task, -1, time.monotonic()
            self._say(f"{task}: {total} to do")
        tenth = done * 10 // max(total, 1)
        if done and tenth > self._task_said:
            self._task_said = tenth
            self._say(f"{task}: {done}/{total}, {self._eta(done, total)}")


# A test base rate this many times the training one (or its inverse) is a label-prior shift worth a note.
PRIOR_SHIFT = 2.0


def print_run_summary(console: Console, method: str, protocol: str, budget: str, outcomes: list) -> None:
    """Per run: mean F1, chance F1 and mean AUC; then the AUs' train and test base rates, and a note per
    test set whose base rates shifted from the training ones."""
    inits = sorted({str(o.run.init) for o in outcomes})
    table = Table(title=f"{method} on {protocol} ({budget} budget), init {', '.join(inits)}")
    for column in ("fold", "seed", "noise", "status", "mean F1", "chance F1", "mean AUC", "wall s"):
        table.add_column(column, justify="left" if column in ("fold", "noise", "status") else "right")
    for outcome in outcomes:
        run = outcome.run
        cells = [f"{v:.3f}" if v is not None else "" for v in (outcome.mean_f1, outcome.chance_f1, outcome.mean_auc)]
        wall = f"{outcome.wall_s:.0f}" if outcome.wall_s is not None else ""
        table.add_row(run.fold_name, str(run.seed), str(run.noise), outcome.status, *cells, wall)
    done = [o for o in outcomes if o.status == "done"]
    if len(done) > 1:
        f1_mean, f1_std = summarise([o.mean_f1 for o in done])
        chance_mean, _ = summarise([o.chance_f1 for o in done])
        auc_mean, _ = summarise([o.mean_auc for o in done if o.mean_auc is not None])
        table.add_row("mean", "", "", f"{len(done)} runs", f"{f1_mean:.3f} ± {f1_std:.3f}", f"{chance_mean:.3f}",
                      f"{auc_mean:.3f}", "")
    console.print(table)
    first_per_fold = {o.run.fold_name: o for o in reversed(done)}
    if first_per_fold:
        _print_base_rates(console, [first_per_fold[name] for name in sorted(first_per_fold)])


def _auc_cell(auc: float) -> str:
    if auc != auc:  # NaN: one class only
        return ""
    return f"{auc:.2f}" + (" (< 0.5)" if auc < 0.5 else "")


def _print_base_rates(console: Console, outcomes: list) -> None:
    """One row per AU: per fold its train -> test base rate (share of labelled frames with the AU present), F1 and
    AUC (below 0.5, marked: the scores rank the AU's frames the wrong way round)."""
    table = Table(title="base rates, train -> test, F1 and AUC per AU")
    table.add_column("AU")
    for outcome in outcomes:
        table.add_column(f"{outcome.run.fold_name} rate", justify="right")
        table.add_column("F1", justify="right")
        table.add_column("AUC", justify="right")
    for au in outcomes[0].per_au:
        cells = []
        for outcome in outcomes:
            m = outcome.per_au.get(au)
            cells += ["", "", ""] if m is None else [f"{m['train_rate']:.2f} -> {m['test_rate']:.2f}", f"{m['f1']:.2f}",
                                                     _auc_cell(m["auc"])]
        table.add_row(au, *cells)
    console.print(table)
    for outcome in outcomes:
        shifts = [(au, m["train_rate"], m["test_rate"]) for au, m in outcome.per_au.items()
                  if min(m["train_rate"], m["test_rate"]) > 0
                  and max(m["test_rate"] / m["train_rate"], m["train_rate"] / m["test_rate"]) >= PRIOR_SHIFT]
        if shifts:
            au, train, test = max(shifts, key=lambda s: abs(math.log(s[2] / s[1])))
            console.print(f"note: {outcome.run.fold_name}: test base rates differ from the training ones ({au} {train:.2f} "
                          f"-> {test:.2f}; {len(shifts)} AU(s) by {PRIOR_SHIFT:g}x or more). A classifier fitted to the "
                          f"training prior {'under' if test > train else 'over'}-predicts such AUs at the 0.5 threshold "
                          "(low recall, or low precision): F1 then moves with the prior, AUC does not.")
