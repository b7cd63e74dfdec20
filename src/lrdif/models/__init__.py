"""The models of lrdif: the LRDif stage wrappers and the baselines (registered in MODELS).

Importing this package registers every model and encoder, which ``load_model`` needs.
"""

from lrdif.models import baselines
from lrdif.models.lrdif import DiffusionConfig, LRDifConfig, LRDifStage1, LRDifStage2

__all__ = [
    "DiffusionConfig",
    "LRDifConfig",
    "LRDifStage1",
    "LRDifStage2",
    "baselines",
]
