"""The application API: ``Recognizer().predict(x)`` -> one record per face.

``x`` may be a path to an image, a video or a folder, a list of those, a PIL
image, a numpy array or encoded image bytes. Faces are found (``detect=True``),
cut out as the model's input (:func:`~lrdif.predict.faces.crop_faces`), batched
across images and video frames, and classified by a trained checkpoint: stage 2
of LRDif (paper Sec. 3.3: the EPR comes from the reverse diffusion chain, no
label needed) or a baseline.

Each record is a dict with the keys users of fer and deepface know, and the results
come as :class:`~lrdif.predict.records.Predictions` (see :mod:`lrdif.predict.records`).

A bad input never raises: it becomes a record whose ``error`` names the file
and the problem, and the other inputs still run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lrdif.calibration import checkpoint_temperature
from lrdif.data.images import MAX_PIXELS, ImageError, read_image
from lrdif.models.backbones import fold_batch_norms
from lrdif.predict.faces import FaceDetector, WholeImageDetector, crop_faces
from lrdif.predict.records import NO_FACE, Predictions, face_record
from lrdif.predict.video import VideoError, frame_count, is_video, iter_frames
from lrdif.registry import FACE_DETECTORS, LANDMARKS

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "lrdif_s2_udc_ferplus.safetensors"  # "lrdif": LRDif stage 2
FAST_WEIGHTS = WEIGHTS_DIR / "fast_mobilenetv2_48.safetensors"  # "fast": for bulk crops
# What lrdif.data.images decodes; other files in a folder (labels, notes) are skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".mpo"})
_AUTO_PROGRESS = 32  # pictures (images + sampled frames) from which the bar shows by default
PRECISIONS = frozenset({"float32", "bfloat16"})
_PENDING_PIXELS = 2**27  # flush a batch early rather than hold more decoded pixels than this


class NoDefaultWeightsError(FileNotFoundError):
    """A shipped model (``Recognizer()``, ``Recognizer("fast")``) was asked for but its
    weights file is not installed."""


def shipped_weights(name: str) -> Path | None:
    """The file of a model shipped in the package, by name: ``"lrdif"`` (the default,
    LRDif stage 2) or ``"fast"`` (MobileNetV2 at 48x48, one pass per face, for bulk
    crops; cards in ``weights/``); None for any other name."""
    return {"lrdif": DEFAULT_WEIGHTS, "fast": FAST_WEIGHTS}.get(name)


@dataclass
class Picture:
    """One still image or video frame on its way through :meth:`Recognizer.iter_predict`.

    ``image`` is the decoded RGB or grey uint8 picture (None where decoding failed);
    ``records`` its face records, complete once the picture is yielded.
    """

    source: str
    frame: int | None
    time: float | None
    image: np.ndarray | None
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Input:
    source: str
    payload: Any  # Path, bytes, PIL image or numpy array
    video: bool = False


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for, but PyTorch sees no CUDA GPU")
    return resolved


class Recognizer:
    """Facial expression recognition on photos, folders and videos with a trained checkpoint.

    ``weights``: a checkpoint made by ``lrdif train`` (stage-2 LRDif or a baseline), or
    the name of a model shipped in the package (:func:`shipped_weights`): None or
    ``"lrdif"``, the default (LRDif stage 2 trained on clean and UDC FERPlus; its card is
    ``weights/MODEL_CARD.md``), ``"fast"``, a MobileNetV2 on the same faces at a ninth of
    the cost (``weights/FAST_MODEL_CARD.md``); where the file is missing, an error says
    so rather than run untrained weights. ``detector``: a
    ``FACE_DETECTORS`` name or any :class:`FaceDetector`. ``simulate_udc``: a display
    preset (``"toled"``, ``"poled"``) through which each face crop is passed before the
    model, as UDC-FERPlus was made from clean crops, to show a display's effect (the
    noise of each face is seeded by its source, frame and index: reruns agree).

    Probabilities are calibrated: the logits are divided by the temperature stored in the
    checkpoint (``meta["calibration"]``, fitted on validation by
    :func:`lrdif.calibration.fit_temperature`; 1 when absent), ``self.temperature``; each
    record's ``confidence`` is the calibrated probability of its dominant emotion.
    ``precision="bfloat16"`` runs the model under bf16 autocast: faster on CPUs with
    bf16 arithmetic (AVX512-BF16, AMX) and GPUs, with probabilities within about 1e-2 of
    float32's (benchmarks/results/predict.md).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        device: str = "auto",
        detector: str | FaceDetector = "haar",
        batch_size: int = 64,
        simulate_udc: str | None = None,
        max_pixels: int = MAX_PIXELS,
        precision: str = "float32",
    ) -> None:
        from lrdif.checkpoint import load_model, read_meta

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        name = "lrdif" if weights is None else weights
        shipped = shipped_weights(name) if isinstance(name, str) else None
        if shipped is not None and not Path(name).exists():  # a file of that name comes first
            if not shipped.is_file():
                which = "default model" if name == "lrdif" else f"model {name!r}"
                raise NoDefaultWeightsError(
                    f"the {which} of lrdif is not installed "
                    f"(expected {shipped}). Reinstall lrdif, or train a model with "
                    "`lrdif train` and pass "
                    "its checkpoint: Recognizer.from_checkpoint('runs/.../best.safetensors') "
                    "or `lrdif predict --weights CKPT ...`"
                )
            weights = shipped
        self.weights = Path(weights)
        self.device = _resolve_device(device)
        model = load_model(self.weights, device=self.device)
        if model.registry_name == "lrdif_s1":
            raise ValueError(
                f"{self.weights}: a stage-1 LRDif checkpoint needs the true label to build its "
                "prior (paper Sec. 3.2), so it cannot recognise new faces; train stage 2 from "
                "it and pass that checkpoint"
            )
        model.eval()
        fold_batch_norms(model)  # E_I's norms into its convolutions: 1.3x faster on CPU
        if self.device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.class_names: tuple[str, ...] = tuple(model.class_names)
        size = model.config.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.in_channels: int = model.config.in_channels
        # A model trained with detected landmarks (paper Sec. 3.2, DILnetwork) gets them
        # from the same source at inference; "learned" means the model's own maps.
        meta = read_meta(self.weights)
        source = (meta.get("dataset") or {}).get("landmarks", "learned")
        self.landmarks = None if source == "learned" else LANDMARKS.build(source)
        self.detector: FaceDetector = (
            FACE_DETECTORS.build(detector) if isinstance(detector, str) else detector
        )
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.temperature: float = checkpoint_temperature(meta, str(self.weights))
        self.precision = precision
        self.simulator = None
        if simulate_udc is not None:
            from lrdif.udc.degrade import UDCConfig, UDCSimulator

            # The simulator's defaults for that display: what `lrdif synthesize` applies
            # to 48x48 crops by default (a face 600 sensor pixels wide, 32 dB).
            self.simulator = UDCSimulator(UDCConfig(display=simulate_udc))

    @classmethod
    def from_checkpoint(cls, path: str | Path, **options: Any) -> Recognizer:
        """A recognizer on a checkpoint made by ``lrdif train`` (options as the constructor's)."""
        return cls(path, **options)

    def predict(
        self, x: Any, *, detect: bool = True, every: int = 1, progress: bool | None = None
    ) -> Predictions:
        """Face records for ``x`` (see the module docstring), in input order.

        ``detect=False`` treats each picture as one face crop. ``every``: keep every
        n-th video frame. ``progress``: a tqdm bar; None shows it from 32 pictures on.
        """
        records = [r for p in self.iter_predict(x, detect=detect, every=every,
                                                progress=progress) for r in p.records]
        return Predictions(records, class_names=self.class_names)

    def iter_predict(
        self, x: Any, *, detect: bool = True, every: int = 1, progress: bool | None = None
    ) -> Iterator[Picture]:
        """Like :meth:`predict`, but yields each :class:`Picture` with its records as soon
        as its batch is done (for streaming long videos or drawing annotations)."""
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        inputs = _expand(x)
        detector = self.detector if detect else WholeImageDetector()
        total = sum(
            math.ceil(frame_count(i.payload) / every) if i.video else 1 for i in inputs
        )
        show = total >= _AUTO_PROGRESS if progress is None else progress
        bar = tqdm(total=total or None, unit="img", disable=not show, desc="lrdif predict")
        pending: list[Picture] = []
        crops: list[np.ndarray] = []
        keys: list[str] = []  # one per crop, for the UDC simulator's per-image noise
        pixels = 0
        try:
            for picture in self._pictures(inputs, every):
                bar.update(1)
                pending.append(picture)
                if picture.image is not None:
                    pixels += picture.image.size
                    faces = self._detect(picture, detector)
                    if faces is not None:
                        crops.append(faces)
                        keys += [f"{picture.source}#{picture.frame}#{i}"
                                 for i in range(len(faces))]
                if len(keys) >= self.batch_size or pixels >= _PENDING_PIXELS:
                    yield from self._flush(pending, crops, keys)
                    pending, crops, keys, pixels = [], [], [], 0
            yield from self._flush(pending, crops, keys)
        finally:
            bar.close()

    def _detect(self, picture: Picture, detector: FaceDetector) -> np.ndarray | None:
        """Fill ``picture.records`` with its faces (or NO_FACE); return their crops."""
        faces = detector.detect(picture.image)
        if not faces:
            picture.records = [face_record(picture.source, picture.frame, picture.time,
                                       error=NO_FACE)]
            return None
        picture.records = [
            face_record(picture.source, picture.frame, picture.time, box=list(f.box),
                    face_confidence=f.confidence)
            for f in faces
        ]
        return crop_faces(picture.image, [f.box for f in faces], size=self.image_size,
                          channels=self.in_channels, margin=detector.margin)

    def _flush(
        self, pending: list[Picture], crops: list[np.ndarray], keys: list[str]
    ) -> Iterator[Picture]:
        """Classify the buffered crops and hand back the buffered pictures, completed."""
        faces = [r for picture in pending for r in picture.records if r["error"] is None]
        if faces:
            batch = np.concatenate(crops)
            if self.simulator is not None:
                batch = self._degrade(batch, keys)
            probabilities = self.classify(batch)
            top = probabilities.argmax(axis=1)
            for record, p, k in zip(faces, probabilities.tolist(), top.tolist(), strict=True):
                record["emotions"] = dict(zip(self.class_names, p, strict=True))
                record["dominant_emotion"] = self.class_names[k]
                record["confidence"] = p[k]
        yield from pending

    def _degrade(self, crops: np.ndarray, keys: list[str]) -> np.ndarray:
        """(N, C, H, W) uint8 crops through the UDC simulator, which takes (N, H, W[, 3])."""
        degraded = self.simulator.degrade(_channels_last(crops), keys)
        return degraded[:, None] if degraded.ndim == 3 else degraded.transpose(0, 3, 1, 2)

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Model-sized face crops uint8 ``(N, C_in, H, W)`` -> calibrated probabilities
        ``(N, K)`` float32: ``softmax(logits / temperature)``."""
        logits = torch.from_numpy(self.logits(crops))
        return torch.softmax(logits / self.temperature, dim=1).numpy()

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """Model-sized face crops uint8 ``(N, C_in, H, W)`` -> raw logits ``(N, K)`` float32
        (before temperature scaling).

        Runs in batches of ``batch_size`` with no labels: for LRDif stage 2 the EPR is
        estimated by the reverse diffusion chain (paper Eq. 15-16), deterministic from Z_T = 0.
        Landmarks, where the checkpoint was trained with them, come from the crops.
        """
        out = []
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bfloat16")
        with torch.inference_mode(), autocast:
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                images = torch.from_numpy(chunk).to(self.device).float().div_(255.0)
                if self.device.type == "cpu":
                    images = images.contiguous(memory_format=torch.channels_last)
                landmarks = None
                if self.landmarks is not None:
                    points = self.landmarks.detect(_channels_last(chunk))  # (B, P, 2)
                    landmarks = torch.from_numpy(points).to(self.device)
                out.append(self.model(images, landmarks=landmarks).logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def _pictures(self, inputs: list[_Input], every: int) -> Iterator[Picture]:
        """Decode the inputs in order; a failure becomes a picture with one error record."""
        for item in inputs:
            if isinstance(item.payload, Exception):
                yield _failed(item.source, str(item.payload))
            elif item.video:
                try:
                    for frame, time, image in iter_frames(
                        item.payload, every=every, max_pixels=self.max_pixels
                    ):
                        yield Picture(item.source, frame, time, image)
                except (VideoError, OSError) as exc:
                    yield _failed(item.source, str(exc))
            else:
                try:
                    image = read_image(item.payload, max_pixels=self.max_pixels,
                                       name=item.source)
                except (ImageError, OSError) as exc:
                    yield _failed(item.source, str(exc))
                else:
                    yield Picture(item.source, None, None, image)


def _channels_last(crops: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) -> (N, H, W) for grey or (N, H, W, 3), the numpy image layout."""
    return np.ascontiguousarray(crops[:, 0] if crops.shape[1] == 1 else crops.transpose(0, 2, 3, 1))


def _failed(source: str, message: str) -> Picture:
    return Picture(source, None, None, None, [face_record(source, error=message)])


def _expand(x: Any) -> list[_Input]:
    """Flatten ``x`` into inputs: folders become their image and video files (sorted)."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    out: list[_Input] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                files = sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or is_video(p))
                )
                out += [_Input(str(p), p, is_video(p)) for p in files]
            elif path.is_file():
                out.append(_Input(str(path), path, is_video(path)))
            else:
                out.append(_Input(str(path), FileNotFoundError(f"{path}: no such file or folder")))
        elif isinstance(item, (bytes, bytearray, memoryview)):
            out.append(_Input(f"<bytes {index}>", bytes(item)))
        elif isinstance(item, np.ndarray):
            out.append(_Input(f"<array {index}>", item))
        elif type(item).__module__.startswith("PIL."):
            out.append(_Input(f"<PIL {index}>", item))
        else:
            raise TypeError(
                f"cannot predict on input {index} of type {type(item).__name__}: expected a "
                "path, a folder, a video, a PIL image, a numpy array or encoded image bytes"
            )
    return out
