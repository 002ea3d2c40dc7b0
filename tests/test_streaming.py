"""Streamed frames: decoded per batch by worker processes, they give the same batches and the same results as
frames decoded into memory; which one a run used is recorded, never part of its id."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data.loaders import DataLoading, FrameSet, InMemoryImages, ShuffledBatches, StreamedImages, load_frames
from aunce_bench.data.synth.generate import load_or_generate
from aunce_bench.data.configs import SynthConfig
from aunce_bench.results import ResultStore

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    config = SynthConfig(profile="bp4d", subjects=4, sequences_per_subject=1, frames_per_sequence=12, frame_stride=1,
                         image_size=40)
    _, folder, _ = load_or_generate(config, out=tmp_path_factory.mktemp("synth") / "index")
    return folder


def _frames(folder, mode: str, workers: int = 1) -> FrameSet:
    subjects = ["B001", "B002", "B003"]
    return load_frames(folder, subjects, [1, 12], image_size=32, loading=DataLoading(mode, workers=workers))


def test_streamed_batches_equal_in_memory_batches_epoch_after_epoch(small_index):
    memory, streamed = _frames(small_index, "memory"), _frames(small_index, "streaming")
    assert isinstance(memory.images, InMemoryImages) and isinstance(streamed.images, StreamedImages)
    assert len(memory) == len(streamed) == 36
    epochs = {}
    for name, frames in (("memory", memory), ("streamed", streamed)):
        batches = frames.batches(ShuffledBatches(len(frames), 8, torch.Generator().manual_seed(3)), CPU)
        epochs[name] = [[(index.clone(), images.clone()) for index, images in batches] for _ in range(2)]
    for memory_epoch, streamed_epoch in zip(epochs["memory"], epochs["streamed"]):
        assert len(memory_epoch) == len(streamed_epoch) == 4  # 36 frames: the incomplete fifth batch is dropped
        for (memory_index, memory_images), (streamed_index, streamed_images) in zip(memory_epoch, streamed_epoch):
            assert torch.equal(memory_index, streamed_index)
            assert streamed_images.dtype == torch.uint8 and streamed_images.shape == (8, 3, 32, 32)
            assert torch.equal(memory_images, streamed_images)
    first, second = (torch.cat([index for index, _ in epoch]) for epoch in epochs["memory"])
    assert not torch.equal(first, second)  # a new order each epoch


def test_subsets_share_their_source_and_read_the_right_frames(small_index):
    frames = _frames(small_index, "memory")
    rows = np.array([5, 0, 17])
    subset = frames.subset(rows)
    assert subset.images is frames.images  # an index list, not a copy of the images
    assert torch.equal(subset.read(np.arange(3)), frames.read(rows))
    streamed = _frames(small_index, "streaming").subset(rows)
    assert torch.equal(streamed.read(np.arange(3)), frames.read(rows))


def test_auto_loading_streams_what_exceeds_the_memory_budget(small_index):
    decoded = 36 * 3 * 32 * 32
    assert not DataLoading("auto", memory_budget_gib=decoded / 2**30).streams(decoded)
    assert DataLoading("auto", memory_budget_gib=(decoded - 1) / 2**30).streams(decoded)
    assert DataLoading("streaming").streams(0) and not DataLoading("memory").streams(10**15)
    assert isinstance(_frames(small_index, "auto").images, InMemoryImages)  # a few kB: well within 30% of memory
    tight = load_frames(small_index, ["B001"], [1], loading=DataLoading("auto", memory_budget_gib=0.0))
    assert isinstance(tight.images, StreamedImages)


def test_a_streamed_run_gives_the_in_memory_predictions_and_records_how_it_read(tiny_specs, tmp_path):
    method = tiny_specs / "tiny_one_epoch_aunce.yaml"
    args = ["run", "--method", str(method), "--protocol", str(tiny_specs / "tiny_easy.yaml"), "--quick", "--folds", "1"]
    stored = {}
    for mode, extra in (("memory", []), ("streaming", ["--memory-budget", "0", "--data-workers", "1"])):
        db = tmp_path / f"{mode}.sqlite"
        result = runner.invoke(app, [*args, "--db", str(db), "--data-loading", "auto" if extra else mode, *extra])
        assert result.exit_code == 0, result.output
        store = ResultStore(db)
        (run,) = store.runs()
        stored[mode] = run, store.predictions(run["run_id"])
    (memory_run, memory_predictions), (streamed_run, streamed_predictions) = stored["memory"], stored["streaming"]
    assert memory_run["run_id"] == streamed_run["run_id"]
    loading = streamed_run["provenance"]["data_loading"]
    assert loading["budget_gib"] == 0.0
    assert loading["train"]["mode"] == loading["test"]["mode"] == "streaming" and loading["train"]["workers"] == 1
    assert memory_run["provenance"]["data_loading"]["train"]["mode"] == "memory"
    assert memory_predictions.column_names == streamed_predictions.column_names
    for column in memory_predictions.column_names:
        assert memory_predictions.column(column).equals(streamed_predictions.column(column)), column
    assert memory_run["mean_f1"] == streamed_run["mean_f1"]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--data-loading", "disk", "invalid --data-loading: 'disk'; choose auto, memory, streaming"),
    ("--memory-budget", "-1", "invalid --memory-budget: -1.0; give GiB, 0 or more"),
    ("--data-workers", "-2", "invalid --data-workers: -2; give 0 or more"),
])
def test_bad_data_loading_options_are_refused_with_one_line(option, value, message, tmp_path):
    result = runner.invoke(app, ["run", "--method", "wce", "--protocol", "synth_bp4d_3fold", option, value,
                                 "--db", str(tmp_path / "r.sqlite")])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
