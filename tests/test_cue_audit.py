"""The cue audit measures what the renderer does: checked against the face model's own displacements."""

import numpy as np
import pytest

from aunce_bench.data.synth.cue_audit import AUDIT_INTENSITY, audit, moved_landmarks
from aunce_bench.data.synth.face import AU_DISPLACEMENTS
from aunce_bench.data.synth.profiles import PROFILES


@pytest.fixture(scope="module")
def rows():
    return {row.au: row for row in audit("bp4d", 64, identities=4, other="disfa", aus=(1, 12, 23))}


def test_geometry_is_the_largest_landmark_move_in_pixels(rows):
    # AU1 and AU12 move fixed displacements: at intensity 3, 3/5 of the field, scaled by the face's pixels per unit
    unit_px = PROFILES["bp4d"].style.face_scale * 64
    for au in (1, 12):
        field = AU_DISPLACEMENTS[au][moved_landmarks(au)][:, :2]  # frontal: x and y project straight
        expected = AUDIT_INTENSITY / 5 * np.linalg.norm(field, axis=1).max() * unit_px
        assert rows[au].geometry_px == pytest.approx(expected, rel=0.08)  # identities' width and jitter


def test_the_parts_and_the_spread_are_consistent(rows):
    for row in rows.values():
        assert row.change > 0 and row.identity_spread > 0
        assert row.cue_to_spread == pytest.approx(row.change / row.identity_spread)
        assert 0 <= row.brightness_share <= 1
        # the whole cue is at most the two parts added (their changes overlap where both act)
        assert row.change <= row.geometry_change + row.appearance_change + 1e-6
    # AU23 narrows the lips: mostly a change of shape, the bulges add little
    assert rows[23].geometry_change > 2 * rows[23].appearance_change


def test_profiles_framed_alike_offset_less_than_the_brow_raise(rows):
    assert rows[1].profile_offset_px < 0.25 * rows[1].geometry_px
