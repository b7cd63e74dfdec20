"""The ``ferplus`` reader: FER2013 images with the FER+ crowd labels (docs/datasets.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from lrdif.data.base import (
    FERDataset,
    LayoutError,
    Sample,
    _check_images_exist,
    _listing,
    _read_rows,
)
from lrdif.registry import DATASETS
from lrdif.vocabulary import FERPLUS_CLASSES

FERPLUS_LAYOUT = """\
  ROOT/
    FER2013Train/label.csv      no header: name, "(x, y, w, h)", 10 vote counts
    FER2013Train/fer0000000.png ...
    FER2013Valid/label.csv + PNGs
    FER2013Test/label.csv + PNGs
  votes: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF"""


@DATASETS.register("ferplus")
class FERPlus(FERDataset):
    """FER2013 images with the FER+ crowd labels (Barsoum et al. 2016); 48x48 grey PNGs.

    ``label_mode``:
    - ``"majority"``: the standard protocol. Votes of 1 or less are zeroed; an image is
      kept when its top class holds more than half of the remaining votes and is an
      emotion (not unknown/NF). 25,045 / 3,191 / 3,137 images.
    - ``"plurality"``: the class with the most raw votes, kept when it is unique and an
      emotion.
    - ``"distribution"``: every image whose top emotion has at least as many votes as
      unknown and as NF; label = the top emotion (first on ties); train on the votes.
    Every sample keeps its 8 emotion vote counts in ``votes``.
    """

    splits = ("train", "valid", "test")
    layout = FERPLUS_LAYOUT
    folders: ClassVar[dict[str, str]] = {
        "train": "FER2013Train",
        "valid": "FER2013Valid",
        "test": "FER2013Test",
    }
    CLASS_NAMES = FERPLUS_CLASSES

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        label_mode: Literal["majority", "plurality", "distribution"] = "majority",
    ) -> None:
        super().__init__(root=root, split=split)
        if label_mode not in ("majority", "plurality", "distribution"):
            raise ValueError(
                f"FERPlus: unknown label_mode {label_mode!r}; "
                "expected 'majority', 'plurality' or 'distribution'"
            )
        self.label_mode = label_mode
        self.class_names = self.CLASS_NAMES
        self.image_mode = "L"
        names, votes = self._read_split(self.root, split)
        keep, labels = self.select(votes, label_mode)
        emotion_votes = votes[:, :8].astype(np.float32)
        folder = self.folders[split]
        self.samples = [
            Sample(f"{folder}/{names[i]}", int(labels[i]), emotion_votes[i])
            for i in np.flatnonzero(keep)
        ]

    @staticmethod
    def select(votes: np.ndarray, label_mode: str) -> tuple[np.ndarray, np.ndarray]:
        """``votes (N, 10)`` -> ``(keep (N,) bool, label (N,) int)`` for one label mode."""
        if label_mode == "majority":
            cleaned = np.where(votes <= 1, 0, votes)  # single votes are annotator noise
            top = cleaned.argmax(axis=1)
            keep = (cleaned.max(axis=1) > 0.5 * cleaned.sum(axis=1)) & (top < 8)
            return keep, top
        if label_mode == "plurality":
            top = votes.argmax(axis=1)
            unique = (votes == votes.max(axis=1, keepdims=True)).sum(axis=1) == 1
            return unique & (top < 8), top
        emotion = votes[:, :8]
        best = emotion.max(axis=1)
        keep = (best > 0) & (best >= votes[:, 8]) & (best >= votes[:, 9])
        return keep, emotion.argmax(axis=1)

    @classmethod
    def _read_split(cls, root: Path, split: str) -> tuple[list[str], np.ndarray]:
        """Image names and ``(N, 10)`` int votes of one split; validates rows and images."""
        root = Path(root)
        folder = cls.folders[split]
        if not (root / folder).is_dir():
            raise cls.layout_error(root, f"no folder {folder}/ ({_listing(root)})")
        label_file = root / folder / "label.csv"
        rows = _read_rows(label_file, root, cls.layout_error)
        lines = [i + 1 for i, row in enumerate(rows) if row]  # blank lines are allowed
        names: list[str] = []
        votes = np.zeros((len(lines), 10), np.int64)
        for i, line in enumerate(lines):
            row = rows[line - 1]
            if len(row) != 12:
                raise LayoutError(
                    f"{label_file} line {line}: {len(row)} columns; expected 12 (image name, "
                    "face box, 10 vote counts)"
                )
            try:
                votes[i] = [int(v) for v in row[2:]]
            except ValueError:
                raise LayoutError(
                    f"{label_file} line {line}: vote counts {row[2:]} are not integers"
                ) from None
            names.append(row[0])
        if (votes < 0).any():
            line = lines[int(np.flatnonzero((votes < 0).any(axis=1))[0])]
            raise LayoutError(f"{label_file} line {line}: negative vote count")
        _check_images_exist(
            root,
            ((f"{folder}/{n}", f"line {k}") for k, n in zip(lines, names, strict=True)),
            label_file,
        )
        return names, votes

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        root = Path(root)
        return sorted(
            f"{cls.folders[s]}/{n}" for s in cls.splits for n in cls._read_split(root, s)[0]
        )

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        return [f"{cls.folders[s]}/label.csv" for s in cls.splits]
