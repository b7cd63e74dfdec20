"""DILnetwork: window cross-attention from landmark features to image features (Sec. 3.2).

- :func:`relative_position_index` - the Swin / POSTER++ index into the bias table ``b``.
- :func:`window_partition` / :func:`window_merge` - non-overlapping ``w x w`` windows.
- :class:`WindowCrossAttention` - Eq. 5-7: ``Q`` from landmark features, ``K, V`` from
  image features, ``N`` heads, ``softmax(Q K^T / sqrt(d) + b) V``, output projection.
- :class:`DILBlock` - Eq. 8-9: ``X' = MHCA(X) + X``; ``X'' = MLP(LN(X')) + X'``.
- :class:`DILnetwork` - one block per scale, giving ``O_1, O_2, O_3``.

Landmark and image maps are partitioned into the same windows, so each window's queries
come from the landmark features at the same positions as the image tokens they attend to
(with a single window per map, as in POSTER++, this is exactly the paper's reading).
Maps are ``(B, C, H, W)`` channels_last; tokens ``(B, M, C)``. Shapes in einops notation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_position_index(window: int) -> Tensor:
    """(M, M) index, ``M = window**2``, of the displacement between tokens i and j.

    Token ``i`` sits at ``(y_i, x_i)`` in the window (row-major). The displacement
    ``(y_i - y_j, x_i - x_j)`` lies in ``[-(w-1), w-1]^2``; shifted to ``[0, 2w-2]`` it
    indexes the ``(2w-1)^2`` rows of the bias table row-major, so equal displacements
    share one learned bias per head.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # two M
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)  # two M M, in [0, 2w-2]
    return delta[0] * (2 * window - 1) + delta[1]


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class WindowCrossAttention(nn.Module):
    """Eq. 5-7, within one window of ``M = w*w`` tokens, ``N = heads`` heads.

    ``Q = x_flm w_Q``, ``K = x_udc w_K``, ``V = x_udc w_V`` (Eq. 5);
    ``O_n = softmax(Q_n K_n^T / sqrt(d) + b) V_n`` (Eq. 6) with ``b`` a learned relative
    position bias, one table of ``(2w-1)^2 x heads``; ``O = [O_1..O_N] W_O`` (Eq. 7).

    Shapes: ``landmark_tokens``, ``image_tokens`` (B', M, C) -> (B', M, C).
    """

    def __init__(self, *, dim: int, heads: int, window: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"WindowCrossAttention: dim {dim} is not divisible by {heads}")
        self.heads = heads
        self.window = window
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.project_out = nn.Linear(dim, dim)  # W_O
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def relative_position_bias(self) -> Tensor:
        """The bias ``b`` of Eq. 6 as (heads, M, M)."""
        return self.bias_table[self.bias_index].permute(2, 0, 1)  # M M head -> head M M

    def forward(self, landmark_tokens: Tensor, image_tokens: Tensor) -> Tensor:
        b, m, c = image_tokens.shape
        if m != self.window ** 2:
            raise ValueError(f"expected windows of {self.window ** 2} tokens, got {m}")
        head_dim = c // self.heads
        q = self.to_q(landmark_tokens).reshape(b, m, self.heads, head_dim).transpose(1, 2)
        kv = self.to_kv(image_tokens).reshape(b, m, 2, self.heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each b head M d
        bias = self.relative_position_bias().unsqueeze(0).to(q.dtype)  # 1 head M M
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # b head M d
        return self.project_out(out.transpose(1, 2).reshape(b, m, c))


class DILBlock(nn.Module):
    """Eq. 8-9: windowed cross-attention and an MLP, both residual on the image tokens.

    Pre-norm: the landmark and image tokens are each layer-normalised before the
    attention. No layer-scale: with one block per scale, from-scratch training gains
    nothing from starting the branches near zero (POSTER++ needs it to preserve its
    pretrained backbones' features; we have none).

    Shapes: ``landmark_map``, ``image_map`` (B, C, H, W) -> ``O`` (B, C, H, W), H and W
    multiples of ``window``.
    """

    def __init__(self, *, dim: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.norm_landmarks = nn.LayerNorm(dim)
        self.norm_image = nn.LayerNorm(dim)
        self.attn = WindowCrossAttention(dim=dim, heads=heads, window=window)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, landmark_map: Tensor, image_map: Tensor) -> Tensor:
        _, _, h, w = image_map.shape
        image = window_partition(image_map.permute(0, 2, 3, 1), self.window)  # (b nw) M c
        landmarks = window_partition(landmark_map.permute(0, 2, 3, 1), self.window)
        x = image + self.attn(self.norm_landmarks(landmarks), self.norm_image(image))  # Eq. 8
        x = x + self.mlp(self.norm_mlp(x))  # Eq. 9
        return window_merge(x, self.window, h, w).permute(0, 3, 1, 2)  # b c h w


class DILnetwork(nn.Module):
    """One :class:`DILBlock` per scale: ``O_i = DIL_i(X_flm_i, F_i)``, i = 1..3.

    Shapes: ``landmark_maps[i]``, ``image_maps[i]`` (B, d_i, s_i, s_i) -> ``O_i`` same.
    """

    def __init__(self, *, dims: Sequence[int], heads: Sequence[int], window: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DILBlock(dim=d, heads=n, window=window, mlp_ratio=mlp_ratio)
            for d, n in zip(dims, heads, strict=True)
        )

    def forward(self, landmark_maps: Sequence[Tensor],
                image_maps: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(block(lm, img) for block, lm, img
                     in zip(self.blocks, landmark_maps, image_maps, strict=True))
