"""`run --max-steps`: the full budget's exact configuration for a few optimiser steps per training stage, on SynthAU
data cut to what they take; nothing is stored."""

import math
import re

import pytest
import timm
import torch
from typer.testing import CliRunner

from aunce_bench.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory):
    """A state dict of the full budget's backbone (random weights), standing in for ImageNet's offline."""
    path = tmp_path_factory.mktemp("init") / "swin_base.pth"
    torch.save(timm.create_model("swin_base_patch4_window7_224", pretrained=False).state_dict(), path)
    return path


@pytest.mark.parametrize(("method", "configured", "stages"), [
    ("wce", "train optimizer adamw, lr 0.0001, weight_decay 0.0005, batch_size 2, epochs 20", ["supervised"]),
    ("aunce", "loss name aunce, temperature 0.5, exponent_pos 1.2, exponent_neg 0.8, positive_probs [0.2, 0.6, 0.2]",
     ["contrastive pretraining", "linear probe"]),
], ids=["wce", "aunce"])
def test_the_full_budget_smoke_runs_two_steps_of_each_stage_and_stores_nothing(method, configured, stages,
                                                                                 swin_checkpoint, tmp_path):
    db = tmp_path / "r.sqlite"
    result = runner.invoke(app, ["run", "--method", method, "--protocol", "synth_bp4d_3fold", "--budget", "full",
                                 "--folds", "1", "--max-steps", "2", "--smoke-batch-size", "2",
                                 "--init", f"checkpoint:{swin_checkpoint}", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "model backbone swin_base_patch4_window7_224" in result.output
    assert "224 px crops of 256 px faces" in result.output and configured in result.output
    assert "data cut to what the steps take" in result.output and "batch reduced by --smoke-batch-size 2" in result.output
    for stage in stages:
        (numbers,) = re.findall(rf"fold1 seed 0 {stage}: 2 steps, loss (\S+) -> (\S+), (\S+) s/step", result.output)
        assert all(math.isfinite(float(number)) for number in numbers), numbers
    assert "smoke: nothing stored" in result.output
    assert not db.exists()  # no store opened, so no run in it


@pytest.mark.parametrize(("options", "message"), [
    (["--max-steps", "2", "--executor", "ray"], "--max-steps is a smoke test in this process that stores nothing; it "
                                                "cannot be combined with --executor ray"),
    (["--max-steps", "2", "--nproc", "2"], "cannot be combined with --nproc 2"),
    (["--max-steps", "2", "--keep-embeddings"], "cannot be combined with --keep-embeddings"),
    (["--max-steps", "0"], "invalid --max-steps: 0; give 1 or more"),
    (["--smoke-batch-size", "4"], "--smoke-batch-size needs --max-steps"),
    (["--max-steps", "2", "--protocol", "bp4d_3fold"], "reads prepared data; the smoke test cuts SynthAU data only"),
])
def test_a_smoke_that_makes_no_sense_is_refused_with_one_line(options, message, tmp_path):
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "synth_bp4d_3fold", "--budget", "full",
                                 "--db", str(tmp_path / "r.sqlite"), *options])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
