"""Data: safe image decoding and the data-set readers (importing this registers them).

Training-time augmentation lives in :mod:`lrdif.data.transforms` (imports torch).
"""

from lrdif.data.datasets import (
    KDEF,
    RAFDB,
    CSVDataset,
    FERDataset,
    FERPlus,
    ImageFolder,
    LayoutError,
    Sample,
    kdef_test_subjects,
)
from lrdif.data.images import ImageError, read_image

__all__ = [
    "KDEF",
    "RAFDB",
    "CSVDataset",
    "FERDataset",
    "FERPlus",
    "ImageError",
    "ImageFolder",
    "LayoutError",
    "Sample",
    "kdef_test_subjects",
    "read_image",
]
