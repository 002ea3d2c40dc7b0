"""From a FrameIndex to batches: frame sets, where their images come from, and batched augmentation.

A FrameSet's images come from an image source: in memory (every selected frame decoded once into a uint8
tensor [N, 3, S, S]) or streamed (JPEGs decoded per batch by DataLoader worker processes, memory bounded
whatever the dataset's size). `DataLoading` chooses between them: a frame index whose decoded frames fit the
memory budget stays in memory. Folds and subsets are row lists over a shared source, never copies. Batches
arrive on the training device as uint8 and are augmented there with kornia (per-sample random parameters, one
call per batch); two-view sampling for contrastive training is two independent augmentations of one batch.
Both sources give the same batches, bit for bit, so the choice changes speed and memory, not results.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import datasets
import kornia.augmentation as K
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from aunce_bench.data.index import MISSING_LABEL, FrameIndex
from aunce_bench.data.workers import process_context
from aunce_bench.distributed import DistributedEnv, rank_slice
from aunce_bench.errors import UserError

KEY_COLUMNS = ("subject", "sequence", "frame", "pose_bin")
LOADING_MODES = ("auto", "memory", "streaming")
AUTO_BUDGET_SHARE = 0.3  # of the machine's memory, for the decoded frames of one frame index (a run holds two at most)
DECODE_CHUNK = 1024  # frames decoded at a time into memory


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit where a container sets a lower one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


@dataclass(frozen=True)
class DataLoading:
    """How a run's frames are read. mode "memory" decodes each frame index's selected frames once into memory;
    "streaming" decodes them per batch in `workers` DataLoader processes (None: one per spare CPU core, at most 8;
    0: in the training process); "auto" keeps a frame index in memory when its decoded frames fit
    `memory_budget_gib` (None: 30% of the machine's memory) and streams it otherwise. Speed and memory only:
    recorded in the run's provenance, never part of the run id."""

    mode: str = "auto"
    memory_budget_gib: float | None = None
    workers: int | None = None

    def check(self) -> None:
        if self.mode not in LOADING_MODES:
            raise UserError(f"invalid --data-loading: '{self.mode}'; choose {', '.join(LOADING_MODES)}")
        if self.memory_budget_gib is not None and self.memory_budget_gib < 0:
            raise UserError(f"invalid --memory-budget: {self.memory_budget_gib}; give GiB, 0 or more")
        if self.workers is not None and self.workers < 0:
            raise UserError(f"invalid --data-workers: {self.workers}; give 0 or more")

    def budget_bytes(self) -> int:
        if self.memory_budget_gib is not None:
            return int(self.memory_budget_gib * 2**30)
        return int(AUTO_BUDGET_SHARE * machine_memory_bytes())

    def decode_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return min(8, max(1, len(os.sched_getaffinity(0)) - 1))

    def streams(self, decoded_bytes: int) -> bool:
        """Whether a frame index whose selected frames decode to `decoded_bytes` is streamed."""
        return self.mode == "streaming" or (self.mode == "auto" and decoded_bytes > self.budget_bytes())


class InMemoryImages:
    """Decoded frames held as one uint8 tensor [N, 3, S, S]."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        return self.images[torch.from_numpy(np.asarray(rows))]

    def describe(self) -> dict:
        return {"mode": "memory", "decoded_gib": self.images.numel() / 2**30}


class StreamedImages:
    """The JPEG-encoded frames of a FrameIndex (memory-mapped Arrow), decoded, and resized to `image_size` when
    given, as they are read; `workers` DataLoader processes do it while batches train."""

    def __init__(self, frames: datasets.Dataset, image_size: int | None, workers: int, decoded_gib: float):
        self.encoded = frames.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        self.image_size, self.workers, self.decoded_gib = image_size, workers, decoded_gib

    def __len__(self) -> int:
        return len(self.encoded)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        items = self.encoded[np.asarray(rows).tolist()]["image"] if len(rows) else []
        images = np.stack([_decode(item["bytes"], self.image_size) for item in items])
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def describe(self) -> dict:
        return {"mode": "streaming", "decoded_gib": self.decoded_gib, "workers": self.workers}


ImageSource = InMemoryImages | StreamedImages


@dataclass
class FrameSet:
    """Frames of some subjects: the rows `rows` of an image source (a tensor is held in memory), labels int8
    [N, K] (-1 missing) and, where the data has them, the true AU intensities float32 [N, K] (NaN where unknown)
    and the five face landmarks float32 [N, 5, 2] in pixels of the images (NaN where the face was not found;
    `landmarks.FIVE_POINTS`), for methods that attend to facial regions."""

    images: ImageSource | torch.Tensor
    labels: np.ndarray
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    intensities: np.ndarray | None = None
    rows: np.ndarray | None = None  # of `images`; None: all, in order
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.images, torch.Tensor):
            self.images = InMemoryImages(self.images)
        if self.rows is None:
            self.rows = np.arange(len(self.images))

    def __len__(self) -> int:
        return len(self.labels)

    def with_labels(self, labels: np.ndarray) -> "FrameSet":
        return FrameSet(self.images, labels, self.keys, self.intensities, self.rows, self.landmarks)

    def subset(self, rows: np.ndarray) -> "FrameSet":
        """The frames at `rows` (indices or a boolean mask), sharing this set's image source."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return FrameSet(self.images, self.labels[rows], {name: values[rows] for name, values in self.keys.items()},
                        None if self.intensities is None else self.intensities[rows], self.rows[rows],
                        None if self.landmarks is None else self.landmarks[rows])

    def read(self, positions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 images [n, 3, S, S] of the frames at `positions`, on the CPU."""
        return self.images.read(self.rows[np.asarray(positions)])

    def batches(self, plan: Iterable[torch.Tensor], device: torch.device) -> "FrameBatches":
        """(positions, uint8 images on `device`) for each batch of positions `plan` yields, each time it is iterated
        (see FrameBatches)."""
        return FrameBatches(self, plan, device)


class FrameBatches:
    """Batches of a FrameSet, iterable once per epoch. From memory they are indexed in this process; streamed
    frames are decoded by persistent DataLoader workers (forkserver processes with single-threaded OpenCV),
    prefetching while the model trains, into pinned memory when the device is a GPU."""

    def __init__(self, frames: FrameSet, plan: Iterable[torch.Tensor], device: torch.device):
        self.frames, self.plan, self.device = frames, plan, device
        self.loader = None
        source = frames.images
        if isinstance(source, StreamedImages):
            workers = source.workers
            self.loader = DataLoader(
                _BatchReader(frames), batch_sampler=plan, collate_fn=_as_is, num_workers=workers,
                pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None,
                multiprocessing_context=process_context() if workers > 0 else None,
                worker_init_fn=_single_threaded if workers > 0 else None,
                generator=torch.Generator())  # its own: seeding workers must not draw from the global generator

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.loader if self.loader is not None else ((p, self.frames.read(p)) for p in self.plan)
        for positions, images in batches:
            yield positions, images.to(self.device, non_blocking=True)


class _BatchReader(torch.utils.data.Dataset):
    """A FrameSet as a map-style dataset read a batch at a time (`__getitems__`)."""

    def __init__(self, frames: FrameSet):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitems__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return positions, self.frames.read(positions)


def _as_is(batch):
    return batch


def _single_threaded(_worker: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class ShuffledBatches:
    """A new random order each time it is iterated (drawn from `generator` when the first batch is taken: a
    DataLoader makes iterators it never uses): batches of `batch_size` positions, the incomplete last one dropped
    with `drop_last`. With `ranks` (a distributed run), each batch is the global one and this rank takes its
    slice of it (`distributed.rank_slice`); every rank's generator draws the same order."""

    def __init__(self, count: int, batch_size: int, generator: torch.Generator, drop_last: bool = True,
                 ranks: DistributedEnv | None = None):
        self.count, self.batch_size, self.generator, self.drop_last = count, batch_size, generator, drop_last
        self.part = rank_slice(batch_size, ranks)

    def __len__(self) -> int:
        return self.count // self.batch_size if self.drop_last else -(-self.count // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in batch_indices(self.count, self.batch_size, self.generator, drop_last=self.drop_last):
            yield batch[self.part]


class WeightedBatches:
    """Batches of frames drawn with replacement, frame i with probability proportional to `weights[i]`, as many
    batches an epoch as shuffling gives (the incomplete last one dropped); a new draw from `generator` each time
    it is iterated. With `ranks`, each rank takes its slice of the global batch, as in ShuffledBatches."""

    def __init__(self, weights: np.ndarray, batch_size: int, generator: torch.Generator,
                 ranks: DistributedEnv | None = None):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.batch_size, self.generator = batch_size, generator
        self.part = rank_slice(batch_size, ranks)

    def __len__(self) -> int:
        return len(self.weights) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        draws = torch.multinomial(self.weights, len(self) * self.batch_size, replacement=True,
                                  generator=self.generator)
        for batch in draws.view(len(self), self.batch_size):
            yield batch[self.part]


def rare_au_weights(labels: np.ndarray) -> np.ndarray:
    """Sampling weights of the `rare_au` sampler for labels int8 [N, K] (1 present, 0 absent, -1 unknown): each
    frame weighs the inverse base rate of its rarest present AU, a frame with none present the inverse share of
    such frames. Every AU's frames, grouped by their rarest AU, then carry about the same share of the draws, so
    rare AUs' positives fill far more of each batch than under shuffling (`batch_positive_share`)."""
    present = labels == 1
    base_rates = present.mean(axis=0)
    inverse = np.divide(1.0, base_rates, out=np.zeros_like(base_rates, dtype=np.float64), where=base_rates > 0)
    weights = (present * inverse).max(axis=1)
    none_present = ~present.any(axis=1)
    if none_present.any():
        weights[none_present] = 1.0 / none_present.mean()
    return weights


def batch_positive_share(labels: np.ndarray, sampler: str) -> np.ndarray:
    """The expected share of each AU's positives [K] in a training batch drawn by `sampler` (shuffle: the base
    rates; rare_au: as `rare_au_weights` draws)."""
    present = (labels == 1).astype(np.float64)
    weights = rare_au_weights(labels) if sampler == "rare_au" else np.ones(len(labels))
    return weights @ present / weights.sum()


def in_order(frames: FrameSet | FrameBatches, device: torch.device, batch_size: int = 256) -> FrameBatches:
    """Every frame of `frames` in order, in batches of `batch_size` (batches already made are used as they are:
    made once, they keep their decoding workers across calls)."""
    if isinstance(frames, FrameBatches):
        return frames
    return frames.batches(list(torch.arange(len(frames)).split(batch_size)), device)


@lru_cache(maxsize=8)
def _selection(folder: str, frame_stride: int, pose_bins: tuple[str, ...] | None
               ) -> tuple[FrameIndex, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The FrameIndex at `folder`, its selected rows (every `frame_stride`-th frame of each sequence, only
    `pose_bins` when given) and their labels, intensities and keys (cached: the folds of a protocol share them)."""
    index = FrameIndex.load(Path(folder))
    keys = {column: np.asarray(index.frames[column]) for column in KEY_COLUMNS}
    rows = _selected(keys, frame_stride, pose_bins)
    return (index, rows, index.label_matrix()[rows], index.intensity_matrix()[rows],
            {column: values[rows] for column, values in keys.items()})


@lru_cache(maxsize=2)  # a run's training and test data; the folds of a protocol share them
def _decoded(folder: str, frame_stride: int = 1, image_size: int | None = None,
             pose_bins: tuple[str, ...] | None = None) -> torch.Tensor:
    """The selected frames of a FrameIndex (see `_selection`) decoded into memory, resized to `image_size` when
    given (cached: the folds of a protocol share them)."""
    index, rows, *_ = _selection(folder, frame_stride, pose_bins)
    encoded = StreamedImages(index.frames, image_size, 0, 0.0)
    first = encoded.read(rows[:1])
    images = torch.empty((len(rows), *first.shape[1:]), dtype=torch.uint8)  # filled in chunks: one copy at most
    for start in range(0, len(rows), DECODE_CHUNK):
        images[start:start + DECODE_CHUNK] = encoded.read(rows[start:start + DECODE_CHUNK])
    return images


def _image_source(folder: str, frame_stride: int, image_size: int | None, pose_bins: tuple[str, ...] | None,
                  loading: DataLoading) -> ImageSource:
    """The selected frames' images, in memory or streamed as `loading` decides from their decoded size."""
    index, rows, *_ = _selection(folder, frame_stride, pose_bins)
    if len(rows) == 0:
        return InMemoryImages(torch.zeros((0, 3, 1, 1), dtype=torch.uint8))
    streamed = StreamedImages(index.frames, image_size, loading.decode_workers(), 0.0)
    height, width = streamed.read(rows[:1]).shape[2:]
    decoded_gib = len(rows) * 3 * height * width / 2**30
    if loading.streams(int(decoded_gib * 2**30)):
        return StreamedImages(index.frames.select(rows), image_size, loading.decode_workers(), decoded_gib)
    return InMemoryImages(_decoded(folder, frame_stride, image_size, pose_bins))


@dataclass
class DecodedFrames:
    """Every frame of a stored FrameIndex, decoded: images, labels, intensities, keys and head pose."""

    images: torch.Tensor
    labels: np.ndarray
    intensities: np.ndarray
    keys: dict[str, np.ndarray]
    pose: dict[str, np.ndarray]


def decoded_frames(folder: Path) -> DecodedFrames:
    index, _, labels, intensities, keys = _selection(str(folder), 1, None)
    pose = {name: np.asarray(index.frames[name], dtype=np.float32) for name in ("yaw", "pitch", "roll")}
    return DecodedFrames(_decoded(str(folder)), labels, intensities, keys, pose)


def _selected(keys: dict[str, np.ndarray], frame_stride: int, pose_bins: tuple[str, ...] | None) -> np.ndarray:
    keep = np.ones(len(keys["subject"]), dtype=bool) if pose_bins is None else np.isin(keys["pose_bin"], pose_bins)
    if frame_stride > 1:
        seen: dict[tuple[str, str, str], int] = {}
        for row, key in enumerate(zip(keys["subject"], keys["sequence"], keys["pose_bin"])):
            position = seen.get(key, 0)
            seen[key] = position + 1
            keep[row] &= position % frame_stride == 0
    return np.flatnonzero(keep)


def _decode(data: bytes, size: int | None) -> np.ndarray:
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if size is not None and image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def load_frames(folder: Path, subjects: list[str], aus: list[int], *, frame_stride: int = 1,
                image_size: int | None = None, pose_bins: list[str] | None = None,
                occurrence_threshold: float | None = None, loading: DataLoading = DataLoading()) -> FrameSet:
    """The frames of `subjects` from the FrameIndex stored at `folder`, labels in `aus` order.

    `frame_stride`, `image_size` and `pose_bins` select and resize frames (see `_selection`); with
    `occurrence_threshold`, AUs whose intensities the index stores are labelled intensity >= threshold.
    The intensities of AUs the index has none for are NaN. Landmarks are scaled with the images (None for an
    index without them). `loading` decides where the images come from.
    """
    pose_key = None if pose_bins is None else tuple(pose_bins)
    index, rows, labels, intensities, keys = _selection(str(folder), frame_stride, pose_key)
    columns, levels = [], []
    for au in aus:
        level = (intensities[:, index.intensity_aus.index(au)].astype(np.float32) if au in index.intensity_aus
                 else np.full(len(labels), np.nan, np.float32))
        levels.append(np.where(level < 0, np.nan, level))
        if occurrence_threshold is not None and au in index.intensity_aus:
            columns.append(np.where(level < 0, MISSING_LABEL, level >= occurrence_threshold).astype(np.int8))
        else:
            columns.append(labels[:, index.aus.index(au)])
    source = _image_source(str(folder), frame_stride, image_size, pose_key, loading)
    frames = FrameSet(source, np.stack(columns, axis=1), keys, np.stack(levels, axis=1),
                      landmarks=_scaled_landmarks(index, rows, image_size))
    return frames.subset(np.isin(keys["subject"], subjects))


def _scaled_landmarks(index: FrameIndex, rows: np.ndarray, image_size: int | None) -> np.ndarray | None:
    """The five landmarks of `rows`, in pixels of images resized to `image_size` (None: as stored)."""
    points = index.landmarks()
    if points is None or not len(rows):
        return None
    stored = index.frames[int(rows[0])]["image"].width
    points = points[rows]
    return points if image_size in (None, stored) else (points + 0.5) * (image_size / stored) - 0.5


def batch_indices(count: int, batch_size: int, generator: torch.Generator, shuffle: bool = True,
                  drop_last: bool = False) -> list[torch.Tensor]:
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class Preprocess(nn.Module):
    """uint8 batch -> float, optional augmentation, normalisation by the backbone's pretrained mean and std
    (`timm.data.resolve_data_config`; ImageNet's for timm's CNNs)."""

    def __init__(self, augment: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.augment = augment
        self.normalize = K.Normalize(torch.tensor(mean), torch.tensor(std))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.augment(images.float() / 255.0))


def eval_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """Test-time: centre crop."""
    return Preprocess(K.CenterCrop(crop), mean, std)


PAPER_CROP = 224  # the input size AUNCE's augmentation was designed for


def training_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...], colour_jitter: bool,
                       grayscale: bool, blur: bool) -> Preprocess:
    """One training view: random crop and horizontal flip, then the parts of AUNCE's released photometric
    augmentation that are on: colour jitter p 0.8, grayscale p 0.2, Gaussian blur with sigma in [0.1, 2] px at
    224 px. The blur is a length in pixels, so it is scaled with the crop: at 64 px the same sigma would erase
    the few-pixel cues of the face."""
    scale = min(1.0, crop / PAPER_CROP)
    parts = [K.RandomCrop((crop, crop)), K.RandomHorizontalFlip()]
    if colour_jitter:
        parts.append(K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8))
    if grayscale:
        parts.append(K.RandomGrayscale(p=0.2))
    if blur:
        parts.append(K.RandomGaussianBlur((3, 3), (0.1 * scale, 2.0 * scale), p=1.0))
    return Preprocess(nn.Sequential(*parts), mean, std)


def supervised_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """Supervised training: random crop and horizontal flip (ME-GraphAU practice)."""
    return training_transform(crop, mean, std, colour_jitter=False, grayscale=False, blur=False)


def contrastive_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """One view of AUNCE's two-view augmentation: every part on."""
    return training_transform(crop, mean, std, colour_jitter=True, grayscale=True, blur=True)
