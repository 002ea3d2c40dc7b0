"""SynthAU rendering: each AU acts in its own facial region, pose changes geometry, styles differ."""

import cv2
import numpy as np
import pytest

from aunce_bench.data.synth.face import AU_COLUMN, expressive_landmarks, neutral_landmarks, sample_identity
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, render_face

SIZE = 112
STYLE = PROFILES["bp4d"].style
UNIT = STYLE.face_scale * SIZE  # pixels per face unit
EYE_ROW = STYLE.eye_height * SIZE

# Rows (in face units from the eye line) where each AU's cues live, per FACS.
UPPER_FACE = (-1.1, 0.15)
EYES_AND_CHEEKS = (-0.35, 0.65)
LOWER_FACE = (0.4, 1.7)
REGION_OF_AU = {
    1: UPPER_FACE, 2: UPPER_FACE, 4: UPPER_FACE, 5: EYES_AND_CHEEKS, 6: EYES_AND_CHEEKS, 7: EYES_AND_CHEEKS,
    9: (-0.8, 1.0), 10: (0.2, 1.4), 12: LOWER_FACE, 14: LOWER_FACE, 15: LOWER_FACE, 17: LOWER_FACE,
    20: LOWER_FACE, 23: LOWER_FACE, 24: LOWER_FACE, 25: LOWER_FACE, 26: LOWER_FACE,
}


def render(identity, intensities, pose=Pose(), seed=0, style=STYLE, size=SIZE):
    landmarks = expressive_landmarks(neutral_landmarks(identity), intensities)
    return render_face(identity, landmarks, intensities, pose, style, size, np.random.default_rng(seed)).image


def plain_identity(seed: int):
    """An identity without occluders, so every cue is visible."""
    identity = sample_identity(np.random.default_rng(seed))
    return identity.__class__(**{**identity.__dict__, "glasses": False, "beard": 0.0, "hair_style": 0})


def only(au: int, level: float) -> np.ndarray:
    intensities = np.zeros(len(RENDERED_AUS), np.float32)
    intensities[AU_COLUMN[au]] = level
    return intensities


def change_mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).sum(axis=2)


@pytest.mark.parametrize("au", RENDERED_AUS)
def test_each_au_changes_pixels_only_in_its_region(au):
    for seed in (1, 2, 3):
        identity = plain_identity(seed)
        neutral, active = render(identity, only(au, 0.0)), render(identity, only(au, 4.0))
        change = change_mass(neutral, active)
        assert change.mean() > 0.1, f"AU{au} at intensity 4 barely changes the image"
        top, bottom = (int(EYE_ROW + edge * UNIT * identity.face_length) for edge in REGION_OF_AU[au])
        inside = change[max(top, 0):bottom].sum() / change.sum()
        assert inside > 0.85, f"AU{au}: only {inside:.0%} of the change lies in rows {top}..{bottom}"


def test_lip_corner_puller_change_is_around_the_mouth():
    identity = plain_identity(4)
    change = change_mass(render(identity, only(12, 0.0)), render(identity, only(12, 4.0)))
    mouth_row = EYE_ROW + 0.77 * UNIT * identity.face_length
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    near_mouth = (np.abs(rows - mouth_row) < 0.45 * UNIT) & (np.abs(cols - SIZE / 2) < 0.75 * UNIT)
    assert change[near_mouth].sum() / change.sum() > 0.8
    assert change[: int(EYE_ROW)].sum() / change.sum() < 0.02  # nothing above the eyes


def test_intensity_grows_the_change():
    identity = plain_identity(5)
    base = render(identity, only(4, 0.0))
    changes = [change_mass(base, render(identity, only(4, level))).sum() for level in (1.0, 2.5, 5.0)]
    assert changes[0] < changes[1] < changes[2]


def test_pose_bins_change_the_geometry():
    identity = plain_identity(6)
    expression = only(12, 3.0)
    frontal = render(identity, expression)
    small_turn = change_mass(frontal, render(identity, expression, Pose(yaw=2))).mean()
    for pose in (Pose(yaw=40), Pose(yaw=-40), Pose(pitch=20), Pose(yaw=20, pitch=-20)):
        assert change_mass(frontal, render(identity, expression, pose)).mean() > 4 * small_turn
    # Turning the head right moves the face's mass right of where it is when turning left.
    gray_right = cv2.cvtColor(render(identity, expression, Pose(yaw=40)), cv2.COLOR_RGB2GRAY).astype(float)
    gray_left = cv2.cvtColor(render(identity, expression, Pose(yaw=-40)), cv2.COLOR_RGB2GRAY).astype(float)
    assert not np.allclose(gray_right, gray_left[:, ::-1], atol=30)


def test_profiles_have_different_capture_styles():
    identities = [plain_identity(seed) for seed in range(8)]
    stats = {}
    for name, profile in PROFILES.items():
        images = [render(identity, only(12, 2.0), style=profile.style, seed=i) for i, identity in enumerate(identities)]
        pixels = np.stack(images).astype(np.float32)
        sharpness = np.mean([cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var() for img in images])
        stats[name] = {"blue_red": pixels[..., 2].mean() / pixels[..., 0].mean(), "sharpness": sharpness,
                       "background": pixels[:, :10, :10].mean()}
    assert stats["disfa"]["blue_red"] > stats["bp4d"]["blue_red"] + 0.1
    assert stats["bp4d"]["sharpness"] > stats["disfa"]["sharpness"]
    assert abs(stats["bp4d"]["background"] - stats["disfa"]["background"]) > 40


def test_any_requested_size_renders():
    identity = plain_identity(7)
    for size in (32, 64, 256):
        image = render(identity, only(25, 3.0), size=size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert image.std() > 10


def _red_heights(points):
    """Heights of the upper and lower red parts at the mouth's centre (outer contour to inner, face units)."""
    return points[62, 1] - points[51, 1], points[57, 1] - points[66, 1]


@pytest.mark.parametrize("au, share", [(23, 0.5), (24, 0.65)])
def test_lip_tightener_and_pressor_narrow_the_red_parts_by_a_share_of_their_own_height(au, share):
    for seed in range(3):
        neutral = neutral_landmarks(plain_identity(seed))
        upper, lower = _red_heights(neutral)
        for level in (2.0, 5.0):
            narrowed = expressive_landmarks(neutral, only(au, level))
            assert _red_heights(narrowed) == pytest.approx(
                (upper * (1 - share * level / 5), lower * (1 - share * level / 5)), rel=1e-6)
    both = expressive_landmarks(neutral, only(23, 5.0) + only(24, 5.0))
    assert _red_heights(both) == pytest.approx((upper * 0.15, lower * 0.15), rel=1e-6)  # at most 85 % narrower


def test_lip_corner_depressor_pulls_the_corners_down_without_parting_the_lips():
    neutral = neutral_landmarks(plain_identity(2))
    moved = expressive_landmarks(neutral, only(15, 5.0))
    assert moved[[48, 54], 1] - neutral[[48, 54], 1] == pytest.approx([0.10, 0.10])
    inner_gap = moved[[67, 66, 65], 1] - moved[[61, 62, 63], 1]
    assert np.all(inner_gap >= 0) and inner_gap.max() < 1e-9  # closed lips stay closed


def test_profiles_frame_faces_alike():
    """Both profiles place a face's landmarks where `prepare` would: the same place in the crop, up to the
    alignment jitter, so a cue's position means the same in both."""
    identity = plain_identity(4)
    positions = {}
    for name, profile in PROFILES.items():
        landmarks = expressive_landmarks(neutral_landmarks(identity), only(1, 0.0))
        faces = [render_face(identity, landmarks, only(1, 0.0), Pose(), profile.style, 64,
                             np.random.default_rng(seed)).landmarks for seed in range(40)]
        positions[name] = np.mean(faces, axis=0)
    brows = slice(17, 27)
    assert np.abs(positions["bp4d"][brows] - positions["disfa"][brows]).max() < 0.6  # pixels at 64 px
