"""DILnetwork (Eq. 5-9): relative position bias, window cross-attention, blocks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lrdif.models.dilnet import (
    DILBlock,
    DILnetwork,
    WindowCrossAttention,
    relative_position_index,
    window_merge,
    window_partition,
)


@pytest.mark.parametrize("window", [1, 3, 6])
def test_relative_position_index_encodes_displacement(window):
    index = relative_position_index(window)
    m, side = window * window, 2 * window - 1
    assert index.shape == (m, m)
    assert set(index.flatten().tolist()) == set(range(side * side))
    centre = (side * side - 1) // 2
    assert torch.all(index.diagonal() == centre)
    assert torch.all(index + index.T == side * side - 1)  # opposite displacements mirror
    for i, j in itertools.product(range(m), repeat=2):
        dy = i // window - j // window
        dx = i % window - j % window
        assert index[i, j] == (dy + window - 1) * side + (dx + window - 1)


def test_window_partition_and_merge_are_inverse():
    x = torch.randn(2, 6, 9, 4)
    windows = window_partition(x, 3)
    assert windows.shape == (2 * 2 * 3, 9, 4)
    torch.testing.assert_close(windows[1], x[0, 0:3, 3:6].reshape(9, 4))  # row-major windows
    torch.testing.assert_close(window_merge(windows, 3, 6, 9), x)


def reference_cross_attention(attn: WindowCrossAttention, lm: torch.Tensor,
                              img: torch.Tensor) -> torch.Tensor:
    """Eq. 5-7 for one window, the bias looked up by explicit displacement."""
    w, heads = attn.window, attn.heads
    _, m, c = img.shape
    d = c // heads
    q = lm @ attn.to_q.weight.T + attn.to_q.bias
    kv = img @ attn.to_kv.weight.T + attn.to_kv.bias
    k, v = kv[..., :c], kv[..., c:]
    bias = torch.empty(heads, m, m)
    for i, j in itertools.product(range(m), repeat=2):
        dy, dx = i // w - j // w + w - 1, i % w - j % w + w - 1
        bias[:, i, j] = attn.bias_table[dy * (2 * w - 1) + dx]
    heads_out = []
    for n in range(heads):
        cols = slice(n * d, (n + 1) * d)
        logits = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d) + bias[n]
        heads_out.append(torch.softmax(logits, dim=-1) @ v[..., cols])
    return torch.cat(heads_out, dim=-1) @ attn.project_out.weight.T + attn.project_out.bias


def test_window_cross_attention_matches_direct_reference():
    torch.manual_seed(0)
    attn = WindowCrossAttention(dim=8, heads=2, window=3)
    with torch.no_grad():
        attn.bias_table.normal_()  # a bias large enough to matter
    lm, img = torch.randn(2, 9, 8), torch.randn(2, 9, 8)
    torch.testing.assert_close(attn(lm, img), reference_cross_attention(attn, lm, img),
                               atol=1e-5, rtol=1e-4)


def test_window_cross_attention_bias_table_learns():
    attn = WindowCrossAttention(dim=8, heads=2, window=3)
    attn(torch.randn(2, 9, 8), torch.randn(2, 9, 8)).square().sum().backward()
    assert attn.bias_table.grad is not None and attn.bias_table.grad.abs().sum() > 0


def test_dil_block_attends_within_windows_only():
    torch.manual_seed(0)
    block = DILBlock(dim=8, heads=2, window=3, mlp_ratio=2.0)
    lm = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    img = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    base = block(lm, img)
    assert base.shape == img.shape
    img_changed = img.clone()
    img_changed[..., 0, 4] += torch.randn(8)  # a pixel of the top-right window
    lm_changed = lm.clone()
    lm_changed[..., 5, 0] += torch.randn(8)  # a landmark of the bottom-left window
    for out, (rows, cols) in ((block(lm, img_changed), (slice(0, 3), slice(3, 6))),
                              (block(lm_changed, img), (slice(3, 6), slice(0, 3)))):
        diff = (out - base).abs()
        assert diff[..., rows, cols].sum() > 0
        inside = torch.zeros_like(diff, dtype=torch.bool)
        inside[..., rows, cols] = True
        assert diff[~inside].max() == 0


def test_dil_block_is_residual_on_image_features():
    # Eq. 8-9: zero the output projection and the MLP's last layer: O = X_udc.
    block = DILBlock(dim=8, heads=2, window=2, mlp_ratio=2.0)
    with torch.no_grad():
        for layer in (block.attn.project_out, block.mlp[2]):
            layer.weight.zero_()
            layer.bias.zero_()
    img = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(torch.randn(2, 8, 4, 4), img), img)


def test_dilnetwork_outputs_three_scales():
    net = DILnetwork(dims=(8, 16, 32), heads=(2, 4, 8), window=3, mlp_ratio=2.0)
    sizes = (12, 6, 3)
    maps = [torch.randn(2, d, s, s) for d, s in zip((8, 16, 32), sizes, strict=True)]
    outs = net([torch.randn_like(m) for m in maps], maps)
    assert [o.shape for o in outs] == [m.shape for m in maps]
