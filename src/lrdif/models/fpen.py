"""FPEN, the condensed preliminary extraction network (paper Eq. 1 and Eq. 15).

FPEN_S1 (Eq. 1): Z = FPEN_S1(Concat(E_L(y), E_I(x))), the EPR Z in R^C of stage 1.
FPEN_S2 (Eq. 15): x_S2 = FPEN_S2(E_I(x)), the image-only condition of the stage-2
denoiser; the same layers, only the first one is narrower.

Each FPEN owns its encoders, so the frozen stage-1 teacher of stage 2 is one module
(E_I, E_L and the layers together). The layers are Linear + LeakyReLU(0.1), as in
DiffIR's CPEN head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _layers(in_dim: int, epr_dim: int, num_layers: int) -> nn.Sequential:
    if num_layers < 1:
        raise ValueError(f"FPEN needs >= 1 linear layer, got {num_layers}")
    layers: list[nn.Module] = [nn.Linear(in_dim, epr_dim), nn.LeakyReLU(0.1)]
    for _ in range(num_layers - 1):
        layers += [nn.Linear(epr_dim, epr_dim), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


def normalize_epr(z: Tensor) -> Tensor:
    """Each EPR (B, C) to zero mean and unit variance over its C values (LayerNorm without
    weights): the scale of the unit-variance noise of the stage-2 diffusion (Eq. 14),
    so Z keeps a signal-to-noise ratio of alpha_bar_t / (1 - alpha_bar_t) at step t."""
    return F.layer_norm(z, (int(z.shape[-1]),))


class FPENS1(nn.Module):
    """Eq. 1: image x (B, C_in, H, W) normalised and labels y -> EPR Z (B, C).

    ``labels`` are (B,) class indices or (B, K) class probabilities (see the encoders).

    ``label_dropout`` p: in training, each sample's E_L(y) is replaced by zeros with
    probability p. Without it the label alone decides the EPR, and stage 1 learns a
    UDCformer that reads the EPR and ignores the face (100% accuracy in one epoch); with
    it, stage 1 also learns to classify from the image, with exactly the input that
    FPEN_S2 starts from (:meth:`FPENS2.init_from_fpen_s1`: a zero label embedding).
    p = 0 is the paper's stage 1.
    """

    def __init__(
        self, *, image_encoder: nn.Module, label_encoder: nn.Module, epr_dim: int,
        num_layers: int, label_dropout: float = 0.0, normalize: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.image_encoder = image_encoder
        self.label_encoder = label_encoder
        self.label_dim = label_encoder.out_dim
        self.label_dropout = label_dropout
        self.normalize = normalize
        self.layers = _layers(label_encoder.out_dim + image_encoder.out_dim, epr_dim, num_layers)

    def forward(self, x: Tensor, labels: Tensor | None, e_i: Tensor | None = None) -> Tensor:
        """``e_i`` (B, D_I): E_I(x) when the caller has computed it (a shared frozen E_I).

        ``labels=None`` gives the label-free EPR, E_L(y) = 0: what label dropout trains
        and what FPEN_S2 starts from (the image path that stage 2 inherits).
        """
        if e_i is None:
            e_i = self.image_encoder(x)  # (B, D_I)
        if labels is None:
            e_l = e_i.new_zeros(e_i.shape[0], self.label_dim)
        else:
            e_l = self.label_encoder(labels)  # (B, D_L)
        if self.training and self.label_dropout > 0:
            keep = torch.rand(e_l.shape[0], 1, device=e_l.device) >= self.label_dropout
            e_l = e_l * keep.to(e_l.dtype)
        z = self.layers(torch.cat([e_l, e_i], dim=1))  # (B, C)
        return normalize_epr(z) if self.normalize else z


class FPENS2(nn.Module):
    """Eq. 15: image x (B, C_in, H, W) normalised -> condition x_S2 (B, C)."""

    def __init__(self, *, image_encoder: nn.Module, epr_dim: int, num_layers: int,
                 normalize: bool = False) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.normalize = normalize
        self.layers = _layers(image_encoder.out_dim, epr_dim, num_layers)

    def forward(self, x: Tensor, e_i: Tensor | None = None) -> Tensor:
        """``e_i`` (B, D_I): E_I(x) when the caller has computed it."""
        if e_i is None:
            e_i = self.image_encoder(x)
        x_s2 = self.layers(e_i)  # (B, D_I) -> (B, C)
        return normalize_epr(x_s2) if self.normalize else x_s2

    @torch.no_grad()
    def init_from_fpen_s1(self, fpen_s1: FPENS1) -> None:
        """Start from the trained stage-1 FPEN with the label's contribution removed.

        E_I and every layer after the first are copied; the first layer keeps the
        stage-1 weight columns that read E_I(x) (Concat puts E_L(y) first) and its bias.
        So at the start of stage 2, x_S2 is what FPEN_S1 computes for a zero label
        embedding.
        """
        self.image_encoder.load_state_dict(fpen_s1.image_encoder.state_dict())
        first_s1, first_s2 = fpen_s1.layers[0], self.layers[0]
        first_s2.weight.copy_(first_s1.weight[:, fpen_s1.label_dim :])
        first_s2.bias.copy_(first_s1.bias)
        for s1_layer, s2_layer in zip(fpen_s1.layers[1:], self.layers[1:], strict=True):
            s2_layer.load_state_dict(s1_layer.state_dict())
