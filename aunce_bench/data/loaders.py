"""From a FrameIndex to tensors: decoded frame sets in memory, batches, and batched augmentation.

Frames are decoded once into a uint8 tensor [N, 3, S, S]; every epoch then draws batches from memory and
augments them on the training device with kornia (per-sample random parameters, one call per batch).
Two-view sampling for contrastive training is two independent augmentations of the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import datasets
import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from aunce_bench.data.index import MISSING_LABEL, FrameIndex

KEY_COLUMNS = ("subject", "sequence", "frame", "pose_bin")


@dataclass
class FrameSet:
    """Decoded frames of some subjects: images uint8 [N, 3, S, S], labels int8 [N, K] (-1 missing) and, where
    the data has them, the true AU intensities float32 [N, K] (NaN where unknown)."""

    images: torch.Tensor
    labels: np.ndarray
    keys: dict[str, np.ndarray] = field(default_factory=dict)
    intensities: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def with_labels(self, labels: np.ndarray) -> "FrameSet":
        return FrameSet(self.images, labels, self.keys, self.intensities)

    def subset(self, rows: np.ndarray) -> "FrameSet":
        """The frames at `rows` (indices or a boolean mask)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return FrameSet(self.images[torch.from_numpy(rows)], self.labels[rows],
                        {name: values[rows] for name, values in self.keys.items()},
                        None if self.intensities is None else self.intensities[rows])


@lru_cache(maxsize=4)
def _decoded(folder: str, frame_stride: int = 1, image_size: int | None = None,
             pose_bins: tuple[str, ...] | None = None) -> tuple[torch.Tensor, np.ndarray, np.ndarray,
                                                                dict[str, np.ndarray], FrameIndex]:
    """Images, labels, intensities and keys of the selected frames of a stored FrameIndex (cached: folds of
    one protocol share it). Frames are selected before decoding: every `frame_stride`-th frame of each
    sequence, only `pose_bins` when given; images are resized to `image_size` when given."""
    index = FrameIndex.load(Path(folder))
    keys = {column: np.asarray(index.frames[column]) for column in KEY_COLUMNS}
    rows = _selected(keys, frame_stride, pose_bins)
    frames = index.frames if len(rows) == len(index) else index.frames.select(rows)
    raw = frames.cast_column("image", datasets.Image(decode=False))
    images = np.stack([_decode(item["bytes"], image_size) for item in raw["image"]])
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), index.label_matrix()[rows],
            index.intensity_matrix()[rows], {column: values[rows] for column, values in keys.items()}, index)


@dataclass
class DecodedFrames:
    """Every frame of a stored FrameIndex, decoded: images, labels, intensities, keys and head pose."""

    images: torch.Tensor
    labels: np.ndarray
    intensities: np.ndarray
    keys: dict[str, np.ndarray]
    pose: dict[str, np.ndarray]


def decoded_frames(folder: Path) -> DecodedFrames:
    images, labels, intensities, keys, index = _decoded(str(folder))
    pose = {name: np.asarray(index.frames[name], dtype=np.float32) for name in ("yaw", "pitch", "roll")}
    return DecodedFrames(images, labels, intensities, keys, pose)


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
                occurrence_threshold: float | None = None) -> FrameSet:
    """The frames of `subjects` from the FrameIndex stored at `folder`, labels in `aus` order.

    `frame_stride`, `image_size` and `pose_bins` select and resize frames (see `_decoded`); with
    `occurrence_threshold`, AUs whose intensities the index stores are labelled intensity >= threshold.
    The intensities of AUs the index has none for are NaN.
    """
    images, labels, intensities, keys, index = _decoded(str(folder), frame_stride, image_size,
                                                        None if pose_bins is None else tuple(pose_bins))
    columns, levels = [], []
    for au in aus:
        level = (intensities[:, index.intensity_aus.index(au)].astype(np.float32) if au in index.intensity_aus
                 else np.full(len(labels), np.nan, np.float32))
        levels.append(np.where(level < 0, np.nan, level))
        if occurrence_threshold is not None and au in index.intensity_aus:
            columns.append(np.where(level < 0, MISSING_LABEL, level >= occurrence_threshold).astype(np.int8))
        else:
            columns.append(labels[:, index.aus.index(au)])
    frames = FrameSet(images, np.stack(columns, axis=1), keys, np.stack(levels, axis=1))
    return frames.subset(np.isin(keys["subject"], subjects))


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


def supervised_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """Supervised training: random crop and horizontal flip (ME-GraphAU practice)."""
    return Preprocess(nn.Sequential(K.RandomCrop((crop, crop)), K.RandomHorizontalFlip()), mean, std)


PAPER_CROP = 224  # the input size AUNCE's augmentation was designed for


def contrastive_transform(crop: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocess:
    """One view of AUNCE's two-view augmentation (FACTS.md s7): crop, flip, colour jitter p 0.8,
    grayscale p 0.2, Gaussian blur with sigma in [0.1, 2] px at 224 px. The blur is a length in pixels, so
    it is scaled with the crop: at 64 px the same sigma would erase the few-pixel cues of the face."""
    scale = min(1.0, crop / PAPER_CROP)
    return Preprocess(nn.Sequential(
        K.RandomCrop((crop, crop)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((3, 3), (0.1 * scale, 2.0 * scale), p=1.0),
    ), mean, std)
