"""Generate a SynthAU FrameIndex: labels from the latent process, faces from the renderer.

Every random draw is keyed by (seed, profile, stream, subject, sequence, frame, view), never by the order
of work, so the same `SynthConfig` gives byte-identical images and labels with any number of workers.
Generated indexes are cached on disk under a content hash of the resolved configuration.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.ndimage import gaussian_filter1d

from aunce_bench.data.synth.face import expressive_landmarks, neutral_landmarks, sample_identity
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.labels import LabelProcess
from aunce_bench.data.synth.profiles import PROFILES, Profile
from aunce_bench.data.synth.render import Pose, encode_jpeg, render_face
from aunce_bench.data.workers import process_pool
from aunce_bench.errors import UserError
from aunce_bench.paths import check_writable, default_cache_root

if TYPE_CHECKING:  # the module is imported in the functions that need it: it imports HF datasets (0.6 s),
    from aunce_bench.data.index import FrameIndex  # which labels and faces alone (a report's gallery) do not

# Bump when a change to the face model, renderer or label process changes generated data.
GENERATOR_VERSION = 1

IDENTITY_STREAM = 0x49444E54  # "IDNT"
POSE_STREAM = 0x504F5345  # "POSE"
RENDER_STREAM = 0x524E4452  # "RNDR"

# Fixed head-pose bins (degrees), as rendered for pose-robustness protocols.
POSE_BINS: tuple[tuple[int, int], ...] = tuple((yaw, pitch) for pitch in (-20, 0, 20) for yaw in (-40, -20, 0, 20, 40))
FRONTAL = "frontal"


def pose_bin_name(yaw: int, pitch: int) -> str:
    return f"yaw{yaw:+d}_pitch{pitch:+d}"


class SynthConfig(BaseModel):
    """What to generate. Counts left as None take the profile's defaults (BP4D/DISFA-like sizes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = "bp4d"
    subjects: int | None = Field(None, ge=1)
    sequences_per_subject: int | None = Field(None, ge=1)
    frames_per_sequence: int | None = Field(None, ge=1)
    frame_stride: int = Field(10, ge=1, description="render every n-th frame; labels evolve at the full rate")
    image_size: int = Field(112, ge=32, le=1024)
    seed: int = Field(0, ge=0)
    occurrence_threshold: float = Field(2.0, gt=0.0, le=5.0, description="occurrence = intensity >= this")
    pose: Literal["frontal", "bins"] = Field("frontal", description="near-frontal jitter, or every frame in all 15 pose bins")
    difficulty: float = Field(
        1.0, gt=0.0, le=10.0, description="divides the ratio of AU cue strength to identity/capture nuisance"
    )

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str) -> str:
        if name not in PROFILES:
            close = difflib.get_close_matches(name, PROFILES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"unknown profile '{name}'{hint}; choose one of: {', '.join(PROFILES)}")
        return name

    def resolved(self) -> "SynthConfig":
        """The same configuration with every default count filled in from the profile."""
        stats = PROFILES[self.profile].labels
        return self.model_copy(
            update={
                "subjects": self.subjects or stats.n_subjects,
                "sequences_per_subject": self.sequences_per_subject or stats.sequences_per_subject,
                "frames_per_sequence": self.frames_per_sequence or stats.frames_per_sequence,
            }
        )

    def content_hash(self) -> str:
        payload = {"generator_version": GENERATOR_VERSION, **self.resolved().model_dump()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def cue_strength(self) -> float:
        return self.difficulty**-0.5

    @property
    def nuisance(self) -> float:
        return self.difficulty**0.5


@lru_cache(maxsize=4)
def label_process(profile_name: str) -> LabelProcess:
    """The profile's label process (its calibration runs once per process)."""
    profile = PROFILES[profile_name]
    return LabelProcess(profile.labels, profile.key)


def keyed_rng(*key: int) -> np.random.Generator:
    """A generator seeded by a key of integers (seed, stream, subject, ...), independent of call order."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def subject_name(profile: Profile, subject: int) -> str:
    return f"{profile.subject_prefix}{subject + 1:03d}"


def subject_names(config: SynthConfig) -> list[str]:
    config = config.resolved()
    return [subject_name(PROFILES[config.profile], subject) for subject in range(config.subjects)]


def identity_for(config: SynthConfig, subject: int):
    profile = PROFILES[config.profile]
    return sample_identity(keyed_rng(config.seed, profile.key, IDENTITY_STREAM, subject), config.nuisance)


def head_pose_track(config: SynthConfig, subject: int, sequence: int, n_frames: int) -> np.ndarray:
    """Smooth near-frontal head motion of one sequence: [n_frames, 3] yaw, pitch, roll in degrees."""
    rng = keyed_rng(config.seed, PROFILES[config.profile].key, POSE_STREAM, subject, sequence)
    sigma, pad = 40.0, 160
    drift = gaussian_filter1d(rng.standard_normal((3, n_frames + 2 * pad)), sigma=sigma, axis=1)[:, pad:-pad]
    drift *= np.sqrt(2 * np.sqrt(np.pi) * sigma)  # filtered white noise has variance 1 / (2 sqrt(pi) sigma)
    offset = rng.normal(0.0, 1.0, (3, 1))
    spread = np.array([[6.0], [4.0], [2.5]]) * config.nuisance  # yaw, pitch, roll
    return ((0.6 * drift + 0.8 * offset) * spread).T


@dataclass(frozen=True)
class _FrameJob:
    sequence: int
    frame: int
    view: int  # 0 for frontal, else 1 + pose-bin index
    intensities: np.ndarray
    pose: tuple[float, float, float]


def _render_subject(config: SynthConfig, subject: int, jobs: list[_FrameJob]) -> list[bytes]:
    """JPEG bytes of one subject's frames (runs in a worker process)."""
    profile = PROFILES[config.profile]
    identity = identity_for(config, subject)
    neutral = neutral_landmarks(identity)
    images = []
    for job in jobs:
        rng = keyed_rng(config.seed, profile.key, RENDER_STREAM, subject, job.sequence, job.frame, job.view)
        landmarks = expressive_landmarks(neutral, job.intensities, config.cue_strength)
        image = render_face(identity, landmarks, job.intensities, Pose(*job.pose), profile.style,
                            config.image_size, rng, config.cue_strength, config.nuisance)
        images.append(encode_jpeg(image, profile.style.jpeg_quality))
    return images


def _subject_frames(config: SynthConfig, subject: int) -> tuple[list[_FrameJob], dict[str, list]]:
    """Frame jobs and index rows (without images) of one subject."""
    profile = PROFILES[config.profile]
    process = label_process(config.profile)
    labelled = [RENDERED_AUS.index(au) for au in profile.labels.labelled_aus]
    n_frames = config.frames_per_sequence
    kept = np.arange(0, n_frames, config.frame_stride)
    views = [(0, FRONTAL, (0.0, 0.0))] if config.pose == FRONTAL else [
        (1 + i, pose_bin_name(*b), b) for i, b in enumerate(POSE_BINS)
    ]
    jobs, rows = [], {key: [] for key in ("labels", "intensities", "subject", "sequence", "frame",
                                          "yaw", "pitch", "roll", "pose_bin")}
    for sequence in range(config.sequences_per_subject):
        intensities = process.sequence_intensities(config.seed, subject, sequence, n_frames)[kept]
        track = head_pose_track(config, subject, sequence, n_frames)[kept]
        if config.pose != FRONTAL:
            track = track * 0.35  # small jitter around each bin centre
        for view, bin_name, (bin_yaw, bin_pitch) in views:
            for frame, level, (yaw, pitch, roll) in zip(kept, intensities, track):
                pose = (float(yaw + bin_yaw), float(pitch + bin_pitch), float(roll))
                jobs.append(_FrameJob(sequence, int(frame), view, level, pose))
                rows["labels"].append((level[labelled] >= config.occurrence_threshold).astype(np.int8).tolist())
                rows["intensities"].append(level.tolist())
                rows["subject"].append(subject_name(profile, subject))
                rows["sequence"].append(f"T{sequence + 1}")
                rows["frame"].append(int(frame))
                rows["yaw"].append(pose[0])
                rows["pitch"].append(pose[1])
                rows["roll"].append(pose[2])
                rows["pose_bin"].append(bin_name)
    return jobs, rows


def generate(config: SynthConfig, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> FrameIndex:
    """Render a SynthAU FrameIndex in memory; `progress(done, total)` is called per subject."""
    import datasets

    from aunce_bench.data.index import FrameIndex, frame_features

    config = config.resolved()
    profile: Profile = PROFILES[config.profile]
    workers = max(1, workers or os.cpu_count() or 1)
    columns: dict[str, list] = {key: [] for key in frame_features(0, 0)}
    planned = [_subject_frames(config, subject) for subject in range(config.subjects)]
    with process_pool(workers) as pool:
        rendered = pool.map(_render_subject, [config] * config.subjects, range(config.subjects),
                            [jobs for jobs, _ in planned])
        for subject, ((_, rows), images) in enumerate(zip(planned, rendered)):
            columns["image"].extend({"bytes": image, "path": None} for image in images)
            for key, values in rows.items():
                columns[key].extend(values)
            columns["dataset"].extend([profile.dataset_name] * len(images))
            if progress:
                progress(subject + 1, config.subjects)
    features = frame_features(len(profile.labels.labelled_aus), len(RENDERED_AUS))
    frames = datasets.Dataset.from_dict(columns, features=features)
    metadata = {"source": "synthau", "config": config.model_dump(), "fingerprint": config.content_hash(),
                "generator_version": GENERATOR_VERSION}
    return FrameIndex(frames, profile.labels.labelled_aus, RENDERED_AUS, profile.dataset_name, metadata)


def default_output(config: SynthConfig) -> Path:
    return default_cache_root() / "synth" / f"{config.profile}-{config.content_hash()[:16]}"


def load_or_generate(config: SynthConfig, out: Path | None = None, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[FrameIndex, Path, bool]:
    """The FrameIndex of `config` at `out` (default: the cache), generated unless already there.

    Returns (index, folder, reused).
    """
    from aunce_bench.data.index import FrameIndex, is_complete

    config = config.resolved()
    out = Path(out) if out is not None else default_output(config)
    if is_complete(out):
        index = FrameIndex.load(out)
        if index.metadata.get("fingerprint") != config.content_hash():
            raise UserError(f"{out} already holds a frame index with another configuration; "
                            "choose another output folder or delete it")
        return index, out, True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; choose another output folder")
    check_writable(out.parent)
    index = generate(config, workers, progress)
    index.save(out)
    return FrameIndex.load(out), out, False
