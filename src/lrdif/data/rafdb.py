"""The ``rafdb`` reader: RAF-DB basic emotions, aligned or original images (docs/datasets.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from lrdif.data.base import (
    FERDataset,
    LayoutError,
    Sample,
    _check_images_exist,
    _listing,
)
from lrdif.registry import DATASETS

_RAF_LABELS = ("1", "2", "3", "4", "5", "6", "7")

RAFDB_LAYOUT = """\
  ROOT/
    EmoLabel/list_patition_label.txt   lines "train_00001.jpg 5", "test_0001.jpg 1"
    Image/aligned/train_00001_aligned.jpg ...   (variant "aligned", the default)
    Image/original/train_00001.jpg ...          (variant "original")
  labels 1..7 = surprise, fear, disgust, happiness, sadness, anger, neutral"""


@DATASETS.register("rafdb")
class RAFDB(FERDataset):
    """RAF-DB basic emotions (Li et al. 2017): 12,271 train / 3,068 test, 7 classes."""

    splits = ("train", "test")
    layout = RAFDB_LAYOUT
    LABEL_FILE = "EmoLabel/list_patition_label.txt"
    CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        variant: Literal["aligned", "original"] = "aligned",
    ) -> None:
        super().__init__(root=root, split=split)
        if variant not in ("aligned", "original"):
            raise ValueError(
                f"RAF-DB: unknown variant {variant!r}; expected 'aligned' or 'original'"
            )
        self.variant = variant
        self.class_names = self.CLASS_NAMES
        entries = self._read_labels(self.root, variant)
        self.samples = [Sample(rel, label) for rel, label, s in entries if s == split]

    @staticmethod
    def image_relpath(name: str, variant: str) -> str:
        if variant == "original":
            return f"Image/original/{name}"
        stem, dot, suffix = name.rpartition(".")
        return f"Image/aligned/{stem}_aligned{dot}{suffix}"

    @classmethod
    def _read_labels(cls, root: Path, variant: str) -> list[tuple[str, int, str]]:
        """``(relpath, label 0..6, split)`` for every line; validates lines and images."""
        root = Path(root)
        label_file = root / cls.LABEL_FILE
        if not label_file.is_file():
            raise cls.layout_error(root, f"no {cls.LABEL_FILE} ({_listing(root)})")
        if not (root / "Image" / variant).is_dir():
            raise cls.layout_error(
                root, f"no image folder Image/{variant}/ ({_listing(root / 'Image')})"
            )
        entries = []
        text = label_file.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            split = parts[0].split("_", 1)[0] if parts else ""
            if len(parts) != 2 or split not in cls.splits or parts[1] not in _RAF_LABELS:
                raise LayoutError(
                    f"{label_file} line {number}: {line!r}; expected '<train|test>_NNNNN.jpg <1-7>'"
                )
            entries.append((cls.image_relpath(parts[0], variant), int(parts[1]) - 1, split))
        if not entries:
            raise cls.layout_error(root, f"{cls.LABEL_FILE} holds no labels")
        _check_images_exist(
            root, ((rel, f"line {i + 1}") for i, (rel, _, _) in enumerate(entries)), label_file
        )
        return entries

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        """Images of every split in each variant folder present (aligned and/or original)."""
        root = Path(root)
        variants = [v for v in ("aligned", "original") if (root / "Image" / v).is_dir()]
        if not variants:
            raise cls.layout_error(root, f"no Image/aligned/ or Image/original/ ({_listing(root)})")
        return sorted(rel for v in variants for rel, _, _ in cls._read_labels(root, v))

    @classmethod
    def label_files(cls, root: str | Path) -> list[str]:
        return [cls.LABEL_FILE]
