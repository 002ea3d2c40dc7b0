"""Data caches under concurrency and damage: one builder per folder, content hashes checked on every load,
one-line errors that say how to rebuild, and limits on the data configurations."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.index import MARKER_FILE, FrameIndex
from aunce_bench.data.prepare import prepare
from aunce_bench.data.configs import PreparedConfig, SynthConfig
from aunce_bench.data.prepared import prepared_info
from aunce_bench.data.synth.generate import default_output, load_or_generate
from aunce_bench.errors import UserError
from aunce_bench.paths import WORK_KINDS, check_writable, work_folder
from aunce_bench.protocols import fold_plans
from aunce_bench.specs import BUILTIN, load_protocol, validation_message
from rawdata import noise_image, write_image
from test_store_integrity import as_user

runner = CliRunner()
TINY = dict(subjects=3, sequences_per_subject=1, frames_per_sequence=20, frame_stride=10, image_size=32)
TINY_OPTIONS = ["--subjects", "3", "--sequences", "1", "--frames", "20", "--stride", "10", "--size", "32",
                "--workers", "1"]
ARROW_FILE = "data-00000-of-00001.arrow"

# Waits for the go file, so that every process asks for the set at the same moment, then says whether it reused it.
GENERATOR = """
import sys, time
from pathlib import Path
from aunce_bench.data.synth.generate import load_or_generate
from aunce_bench.data.configs import SynthConfig
config = SynthConfig(**{config})
print("ready", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.01)
_, folder, reused = load_or_generate(config, workers=1)
print("reused" if reused else "generated", flush=True)
"""


@pytest.fixture
def cold_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUNCE_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_concurrent_processes_on_a_cold_cache_generate_once(cold_cache, tmp_path):
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", GENERATOR.format(config=TINY), str(go)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for process in processes:
        assert process.stdout.readline() == "ready\n"
    go.touch()
    outcomes = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], [err for _, err in outcomes]
    assert sorted(out.split()[-1] for out, _ in outcomes) == ["generated", "reused", "reused"]
    folder = default_output(SynthConfig(**TINY))
    assert sorted(entry.name for entry in folder.parent.iterdir()) == [folder.name, f"{folder.name}.lock"]
    assert len(FrameIndex.load(folder)) == 3 * 2


def flip_labels(folder: Path) -> None:
    """Rewrite the Arrow file with every label flipped: valid data, wrong answers."""
    frames = datasets.load_from_disk(str(folder / "frames"))
    flipped = frames.map(lambda row: {"labels": [1 - label for label in row["labels"]]}, keep_in_memory=True)
    with tempfile.TemporaryDirectory() as scratch:
        flipped.save_to_disk(scratch)
        shutil.copyfile(Path(scratch) / ARROW_FILE, folder / "frames" / ARROW_FILE)


def truncate_arrow(folder: Path) -> None:
    arrow = folder / "frames" / ARROW_FILE
    arrow.write_bytes(arrow.read_bytes()[:1000])


def delete_arrow(folder: Path) -> None:
    (folder / "frames" / ARROW_FILE).unlink()


def garble_marker(folder: Path) -> None:
    marker = folder / MARKER_FILE
    marker.write_text(marker.read_text()[:60])


def edit_marker(folder: Path) -> None:
    marker = json.loads((folder / MARKER_FILE).read_text())
    marker["aus"][:2] = marker["aus"][1::-1]  # two AUs swapped: their labels would be read as each other's
    (folder / MARKER_FILE).write_text(json.dumps(marker))


DAMAGE = [(flip_labels, f"{ARROW_FILE}: content differs from the sha256 recorded"),
          (truncate_arrow, f"{ARROW_FILE}: content differs from the sha256 recorded"),
          (delete_arrow, f"{ARROW_FILE}: missing from the frame index"),
          (garble_marker, f"{MARKER_FILE}: damaged frame index marker (Expecting"),
          (edit_marker, f"{MARKER_FILE}: damaged frame index marker (content differs from the sha256 recorded")]


@pytest.mark.parametrize(("damage", "problem"), DAMAGE, ids=[damage.__name__ for damage, _ in DAMAGE])
def test_a_damaged_synth_cache_fails_with_one_line_and_force_rebuilds_it(damage, problem, cold_cache):
    config = SynthConfig(**TINY)
    index, folder, _ = load_or_generate(config, workers=1)
    labels = index.label_matrix()
    damage(folder)
    rebuild = ("rebuild it with: aunce-bench synth --profile bp4d --subjects 3 --sequences 1 --frames 20 --size 32 "
               "--force")
    with pytest.raises(UserError) as raised:
        load_or_generate(config, workers=1)
    message = str(raised.value)
    assert message.startswith(str(folder)) and problem in message and message.endswith(rebuild)
    assert "\n" not in message

    result = runner.invoke(app, ["synth", *TINY_OPTIONS])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr == f"error: {message}\n"

    result = runner.invoke(app, ["synth", *TINY_OPTIONS, "--force"])
    assert result.exit_code == 0, result.output
    assert f"wrote6framesof3subjectsto{folder}" in "".join(result.stdout.split())  # rich wraps long lines
    assert (FrameIndex.load(folder).label_matrix() == labels).all()
    assert load_or_generate(config, workers=1)[2]  # reused
    assert sorted(entry.name for entry in folder.parent.iterdir()) == [folder.name, f"{folder.name}.lock"]


def test_force_refuses_a_folder_that_is_not_a_frame_index(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", *TINY_OPTIONS, "--out", str(out), "--force"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {out} holds files that are not a frame index; choose another output folder\n"
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_incomplete_synth_cache_names_the_synth_command_that_generates_it_again(cold_cache):
    config = SynthConfig(**TINY)
    _, folder, _ = load_or_generate(config, workers=1)
    (folder / MARKER_FILE).unlink()  # as an interrupted generation leaves it
    rebuild = "aunce-bench synth --profile bp4d --subjects 3 --sequences 1 --frames 20 --size 32 --force"
    result = runner.invoke(app, ["synth", *TINY_OPTIONS])
    assert result.exit_code == 2
    assert result.stderr == (f"error: {folder} holds an incomplete frame index (no {MARKER_FILE}: an interrupted or "
                             f"failed generation); generate it again with: {rebuild}\n")
    result = runner.invoke(app, rebuild.split()[1:] + ["--workers", "1"])
    assert result.exit_code == 0, result.output
    assert load_or_generate(config, workers=1)[2]  # reused


def test_a_cache_root_that_is_a_file_names_aunce_bench_cache(tmp_path, monkeypatch):
    from aunce_bench.synthface import ensure_synthface, synthface_config

    blocker = tmp_path / "cache"
    blocker.write_text("")
    monkeypatch.setenv("AUNCE_BENCH_CACHE", str(blocker))
    result = runner.invoke(app, ["synth", *TINY_OPTIONS])
    assert result.exit_code == 2
    assert result.stderr == (f"error: cannot write to {blocker / 'synth'}: Not a directory; the cache root "
                             f"$AUNCE_BENCH_CACHE={blocker} is a file; set $AUNCE_BENCH_CACHE to a writable folder\n")
    with pytest.raises(UserError, match=rf"^cannot write to {blocker / 'synthface'}: .*\$AUNCE_BENCH_CACHE={blocker} "):
        ensure_synthface(synthface_config("resnet18", 40))
    monkeypatch.delenv("AUNCE_BENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache root, ~/.cache/aunce_bench, is a file
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "aunce_bench").write_text("")
    result = runner.invoke(app, ["synth", *TINY_OPTIONS])
    assert result.exit_code == 2 and result.stderr.endswith(
        f"the cache root {tmp_path / '.cache' / 'aunce_bench'} (the default; $AUNCE_BENCH_CACHE is not set) is a "
        "file; set $AUNCE_BENCH_CACHE to a writable folder\n")


def test_an_unwritable_cache_root_names_aunce_bench_cache(cold_cache):
    cold_cache.mkdir()
    cold_cache.chmod(0o555)
    try:
        command = as_user([sys.executable, "-m", "aunce_bench.cli", "synth", *TINY_OPTIONS])
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        cold_cache.chmod(0o755)
    assert result.returncode == 2
    assert result.stderr == (f"error: cannot write to {cold_cache / 'synth'}: Permission denied; it is in the cache "
                             f"root $AUNCE_BENCH_CACHE={cold_cache}; make that writable, or set $AUNCE_BENCH_CACHE to "
                             "a writable folder\n")


def strip_hashes(folder: Path) -> dict:
    """Make the marker of `folder` as aunce-bench wrote it before content hashes were recorded; that marker."""
    marker = json.loads((folder / MARKER_FILE).read_text())
    for key in ("files", "rebuild", "sha256"):
        del marker[key]
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    return marker


def test_a_frame_index_written_before_hashes_were_recorded_gets_them_on_first_load(cold_cache):
    _, folder, _ = load_or_generate(SynthConfig(**TINY), workers=1)
    recorded = json.loads((folder / MARKER_FILE).read_text())
    old = strip_hashes(folder)
    (folder / MARKER_FILE).chmod(0o640)
    assert load_or_generate(SynthConfig(**TINY), workers=1)[2]
    marker = json.loads((folder / MARKER_FILE).read_text())
    assert marker == recorded and {key: marker[key] for key in old} == old
    assert stat.S_IMODE((folder / MARKER_FILE).stat().st_mode) == 0o640
    assert sorted(entry.name for entry in folder.parent.iterdir()) == [folder.name, f"{folder.name}.lock"]
    flip_labels(folder)  # from now on checked like any other
    with pytest.raises(UserError, match=rf"^{folder}/frames/{ARROW_FILE}: content differs from the sha256 recorded"):
        load_or_generate(SynthConfig(**TINY), workers=1)


def test_an_unreadable_frame_index_without_hashes_fails_with_one_line_and_gets_none(cold_cache):
    _, folder, _ = load_or_generate(SynthConfig(**TINY), workers=1)
    strip_hashes(folder)
    truncate_arrow(folder)
    for _ in range(2):
        with pytest.raises(UserError, match=rf"^{folder}/frames: unreadable frames \(.*\); rebuild it with: "
                                            r"aunce-bench synth .* --force$"):
            load_or_generate(SynthConfig(**TINY), workers=1)
    assert "files" not in json.loads((folder / MARKER_FILE).read_text())


def test_a_frame_index_without_hashes_in_a_read_only_folder_is_refused_with_the_rebuild_command(cold_cache):
    _, folder, _ = load_or_generate(SynthConfig(**TINY), workers=1)
    strip_hashes(folder)
    command = as_user([sys.executable, "-m", "aunce_bench.cli", "synth", *TINY_OPTIONS])
    for path in (folder, folder.parent):
        path.chmod(0o555)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                env=os.environ | {"OMP_NUM_THREADS": "1", "AUNCE_BENCH_CACHE": str(cold_cache)})
    finally:
        for path in (folder, folder.parent):
            path.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"error: {folder}: written before content hashes were recorded, and they cannot be "
                             f"recorded now (Permission denied); make it and {folder.parent} writable, or rebuild it "
                             "with: aunce-bench synth --profile bp4d --subjects 3 --sequences 1 --frames 20 --size 32 "
                             "--force\n")
    assert "files" not in json.loads((folder / MARKER_FILE).read_text())


def prepared_csv(tmp_path: Path) -> Path:
    """A three-frame dataset in the generic CSV format."""
    folder = tmp_path / "GFT"
    lines = ["image,subject,sequence,frame,AU1,AU12"]
    for i, subject in enumerate(["g1", "g1", "g2"]):
        write_image(folder / "frames" / f"{i}.png", noise_image(i))
        lines.append(f"frames/{i}.png,{subject},v1,{i},{i % 2},1")
    (folder / "gft.csv").write_text("\n".join(lines) + "\n")
    return folder / "gft.csv"


def leave_killed_work(output: Path) -> tuple[list[Path], list[Path]]:
    """The work folders of `output` as a writer killed mid-way leaves them, and look-alikes that must stay: another
    output's work folder and a user's folder named like one."""
    output.parent.mkdir(parents=True, exist_ok=True)
    left = [work_folder(output, kind) for kind in WORK_KINDS]
    for folder in left:
        (folder / "part.arrow").write_bytes(b"frames")
    others = [work_folder(output.with_name(f"{output.name}2"), "arrow"),
              output.with_name(f".{output.name}.partial-abcdefgh-mine")]
    others[1].mkdir()
    return left, others


@pytest.mark.parametrize("writer", ["generate", "prepare"])
def test_a_writer_removes_the_work_folders_a_killed_writer_left(writer, cold_cache, tmp_path):
    if writer == "generate":
        config = SynthConfig(**TINY)
        left, others = leave_killed_work(default_output(config))
        load_or_generate(config, workers=1)
    else:
        csv, data = prepared_csv(tmp_path), tmp_path / "data"
        left, others = leave_killed_work(data / "gft")
        prepare("csv", csv, data_root=data, align=False, workers=1)
    assert [folder for folder in left if folder.exists()] == [] and all(folder.is_dir() for folder in others)


def test_a_written_frame_index_has_the_permissions_of_any_new_folder(cold_cache, tmp_path):
    _, folder, _ = load_or_generate(SynthConfig(**TINY), workers=1)
    (tmp_path / "new").mkdir()
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((tmp_path / "new").stat().st_mode)


def test_a_damaged_prepared_dataset_fails_with_one_line_and_force_rebuilds_it(tmp_path):
    csv, data = prepared_csv(tmp_path), tmp_path / "data"
    folder = prepare("csv", csv, data_root=data, align=False, workers=1).folder
    rebuild = f"rebuild it with: aunce-bench prepare csv --root {csv} --out {folder} --no-align --force"
    flip_labels(folder)
    with pytest.raises(UserError) as raised:
        FrameIndex.load(folder)  # as a run loads it: the command comes from the marker
    assert str(raised.value) == (f"{folder}/frames/{ARROW_FILE}: content differs from the sha256 "
                                 f"recorded when it was written (damaged or modified); {rebuild}")
    result = runner.invoke(app, ["prepare", "csv", "--root", str(csv), "--no-align", "--data-root", str(data)])
    assert result.exit_code == 2 and result.stderr == f"error: {raised.value}\n"

    garble_marker(folder)
    with pytest.raises(UserError, match=rf"^{folder}/{MARKER_FILE}: damaged frame index marker \(.*\); rebuild it "
                                        rf"with: aunce-bench prepare csv --root .* --data-root {data} --force$"):
        prepared_info(data, "gft")  # as planning reads it
    result = runner.invoke(app, ["prepare", "csv", "--root", str(csv), "--no-align", "--data-root", str(data),
                                 "--force"])
    assert result.exit_code == 0, result.output
    assert FrameIndex.load(folder).label_matrix().tolist() == [[0, 1], [1, 1], [0, 1]]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subjects": "16"}, "field 'subjects': must be a whole number from 1 to 1000, got '16'"),
        ({"subjects": 1e14}, "field 'subjects': must be a whole number from 1 to 1000, got 100000000000000.0"),
        ({"subjects": 10**14}, "field 'subjects': must be a whole number from 1 to 1000, got 100000000000000"),
        ({"image_size": 8}, "field 'image_size': must be a whole number from 32 to 1024, got 8"),
        ({"seed": True}, "field 'seed': must be a whole number from 0 to 4294967295, got True"),
        ({"difficulty": "2"}, "field 'difficulty': Input should be a valid number (got '2')"),
        ({"profile": "affwild"}, "field 'profile': unknown profile 'affwild'; known: bp4d, disfa"),
    ],
)
def test_synth_config_limits_name_the_field(fields, message):
    with pytest.raises(ValidationError) as raised:
        SynthConfig(**fields)
    assert len(raised.value.errors()) == 1 and validation_message(raised.value) == message


def test_synth_config_limits_through_the_cli_are_one_line(tmp_path):
    result = runner.invoke(app, ["synth", "--size", "8", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert result.stderr == "error: invalid --size: must be a whole number from 32 to 1024, got 8\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"frame_stride": "4"}, "field 'frame_stride': must be a whole number from 1 to 10000, got '4'"),
        ({"image_size": 8}, "field 'image_size': must be a whole number from 32 to 1024, got 8"),
        ({"pose_bins": []}, "field 'pose_bins': List should have at least 1 item after validation, not 0 (got [])"),
        ({"pose_bins": "view6"}, "field 'pose_bins': Input should be a valid list (got 'view6')"),
    ],
)
def test_prepared_config_limits_name_the_field(fields, message):
    with pytest.raises(ValidationError) as raised:
        PreparedConfig(dataset="bp4d", **fields)
    assert validation_message(raised.value) == message


def test_natural_values_still_validate():
    assert SynthConfig(difficulty=1, occurrence_threshold=2).difficulty == 1.0
    assert PreparedConfig(dataset="fera17", frame_stride=40, image_size=64, pose_bins=["view6"]).image_size == 64
    for path in sorted((BUILTIN / "protocols").glob("synth_*.yaml")):
        protocol = load_protocol(str(path))
        for budget in protocol.budgets:
            assert fold_plans(protocol, budget)


def test_concurrent_reports_render_a_gallery_once(cold_cache, monkeypatch):
    from PIL import Image

    from aunce_bench.data.synth import gallery
    from aunce_bench.report.plots import gallery_jpeg

    rendered = []

    def slow_grid(config, rows, columns):
        rendered.append(config)
        time.sleep(0.5)  # long enough for the other report to find no cached image and wait on the lock
        return Image.new("RGB", (columns * 8, rows * 8), "grey")

    monkeypatch.setattr(gallery, "sample_grid", slow_grid)
    config = SynthConfig(**TINY).model_dump()
    with ThreadPoolExecutor(2) as pool:
        pages = list(pool.map(lambda _: gallery_jpeg(config, "f" * 64), range(2)))
    assert len(rendered) == 1 and pages[0] == pages[1]


def test_write_checks_of_one_folder_from_many_threads_do_not_collide(tmp_path):
    folder = tmp_path / "shared"

    def check_repeatedly(_):
        for _ in range(300):
            check_writable(folder)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check_repeatedly, range(8)))
    assert list(folder.iterdir()) == []
