"""Safe decode: formats by content, header limits before decoding, precise refusals."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from kiosk.errors import InvalidImage
from kiosk.pipeline.decode import ImageLimits, decode_image, decode_raw_frame, read_header

LIMITS = ImageLimits(max_bytes=3_000_000, max_pixels=12_000_000, max_side=8192)


def encoded(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(ext, image, list(params))
    assert ok
    return buffer.tobytes()


@pytest.fixture
def picture() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(126, 102, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_accepted_formats_decode_to_bgr(picture, ext):
    image = decode_image(encoded(ext, picture), LIMITS)
    assert image.shape == (126, 102, 3) and image.dtype == np.uint8
    if ext != ".jpg":
        assert np.array_equal(image, picture)


def test_greyscale_jpeg_becomes_three_channels(picture):
    grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    assert decode_image(encoded(".jpg", grey), LIMITS).shape == (126, 102, 3)


def test_format_is_recognised_by_content_not_name(picture):
    assert read_header(encoded(".png", picture)).format == "png"
    assert read_header(encoded(".jpg", picture)).format == "jpeg"


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 100, "not a JPEG, PNG or BMP"),
        (b"%PDF-1.7 hello", "not a JPEG, PNG or BMP"),
        (png_with_header(100_000, 100_000), "larger than 8192 pixels on a side"),
        (png_with_header(8000, 8000), "more than the limit of 12000000"),
        (png_with_header(0, 10), "empty size"),
        (png_with_header(64, 64, bit_depth=16), "16-bit"),
        (png_with_header(64, 64, colour_type=6), "alpha"),
        (png_with_header(64, 64, colour_type=5), "invalid colour type"),
    ],
)
def test_refusals_are_precise(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data, LIMITS)


def test_huge_dimension_is_refused_before_any_decode():
    # A real PNG declaring 30000x30000 would need 2.7 GB decoded; the header check stops it.
    with pytest.raises(InvalidImage, match="larger than"):
        decode_image(png_with_header(30000, 30000), LIMITS)


def test_truncated_jpeg_is_refused(picture):
    data = encoded(".jpg", picture)
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[: len(data) // 2], LIMITS)


def test_truncated_png_is_refused(picture):
    data = encoded(".png", picture)
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data[: len(data) - 20], LIMITS)


def test_corrupt_jpeg_body_is_refused_or_decodes_fresh(picture):
    data = bytearray(encoded(".jpg", picture))
    data[200:600] = b"\x00" * 400
    try:
        image = decode_image(bytes(data), LIMITS)
    except InvalidImage:
        return
    assert image.shape == (126, 102, 3)


def test_cmyk_jpeg_is_refused(picture):
    data = bytearray(encoded(".jpg", picture))
    sof = data.find(b"\xff\xc0")
    data[sof + 9] = 4  # component count in the frame header
    with pytest.raises(InvalidImage, match="CMYK"):
        decode_image(bytes(data), LIMITS)


def test_animated_png_is_refused(picture):
    data = encoded(".png", picture)
    actl = struct.pack(">I", 8) + b"acTL" + struct.pack(">II", 2, 0) + b"\0\0\0\0"
    with pytest.raises(InvalidImage, match="animated"):
        decode_image(data[:33] + actl + data[33:], LIMITS)


def test_byte_limit():
    with pytest.raises(InvalidImage, match="more than the limit of 10"):
        decode_image(b"\xff\xd8\xff" + b"\0" * 20, ImageLimits(10, 100, 100))


def test_raw_frames(picture):
    bgr = decode_raw_frame(picture.tobytes(), 102, 126, "bgr", LIMITS)
    assert np.array_equal(bgr, picture)
    nv12 = np.full((126 * 3 // 2, 102), 128, dtype=np.uint8)
    assert decode_raw_frame(nv12.tobytes(), 102, 126, "nv12", LIMITS).shape == (126, 102, 3)
    with pytest.raises(InvalidImage, match="needs 38556 bytes, got 5"):
        decode_raw_frame(b"12345", 102, 126, "bgr", LIMITS)
    with pytest.raises(InvalidImage, match="unknown raw pixel format 'yuyv'"):
        decode_raw_frame(b"", 2, 2, "yuyv", LIMITS)


def test_decoded_image_never_shows_an_earlier_request(picture):
    decode_image(encoded(".png", picture), LIMITS)
    broken = encoded(".png", picture)[:60]
    with pytest.raises(InvalidImage):
        decode_image(broken, LIMITS)
