"""The landmark encoder of the DILnetwork (paper Sec. 3.2): coordinates -> feature maps.

:class:`LandmarkEncoder` turns coordinates into the landmark feature maps ``X_flm`` at
the three scales: one Gaussian heatmap per facial region, rendered for all points at
once, then small convs; samples without landmarks get learned maps instead. The
coordinates come from a landmark source of :mod:`lrdif.data.landmarks` (detection and
its cache are data, not model).

In a batch tensor, a sample "has no landmarks" when any of its coordinates is not finite
(NaN), so the one ``(B, P, 2)`` tensor carries both the points and the found-mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrdif.data.landmarks import FACE_MESH_POINTS, REGION_NAMES, face_mesh_region_ids


def render_region_heatmaps(points: Tensor, region_sizes: Sequence[int], size: int,
                           sigma: float) -> Tensor:
    """One Gaussian heatmap per facial region, all points of a region rendered at once.

    A 2-D Gaussian is separable, so a region's map ``sum_p g_y[p, h] g_x[p, w]`` is one
    batched matmul over its points; each map is then scaled to peak at 1.

    Args:
        points: (B, P, 2) ``(x, y)`` in [0, 1] (finite), ordered region by region: the
            first ``region_sizes[0]`` points form region 0, the next ones region 1, ...
        region_sizes: points per region (summing to P).
        size: side of the square output map (pixel centres at ``(i + 0.5) / size``).
        sigma: Gaussian standard deviation in output pixels.

    Returns:
        (B, G, size, size) heatmaps, G = ``len(region_sizes)``.
    """
    centres = (torch.arange(size, device=points.device, dtype=points.dtype) + 0.5) / size
    offsets = (centres[None, None, :] - points[..., None]) * size  # b p two size (pixels)
    gauss = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g_x, g_y = gauss[:, :, 0], gauss[:, :, 1]  # b p w, b p h
    heat = torch.stack([gy.transpose(1, 2) @ gx  # b h p_g @ b p_g w -> b h w
                        for gy, gx in zip(g_y.split(list(region_sizes), dim=1),
                                          g_x.split(list(region_sizes), dim=1), strict=True)],
                       dim=1)  # b g h w
    return heat / heat.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)


class LandmarkEncoder(nn.Module):
    """Landmark coordinates -> landmark feature maps ``X_flm`` at the three scales.

    Region heatmaps at level-1 resolution, then a small conv pyramid (3x3 conv, 3x3
    stride-2 convs) to the DILnetwork widths; a learned map per scale stands in for
    every sample without landmarks (``landmarks=None``, or NaN coordinates).

    Shapes: ``landmarks`` (B, 468, 2) or None -> maps (B, d_i, s_i, s_i), i = 1..3, with
    ``s_1 = 2 s_2 = 4 s_3``.
    """

    def __init__(self, *, dims: Sequence[int], level1_size: int, sigma: float) -> None:
        super().__init__()
        d1, d2, d3 = dims
        self.level1_size = level1_size
        self.sigma = sigma
        ids = face_mesh_region_ids()
        # Constants of the face-mesh topology, not learned: kept out of the state dict.
        # Points sorted by region, so each region is one contiguous slice.
        self.register_buffer("point_order", torch.from_numpy(np.argsort(ids, kind="stable")),
                             persistent=False)
        self.region_sizes = tuple(np.bincount(ids, minlength=len(REGION_NAMES)).tolist())
        self.conv_1 = nn.Conv2d(len(REGION_NAMES), d1, 3, padding=1)
        self.conv_2 = nn.Conv2d(d1, d2, 3, stride=2, padding=1)
        self.conv_3 = nn.Conv2d(d2, d3, 3, stride=2, padding=1)
        sizes = (level1_size, level1_size // 2, level1_size // 4)
        self.learned_maps = nn.ParameterList(
            nn.Parameter(torch.zeros(1, d, s, s)) for d, s in zip(dims, sizes, strict=True)
        )
        for learned in self.learned_maps:
            nn.init.trunc_normal_(learned, std=0.02)

    def forward(self, landmarks: Tensor | None, batch: int) -> list[Tensor]:
        # repeat, not expand: a view of a parameter made under no_grad claims to need a
        # gradient yet has no grad_fn, which breaks torch's module tracker (FlopCounterMode).
        learned = [m.repeat(batch, 1, 1, 1) for m in self.learned_maps]
        if landmarks is None:
            return learned
        if landmarks.shape != (batch, FACE_MESH_POINTS, 2):
            raise ValueError(f"landmarks must be (B={batch}, {FACE_MESH_POINTS}, 2) face-mesh "
                             f"points (x, y) in [0, 1], got {tuple(landmarks.shape)}")
        found = torch.isfinite(landmarks).all(dim=2).all(dim=1)  # b
        # Finite stand-ins for missing samples, so no NaN reaches a gradient.
        points = torch.where(found[:, None, None], landmarks, torch.full_like(landmarks, 0.5))
        heat = render_region_heatmaps(points[:, self.point_order], self.region_sizes,
                                      self.level1_size, self.sigma)
        map_1 = self.conv_1(heat.contiguous(memory_format=torch.channels_last))
        map_2 = self.conv_2(F.gelu(map_1))
        map_3 = self.conv_3(F.gelu(map_2))
        keep = found[:, None, None, None]
        return [torch.where(keep, encoded, fallback)
                for encoded, fallback in zip((map_1, map_2, map_3), learned, strict=True)]
