"""A gallery PNG of a SynthAU configuration: sample faces with their active AUs, each AU alone, and the lip AUs as
a network sees them at the CPU budgets' image size."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aunce_bench.data.synth.face import AU_COLUMN, expressive_landmarks, neutral_landmarks
from aunce_bench.data.synth.generate import RENDER_STREAM, keyed_rng, head_pose_track, identity_for, label_process
from aunce_bench.data.configs import SynthConfig
from aunce_bench.data.synth.label_stats import RENDERED_AUS
from aunce_bench.data.synth.profiles import PROFILES
from aunce_bench.data.synth.render import Pose, render_face
from aunce_bench.facs import AU_NAMES

TILE = 128
CAPTION = 30
LEVELS = (0, 1, 2, 3, 4, 5)
MOUTH_AUS = (12, 15, 17, 23, 24)  # the lip AUs beside the smile and the chin raiser
BUDGET_SIZE = 64  # the quick budget's faces


def _render(config: SynthConfig, subject: int, intensities: np.ndarray, pose: Pose, key: tuple[int, ...],
            size: int = TILE) -> Image.Image:
    """One face rendered at `size` px, shown as a TILE px tile (pixels enlarged, not smoothed)."""
    profile = PROFILES[config.profile]
    identity = identity_for(config, subject)
    landmarks = expressive_landmarks(neutral_landmarks(identity), intensities, config.cue_strength)
    rng = keyed_rng(config.seed, profile.key, RENDER_STREAM, *key)
    image = render_face(identity, landmarks, intensities, pose, profile.style, size, rng,
                        config.cue_strength, config.nuisance).image
    return Image.fromarray(image).resize((TILE, TILE), Image.NEAREST)


def sample_grid(config: SynthConfig, rows: int = 3, columns: int = 6) -> Image.Image:
    """Faces of different subjects at random frames, captioned with their active labelled AUs."""
    config = config.resolved()
    profile = PROFILES[config.profile]
    process = label_process(config.profile)
    font = ImageFont.load_default(size=11)
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    pick = np.random.default_rng(config.seed)
    for cell in range(rows * columns):
        subject = cell % config.subjects
        sequence = int(pick.integers(config.sequences_per_subject))
        levels = process.sequence_intensities(config.seed, subject, sequence, config.frames_per_sequence)
        frame = int(pick.integers(len(levels)))
        yaw, pitch, roll = head_pose_track(config, subject, sequence, config.frames_per_sequence)[frame]
        face = _render(config, subject, levels[frame], Pose(yaw, pitch, roll), (subject, sequence, frame, 0))
        x, y = (cell % columns) * TILE, (cell // columns) * (TILE + CAPTION)
        sheet.paste(face, (x, y))
        active = [f"AU{au}" for au in profile.labels.labelled_aus
                  if levels[frame][AU_COLUMN[au]] >= config.occurrence_threshold]
        lines = textwrap.wrap(" ".join(active), width=19) or ["none active"]
        for i, line in enumerate(lines[:2]):
            draw.text((x + 3, y + TILE + 2 + 13 * i), line, fill="black", font=font)
    return sheet


def au_strip(config: SynthConfig, subject: int = 0, aus: tuple[int, ...] = RENDERED_AUS, size: int = TILE,
             title: str = "") -> Image.Image:
    """One identity, frontal, each of `aus` alone at intensities 0..5 (one row per AU), rendered at `size` px."""
    config = config.resolved()
    font = ImageFont.load_default(size=12)
    label_width = 170
    top = 40 if title else 20
    sheet = Image.new("RGB", (label_width + len(LEVELS) * TILE, top + len(aus) * TILE), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 4), title, fill="black", font=font)
    for column, level in enumerate(LEVELS):
        draw.text((label_width + column * TILE + TILE // 2 - 24, top - 16), f"intensity {level}", fill="black",
                  font=font)
    for row, au in enumerate(aus):
        y = top + row * TILE
        draw.text((6, y + TILE // 2 - 14), f"AU{au}", fill="black", font=font)
        draw.text((6, y + TILE // 2 + 2), AU_NAMES[au], fill="black", font=font)
        for column, level in enumerate(LEVELS):
            intensities = np.zeros(len(RENDERED_AUS), np.float32)
            intensities[AU_COLUMN[au]] = level
            face = _render(config, subject, intensities, Pose(), (subject, 0, 0, 0), size)
            sheet.paste(face, (label_width + column * TILE, y))
    return sheet


def write_gallery(config: SynthConfig, path: Path) -> Path:
    """Write the sample grid, the per-AU strip and the mouth AUs at the quick budget's size as one PNG."""
    mouth = au_strip(config, aus=MOUTH_AUS, size=BUDGET_SIZE,
                     title=f"the mouth AUs as the quick budget renders them ({BUDGET_SIZE} px, pixels enlarged)")
    parts = [sample_grid(config), au_strip(config), mouth]
    sheet = Image.new("RGB", (max(p.width for p in parts), sum(p.height + 10 for p in parts)), "white")
    y = 0
    for part in parts:
        sheet.paste(part, (0, y))
        y += part.height + 10
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    return path
