"""Face detection and cropping: photo -> face boxes -> model-sized crops.

A detector is anything with ``detect(image) -> list[Face]`` and a ``margin``
(the :class:`FaceDetector` protocol), registered in ``FACE_DETECTORS`` so the
command line and :class:`~lrdif.predict.recognizer.Recognizer` can name it.
Two ship with the package and work offline:

- ``"haar"``: OpenCV's frontal-face Haar cascade (the XML file bundled with
  ``opencv-python-headless`` 4.x under ``cv2.data.haarcascades``);
- ``"none"``: the whole image is one face, for inputs that are already face
  crops (FERPlus, RAF-DB aligned images).

Images here are ``uint8`` numpy arrays ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from lrdif.data.images import convert_mode
from lrdif.registry import FACE_DETECTORS


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` = (x, y, w, h) in image pixels, ``confidence`` in (0, 1).

    ``confidence`` is None where no detector ran (pre-cropped faces).
    """

    box: tuple[int, int, int, int]
    confidence: float | None


@runtime_checkable
class FaceDetector(Protocol):
    """What the recognizer needs from a face detector.

    ``margin`` is the fraction of the box's side added on every side before
    cropping, so that a detector's crops frame a face the way the training crops did.
    """

    margin: float

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (uint8 ``(H, W)`` or ``(H, W, 3)`` RGB), largest first."""
        ...


@FACE_DETECTORS.register("haar")
class HaarFaceDetector:
    """OpenCV's Viola-Jones frontal-face cascade (``haarcascade_frontalface_default.xml``).

    ``face_confidence``: ``detectMultiScale3(..., outputRejectLevels=True)`` returns,
    per face, the summed weak-classifier outputs ``F`` of the cascade's last
    boosting stage (the "level weight"; every reported face passed all 25 stages).
    Boosting fits an additive model with ``F ~ 1/2 log(p / (1 - p))`` (Friedman,
    Hastie & Tibshirani 2000, "Additive logistic regression"), so we report
    ``sigmoid(2 F)``. It is monotone in the detector's evidence and lies in (0, 1);
    it is *not* calibrated on any face data set. Measured once: on 26 FERPlus faces
    pasted into 640x480 frames it ranged 0.95-1.0; boxes the cascade returned on
    blurred noise (with ``min_neighbors=1``) scored from 0.01 to 1.0.

    ``min_size`` defaults to 48, the side of the FER2013 faces the shipped model was
    trained on: a smaller face would reach the model upscaled, with less detail than
    any training face. It also sets the cost: the cascade's pyramid is dominated by its
    finest level, so 48 instead of OpenCV's customary 30 scans about a third of the
    windows (fer uses 50). Pass a smaller ``min_size`` for small faces.

    The cascade's window is 24x24 pixels, so the finest pyramid level that can hold a
    ``min_size`` face is the picture shrunk by ``min_size / 24``. ``detect`` shrinks it
    to that level once (area averaging) and searches from there, rather than letting
    OpenCV resample the full-size picture at every level: about half the time, with
    boxes within a few pixels of the full-size ones.

    ``margin`` defaults to 0: on the first 100 FERPlus test faces upscaled to 160 px
    and pasted into 640x480 frames, the boxes averaged 0.94x the side of the FERPlus
    crop (67 found; 0.94x and 66-67 found with the full-size search at 30 or 48 px),
    so its boxes already frame a face about as FER2013's crops do.
    """

    CASCADE = "haarcascade_frontalface_default.xml"
    WINDOW = 24  # the cascade's training window, in pixels

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 48,
        margin: float = 0.0,
    ) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): "
                "install opencv-python-headless>=4.8,<5, or pass detector='none' for face "
                "crops, or a FaceDetector of your own"
            )
        path = Path(cv2.data.haarcascades) / self.CASCADE
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(
                f"OpenCV could not load its bundled face cascade {path}; "
                "opencv-python-headless 4.x (below 5) ships it"
            )
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.margin = margin

    def detect(self, image: np.ndarray) -> list[Face]:
        grey = convert_mode(image, "L")
        if min(grey.shape) < self.min_size:
            return []
        shrink = max(1.0, self.min_size / self.WINDOW)
        if shrink > 1.0:
            size = (max(1, round(grey.shape[1] / shrink)), max(1, round(grey.shape[0] / shrink)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        smallest = round(self.min_size / shrink)
        boxes, _levels, weights = self._cascade.detectMultiScale3(
            grey,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(smallest, smallest),
            outputRejectLevels=True,
        )
        height, width = image.shape[:2]
        faces = []
        for (x, y, w, h), weight in zip(boxes, np.ravel(weights), strict=True):
            x0, y0 = round(x * shrink), round(y * shrink)  # back to the picture's pixels
            x1, y1 = min(width, round((x + w) * shrink)), min(height, round((y + h) * shrink))
            faces.append(Face(box=(x0, y0, x1 - x0, y1 - y0),
                              confidence=1.0 / (1.0 + math.exp(-2.0 * float(weight)))))
        return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


@FACE_DETECTORS.register("none")
class WholeImageDetector:
    """No detection: the whole image is one face (inputs that are already face crops)."""

    margin = 0.0

    def detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        return [Face(box=(0, 0, width, height), confidence=None)]


def crop_faces(
    image: np.ndarray,
    boxes: list[tuple[int, int, int, int]],
    *,
    size: tuple[int, int],
    channels: int,
    margin: float = 0.0,
) -> np.ndarray:
    """Cut each face out as the model's input: uint8 ``(N, channels, size[0], size[1])``.

    Each box grows by ``margin`` x its side on every side and becomes a square
    centred on the face (faces are resized without distortion, as the square
    training crops were); where that square leaves the image, the border pixels
    are repeated. ``channels`` 1 gives greyscale, 3 gives RGB (a grey photo is
    repeated over the three channels).
    """
    height, width = size
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    # The same grey conversion as the training data's (Pillow's ITU-R 601 luma).
    image = convert_mode(image, "L" if channels == 1 else "RGB")
    out = np.empty((len(boxes), channels, height, width), dtype=np.uint8)
    img_h, img_w = image.shape[:2]
    for i, (x, y, w, h) in enumerate(boxes):
        side = max(1, round(max(w, h) * (1.0 + 2.0 * margin)))
        x0 = round(x + w / 2 - side / 2)
        y0 = round(y + h / 2 - side / 2)
        # Pad only as far as the square leaves the image.
        pad_l, pad_t = max(0, -x0), max(0, -y0)
        pad_r, pad_b = max(0, x0 + side - img_w), max(0, y0 + side - img_h)
        patch = image[max(0, y0) : min(img_h, y0 + side), max(0, x0) : min(img_w, x0 + side)]
        if pad_l or pad_t or pad_r or pad_b:
            patch = cv2.copyMakeBorder(patch, pad_t, pad_b, pad_l, pad_r, cv2.BORDER_REPLICATE)
        shrink = side > max(height, width)
        patch = cv2.resize(
            patch, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        out[i] = patch[None] if channels == 1 else patch.transpose(2, 0, 1)
    return out
