from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lrdif.checkpoint import load_model, save_checkpoint
from lrdif.models.baselines import ResNet18, ResNet18Config
from lrdif.registry import MODELS

SEVEN = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


@pytest.mark.parametrize(("channels", "size", "classes", "batch"),
                         [(1, 48, ResNet18Config().class_names, 1), (3, 112, SEVEN, 8)])
def test_shapes_and_contract(channels: int, size: int, classes: tuple, batch: int) -> None:
    model = MODELS.get("resnet18")(
        config=ResNet18Config(in_channels=channels, image_size=size, class_names=classes)
    ).eval()
    x = torch.rand(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.logits.shape == (batch, len(classes)) and out.features.shape == (batch, 512)
    assert out.epr is None and out.epr_teacher is None
    assert model.class_names == classes and model.registry_name == "resnet18"


def test_flops_and_parameters_at_48x48_are_as_documented() -> None:
    model = ResNet18().eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, 48, 48))
    assert counter.get_total_flops() / 1e9 == pytest.approx(0.62, abs=0.01)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(11.17, abs=0.01)


def test_every_parameter_gets_a_gradient_and_the_loss_is_cross_entropy() -> None:
    torch.manual_seed(0)
    model = ResNet18(config=ResNet18Config(widths=(8, 8, 16, 16)))
    x, y = torch.rand(4, 1, 48, 48), torch.tensor([0, 1, 2, 7])
    out = model(x)
    losses = model.loss(out, y)
    assert set(losses) == {"total", "ce"}
    assert losses["ce"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits, y).item())
    losses["total"].backward()
    assert all(p.grad is not None for p in model.parameters())
    # The last BN of each block starts at zero (identity blocks), which blocks the gradient
    # of the convs before it on step 1 only: after one update every parameter learns.
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    model.loss(model(x), y)["total"].backward()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


def test_checkpoint_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = ResNet18(config=ResNet18Config(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1))).eval()
    save_checkpoint(tmp_path / "r.safetensors", model)
    loaded = load_model(tmp_path / "r.safetensors")
    x = torch.rand(3, 1, 48, 48)
    assert torch.equal(model(x).logits, loaded(x).logits)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        ResNet18Config(widths=(8, 8), blocks=(1, 1, 1, 1))
