"""Prior image encoders E_I that feed FPEN (paper Eq. 1 and 15).

The paper uses CLIP's image encoder. It is available here (``clip``, through
``transformers``), next to parts that need no downloaded foundation model:

- ``conv``: a small trainable conv net (the role of DiffIR's CPEN trunk);
- ``resnet18``: the trunk of a trained ``resnet18`` checkpoint, frozen (the role
  of CLIP's image tower when no foundation model is at hand: pretrained elsewhere,
  here on the training split by the same ``lrdif train`` command); the config names the
  file, whose state dict the caller reads (:func:`lrdif.checkpoint.encoder_source_weights`);
- ``backbone``: an ImageNet-pretrained CNN (:mod:`lrdif.models.backbones`), trainable.

Registry keys are the config names, in :data:`lrdif.registry.IMAGE_ENCODERS`. Every
image encoder maps a normalised image (B, C_in, H, W) (see
:data:`lrdif.vocabulary.IMAGE_MEAN`) to (B, out_dim). The label side, E_L, is
:mod:`lrdif.models.label_encoders`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrdif.models.backbones import build_backbone, pooled_features
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.models.clip import load_clip
from lrdif.registry import IMAGE_ENCODERS
from lrdif.vocabulary import IMAGE_MEAN, IMAGE_STD, CheckpointError

# OpenAI CLIP's pixel statistics (RGB), used by every public CLIP checkpoint.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The conv encoder's default stages (widths at 1/2, 1/4, 1/8 of the input side).
CONV_WIDTHS = (32, 64, 128)
CONV_BLOCKS = (1, 1, 1)


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU(0.1) - conv3x3, plus the input (DiffIR's CPEN block, no norm)."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, c, H, W) -> (B, c, H, W)
        return x + self.conv2(self.act(self.conv1(x)))


class ConvImageEncoder(nn.Module):
    """E_I ``conv``: a trainable CPEN-like conv net, image -> global feature vector.

    A stride-2 3x3 stem to ``widths[0]``, then per stage ``blocks[i]`` residual blocks at
    ``widths[i]`` and a stride-2 3x3 conv to the next width, then global average pooling.
    With the defaults a 48x48 grey face costs about 74 MFLOPs (24, 12 and 6 pixel maps).
    x (B, C_in, H, W) normalised -> (B, widths[-1]).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        widths: Sequence[int] = CONV_WIDTHS,
        blocks: Sequence[int] = CONV_BLOCKS,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} must pair up")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        ]
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers += [ResBlock(channels=width) for _ in range(n)]
            if i + 1 < len(widths):
                layers += [
                    nn.Conv2d(width, widths[i + 1], 3, stride=2, padding=1),
                    nn.LeakyReLU(0.1, inplace=True),
                ]
        self.body = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))  # (B, widths[-1], h, w) -> (B, widths[-1])


class CLIPImageEncoder(nn.Module):
    """E_I ``clip``: CLIP's image tower and projection, frozen (paper Sec. 3.1).

    The model's normalised input is mapped back to [0, 1], grey is replicated to RGB,
    resized (bilinear) to CLIP's input size and normalised with CLIP's statistics.
    x (B, C_in, H, W) normalised -> (B, projection_dim).
    """

    def __init__(self, *, in_channels: int, model: str, pretrained: bool = True) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"the CLIP image encoder takes 1 or 3 channels, got {in_channels}")
        clip = load_clip(model, pretrained=pretrained)
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        self.input_size = int(clip.config.vision_config.image_size)
        self.in_channels = in_channels
        self.out_dim = int(clip.config.projection_dim)
        # One affine map per channel: model-normalised -> [0, 1] -> CLIP-normalised.
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", IMAGE_STD / std, persistent=False)
        self.register_buffer("shift", (IMAGE_MEAN - mean) / std, persistent=False)

    def train(self, mode: bool = True) -> CLIPImageEncoder:
        """Frozen: stays in eval mode whatever the surrounding model does."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} channels, got {tuple(x.shape)}")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        size = self.input_size
        if x.shape[-2:] != (size, size):
            shrink = x.shape[-1] > size or x.shape[-2] > size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=shrink)
        pixels = x * self.scale + self.shift  # (B, 3, S, S) in CLIP's normalisation
        pooled = self.vision_model(pixel_values=pixels).pooler_output  # (B, hidden)
        return self.visual_projection(pooled)  # (B, projection_dim)


class ResNetImageEncoder(nn.Module):
    """E_I ``resnet18``: stem and stages of a trained :class:`~lrdif.models.baselines.ResNet18`,
    frozen, global average pooled.

    Both models normalise images with the same constants, so the trunk sees exactly the
    input it was trained on. x (B, C_in, H, W) normalised -> (B, widths[-1]).
    """

    def __init__(self, *, in_channels: int, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        net = ResNet18(config=ResNet18Config(in_channels=in_channels, widths=tuple(widths),
                                             blocks=tuple(blocks)))
        self.stem, self.stages = net.stem, net.stages
        self.out_dim = int(widths[-1])
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> ResNetImageEncoder:
        """Frozen: batch norm keeps its trained statistics whatever the surrounding model does."""
        return super().train(False)

    def load_trunk(self, state_dict: Mapping[str, Tensor], *, source: str) -> None:
        """Copy stem and stages from the state dict of a ``resnet18`` (read from ``source``)."""
        trunk = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        expected = self.state_dict()
        if set(trunk) != set(expected) or any(trunk[k].shape != v.shape
                                               for k, v in expected.items()):
            found = [v.shape[0] for k, v in trunk.items() if k.endswith(".0.conv2.weight")]
            raise CheckpointError(
                f"{source}: its ResNet-18 (widths {found}) does not match the image encoder "
                f"(in_channels {self.stem[0].in_channels}, widths "
                f"{[s[0].conv2.out_channels for s in self.stages]}); set "
                "image_encoder_kwargs widths/blocks to the checkpoint's"
            )
        self.load_state_dict(trunk)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, widths[-1])


class BackboneImageEncoder(nn.Module):
    """E_I ``backbone``: an ImageNet-pretrained CNN (lrdif.models.backbones), trainable,
    global average pooled; optionally started from a fine-tuned ``backbone`` classifier.

    The LRDif wrapper hands every encoder images normalised with IMAGE_MEAN/IMAGE_STD;
    this one maps them back to [0, 1], resizes to ``input_size``, repeats grey to RGB and
    applies the backbone's own normalisation. x (B, C_in, H, W) -> (B, 1280).
    """

    def __init__(self, *, backbone: str, input_size: int, pretrained: bool) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, pretrained=pretrained)
        self.input_size = input_size
        cls = type(self.backbone)
        mean, std = torch.tensor(cls.input_mean), torch.tensor(cls.input_std)
        # one affine: ((x * IMAGE_STD + IMAGE_MEAN) - mean) / std
        self.register_buffer("scale", (IMAGE_STD / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((IMAGE_MEAN - mean) / std).view(1, 3, 1, 1),
                             persistent=False)
        self.out_dim = cls.feature_dim

    def load_finetuned(self, weights: Mapping[str, Tensor], *, source: str) -> None:
        """Take the backbone of a ``backbone`` classifier's state dict (``lrdif train
        pretrained_backbone``), read from ``source``: E_I starts from the fine-tuned weights."""
        prefix = "backbone."
        trunk = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            self.backbone.load_state_dict(trunk)
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: its backbone does not match E_I ({exc})") from exc

    def forward(self, x: Tensor) -> Tensor:
        return pooled_features(self.backbone, x, scale=self.scale, shift=self.shift,
                               input_size=self.input_size)  # (B, 1280)


# --------------------------------------------------------------------------- registry
# Factories share one signature, so the stage wrappers build any image encoder the same
# way: (in_channels, pretrained, **kwargs). ``pretrained=False`` means "a checkpoint
# will fill the weights". An encoder whose pretrained weights the config names by file
# (resnet18, backbone) also takes ``weights``, the state dict its caller read from that
# file.


def _read_weights(
    name: str, checkpoint: str, weights: Mapping[str, Tensor] | None
) -> Mapping[str, Tensor]:
    """The state dict the caller read from ``checkpoint``, which encoder ``name`` needs."""
    if weights is None:
        raise ValueError(
            f"the {name} image encoder needs the weights of {checkpoint}: build the "
            "model with lrdif.checkpoint.new_model, which reads them"
        )
    return weights


@IMAGE_ENCODERS.register("conv")
def _image_conv(
    *,
    in_channels: int,
    pretrained: bool,
    widths: Sequence[int] = CONV_WIDTHS,
    blocks: Sequence[int] = CONV_BLOCKS,
) -> ConvImageEncoder:
    # Trained from scratch: there is nothing pretrained to load.
    return ConvImageEncoder(in_channels=in_channels, widths=widths, blocks=blocks)


@IMAGE_ENCODERS.register("resnet18")
def _image_resnet18(
    *,
    in_channels: int,
    pretrained: bool,
    checkpoint: str,
    widths: Sequence[int] = (64, 128, 256, 512),
    blocks: Sequence[int] = (2, 2, 2, 2),
    weights: Mapping[str, Tensor] | None = None,
) -> ResNetImageEncoder:
    enc = ResNetImageEncoder(in_channels=in_channels, widths=widths, blocks=blocks)
    if pretrained:
        enc.load_trunk(_read_weights("resnet18", checkpoint, weights), source=checkpoint)
    return enc


@IMAGE_ENCODERS.register("backbone")
def _image_backbone(
    *, in_channels: int, pretrained: bool, backbone: str = "mobilenetv2", input_size: int = 64,
    checkpoint: str | None = None, weights: Mapping[str, Tensor] | None = None,
) -> BackboneImageEncoder:
    # ImageNet weights, then (with ``checkpoint``) those of a fine-tuned backbone classifier.
    enc = BackboneImageEncoder(backbone=backbone, input_size=input_size, pretrained=pretrained)
    if pretrained and checkpoint is not None:
        enc.load_finetuned(_read_weights("backbone", checkpoint, weights), source=checkpoint)
    return enc


@IMAGE_ENCODERS.register("clip")
def _image_clip(*, in_channels: int, pretrained: bool, model: str) -> CLIPImageEncoder:
    return CLIPImageEncoder(in_channels=in_channels, model=model, pretrained=pretrained)


def build_image_encoder(
    name: str,
    *,
    in_channels: int,
    pretrained: bool,
    kwargs: dict[str, Any],
    weights: Mapping[str, Tensor] | None = None,
) -> nn.Module:
    """E_I by config name (``conv``, ``resnet18``, ``backbone``, ``clip``) with its config kwargs.

    ``weights``: the state dict that the config names by file (the checkpoint of resnet18
    or backbone), read by the caller; needed by such an encoder when ``pretrained``.
    """
    fixed: dict[str, Any] = {"in_channels": in_channels, "pretrained": pretrained}
    if weights is not None:
        fixed["weights"] = weights
    return IMAGE_ENCODERS.build_config(name, "image_encoder_kwargs", kwargs, **fixed)

