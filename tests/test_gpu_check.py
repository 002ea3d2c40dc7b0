"""benchmarks/gpu_check.sh on a machine without an NVIDIA GPU: one line, exit status 2, before anything else."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"


def check(tmp_path, fake_nvidia_smi: str | None = None) -> subprocess.CompletedProcess:
    """Run the script with PATH stripped of any nvidia-smi, plus a fake one printing `fake_nvidia_smi` where given."""
    path = [folder for folder in os.environ["PATH"].split(os.pathsep) if not (Path(folder) / "nvidia-smi").exists()]
    if fake_nvidia_smi is not None:
        fake = tmp_path / "bin" / "nvidia-smi"
        fake.parent.mkdir()
        fake.write_text(f"#!/bin/sh\n{fake_nvidia_smi}\n")
        fake.chmod(0o755)
        path.insert(0, str(fake.parent))
    return subprocess.run([shutil.which("bash"), str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "PATH": os.pathsep.join(path)}, timeout=30)


@pytest.mark.parametrize(("fake", "line"), [
    (None, "no GPU: nvidia-smi not found (this check needs an NVIDIA GPU)"),
    ("echo 'No devices were found'; exit 6",
     "no GPU: nvidia-smi lists none (No devices were found; this check needs an NVIDIA GPU)"),
    ("exit 0", "no GPU: nvidia-smi lists none (this check needs an NVIDIA GPU)"),
], ids=["no nvidia-smi", "no devices", "empty list"])
def test_without_a_gpu_the_check_says_so_and_exits_2_at_once(tmp_path, fake, line):
    started = time.perf_counter()
    result = check(tmp_path, fake)
    assert time.perf_counter() - started < 5
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")
    assert not (tmp_path / "out").exists()  # nothing else ran
