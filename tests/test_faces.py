"""Face preprocessing: the crop geometry levels the eyes, frames without a face fall back to the previous box
or a centre crop (and are counted), and the Haar detector path runs on rendered faces."""

import cv2
import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data import faces
from aunce_bench.data.faces import Box, _eye_angle, cascades_available, crop, detect, process_unit
from aunce_bench.data.formats.common import Unit
from aunce_bench.data.prepare import prepare
from aunce_bench.data.synth.generate import SynthConfig, generate
from aunce_bench.errors import UserError
from rawdata import noise_image, write_bp4d, write_image

runner = CliRunner()
needs_cascades = pytest.mark.skipif(not cascades_available(), reason="this OpenCV ships no Haar cascades (OpenCV 5)")


def bright_centroids(image):
    """Centroids (x, y) of the left and right bright blob of an image."""
    grey = image if image.ndim == 2 else image.max(axis=2)
    ys, xs = np.nonzero(grey > 128)
    left = xs < image.shape[1] / 2
    return (xs[left].mean(), ys[left].mean()), (xs[~left].mean(), ys[~left].mean())


def test_crop_rotates_a_tilted_eye_line_level():
    image = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(image, (150, 120), 6, (255, 255, 255), -1)  # left eye
    cv2.circle(image, (250, 150), 6, (255, 255, 255), -1)  # right eye, lower: the head is tilted
    eyes = np.array([[140, 110, 20, 20], [240, 140, 20, 20]])
    angle = _eye_angle(eyes, face_width=200)
    assert angle == pytest.approx(np.degrees(np.arctan2(30, 100)), abs=0.01)
    (lx, ly), (rx, ry) = bright_centroids(crop(image, Box(200, 135, 280, angle), 256))
    assert abs(ly - ry) < 1.0 and rx - lx > 80  # level, still apart
    (_, ly0), (_, ry0) = bright_centroids(crop(image, Box(200, 135, 280, 0.0), 256))
    assert ry0 - ly0 > 20  # without the rotation the line stays tilted
    assert _eye_angle(eyes[:1], 200) == 0.0 and _eye_angle(np.array([[100, 100, 20, 20], [110, 160, 20, 20]]), 200) == 0.0


def smooth_image(seed):
    """A smooth random colour image (survives JPEG nearly intact)."""
    blurred = cv2.GaussianBlur(noise_image(seed, 96), (0, 0), 4)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def test_frames_without_a_face_take_the_previous_box_else_a_centre_crop(tmp_path, monkeypatch):
    frames = [smooth_image(i) for i in range(5)]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"{i}.png")
        write_image(paths[-1], frame)
    boxes = {1: Box(40, 40, 40, 10.0), 2: Box(50, 45, 44, 0.0)}
    monkeypatch.setattr(faces, "detect", lambda image: next(
        (box for i, box in boxes.items() if (image == frames[i]).all()), None))
    unit = Unit("S1", "T1")
    for i, path in enumerate(paths):
        unit.add(i, [1], path)
    crops, counts = process_unit(unit, align=True, size=64)
    assert counts == {"centre_crop": 1, "detected": 2, "eyes_levelled": 1, "previous_box": 2}
    decoded = [cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR) for c in crops]
    expected = [crop(frames[0], Box(48, 48, 96), 64), crop(frames[1], boxes[1], 64), crop(frames[2], boxes[2], 64),
                crop(frames[3], boxes[2], 64), crop(frames[4], boxes[2], 64)]
    for got, want in zip(decoded, expected):  # JPEG round trip: close, not equal
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 3
    centre = crop(frames[3], Box(48, 48, 96), 64)
    assert np.abs(decoded[3].astype(int) - centre.astype(int)).mean() > 10  # the comparison can tell boxes apart


def test_prepare_counts_fallback_frames_in_the_summary(tmp_path, monkeypatch):
    raw = tmp_path / "BP4D"
    # odd image seeds are noise (a "face" for the fake detector), even ones flat grey (no face)
    write_bp4d(raw, ["F001"], tasks=2, frames=3,
               image=lambda seed: noise_image(seed, 96) if seed % 2 else np.full((96, 96, 3), 200, np.uint8))
    monkeypatch.setattr("aunce_bench.data.prepare.cascades", lambda: None)
    monkeypatch.setattr(faces, "detect", lambda image: Box(48, 48, 60) if image.std() > 10 else None)
    result = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw), "--data-root", str(tmp_path / "data"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    # each task: row 0 no face (centre crop: the previous box never crosses sequences), row 1 face, row 2 none
    counts = prepare("bp4d", raw, data_root=tmp_path / "data").index.metadata["faces"]  # already prepared: reused
    assert counts == {"detected": 2, "eyes_levelled": 0, "previous_box": 2, "centre_crop": 2}
    assert "faces: 2 detected (0 levelled on the eyes), 2 from the previous frame's box, 2 centre crops" in \
        " ".join(result.output.split())


def test_alignment_without_haar_cascades_is_a_one_line_error(tmp_path, monkeypatch):
    raw = tmp_path / "BP4D"
    write_bp4d(raw, ["F001"], tasks=1, frames=2)
    monkeypatch.setattr(faces, "cascades_available", lambda: False)
    faces.cascades.cache_clear()
    try:
        with pytest.raises(UserError, match=r"face alignment needs OpenCV's Haar cascades.*or pass --no-align"):
            prepare("bp4d", raw, data_root=tmp_path / "data", workers=1)
    finally:
        faces.cascades.cache_clear()
    assert not (tmp_path / "data" / "bp4d").exists()


@pytest.fixture(scope="module")
def rendered_faces():
    """SynthAU faces (128 px) as BGR arrays."""
    index = generate(SynthConfig(profile="bp4d", subjects=2, sequences_per_subject=1, frames_per_sequence=30,
                                 frame_stride=10, image_size=128), workers=1)
    raw = index.frames.cast_column("image", datasets.Image(decode=False))["image"]
    return [cv2.imdecode(np.frombuffer(item["bytes"], np.uint8), cv2.IMREAD_COLOR) for item in raw]


def in_frame(face):
    canvas = np.full((240, 320, 3), 30, np.uint8)
    canvas[60:188, 100:228] = face
    return canvas


@needs_cascades
def test_haar_detector_finds_rendered_faces_and_nothing_in_noise(rendered_faces):
    assert detect(noise_image(0, 240)) is None
    boxes = [detect(in_frame(face)) for face in rendered_faces]
    found = [box for box in boxes if box is not None]
    assert len(found) >= len(boxes) // 2
    for box in found:  # the face occupies x 100-228, y 60-188 of the frame
        assert 130 < box.cx < 200 and 90 < box.cy < 160 and 100 < box.side < 260 and abs(box.angle) < 30


@needs_cascades
def test_prepare_aligns_detected_faces_and_counts_undetected_frames(tmp_path, rendered_faces):
    raw = tmp_path / "BP4D"

    def image(seed):  # row 1 of every sequence shows no face
        row, subject = seed % 100, seed // 1000
        return np.full((240, 320, 3), 30, np.uint8) if row == 1 else in_frame(rendered_faces[subject * 3 + row])

    write_bp4d(raw, ["F001", "F002"], tasks=1, frames=3, image=image)
    index = prepare("bp4d", raw, data_root=tmp_path / "data", workers=2).index
    counts = index.metadata["faces"]
    assert len(index) == 6 and index.metadata["align"] is True
    assert 2 <= counts["detected"] <= 4  # the two empty frames are never detected
    assert counts["previous_box"] + counts["centre_crop"] == 6 - counts["detected"]
    assert np.asarray(index.frames[0]["image"]).shape == (256, 256, 3)
