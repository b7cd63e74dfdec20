"""DTnetwork (Eq. 2-4): EPR modulation, transposed attention, gated FFN, the U-Net."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrdif.models.dtnet import DGNet, DMNet, DTBlock, DTnetwork, EPRModulation
from lrdif.models.udcformer import count_flops


def channels_last(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).contiguous(memory_format=torch.channels_last)


def reference_layer_norm(f: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = f.mean(dim=1, keepdim=True)
    var = f.var(dim=1, unbiased=False, keepdim=True)
    return (f - mean) / torch.sqrt(var + eps)


def test_epr_modulation_with_unit_scale_and_zero_shift_is_plain_layer_norm():
    torch.manual_seed(0)
    dim, epr_dim = 6, 4
    mod = EPRModulation(dim=dim, epr_dim=epr_dim)
    with torch.no_grad():
        mod.to_scale_shift.weight.zero_()
        mod.to_scale_shift.weight[:dim, 0] = 1.0  # W1 Z = z_0 = 1, W2 Z = 0
    z = torch.zeros(3, epr_dim)
    z[:, 0] = 1.0
    f = channels_last(3, dim, 5, 7) * 3 + 1
    torch.testing.assert_close(mod(f, z), reference_layer_norm(f), atol=1e-5, rtol=1e-5)


def test_epr_modulation_applies_per_sample_scale_and_shift():
    torch.manual_seed(0)
    dim, epr_dim = 5, 8
    mod = EPRModulation(dim=dim, epr_dim=epr_dim)
    z = torch.randn(2, epr_dim)
    f = channels_last(2, dim, 4, 4)
    scale = z @ mod.to_scale_shift.weight[:dim].T  # W1 Z
    shift = z @ mod.to_scale_shift.weight[dim:].T  # W2 Z
    expected = scale[:, :, None, None] * reference_layer_norm(f) + shift[:, :, None, None]
    torch.testing.assert_close(mod(f, z), expected, atol=1e-5, rtol=1e-5)


def reference_dmnet(net: DMNet, f: torch.Tensor) -> torch.Tensor:
    """Eq. 3 written directly in channels-first layout, one head at a time."""
    b, c, h, w = f.shape
    qkv = F.conv2d(F.conv2d(f.contiguous(), net.to_qkv.weight), net.qkv_dwconv.weight,
                   padding=1, groups=3 * c)
    q, k, v = qkv.reshape(b, 3, c, h * w).unbind(1)  # b c (h w)
    c_head = c // net.heads
    outs = []
    for head in range(net.heads):
        rows = slice(head * c_head, (head + 1) * c_head)
        qh = q[:, rows] / q[:, rows].norm(dim=-1, keepdim=True)
        kh = k[:, rows] / k[:, rows].norm(dim=-1, keepdim=True)
        attn = torch.softmax(qh @ kh.transpose(1, 2) * net.temperature[head], dim=-1)
        outs.append(attn @ v[:, rows])  # b c' (h w)
    out = torch.cat(outs, dim=1).reshape(b, c, h, w)
    return F.conv2d(out, net.project_out.weight)


def test_dmnet_matches_a_direct_channels_first_reference():
    torch.manual_seed(0)
    net = DMNet(dim=12, heads=3)
    with torch.no_grad():
        net.temperature.copy_(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1))
    f = channels_last(2, 12, 5, 6)
    torch.testing.assert_close(net(f), reference_dmnet(net, f), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("size", [(6, 6), (10, 14)])
def test_dmnet_attention_map_is_c_prime_by_c_prime_per_head(size):
    net = DMNet(dim=16, heads=4)
    attn = net.attention(channels_last(2, 16, *size))
    assert attn.shape == (2, 4, 4, 4)  # B, heads, C', C' whatever the pixel count
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 4))
    assert torch.equal(net.temperature.detach(), torch.ones(4, 1, 1))  # alpha starts at 1


def test_dmnet_and_dt_block_flops_grow_linearly_with_pixel_count():
    torch.manual_seed(0)
    net = DMNet(dim=16, heads=2)
    block = DTBlock(dim=16, heads=2, ffn_expansion=2.66, epr_dim=8)
    z = torch.randn(1, 8)
    small, large = channels_last(1, 16, 12, 12), channels_last(1, 16, 24, 24)
    assert count_flops(lambda: net(large)) == 4 * count_flops(lambda: net(small))
    ratio = count_flops(lambda: block(large, z)) / count_flops(lambda: block(small, z))
    # Only the EPR linear layers are independent of the pixel count.
    assert 3.95 < ratio <= 4.0


def test_dgnet_is_a_gelu_gated_depthwise_feed_forward():
    torch.manual_seed(0)
    net = DGNet(dim=8, expansion=2.0)
    f = channels_last(2, 8, 5, 5)
    hidden = F.conv2d(F.conv2d(f.contiguous(), net.project_in.weight), net.dwconv.weight,
                      padding=1, groups=32)
    gate, value = hidden[:, :16], hidden[:, 16:]
    expected = F.conv2d(F.gelu(gate) * value, net.project_out.weight)
    torch.testing.assert_close(net(f), expected, atol=1e-5, rtol=1e-4)


def test_dt_block_is_identity_when_the_epr_is_zero():
    # Eq. 2 with bias-free W: Z = 0 zeroes F', and both branches of the block vanish.
    block = DTBlock(dim=8, heads=2, ffn_expansion=2.0, epr_dim=4)
    f = channels_last(2, 8, 6, 6)
    torch.testing.assert_close(block(f, torch.zeros(2, 4)), f)
    assert not torch.allclose(block(f, torch.randn(2, 4)), f)


@pytest.mark.parametrize(("in_channels", "size", "stem", "levels"),
                         [(1, 48, 2, (24, 12, 6)), (3, 112, 4, (28, 14, 7))])
def test_dtnetwork_yields_three_scales(in_channels, size, stem, levels):
    net = DTnetwork(in_channels=in_channels, dims=(8, 16, 32), heads=(1, 2, 4),
                    blocks=(1, 1, 1), ffn_expansion=2.0, epr_dim=4, stem_factor=stem)
    x = channels_last(2, in_channels, size, size)
    f_1, f_2, f_3 = net(x, torch.randn(2, 4))
    assert f_1.shape == (2, 8, levels[0], levels[0])
    assert f_2.shape == (2, 16, levels[1], levels[1])
    assert f_3.shape == (2, 32, levels[2], levels[2])
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in (f_1, f_2, f_3))
