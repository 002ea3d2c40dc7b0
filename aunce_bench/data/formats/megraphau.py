"""The list format most AU papers ship (ME-GraphAU, AUNCE; docs/PROTOCOLS.md#formats).

`list/{DS}_test_img_path_fold{k}.txt` (one image path per line, relative to the image folder) and
`list/{DS}_test_label_fold{k}.txt` (space-separated 0/1 per AU, one line per image; 9 or -1 would be
missing). The test lists of the folds together hold every frame exactly once, so they are what is read;
the train and weight lists are derived from them. `DS` is BP4D or DISFA, whose AU order is that of
docs/PROTOCOLS.md#au-sets; the prepared dataset is named after it (`bp4d`, `disfa`), so the published
protocols run on it. A path `F001/T1/2440.jpg` is subject F001, sequence T1, frame 2440; `SN001/0.png` is subject
SN001, frame 0. The image list (what a landmark list's lines follow) is the lines of the image path lists, fold 1
first.
"""

from __future__ import annotations

import re
from pathlib import Path

from aunce_bench.data.formats.common import AnnotationError, Scan, Unit, Unlabelled, no_images_error, occurrence
from aunce_bench.errors import UserError

LIST_AUS = {"BP4D": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24), "DISFA": (1, 2, 4, 6, 9, 12, 25, 26)}
_PATHS = re.compile(r"^(BP4D|DISFA)_test_img_path_fold(\d+)\.txt$")


def scan_megraphau_lists(root: Path, images: Path, threshold: float) -> Scan:
    folder = root / "list" if (root / "list").is_dir() else root
    found = sorted((m.group(1), int(m.group(2)), p) for p in sorted(folder.glob("*.txt")) if (m := _PATHS.match(p.name)))
    if not found:
        raise UserError(f"no ME-GraphAU lists (BP4D_test_img_path_fold1.txt, ...) in {folder}; pass --root the "
                        "folder that holds list/")
    names = sorted({name for name, _, _ in found})
    if len(names) > 1:
        raise UserError(f"{folder} holds lists of {' and '.join(names)}; pass a folder with one dataset's lists")
    dataset, aus = names[0], LIST_AUS[names[0]]
    units: dict[tuple[str, str], Unit] = {}
    seen: dict[str, Path] = {}
    unlabelled, without_image, listed = Unlabelled(), 0, 0
    for _, _, path_list in found:
        label_list = path_list.with_name(path_list.name.replace("_img_path_", "_label_"))
        if not label_list.is_file():
            raise UserError(f"{label_list}: missing; each image path list needs its label list")
        paths = [line.strip() for line in path_list.read_text().splitlines()]
        labels = [line.split() for line in label_list.read_text().splitlines()]
        if len(paths) != len(labels):
            raise AnnotationError(label_list, min(len(paths), len(labels)) + 1,
                                  f"{len(labels)} label lines for {len(paths)} image paths in {path_list.name}")
        for line, (relative, cells) in enumerate(zip(paths, labels), start=1):
            entry, listed = listed, listed + 1  # the line's entry in the image list
            if not relative:
                raise AnnotationError(path_list, line, "empty image path")
            if relative in seen:
                raise AnnotationError(path_list, line, f"{relative} is also in {seen[relative].name}: test lists "
                                                       "must not overlap")
            seen[relative] = path_list
            if len(cells) != len(aus):
                raise AnnotationError(label_list, line, f"{len(cells)} labels where {dataset} has {len(aus)} AUs")
            row = [occurrence(cell, label_list, line, au, ("9", "-1")) for au, cell in zip(aus, cells)]
            if not unlabelled.keep(row):
                continue
            image = images / relative
            if not image.is_file():
                without_image += 1
                continue
            parts = Path(relative).parts
            subject, sequence = parts[0], "/".join(parts[1:-1]) or "1"
            stem = Path(relative).stem
            frame = int(stem) if stem.isdigit() else len(seen)  # else: the order of the lists
            units.setdefault((subject, sequence), Unit(subject, sequence)).add(frame, row, image, listed=entry)
    if not units and without_image:
        raise no_images_error(found[0][2], 1, images / next(iter(seen)))
    ordered = []
    for unit in units.values():  # frame order within each sequence
        order = sorted(range(len(unit)), key=unit.frames.__getitem__)
        reordered = Unit(unit.subject, unit.sequence)
        for i in order:
            reordered.add(unit.frames[i], unit.labels[i], unit.images[i], listed=unit.listed[i])
        ordered.append(reordered)
    ordered.sort(key=lambda u: (u.subject, u.sequence))
    return Scan(dataset.lower(), aus, ordered, without_image=without_image, unlabelled=unlabelled.count,
                files=2 * len(found), listed=listed,
                image_list=f"the lines of the image path lists, fold 1 first ({found[0][2].name}, ...)")
