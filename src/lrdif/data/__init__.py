"""Data: safe image decoding, the data-set readers (one module each beside
:mod:`lrdif.data.base`) and the landmark sources; importing this registers both.

Training-time augmentation lives in :mod:`lrdif.data.transforms` (imports torch).
"""

from lrdif.data.base import FERDataset, LayoutError, Sample
from lrdif.data.csvset import CSVDataset
from lrdif.data.ferplus import FERPlus
from lrdif.data.folder import ImageFolder
from lrdif.data.images import ImageError, read_image
from lrdif.data.kdef import KDEF, kdef_test_subjects
from lrdif.data.landmarks import cache_landmarks
from lrdif.data.mixed import MixedDataset
from lrdif.data.rafdb import RAFDB

__all__ = [
    "KDEF",
    "RAFDB",
    "CSVDataset",
    "FERDataset",
    "FERPlus",
    "ImageError",
    "ImageFolder",
    "LayoutError",
    "MixedDataset",
    "Sample",
    "cache_landmarks",
    "kdef_test_subjects",
    "read_image",
]
