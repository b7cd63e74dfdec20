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
    if name == "Recognizer":
        from lrdif.predict.recognizer import Recognizer

        return Recognizer
    if name == "Predictions":
        from lrdif.predict.records import Predictions

        return Predictions
    raise AttributeError(f"module 'lrdif' has no attribute {name!r}")
