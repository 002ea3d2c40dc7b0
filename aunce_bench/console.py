"""Terminal output of `aunce-bench run`: rich progress bars (runs, epochs, batches) and the summary table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichBars, TextColumn, TimeElapsedColumn
from rich.table import Table

from aunce_bench.metrics import summarise
from aunce_bench.training.common import Progress


class RichProgress(Progress):
    """Three bars: runs, epochs of the current stage, batches of the current epoch."""

    def __init__(self, console: Console, total_runs: int):
        self.bars = RichBars(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.runs = self.bars.add_task("runs", total=total_runs, info="")
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


def print_run_summary(console: Console, method: str, protocol: str, budget: str, outcomes: list) -> None:
    table = Table(title=f"{method} on {protocol} ({budget} budget)")
    for column in ("fold", "seed", "noise", "status", "mean F1", "chance F1", "wall s"):
        table.add_column(column, justify="right" if column in ("seed", "mean F1", "chance F1", "wall s") else "left")
    for outcome in outcomes:
        run = outcome.run
        cells = [f"{v:.3f}" if v is not None else "" for v in (outcome.mean_f1, outcome.chance_f1)]
        wall = f"{outcome.wall_s:.0f}" if outcome.wall_s is not None else ""
        table.add_row(run.fold_name, str(run.seed), run.noise, outcome.status, *cells, wall)
    done = [o for o in outcomes if o.status == "done"]
    if len(done) > 1:
        f1_mean, f1_std = summarise([o.mean_f1 for o in done])
        chance_mean, _ = summarise([o.chance_f1 for o in done])
        table.add_row("mean", "", "", f"{len(done)} runs", f"{f1_mean:.3f} ± {f1_std:.3f}", f"{chance_mean:.3f}", "")
    console.print(table)
