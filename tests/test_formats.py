"""Raw-format importers: small trees in each format of docs/PROTOCOLS.md#formats, imported with `prepare`
and checked frame by frame; malformed annotations fail with one line naming the file and line."""

import numpy as np
import pytest
from typer.testing import CliRunner

from aunce_bench.cli import app
from aunce_bench.data import faces
from aunce_bench.data.formats.generic_csv import LANDMARK_COLUMNS
from aunce_bench.data.landmarks import TEMPLATE
from aunce_bench.data.loaders import load_frames
from aunce_bench.data.prepare import prepare
from aunce_bench.errors import UserError
from rawdata import (BP4D_AUS, BP4D_PLUS_HEADER, DISFA_AUS, blob_centres, disfa_intensity, dot_detector, dot_face,
                     face_points, noise_image, write_affwild2, write_bp4d, write_disfa, write_fera17, write_image)

runner = CliRunner()


def prepared(format_name, root, tmp_path, **options):
    options = {"align": False, "workers": 1, **options}
    return prepare(format_name, root, data_root=tmp_path / "data", **options).index


def rows_of(index):
    labels = index.label_matrix()
    return [{"subject": s, "sequence": q, "frame": f, "labels": labels[i].tolist()}
            for i, (s, q, f) in enumerate(zip(index.frames["subject"], index.frames["sequence"], index.frames["frame"]))]


def test_bp4d_labels_frame_by_frame_with_missing_codes_and_padded_names(tmp_path):
    raw = tmp_path / "BP4D"
    expected = write_bp4d(raw, ["F001", "M002"], tasks=2, frames=4, pad=True, ext=".png")
    index = prepared("bp4d", raw, tmp_path)
    assert index.name == "bp4d" and index.aus == BP4D_AUS
    assert rows_of(index) == expected  # 9 became -1, never 0
    assert (index.label_matrix() == -1).any()
    assert sorted(set(index.frames["subject"])) == ["F001", "M002"] and set(index.frames["pose_bin"]) == {"frontal"}
    assert index.metadata["subjects"] == ["F001", "M002"] and index.metadata["sequences"] == 4
    image = np.asarray(index.frames[0]["image"])
    assert image.shape == (256, 256, 3)  # 64 px frames resized to the prepared size


def test_bp4d_plus_reads_columns_from_the_header(tmp_path):
    raw = tmp_path / "BP4D+"
    expected = write_bp4d(raw, ["F001", "M058"], tasks=1, frames=5, header=BP4D_PLUS_HEADER)
    assert [BP4D_PLUS_HEADER.index(au) for au in BP4D_AUS] == [1, 2, 3, 5, 6, 8, 10, 12, 13, 15, 20, 21]
    index = prepared("bp4d_plus", raw, tmp_path)
    assert index.name == "bp4d_plus" and rows_of(index) == expected


def test_disfa_threshold_parameter_changes_labels_and_intensities_are_kept(tmp_path):
    raw = tmp_path / "DISFA"
    write_disfa(raw, ["SN001", "SN002"], frames=6)
    at2 = prepared("disfa", raw, tmp_path, out=tmp_path / "t2")
    at1 = prepared("disfa", raw, tmp_path, out=tmp_path / "t1", threshold=1)
    assert len(at2) == 12 and at2.aus == DISFA_AUS and at2.intensity_aus == DISFA_AUS
    levels = np.array([[disfa_intensity(s, r, au) for au in DISFA_AUS] for s in range(2) for r in range(6)])
    assert (at2.intensity_matrix() == levels).all()
    assert (at2.label_matrix() == (levels >= 2)).all() and (at1.label_matrix() == (levels >= 1)).all()
    assert (at1.label_matrix() != at2.label_matrix()).any()
    assert at2.frames["frame"][:6] == [1, 2, 3, 4, 5, 6]  # 1-based frames, images 0.png..5.png
    # a protocol's occurrence threshold re-derives labels from the stored intensities
    relabelled = load_frames(tmp_path / "t2", ["SN001", "SN002"], [1, 12], occurrence_threshold=1.0)
    assert (relabelled.labels == (levels[:, [0, 6]] >= 1)).all()


def test_affwild2_partitions_missing_codes_crops_and_videos(tmp_path):
    raw = tmp_path / "Aff-Wild2"
    rows = write_affwild2(raw)
    result = prepare("affwild2", raw, data_root=tmp_path / "data", align=False, workers=1)
    index, metadata = result.index, result.index.metadata
    assert metadata["partitions"] == {"train": ["vid1"], "validation": ["vid2_left"]}
    vid1 = [i for i, s in enumerate(index.frames["subject"]) if s == "vid1"]
    # data line 3 is all -1 (dropped), line 4 has no cropped image (skipped): lines 1, 2, 5 remain
    assert [index.frames["frame"][i] for i in vid1] == [1, 2, 5]
    assert index.label_matrix()[vid1].tolist() == [rows["train"][0], rows["train"][1], rows["train"][4]]
    vid2 = [i for i, s in enumerate(index.frames["subject"]) if s == "vid2_left"]
    assert [index.frames["frame"][i] for i in vid2] == [1, 2, 3]  # the video has 3 of the 4 annotated frames
    assert metadata["skipped"] == {"unreadable": 1, "without_image": 1, "unlabelled": 1}


def test_fera17_views_become_pose_bins_and_partitions(tmp_path):
    raw = tmp_path / "FERA17"
    labels = write_fera17(raw, rows=4)
    index = prepared("fera17", raw, tmp_path)
    keys = list(zip(index.frames["subject"], index.frames["pose_bin"]))
    assert keys.count(("TR_F001", "view1")) == 4 and keys.count(("TR_F001", "view6")) == 4
    assert keys.count(("VA_F001", "view6")) == 3  # its video is one frame short
    assert index.metadata["partitions"] == {"train": ["TR_F001"], "validation": ["VA_F001"]}
    assert index.metadata["pose_bins"] == ["view1", "view6"]
    first_view = [i for i, key in enumerate(keys) if key == ("TR_F001", "view1")]
    assert index.label_matrix()[first_view].tolist() == labels and labels[1][2] == -1
    assert index.aus == (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)


def test_megraphau_lists_prepare_the_dataset_they_name(tmp_path):
    raw, images = tmp_path / "ME-GraphAU" / "BP4D", tmp_path / "img"
    expected = {}
    for fold, subject in enumerate(["F001", "F002", "M001"], start=1):
        paths, labels = [], []
        for frame in (2441, 2440):  # out of order in the list: imported in frame order
            relative = f"{subject}/T1/{frame}.jpg"
            write_image(images / relative, noise_image(frame + fold))
            row = [(frame + fold + k) % 2 for k in range(12)]
            paths.append(relative)
            labels.append(" ".join(map(str, row)))
            expected[(subject, frame)] = row
        (raw / "list").mkdir(parents=True, exist_ok=True)
        (raw / "list" / f"BP4D_test_img_path_fold{fold}.txt").write_text("\n".join(paths) + "\n")
        (raw / "list" / f"BP4D_test_label_fold{fold}.txt").write_text("\n".join(labels) + "\n")
    result = prepare("megraphau_lists", raw, images=images, data_root=tmp_path / "data", align=False, workers=1)
    assert result.folder == tmp_path / "data" / "bp4d" and result.index.aus == BP4D_AUS
    got = {(r["subject"], r["frame"]): r["labels"] for r in rows_of(result.index)}
    assert got == expected and result.index.frames["frame"][:2] == [2440, 2441]


def test_generic_csv_format(tmp_path):
    folder = tmp_path / "GFT"
    lines = ["image,subject,sequence,frame,AU1,AU12,partition,notes"]
    for i, (subject, au1, au12) in enumerate([("g1s1", "1", "0"), ("g1s1", "", "1"), ("g2s1", "9", "-1"),
                                             ("g2s1", "0", "1")]):
        write_image(folder / "frames" / f"{i}.png", noise_image(i))
        lines.append(f"frames/{i}.png,{subject},v1,{i},{au1},{au12},{'train' if subject == 'g1s1' else 'test'},x")
    (folder / "gft.csv").write_text("\n".join(lines) + "\n")
    result = prepare("csv", folder / "gft.csv", data_root=tmp_path / "data", align=False, workers=1)
    index = result.index
    assert result.folder == tmp_path / "data" / "gft" and index.aus == (1, 12)
    assert index.label_matrix().tolist() == [[1, 0], [-1, 1], [0, 1]]  # the all-missing row is dropped
    assert index.metadata["partitions"] == {"train": ["g1s1"], "test": ["g2s1"]}


def csv_with_landmarks(folder, given_rows):
    """A generic CSV of four dot faces whose rows in `given_rows` give their five points in landmark columns."""
    lines = ["image,subject,AU1," + ",".join(LANDMARK_COLUMNS)]
    for i in range(4):
        write_image(folder / f"{i}.png", dot_face(i))
        cells = [f"{v:.3f}" for v in face_points(i).ravel()] if i in given_rows else [""] * 10
        lines.append(f"{i}.png,s1,{i % 2}," + ",".join(cells))
    (folder / "gft.csv").write_text("\n".join(lines) + "\n")
    return folder / "gft.csv"


def test_generic_csv_landmark_columns_align_their_rows_and_the_others_are_detected(tmp_path, monkeypatch):
    assert LANDMARK_COLUMNS[:3] == ("eye_left_x", "eye_left_y", "eye_right_x") and len(LANDMARK_COLUMNS) == 10
    calls = []
    monkeypatch.setattr(faces, "detect", lambda image: calls.append(1) or dot_detector(image))
    csv = csv_with_landmarks(tmp_path / "gft", given_rows=(0, 2, 3))
    result = runner.invoke(app, ["prepare", "csv", "--root", str(csv), "--data-root", str(tmp_path / "data"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "faces: 3 aligned with given landmarks, 1 detected, 0 aligned as the previous frame" in output
    assert f"given landmarks: {csv} (landmark columns)" in output and len(calls) == 1
    index = prepare("csv", csv, data_root=tmp_path / "data").index
    assert index.metadata["landmark_list_sha256"] is None
    scores = np.asarray(index.frames["face_score"])
    assert scores.tolist() == [1.0, np.float32(0.9), 1.0, 1.0]
    assert np.allclose(index.landmarks()[scores == 1], TEMPLATE, atol=1e-3)
    for item in index.frames:  # 0-based points: the dots land on the template
        found = blob_centres(np.asarray(item["image"]))
        assert len(found) == 5 and all(np.linalg.norm(found - point, axis=1).min() < 1.5 for point in TEMPLATE)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda line: line if not line.startswith("image") else line.replace(",mouth_right_y", ""),
         r"gft\.csv:1: header has landmark columns but no 'mouth_right_y'; give all ten \(eye_left_x, eye_left_y, "),
        (lambda line: line.replace(",s1,1,", ",s1,1,x", 1), r"gft\.csv:3: eye_left_x 'x.*' is not a number"),
        (lambda line: line.rsplit(",", 2)[0] + ",," if line.startswith("1.png") else line,
         r"gft\.csv:3: 1 of 5 points are missing; give every point of a frame, or none"),
    ],
)
def test_malformed_csv_landmark_columns_fail_with_file_and_line(tmp_path, edit, message):
    csv = csv_with_landmarks(tmp_path / "gft", given_rows=(0, 1))
    csv.write_text("\n".join(edit(line) for line in csv.read_text().splitlines()) + "\n")
    with pytest.raises(UserError, match=message):
        prepared("csv", csv, tmp_path, align=True)


def set_cell(path, line, column, value):
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def drop_header(path):
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (drop_header, r"F001_T1\.csv:1: header must start with column 0 \(the frame number\), got '2440'"),
        (lambda f: set_cell(f, 1, 30, "AU24"), r"F001_T1\.csv:1: header names AU24 twice \(columns 25 and 31\)"),
        (lambda f: set_cell(f, 1, 24, "x"), r"F001_T1\.csv:1: header column 25 'x' does not name an AU"),
        (lambda f: set_cell(f, 3, 1, "3"), r"F001_T1\.csv:3: AU1 value '3' is not one of 0, 1, 9"),
        (lambda f: set_cell(f, 4, 0, "2441"), r"F001_T1\.csv:4: frame 2441 appears twice"),
        (lambda f: f.write_text(f.read_text() + "2443,1\n"), r"F001_T1\.csv:5: 2 values where the header has 100"),
    ],
)
def test_malformed_bp4d_annotation_fails_with_file_and_line(tmp_path, break_it, message):
    raw = tmp_path / "BP4D"
    write_bp4d(raw, ["F001"], tasks=1, frames=3)
    break_it(raw / "AUCoding" / "AU_OCC" / "F001_T1.csv")
    with pytest.raises(UserError, match=message):
        prepared("bp4d", raw, tmp_path)


def test_label_file_without_images_fails_through_the_cli_with_one_line(tmp_path):
    raw = tmp_path / "BP4D"
    write_bp4d(raw, ["F001", "F002"], tasks=1, frames=3)
    for image in (raw / "F002" / "T1").iterdir():
        image.unlink()
    result = runner.invoke(app, ["prepare", "bp4d", "--root", str(raw), "--no-align", "--data-root",
                                 str(tmp_path / "data"), "--workers", "1"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"F002_T1.csv:2: no image for any frame of this file (expected e.g. {raw}/F002/T1/2440.jpg)" in result.stderr
    assert not (tmp_path / "data" / "bp4d").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda root: (root / "ActionUnit_Labels" / "SN001" / "SN001_au9.txt").write_text("1,0\n2,7\n3,0\n"),
         r"SN001_au9\.txt:2: AU9 intensity 7 is outside 0-5"),
        (lambda root: (root / "ActionUnit_Labels" / "SN001" / "SN001_au26.txt").unlink(),
         r"SN001_au26\.txt: missing"),
        (lambda root: (root / "ActionUnit_Labels" / "SN001" / "SN001_au4.txt").write_text("1,0\n3,1\n2,0\n"),
         r"SN001_au4\.txt:2: frames differ from SN001_au1\.txt"),
    ],
)
def test_malformed_disfa_annotation_fails_with_file_and_line(tmp_path, edit, message):
    raw = tmp_path / "DISFA"
    write_disfa(raw, ["SN001"], frames=3)
    edit(raw)
    with pytest.raises(UserError, match=message):
        prepared("disfa", raw, tmp_path)


def test_malformed_affwild2_header_and_value(tmp_path):
    raw = tmp_path / "Aff-Wild2"
    write_affwild2(raw)
    path = raw / "AU_Set" / "Train_Set" / "vid1.txt"
    text = path.read_text()
    path.write_text(text.replace("AU1,AU2", "AU1,Happy", 1))
    with pytest.raises(UserError, match=r"vid1\.txt:1: header 'AU1,Happy,.*' is not an AU list"):
        prepared("affwild2", raw, tmp_path)
    path.write_text(text.replace("\n0,0,0,0", "\n0,2,0,0", 1))
    with pytest.raises(UserError, match=r"vid1\.txt:3: AU2 value '2' is not one of 0, 1, -1"):
        prepared("affwild2", raw, tmp_path)


def test_prepare_rejects_unknown_format_and_bad_options(tmp_path):
    result = runner.invoke(app, ["prepare", "bp4", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "unknown dataset format 'bp4' (did you mean 'bp4d'?)" in result.stderr
    for root in (tmp_path / "nowhere", tmp_path / "no" / "BP4D"):  # its folder missing too: still --root, as given
        result = runner.invoke(app, ["prepare", "bp4d", "--root", str(root)])
        assert result.exit_code == 2
        assert result.stderr == (f"error: --root {root}: no such file or folder; pass the annotation files as "
                                 "distributed (a folder; csv: the CSV file)\n")
    result = runner.invoke(app, ["prepare", "disfa", "--root", str(tmp_path), "--threshold", "0"])
    assert result.exit_code == 2 and "invalid --threshold" in result.stderr
