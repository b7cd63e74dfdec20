"""Data: safe image decoding, the data-set readers and the landmark sources (importing
this registers both).

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
from lrdif.data.landmarks import cache_landmarks

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
    "cache_landmarks",
    "kdef_test_subjects",
    "read_image",
]
