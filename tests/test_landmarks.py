"""Landmark sources, the landmark cache and the landmark encoder (Sec. 3.2, X_flm)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lrdif.data.landmarks import (
    FACE_MESH_POINTS,
    FACE_MESH_REGIONS,
    REGION_NAMES,
    cache_landmarks,
    face_mesh_region_ids,
)
from lrdif.models.landmarks import LandmarkEncoder, render_region_heatmaps
from lrdif.registry import LANDMARKS

ASTRONAUT = Path(__file__).resolve().parents[1] / "src" / "lrdif" / "assets" / "astronaut.jpg"


def test_face_mesh_regions_are_disjoint_and_cover_the_mesh():
    seen: set[int] = set()
    for points in FACE_MESH_REGIONS.values():
        assert len(set(points)) == len(points)
        assert not seen & set(points)
        seen |= set(points)
    assert max(seen) < FACE_MESH_POINTS
    ids = face_mesh_region_ids()
    assert ids.shape == (FACE_MESH_POINTS,)
    assert np.bincount(ids).tolist() == [*(len(p) for p in FACE_MESH_REGIONS.values()),
                                         FACE_MESH_POINTS - len(seen)]


def test_heatmaps_peak_at_each_regions_points_in_x_y_order():
    size = 16
    points = torch.tensor([[[0.8, 0.3], [0.8, 0.3], [0.1, 0.9]]])  # (x, y)
    heat = render_region_heatmaps(points, (2, 1), size, sigma=1.0)
    assert heat.shape == (1, 2, size, size)
    for region, (x, y) in enumerate([(0.8, 0.3), (0.1, 0.9)]):
        row, col = divmod(int(heat[0, region].argmax()), size)
        assert (row, col) == (int(y * size), int(x * size))
        assert heat[0, region].max() == pytest.approx(1.0)
    # A Gaussian of sigma 1 pixel: over 3 pixels away it is below exp(-4.5) of its peak.
    assert heat[0, 0, 4, 9] < 0.05


def face_like_points(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(batch, FACE_MESH_POINTS, 2, generator=generator)


def test_encoder_uses_learned_maps_for_samples_without_landmarks():
    torch.manual_seed(0)
    encoder = LandmarkEncoder(dims=(8, 16, 32), level1_size=12, sigma=1.0)
    landmarks = face_like_points(3, seed=1)
    landmarks[1] = float("nan")  # no face found in sample 1
    maps = encoder(landmarks, 3)
    fallback = encoder(None, 3)
    for level, (m, learned, size) in enumerate(zip(maps, fallback, (12, 6, 3), strict=True)):
        assert m.shape == (3, (8, 16, 32)[level], size, size)
        torch.testing.assert_close(m[1], encoder.learned_maps[level][0])
        torch.testing.assert_close(learned, encoder.learned_maps[level].expand(3, -1, -1, -1))
        assert not torch.allclose(m[0], learned[0])
        assert not torch.allclose(m[0], m[2])  # different faces, different maps
        assert torch.isfinite(m).all()


def test_encoder_gives_no_nan_gradients_for_missing_landmarks():
    encoder = LandmarkEncoder(dims=(8, 16, 32), level1_size=8, sigma=1.0)
    landmarks = face_like_points(2, seed=2)
    landmarks[0, 5] = float("nan")  # one missing point makes the whole sample "not found"
    sum(m.sum() for m in encoder(landmarks, 2)).backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_encoder_rejects_landmarks_of_the_wrong_layout():
    encoder = LandmarkEncoder(dims=(8, 16, 32), level1_size=8, sigma=1.0)
    with pytest.raises(ValueError, match="468"):
        encoder(torch.rand(2, 68, 2), 2)


class BrightestPixel:
    """A one-point landmark source for exercising the cache: the brightest pixel."""

    num_points = 1

    def __init__(self, tag: str = "v1") -> None:
        self.cache_key = f"brightest-{tag}"
        self.calls = 0

    def detect(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        n, h, w = images.shape[:3]
        flat = images.reshape(n, h * w, -1).max(-1).argmax(1)
        rows, cols = np.divmod(flat, w)
        return np.stack([(cols + 0.5) / w, (rows + 0.5) / h], -1)[:, None].astype(np.float32)


def test_cache_computes_once_then_loads(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8)
    path = tmp_path / "cache" / "train.npz"
    source = BrightestPixel()
    first = cache_landmarks(images, source, path, chunk=4)
    assert source.calls == 3 and first.shape == (10, 1, 2)
    again = cache_landmarks(images, source, path)
    assert source.calls == 3  # loaded, not recomputed
    np.testing.assert_array_equal(first, again)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.npz"]  # no temp files

    changed = images.copy()
    changed[0, 0, 0] ^= 1
    cache_landmarks(changed, source, path)
    assert source.calls == 4  # other images: recomputed
    other = BrightestPixel(tag="v2")
    cache_landmarks(changed, other, path)
    assert other.calls == 1  # other source: recomputed


def test_cache_recomputes_an_unreadable_file(tmp_path):
    path = tmp_path / "lm.npz"
    path.write_bytes(b"not a zip")
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="unreadable landmark cache"):
        out = cache_landmarks(images, BrightestPixel(), path)
    assert out.shape == (2, 1, 2)
    np.testing.assert_array_equal(np.load(path)["landmarks"], out)


def test_cache_rejects_non_uint8_images(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        cache_landmarks(np.zeros((2, 4, 4), np.float32), BrightestPixel(), tmp_path / "x.npz")


def test_learned_source_finds_no_landmarks():
    source = LANDMARKS.build("learned")
    out = source.detect(np.zeros((3, 48, 48), dtype=np.uint8))
    assert out.shape == (3, FACE_MESH_POINTS, 2) and np.isnan(out).all()
    assert len(REGION_NAMES) == len(FACE_MESH_REGIONS) + 1


def test_mediapipe_source_finds_a_face_or_explains_how_to_install():
    """Main environment: the install hint. ``.ci/run``'s landmark environment (mediapipe
    0.10.21 beside numpy<2) runs the real detector on the shipped portrait."""
    if importlib.util.find_spec("mediapipe") is None:
        source = LANDMARKS.build("mediapipe")  # builds: its cached landmarks load here
        assert source.cache_key == "mediapipe-0.10.21-facemesh468-conf0.3"
        with pytest.raises(ImportError, match=r"pip install mediapipe==0\.10\.21"):
            source.detect(np.zeros((1, 48, 48), dtype=np.uint8))
        return
    from PIL import Image

    source = LANDMARKS.build("mediapipe")
    face = Image.open(ASTRONAUT).convert("L").crop((130, 20, 370, 260)).resize((48, 48))
    mirrored = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    faces = np.stack([np.asarray(face), np.asarray(mirrored)])
    blank = np.zeros((1, 48, 48), dtype=np.uint8)
    points = source.detect(np.concatenate([faces, blank]))
    assert points.shape == (3, FACE_MESH_POINTS, 2)
    assert np.isfinite(points[:2]).all() and np.isnan(points[2]).all()
    regions = {name: points[:2, list(idx)].mean(axis=1) for name, idx in FACE_MESH_REGIONS.items()}
    # Anatomy: eyes above the nose above the lips, the subject's right eye on the image's
    # left (also in the mirror image: it is still a face); mirroring mirrors the mesh.
    assert (regions["right_eye"][:, 1] < regions["nose"][:, 1]).all()
    assert (regions["nose"][:, 1] < regions["lips"][:, 1]).all()
    assert (regions["right_eye"][:, 0] < regions["left_eye"][:, 0]).all()
    centre_x = points[:2, :, 0].mean(axis=1)
    assert abs(centre_x[1] - (1 - centre_x[0])) < 0.03
