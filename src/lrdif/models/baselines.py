"""Baselines trained by the same ``lrdif train`` command as LRDif.

ResNet-18 (He et al., CVPR 2016) is the backbone of most methods in the paper's
Tables 1-4 (RUL, DAN, SCN, EAC, MANet, ARM). No pretrained weights exist offline,
so it starts from random initialisation and gets the same data, augmentation and
budget as LRDif.

The stem is adapted to FER crops: ImageNet's 7x7/2 conv + 3x3/2 max-pool take a
224 image to 56x56 before the first stage (1/4). At 48x48 that would leave 12x12
for stage 1 and 2x2 for stage 4, so here a single 3x3/2 conv takes 48 -> 24 and
the four stages run at 24, 12, 6 and 3 pixels (64, 128, 256, 512 channels). Cost
at 48x48 greyscale: 0.62 GFLOP (0.31 G multiply-adds) per image forward, 11.17 M
parameters (pinned with ``torch.utils.flop_counter`` in ``tests/test_baselines.py``);
about 2x the 0.29 GFLOP of the default LRDif at 48x48.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lrdif.losses import cross_entropy
from lrdif.registry import MODELS
from lrdif.vocabulary import FERPLUS_CLASSES, IMAGE_MEAN, IMAGE_STD, ModelOutput


@dataclass
class ResNet18Config:
    """Architecture of :class:`ResNet18`; stored in every checkpoint."""

    in_channels: int = 1
    image_size: int = 48
    class_names: tuple[str, ...] = FERPLUS_CLASSES
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} differ in length")
        if len(self.class_names) < 2:
            raise ValueError(f"need at least 2 classes, got {self.class_names}")


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, *, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        # Zero-init the last BN so each block starts as the identity (Goyal et al. 2017):
        # trains faster from scratch, which is what a CPU budget needs.
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c_out, H/s, W/s)
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


@MODELS.register("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 classifier on (B, C_in, H, W) images in [0, 1]."""

    registry_name = "resnet18"
    config_class = ResNet18Config

    def __init__(self, *, config: ResNet18Config | None = None) -> None:
        super().__init__()
        config = config or ResNet18Config()
        self.config = config
        self.class_names = tuple(config.class_names)
        w0 = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, w0, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w0),
            nn.ReLU(inplace=True),
        )
        stages = []
        c_in = w0
        for i, (width, n) in enumerate(zip(config.widths, config.blocks, strict=True)):
            blocks = [BasicBlock(c_in=c_in, c_out=width, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(c_in=width, c_out=width, stride=1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, len(self.class_names))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(
        self,
        images: torch.Tensor,
        *,
        landmarks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """images (B, C_in, H, W) in [0, 1] -> logits (B, K), features (B, 512).

        ``landmarks`` and ``labels`` are accepted for the shared model contract and unused.
        """
        x = (images - IMAGE_MEAN) / IMAGE_STD
        x = self.stages(self.stem(x))  # (B, 512, H/16, W/16)
        features = x.mean(dim=(2, 3))  # (B, 512)
        return ModelOutput(logits=self.head(features), features=features, epr=None,
                           epr_teacher=None)

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy (paper Eq. 13, averaged over the batch)."""
        ce = cross_entropy(output.logits, labels)
        return {"total": ce, "ce": ce}
