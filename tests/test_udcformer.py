"""UDCformer end to end (Eq. 2-12): shapes, sizes, landmarks, gradients, learning, cost."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lrdif.config import ConfigError, from_dict, to_dict
from lrdif.data.landmarks import FACE_MESH_POINTS
from lrdif.models.udcformer import (
    UDCformer,
    UDCformerConfig,
    count_flops,
    is_allowed_image_size,
    stem_factor,
)

EPR_DIM = 16
SMALL = UDCformerConfig(dims=(16, 32, 64), dt_heads=(1, 2, 4), dt_blocks=(1, 1, 1),
                        dil_heads=(1, 2, 4), fusion_dim=32, fusion_depth=1, fusion_heads=2)


def build(config: UDCformerConfig = SMALL, *, in_channels: int = 1, image_size: int = 48,
          num_classes: int = 7) -> UDCformer:
    return UDCformer(config=config, in_channels=in_channels, image_size=image_size,
                     num_classes=num_classes, epr_dim=EPR_DIM)


def random_landmarks(batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(batch, FACE_MESH_POINTS, 2, generator=generator)


@pytest.mark.parametrize("with_landmarks", [False, True])
@pytest.mark.parametrize(("in_channels", "size", "classes"), [(1, 48, 8), (3, 112, 7)])
@pytest.mark.parametrize("batch", [1, 8])
def test_shapes(batch, in_channels, size, classes, with_landmarks):
    torch.manual_seed(0)
    model = build(UDCformerConfig(), in_channels=in_channels, image_size=size,
                  num_classes=classes).eval()
    landmarks = random_landmarks(batch) if with_landmarks else None
    with torch.no_grad():
        logits, features = model(torch.randn(batch, in_channels, size, size),
                                 torch.randn(batch, EPR_DIM), landmarks)
    assert logits.shape == (batch, classes)
    assert features.shape == (batch, UDCformerConfig().fusion_dim)
    assert torch.isfinite(logits).all()


def test_scales_follow_the_stem_rule():
    assert stem_factor(48, 28) == 2 and build(image_size=48).level_sizes == (24, 12, 6)
    assert stem_factor(112, 28) == 4 and build(image_size=112).level_sizes == (28, 14, 7)
    assert stem_factor(224, 28) == 8
    assert [n for n in range(8, 120) if is_allowed_image_size(n, 28)] == [
        8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112]


def test_disallowed_sizes_are_refused_with_the_nearest_allowed_ones():
    with pytest.raises(ValueError, match=r"multiple of 16; nearest allowed sizes: 96, 112"):
        build(image_size=100)
    model = build(image_size=48)
    with pytest.raises(ValueError, match=r"built for images \(B, 1, 48, 48\)"):
        model(torch.randn(2, 1, 64, 64), torch.randn(2, EPR_DIM))
    with pytest.raises(ValueError, match="EPR of shape"):
        model(torch.randn(2, 1, 48, 48), torch.randn(2, EPR_DIM + 1))


def test_a_sample_without_landmarks_uses_the_learned_maps():
    torch.manual_seed(0)
    model = build().eval()
    x, epr = torch.randn(3, 1, 48, 48), torch.randn(3, EPR_DIM)
    landmarks = random_landmarks(3)
    landmarks[1] = float("nan")
    with torch.no_grad():
        mixed, _ = model(x, epr, landmarks)
        learned, _ = model(x, epr, None)
        per_sample = torch.cat([model(x[i:i + 1], epr[i:i + 1], landmarks[i:i + 1])[0]
                                for i in range(3)])
    torch.testing.assert_close(mixed[1], learned[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], learned[0], atol=1e-4)
    torch.testing.assert_close(mixed, per_sample, atol=1e-5, rtol=1e-5)  # samples independent


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = build(UDCformerConfig())
    landmarks = random_landmarks(4)
    landmarks[2:] = float("nan")  # two with landmarks (encoder), two without (learned maps)
    logits, _ = model(torch.randn(4, 1, 48, 48), torch.randn(4, EPR_DIM), landmarks)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert missing == []


def test_the_udcformer_learns_a_separable_problem():
    torch.manual_seed(0)
    classes, per_class = 4, 6
    labels = torch.arange(classes).repeat_interleave(per_class)
    x = 0.3 * torch.randn(len(labels), 1, 32, 32)
    for i, label in enumerate(labels.tolist()):  # a bright quadrant per class
        row, col = divmod(label, 2)
        x[i, 0, 16 * row:16 * row + 16, 16 * col:16 * col + 16] += 1.0
    epr = torch.randn(len(labels), EPR_DIM)
    # Levels 8/4/2 keep each step cheap; the code paths are those of the full-size model.
    model = build(dataclasses.replace(SMALL, max_level1_size=8), image_size=32,
                  num_classes=classes)
    assert model.level_sizes == (8, 4, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x, epr)[0], labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] > 1.2  # about ln 4 at the start
    assert min(losses[-3:]) < 0.15 * losses[0]


def test_config_round_trips_through_the_config_reader():
    config = UDCformerConfig(dims=(24, 48, 96), fusion_depth=3)
    assert from_dict(UDCformerConfig, to_dict(config)) == config
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(UDCformerConfig, {"dimz": [8, 16, 32]})
    with pytest.raises(ValueError, match="3 positive integers"):
        UDCformerConfig(dims=(16, 32))
    with pytest.raises(ValueError, match="divisible"):
        UDCformerConfig(dims=(18, 36, 72))


def test_default_forward_cost_at_48x48_stays_in_the_cpu_budget():
    model = build(UDCformerConfig(), image_size=48, num_classes=8).eval()
    with torch.no_grad():
        flops = count_flops(lambda: model(torch.randn(1, 1, 48, 48), torch.randn(1, EPR_DIM),
                                          random_landmarks(1)))
    assert 100e6 < flops < 350e6
