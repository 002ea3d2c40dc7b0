"""Landmarks the datasets give: landmark lists in the JAA-Net format (49 and 66 points) and the five points they
derive, the one-line errors of bad lists, and `prepare` aligning with the given points where a list has them and
detecting only the other frames."""

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data import faces
from aunce_bench.data.faces import detect
from aunce_bench.data.index import ALIGNMENT_GALLERY, read_marker
from aunce_bench.data.landmark_lists import read_landmark_list
from aunce_bench.data.landmarks import TEMPLATE, five_from_68, normalised_error
from aunce_bench.data.prepare import prepare
from aunce_bench.data.synth.face import neutral_landmarks
from aunce_bench.data.synth.generate import identity_for
from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, render_face
from aunce_bench.errors import UserError
from rawdata import (IBUG_LEFT_OUT, blob_centres, dot_detector, dot_face, face_points, ibug68, landmark_line,
                     write_bp4d, write_disfa, write_fera17, write_image)

runner = CliRunner()


def decoded(item):
    return cv2.cvtColor(np.asarray(item["image"]), cv2.COLOR_RGB2BGR)


def written(data_root):
    """What a prepare left under the data root, besides the lock files of its writers."""
    return sorted(p.name for p in data_root.iterdir() if p.suffix != ".lock") if data_root.exists() else []


def on_template(crop):
    """Whether the five dots of an aligned crop lie on the template, within 1.5 px."""
    found = blob_centres(crop)
    return len(found) == 5 and all(np.linalg.norm(found - point, axis=1).min() < 1.5 for point in TEMPLATE)


@pytest.mark.parametrize("count", [49, 66, 68])
def test_a_list_line_gives_the_five_points_of_its_scheme_in_zero_based_pixels(tmp_path, count):
    five = face_points(3)
    path = tmp_path / "land.txt"
    path.write_text("\n".join([landmark_line(ibug68(five, seed=1), count), " ".join(["nan"] * 2 * count), "",
                               landmark_line(ibug68(five + 7, seed=2), count)]) + "\n")
    given, points = read_landmark_list(path)
    assert points == count and len(given) == 4 and given[1] is None and given[2] is None
    assert np.allclose(given[0].points, five, atol=1e-3) and np.allclose(given[3].points, five + 7, atol=1e-3)
    kept = np.delete(ibug68(five, seed=1), IBUG_LEFT_OUT[count], axis=0)  # the box holds every given point
    assert np.allclose(given[0].box, (*kept.min(axis=0), *kept.max(axis=0)), atol=1e-3)
    assert given[0].where == f"{path}:1"


def test_points_derived_from_49_and_66_point_lists_are_mtcnns_five_on_a_rendered_face(tmp_path):
    """The IntraFace (BP4D) and DISFA schemes give the points MTCNN gives, in its order: on a SynthAU face with
    its true 68 landmarks, each derived point is nearest to MTCNN's point of the same name."""
    identity = identity_for(SynthConfig(profile="bp4d").resolved(), 4)
    rendered = render_face(identity, neutral_landmarks(identity), np.zeros(len(RENDERED_AUS)), Pose(),
                           PROFILES["bp4d"].style, 256, np.random.default_rng(4))
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[100:356, 200:456] = cv2.cvtColor(rendered.image, cv2.COLOR_RGB2BGR)
    truth = rendered.landmarks + [200, 100]
    found = detect(frame)
    assert found is not None
    for count in (49, 66):
        path = tmp_path / f"{count}.txt"
        path.write_text(landmark_line(truth, count) + "\n")
        five = read_landmark_list(path)[0][0].points
        assert np.allclose(five, five_from_68(truth), atol=1e-3)
        distances = np.linalg.norm(five[:, None] - found.points[None], axis=2)
        assert (distances.argmin(axis=1) == np.arange(5)).all(), distances
        assert normalised_error(five, found.points) < 0.2
        assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left first, as MTCNN's


def bp4d_with_dot_faces(raw, tasks=2, frames=3):
    """A BP4D tree of dot faces (lossless frames) and the five true points of each row of its image list."""
    write_bp4d(raw, ["F001"], tasks=tasks, frames=frames, ext=".png", image=dot_face)
    return [face_points(t * 100 + r) for t in range(1, tasks + 1) for r in range(frames)]


def test_prepare_aligns_listed_frames_with_their_points_and_detects_only_the_others(tmp_path, monkeypatch):
    raw = tmp_path / "BP4D"
    truths = bp4d_with_dot_faces(raw)
    seen = []
    monkeypatch.setattr(faces, "detect", lambda image: seen.append(1) or dot_detector(image))
    lines = [landmark_line(ibug68(five, seed=i), 49) if i in (0, 2, 3) else "" for i, five in enumerate(truths)]
    lines[1] = " ".join(["nan"] * 98)
    (tmp_path / "land.txt").write_text("\n".join(lines) + "\n")
    given = ["--landmarks", str(tmp_path / "land.txt")]
    command = ["prepare", "bp4d", "--root", str(raw), "--data-root", str(tmp_path / "data"), "--workers", "1"]
    result = runner.invoke(app, [*command, *given])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "faces: 3 aligned with given landmarks, 3 detected, 0 aligned as the previous frame, 0 centre crops" in output
    assert f"given landmarks: {(tmp_path / 'land.txt').resolve()} (49 points per line)" in output
    assert len(seen) == 3  # MTCNN never ran on a frame with given points
    folder = tmp_path / "data" / "bp4d"
    assert cv2.imread(str(folder / ALIGNMENT_GALLERY)) is not None
    with_list = prepare("bp4d", raw, data_root=tmp_path / "data", landmarks=tmp_path / "land.txt").index  # reused
    metadata = with_list.metadata
    assert metadata["faces"] == {"given": 3, "detected": 3, "previous_box": 0, "centre_crop": 0}
    assert metadata["prepare_version"] == 3 and len(metadata["landmark_list_sha256"]) == 64
    assert read_marker(folder)["rebuild"].endswith(f"--landmarks {(tmp_path / 'land.txt').resolve()} --force")
    scores, points = np.asarray(with_list.frames["face_score"]), with_list.landmarks()
    listed = np.array([bool(line.strip()) and "nan" not in line for line in lines])
    assert (scores[listed] == 1).all() and (scores[~listed] == np.float32(0.9)).all()
    assert np.allclose(points[listed], TEMPLATE, atol=1e-3)  # the given points land on the template exactly

    # the same frames through the detector path: the same crops, within interpolation of sub-pixel differences
    detected = prepare("bp4d", raw, data_root=tmp_path / "data", out=tmp_path / "detected", workers=1).index
    assert detected.metadata["faces"]["detected"] == 6 and detected.metadata["given_landmarks"] is None
    assert detected.metadata["fingerprint"] != metadata["fingerprint"]
    for row in range(6):
        from_list, from_detector = decoded(with_list.frames[row]), decoded(detected.frames[row])
        assert on_template(from_list) and on_template(from_detector)
        assert np.abs(from_list.astype(int) - from_detector.astype(int)).mean() < 1.0

    # a dataset prepared with a list is not reused for a request without it, nor the other way round
    with pytest.raises(UserError, match=r"bp4d was prepared with the landmark list .*land\.txt \(49 points per "
                                        r"line\); pass --force to prepare it again without landmarks"):
        prepare("bp4d", raw, data_root=tmp_path / "data")
    with pytest.raises(UserError, match=r"detected was prepared without --landmarks; pass --force to prepare it "
                                        r"again with .*land\.txt"):
        prepare("bp4d", raw, data_root=tmp_path / "data", out=tmp_path / "detected", landmarks=tmp_path / "land.txt")


def test_disfa_megraphau_and_csv_lists_follow_their_image_lists(tmp_path, monkeypatch):
    """Every frame given: no detection; each crop has its dots on the template only if its own line was used."""
    monkeypatch.setattr(faces, "detect", lambda image: pytest.fail("a frame with given landmarks was detected"))
    monkeypatch.setattr("aunce_bench.data.prepare.load_detector", lambda: pytest.fail("MTCNN loaded, all given"))
    disfa = tmp_path / "DISFA"
    write_disfa(disfa, ["SN001", "SN002"], frames=3, image=dot_face)  # image list: SN001 frames, then SN002's
    lines = [landmark_line(ibug68(face_points(s * 100 + r)), 66) for s in range(2) for r in range(3)]
    (tmp_path / "disfa.txt").write_text("\n".join(lines) + "\n")

    lists, images = tmp_path / "ME-GraphAU" / "BP4D" / "list", tmp_path / "img"
    lists.mkdir(parents=True)
    graph_lines = []
    for fold, subject in enumerate(["F001", "F002"], start=1):
        paths = [f"{subject}/T1/{frame}.png" for frame in (2441, 2440)]  # out of frame order in the list
        for seed, relative in enumerate(paths, start=10 * fold):
            write_image(images / relative, dot_face(seed))
            graph_lines.append(landmark_line(ibug68(face_points(seed)), 49))
        (lists / f"BP4D_test_img_path_fold{fold}.txt").write_text("\n".join(paths) + "\n")
        (lists / f"BP4D_test_label_fold{fold}.txt").write_text("1 0 1 0 1 0 1 0 1 0 1 0\n" * 2)
    (tmp_path / "graph.txt").write_text("\n".join(graph_lines) + "\n")

    rows = ["image,subject,frame,AU1"] + [f"f{i}.png,s1,{5 - i},{i % 2}" for i in range(4)]  # frames reversed
    for i in range(4):
        write_image(tmp_path / "gft" / f"f{i}.png", dot_face(40 + i))
    (tmp_path / "gft" / "gft.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "gft.txt").write_text("\n".join(landmark_line(ibug68(face_points(40 + i)), 68) for i in range(4)))

    for format_name, root, listed, frames in (("disfa", disfa, "disfa.txt", 6),
                                              ("megraphau_lists", lists.parent, "graph.txt", 4),
                                              ("csv", tmp_path / "gft" / "gft.csv", "gft.txt", 4)):
        index = prepare(format_name, root, images=images if format_name == "megraphau_lists" else None,
                        data_root=tmp_path / "data", landmarks=tmp_path / listed, workers=1).index
        assert index.metadata["faces"] == {"given": frames, "detected": 0, "previous_box": 0, "centre_crop": 0}
        assert all(on_template(decoded(item)) for item in index.frames), format_name


def bad_corpus():
    """(name, edit of the 3 lines of a good list for 3 frames, message)."""
    good = [landmark_line(ibug68(face_points(100 + r), seed=r), 49) for r in range(3)]
    return [
        ("too few lines", good[:2], r"land\.txt:3: 2 lines for 3 images; a landmark list has one line per image of "
                                    r"bp4d's image list, in its order: every data row of the occurrence files"),
        ("too many lines", [*good, good[0]], r"land\.txt:4: 4 lines for 3 images"),
        ("odd count", [good[0], good[1] + " 7", good[2]], r"land\.txt:2: 99 numbers: an odd count"),
        ("unknown scheme", [" ".join(["50"] * 10), *good[1:]],
         r"land\.txt:1: 10 numbers \(5 points\); a line holds 49 \(BP4D's IntraFace points, 98 numbers\), 66 "
         r"\(DISFA's, 132 numbers\) or 68 \(iBUG, 136 numbers\) points"),
        ("two schemes", [good[0], landmark_line(ibug68(face_points(101)), 66), good[2]],
         r"land\.txt:2: 66 points where line 1 has 49"),
        ("not a number", [good[0], good[1].replace(" ", " 12,5 ", 1).rsplit(" ", 1)[0], good[2]],
         r"land\.txt:2: '12,5' is not a number"),
        ("partly missing", [*good[:2], good[2].rsplit(" ", 2)[0] + " nan nan"],
         r"land\.txt:3: 1 of 49 points are missing; give every point of a frame, or none"),
        ("degenerate", [good[0], " ".join(["60"] * 98), good[2]], r"land\.txt:2: the two eye centres coincide"),
        ("outside the image", [good[0], " ".join(str(float(v) + 300) for v in good[1].split()), good[2]],
         r"land\.txt:2: landmarks outside the 400x300 px image \(x .* in 0-based pixels\); are they this image's, "
         r"x before y, in the order of the image list\?"),
    ]


@pytest.mark.parametrize(("lines", "message"), [case[1:] for case in bad_corpus()],
                         ids=[case[0] for case in bad_corpus()])
def test_a_bad_landmark_list_is_one_line_naming_file_and_line_and_nothing_is_written(tmp_path, lines, message):
    raw = tmp_path / "BP4D"
    bp4d_with_dot_faces(raw, tasks=1)
    (tmp_path / "land.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        prepare("bp4d", raw, data_root=tmp_path / "data", landmarks=tmp_path / "land.txt", workers=1)
    assert written(tmp_path / "data") == []


def test_a_landmark_list_outside_its_images_fails_in_a_worker_process_as_one_line(tmp_path):
    raw = tmp_path / "BP4D"
    truths = bp4d_with_dot_faces(raw, tasks=2)
    lines = [landmark_line(ibug68(five), 49) for five in truths]
    lines[4] = landmark_line(ibug68(truths[4]) * [1, 3], 49)  # y beyond the frame's 300 px
    (tmp_path / "land.txt").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw), "--data-root", str(tmp_path / "data"),
                                 "--workers", "2", "--landmarks", str(tmp_path / "land.txt")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"error: {tmp_path / 'land.txt'}:5: landmarks outside the 400x300 px image" in result.stderr
    assert written(tmp_path / "data") == []  # no work folder left either


def test_landmark_lists_are_refused_where_they_cannot_apply(tmp_path):
    raw = tmp_path / "BP4D"
    bp4d_with_dot_faces(raw, tasks=1)
    with pytest.raises(UserError, match=r"--landmarks .*nowhere\.txt: no such file"):
        prepare("bp4d", raw, data_root=tmp_path / "data", landmarks=tmp_path / "nowhere.txt")
    (tmp_path / "land.txt").write_text("")
    with pytest.raises(UserError, match=r"--landmarks aligns the faces with the given points; it cannot go with "
                                        r"--no-align"):
        prepare("bp4d", raw, data_root=tmp_path / "data", landmarks=tmp_path / "land.txt", align=False)
    write_fera17(tmp_path / "FERA17", rows=2)
    with pytest.raises(UserError, match=r"this format has no image list for the lines to follow; landmark lists "
                                        r"work with bp4d, bp4d_plus, disfa, megraphau_lists and csv"):
        prepare("fera17", tmp_path / "FERA17", data_root=tmp_path / "data", landmarks=tmp_path / "land.txt")
    csv = tmp_path / "gft.csv"
    write_image(tmp_path / "f0.png", dot_face(0))
    csv.write_text("image,subject,AU1," + ",".join(f"{p}_{a}" for p in ("eye_left", "eye_right", "nose_tip",
                                                                       "mouth_left", "mouth_right") for a in "xy")
                   + "\nf0.png,s1,1" + "," * 10 + "\n")
    with pytest.raises(UserError, match=r"gft\.csv \(landmark columns\) already gives landmarks; use one or the other"):
        prepare("csv", csv, data_root=tmp_path / "data", landmarks=tmp_path / "land.txt")
