"""SynthFace: a backbone pretrained on SynthAU faces without AU labels, the embedded stand-in for ImageNet.

The pretraining pool is rendered from SynthAU identities of their own seed (`POOL_SEED`), disjoint from
every protocol's subjects, in both capture styles (bp4d and disfa profiles). Two generic face objectives,
neither of which reads an AU label or intensity:

- `landmarks`: regress the 68 3D landmarks and the head pose of each face (z-scored MSE), as face-alignment
  and 3D face-fitting networks are trained; the targets are the renderer's ground-truth geometry.
- `simclr`: instance discrimination between two augmented views (NT-Xent), no targets at all.

A build is cached under `<cache root>/synthface/<name>` by a content hash of its configuration: the timm
state dict of the backbone (`model.safetensors`) and a JSON model card. It is written to a temporary folder
and renamed once complete, under a file lock, so two runs starting on a cold cache build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from aunce_bench import __version__
from aunce_bench.errors import UserError
from aunce_bench.paths import check_writable, default_cache_root, file_sha256, remove_left_work, work_folder
from aunce_bench.training.common import Progress

# SynthAU seed of the pretraining identities. Protocols render with other seeds (0 unless overridden), and
# planning refuses a SynthFace init for a protocol that renders with this one.
POOL_SEED = 0x5FACE
POOL_PROFILES = ("bp4d", "disfa")
SYNTHFACE_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
HISTORY_STAGE = "init pretraining (SynthFace)"  # its stage in the history of the runs starting from it
OBJECTIVES = ("landmarks", "simclr")
MIN_CROP_SIZE = 32  # px: the smallest network input a build takes


class SynthFaceConfig(BaseModel):
    """One SynthFace build: backbone, input size, objective, pool and schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = "resnet18"
    crop_size: int = Field(56, ge=MIN_CROP_SIZE, le=512, description="network input (random crops of the pool images)")
    objective: Literal["landmarks", "simclr"] = "landmarks"
    identities_per_profile: int = Field(30, ge=1)
    sequences: int = Field(2, ge=1)
    frames_per_sequence: int = Field(490, ge=1)
    frame_stride: int = Field(10, ge=1)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(64, ge=4)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    seed: int = Field(0, ge=0, description="training seed (the pool's identities use POOL_SEED)")

    @property
    def image_size(self) -> int:
        """Pool images are rendered 8/7 of the crop, as the protocols' budgets do (64 -> 56, 72 -> 64)."""
        return int(round(self.crop_size * 8 / 7))

    def pool_configs(self):
        from aunce_bench.data.configs import SynthConfig

        return [SynthConfig(profile=profile, subjects=self.identities_per_profile, sequences_per_subject=self.sequences,
                            frames_per_sequence=self.frames_per_sequence, frame_stride=self.frame_stride,
                            image_size=self.image_size, seed=POOL_SEED).resolved()
                for profile in POOL_PROFILES]

    def content_hash(self) -> str:
        from aunce_bench.data.configs import GENERATOR_VERSION

        # the pool's faces change with the generator: a build on older faces is another build
        payload = {"synthface_version": SYNTHFACE_VERSION, "generator_version": GENERATOR_VERSION, **self.model_dump()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.objective}-{self.crop_size}px-{self.content_hash()[:12]}"


def synthface_config(backbone: str, crop_size: int) -> SynthFaceConfig:
    """The SynthFace build that `--init synthface` uses for a backbone and input size."""
    return SynthFaceConfig(backbone=backbone, crop_size=crop_size)


def synthface_root() -> Path:
    return default_cache_root() / "synthface"


def _complete(folder: Path) -> bool:
    return (folder / CARD_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def read_card(folder: Path) -> dict:
    try:
        return json.loads((folder / CARD_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{folder / CARD_FILE}: unreadable SynthFace model card ({error}); delete {folder} to rebuild")


def cached_builds() -> list[dict]:
    """Model cards of the complete builds in the cache, newest first."""
    root = synthface_root()
    folders = [f for f in root.iterdir() if f.is_dir() and _complete(f)] if root.is_dir() else []
    return sorted((read_card(f) | {"folder": str(f)} for f in folders), key=lambda c: c["built_at"], reverse=True)


def ensure_synthface(config: SynthFaceConfig, device: torch.device | None = None,
                     progress: Progress | None = None) -> tuple[Path, bool]:
    """The folder of the build of `config`, and whether this call built it (one builder at a time)."""
    folder = synthface_root() / config.name
    if _complete(folder):
        return folder, False
    check_writable(folder.parent)
    with FileLock(str(folder) + ".lock"):
        if _complete(folder):  # another process built it while this one waited
            return folder, False
        remove_left_work(folder)
        staging = work_folder(folder, "partial")
        try:
            build(config, staging, device or torch.device("cpu"), progress or Progress())
            if folder.exists():  # an incomplete leftover (never renamed there by a build): replace it
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder, True


# ------------------------------------------------------------------------------------------ the pool
def pool_frames(config: SynthFaceConfig, progress: Progress) -> tuple[torch.Tensor, np.ndarray]:
    """Images uint8 [N, 3, S, S] of the pretraining pool and their geometry targets [N, 68 * 3 + 3]:
    the renderer's 3D landmarks (face coordinates, before head rotation) and head pose (yaw, pitch, roll)."""
    from aunce_bench.data.loaders import decoded_frames
    from aunce_bench.data.synth.face import expressive_landmarks, neutral_landmarks
    from aunce_bench.data.synth.generate import identity_for, load_or_generate

    images, targets = [], []
    for pool in config.pool_configs():
        task = f"SynthFace one-time build: {pool.profile} faces"
        _, folder, _ = load_or_generate(pool, progress=partial(progress.count, task))
        decoded = decoded_frames(folder)
        subjects = decoded.keys["subject"]
        pose = np.stack([decoded.pose[name] for name in ("yaw", "pitch", "roll")], axis=1)
        neutral = {}
        rows = []
        for row, subject in enumerate(subjects):
            if subject not in neutral:
                neutral[subject] = neutral_landmarks(identity_for(pool, int(subject[-3:]) - 1))
            landmarks = expressive_landmarks(neutral[subject], decoded.intensities[row], pool.cue_strength)
            rows.append(np.concatenate([landmarks.reshape(-1), pose[row]]))
        images.append(decoded.images)
        targets.append(np.asarray(rows, dtype=np.float32))
    return torch.cat(images), np.concatenate(targets)


# ------------------------------------------------------------------------------------- the objectives
class _GeometryHead(nn.Module):
    """Pooled backbone features -> z-scored landmarks and pose."""

    def __init__(self, width: int, outputs: int):
        super().__init__()
        self.linear = nn.Linear(width, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(tokens.mean(dim=1))


class _ProjectionHead(nn.Module):
    """SimCLR's projection MLP on pooled backbone features."""

    def __init__(self, width: int, dim: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(tokens.mean(dim=1)), dim=-1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent: each view's positive is the other view of its image, the other 2B - 2 its negatives."""
    z = torch.cat([z1, z2]).float()
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    count = len(z1)
    targets = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(z.device)
    return F.cross_entropy(logits, targets)


def _augmentations(config: SynthFaceConfig, mean, std):
    import kornia.augmentation as K

    from aunce_bench.data.loaders import Preprocess, contrastive_transform

    if config.objective == "simclr":
        return contrastive_transform(config.crop_size, mean, std)
    # geometry targets: no flip (it would swap left and right landmarks), no rotation; light photometric jitter
    return Preprocess(nn.Sequential(K.RandomCrop((config.crop_size, config.crop_size)),
                                    K.ColorJitter(0.3, 0.3, 0.2, 0.02, p=0.8)), mean, std)


def build(config: SynthFaceConfig, folder: Path, device: torch.device, progress: Progress) -> dict:
    """Pretrain the backbone of `config` and write its weights and model card into `folder`."""
    from safetensors.torch import save_file

    from aunce_bench.data.loaders import batch_indices
    from aunce_bench.models.backbones import create_backbone
    from aunce_bench.training.common import ensure_finite

    started = time.perf_counter()
    images, targets = pool_frames(config, progress)
    render_s = time.perf_counter() - started
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    backbone = create_backbone(config.backbone, image_size=config.crop_size)
    mean, std = backbone.normalisation
    if config.objective == "landmarks":
        centre, scale = targets.mean(axis=0), targets.std(axis=0) + 1e-6
        targets = torch.from_numpy((targets - centre) / scale)
        head: nn.Module = _GeometryHead(backbone.num_features, targets.shape[1])
    else:
        head = _ProjectionHead(backbone.num_features)
    model = nn.Sequential(backbone, head).to(device)
    augment = _augmentations(config, mean, std).to(device)
    steps_per_epoch = len(images) // config.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, epochs=config.epochs,
                                                   steps_per_epoch=steps_per_epoch, pct_start=0.15)
    epoch_losses, history = [], []
    progress.stage(f"SynthFace one-time build: {config.objective} pretraining", config.epochs,
                   steps_per_epoch)
    for epoch in range(config.epochs):
        model.train()
        losses, lr, epoch_started = [], optimizer.param_groups[0]["lr"], time.perf_counter()
        for step, index in enumerate(batch_indices(len(images), config.batch_size, generator, drop_last=True)):
            batch = images[index].to(device)
            if config.objective == "landmarks":
                loss = F.mse_loss(model(augment(batch)), targets[index].to(device))
            else:
                z1, z2 = model(torch.cat([augment(batch), augment(batch)])).chunk(2)
                loss = nt_xent(z1, z2)
            ensure_finite(loss, "SynthFace pretraining", epoch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            progress.batch(losses[-1])
        epoch_losses.append(float(np.mean(losses)))
        images_seen = len(losses) * config.batch_size * (1 if config.objective == "landmarks" else 2)
        history.append({"stage": HISTORY_STAGE, "epoch": epoch + 1, "loss": epoch_losses[-1], "lr": lr,
                        "val_f1": None, "images_per_s": images_seen / (time.perf_counter() - epoch_started)})
        progress.epoch(epoch, {"loss": epoch_losses[-1]})
    save_file({key: value.detach().cpu().contiguous() for key, value in backbone.model.state_dict().items()},
              str(folder / WEIGHTS_FILE))
    card = {
        "name": config.name,
        "config_sha256": config.content_hash(),
        "config": config.model_dump(),
        "objective": config.objective,
        "uses_au_labels": False,
        "pool": {"seed": POOL_SEED, "profiles": list(POOL_PROFILES), "identities": config.identities_per_profile
                 * len(POOL_PROFILES), "frames": len(images), "image_size": config.image_size},
        "epochs": config.epochs,
        "losses": {"first_epoch": epoch_losses[0], "final_epoch": epoch_losses[-1], "per_epoch": epoch_losses},
        "history": history,
        "input_normalisation": {"mean": list(mean), "std": list(std)},
        "wall_s": {"pool": round(render_s, 1), "total": round(time.perf_counter() - started, 1)},
        "device": str(device),
        "threads": torch.get_num_threads(),
        "weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "versions": {"aunce_bench": __version__, "torch": torch.__version__, "timm": _timm_version()},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2))
    return card


def pretraining_history(backbone: str, crop_size: int) -> list[dict]:
    """The per-epoch history of the SynthFace build a run of `backbone` at `crop_size` starts from (as a run's
    history entries; builds from before the card kept one have their losses only)."""
    card = read_card(synthface_root() / synthface_config(backbone, crop_size).name)
    if "history" in card:
        return card["history"]
    return [{"stage": HISTORY_STAGE, "epoch": epoch + 1, "loss": loss, "lr": None, "val_f1": None,
             "images_per_s": None} for epoch, loss in enumerate(card["losses"]["per_epoch"])]


def _timm_version() -> str:
    import timm

    return timm.__version__
