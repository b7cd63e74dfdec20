"""The ``kdef`` reader: KDEF, with its subject-disjoint train/test split (docs/datasets.md)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lrdif.data.base import (
    IMAGE_SUFFIXES,
    FERDataset,
    LayoutError,
    Sample,
    _listing,
)
from lrdif.registry import DATASETS

KDEF_LAYOUT = """\
  ROOT/AF01/AF01ANS.JPG ...   (KDEF's own per-subject folders) or ROOT/AF01ANS.JPG ...
  name = session A|B, sex F|M, subject 01-35, expression AF AN DI HA NE SA SU,
         angle FL HL S HR FR (full/half left, straight, half/full right), .JPG"""

_KDEF_NAME = re.compile(
    r"(?P<session>[AB])(?P<sex>[FM])(?P<number>\d\d)"
    r"(?P<expression>AF|AN|DI|HA|NE|SA|SU)(?P<angle>FL|HL|S|HR|FR)",
    re.IGNORECASE,
)


def kdef_test_subjects(seed: int) -> frozenset[str]:
    """The 14 held-out subjects (7 women, 7 men) of the subject-disjoint KDEF split.

    A subject is sex + number (``"F07"``); both sessions of a subject stay on one side.
    Per sex, the 7 of 35 subjects with the smallest ``sha256(f"{seed}:{subject}")`` are
    held out: 14 subjects x 2 sessions x 7 expressions x 5 angles = 980 test images and
    56 x 70 = 3,920 train images on the full set, matching the paper's sizes (Sec. 4.2).
    The hash makes the split independent of file order, of numpy's RNG and of which
    images are present.
    """

    def rank(subject: str) -> str:
        return hashlib.sha256(f"{seed}:{subject}".encode()).hexdigest()

    chosen: list[str] = []
    for sex in "FM":
        subjects = [f"{sex}{n:02d}" for n in range(1, 36)]
        chosen += sorted(subjects, key=rank)[:7]
    return frozenset(chosen)


@DATASETS.register("kdef")
class KDEF(FERDataset):
    """Karolinska Directed Emotional Faces (Lundqvist et al. 1998): 70 people, 4,900 images."""

    splits = ("train", "test")
    layout = KDEF_LAYOUT
    EXPRESSIONS = ("AF", "AN", "DI", "HA", "NE", "SA", "SU")
    CLASS_NAMES = ("fear", "anger", "disgust", "happiness", "neutral", "sadness", "surprise")
    ANGLES = ("FL", "HL", "S", "HR", "FR")

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        angles: tuple[str, ...] = ANGLES,
        seed: int = 0,
    ) -> None:
        super().__init__(root=root, split=split)
        wrong = [a for a in angles if a not in self.ANGLES]
        if wrong or not angles:
            raise ValueError(
                f"KDEF: angles {wrong or angles} not allowed; expected some of {self.ANGLES}"
            )
        self.angles = tuple(angles)
        self.seed = seed
        self.class_names = self.CLASS_NAMES
        test = kdef_test_subjects(seed)
        for relpath, match in self._scan(self.root):
            angle = match["angle"].upper()
            subject = match["sex"].upper() + match["number"]
            if angle in self.angles and (subject in test) == (split == "test"):
                label = self.EXPRESSIONS.index(match["expression"].upper())
                self.samples.append(Sample(relpath, label))
        if not self.samples:
            raise self.layout_error(self.root, f"no {split} image for angles {self.angles}")

    @classmethod
    def _scan(cls, root: Path) -> list[tuple[str, re.Match[str]]]:
        """Every KDEF image under ``root`` (sorted relpaths) with its parsed name."""
        root = Path(root)
        if not root.is_dir():
            raise cls.layout_error(root, "the folder does not exist")
        found: dict[str, str] = {}
        images: list[tuple[str, re.Match[str]]] = []
        misnamed: list[str] = []
        for path in sorted(root.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if path.suffix.lower() not in IMAGE_SUFFIXES or hidden:
                continue
            relpath = path.relative_to(root).as_posix()
            match = _KDEF_NAME.fullmatch(path.stem)
            if match is None:
                misnamed.append(relpath)
                continue
            key = path.stem.upper()
            if key in found:
                raise LayoutError(f"{root}: {relpath} and {found[key]} are the same KDEF image")
            found[key] = relpath
            images.append((relpath, match))
        if misnamed:
            shown = ", ".join(misnamed[:5]) + (" ..." if len(misnamed) > 5 else "")
            raise cls.layout_error(root, f"{len(misnamed)} image(s) not named like KDEF: {shown}")
        if not images:
            raise cls.layout_error(root, f"no KDEF image ({_listing(root)})")
        return images

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        return [relpath for relpath, _ in cls._scan(Path(root))]
