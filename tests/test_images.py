"""Safe decoding: every source gives a uint8 picture or an ImageError naming it."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from ferplus_source import FERPLUS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lrdif.data.images import ImageError, _decode_pil, read_image

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (24, 32), dtype=np.uint8)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("array", [GREY, RGB], ids=["grey", "rgb"])
def test_lossless_formats_round_trip(fmt, array):
    options = {"lossless": True} if fmt == "WEBP" else {}
    out = read_image(encode(array, fmt, **options))
    expected = np.repeat(array[..., None], 3, 2) if fmt == "WEBP" and array.ndim == 2 else array
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)


def test_jpeg_is_close_and_modes_convert():
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    colour = np.stack([smooth, smooth[:, ::-1], np.full_like(smooth, 90)], axis=2)
    data = encode(colour, "JPEG", quality=95)
    rgb = read_image(data)
    assert rgb.shape == (24, 32, 3)
    assert np.abs(rgb.astype(int) - colour).mean() < 3
    grey = read_image(data, mode="L")
    assert grey.shape == (24, 32)
    np.testing.assert_array_equal(grey, np.asarray(Image.fromarray(rgb).convert("L")))
    assert read_image(GREY).ndim == 2  # mode None keeps grey
    np.testing.assert_array_equal(read_image(GREY, mode="RGB"), np.repeat(GREY[..., None], 3, 2))


def test_fast_png_path_matches_pillow():
    sources = [encode(GREY, "PNG"), encode(RGB, "PNG"), encode(GREY, "PNG", optimize=True)]
    if FERPLUS.exists():
        sources += [p.read_bytes() for p in sorted((FERPLUS / "FER2013Valid").glob("*.png"))[:20]]
    for data in sources:
        np.testing.assert_array_equal(
            read_image(data), _decode_pil(data, label="x", max_pixels=10**8)
        )


def test_results_are_writable():
    for source in (encode(GREY, "PNG"), encode(RGB, "BMP"), Image.fromarray(RGB), GREY):
        assert read_image(source).flags.writeable


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 0, 255)  # opaque
    rgba[0, 1] = (200, 100, 0, 0)  # transparent -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white
    out = read_image(encode(rgba, "PNG"))
    assert out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == (200, 100, 0)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert tuple(out[1, 0]) == (127, 127, 127)
    la = Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(read_image(encode(la, "PNG")), [[10, 255]])
    np.testing.assert_array_equal(read_image(rgba), out)  # arrays take the same path


def test_palette_and_transparent_palette():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    np.testing.assert_array_equal(read_image(encode(palette, "PNG")), [[[255, 0, 0], [0, 0, 255]]])
    out = read_image(encode(palette, "PNG", transparency=1))
    np.testing.assert_array_equal(out, [[[255, 0, 0], [255, 255, 255]]])


def test_cmyk_becomes_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    for fmt in ("JPEG", "TIFF"):
        out = read_image(encode(cmyk, fmt))
        assert out.shape == (4, 4, 3)
        assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.array([[0, 257, 1000, 32768, 65535]], np.uint16)
    expected = np.rint(values / 257.0).astype(np.uint8)
    sixteen = Image.fromarray(values)
    assert sixteen.mode == "I;16"
    np.testing.assert_array_equal(read_image(sixteen), expected)
    np.testing.assert_array_equal(read_image(encode(sixteen, "PNG")), expected)
    np.testing.assert_array_equal(read_image(values), expected)


def test_float_arrays():
    x = np.array([[0.0, 0.5, 1.0]], np.float32)
    np.testing.assert_array_equal(read_image(x), [[0, 128, 255]])
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        read_image(x * 255)
    with pytest.raises(ImageError, match="NaN"):
        read_image(np.array([[np.nan]]))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    image = np.zeros((2, 3), np.uint8)
    image[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; display = rotate 90 degrees clockwise
    out = read_image(encode(Image.fromarray(image), fmt, exif=exif, quality=100))
    assert out.shape == (3, 2)
    assert out[0, 1] > 200 and out[0, 0] < 50  # marker moved to the top-right


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels, with one tiny data chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused(tmp_path):
    with pytest.raises(ImageError, match="max_pixels"):
        read_image(encode(RGB, "PNG"), max_pixels=100)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(8_000, 8_000))  # over our 40M default, under Pillow's
    with pytest.raises(ImageError, match=r"bomb\.png: 8000x8000 = 64,000,000 pixels exceeds"):
        read_image(path)
    path.write_bytes(png_header_only(100_000, 100_000))  # Pillow itself refuses to open it
    with pytest.raises(ImageError, match=r"bomb\.png: refused as a possible decompression bomb"):
        read_image(path, max_pixels=10**11)


def test_zero_size_file_is_refused():
    with pytest.raises(ImageError, match="zero"):
        read_image(png_header_only(0, 5), name="zero.png")


def test_pillow_warnings_become_errors(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 24x32 = 768: Pillow warns, not raises
    with pytest.raises(ImageError, match="warned"):
        read_image(encode(RGB, "BMP"))


def test_bad_files_name_the_file(tmp_path):
    cases = {
        "truncated.png": encode(RGB, "PNG")[:200],
        "text.jpg": b"this is not a JPEG, just text\n",
        "empty.png": b"",
        "truncated.jpg": encode(RGB, "JPEG")[:300],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=str(path).replace(".", r"\.")):
            read_image(path)
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="recognised"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match=r"upload\.png"):
        read_image(b"garbage", name="upload.png")


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 5), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((2, 4, 4, 3), np.uint8),
        np.zeros((4, 4), np.int32),
        np.zeros((4, 4), bool),
        np.zeros(5, np.uint8),
    ],
)
def test_bad_arrays(array):
    with pytest.raises(ImageError, match="expected"):
        read_image(array)


def test_wrong_source_type_and_mode():
    with pytest.raises(TypeError, match="list"):
        read_image([[1, 2]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        read_image(GREY, mode="CMYK")  # type: ignore[arg-type]


VALID = [
    encode(GREY, "PNG"),
    encode(RGB, "PNG"),
    encode(RGB, "JPEG"),
    encode(RGB, "BMP"),
    encode(RGB, "TIFF"),
    encode(RGB, "WEBP"),
    encode(Image.fromarray(RGB).convert("RGBA"), "PNG"),
]


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


malformed = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda d, f: d[: int(len(d) * f)], st.sampled_from(VALID), st.floats(0, 1)),
    st.builds(  # mutated headers
        _mutate,
        st.sampled_from(VALID),
        st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), min_size=1, max_size=4),
    ),
    st.builds(  # damage anywhere in the file
        _mutate,
        st.sampled_from(VALID),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    ),
)


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(malformed)
def test_malformed_bytes_give_a_picture_or_image_error(data):
    try:
        out = read_image(data, name="fuzz")
    except ImageError as exc:
        assert "fuzz" in str(exc)
        return
    assert out.dtype == np.uint8
    assert out.ndim == 2 or (out.ndim == 3 and out.shape[2] == 3)
    assert min(out.shape[:2]) > 0
