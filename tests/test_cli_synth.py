"""`aunce-bench synth` as a user runs it: generation, gallery, and one-line errors for bad input."""

import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.index import FrameIndex

runner = CliRunner()
SMALL = ["--subjects", "2", "--sequences", "1", "--frames", "40", "--stride", "10", "--size", "40", "--workers", "1"]


def test_synth_writes_a_frame_index_and_a_gallery(tmp_path):
    out, gallery = tmp_path / "synth", tmp_path / "gallery.png"
    result = runner.invoke(app, ["synth", "--profile", "disfa", *SMALL, "--out", str(out), "--gallery", str(gallery)])
    assert result.exit_code == 0, result.output
    assert "wrote 8 frames of 2 subjects" in result.output
    assert len(FrameIndex.load(out)) == 8 and gallery.stat().st_size > 10_000
    again = runner.invoke(app, ["synth", "--profile", "disfa", *SMALL, "--out", str(out)])
    assert again.exit_code == 0 and "already generated" in again.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--profile", "bp4"], "invalid --profile: unknown profile 'bp4' (did you mean 'bp4d'?)"),
        (["--size", "16"], "invalid --size"),
        (["--subjects", "-3"], "invalid --subjects"),
        (["--frames", "0"], "invalid --frames"),
        (["--workers", "0"], "invalid --workers"),
        (["--pose", "sideways"], "invalid --pose"),
    ],
)
def test_bad_options_fail_with_one_line(arguments, message, tmp_path):
    result = runner.invoke(app, ["synth", *arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_unwritable_output_fails_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["synth", *SMALL, "--out", str(blocker / "synth")])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot write to {blocker}") and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
