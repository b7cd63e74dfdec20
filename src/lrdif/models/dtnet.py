"""DTnetwork: the EPR-guided U-Net transformer of LRDif (paper Sec. 3.1, Eq. 2-4).

One class per block of the paper, in the order they build on each other:

- :class:`EPRModulation` - Eq. 2, ``F' = W1 Z * LN(F) + W2 Z``.
- :class:`DMNet` - Eq. 3, dynamic multi-head *transposed* attention (channels attend to
  channels, a ``C' x C'`` map per head, cost linear in the pixel count).
- :class:`DGNet` - Eq. 4, gated feed-forward (1x1 conv, 3x3 depthwise conv, GELU gate).
- :class:`DTBlock` - modulation before each of DMNet and DGNet, residuals around both.
- :class:`Downsample` / :class:`Upsample` - pixel (un)shuffle between levels.
- :class:`DTnetwork` - a three-level U-Net of DT blocks; yields ``F_1, F_2, F_3``.

The design follows DiffIR / Restormer (see ``shared/notes/reference-facts.md``); widths,
depths and the stem are chosen for 48x48 CPU training (``docs/udcformer.md``).

Tensors are ``(B, C, H, W)`` in ``torch.channels_last`` memory format, so the channel axis
is the fastest one and ``permute(0, 2, 3, 1)`` gives a contiguous ``(B, H, W, C)`` view.
Shape comments use einops notation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS_LAST = torch.channels_last


class EPRModulation(nn.Module):
    """Eq. 2: ``F' = (W1 Z) * LN(F) + (W2 Z)``, LayerNorm over channels.

    ``W1, W2`` are one bias-free ``Linear(epr_dim, 2 * dim)``. The LayerNorm has no affine
    parameters of its own: the per-sample scale and shift from the EPR take that role
    (an extra affine would be a redundant re-parameterisation of ``W1, W2``).

    Shapes: ``f`` (B, C, H, W), ``z`` (B, epr_dim) -> (B, C, H, W).
    """

    def __init__(self, *, dim: int, epr_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.to_scale_shift = nn.Linear(epr_dim, 2 * dim, bias=False)

    def forward(self, f: Tensor, z: Tensor) -> Tensor:
        scale, shift = self.to_scale_shift(z).chunk(2, dim=1)  # b (two c) -> b c, b c
        tokens = f.permute(0, 2, 3, 1)  # b c h w -> b h w c (a free view in channels_last)
        normed = F.layer_norm(tokens, (self.dim,))
        out = normed * scale[:, None, None, :] + shift[:, None, None, :]
        return out.permute(0, 3, 1, 2)  # b h w c -> b c h w (channels_last strides)


class DMNet(nn.Module):
    """Eq. 3: dynamic multi-head transposed attention (Restormer's MDTA).

    A 1x1 conv gives q, k, v, a 3x3 depthwise conv adds local context; per head, q and k
    are L2-normalised along the pixel axis, so ``A = softmax(alpha * q^T k)`` is a
    ``C' x C'`` map (``C' = C / heads``) whose cost is linear in ``H * W``. ``alpha`` is a
    learnable per-head temperature, initialised to 1 (the paper writes ``/ alpha``; we
    learn its inverse, which is the same family). A 1x1 conv ``W_c`` projects the result.
    The residual ``+ F`` of Eq. 3 is added by :class:`DTBlock`.

    Shapes: ``f_mod`` (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, *, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"DMNet: dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.to_qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def _qkv(self, f_mod: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, c, h, w = f_mod.shape
        qkv = self.qkv_dwconv(self.to_qkv(f_mod)).permute(0, 2, 3, 1)  # b h w (three c)
        qkv = qkv.reshape(b, h * w, 3, self.heads, c // self.heads)  # b (h w) three head c'
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each b head (h w) c'
        return q, k, v

    def _attention(self, q: Tensor, k: Tensor) -> Tensor:
        q = F.normalize(q, dim=-2)  # L2 over the pixel axis
        k = F.normalize(k, dim=-2)
        logits = q.transpose(-2, -1) @ k  # b head c' (h w) @ b head (h w) c' -> b head c' c'
        return (logits * self.temperature).softmax(dim=-1)

    def attention(self, f_mod: Tensor) -> Tensor:
        """The transposed attention map ``(B, heads, C', C')`` for a modulated input."""
        q, k, _ = self._qkv(f_mod)
        return self._attention(q, k)

    def forward(self, f_mod: Tensor) -> Tensor:
        b, c, h, w = f_mod.shape
        q, k, v = self._qkv(f_mod)
        attn = self._attention(q, k)  # b head c' c'
        out = v @ attn.transpose(-2, -1)  # b head (h w) c'
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, c)  # b (h w) head c' -> b h w c
        return self.project_out(out.permute(0, 3, 1, 2))  # channels_last b c h w


class DGNet(nn.Module):
    """Eq. 4: gated feed-forward ``GELU(W_d1 W_c1 F') * (W_d2 W_c2 F')``, then 1x1 back.

    ``W_c`` is a 1x1 conv to ``2 * hidden`` channels, ``W_d`` a 3x3 depthwise conv; the
    two halves form the GELU gate and the value. A final 1x1 conv returns to ``dim``
    channels (Eq. 4 leaves it implicit; it is needed because ``hidden != dim``). The
    residual ``+ F`` is added by :class:`DTBlock`.

    Shapes: ``f_mod`` (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, *, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden,
                                bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, f_mod: Tensor) -> Tensor:
        gate, value = self.dwconv(self.project_in(f_mod)).chunk(2, dim=1)  # b hidden h w
        return self.project_out(F.gelu(gate) * value)


class DTBlock(nn.Module):
    """One dynamic transformer block: ``F += DMNet(Eq2(F, Z))``; ``F += DGNet(Eq2(F, Z))``.

    Shapes: ``f`` (B, C, H, W), ``z`` (B, epr_dim) -> (B, C, H, W).
    """

    def __init__(self, *, dim: int, heads: int, ffn_expansion: float, epr_dim: int) -> None:
        super().__init__()
        self.modulate_attn = EPRModulation(dim=dim, epr_dim=epr_dim)
        self.attn = DMNet(dim=dim, heads=heads)
        self.modulate_ffn = EPRModulation(dim=dim, epr_dim=epr_dim)
        self.ffn = DGNet(dim=dim, expansion=ffn_expansion)

    def forward(self, f: Tensor, z: Tensor) -> Tensor:
        f = f + self.attn(self.modulate_attn(f, z))  # Eq. 2, 3
        return f + self.ffn(self.modulate_ffn(f, z))  # Eq. 2, 4


class DTStage(nn.Module):
    """``depth`` DT blocks at one level of the U-Net, all guided by the same EPR."""

    def __init__(self, *, depth: int, dim: int, heads: int, ffn_expansion: float,
                 epr_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            DTBlock(dim=dim, heads=heads, ffn_expansion=ffn_expansion, epr_dim=epr_dim)
            for _ in range(depth)
        )

    def forward(self, f: Tensor, z: Tensor) -> Tensor:
        for block in self.blocks:
            f = block(f, z)
        return f


class Downsample(nn.Module):
    """Halve the resolution: 3x3 conv to ``out / 4`` channels, then pixel-unshuffle by 2.

    Shapes: (B, C_in, H, W) -> (B, C_out, H/2, W/2).
    """

    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if out_dim % 4:
            raise ValueError(f"Downsample: out_dim {out_dim} is not divisible by 4")
        self.conv = nn.Conv2d(in_dim, out_dim // 4, 3, padding=1, bias=False)

    def forward(self, f: Tensor) -> Tensor:
        return F.pixel_unshuffle(self.conv(f), 2).contiguous(memory_format=CHANNELS_LAST)


class Upsample(nn.Module):
    """Double the resolution: 1x1 conv to ``4 * out`` channels, then pixel-shuffle by 2.

    A 1x1 rather than Restormer's 3x3 conv: at the coarsest level the 3x3 would cost
    more than a whole DT block, and the DT blocks already mix 3x3 neighbourhoods.

    Shapes: (B, C_in, H, W) -> (B, C_out, 2H, 2W).
    """

    def __init__(self, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, 4 * out_dim, 1, bias=False)

    def forward(self, f: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(f), 2).contiguous(memory_format=CHANNELS_LAST)


class Stem(nn.Module):
    """Patch embedding: pixel-unshuffle by ``factor`` then a 3x3 conv to ``dim`` channels.

    Downsampling first keeps every DT block off the full-resolution grid, where it would
    cost ``factor**2`` times more; no pixel is dropped, they move into channels.

    Shapes: (B, C_in, H, W) -> (B, dim, H/factor, W/factor).
    """

    def __init__(self, *, in_channels: int, dim: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(in_channels * factor * factor, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.factor > 1:
            x = F.pixel_unshuffle(x, self.factor).contiguous(memory_format=CHANNELS_LAST)
        return self.conv(x)


class DTnetwork(nn.Module):
    """The DTnetwork: a three-level U-Net of DT blocks (paper Sec. 3.1, Fig. 2 red box).

    ``stem -> enc_1 -> down -> enc_2 -> down -> latent (= F_3) -> up, skip -> dec_2 (= F_2)
    -> up, skip -> dec_1 (= F_1)``. Skips are concatenated and reduced by a 1x1 conv
    (Restormer). Each decoder level has as many blocks as its encoder level. So every
    ``F_i`` has seen the coarsest level's context and, for ``i < 3``, the fine detail of
    its encoder level.

    Shapes: ``x`` (B, C_in, H, W), ``z`` (B, epr_dim) -> ``F_1`` (B, d1, H/s, W/s),
    ``F_2`` (B, d2, H/2s, W/2s), ``F_3`` (B, d3, H/4s, W/4s), with ``s = stem_factor``.
    """

    def __init__(self, *, in_channels: int, dims: Sequence[int], heads: Sequence[int],
                 blocks: Sequence[int], ffn_expansion: float, epr_dim: int,
                 stem_factor: int) -> None:
        super().__init__()
        d1, d2, d3 = dims

        def stage(level: int) -> DTStage:
            return DTStage(depth=blocks[level], dim=dims[level], heads=heads[level],
                           ffn_expansion=ffn_expansion, epr_dim=epr_dim)

        self.stem = Stem(in_channels=in_channels, dim=d1, factor=stem_factor)
        self.encoder_1 = stage(0)
        self.down_1_2 = Downsample(in_dim=d1, out_dim=d2)
        self.encoder_2 = stage(1)
        self.down_2_3 = Downsample(in_dim=d2, out_dim=d3)
        self.latent = stage(2)
        self.up_3_2 = Upsample(in_dim=d3, out_dim=d2)
        self.reduce_2 = nn.Conv2d(2 * d2, d2, 1, bias=False)
        self.decoder_2 = stage(1)
        self.up_2_1 = Upsample(in_dim=d2, out_dim=d1)
        self.reduce_1 = nn.Conv2d(2 * d1, d1, 1, bias=False)
        self.decoder_1 = stage(0)

    def forward(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        enc_1 = self.encoder_1(self.stem(x), z)  # b d1 h1 w1
        enc_2 = self.encoder_2(self.down_1_2(enc_1), z)  # b d2 h2 w2
        f_3 = self.latent(self.down_2_3(enc_2), z)  # b d3 h3 w3
        dec_2 = self.reduce_2(torch.cat([self.up_3_2(f_3), enc_2], dim=1))  # b d2 h2 w2
        f_2 = self.decoder_2(dec_2, z)
        dec_1 = self.reduce_1(torch.cat([self.up_2_1(f_2), enc_1], dim=1))  # b d1 h1 w1
        f_1 = self.decoder_1(dec_1, z)
        return f_1, f_2, f_3
