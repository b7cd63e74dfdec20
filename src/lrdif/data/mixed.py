"""The ``mixed`` reader: one reader over several roots, concatenated split by split.

Training on clean and UDC pictures together (clean FERPlus plus UDC-FERPlus made by
``lrdif synthesize`` with several displays and severities) names the first root in
``data.root`` and the others in ``data.options.roots``::

    data:
      dataset: mixed
      root: ../shared/data/ferplus          # clean FERPlus
      options:
        reader: ferplus                     # the DATASETS key that reads every root
        roots: [udc/toled-s0.5, udc/toled-s1.0, udc/poled-s1.0]
        label_mode: majority                # any other option goes to that reader

Every split (train, valid, test) is the concatenation, in that order, of the same split
of each root, so the validation split the run selects on is the mix too. The roots must
give the same class list and image mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lrdif.data.base import FERDataset, Sample
from lrdif.registry import DATASETS

MIXED_LAYOUT = """\
  data.root:          the first root (any layout the reader reads)
  data.options.roots: [the other roots, same layout and classes]
  data.options.reader: the DATASETS key of that reader (default ferplus)"""


@DATASETS.register("mixed")
class MixedDataset(FERDataset):
    """The samples of ``reader`` on ``root`` and on each of ``roots``, in that order.

    ``reader_options`` (e.g. ``label_mode``) go to every reader. ``parts`` keeps each
    root's reader; samples hold absolute image paths (``root / path`` is then the path
    itself), so decoding, ``limit`` and bad-image handling work as for one root.
    """

    layout = MIXED_LAYOUT

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        roots: list[str | Path],
        reader: str = "ferplus",
        **reader_options: Any,
    ) -> None:
        if reader == "mixed":
            raise ValueError("mixed: reader 'mixed' would nest; name the reader of the roots")
        cls = DATASETS.get(reader)
        self.splits = cls.splits
        super().__init__(root=root, split=split)
        if isinstance(roots, (str, Path)) or not roots:
            raise ValueError(f"mixed: options.roots must be a non-empty list of folders "
                             f"(besides data.root {root}), got {roots!r}")
        all_roots = [Path(root), *(Path(r) for r in roots)]
        if len({r.absolute() for r in all_roots}) != len(all_roots):
            raise ValueError(f"mixed: a root is named twice in {[str(r) for r in all_roots]}")
        self.parts: list[FERDataset] = []
        for part_root in all_roots:
            try:
                part = cls(root=part_root, split=split, **reader_options)
            except TypeError as exc:
                raise ValueError(f"mixed: options {reader_options} do not fit reader "
                                 f"{reader!r}: {exc}") from None
            self.parts.append(part)
        first = self.parts[0]
        for part in self.parts[1:]:
            if part.class_names != first.class_names or part.image_mode != first.image_mode:
                raise ValueError(
                    f"mixed: {part.root} has classes {list(part.class_names)} ({part.image_mode}) "
                    f"but {first.root} has {list(first.class_names)} ({first.image_mode}); "
                    "mixed roots must share one class list and image mode"
                )
        self.reader = reader
        self.class_names = first.class_names
        self.image_mode = first.image_mode
        self.samples = [
            Sample((part.root.absolute() / s.relpath).as_posix(), s.label, s.votes)
            for part in self.parts for s in part.samples
        ]

    def first_root_index(self) -> np.ndarray:
        """int64 (N,): for each sample, the index of the first root's sample with the same
        relative path: its clean view when the other roots are UDC versions of the first
        made by ``lrdif synthesize`` (which keeps every file's path)."""
        first = {s.relpath: i for i, s in enumerate(self.parts[0].samples)}
        index = []
        for part in self.parts:
            for s in part.samples:
                if s.relpath not in first:
                    raise ValueError(
                        f"mixed: {part.root / s.relpath} has no image of the same path in "
                        f"the first root {self.parts[0].root} (split {self.split}); a clean "
                        "view needs every root made from the first"
                    )
                index.append(first[s.relpath])
        return np.asarray(index, dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Images per root, in order."""
        return {str(part.root): len(part) for part in self.parts}

    @classmethod
    def source_files(cls, root: str | Path) -> list[str]:
        raise ValueError("mixed is not a source for `lrdif synthesize`; synthesize each root "
                         "with its own reader")
