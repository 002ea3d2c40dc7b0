"""The README's commands work as written, in the state its quick start leaves.

Every `aunce-bench` command in the README's code blocks names a real command and only options it has. The cheap
ones (reading the store, listing, reporting) and the Python API example run for real, in a folder holding the
store the quick start's main job leaves: `aunce` on `synth_cross_dataset` at the quick budget, both directions
(synthetic predictions instead of training, so the test takes seconds).
"""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.results import ResultStore
from test_report import store_synthetic_run, synthetic_runs

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAP = {"results", "show", "report", "list", "results-page"}  # commands that only read the store or the specs
runner = CliRunner()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.S | re.M)


def readme_commands() -> list[list[str]]:
    """Each `aunce-bench ...` command of the README's bash blocks as arguments (continuations joined, comments and
    the `.venv/bin/` prefix dropped, `&&` chains split)."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0].removeprefix(".venv/bin/") == "aunce-bench":
                    commands.append(words[1:])
    return commands


def resolve(arguments: list[str]):
    """The click command the arguments name, and how many of them name it (groups such as `init build`)."""
    command, used = typer.main.get_command(app), 0
    while hasattr(command, "commands"):  # a group
        command = command.commands.get(arguments[used])
        assert command is not None, f"README: no command 'aunce-bench {' '.join(arguments[:used + 1])}'"
        used += 1
    return command, used


def test_the_readme_shows_commands_of_every_kind():
    names = {" ".join(arguments[:1]) for arguments in readme_commands()}
    assert {"run", "results", "report", "show", "noise-curve", "sweep", "prepare"} <= names


@pytest.mark.parametrize("arguments", readme_commands(), ids=lambda arguments: " ".join(arguments)[:60])
def test_every_readme_command_names_real_options(arguments):
    command, used = resolve(arguments)
    known = {option for param in command.params for option in (*param.opts, *param.secondary_opts)}
    written = {word.split("=")[0] for word in arguments[used:] if word.startswith("--")}
    assert written <= known, f"aunce-bench {' '.join(arguments)}: unknown {sorted(written - known)}"


@pytest.fixture
def quick_start_state(tmp_path, monkeypatch):
    """A folder holding results.sqlite as the quick start's main job leaves it; the working directory."""
    with ResultStore(tmp_path / "results.sqlite") as store:
        for run in synthetic_runs("aunce", "synth_cross_dataset"):
            store_synthetic_run(store, run, 0.9)
        run_id = store.runs()[0]["run_id"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUNCE_BENCH_DB", raising=False)
    return run_id


def test_the_cheap_readme_commands_run_as_written(quick_start_state):
    cheap = [arguments for arguments in readme_commands() if arguments[0] in CHEAP]
    assert len(cheap) >= 5
    for arguments in cheap:
        arguments = [quick_start_state if word == "RUN_ID" else word for word in arguments]
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, f"aunce-bench {' '.join(arguments)}: {result.output}"
    assert Path("reports/index.html").is_file() and Path("RESULTS.md").is_file()


def test_the_python_api_example_runs_as_written(quick_start_state):
    (example,) = [block for block in code_blocks("python") if "import aunce_bench" in block]
    namespace = {}
    exec(example, namespace)  # the README's own lines, in the quick start's state
    board = namespace["board"]
    measured = board[board.kind == "measured"]
    assert set(measured.test) == {"bp4d_to_disfa", "disfa_to_bp4d"} and set(measured.method) == {"aunce"}
    assert measured.ci_low.isna().all()  # one method: no interval to the best, and no KeyError either


def test_no_file_of_the_repository_cites_a_document_users_do_not_have():
    """Comments, docstrings, docs and the README cite the repository's own `docs/`, never the team's background
    notes (the facts, design and probes files outside the repository, or their numbered sections)."""
    root = README.parent
    cited = re.compile(r"\b(FACTS|DESIGN|PROBES)(\.md\b| s\d)")
    files = [path for folder in ("aunce_bench", "docs", "benchmarks", "tests") for path in (root / folder).rglob("*")
             if path.suffix in {".py", ".md", ".yaml", ".sh", ".html", ".j2"}] + [README]
    found = [f"{path.relative_to(root)}:{number}" for path in files
             for number, line in enumerate(path.read_text().splitlines(), 1) if cited.search(line)]
    assert found == []
