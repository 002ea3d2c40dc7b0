"""The Python API for notebooks: stored runs and leaderboards as pandas DataFrames.

    import aunce_bench
    runs = aunce_bench.load_results("results.sqlite", protocol="synth_cross_dataset")  # one row per run x AU
    runs.groupby(["budget", "test", "noise", "method", "au"]).f1.mean().unstack()    # settings kept apart
    curves = aunce_bench.load_results("results.sqlite", per="epoch")  # one row per run x stage x epoch
    board = aunce_bench.leaderboard("results.sqlite", protocol="synth_cross_dataset")
    board[board.kind == "measured"][["test", "method", "rank", "mean_f1", "std_f1", "ci_low", "ci_high"]]

Both read through the same code as the CLI (`ResultStore.runs`, `report.aggregate`), so a DataFrame holds the
numbers `aunce-bench results` and `report` print, with the columns of the comparability key (`run_key`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aunce_bench.errors import UserError
from aunce_bench.report.aggregate import leaderboards, run_key
from aunce_bench.report.bootstrap import RESAMPLES
from aunce_bench.report.exports import BOARD_FIELDS, board_rows
from aunce_bench.results import HISTORY_FIELDS, METRIC_FIELDS, STATUSES, ResultStore

_RUN_COLUMNS = ("run_id", "method", "protocol", "dataset", "budget", "fold", "seed", "noise", "init", "selection",
                "status", "mean_f1", "chance_f1", "wall_s", "error")


def _open(db: str | Path) -> ResultStore:
    path = Path(db)
    if not path.is_file():
        raise UserError(f"no result database at {path}")
    return ResultStore(path)


def _run_row(run: dict) -> dict:
    key = run_key(run)
    row = {name: run[name] for name in _RUN_COLUMNS}
    row.update(test=key.setting.test, data_fingerprint=key.setting.data_fingerprint, init=key.setting.init,
               selection=key.selection,
               decision_threshold=key.setting.decision_threshold,
               occurrence_threshold=key.setting.occurrence_threshold,
               device=run["provenance"].get("device"), git_revision=run["provenance"].get("git_revision"))
    return row


def load_results(db: str | Path, *, per: str = "au", status: str | None = "done", method: str | None = None,
                 protocol: str | None = None) -> pd.DataFrame:
    """Stored runs as a DataFrame: one row per run x AU (`per="au"`: the run's columns plus au, f1, precision,
    recall, accuracy, auc, support, positives of the "all" group), one row per run (`per="run"`), or one row per
    run x training stage x epoch (`per="epoch"`: the run's columns plus stage, epoch, loss, lr, val_f1,
    images_per_s; runs stored before histories were have none). `status` keeps runs of that status (None: every
    run); `method` and `protocol` filter by name."""
    if per not in ("au", "run", "epoch"):
        raise ValueError(f"per must be 'au', 'run' or 'epoch', got {per!r}")
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)} or None, got {status!r}")
    with _open(db) as store:
        runs = store.runs(method=method, protocol=protocol, status=status)
        if per == "run":
            return pd.DataFrame([_run_row(run) for run in runs], columns=_columns())
        if per == "epoch":
            rows = [{**_run_row(run), **entry} for run in runs for entry in run["history"]]
            return pd.DataFrame(rows, columns=_columns(*HISTORY_FIELDS))
        rows = [{**_run_row(run), "au": au, **metrics}
                for run in runs for au, metrics in store.au_metrics(run["run_id"]).items()]
    return pd.DataFrame(rows, columns=_columns("au", *METRIC_FIELDS))


def _columns(*extra: str) -> list[str]:
    return [*_RUN_COLUMNS, "test", "data_fingerprint", "decision_threshold", "occurrence_threshold", "device",
            "git_revision", *extra]


def leaderboard(db: str | Path, *, protocol: str | None = None, method: str | None = None,
                resamples: int = RESAMPLES) -> pd.DataFrame:
    """The aggregated leaderboards (as `aunce-bench report`) as one DataFrame: per setting (protocol, budget,
    test, data_fingerprint, init, thresholds, noise) its measured rows (rank, method, selection, optimistic, runs,
    mean_f1, std_f1, difference_to_best with ci_low/ci_high, f1_<AU>), then its chance row and reported rows
    (`kind`)."""
    with _open(db) as store:
        boards = leaderboards(store.runs(method=method, protocol=protocol), store, resamples)
    frame = pd.DataFrame([row for board in boards for row in board_rows(board)])
    # every board column is there, empty where no row has it (one method: no interval to the best)
    return frame.reindex(columns=[*BOARD_FIELDS, *(name for name in frame.columns if name not in BOARD_FIELDS)])
