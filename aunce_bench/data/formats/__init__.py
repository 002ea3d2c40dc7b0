"""Raw-format importers by name: `aunce-bench prepare NAME` reads the annotation files of one format.

Each importer is `scan(root, images, threshold) -> Scan` (see `common.py`): `root` holds the annotation files
as distributed, `images` the frames or videos, `threshold` the occurrence threshold of formats that code
intensities (DISFA). Another package adds a `Format` through the entry-point group `aunce_bench.formats`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aunce_bench.data.formats.affwild2 import scan_affwild2
from aunce_bench.data.formats.bp4d import scan_bp4d, scan_bp4d_plus
from aunce_bench.data.formats.common import Scan
from aunce_bench.data.formats.disfa import scan_disfa
from aunce_bench.data.formats.fera17 import scan_fera17
from aunce_bench.data.formats.generic_csv import scan_csv
from aunce_bench.data.formats.megraphau import scan_megraphau_lists
from aunce_bench.registry import Registry


@dataclass(frozen=True)
class Format:
    name: str
    scan: Callable[[Path, Path, float], Scan]
    description: str
    dataset: str | None  # the prepared dataset's name; None: from the files or --name
    root_hint: str  # what --root points to, for messages


FORMATS: Registry[Format] = Registry("dataset format", "aunce_bench.formats")
for _format in (
    Format("bp4d", scan_bp4d, "BP4D: AUCoding/AU_OCC/F001_T1.csv, frames F001/T1/2440.jpg; 12 AUs, 41 subjects",
           "bp4d", "/path/to/BP4D"),
    Format("disfa", scan_disfa, "DISFA: ActionUnit_Labels/SN001/SN001_au1.txt (intensities), frames SN001/0.png; "
           "12 coded AUs, 27 subjects", "disfa", "/path/to/DISFA"),
    Format("bp4d_plus", scan_bp4d_plus, "BP4D+: AUCoding/AU_OCC/F001_T1.csv (coded AUs only), frames F001/T1/N.jpg; "
           "12 AUs, 140 subjects", "bp4d_plus", "/path/to/BP4D+"),
    Format("affwild2", scan_affwild2, "Aff-Wild2 (ABAW): AU_Set/{Train,Validation}_Set/<video>.txt, frames "
           "cropped_aligned/<video>/00001.jpg or videos; 12 AUs", "affwild2", "/path/to/Aff-Wild2"),
    Format("fera17", scan_fera17, "FERA 2017: FERA17_TR_F001_T1.csv with 9 view videos FERA17_TR_F001_T1_{1..9}.mp4; "
           "10 AUs", "fera17", "/path/to/FERA17"),
    Format("megraphau_lists", scan_megraphau_lists, "ME-GraphAU/AUNCE lists: list/BP4D_test_img_path_fold1.txt + "
           "label lists (prepares bp4d or disfa)", None, "/path/to/ME-GraphAU/data/BP4D"),
    Format("csv", scan_csv, "generic CSV, one row per frame: image, subject, AU1, AU2, ... (+ sequence, frame, "
           "pose_bin, partition); needs --name", None, "/path/to/labels.csv"),
):
    FORMATS.register(_format.name)(_format)


def get_format(name: str) -> Format:
    return FORMATS.get(name)


def prepare_command(dataset: str, data_root: Path) -> str:
    """The command that prepares `dataset` into `data_root` (for messages)."""
    if dataset in FORMATS and FORMATS[dataset].dataset == dataset:
        source = f"prepare {dataset} --root {FORMATS[dataset].root_hint}"
    else:
        source = f"prepare csv --root /path/to/labels.csv --name {dataset}"
    return f"aunce-bench {source} --data-root {data_root}"
