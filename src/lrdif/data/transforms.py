"""Batched, torch-native image preparation and training augmentation.

Images are float ``(B, C, H, W)`` tensors in ``[0, 1]``, channels_last (docs/ARCHITECTURE.md).
Augmentation draws every random number from a caller's :class:`torch.Generator`, one
tensor per parameter for the whole batch, so a seed fixes the result and no Python loop
runs over samples: horizontal flip, random resized crop and a small affine (scale,
rotation, translation) composed into one ``affine_grid``/``grid_sample`` warp (one
interpolation), then random erasing (Zhong et al. 2020) by a broadcast rectangle mask.
The paper trains with standard FER augmentation (flip, random erasing; Sec. 4.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R 601 luma, the weights Pillow uses for "L", so grey conversion agrees with images.py.
LUMA = (0.299, 0.587, 0.114)


def to_tensor_batch(images: np.ndarray) -> torch.Tensor:
    """``uint8`` ``(B, H, W)`` or ``(B, H, W, C)`` -> float32 ``(B, C, H, W)`` in [0, 1].

    The result is channels_last without a copy of the layout (one cast and scale).
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"expected uint8 images (B, H, W) or (B, H, W, C), got {images.dtype} {images.shape}"
        )
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    # (B, H, W, C) memory is exactly the channels_last layout of (B, C, H, W).
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, channels, H, W)``: grey is repeated to RGB, RGB -> luma."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        grey = (x * weights).sum(dim=1, keepdim=True)
        return grey.contiguous(memory_format=torch.channels_last)
    raise ValueError(f"cannot turn {have}-channel images into {channels}-channel images")


def resize_batch(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, *size)``, bilinear with antialiasing (clean downscaling)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(0.0, 1.0).contiguous(memory_format=torch.channels_last)


def fit_input(x: torch.Tensor, *, size: int | tuple[int, int], channels: int) -> torch.Tensor:
    """A batch in a model's input format: ``(B, channels, *size)`` channels_last in [0, 1]."""
    return match_channels(resize_batch(x, size), channels)


def _uniform(
    generator: torch.Generator, n: int, low: float, high: float, device: torch.device
) -> torch.Tensor:
    """``(n,)`` uniform draws in [low, high) from ``generator`` (on its device) -> ``device``."""
    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    return (low + (high - low) * u).to(device)


def random_hflip(
    x: torch.Tensor, *, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror each image left-right with probability ``p`` (exact, no interpolation);
    also returns which were mirrored, (B,) bool."""
    flip = _uniform(generator, x.shape[0], 0.0, 1.0, x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), flip


def crop_matrices(
    n: int,
    *,
    area: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``(n, 3, 3)`` maps from output to input coordinates for random resized crops.

    A crop covers an ``area`` fraction of the image with aspect (w/h) drawn log-uniformly
    from ``ratio`` (clamped to fit), at a uniform position; it is stretched to full size.
    Coordinates are ``affine_grid``'s normalised ``[-1, 1]``.
    """
    a = _uniform(generator, n, *area, device)
    r = torch.exp(_uniform(generator, n, math.log(ratio[0]), math.log(ratio[1]), device))
    width = torch.sqrt(a * r).clamp(max=1.0)
    height = torch.sqrt(a / r).clamp(max=1.0)
    cx = (1.0 - width) * _uniform(generator, n, -1.0, 1.0, device)
    cy = (1.0 - height) * _uniform(generator, n, -1.0, 1.0, device)
    m = torch.zeros(n, 3, 3, dtype=torch.float64, device=device)
    m[:, 0, 0], m[:, 0, 2] = width, cx
    m[:, 1, 1], m[:, 1, 2] = height, cy
    m[:, 2, 2] = 1.0
    return m


def affine_matrices(
    n: int,
    *,
    height: int,
    width: int,
    scale: tuple[float, float],
    rotate: float,
    translate: float,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """``(n, 3, 3)`` output -> input maps for a zoom by ``scale``, a rotation in
    ``[-rotate, rotate]`` degrees and a shift of up to ``translate`` of the image size.

    The rotation is done in pixel units (``D^-1 R D`` with ``D = diag(W/2, H/2)``), so it
    is a true rotation on non-square images.
    """
    s = _uniform(generator, n, *scale, device)
    angle = torch.deg2rad(_uniform(generator, n, -rotate, rotate, device))
    tx = _uniform(generator, n, -2.0 * translate, 2.0 * translate, device)
    ty = _uniform(generator, n, -2.0 * translate, 2.0 * translate, device)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s  # sampling the input at p / s zooms in
    m = torch.zeros(n, 3, 3, dtype=torch.float64, device=device)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin * height / width
    m[:, 1, 0], m[:, 1, 1] = sin * width / height, cos
    m[:, 0, 2], m[:, 1, 2] = -tx, -ty
    m[:, 2, 2] = 1.0
    return m


def warp(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Resample ``(B, C, H, W)`` through ``(B, 3, 3)`` output -> input maps (bilinear, edges
    replicated), so zoom-outs and rotations do not bring in black corners."""
    theta = matrices[:, :2, :].to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def random_erasing(
    x: torch.Tensor,
    *,
    p: float,
    area: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """With probability ``p`` per image, set a random rectangle (``area`` fraction of the
    image, aspect h/w log-uniform in ``ratio``, clamped to fit) to 0."""
    b, _, h, w = x.shape
    device = x.device
    apply = _uniform(generator, b, 0.0, 1.0, device) < p
    a = _uniform(generator, b, *area, device) * h * w
    r = torch.exp(_uniform(generator, b, math.log(ratio[0]), math.log(ratio[1]), device))
    eh = torch.sqrt(a * r).round().clamp(1, h)
    ew = torch.sqrt(a / r).round().clamp(1, w)
    top = torch.floor(_uniform(generator, b, 0.0, 1.0, device) * (h - eh + 1))
    left = torch.floor(_uniform(generator, b, 0.0, 1.0, device) * (w - ew + 1))
    rows = torch.arange(h, device=device, dtype=torch.float64).view(1, h, 1)
    cols = torch.arange(w, device=device, dtype=torch.float64).view(1, 1, w)
    inside = (
        (rows >= top.view(-1, 1, 1))
        & (rows < (top + eh).view(-1, 1, 1))
        & (cols >= left.view(-1, 1, 1))
        & (cols < (left + ew).view(-1, 1, 1))
    )
    mask = (inside & apply.view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
    return x.masked_fill(mask, 0.0)


def flip_points(points: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Mirror ``(B, P, 2)`` points ``(x, y)`` in [0, 1] where ``flipped`` (B,) is set:
    the pixel centre at ``x`` lands on ``1 - x`` under :func:`random_hflip`."""
    mirrored = torch.stack([1.0 - points[..., 0], points[..., 1]], dim=-1)
    return torch.where(flipped.view(-1, 1, 1), mirrored, points)


def warp_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Where :func:`warp` moves ``(B, P, 2)`` points ``(x, y)`` in [0, 1]: through the
    inverse of its ``(B, 3, 3)`` output -> input maps (``affine_grid``'s [-1, 1] frame).
    NaN rows (no landmarks) stay NaN."""
    u = points.double() * 2.0 - 1.0  # (B, P, 2) in [-1, 1]
    homogeneous = torch.cat([u, torch.ones_like(u[..., :1])], dim=-1)  # (B, P, 3)
    out = homogeneous @ torch.linalg.inv(matrices).transpose(1, 2)  # (B, P, 3)
    return ((out[..., :2] + 1.0) / 2.0).to(points.dtype)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``(B, C, H, W)`` with its own Gaussian std ``sigma`` (B,) in
    pixels (separable, a 2 ceil(3 max sigma) + 1 tap kernel, edges replicated)."""
    b, c, h, w = x.shape
    radius = max(math.ceil(3.0 * float(sigma.max())), 1)
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(-1, 1).clamp_min(1e-3)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)  # (B, k)
    weight = kernel.repeat_interleave(c, dim=0)  # (B C, k): one kernel per image and channel
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, weight.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, weight.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


@dataclass(frozen=True, kw_only=True)
class Augment:
    """Training augmentation for a batch ``(B, C, H, W)`` in [0, 1]; same shape out.

    ``flip``: probability of a horizontal flip. ``crop_area``/``crop_ratio``: random
    resized crop (``(1, 1)`` area = off). ``scale``/``rotate`` (degrees)/``translate``
    (fraction of size): small affine. Crop and affine are one warp. ``brightness`` b and
    ``contrast`` c (0 = off): each image becomes ``mean + k (x - mean) + d`` with ``k`` in
    ``[1 - c, 1 + c]`` and ``d`` in ``[-b, b]`` (lighting), clipped to [0, 1]. ``blur``:
    probability of a Gaussian blur with std in ``blur_sigma`` pixels (focus, display
    haze). ``erase``: probability of random erasing, with ``erase_area`` and
    ``erase_ratio``. The photometric steps draw nothing when off, so recipes without
    them are unchanged.
    """

    flip: float = 0.5
    crop_area: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    scale: tuple[float, float] = (0.95, 1.05)
    rotate: float = 10.0
    translate: float = 0.05
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    erase: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.2)
    erase_ratio: tuple[float, float] = (0.3, 3.3)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, generator)[0]

    def apply(
        self, x: torch.Tensor, generator: torch.Generator, points: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``(B, C, H, W)`` and their landmarks ``(B, P, 2)`` (or None), moved by
        the same flip and warp; the random draws do not depend on ``points``."""
        b, _, h, w = x.shape
        if self.flip > 0:
            x, flipped = random_hflip(x, p=self.flip, generator=generator)
            if points is not None:
                points = flip_points(points, flipped)
        crop = self.crop_area != (1.0, 1.0)
        affine = self.scale != (1.0, 1.0) or self.rotate > 0 or self.translate > 0
        if crop or affine:
            m = torch.eye(3, dtype=torch.float64, device=x.device).expand(b, 3, 3)
            if crop:
                m = crop_matrices(
                    b, area=self.crop_area, ratio=self.crop_ratio, generator=generator,
                    device=x.device,
                )  # fmt: skip
            if affine:
                m = m @ affine_matrices(
                    b, height=h, width=w, scale=self.scale, rotate=self.rotate,
                    translate=self.translate, generator=generator, device=x.device,
                )  # fmt: skip
            x = warp(x, m)
            if points is not None:
                points = warp_points(points, m)
        if self.brightness > 0 or self.contrast > 0:
            k = _uniform(generator, b, 1.0 - self.contrast, 1.0 + self.contrast, x.device)
            d = _uniform(generator, b, -self.brightness, self.brightness, x.device)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            k, d = k.view(-1, 1, 1, 1).to(x.dtype), d.view(-1, 1, 1, 1).to(x.dtype)
            x = (mean + k * (x - mean) + d).clamp(0.0, 1.0)
        if self.blur > 0:
            blurred = _uniform(generator, b, 0.0, 1.0, x.device) < self.blur
            sigma = _uniform(generator, b, *self.blur_sigma, x.device)
            x = torch.where(blurred.view(-1, 1, 1, 1), gaussian_blur(x, sigma), x)
        if self.erase > 0:
            x = random_erasing(
                x, p=self.erase, area=self.erase_area, ratio=self.erase_ratio, generator=generator
            )
        return x.contiguous(memory_format=torch.channels_last), points
