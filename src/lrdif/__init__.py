"""lrdif: facial expression recognition for under-display cameras (the LRDif paper)."""

__version__ = "0.1.0"
