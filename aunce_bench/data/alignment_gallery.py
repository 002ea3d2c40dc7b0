"""The alignment gallery of a prepared dataset: its least confident aligned faces with their five landmarks.

`aunce-bench prepare` writes it beside the frames (`index.ALIGNMENT_GALLERY`) and reports show it under the
dataset's label statistics, so a bad alignment is seen before it costs a training run. Frames whose face was not
found in them (the previous frame's transform or a centre crop) come first, then detected faces by increasing
detector confidence.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from aunce_bench.data.index import FrameIndex

TILE = 128
CAPTION = 30
COLUMNS = 6
ROWS = 4
POINT_COLOURS = ("#2ca02c", "#2ca02c", "#ffbf00", "#d62728", "#d62728")  # eyes, nose tip, mouth corners


def least_confident(scores: np.ndarray, count: int) -> np.ndarray:
    """Row indices of the `count` lowest scores, NaN (not detected) first, ties in row order."""
    order = np.lexsort((np.arange(len(scores)), np.nan_to_num(scores, nan=-1.0)))
    return order[:count]


def gallery_jpeg(index: FrameIndex, columns: int = COLUMNS, rows: int = ROWS) -> bytes | None:
    """JPEG of the least confident faces of `index`, landmarks drawn, captioned with the frame and confidence;
    None for an index without landmarks."""
    points = index.landmarks()
    if points is None or not len(index):
        return None
    scores = np.asarray(index.frames["face_score"], dtype=np.float32)
    chosen = least_confident(scores, columns * rows)
    shown = index.frames.select(chosen)
    font = ImageFont.load_default(size=11)
    sheet = Image.new("RGB", (columns * TILE, -(-len(chosen) // columns) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for cell, (row, item) in enumerate(zip(chosen, shown)):
        face = item["image"].convert("RGB")
        ratio = TILE / face.width
        x, y = (cell % columns) * TILE, (cell // columns) * (TILE + CAPTION)
        sheet.paste(face.resize((TILE, TILE)), (x, y))
        for (px, py), colour in zip(points[row] * ratio, POINT_COLOURS):
            if np.isfinite(px):
                draw.ellipse((x + px - 2, y + py - 2, x + px + 2, y + py + 2), fill=colour)
        score = scores[row]
        draw.text((x + 3, y + TILE + 2), f"{item['subject']} {item['sequence']} #{item['frame']}", fill="black",
                  font=font)
        draw.text((x + 3, y + TILE + 15), "not detected" if np.isnan(score) else f"confidence {score:.2f}",
                  fill="#d62728" if np.isnan(score) else "black", font=font)
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=90, optimize=True)
    return buffer.getvalue()
