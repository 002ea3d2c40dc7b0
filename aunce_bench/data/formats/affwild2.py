"""Aff-Wild2 AU annotations of the ABAW challenge (docs/PROTOCOLS.md#formats).

`AU_Set/Train_Set/<video>.txt` and `AU_Set/Validation_Set/<video>.txt` (the official partitions). The first
line names the AUs (`AU1,AU2,AU4,...`); each further line is one frame, values 0, 1 or -1 (not annotated:
missing). Data line j (1-based) is the image `cropped_aligned/<video>/{j:05d}.jpg` under the image folder,
or, when the frames are not extracted, frame j-1 of a video `<video>.mp4` (or avi, ...) anywhere under it
(`<name>_left` / `<name>_right` annotate the two faces of video `<name>`). Frames with every AU at -1 are
dropped; annotated frames without a cropped image (ABAW crops none where its detector found no face) are
skipped and counted. Each video is one subject.
"""

from __future__ import annotations

from pathlib import Path

from aunce_bench.data.formats.common import (VIDEO_EXTENSIONS, AnnotationError, Scan, Unit, Unlabelled,
                                             au_columns, au_number, expect_cells, files_by_stem, find_folder,
                                             numbered_images, occurrence, read_rows)

ABAW_AUS = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
PARTITIONS = {"Train_Set": "train", "Validation_Set": "validation"}


def scan_affwild2(root: Path, images: Path, threshold: float) -> Scan:
    folder = find_folder(root, ("AU_Set", "."), "*_Set/*.txt", "annotation folders Train_Set/ Validation_Set/")
    crops = images / "cropped_aligned" if (images / "cropped_aligned").is_dir() else images
    videos: dict[str, Path] | None = None  # indexed on first need: a recursive listing
    units, partitions, unlabelled, without_image, files, aus = [], {}, Unlabelled(), 0, 0, None
    for set_name, partition in PARTITIONS.items():
        for path in sorted((folder / set_name).glob("*.txt")):
            name = path.stem
            header = next(read_rows(path), (1, []))[1]
            header_aus = tuple(au_number(cell) for cell in header)
            if None in header_aus or header_aus != (aus or header_aus):
                expected = ",".join(f"AU{au}" for au in aus or ABAW_AUS)
                raise AnnotationError(path, 1, f"header '{','.join(header)}' is not an AU list like '{expected}'")
            aus = header_aus
            frames = numbered_images(crops / name)
            if frames:
                unit = Unit(name, name)
            else:
                videos = files_by_stem(images, VIDEO_EXTENSIONS) if videos is None else videos
                video = videos.get(name) or videos.get(name.removesuffix("_left").removesuffix("_right"))
                if video is None:
                    raise AnnotationError(path, 2, f"no images for video {name}: expected {crops / name}/00001.jpg "
                                                   f"or a video {name}.mp4 under {images}")
                unit = Unit(name, name, video=video)
            missing = _read(path, header, aus, unit, frames, unlabelled)
            without_image += missing
            files += 1
            units.append(unit)
            partitions.setdefault(partition, []).append(name)
    return Scan("affwild2", tuple(aus or ABAW_AUS), units, partitions=partitions, without_image=without_image,
                unlabelled=unlabelled.count, files=files)


def _read(path: Path, header: list[str], aus: tuple[int, ...], unit: Unit, frames: dict[int, Path],
          unlabelled: Unlabelled) -> int:
    columns = au_columns(header, aus, path, first=0)
    missing = 0
    for j, (line, cells) in enumerate(list(read_rows(path))[1:], start=1):  # j: data line, 1-based
        expect_cells(cells, len(header), path, line)
        labels = [occurrence(cells[c], path, line, au, ("-1",)) for au, c in zip(aus, columns)]
        if not unlabelled.keep(labels):
            continue
        if unit.video is not None:
            unit.add(j, labels, j - 1)
        elif j in frames:
            unit.add(j, labels, frames[j])
        else:
            missing += 1
    return missing
