"""Batched augmentation: shapes, seeds, exact flips, ranges, and what each warp does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lrdif.data.transforms import (
    Augment,
    affine_matrices,
    crop_matrices,
    fit_input,
    gaussian_blur,
    match_channels,
    random_erasing,
    random_hflip,
    resize_batch,
    to_tensor_batch,
    warp,
)

CL = torch.channels_last


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b=8, c=3, h=20, w=24, seed=0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed)).contiguous(memory_format=CL)


def ramp(b=4, h=32, w=32) -> torch.Tensor:
    """Value = column position in [0, 1]: shows zoom, crop and flip directly."""
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    return cols.expand(b, 1, h, w).contiguous(memory_format=CL)


def test_to_tensor_batch():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    x = to_tensor_batch(rgb)
    assert x.shape == (5, 3, 7, 9) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=CL)
    assert torch.equal(x[2, 1], torch.from_numpy(rgb[2, :, :, 1]).float() / 255)
    grey = to_tensor_batch(np.full((2, 4, 4), 255, np.uint8))
    assert grey.shape == (2, 1, 4, 4) and bool((grey == 1).all())
    with pytest.raises(ValueError, match="uint8"):
        to_tensor_batch(rgb.astype(np.float32))


def test_channels_and_resizing():
    rgb = np.random.default_rng(1).integers(0, 256, (3, 10, 12, 3), dtype=np.uint8)
    x = to_tensor_batch(rgb)
    grey = match_channels(x, 1)
    pil_grey = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert grey.shape == (3, 1, 10, 12)
    assert (grey[:, 0] * 255 - torch.from_numpy(pil_grey).float()).abs().max() <= 0.51
    back = match_channels(grey, 3)
    assert back.shape == (3, 3, 10, 12) and torch.equal(back[:, 0], back[:, 2])
    with pytest.raises(ValueError, match="2-channel"):
        match_channels(x[:, :2], 3)
    small = resize_batch(x, 5)
    assert small.shape == (3, 3, 5, 5) and float(small.min()) >= 0 and float(small.max()) <= 1
    assert resize_batch(x, (10, 12)) is x
    flat = resize_batch(torch.full((1, 1, 48, 48), 0.3), (112, 96))
    assert torch.allclose(flat, torch.full_like(flat, 0.3))
    model_input = fit_input(x, size=(16, 16), channels=1)
    assert model_input.shape == (3, 1, 16, 16) and model_input.is_contiguous(memory_format=CL)


def test_flip_really_flips():
    x = images()
    assert torch.equal(random_hflip(x, p=1.0, generator=gen())[0], x.flip(-1))
    assert torch.equal(random_hflip(x, p=0.0, generator=gen())[0], x)
    x = images(b=64)
    y = random_hflip(x, p=0.5, generator=gen())[0]
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(y[i], x[i]) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image one or the other
    assert 16 < sum(flipped) < 48


def test_identity_warp_and_zoom():
    x = images()
    identity = torch.eye(3, dtype=torch.float64).expand(8, 3, 3)
    assert torch.allclose(warp(x, identity), x, atol=1e-5)
    zoom = affine_matrices(
        4, height=32, width=32, scale=(2.0, 2.0), rotate=0.0, translate=0.0, generator=gen(),
        device=torch.device("cpu"),
    )  # fmt: skip
    y = warp(ramp(), zoom)
    slope = (y[:, 0, :, 20] - y[:, 0, :, 11]).mean() / 9
    assert torch.isclose(slope, torch.tensor(1 / 64), rtol=1e-3)  # magnified twice


def test_rotation_is_rigid_on_non_square_images():
    m = affine_matrices(
        16, height=20, width=40, scale=(1.0, 1.0), rotate=30.0, translate=0.0, generator=gen(),
        device=torch.device("cpu"),
    )  # fmt: skip
    # In pixel units (x * W/2, y * H/2) the 2x2 part must be a rotation: orthonormal.
    d = torch.diag(torch.tensor([20.0, 10.0], dtype=torch.float64))
    r = d @ m[:, :2, :2] @ torch.linalg.inv(d)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(2, dtype=torch.float64), atol=1e-9)
    angles = torch.rad2deg(torch.atan2(r[:, 1, 0], r[:, 0, 0])).abs()
    assert float(angles.max()) <= 30.0 and float(angles.std()) > 1.0


def test_crop_covers_the_requested_area():
    m = crop_matrices(
        4, area=(0.25, 0.25), ratio=(1.0, 1.0), generator=gen(), device=torch.device("cpu")
    )
    y = warp(ramp(), m)
    spans = y[:, 0, 0, -1] - y[:, 0, 0, 0]
    assert torch.allclose(spans, torch.full((4,), 0.5 * 31 / 32), atol=1e-4)  # half the width


def test_random_erasing():
    x = images(b=32, h=30, w=30)
    y = random_erasing(x, p=1.0, area=(0.1, 0.2), ratio=(0.5, 2.0), generator=gen())
    erased = (y == 0) & (x != 0)
    fraction = erased[:, 0].float().mean(dim=(1, 2))
    assert bool((fraction > 0.07).all()) and bool((fraction < 0.24).all())
    assert torch.equal(y[~erased], x[~erased])
    rows = erased[:, 0].any(dim=2).sum(dim=1)
    cols = erased[:, 0].any(dim=1).sum(dim=1)
    assert torch.equal(erased[:, 0].sum(dim=(1, 2)), rows * cols)  # a rectangle each
    assert torch.equal(random_erasing(x, p=0.0, area=(0.1, 0.2), ratio=(1, 1), generator=gen()), x)


def test_augment_is_seeded_bounded_and_batched():
    x = images(b=16, c=1, h=48, w=48)
    augment = Augment(erase=0.5)
    a, b = augment(x, gen(3)), augment(x, gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, gen(4)))
    assert a.shape == x.shape and a.is_contiguous(memory_format=CL)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    per_image_change = (a - x).abs().mean(dim=(1, 2, 3))
    assert int((per_image_change > 1e-3).sum()) == 16  # every image is augmented
    off = Augment(flip=0.0, crop_area=(1.0, 1.0), scale=(1.0, 1.0), rotate=0.0, translate=0.0,
                  erase=0.0)  # fmt: skip
    assert torch.equal(off(x, gen()), x)


def test_landmarks_move_with_the_face():
    """A bright dot, augmented with its landmark: after flip, crop and affine the
    landmark still sits on the dot (within a pixel); NaN rows stay NaN; the images are
    the same whether landmarks are given or not."""
    b, size = 32, 48
    torch.manual_seed(0)
    centres = torch.rand(b, 2) * 0.5 + 0.25  # (x, y) in [0, 1]
    cols = (torch.arange(size) + 0.5) / size
    dx = cols.view(1, 1, -1) - centres[:, 0].view(-1, 1, 1)
    dy = cols.view(1, -1, 1) - centres[:, 1].view(-1, 1, 1)
    x = torch.exp(-(dx**2 + dy**2) / (2 * 0.03**2)).unsqueeze(1)  # (B, 1, H, W)
    points = torch.cat([centres.view(b, 1, 2), torch.full((b, 1, 2), float("nan"))], dim=1)
    augment = Augment(erase=0.0, rotate=15.0, translate=0.08)
    out, moved = augment.apply(x, gen(3), points)
    assert torch.equal(out, augment(x, gen(3)))
    assert torch.isnan(moved[:, 1]).all()
    weights = out[:, 0] / out[:, 0].sum(dim=(1, 2), keepdim=True)
    found = torch.stack([(weights.sum(1) * cols).sum(1), (weights.sum(2) * cols).sum(1)], 1)
    inside = ((moved[:, 0] > 0.1) & (moved[:, 0] < 0.9)).all(1)  # dot not cut by the border
    assert inside.sum() > 20
    assert ((found - moved[:, 0]).abs()[inside] < 1.0 / size).all()


def test_photometric_augmentation():
    x = images(b=64, c=1)
    plain = Augment()
    assert torch.equal(plain(x, gen()), Augment(brightness=0.0, contrast=0.0, blur=0.0)(x, gen()))
    lit = Augment(flip=0.0, crop_area=(1.0, 1.0), scale=(1.0, 1.0), rotate=0.0, translate=0.0,
                  erase=0.0, brightness=0.2, contrast=0.3)(x, gen())
    assert float(lit.min()) >= 0 and float(lit.max()) <= 1 and not torch.allclose(lit, x)
    ramp_image = ramp()
    sharp = gaussian_blur(ramp_image, torch.zeros(ramp_image.shape[0]) + 1e-4)
    assert torch.allclose(sharp, ramp_image, atol=1e-5)  # ~zero sigma: unchanged
    dot = torch.zeros(2, 1, 15, 15)
    dot[:, :, 7, 7] = 1.0
    soft = gaussian_blur(dot, torch.tensor([0.5, 2.0]))
    assert torch.allclose(soft.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)  # mass kept
    assert soft[1, 0, 7, 7] < soft[0, 0, 7, 7]  # the wider blur spreads more
