"""Video frames for prediction: every n-th frame with its index and time, via OpenCV."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)


class VideoError(ValueError):
    """A video file that OpenCV cannot open or decode; the message names the file."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def frame_count(path: Path) -> int:
    """Frames the container announces (0 where it does not say); for progress bars only."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 0
    finally:
        capture.release()


def iter_frames(
    path: Path, *, every: int = 1, max_pixels: int
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame index, time in seconds, RGB uint8 (H, W, 3))`` for every ``every``-th frame.

    Skipped frames are only grabbed, not decoded into images, so ``every`` saves
    most of the decoding time. Time is ``index / fps`` where the container gives
    a frame rate, else the decoder's timestamp. Raises :class:`VideoError` when the
    file does not open, yields no frame, or has frames over ``max_pixels``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"{path}: not a video OpenCV can open (corrupt or unknown format)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        index = 0
        while capture.grab():
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if not ok or bgr is None:
                    raise VideoError(f"{path}: frame {index} could not be decoded")
                if bgr.shape[0] * bgr.shape[1] > max_pixels:
                    raise VideoError(
                        f"{path}: frames of {bgr.shape[1]}x{bgr.shape[0]} exceed the "
                        f"limit of {max_pixels} pixels"
                    )
                time = index / fps if fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield index, float(time), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise VideoError(f"{path}: no frame could be read (corrupt, empty or unsupported)")
    finally:
        capture.release()
