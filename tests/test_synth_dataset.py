"""SynthAU FrameIndex generation: schema, determinism, caching, temporary Arrow caches, pose bins, gallery."""

import importlib
import tempfile

import datasets
import numpy as np
import pytest
from PIL import Image

from aunce_bench.data.index import FrameIndex, MARKER_FILE
from aunce_bench.data.landmarks import five_from_68
from aunce_bench.data.loaders import DataLoading, load_frames
from aunce_bench.data.synth.generate import POSE_BINS, generate, label_process, load_or_generate
from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.errors import UserError

SMALL = dict(subjects=3, sequences_per_subject=2, frames_per_sequence=60, frame_stride=15, image_size=48)


def images_and_labels(index: FrameIndex):
    return [row["bytes"] for row in index.frames.cast_column("image", index.frames.features["image"].__class__(decode=False))["image"]], index.label_matrix()


def test_schema_and_labels_follow_the_label_process():
    config = SynthConfig(profile="disfa", **SMALL)
    index = generate(config, workers=1)
    assert len(index) == 3 * 2 * 4  # frames 0, 15, 30, 45 of each sequence
    assert index.aus == PROFILES["disfa"].labels.labelled_aus and index.intensity_aus == RENDERED_AUS
    row = index.frames[5]
    assert row["image"].size == (48, 48) and row["dataset"] == "synth_disfa" and row["pose_bin"] == "frontal"
    assert row["subject"] == "D001" and row["sequence"] == "T2" and row["frame"] == 15
    # Labels are the thresholded true intensities of the label process at those frames.
    truth = label_process("disfa").sequence_intensities(0, 0, 1, 60)[15]
    assert row["intensities"] == pytest.approx(truth.tolist(), abs=1e-6)
    labelled = [RENDERED_AUS.index(au) for au in index.aus]
    assert row["labels"] == (truth[labelled] >= 2.0).astype(int).tolist()
    assert abs(row["yaw"]) < 30 and abs(row["pitch"]) < 30


def test_occurrence_threshold_changes_labels():
    low = generate(SynthConfig(occurrence_threshold=1.0, **SMALL), workers=1).label_matrix()
    high = generate(SynthConfig(occurrence_threshold=3.0, **SMALL), workers=1).label_matrix()
    assert (low >= high).all() and low.sum() > high.sum()


def test_generation_is_deterministic_and_independent_of_workers():
    config = SynthConfig(**SMALL)
    images_a, labels_a = images_and_labels(generate(config, workers=1))
    images_b, labels_b = images_and_labels(generate(config, workers=2))
    assert images_a == images_b and np.array_equal(labels_a, labels_b)
    images_c, labels_c = images_and_labels(generate(SynthConfig(**{**SMALL, "seed": 1}), workers=1))
    assert images_c != images_a and not np.array_equal(labels_c, labels_a)


def test_profiles_have_distinct_subjects():
    bp4d = generate(SynthConfig(profile="bp4d", **SMALL), workers=1)
    disfa = generate(SynthConfig(profile="disfa", **SMALL), workers=1)
    assert set(bp4d.frames["subject"]).isdisjoint(disfa.frames["subject"])
    assert images_and_labels(bp4d)[0][0] != images_and_labels(disfa)[0][0]


def test_pose_bins_render_every_frame_in_every_bin():
    config = SynthConfig(pose="bins", **{**SMALL, "subjects": 1, "sequences_per_subject": 1})
    index = generate(config, workers=1)
    assert len(index) == 4 * len(POSE_BINS)
    bins = np.array(index.frames["pose_bin"])
    yaw, pitch = np.array(index.frames["yaw"]), np.array(index.frames["pitch"])
    for bin_yaw, bin_pitch in POSE_BINS:
        chosen = bins == f"yaw{bin_yaw:+d}_pitch{bin_pitch:+d}"
        assert chosen.sum() == 4
        assert np.abs(yaw[chosen] - bin_yaw).max() < 10 and np.abs(pitch[chosen] - bin_pitch).max() < 10
    # Same frames, same labels in every bin.
    labels = index.label_matrix().reshape(len(POSE_BINS), 4, -1)
    assert (labels == labels[0]).all()


def test_true_landmarks_are_stored_move_with_the_head_and_scale_with_loaded_images(tmp_path):
    config = SynthConfig(pose="bins", **{**SMALL, "subjects": 1, "sequences_per_subject": 1})
    index, folder, _ = load_or_generate(config, out=tmp_path / "synth")
    points, dense = index.landmarks(), np.asarray(index.frames["landmarks68"], np.float32).reshape(len(index), 68, 2)
    assert np.allclose(points, [five_from_68(p) for p in dense], atol=1e-4)
    assert (np.asarray(index.frames["face_score"]) == 1).all()
    assert ((points > 0) & (points < 48)).all()  # inside the 48 px images
    # turning the head moves the nose tip across the eyes' midpoint: right of it at yaw +40, left at -40
    bins = np.array(index.frames["pose_bin"])
    offset = points[:, 2, 0] - points[:, :2, 0].mean(axis=1)
    assert np.sign(offset[bins == "yaw+40_pitch+0"].mean()) == -np.sign(offset[bins == "yaw-40_pitch+0"].mean())
    assert abs(offset[bins == "yaw+40_pitch+0"].mean()) > 3 * abs(offset[bins == "yaw+0_pitch+0"].mean()) + 1
    # a run loading the images at another size gets the landmarks at that size
    frames = load_frames(folder, ["B001"], list(index.aus), image_size=24, loading=DataLoading(mode="memory"))
    assert frames.read(np.arange(1)).shape[-1] == 24
    assert np.allclose(frames.landmarks, (points + 0.5) / 2 - 0.5, atol=1e-4)
    assert np.allclose(frames.subset(np.array([3, 1])).landmarks, frames.landmarks[[3, 1]])


def test_cache_reuses_a_complete_index_and_ignores_a_partial_one(tmp_path):
    config = SynthConfig(**SMALL)
    index, folder, reused = load_or_generate(config, tmp_path / "data", workers=1)
    assert not reused and (folder / MARKER_FILE).is_file()
    again, _, reused = load_or_generate(config, tmp_path / "data", workers=1)
    assert reused and images_and_labels(again)[0] == images_and_labels(index)[0]
    with pytest.raises(UserError, match="another configuration"):
        load_or_generate(SynthConfig(**{**SMALL, "seed": 5}), tmp_path / "data", workers=1)
    # A folder without the completion marker (an interrupted write) is never loaded as complete.
    (folder / MARKER_FILE).unlink()
    with pytest.raises(UserError, match="not a complete frame index"):
        FrameIndex.load(folder)


def test_generation_leaves_no_arrow_cache_behind(tmp_path, monkeypatch):
    """The rows are written to a temporary Arrow cache beside the output folder (or in the temporary folder),
    removed once the index is saved or an error stops the writer; the user's HF datasets cache stays empty."""
    hf_cache, temporary = tmp_path / "hf", tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    config = SynthConfig(subjects=2, sequences_per_subject=1, frames_per_sequence=20, frame_stride=10, image_size=32)
    index, folder, _ = load_or_generate(config, tmp_path / "data" / "set", workers=1)
    assert len(generate(config, workers=1)) == len(index) == 4
    assert sorted(path.name for path in folder.parent.iterdir()) == ["set", "set.lock"]

    def unreadable(*args):
        raise UserError("renderer out of order")

    monkeypatch.setattr(importlib.import_module("aunce_bench.data.synth.generate"), "_render_subject", unreadable)
    with pytest.raises(UserError, match="renderer out of order"):  # itself, not wrapped by datasets
        load_or_generate(config, tmp_path / "data" / "other", workers=1)
    assert sorted(path.name for path in folder.parent.iterdir()) == ["other.lock", "set", "set.lock"]
    assert not hf_cache.exists() and not any(temporary.iterdir())


def test_content_hash_covers_the_resolved_config():
    assert SynthConfig().content_hash() == SynthConfig(subjects=41, frames_per_sequence=490).content_hash()
    assert SynthConfig().content_hash() != SynthConfig(difficulty=2.0).content_hash()


def test_gallery_png(tmp_path):
    from aunce_bench.data.synth.gallery import LEVELS, TILE, write_gallery

    path = write_gallery(SynthConfig(**SMALL), tmp_path / "gallery.png")
    with Image.open(path) as image:
        assert image.width >= len(LEVELS) * TILE and image.height > len(RENDERED_AUS) * TILE
        assert np.asarray(image).std() > 20
