"""Draw predictions on a picture: face boxes, the dominant emotion, and a bar chart of all
classes, each bar labelled with its percentage.

Input and output are RGB ``uint8 (H, W, 3)`` arrays (a grey image is drawn in
colour). Small pictures (a 48x48 FERPlus crop) are enlarged first so the text
stays legible; boxes are scaled with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lrdif.io import atomic_write_bytes

_MIN_SIDE = 360  # pictures smaller than this are enlarged before drawing
_BOX = (40, 220, 90)  # RGB
_BAR = (255, 190, 40)
_TEXT = (255, 255, 255)
_PANEL = (20, 20, 20)
_TRACK = (70, 70, 70)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def annotate(image: np.ndarray, records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Return a copy of ``image`` with each face record's box, label and probability bars.

    Records without a box (errors, "no face") are skipped; a picture whose
    records hold no face gets the message of its first record across the top.
    """
    canvas = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()
    scale = max(1.0, _MIN_SIDE / min(canvas.shape[:2]))
    if scale > 1.0:
        size = (round(canvas.shape[1] * scale), round(canvas.shape[0] * scale))
        canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_NEAREST)
    canvas = np.ascontiguousarray(canvas)
    # Text and line sizes follow the picture's size: one unit per 640 pixels of width.
    unit = max(canvas.shape[:2]) / 640.0
    font = 0.45 * max(unit, 0.8)
    thick = max(1, round(unit))
    faces = [r for r in records if r.get("box") is not None]
    for record in faces:
        x, y, w, h = (round(v * scale) for v in record["box"])
        cv2.rectangle(canvas, (x, y), (x + w, y + h), _BOX, 2 * thick)
        emotions = record.get("emotions") or {}
        if not emotions:
            continue
        top = record["dominant_emotion"]
        _label(canvas, f"{top} {emotions[top]:.0%}", (x, y), font, thick)
        _bars(canvas, emotions, (x, y, w, h), font, thick)
    if not faces and records:
        message = records[0].get("error") or "no face"
        _label(canvas, message, (0, 0), font, thick, below=True)
    return canvas


def _label(
    canvas: np.ndarray,
    text: str,
    corner: tuple[int, int],
    font: float,
    thick: int,
    *,
    below: bool = False,
) -> None:
    """Text on a filled strip just above ``corner`` (or below it where there is no room)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, font, thick)
    x, y = corner
    x = min(max(0, x), max(0, canvas.shape[1] - tw - 4))
    top = y - th - base - 4
    if below or top < 0:
        top = y
    cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 4), _BOX, -1)
    cv2.putText(canvas, text, (x + 2, top + th + 2), _FONT, font, _PANEL, thick, cv2.LINE_AA)


def _bars(
    canvas: np.ndarray,
    emotions: dict[str, float],
    box: tuple[int, int, int, int],
    font: float,
    thick: int,
) -> None:
    """A small horizontal bar chart of all probabilities, beside the box; each bar is
    followed by its percentage (``"87%"``)."""
    (_, th), base = cv2.getTextSize("Xg", _FONT, font, thick)
    row = th + base + 4
    name_w = max(cv2.getTextSize(n, _FONT, font, thick)[0][0] for n in emotions) + 6
    bar_w = 6 * row
    pct_w = cv2.getTextSize("100%", _FONT, font, thick)[0][0] + 6
    panel_w, panel_h = name_w + bar_w + pct_w + 8, row * len(emotions) + 6
    x, y, w, _h = box
    img_h, img_w = canvas.shape[:2]
    # Right of the box if it fits, else left of it, else inside the picture's right edge.
    px = x + w + 6 if x + w + 6 + panel_w <= img_w else x - panel_w - 6
    px = min(max(0, px), max(0, img_w - panel_w))
    py = min(max(0, y), max(0, img_h - panel_h))
    region = canvas[py : py + panel_h, px : px + panel_w]
    region[:] = (0.35 * region + 0.65 * np.array(_PANEL)).astype(np.uint8)
    for i, (name, p) in enumerate(emotions.items()):
        top = py + 3 + i * row
        cv2.putText(canvas, name, (px + 3, top + th + 1), _FONT, font, _TEXT, thick, cv2.LINE_AA)
        x0 = px + name_w
        # A dim track shows the full scale (probability 1) behind each bar.
        cv2.rectangle(canvas, (x0, top + 2), (x0 + bar_w, top + row - 3), _TRACK, -1)
        cv2.rectangle(canvas, (x0, top + 2), (x0 + round(bar_w * p), top + row - 3), _BAR, -1)
        cv2.putText(canvas, f"{p:.0%}", (x0 + bar_w + 4, top + th + 1), _FONT, font, _TEXT,
                    thick, cv2.LINE_AA)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 picture atomically; the format follows the suffix."""
    path = Path(path)
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(path.suffix, bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise ValueError(f"{path}: cannot write a picture with suffix {path.suffix!r}; "
                         "use .jpg or .png")
    atomic_write_bytes(path, encoded.tobytes())
