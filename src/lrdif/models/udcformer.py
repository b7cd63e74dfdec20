"""UDCformer: DTnetwork + DILnetwork + fusion transformer + classifier (paper Sec. 3.1-3.2).

``F_1, F_2, F_3 = DTnetwork(x, Z)`` (Eq. 2-4); ``O_i = DILnetwork(X_flm_i, F_i)``
(Eq. 5-9); ``x_i = Concat(F_i, O_i)`` and ``X = [x_1, x_2, x_3]`` (Eq. 10) go through
vanilla pre-norm transformer blocks (Eq. 11-12); the class token gives the features and
a linear layer the logits (trained with Eq. 13 by the stage wrappers).

Sizes: the stem downsamples by ``s``, the smallest power of two with
``image_size / s <= max_level1_size``; the three scales are ``image_size / s``, ``/2s``,
``/4s``. So an image size is allowed when it is a multiple of ``4 s``: with the default
``max_level1_size = 28``, 48 gives 24/12/6 and 112 gives 28/14/7 (as in POSTER++).
The DILnetwork's window is the coarsest map's side, so windows tile every scale and the
coarsest scale attends globally. See ``docs/udcformer.md`` for every choice and its cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from lrdif.models.dilnet import DILnetwork
from lrdif.models.dtnet import DTnetwork
from lrdif.models.landmarks import LandmarkEncoder


@dataclass
class UDCformerConfig:
    """Widths and depths of the UDCformer; defaults sized for 48x48 CPU training.

    Per-level tuples list levels 1, 2, 3 (finest first).

    Attributes:
        dims: channel widths ``d_i`` of ``F_i``, ``O_i`` and the landmark maps.
        dt_heads: DMNet heads per level (transposed attention, ``C' = d_i / heads``).
        dt_blocks: DT blocks per encoder level; decoder levels 2 and 1 repeat theirs.
        ffn_expansion: DGNet hidden width / ``d_i`` (DiffIR / Restormer use 2 to 2.66).
        max_level1_size: largest side of the level-1 map; sets the stem's downsampling.
        dil_heads: cross-attention heads per level (head width 16 by default).
        dil_mlp_ratio: DILBlock MLP hidden width / ``d_i``.
        landmark_sigma: Gaussian std of the landmark heatmaps, in level-1 pixels.
        fusion_dim: token width of the fusion transformer (= feature size D).
        fusion_depth: fusion transformer blocks.
        fusion_heads: fusion self-attention heads.
        fusion_mlp_ratio: fusion MLP hidden width / ``fusion_dim``.
    """

    dims: tuple[int, int, int] = (16, 64, 128)
    dt_heads: tuple[int, int, int] = (1, 2, 4)
    dt_blocks: tuple[int, int, int] = (1, 1, 2)
    ffn_expansion: float = 2.0
    max_level1_size: int = 28
    dil_heads: tuple[int, int, int] = (1, 4, 8)
    dil_mlp_ratio: float = 2.0
    landmark_sigma: float = 1.0
    fusion_dim: int = 96
    fusion_depth: int = 2
    fusion_heads: int = 4
    fusion_mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        for name in ("dims", "dt_heads", "dt_blocks", "dil_heads"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(isinstance(v, int) and v > 0 for v in value):
                raise ValueError(f"UDCformerConfig.{name} must be 3 positive integers "
                                 f"(levels 1, 2, 3), got {value!r}")
            setattr(self, name, value)
        for level, (d, h_dt, h_dil) in enumerate(
                zip(self.dims, self.dt_heads, self.dil_heads, strict=True), start=1):
            if d % 4 or d % h_dt or d % h_dil:
                raise ValueError(f"UDCformerConfig: dims[{level - 1}] = {d} must be divisible "
                                 f"by 4 and by its heads ({h_dt} DMNet, {h_dil} DIL)")
        if self.fusion_dim % self.fusion_heads:
            raise ValueError(f"UDCformerConfig: fusion_dim {self.fusion_dim} is not divisible "
                             f"by fusion_heads {self.fusion_heads}")


def stem_factor(image_size: int, max_level1_size: int) -> int:
    """Smallest power of two ``s`` with ``image_size / s <= max_level1_size``."""
    factor = 1
    while image_size > factor * max_level1_size:
        factor *= 2
    return factor


def is_allowed_image_size(image_size: int, max_level1_size: int) -> bool:
    """Whether ``image_size`` is a multiple of the total downsampling ``4 * stem_factor``."""
    return image_size > 0 and image_size % (4 * stem_factor(image_size, max_level1_size)) == 0


def _check_image_size(image_size: int, max_level1_size: int) -> None:
    if is_allowed_image_size(image_size, max_level1_size):
        return
    lower = next((n for n in range(image_size - 1, 0, -1)
                  if is_allowed_image_size(n, max_level1_size)), None)
    upper = next(n for n in range(image_size + 1, 2 * image_size + 64)
                 if is_allowed_image_size(n, max_level1_size))
    factor = 4 * stem_factor(image_size, max_level1_size)
    raise ValueError(
        f"UDCformer: image_size {image_size} is not allowed: with max_level1_size "
        f"{max_level1_size} the network downsamples it by {factor} in all, so it must be a "
        f"multiple of {factor}; nearest allowed sizes: "
        f"{', '.join(str(n) for n in (lower, upper) if n)}"
    )


def _cpu_flash_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                               out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls and convolutions ``fn()`` runs.

    ``torch.utils.flop_counter.FlopCounterMode``, plus the CPU kernel of
    ``scaled_dot_product_attention``, which it does not count by itself (torch 2.13).
    Element-wise work (norms, softmax, GELU) is not counted, as is usual.
    """
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    })
    with counter:
        fn()
    return counter.get_total_flops()


class MultiHeadSelfAttention(nn.Module):
    """MSA of Eq. 11 (scaled dot-product attention). Shapes: (B, N, D) -> (B, N, D)."""

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.project_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.to_qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each b head n d'
        out = F.scaled_dot_product_attention(q, k, v)  # b head n d'
        return self.project_out(out.transpose(1, 2).reshape(b, n, d))


class FusionBlock(nn.Module):
    """Eq. 11-12, pre-norm: ``X' = MSA(LN(X)) + X``; ``y' = MLP(LN(X')) + X'``."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim=dim, heads=heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_attn(x))  # Eq. 11
        return x + self.mlp(self.norm_mlp(x))  # Eq. 12


class Fusion(nn.Module):
    """Eq. 10-12: multi-scale tokens ``[x_1, x_2, x_3]`` + a class token -> features.

    Each ``x_i = Concat(F_i, O_i)`` is average-pooled to the coarsest grid (``s_3 x s_3``,
    so 3 * 36 = 108 tokens at 48x48, 3 * 49 = 147 at 112x112) and projected to
    ``dim``; learned position embeddings mark both position and scale.

    ``image_feature_dim`` D_I: the image encoder's features E_I(x) join as one more token
    (projected to ``dim``), so the pretrained encoder reaches the classifier directly and
    not only through the EPR, as POSTER++ feeds its backbone's features to its fusion.
    An addition to the paper (``LRDifConfig.image_token``); None: the paper's tokens.

    Shapes: ``features[i]``, ``outputs[i]`` (B, d_i, s_i, s_i), ``image_features``
    (B, D_I) or None -> (B, dim).
    """

    def __init__(self, *, dims: Sequence[int], grid: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float, image_feature_dim: int | None = None) -> None:
        super().__init__()
        self.grid = grid
        self.to_tokens = nn.ModuleList(nn.Linear(2 * d, dim) for d in dims)
        self.to_image_token = (None if image_feature_dim is None
                               else nn.Linear(image_feature_dim, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        extra = 0 if image_feature_dim is None else 1
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + extra + len(dims) * grid * grid, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            FusionBlock(dim=dim, heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Sequence[Tensor], outputs: Sequence[Tensor],
                image_features: Tensor | None = None) -> Tensor:
        if (image_features is None) != (self.to_image_token is None):
            raise ValueError("Fusion: image_features must be given exactly when the fusion "
                             "was built with image_feature_dim (LRDifConfig.image_token)")
        tokens = []
        if self.to_image_token is not None:
            tokens.append(self.to_image_token(image_features).unsqueeze(1))  # b 1 D
        for to_tokens, f, o in zip(self.to_tokens, features, outputs, strict=True):
            x = torch.cat([f, o], dim=1)  # Eq. 10: b (two d) s s
            if x.shape[-1] != self.grid:
                x = F.avg_pool2d(x, x.shape[-1] // self.grid)  # b (two d) grid grid
            tokens.append(to_tokens(x.permute(0, 2, 3, 1).flatten(1, 2)))  # b (grid grid) D
        cls = self.cls_token.expand(tokens[0].shape[0], -1, -1)
        x = torch.cat([cls, *tokens], dim=1) + self.pos_embed  # b (1 + 3 grid^2) D
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])


class UDCformer(nn.Module):
    """The UDCformer: image + EPR (+ landmarks) -> (logits, features).

    Args:
        config: widths and depths.
        in_channels: image channels (1 grey, 3 RGB).
        image_size: side of the square input; must be allowed (see module docstring).
        num_classes: K.
        epr_dim: width C of the EPR ``Z``.
        image_feature_dim: D_I when E_I(x) joins the fusion as a token (:class:`Fusion`).

    ``forward(x, epr, landmarks=None, image_features=None)``: ``x`` (B, C_in, H, W) already
    normalised, ``epr`` (B, C), ``landmarks`` (B, 468, 2) face-mesh points ``(x, y)`` in
    [0, 1] with NaN rows for samples without a face, or None (learned landmark maps for
    all), ``image_features`` (B, D_I) E_I(x) or None -> ``logits`` (B, K), ``features``
    (B, fusion_dim).
    """

    def __init__(self, *, config: UDCformerConfig, in_channels: int, image_size: int,
                 num_classes: int, epr_dim: int, image_feature_dim: int | None = None) -> None:
        super().__init__()
        _check_image_size(image_size, config.max_level1_size)
        self.config = config
        self.in_channels = in_channels
        self.image_size = image_size
        self.epr_dim = epr_dim
        stem = stem_factor(image_size, config.max_level1_size)
        level1 = image_size // stem
        self.level_sizes = (level1, level1 // 2, level1 // 4)
        window = self.level_sizes[2]
        self.dtnet = DTnetwork(in_channels=in_channels, dims=config.dims, heads=config.dt_heads,
                               blocks=config.dt_blocks, ffn_expansion=config.ffn_expansion,
                               epr_dim=epr_dim, stem_factor=stem)
        self.landmark_encoder = LandmarkEncoder(dims=config.dims, level1_size=level1,
                                                sigma=config.landmark_sigma)
        self.dilnet = DILnetwork(dims=config.dims, heads=config.dil_heads, window=window,
                                 mlp_ratio=config.dil_mlp_ratio)
        self.fusion = Fusion(dims=config.dims, grid=window, dim=config.fusion_dim,
                             depth=config.fusion_depth, heads=config.fusion_heads,
                             mlp_ratio=config.fusion_mlp_ratio,
                             image_feature_dim=image_feature_dim)
        self.classifier = nn.Linear(config.fusion_dim, num_classes)
        self.to(memory_format=torch.channels_last)

    def _check_inputs(self, x: Tensor, epr: Tensor) -> None:
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"UDCformer was built for images (B, {', '.join(map(str, expected))})"
                             f", got {tuple(x.shape)}; build it with the image_size and "
                             "in_channels of the data (allowed sizes: multiples of "
                             f"{4 * self.image_size // self.level_sizes[0]} near "
                             f"{self.image_size})")
        if epr.shape != (x.shape[0], self.epr_dim):
            raise ValueError(f"UDCformer expects an EPR of shape (B={x.shape[0]}, "
                             f"{self.epr_dim}), got {tuple(epr.shape)}")

    def forward(self, x: Tensor, epr: Tensor, landmarks: Tensor | None = None,
                image_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check_inputs(x, epr)
        x = x.contiguous(memory_format=torch.channels_last)
        features = self.dtnet(x, epr)  # F_1, F_2, F_3
        if landmarks is not None:
            landmarks = landmarks.to(device=x.device, dtype=x.dtype)
        landmark_maps = self.landmark_encoder(landmarks, x.shape[0])  # X_flm at 3 scales
        outputs = self.dilnet(landmark_maps, features)  # O_1, O_2, O_3
        pooled = self.fusion(features, outputs, image_features)  # b D
        return self.classifier(pooled), pooled
