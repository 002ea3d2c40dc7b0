"""Peak memory of reading one training epoch of a large FrameIndex: streamed against decoded into memory.

    python benchmarks/memory.py [--frames 100000] [--size 256] [--memory-frames 10000,20000] [--workers 1]

Builds FrameIndexes of 10k, 20k and `--frames` rows of `--size` px (once; kept under $AUNCE_BENCH_CACHE or
~/.cache/aunce-bench, in benchmarks/), their images cycling through 256 rendered SynthAU faces, written with
`Dataset.from_generator`. Then, each in a fresh process, reads one epoch of shuffled batches of 64 as the
training loops receive them (positions and uint8 images on the CPU; labels looked up) and samples memory
every 0.1 s:

- streaming, at every size: JPEGs decoded per batch by `--workers` DataLoader processes;
- memory, at the `--memory-frames` sizes: every frame decoded into memory first, then batches indexed from it.
  At 100k frames of 256 px that path needs 18.3 GiB of decoded frames alone, too close to this machine's memory
  to run beside anything else; its cost per frame is measured at the smaller sizes and the 100k figure printed
  as a projection, marked so.

Memory is the proportional set size (PSS) summed over the reading process and its descendants (the decoding
workers start through a fork server): RSS would count the pages they share once per process. The target:
streaming under 4 GB whatever the dataset's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import torch
from rich.console import Console
from rich.table import Table

from aunce_bench.data.index import FrameIndex, frame_features
from aunce_bench.data.loaders import DataLoading, ShuffledBatches, load_frames
from aunce_bench.data.synth.generate import load_or_generate
from aunce_bench.data.configs import SynthConfig
from aunce_bench.paths import default_cache_root

BATCH = 64
SUBJECTS = 41  # as BP4D
GiB = 2**30


def source_faces(size: int) -> FrameIndex:
    """256 rendered SynthAU frames at `size` px: the images the benchmark's indexes cycle through."""
    config = SynthConfig(profile="bp4d", subjects=4, sequences_per_subject=2, frames_per_sequence=32, frame_stride=1,
                         image_size=size)
    index, _, _ = load_or_generate(config)
    return index


def build_index(folder: Path, frames: int, size: int) -> Path:
    """A FrameIndex of `frames` rows at `size` px at `folder` (kept once written)."""
    if (folder / "frame_index.json").is_file():
        return folder
    faces = source_faces(size)
    encoded = faces.frames.cast_column("image", datasets.Image(decode=False))
    images, labels = [row["bytes"] for row in encoded["image"]], faces.label_matrix()

    def rows():
        for row in range(frames):
            source = row % len(images)
            yield {"image": {"bytes": images[source], "path": None}, "labels": labels[source].tolist(),
                   "intensities": [], "subject": f"S{row * SUBJECTS // frames:03d}", "sequence": "T1", "frame": row,
                   "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "pose_bin": "frontal", "dataset": "benchmark"}

    scratch = Path(tempfile.mkdtemp(prefix=".arrow-", dir=folder.parent))
    datasets.disable_progress_bars()
    try:
        table = datasets.Dataset.from_generator(rows, features=frame_features(len(faces.aus), 0),
                                                cache_dir=str(scratch))
        FrameIndex(table, faces.aus, (), "memory_benchmark", {}).save(folder, rebuild="python benchmarks/memory.py")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------ measured in a fresh process
def tree_pss_bytes(root: int) -> int:
    """PSS of process `root` and all its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))
    return total


def read_one_epoch(folder: str, mode: str, workers: int) -> dict:
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_pss_bytes(os.getpid()))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    index = FrameIndex.load(Path(folder))
    subjects = sorted(set(index.frames["subject"]))
    frames = load_frames(Path(folder), subjects, list(index.aus), loading=DataLoading(mode, workers=workers))
    loaded = time.perf_counter()
    checksum, seen = 0, 0
    for positions, images in frames.batches(ShuffledBatches(len(frames), BATCH, torch.Generator().manual_seed(0)),
                                            torch.device("cpu")):
        checksum += int(frames.labels[positions.numpy()].sum()) + int(images[:, :, ::64, ::64].sum())
        seen += len(images)
    finished = time.perf_counter()
    done.set()
    sampler.join()
    peak[0] = max(peak[0], tree_pss_bytes(os.getpid()))
    hwm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM:"))
    return {"frames": len(frames), "seen": seen, "peak_pss": peak[0], "main_hwm": hwm, "load_s": loaded - started,
            "epoch_s": finished - loaded, "source": type(frames.images).__name__, "checksum": checksum}


def measure(folder: Path, mode: str, workers: int) -> dict:
    """read_one_epoch in a fresh Python process (so that each peak is its own)."""
    output = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), "--workers", str(workers)],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--memory-frames", default="10000,20000")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(read_one_epoch(args.child[1], args.child[0], args.workers)))
        return

    console = Console(width=150)
    memory_sizes = [int(n) for n in args.memory_frames.split(",") if n]
    root = default_cache_root() / "benchmarks"
    root.mkdir(parents=True, exist_ok=True)
    sizes = sorted({*memory_sizes, args.frames})
    folders = {}
    for frames in sizes:
        started = time.perf_counter()
        folders[frames] = build_index(root / f"memory_{frames}_{args.size}px", frames, args.size)
        console.print(f"index of {frames} frames at {args.size} px: {folders[frames]} "
                      f"({sum(f.stat().st_size for f in folders[frames].rglob('*') if f.is_file()) / GiB:.2f} GiB "
                      f"on disk; {time.perf_counter() - started:.0f} s)")

    table = Table(title=f"One epoch of batches of {BATCH}, {args.size} px frames, on {os.cpu_count()} CPU cores, "
                        f"{args.workers} decoding worker(s)")
    for column in ("frames", "path", "decoded frames", "peak PSS (process tree)", "main peak RSS", "load s",
                   "epoch s", "frames/s"):
        table.add_column(column, justify="right")
    per_frame = []
    rows = [(n, "streaming") for n in sizes] + [(n, "memory") for n in memory_sizes]
    for frames, mode in rows:
        result = measure(folders[frames], mode, args.workers)
        assert result["seen"] == frames // BATCH * BATCH
        decoded = frames * 3 * args.size**2 / GiB
        if mode == "memory":
            per_frame.append((frames, result["peak_pss"]))
        table.add_row(f"{frames:,}", mode, f"{decoded:.2f} GiB", f"{result['peak_pss'] / GiB:.2f} GiB",
                      f"{result['main_hwm'] / GiB:.2f} GiB", f"{result['load_s']:.1f}", f"{result['epoch_s']:.1f}",
                      f"{frames / (result['load_s'] + result['epoch_s']):.0f}")
    console.print(table)
    if len(per_frame) >= 2 and args.frames not in memory_sizes:
        (n0, m0), (n1, m1) = per_frame[0], per_frame[-1]
        slope = (m1 - m0) / (n1 - n0)
        console.print(f"memory path: {slope / 1024:.0f} KiB per frame measured between {n0:,} and {n1:,} frames; "
                      f"projected (not measured) peak at {args.frames:,} frames: "
                      f"{(m1 + slope * (args.frames - n1)) / GiB:.1f} GiB")
    budget = DataLoading().budget_bytes()
    console.print(f"--data-loading auto on this machine: memory budget {budget / GiB:.1f} GiB, so "
                  f"{args.frames:,} frames of {args.size} px "
                  f"({args.frames * 3 * args.size**2 / GiB:.1f} GiB decoded) are "
                  f"{'streamed' if DataLoading().streams(args.frames * 3 * args.size**2) else 'kept in memory'}")


if __name__ == "__main__":
    main()
