"""Safe image decoding: every source becomes a ``uint8`` array or a clear :class:`ImageError`.

On disk and in numpy an image is ``uint8`` ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB), as
in docs/ARCHITECTURE.md. :func:`read_image` accepts files, bytes, Pillow images and numpy
arrays, and normalises what the wild holds: palette, CMYK, alpha (composited on white),
16-bit (rescaled, not clipped), float in ``[0, 1]``, EXIF orientation. Everything that is
not a usable picture (empty or truncated files, text named ``.jpg``, decompression bombs,
arrays of the wrong shape or dtype) raises :class:`ImageError` naming the source and what
was expected; Pillow's warnings during decoding are errors too.

8-bit grey and RGB PNGs (all of FERPlus) take a fast path through OpenCV's decoder, which
is about six times faster than Pillow and bit-identical for those lossless files; any file
OpenCV does not decode cleanly goes through Pillow, which then gives the error message.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

ImageMode = Literal["L", "RGB"]
ImageSource = str | Path | bytes | Image.Image | np.ndarray

#: Formats Pillow may try; anything else (text, archives, exotic formats) is refused.
MAX_PIXELS = 40_000_000  # default decompression-bomb limit (a 40-megapixel picture)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")  # JPEG includes multi-picture (MPO) files
EXPECTED_FILE = "a PNG, JPEG, BMP, TIFF or WebP image"
EXPECTED_ARRAY = (
    "an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of uint8, uint16, or float in [0, 1]"
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image source that cannot be turned into a picture; the message names the source."""


def read_image(
    source: ImageSource,
    *,
    mode: ImageMode | None = None,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``source`` to ``uint8`` ``(H, W)`` for ``mode="L"`` or ``(H, W, 3)`` for ``"RGB"``.

    ``mode=None`` keeps grey images grey and turns everything else into RGB. Alpha is
    composited on white (a cut-out face on a white card, not on black). ``name`` is used
    in error messages instead of the path (useful for bytes). Images with more than
    ``max_pixels`` pixels are refused before their pixels are decoded.

    Decoding through Pillow records warnings with :func:`warnings.catch_warnings`, which
    is not thread-safe in Python < 3.14: call this from one thread at a time (the data
    sets' bulk loader decodes in threads only on the OpenCV path, which warns nothing).
    """
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L', 'RGB' or None, not {mode!r}")
    label = name if name is not None else _describe(source)
    if isinstance(source, np.ndarray):
        image = _from_array(source, label, max_pixels)
    elif isinstance(source, Image.Image):
        image = _from_pil(source, label, max_pixels)
    elif isinstance(source, (str, Path)):
        image = decode_bytes(read_file(source, label), label=label, max_pixels=max_pixels)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        image = decode_bytes(bytes(source), label=label, max_pixels=max_pixels)
    else:
        raise TypeError(
            f"{label}: cannot read an image from a {type(source).__name__}; expected a path, "
            "bytes, a PIL.Image.Image or a numpy array"
        )
    image = convert_mode(image, mode)
    # Pillow's arrays are views of immutable bytes; callers may write into the result.
    return image if image.flags.writeable else image.copy()


def read_file(path: str | Path, label: str | None = None) -> bytes:
    """The bytes of ``path``; a missing, unreadable or empty file is an :class:`ImageError`."""
    label = label if label is not None else str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{label}: cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{label}: the file is empty; expected {EXPECTED_FILE}")
    return data


def decode_bytes(data: bytes, *, label: str, max_pixels: int) -> np.ndarray:
    """Decode encoded image bytes to ``uint8`` ``(H, W)`` or ``(H, W, 3)`` (the source's mode)."""
    if not data:
        raise ImageError(f"{label}: no data; expected {EXPECTED_FILE}")
    image = decode_png_fast(data, max_pixels)
    if image is not None:
        return image
    return _decode_pil(data, label, max_pixels)


def decode_png_fast(data: bytes, max_pixels: int) -> np.ndarray | None:
    """OpenCV decode of a plain 8-bit grey/RGB PNG; ``None`` when Pillow must handle it.

    Only files whose header says 8-bit grey or RGB without transparency, EXIF or animation
    chunks qualify; for those OpenCV's output equals Pillow's pixel for pixel. OpenCV is
    stricter than Pillow about damaged data (it refuses what Pillow would also refuse),
    so a ``None`` here sends damaged files to Pillow for a proper error. Releases the GIL,
    so it is safe and useful in threads.
    """
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if bit_depth != 8 or colour_type not in (0, 2) or not 0 < width * height <= max_pixels:
        return None
    if b"tRNS" in data or b"eXIf" in data or b"acTL" in data:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:  # e.g. over OpenCV's own pixel limit
        return None
    if image is None or image.dtype != np.uint8 or image.shape[:2] != (height, width):
        return None
    if image.ndim == 3:
        if image.shape[2] != 3:
            return None
        image = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV gives BGR
    return image


def convert_mode(image: np.ndarray, mode: ImageMode | None) -> np.ndarray:
    """Grey ``(H, W)`` <-> RGB ``(H, W, 3)``; grey uses Pillow's ITU-R 601 luma."""
    if mode == "L" and image.ndim == 3:
        return np.asarray(Image.fromarray(image, "RGB").convert("L"))
    if mode == "RGB" and image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return image


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _decode_pil(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    # Pillow raises a zoo of exception types on damaged data (OSError, SyntaxError,
    # ValueError, struct.error, EOFError, zlib.error, ...); all of them mean "not a
    # usable picture", so each becomes an ImageError that names the file.
    Image.init()  # registers every plugin once; restricting ``formats`` needs them loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as opened:
                _check_size(opened.size, label, max_pixels)
                opened.load()
                image = _normalise(ImageOps.exif_transpose(opened), label)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{label}: refused as a possible decompression bomb ({exc})") from None
        except Image.UnidentifiedImageError:
            raise ImageError(
                f"{label}: not a recognised image (starts with {data[:16]!r}); "
                f"expected {EXPECTED_FILE}"
            ) from None
        except Exception as exc:
            raise ImageError(
                f"{label}: damaged or unsupported image ({type(exc).__name__}: {exc}); "
                f"expected {EXPECTED_FILE}"
            ) from None
    if caught:
        raise ImageError(
            f"{label}: the decoder warned '{caught[0].message}'; expected {EXPECTED_FILE} "
            "that decodes cleanly"
        )
    return image


def _from_pil(image: Image.Image, label: str, max_pixels: int) -> np.ndarray:
    _check_size(image.size, label, max_pixels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image.load()
            result = _normalise(ImageOps.exif_transpose(image), label)
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(
                f"{label}: cannot decode the PIL image ({type(exc).__name__}: {exc})"
            ) from None
    if caught:
        raise ImageError(f"{label}: the decoder warned '{caught[0].message}'")
    return result


def _check_size(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: the image is {width}x{height}; expected a non-empty image")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: {width}x{height} = {width * height:,} pixels exceeds max_pixels="
            f"{max_pixels:,} (refused as a possible decompression bomb)"
        )


def _normalise(image: Image.Image, label: str) -> np.ndarray:
    """A decoded Pillow image of any mode -> ``uint8`` grey ``(H, W)`` or RGB ``(H, W, 3)``."""
    mode = image.mode
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        image = image.convert("LA" if mode == "L" else "RGBA")
        mode = image.mode
    if mode == "L":
        return np.asarray(image)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("LA", "La"):
        return _on_white(np.asarray(image.convert("LA")))
    if mode in ("RGBA", "RGBa", "PA"):
        return _on_white(np.asarray(image.convert("RGBA")))
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit(np.asarray(image), label)
    if mode == "F":
        return _unit_float(np.asarray(image), label)
    # P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversions are correct for these.
    return np.asarray(image.convert("RGB"))


def _on_white(image: np.ndarray) -> np.ndarray:
    """Composite ``(H, W, 2)`` grey+alpha or ``(H, W, 4)`` RGBA on a white background."""
    colour = image[..., :-1].astype(np.uint32)
    alpha = image[..., -1:].astype(np.uint32)
    out = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    out = out.astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def _sixteen_bit(image: np.ndarray, label: str) -> np.ndarray:
    """Rescale 0..65535 to 0..255 by rounding ``v / 257`` (full range kept, nothing clipped)."""
    values = image.astype(np.int64)
    if values.min() < 0 or values.max() > 65535:
        raise ImageError(
            f"{label}: integer image with values in [{values.min()}, {values.max()}]; "
            "expected 16-bit values in [0, 65535]"
        )
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _unit_float(image: np.ndarray, label: str) -> np.ndarray:
    values = image.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageError(f"{label}: float image holds NaN or infinity; expected values in [0, 1]")
    low, high = values.min(), values.max()
    if low < 0.0 or high > 1.0:
        raise ImageError(
            f"{label}: float image with values in [{low:.4g}, {high:.4g}]; expected [0, 1]"
        )
    return np.rint(values * 255.0).astype(np.uint8)


def _from_array(array: np.ndarray, label: str, max_pixels: int) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{label}: shape {array.shape}; expected {EXPECTED_ARRAY}")
    height, width = array.shape[:2]
    _check_size((width, height), label, max_pixels)
    if array.dtype == np.uint8:
        image = array
    elif array.dtype == np.uint16:
        image = _sixteen_bit(array, label)
    elif array.dtype.kind == "f":
        image = _unit_float(array, label)
    else:
        raise ImageError(f"{label}: dtype {array.dtype}; expected {EXPECTED_ARRAY}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = _on_white(image)
    return np.ascontiguousarray(image)
