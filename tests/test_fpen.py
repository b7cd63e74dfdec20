"""FPEN_S1 (Eq. 1) and FPEN_S2 (Eq. 15), and FPEN_S2's start from a trained FPEN_S1."""

from __future__ import annotations

import torch
from torch import nn

from lrdif.models.fpen import FPENS1, FPENS2
from lrdif.models.image_encoders import ConvImageEncoder
from lrdif.models.label_encoders import LearnedLabelEncoder


def _fpens(epr_dim: int = 24, layers: int = 3) -> tuple[FPENS1, FPENS2]:
    torch.manual_seed(0)
    s1 = FPENS1(
        image_encoder=ConvImageEncoder(in_channels=1, widths=(8, 16), blocks=(1, 1)),
        label_encoder=LearnedLabelEncoder(num_classes=7, dim=12),
        epr_dim=epr_dim,
        num_layers=layers,
    )
    s2 = FPENS2(
        image_encoder=ConvImageEncoder(in_channels=1, widths=(8, 16), blocks=(1, 1)),
        epr_dim=epr_dim,
        num_layers=layers,
    )
    return s1, s2


def test_shapes_and_layer_structure() -> None:
    s1, s2 = _fpens()
    x = torch.randn(5, 1, 48, 48)
    labels = torch.randint(0, 7, (5,))
    assert s1(x, labels).shape == (5, 24)
    assert s2(x).shape == (5, 24)
    linear_s1 = [m for m in s1.layers if isinstance(m, nn.Linear)]
    linear_s2 = [m for m in s2.layers if isinstance(m, nn.Linear)]
    assert len(linear_s1) == len(linear_s2) == 3
    # Only the first layer differs: it reads Concat(E_L, E_I) in S1 and E_I alone in S2.
    assert linear_s1[0].in_features == 12 + 16 and linear_s2[0].in_features == 16
    assert [m.weight.shape for m in linear_s1[1:]] == [m.weight.shape for m in linear_s2[1:]]


def test_stage1_epr_depends_on_the_label() -> None:
    s1, _ = _fpens()
    x = torch.randn(1, 1, 48, 48).expand(7, -1, -1, -1)
    z = s1(x, torch.arange(7))  # same image, every label
    assert torch.cdist(z, z).fill_diagonal_(1.0).min() > 1e-4


def test_fpen_s2_starts_as_fpen_s1_without_the_label() -> None:
    s1, s2 = _fpens()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        expected = s1.layers(torch.cat([torch.zeros(4, 12), s1.image_encoder(x)], dim=1))
        assert not torch.allclose(s2(x), expected)
        s2.init_from_fpen_s1(s1)
        assert torch.allclose(s2(x), expected, atol=1e-6)
    # A copy, not shared weights: training S2 leaves S1 alone.
    assert s2.image_encoder.body[0].weight.data_ptr() != s1.image_encoder.body[0].weight.data_ptr()


def test_label_dropout_zeroes_the_label_in_training_only() -> None:
    s1, _ = _fpens()
    s1.label_dropout = 0.5
    x = torch.randn(1, 1, 48, 48).expand(400, -1, -1, -1)
    labels = torch.full((400,), 3)
    with torch.no_grad():
        no_label = s1.layers(torch.cat([torch.zeros(1, 12), s1.image_encoder(x[:1])], dim=1))
        with_label = s1.eval()(x[:1], labels[:1])
        torch.manual_seed(0)
        z = s1.train()(x, labels)
    dropped = torch.isclose(z, no_label, atol=1e-5).all(dim=1)
    kept = torch.isclose(z, with_label, atol=1e-5).all(dim=1)
    assert bool((dropped ^ kept).all())  # each sample: the label or the zero embedding
    assert 150 < int(dropped.sum()) < 250  # about p = 0.5 of them
    with torch.no_grad():  # evaluation always reads the label
        assert torch.allclose(s1.eval()(x, labels), with_label.expand(400, -1), atol=1e-5)
