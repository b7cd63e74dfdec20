"""Training: configs, the loop (stage 1, stage 2, baselines), distributed data parallel."""

from lrdif.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config"]
