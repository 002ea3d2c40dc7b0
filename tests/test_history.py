"""Per-epoch training history: every stage of a run records its epochs (loss, learning rate, validation F1 where a
validation set exists, images/s), stored with the run and returned by `results --format json`."""

import io
import json
import re

import numpy as np
from rich.console import Console
from typer.testing import CliRunner

import aunce_bench
import aunce_bench.console

from aunce_bench.cli import app
from aunce_bench.console import PlainProgress
from aunce_bench.results import ResultStore
from aunce_bench.show import SPARKS, sparkline

runner = CliRunner()

TWO_EPOCH_AUNCE = """\
name: two_epoch_aunce
recipe: contrastive_probe
model: {backbone: test_resnet, graph: true, dim: 16}
loss: {name: aunce}
train: {optimizer: adamw, lr: 2.0e-3, batch_size: 32, epochs: 2, schedule: cosine}
probe: {optimizer: adam, lr: 1.0e-2, batch_size: 64, epochs: 3}
"""


def test_every_stage_of_a_run_stores_its_epochs(tiny_specs, tmp_path, monkeypatch):
    method, db = tmp_path / "two_epoch_aunce.yaml", tmp_path / "r.sqlite"
    method.write_text(TWO_EPOCH_AUNCE)
    monkeypatch.setattr(aunce_bench.console, "PLAIN_EPOCH_EVERY_S", 0.0)  # a line for every epoch, however fast
    result = runner.invoke(app, ["run", "--method", str(method), "--protocol", str(tiny_specs / "tiny_easy.yaml"),
                                 "--quick", "--folds", "1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    # off a terminal, the run is told as it happens: one timestamped line per run, stage and epoch
    lines = result.output.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d two_epoch_aunce fold1 seed 0: run 1/1 started", lines[0]), lines[0]
    epochs = [line for line in lines if ": epoch " in line]
    assert [re.search(r": (contrastive pretraining|linear probe): epoch (\d/\d)", line).group(1, 2)
            for line in epochs] == [("contrastive pretraining", "1/2"), ("contrastive pretraining", "2/2"),
                                    ("linear probe", "1/3"), ("linear probe", "2/3"), ("linear probe", "3/3")]
    assert all(re.search(r", loss \d\.\d{4}, (val_f1 \d\.\d{4}, )?img/s [\d,]+, elapsed \d+s, ETA \d+s$", line)
               for line in epochs), epochs
    assert re.search(r"two_epoch_aunce fold1 seed 0: run finished in \d+s", result.output)
    (stored,) = json.loads(runner.invoke(app, ["results", "--format", "json", "--db", str(db)]).output)
    history = stored["history"]
    assert [(h["stage"], h["epoch"]) for h in history] == [
        ("contrastive pretraining", 1), ("contrastive pretraining", 2),
        ("linear probe", 1), ("linear probe", 2), ("linear probe", 3)]
    pretraining, probe = history[:2], history[2:]
    assert [h["loss"] for h in pretraining] == [stored["provenance"]["training"]["pretrain_first_loss"],
                                                stored["provenance"]["training"]["pretrain_final_loss"]]
    assert pretraining[0]["lr"] == 2.0e-3 and 0 < pretraining[1]["lr"] < 2.0e-3  # cosine decay, per step
    assert all(h["val_f1"] is None for h in pretraining)  # contrastive pretraining selects nothing
    assert all(0 <= h["val_f1"] <= 1 for h in probe)  # strict selection: held-out validation subjects
    assert probe[-1]["loss"] == stored["provenance"]["training"]["probe_final_loss"]
    assert all(np.isfinite(h["loss"]) and h["images_per_s"] > 0 for h in history)
    frame = aunce_bench.load_results(db, per="epoch")  # the Python API: one row per run x stage x epoch
    assert frame[["stage", "epoch", "loss"]].to_dict("records") == [
        {"stage": h["stage"], "epoch": h["epoch"], "loss": h["loss"]} for h in history]
    assert set(frame.run_id) == {stored["run_id"]} and set(frame.method) == {"two_epoch_aunce"}

    shown = runner.invoke(app, ["show", stored["run_id"][:8], "--db", str(db)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"run {stored['run_id']}: two_epoch_aunce (") and lines[0].endswith(": done")
    assert f"mean F1 {stored['mean_f1']:.3f}" in shown.output
    assert any(line.split("│")[1].strip() == "AU12" for line in lines if line.count("│") > 3)  # the per-AU table
    curve_rows = {cells[1].strip() + "/" + cells[3].strip(): cells[5].strip()
                  for cells in (line.split("│") for line in lines) if len(cells) == 8}
    assert len(curve_rows["contrastive pretraining/loss"]) == 2 and len(curve_rows["/val_f1"]) == 3
    assert set(curve_rows["linear probe/loss"]) <= set(SPARKS)
    assert f"predictions: {db.parent.resolve() / 'r.predictions' / (stored['run_id'] + '.parquet')}" in shown.output


def test_sparklines_scale_from_minimum_to_maximum():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert sparkline([1.0, None, 1.0]) == "▁ ▁" and sparkline([None]) == ""
    assert sparkline(list(range(80)), width=40) == sparkline([2 * i + 0.5 for i in range(40)])


def test_show_refuses_unknown_and_ambiguous_ids_with_one_line(tmp_path):
    from test_results import finish, start

    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        for run_id in ("abc1", "abc2"):
            start(store, run_id)
            finish(store, run_id)
    for run_id, message in (("zzz", "no run 'zzz' in"), ("abc", "run id prefix 'abc' matches 2 runs")):
        result = runner.invoke(app, ["show", run_id, "--db", str(db)])
        assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_off_a_terminal_fast_epochs_are_told_at_their_stages_edges_only():
    """A probe's 40 epochs in a second print its first and last epoch, not 40 lines."""
    console = Console(file=io.StringIO(), width=200)
    progress = PlainProgress(console, total_runs=1)
    progress.stage("linear probe", 40, 1)
    for epoch in range(40):
        progress.batch(0.5)
        progress.epoch(epoch, {"loss": 0.5})
    lines = console.file.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "40 epoch(s) of 1 batch(es)", "epoch 1/40, loss 0.5000, elapsed 0s, ETA 0s",
        "epoch 40/40, loss 0.5000, elapsed 0s, ETA 0s"]
