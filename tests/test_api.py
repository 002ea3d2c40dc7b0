"""The notebook API: `aunce_bench.load_results` and `aunce_bench.leaderboard` hold the numbers the CLI prints."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import aunce_bench
from aunce_bench.cli import app
from aunce_bench.errors import UserError
from test_report import fill_synthetic

runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fill_synthetic(tmp_path_factory.mktemp("api") / "results.sqlite")


def test_load_results_per_run_matches_the_json_export(db):
    runs = aunce_bench.load_results(db, per="run")
    exported = json.loads(runner.invoke(app, ["results", "--db", str(db)]).output)
    assert isinstance(runs, pd.DataFrame) and len(runs) == len(exported)
    by_id = runs.set_index("run_id")
    for run in exported:
        row = by_id.loc[run["run_id"]]
        assert (row.method, row.protocol, row.noise, row.selection) == (run["method"], run["protocol"], run["noise"],
                                                                         run["selection"])
        assert row.mean_f1 == pytest.approx(run["mean_f1"])
    assert set(aunce_bench.load_results(db, per="run", method="wce").method) == {"wce"}


def test_load_results_per_au_holds_every_stored_au_metric(db):
    rows = aunce_bench.load_results(db)
    exported = json.loads(runner.invoke(app, ["results", "--db", str(db)]).output)
    assert len(rows) == sum(len(run["per_au_f1"]) for run in exported)
    first = exported[0]
    mine = rows[rows.run_id == first["run_id"]].set_index("au")
    assert mine.f1.to_dict() == pytest.approx(first["per_au_f1"])
    assert {"precision", "recall", "auc", "support", "device", "decision_threshold"} <= set(rows.columns)
    # per-AU means over runs reproduce the runs' mean F1 (the mean over AUs)
    means = rows.groupby("run_id").f1.mean()
    assert means[first["run_id"]] == pytest.approx(first["mean_f1"])


def test_leaderboard_is_the_csv_export_as_a_frame(db):
    board = aunce_bench.leaderboard(db, protocol="synth_bp4d_3fold", resamples=200)
    measured = board[board.kind == "measured"]
    assert list(measured.method) == ["wce", "aunce"] and list(measured["rank"]) == [1, 2]
    assert set(board.kind) == {"measured", "chance", "reported"}
    exported = runner.invoke(app, ["results", "--db", str(db), "--leaderboard", "--format", "json",
                                   "--protocol", "synth_bp4d_3fold"]).output
    rows = json.loads(exported)[0]["rows"]
    assert list(measured.mean_f1) == pytest.approx([row["mean_f1"] for row in rows])


def test_a_missing_database_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no result database at"):
        aunce_bench.load_results(tmp_path / "none.sqlite")
