"""The results of :class:`~lrdif.predict.recognizer.Recognizer`: one record per face,
and :class:`Predictions`, their list with exports (rows, CSV, JSON, pandas).

Each record is a dict with the keys users of fer and deepface know::

    source            file path, or "<array 0>", "<bytes 1>", "<PIL 2>" for in-memory inputs
    frame, time       video frame index and seconds (None for still images)
    box               [x, y, w, h] in the picture's pixels
    face_confidence   detector score in (0, 1) (None without detection)
    emotions          {class name: probability}, in the model's class order
    dominant_emotion  the most probable class
    confidence        its calibrated probability (the checkpoint's temperature applied)
    error             None, NO_FACE for a picture without a face, or why the input failed
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lrdif.io import atomic_write

NO_FACE = "no face detected"
RECORD_KEYS = (
    "source", "frame", "time", "box", "face_confidence", "emotions", "dominant_emotion",
    "confidence", "error",
)


def face_record(
    source: str, frame: int | None = None, time: float | None = None, **values: Any
) -> dict[str, Any]:
    """A record of ``source`` with every key of RECORD_KEYS (None unless given)."""
    record = dict.fromkeys(RECORD_KEYS)
    record.update(source=source, frame=frame, time=time, **values)
    return record


class Predictions(list):
    """A list of face records (dicts) with exports; ``class_names`` fixes the column order."""

    def __init__(self, records: Iterable[dict[str, Any]] = (), *, class_names: Iterable[str]):
        super().__init__(records)
        self.class_names = tuple(class_names)

    @property
    def faces(self) -> list[dict[str, Any]]:
        """Records that hold a classified face."""
        return [r for r in self if r["error"] is None]

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Records of inputs that could not be read (pictures without a face are not failures)."""
        return [r for r in self if r["error"] not in (None, NO_FACE)]

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows: box as box_x/box_y/box_w/box_h, one probability column per class."""
        out = []
        for r in self:
            box = r["box"] or [None] * 4
            emotions = r["emotions"] or {}
            row = {"source": r["source"], "frame": r["frame"], "time": r["time"]}
            row.update(zip(("box_x", "box_y", "box_w", "box_h"), box, strict=True))
            row["face_confidence"] = r["face_confidence"]
            row["dominant_emotion"] = r["dominant_emotion"]
            row["confidence"] = r["confidence"]
            row.update({name: emotions.get(name) for name in self.class_names})
            row["error"] = r["error"]
            out.append(row)
        return out

    def to_dataframe(self) -> Any:
        """A pandas DataFrame of :meth:`rows` (needs pandas: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "Predictions.to_dataframe() needs pandas; install it with `pip install pandas` "
                "(or use to_csv() / to_json(), which need nothing extra)"
            ) from exc
        columns = ["source", "frame", "time", "box_x", "box_y", "box_w", "box_h",
                   "face_confidence", "dominant_emotion", "confidence", *self.class_names,
                   "error"]
        return pd.DataFrame(self.rows(), columns=columns)

    def to_json(self, path: str | Path | None = None) -> str:
        """The records as a JSON list (written atomically to ``path`` when given)."""
        text = json.dumps(list(self), indent=2) + "\n"
        if path is not None:
            with atomic_write(path, "w") as handle:
                handle.write(text)
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """:meth:`rows` as CSV with a header (written atomically to ``path`` when given)."""
        rows = self.rows()
        buffer = io.StringIO()
        columns = list(rows[0]) if rows else ["source", *self.class_names, "error"]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        if path is not None:
            with atomic_write(path, "w") as handle:
                handle.write(buffer.getvalue())
        return buffer.getvalue()
