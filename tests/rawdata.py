"""Writers of small raw-dataset trees in the formats of docs/PROTOCOLS.md#formats, for the importer tests.

Each writer lays out annotation files as distributed and frames (tiny generated images or videos) in the
conventional layout, and returns the rows it wrote, so tests can check the imported index frame by frame.
Faces drawn as five dots (`dot_face`) come with the landmarks a dataset would give for them (`ibug68`,
`landmark_line`), and `dot_detector` finds them as MTCNN would.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

BP4D_AUS = (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)
# BP4D+ headers list only the coded AUs: the 12 sit at column indices 1 2 3 5 6 8 10 12 13 15 20 21.
BP4D_PLUS_HEADER = [0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 27]
DISFA_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)


def noise_image(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def bp4d_code(subject: int, task: int, row: int, au: int) -> int:
    """A deterministic 0 / 1 / 9 pattern that differs between AUs, rows, tasks and subjects."""
    value = (subject * 7 + task * 5 + row * 3 + au * 11) % 10
    return 9 if value == 0 else int(value > 5)


def write_bp4d(root: Path, subjects: list[str], tasks: int = 2, frames: int = 3, first_frame: int = 2440,
               pad: bool = False, ext: str = ".jpg", header: list[int] | None = None,
               image=lambda seed: noise_image(seed)) -> list[dict]:
    """`AUCoding/AU_OCC/F001_T1.csv` (header 0..99 unless given) and frames `F001/T1/2440.jpg`."""
    header = header if header is not None else list(range(100))
    rows = []
    for s, subject in enumerate(subjects):
        for t in range(1, tasks + 1):
            lines = [",".join(map(str, header))]
            for r in range(frames):
                frame = first_frame + r
                codes = {au: bp4d_code(s, t, r, au) for au in header[1:]}
                lines.append(",".join([str(frame)] + [str(codes[au]) for au in header[1:]]))
                name = f"{frame:04d}{ext}" if pad else f"{frame}{ext}"
                write_image(root / subject / f"T{t}" / name, image(s * 1000 + t * 100 + r))
                rows.append({"subject": subject, "sequence": f"T{t}", "frame": frame,
                             "labels": [-1 if codes[au] == 9 else codes[au] for au in BP4D_AUS]})
            path = root / "AUCoding" / "AU_OCC" / f"{subject}_T{t}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
    return [row for row in rows if any(v != -1 for v in row["labels"])]


def disfa_intensity(subject: int, row: int, au: int) -> int:
    return (subject * 3 + row * 2 + au) % 6


def write_disfa(root: Path, subjects: list[str], frames: int = 6, image=lambda seed: noise_image(seed)) -> None:
    """`ActionUnit_Labels/SN001/SN001_au1.txt` (`frame,intensity`, 1-based) and frames `SN001/0.png`."""
    for s, subject in enumerate(subjects):
        for au in DISFA_AUS:
            path = root / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{r + 1},{disfa_intensity(s, r, au)}\n" for r in range(frames)))
        for r in range(frames):
            write_image(root / subject / f"{r}.png", image(s * 100 + r))


def write_affwild2(root: Path) -> dict:
    """Train_Set/vid1.txt (frames as cropped_aligned images, one missing, one row all -1) and
    Validation_Set/vid2_left.txt (frames from the video vid2.mp4, shorter than its annotation)."""
    header = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
    train = [[1, 0, -1, 0, 0, 0, 1, 0, 0, 0, 1, 0], [0] * 12, [-1] * 12, [1] * 12, [0, 1] * 6]
    valid = [[0, 1] * 6, [1, 0] * 6, [1] * 12, [0] * 12]
    folder = root / "AU_Set"
    for name, rows, set_name in (("vid1", train, "Train_Set"), ("vid2_left", valid, "Validation_Set")):
        path = folder / set_name / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    for j in (1, 2, 3, 5):  # data line 4 has no cropped image
        write_image(root / "cropped_aligned" / "vid1" / f"{j:05d}.jpg", noise_image(j, 112))
    write_video(root / "videos" / "vid2.mp4", [noise_image(50 + j, 64) for j in range(3)])
    return {"train": train, "valid": valid}


def write_fera17(root: Path, rows: int = 4) -> list[list[int]]:
    """FERA17_TR_F001_T1.csv with views 1 and 6; FERA17_VA_F001_T1.csv with view 6 (a video one frame short)."""
    aus = (1, 4, 6, 7, 10, 12, 14, 15, 17, 23)
    labels = [[(r + i) % 2 for i in range(len(aus))] for r in range(rows)]
    labels[1][2] = 9  # missing
    for split, views in (("TR", (1, 6)), ("VA", (6,))):
        path = root / "Occ" / f"FERA17_{split}_F001_T1.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["Frame," + ",".join(f"AU{au:02d}" for au in aus)]
        lines += [f"{r + 1}," + ",".join(map(str, labels[r])) for r in range(rows)]
        path.write_text("\n".join(lines) + "\n")
        for view in views:
            count = rows if split == "TR" else rows - 1
            write_video(root / "videos" / f"FERA17_{split}_F001_T1_{view}.mp4",
                        [noise_image(view * 10 + r) for r in range(count)])
    return [[-1 if v == 9 else v for v in row] for row in labels]


def dots(points, shape=(300, 400)):
    """A black BGR image with a white dot at each point."""
    image = np.zeros((*shape, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (round(x * 16), round(y * 16)), 5 * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
    return image


def blob_centres(image):
    """Intensity-weighted centres of the bright blobs of an image."""
    grey = image.max(axis=2).astype(np.float64)
    count, labels = cv2.connectedComponents((grey > 40).astype(np.uint8))
    centres = []
    for label in range(1, count):
        ys, xs = np.nonzero(labels == label)
        weights = grey[ys, xs]
        centres.append(((xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()))
    return np.array(centres)


def face_points(seed: int, shape=(300, 400)) -> np.ndarray:
    """Five landmarks (eye centres, nose tip, mouth corners, image-left first) of a face somewhere in a frame of
    `shape`: the 256 px template turned by up to 15 degrees, scaled by 0.6 to 0.9 and moved."""
    from aunce_bench.data.landmarks import TEMPLATE, transform

    rng = np.random.default_rng(seed)
    angle, scale = np.radians(rng.uniform(-15, 15)), rng.uniform(0.6, 0.9)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = rng.uniform([120, 100], [shape[1] - 120, shape[0] - 100])
    return transform(np.hstack([rotation, (centre - rotation @ TEMPLATE.mean(axis=0))[:, None]]), TEMPLATE)


def dot_face(seed: int, shape=(300, 400)) -> np.ndarray:
    """The frame of `face_points(seed)`: a dot at each of its five landmarks."""
    return dots(face_points(seed, shape), shape)


def dot_detector(image):
    """A stand-in for `faces.detect` on `dot_face` frames: the five dots, ordered as MTCNN orders its points."""
    from aunce_bench.data.faces import Face

    found = blob_centres(image)
    if len(found) != 5:
        return None
    by_height = found[np.argsort(found[:, 1])]
    eyes, mouth = by_height[:2], by_height[3:]
    return Face(np.vstack([eyes[np.argsort(eyes[:, 0])], by_height[2], mouth[np.argsort(mouth[:, 0])]]), 0.9)


IBUG_LEFT_OUT = {49: [*range(17), 60, 64], 66: [60, 64], 68: []}  # iBUG points a scheme of N points leaves out


def ibug68(five: np.ndarray, seed: int = 0) -> np.ndarray:
    """68 iBUG points [68, 2] whose eye contours (36-41, 42-47) are hexagons around the eye centres of `five`,
    with the nose tip (30) and the mouth corners (48, 54) of `five`; the other points lie around the face."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(five.min(axis=0) - 10, five.max(axis=0) + 10, (68, 2))
    radius = 0.15 * np.linalg.norm(five[1] - five[0])
    hexagon = radius * np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], axis=1)
    points[36:42], points[42:48] = five[0] + hexagon, five[1] + hexagon
    points[30], points[48], points[54] = five[2], five[3], five[4]
    return points


def landmark_line(points68: np.ndarray, count: int) -> str:
    """The landmark list line (JAA-Net format: 1-based x1 y1 x2 y2 ...) of iBUG points in the scheme of `count`."""
    kept = np.delete(points68, IBUG_LEFT_OUT[count], axis=0)
    return " ".join(f"{value:.4f}" for value in (kept + 1).ravel())
