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

from aunce_bench.data.index import FrameIndex

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KEY_COLUMNS = ("subject", "sequence", "frame", "pose_bin")


@dataclass
class FrameSet:
    """Decoded frames of some subjects: images uint8 [N, 3, S, S], labels int8 [N, K] (-1 missing)."""

    images: torch.Tensor
    labels: np.ndarray
    keys: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def with_labels(self, labels: np.ndarray) -> "FrameSet":
        return FrameSet(self.images, labels, self.keys)

    def subset(self, rows: np.ndarray) -> "FrameSet":
        """The frames at `rows` (indices or a boolean mask)."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        return FrameSet(self.images[torch.from_numpy(rows)], self.labels[rows],
                        {name: values[rows] for name, values in self.keys.items()})


@lru_cache(maxsize=4)
def _decoded(folder: str) -> tuple[torch.Tensor, np.ndarray, dict[str, np.ndarray], tuple[int, ...]]:
    """All images, labels and keys of a stored FrameIndex (cached: folds of one protocol share it)."""
    index = FrameIndex.load(Path(folder))
    raw = index.frames.cast_column("image", datasets.Image(decode=False))
    images = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(item["bytes"], np.uint8), cv2.IMREAD_COLOR),
                                    cv2.COLOR_BGR2RGB) for item in raw["image"]])
    keys = {column: np.asarray(index.frames[column]) for column in KEY_COLUMNS}
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), index.label_matrix(), keys, index.aus


def load_frames(folder: Path, subjects: list[str], aus: list[int]) -> FrameSet:
    """The frames of `subjects` from the FrameIndex stored at `folder`, labels in `aus` order."""
    images, labels, keys, index_aus = _decoded(str(folder))
    columns = [index_aus.index(au) for au in aus]
    return FrameSet(images, labels[:, columns], keys).subset(np.isin(keys["subject"], subjects))


def batch_indices(count: int, batch_size: int, generator: torch.Generator, shuffle: bool = True,
                  drop_last: bool = False) -> list[torch.Tensor]:
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    batches = list(order.split(batch_size))
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


class Preprocess(nn.Module):
    """uint8 batch -> float, optional augmentation, ImageNet normalisation."""

    def __init__(self, augment: nn.Module):
        super().__init__()
        self.augment = augment
        self.normalize = K.Normalize(torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.augment(images.float() / 255.0))


def eval_transform(crop: int) -> Preprocess:
    """Test-time: centre crop."""
    return Preprocess(K.CenterCrop(crop))


def supervised_transform(crop: int) -> Preprocess:
    """Supervised training: random crop and horizontal flip (ME-GraphAU practice)."""
    return Preprocess(nn.Sequential(K.RandomCrop((crop, crop)), K.RandomHorizontalFlip()))


PAPER_CROP = 224  # the input size AUNCE's augmentation was designed for


def contrastive_transform(crop: int) -> Preprocess:
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
    ))
