"""Test-session settings: matplotlib draws off-screen (no GUI backend probing)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
