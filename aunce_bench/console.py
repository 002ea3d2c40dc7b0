"""Terminal output of `aunce-bench run`: rich progress bars (runs, epochs, batches) and the summary table."""

from __future__ import annotations

import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBars, TextColumn, TimeElapsedColumn
from rich.table import Table

from aunce_bench.metrics import summarise
from aunce_bench.training.common import Progress


class RichProgress(Progress):
    """Three bars: runs, epochs of the current stage, batches of the current epoch."""

    def __init__(self, console: Console, total_runs: int | None):
        """`total_runs` None hides the runs bar (a single stage, e.g. a SynthFace build)."""
        self.bars = RichBars(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.runs = self.bars.add_task("runs", total=total_runs, info="", visible=total_runs is not None)
        self.epochs = self.bars.add_task("epochs", total=None, info="", visible=False)
        self.batches = self.bars.add_task("batches", total=None, info="", visible=False)

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
        self.bars.reset(self.epochs, total=epochs, description=name, info="", visible=True)
        self.bars.reset(self.batches, total=max(batches_per_epoch, 1), description="  batches", info="", visible=True)

    def batch(self, loss: float) -> None:
        self.bars.update(self.batches, advance=1, info=f"loss {loss:.4f}")

    def epoch(self, epoch: int, summary: dict[str, float]) -> None:
        info = "  ".join(f"{key} {value:.4f}" for key, value in summary.items())
        self.bars.update(self.epochs, completed=epoch + 1, info=info)
        self.bars.reset(self.batches, total=self.bars.tasks[self.batches].total, info="")


# A test base rate this many times the training one (or its inverse) is a label-prior shift worth a note.
PRIOR_SHIFT = 2.0


def print_run_summary(console: Console, method: str, protocol: str, budget: str, outcomes: list) -> None:
    """Per run: mean F1, chance F1 and mean AUC; then the AUs' train and test base rates, and a note per
    test set whose base rates shifted from the training ones."""
    inits = sorted({o.run.init for o in outcomes})
    table = Table(title=f"{method} on {protocol} ({budget} budget), init {', '.join(inits)}")
    for column in ("fold", "seed", "noise", "status", "mean F1", "chance F1", "mean AUC", "wall s"):
        table.add_column(column, justify="left" if column in ("fold", "noise", "status") else "right")
    for outcome in outcomes:
        run = outcome.run
        cells = [f"{v:.3f}" if v is not None else "" for v in (outcome.mean_f1, outcome.chance_f1, outcome.mean_auc)]
        wall = f"{outcome.wall_s:.0f}" if outcome.wall_s is not None else ""
        table.add_row(run.fold_name, str(run.seed), run.noise, outcome.status, *cells, wall)
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
