"""Facial landmarks of a data set's images (paper Sec. 3.2): sources and their cache.

- Sources (registry ``LANDMARKS``) turn uint8 images into ``(N, P, 2)`` float32 point
  coordinates ``(x, y)`` in ``[0, 1]``, with NaN rows for images where no face was found:
  ``"mediapipe"`` runs MediaPipe's 468-point face mesh, whose weights ship inside the
  ``mediapipe`` wheel (works offline); ``"learned"`` finds nothing, so the model uses its
  learned landmark maps for every image.
- :func:`cache_landmarks` computes a data set's landmarks once and stores them in an
  ``.npz`` keyed by a hash of the images and the source.
- The face-mesh topology (:data:`FACE_MESH_REGIONS`), which the model's
  :class:`lrdif.models.landmarks.LandmarkEncoder` renders region by region.

Importing :mod:`lrdif.data` registers the sources.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import warnings
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lrdif.io import atomic_write
from lrdif.registry import LANDMARKS

FACE_MESH_POINTS = 468
# The release .ci/landmarks-requirements.txt pins (the last with the legacy face mesh).
PINNED_MEDIAPIPE = "0.10.21"

# Vertex indices of the regions of MediaPipe's face-mesh topology (the vertices of its
# FACEMESH_* contour sets; "left" is the subject's left). Every other vertex (cheeks,
# forehead, chin surface) forms the last group, "rest of face".
FACE_MESH_REGIONS: dict[str, tuple[int, ...]] = {
    "lips": (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178,
             181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324,
             375, 402, 405, 409, 415),
    "left_eye": (249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398,
                 466),
    "right_eye": (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173,
                  246),
    "left_eyebrow": (276, 282, 283, 285, 293, 295, 296, 300, 334, 336),
    "right_eyebrow": (46, 52, 53, 55, 63, 65, 66, 70, 105, 107),
    "nose": (1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278,
             294, 326, 327, 344, 440),
    "face_oval": (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162,
                  172, 176, 234, 251, 284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378,
                  379, 389, 397, 400, 454),
}
REGION_NAMES: tuple[str, ...] = (*FACE_MESH_REGIONS, "rest_of_face")


def face_mesh_region_ids() -> np.ndarray:
    """Region index (into :data:`REGION_NAMES`) of each of the 468 face-mesh points."""
    ids = np.full(FACE_MESH_POINTS, len(FACE_MESH_REGIONS), dtype=np.int64)
    for region, points in enumerate(FACE_MESH_REGIONS.values()):
        ids[list(points)] = region
    return ids


def _check_images(images: np.ndarray) -> None:
    """Raise unless ``images`` is a uint8 array ``(N, H, W)`` or ``(N, H, W, 3)``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(f"landmark detection expects a uint8 numpy array, got "
                        f"{type(images).__name__} {getattr(images, 'dtype', '')}")
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(f"landmark detection expects images (N, H, W) or (N, H, W, 3), "
                         f"got shape {images.shape}")


def _as_rgb(images: np.ndarray) -> np.ndarray:
    _check_images(images)
    return np.repeat(images[..., None], 3, axis=-1) if images.ndim == 3 else images


@LANDMARKS.register("mediapipe")
class MediaPipeFaceMesh:
    """MediaPipe's 468-point face mesh (BlazeFace detector + mesh regressor, CPU).

    The weights ship inside the ``mediapipe`` wheel, so it works offline. mediapipe
    0.10.21 (the last release with the legacy face-mesh solution and its models) needs
    ``numpy<2`` and ``protobuf<5``; install it in its own environment:
    ``pip install mediapipe==0.10.21 "numpy<2" "opencv-python-headless<4.11"
    "protobuf>=4.25.3,<5"`` plus this package, and compute the landmark caches there.

    Grey images are replicated to RGB; small images (48x48 FERPlus crops) need no
    upsampling because the detector resizes its input itself.
    """

    num_points: ClassVar[int] = FACE_MESH_POINTS

    def __init__(self, *, min_detection_confidence: float = 0.3) -> None:
        # The cache key names the installed release, or the pinned one where mediapipe is
        # absent: caches computed in the landmark environment then load in the main one.
        try:
            self.version = importlib.metadata.version("mediapipe")
        except importlib.metadata.PackageNotFoundError:
            self.version = PINNED_MEDIAPIPE
        self.min_detection_confidence = min_detection_confidence
        self._mesh: Any = None  # built at the first detect()

    @property
    def cache_key(self) -> str:
        return f"mediapipe-{self.version}-facemesh468-conf{self.min_detection_confidence}"

    def _face_mesh(self) -> Any:
        if self._mesh is None:
            try:
                import mediapipe
            except ImportError as exc:
                raise ImportError(
                    "landmark source 'mediapipe' needs the mediapipe package to detect "
                    "(cached landmarks load without it): pip install mediapipe==0.10.21 "
                    '"numpy<2" "opencv-python-headless<4.11" "protobuf>=4.25.3,<5" (in an '
                    "environment of its own: it forces numpy<2); or use the landmark source "
                    "'learned'"
                ) from exc
            # One mesh, static-image mode: every image is detected afresh (no tracking).
            self._mesh = mediapipe.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=self.min_detection_confidence,
            )
        return self._mesh

    def detect(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W[, 3]) -> float32 (N, 468, 2) in [0, 1], NaN where no face.

        MediaPipe's API takes one image per call, so this loops over the batch.
        """
        mesh = self._face_mesh()
        rgb = _as_rgb(images)
        out = np.full((len(rgb), FACE_MESH_POINTS, 2), np.nan, dtype=np.float32)
        for i, image in enumerate(rgb):
            result = mesh.process(np.ascontiguousarray(image))
            if result.multi_face_landmarks:
                points = result.multi_face_landmarks[0].landmark
                out[i] = [(p.x, p.y) for p in points]
        return out


@LANDMARKS.register("learned")
class LearnedLandmarks:
    """No detector: every image is "not found", so the model uses its learned maps.

    The fallback when no detector is installed; equivalent to ``landmarks=None``.
    """

    num_points: ClassVar[int] = FACE_MESH_POINTS
    cache_key: ClassVar[str] = "learned"

    def detect(self, images: np.ndarray) -> np.ndarray:
        _check_images(images)
        return np.full((len(images), FACE_MESH_POINTS, 2), np.nan, dtype=np.float32)


def _images_key(images: np.ndarray, source: Any) -> str:
    digest = hashlib.sha256()
    digest.update(f"{images.shape}|{images.dtype}|{source.cache_key}|".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def cache_landmarks(images: np.ndarray, source: Any, path: str | Path, *,
                    chunk: int = 256) -> np.ndarray:
    """Landmarks of ``images`` by ``source``, computed once and stored at ``path`` (.npz).

    The file holds the landmarks and a SHA-256 key of the images' bytes, shape and the
    source's ``cache_key``; a later call with the same images and source loads it, any
    other call recomputes and replaces it (written atomically). An unreadable file is
    recomputed with a warning.

    Args:
        images: uint8 (N, H, W) or (N, H, W, 3), e.g. the UDC training images.
        source: a landmark source (``LANDMARKS.build(name)``).
        path: the cache file.
        chunk: images per ``source.detect`` call (bounds memory, drives the progress bar).

    Returns:
        float32 (N, P, 2), ``(x, y)`` in [0, 1], NaN rows where no face was found.
    """
    from tqdm import tqdm

    _check_images(images)
    path = Path(path)
    key = _images_key(images, source)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) == key:
                    return stored["landmarks"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: unreadable landmark cache ({exc}); recomputing",
                          stacklevel=2)
    parts = []
    with tqdm(total=len(images), desc=f"landmarks ({source.cache_key})", disable=None) as bar:
        for start in range(0, len(images), chunk):
            parts.append(source.detect(images[start:start + chunk]))
            bar.update(len(parts[-1]))
    landmarks = np.concatenate(parts) if parts else np.zeros((0, source.num_points, 2),
                                                             dtype=np.float32)
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, landmarks=landmarks, key=np.array(key))
    return landmarks
