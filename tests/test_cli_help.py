"""The help of every command reads cleanly: no value type after a flag."""

import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app

runner = CliRunner()
COMMANDS = [[], ["run"], ["synth"], ["prepare"], ["sweep"], ["noise-curve"], ["study"], ["diagnose"], ["init"],
            ["init", "build"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(command) or "aunce-bench" for command in COMMANDS])
def test_help_writes_no_type_after_a_flag(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "--help" in result.output
    if command == ["run"]:
        lines = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│    --")}
        assert lines["--quick"].split()[2:4] == ["use", "the"]  # the flag, then its help
        assert "--no-channels-last" in lines["--channels-last"] and "<int>" in lines["--nproc"]
