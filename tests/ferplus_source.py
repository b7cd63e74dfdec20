"""Where the tests find the real FERPlus data set (tests that need it skip without it).

``$LRDIF_FERPLUS`` when set (the one variable the README and docs/datasets.md
document, also the default data root of the shipped configs), else
``../shared/data/ferplus`` beside the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

FERPLUS = Path(
    os.environ.get("LRDIF_FERPLUS")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "ferplus"
)
MISSING = (f"real FERPlus not found at {FERPLUS}: set LRDIF_FERPLUS to a copy "
           "(README, docs/datasets.md)")
