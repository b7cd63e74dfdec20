"""lrdif: facial expression recognition for under-display cameras (the LRDif paper).

The public API is small: :class:`Recognizer` (emotions from images, folders and
videos) and :class:`Predictions` (its results). Importing ``lrdif`` does not import
torch; the names below load on first use.
"""

from __future__ import annotations

from typing import Any

from lrdif.vocabulary import __version__

__all__ = ["Predictions", "Recognizer", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Recognizer", "Predictions"):
        from lrdif.predict import recognizer

        return getattr(recognizer, name)
    raise AttributeError(f"module 'lrdif' has no attribute {name!r}")
