"""Safe decoding of untrusted image bytes into a BGR image.

The format is recognised by content (magic bytes), and width, height and pixel format
are read from the header and checked against the limits *before* OpenCV decodes: a
small PNG can expand to hundreds of megabytes. Only what the product needs is
accepted: baseline/progressive JPEG (camera frames, card snapshots), 8-bit PNG and BMP
(chip photos). Each decode writes into a fresh array, so a corrupt input can never
surface the pixels of an earlier request.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from kiosk.errors import InvalidImage
from kiosk.pipeline.types import BgrImage

# OpenCV's own ceilings, read once by OpenCV; set low before cv2 is first imported so a
# header that slips past our parser still cannot make OpenCV allocate gigabytes.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(40_000_000))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_WIDTH", str(16384))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_HEIGHT", str(16384))
import cv2  # noqa: E402

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BMP_MAGIC = b"BM"


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    channels: int
    bit_depth: int
    # Offset where the compressed pixel data starts (JPEG: the first SOS marker).
    data_offset: int = 0


def _jpeg_header(data: bytes) -> ImageHeader:
    pos = 2
    n = len(data)
    frame: tuple[int, int, int, int] | None = None
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise InvalidImage("JPEG is corrupt: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            raise InvalidImage("JPEG is truncated inside its header")
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8:
                raise InvalidImage("JPEG frame header is too short")
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            if marker not in (0xC0, 0xC1, 0xC2):
                raise InvalidImage("JPEG uses an unsupported coding (only baseline and progressive Huffman)")
            frame = (width, height, components, precision)
        if marker == 0xDA:
            if frame is None:
                break
            width, height, components, precision = frame
            return ImageHeader("jpeg", width, height, components, precision, data_offset=pos)
        pos += 2 + length
    raise InvalidImage("JPEG has no frame header" if frame is None else "JPEG is truncated before its image data")


def _png_header(data: bytes) -> ImageHeader:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidImage("PNG is truncated or has no IHDR chunk")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour_type)
    if channels is None:
        raise InvalidImage(f"PNG has an invalid colour type {colour_type}")
    first_idat = data.find(b"IDAT")
    if b"acTL" in data[: first_idat if first_idat >= 0 else len(data)]:
        raise InvalidImage("animated PNG is not accepted")
    return ImageHeader("png", width, height, channels, bit_depth)


def _bmp_header(data: bytes) -> ImageHeader:
    if len(data) < 30:
        raise InvalidImage("BMP is truncated")
    width, height = struct.unpack("<ii", data[18:26])
    (bits,) = struct.unpack("<H", data[28:30])
    return ImageHeader("bmp", width, abs(height), max(bits // 8, 1), 8)


def read_header(data: bytes) -> ImageHeader:
    if data.startswith(JPEG_MAGIC):
        return _jpeg_header(data)
    if data.startswith(PNG_MAGIC):
        return _png_header(data)
    if data.startswith(BMP_MAGIC):
        return _bmp_header(data)
    raise InvalidImage("not a JPEG, PNG or BMP image (unrecognised content)")


def check_header(header: ImageHeader, limits: ImageLimits) -> None:
    if header.width <= 0 or header.height <= 0:
        raise InvalidImage(f"{header.format.upper()} declares an empty size {header.width}x{header.height}")
    if header.width > limits.max_side or header.height > limits.max_side:
        raise InvalidImage(
            f"image is {header.width}x{header.height}, larger than {limits.max_side} pixels on a side"
        )
    if header.width * header.height > limits.max_pixels:
        raise InvalidImage(
            f"image has {header.width * header.height} pixels, more than the limit of {limits.max_pixels}"
        )
    if header.bit_depth != 8:
        raise InvalidImage(f"{header.format.upper()} with {header.bit_depth}-bit samples is not accepted")
    if header.format == "jpeg" and header.channels not in (1, 3):
        raise InvalidImage(f"JPEG with {header.channels} colour components (CMYK?) is not accepted")
    if header.format == "png" and header.channels in (2, 4):
        raise InvalidImage("PNG with an alpha channel is not accepted")


def _check_complete(data: bytes, header: ImageHeader) -> None:
    # OpenCV decodes a truncated JPEG or PNG into a partly grey image without an error.
    # Inside JPEG entropy-coded data every 0xFF is stuffed, so an FFD9 after the first
    # scan is the real end-of-image marker (not one of an embedded EXIF thumbnail).
    if header.format == "jpeg" and data.rfind(b"\xff\xd9") < header.data_offset:
        raise InvalidImage("JPEG is truncated (no end-of-image marker)")
    if header.format == "png" and b"IEND" not in data[-64:]:
        raise InvalidImage("PNG is truncated (no IEND chunk)")


def decode_image(data: bytes, limits: ImageLimits) -> BgrImage:
    """Decode ``data`` into a fresh (H, W, 3) uint8 BGR array or raise ``InvalidImage``."""
    if not data:
        raise InvalidImage("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    header = read_header(data)
    check_header(header, limits)
    _check_complete(data, header)
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if image is None:
        raise InvalidImage(f"{header.format.upper()} is corrupt and cannot be decoded")
    if image.shape[:2] != (header.height, header.width):
        raise InvalidImage("decoded size differs from the header: the file is inconsistent")
    return image


def decode_raw_frame(data: bytes, width: int, height: int, pixel_format: str, limits: ImageLimits) -> BgrImage:
    """A raw camera frame (``bgr`` packed, or ``nv12``) as a fresh BGR array."""
    if width <= 0 or height <= 0:
        raise InvalidImage(f"raw frame has an empty size {width}x{height}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise InvalidImage(f"raw frame of {width}x{height} exceeds the size limits")
    if pixel_format == "bgr":
        expected = width * height * 3
        if len(data) != expected:
            raise InvalidImage(f"raw BGR frame of {width}x{height} needs {expected} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3).copy()
    if pixel_format == "nv12":
        if width % 2 or height % 2:
            raise InvalidImage(f"NV12 frame needs even width and height, got {width}x{height}")
        expected = width * height * 3 // 2
        if len(data) != expected:
            raise InvalidImage(f"raw NV12 frame of {width}x{height} needs {expected} bytes, got {len(data)}")
        yuv = np.frombuffer(data, dtype=np.uint8).reshape(height * 3 // 2, width)
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_NV12)
    raise InvalidImage(f"unknown raw pixel format {pixel_format!r} (expected bgr or nv12)")
