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
from lrdif.models.backbones import BACKBONES, build_backbone, pooled_features
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


class Classifier(nn.Module):
    """What every baseline shares: the model contract around its ``classify`` (images ->
    logits, features) and cross-entropy on its logits."""

    def forward(
        self,
        images: torch.Tensor,
        *,
        landmarks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> ModelOutput:
        """``landmarks`` and ``labels`` are accepted for the shared contract and unused."""
        logits, features = self.classify(images)
        return ModelOutput(logits=logits, features=features, epr=None, epr_teacher=None)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy (paper Eq. 13, averaged over the batch)."""
        ce = cross_entropy(output.logits, labels)
        return {"total": ce, "ce": ce}


@MODELS.register("resnet18")
class ResNet18(Classifier):
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

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C_in, H, W) in [0, 1] -> logits (B, K), features (B, 512)."""
        x = (images - IMAGE_MEAN) / IMAGE_STD
        x = self.stages(self.stem(x))  # (B, 512, H/16, W/16)
        features = x.mean(dim=(2, 3))  # (B, 512)
        return self.head(features), features


@dataclass
class BackboneClassifierConfig:
    """Architecture of :class:`BackboneClassifier`; stored in every checkpoint."""

    backbone: str = "mobilenetv2"  # a key of lrdif.models.backbones.BACKBONES
    in_channels: int = 1
    image_size: int = 48
    input_size: int = 64  # the side the backbone sees (bilinear resize inside the model)
    class_names: tuple[str, ...] = FERPLUS_CLASSES
    dropout: float = 0.2
    test_flip: bool = True  # evaluation averages the logits of the image and its mirror

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; known: {sorted(BACKBONES)}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.class_names) < 2:
            raise ValueError(f"need at least 2 classes, got {self.class_names}")


@MODELS.register("backbone")
class BackboneClassifier(Classifier):
    """An ImageNet-pretrained backbone (lrdif.models.backbones) fine-tuned as a classifier.

    The strongest simple baseline for LRDif: the same pretrained network LRDif uses as
    its image encoder E_I, alone. Grey images are repeated to RGB, resized to
    ``input_size`` and normalised the way the backbone was trained; global average
    pooling, dropout and a linear layer give the logits.
    """

    registry_name = "backbone"
    config_class = BackboneClassifierConfig

    def __init__(self, *, config: BackboneClassifierConfig | None = None,
                 pretrained: bool = True) -> None:
        super().__init__()
        config = config or BackboneClassifierConfig()
        self.config = config
        self.class_names = tuple(config.class_names)
        self.backbone = build_backbone(config.backbone, pretrained=pretrained)
        cls = type(self.backbone)
        mean, std = torch.tensor(cls.input_mean), torch.tensor(cls.input_std)
        # images in [0, 1] -> the backbone's input: (x - mean) / std
        self.register_buffer("scale", (1.0 / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1), persistent=False)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(cls.feature_dim, len(self.class_names))

    @classmethod
    def build_for_checkpoint(cls, config: BackboneClassifierConfig) -> BackboneClassifier:
        """The architecture without the ImageNet weights (a checkpoint overwrites them)."""
        return cls(config=config, pretrained=False)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C_in, H, W) in [0, 1] -> logits (B, K), features (B, 1280).

        In eval mode with ``test_flip`` the logits average the image and its mirror.
        """
        features = self.pooled_features(images)  # (B, 1280)
        logits = self.head(self.dropout(features))
        if self.config.test_flip and not self.training:
            logits = 0.5 * (logits + self.head(self.pooled_features(images.flip(-1))))
        return logits, features

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, C_in, H, W) in [0, 1] -> the backbone's pooled features (B, 1280)."""
        return pooled_features(self.backbone, images, scale=self.scale, shift=self.shift,
                               input_size=self.config.input_size)

