"""The package as a user installs it: a wheel built from the checkout, installed into a fresh virtual
environment outside it, finds its built-in methods and protocols and runs a tiny plan."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from conftest import TINY_PROTOCOL

CHECKOUT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "reports", "*.sqlite*")


def _run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installed_outside_the_checkout_lists_and_runs(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(CHECKOUT, source, ignore=NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(source)], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("aunce_bench-*.whl")

    # A fresh environment: the wheel installed into it, its dependencies read from this environment's
    # site-packages (a path entry: this environment's editable install of the checkout is not loaded).
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    site = Path(next(fresh.glob("lib/python*/site-packages")))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
         tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUNCE_BENCH_CACHE": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    python = fresh / "bin" / "python"
    where = _run([str(python), "-c", "import aunce_bench.specs as s; print(s.__file__); print(s.BUILTIN)"], elsewhere, env)
    assert str(site) in where.stdout and str(CHECKOUT) not in where.stdout, where.stdout

    cli = [str(python), "-m", "aunce_bench.cli"]
    listed = _run([*cli, "list", "methods"], elsewhere, {**env, "COLUMNS": "200"})
    print(listed.stdout)
    for name in ("aunce", "wce", "wce_linear", "init_linear"):
        assert f"│ {name} " in listed.stdout
    assert "built-in" in listed.stdout

    (elsewhere / "tiny_easy.yaml").write_text(TINY_PROTOCOL)
    ran = _run([*cli, "run", "--method", "init_linear", "--protocol", "tiny_easy.yaml", "--quick", "--folds", "1",
                "--init", "scratch", "--db", "results.sqlite"], elsewhere, {**env, "COLUMNS": "200"})
    assert "1 done, 0 failed, 0 skipped of 1 run(s)" in ran.stdout
    revision = _run([*cli, "results", "--db", "results.sqlite"], elsewhere, env).stdout
    assert '"git_revision": null' in revision  # no checkout to name
