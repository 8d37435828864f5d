"""Safe decoding of untrusted image bytes into a BGR image.

The format is recognised by content (magic bytes), and the whole container structure is
walked in Python before OpenCV sees a byte: JPEG marker segments and scans, PNG chunks
(with their CRCs), BMP headers against the file's length. Width, height and pixel
format are checked against the limits *before* OpenCV decodes: a small PNG can expand
to hundreds of megabytes. Only what the product needs is accepted: baseline/progressive
Huffman JPEG (camera frames, card snapshots), 8-bit greyscale/RGB/palette PNG and
uncompressed 8/24/32-bit BMP (chip photos).

What follows the image is never decoded, but it is looked at: real photos carry a few
bytes of trailer (padding, line ends, a web CMS's watermark comment: 6 of the 1350
shared photos, 2 to 5891 bytes), so up to 8 KiB of it is tolerated, unless it holds
the signature of another file (a JPEG, PNG, ZIP, PDF, GIF, HTML, script or PHP). More,
or another file, is refused: a polyglot or a phone's multi-picture JPEG is sent again
re-encoded, as exactly one image.

OpenCV's own decoder ceilings (``OPENCV_IO_MAX_IMAGE_*``) are set by ``kiosk.pipeline``
before cv2 is loaded; ``check_opencv`` proves at start-up that they are in force and
that the installed OpenCV has the CVE-2025-53644 fix. Each decode writes into a fresh
array, so a corrupt input can never surface the pixels of an earlier request.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.errors import ConfigError, InvalidImage
from kiosk.pipeline import OPENCV_DECODE_CEILINGS
from kiosk.pipeline.types import BgrImage

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BMP_MAGIC = b"BM"

# CVE-2025-53644 (uninitialised memory in the JPEG decoder, reachable from imdecode) is
# fixed in OpenCV 4.12.0.
MIN_OPENCV_VERSION = (4, 12)

# libjpeg writes 10 scans for a progressive colour JPEG and mozjpeg about 20; each scan
# makes the decoder pass over the whole coefficient buffer again, so thousands of tiny
# scans are a cheap way to burn seconds of CPU.
MAX_JPEG_SCANS = 64
# Real files have a dozen or two (APPn, DQT, DHT, SOF, SOS...); the cap bounds the
# Python loop that walks them.
MAX_JPEG_SEGMENTS = 1024
# Encoders split IDAT into chunks of 8 KiB to 1 MiB: a 3 MiB file has at most a few
# hundred. The cap bounds the Python loop, as above.
MAX_PNG_CHUNKS = 4096
# Trailer bytes tolerated after the image (padding, CMS watermarks, stray line ends);
# more is another file riding along.
MAX_TRAILER_BYTES = 8192
# Signatures that make a trailer another file, searched case-insensitively.
_EMBEDDED_FILES = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89png": "a PNG image",
    b"gif8": "a GIF image",
    b"pk\x03\x04": "a ZIP archive",
    b"pk\x05\x06": "a ZIP archive",
    b"%pdf": "a PDF document",
    b"<html": "an HTML page",
    b"<!doctype": "an HTML page",
    b"<script": "a script",
    b"<svg": "an SVG image",
    b"<?php": "PHP code",
}

# Inside entropy-coded JPEG data every 0xFF is followed by 0x00 (stuffing) or a restart
# marker (0xD0-0xD7); 0xFF runs are fill. Anything else ends the scan.
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Baseline, extended and progressive Huffman: what cameras and libjpeg write.
_JPEG_ACCEPTED_SOF = frozenset({0xC0, 0xC1, 0xC2})
_JPEG_DNL = 0xDC
_JPEG_SOS = 0xDA
_JPEG_EOI = 0xD9
_JPEG_SOI = 0xD8
# Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Bit depths the PNG specification allows per colour type.
_PNG_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}

_BMP_RGB = 0
_BMP_BITFIELDS = 3
# BITMAPINFOHEADER and its V2..V5 extensions (the 12-byte OS/2 core header is read apart).
_BMP_INFO_HEADERS = frozenset({40, 52, 56, 108, 124})
_BMP_ACCEPTED = frozenset({(8, _BMP_RGB), (24, _BMP_RGB), (32, _BMP_RGB), (32, _BMP_BITFIELDS)})


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
    # Byte offset just past the image: the end of JPEG's EOI marker or PNG's IEND chunk,
    # or the end of BMP's pixel array (which may lie beyond a truncated file).
    end: int = 0


# --------------------------------------------------------------------------- OpenCV


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def require_opencv_version(version: str) -> None:
    """Raise ``ConfigError`` if ``version`` predates the decoder fixes the service relies on."""
    if _version_tuple(version)[:2] < MIN_OPENCV_VERSION:
        wanted = ".".join(map(str, MIN_OPENCV_VERSION))
        raise ConfigError(
            f"OpenCV {version} is installed; {wanted} or later is required (CVE-2025-53644 in its JPEG decoder)"
        )


def opencv_ceilings_in_force() -> bool:
    """True if OpenCV refuses an image one pixel wider than ``OPENCV_IO_MAX_IMAGE_WIDTH``.

    OpenCV reads the variable once, when the library is loaded; a value set later is
    silently ignored, so only a decode attempt shows which one is in force. The probe is
    a 96-byte PNG.
    """
    width = OPENCV_DECODE_CEILINGS["OPENCV_IO_MAX_IMAGE_WIDTH"] + 1
    ok, probe = cv2.imencode(".png", np.zeros((1, width), dtype=np.uint8))
    if not ok:
        return False
    try:
        return cv2.imdecode(probe, cv2.IMREAD_GRAYSCALE) is None
    except cv2.error:
        return True


def check_opencv() -> None:
    """Start-up check: a fixed OpenCV, with its own decoder ceilings in force."""
    require_opencv_version(cv2.__version__)
    if not opencv_ceilings_in_force():
        raise ConfigError(
            "OpenCV's decoder limits (OPENCV_IO_MAX_IMAGE_*) are not in force: cv2 was loaded "
            "before kiosk.pipeline set them; import kiosk.pipeline before cv2"
        )


# Import-time: a vulnerable OpenCV must not decode a single request.
require_opencv_version(cv2.__version__)


# --------------------------------------------------------------------------- JPEG


def _jpeg_scan_end(data: bytes, pos: int) -> int:
    match = _JPEG_SCAN_END.search(data, pos)
    if match is None:
        raise InvalidImage("JPEG is truncated (no end-of-image marker)")
    return match.start()


def _jpeg_header(data: bytes) -> ImageHeader:
    """Walk every marker segment and scan up to EOI; the frame header gives the size."""
    n = len(data)
    pos = 2
    frame: tuple[int, int, int, int] | None = None
    scans = segments = 0
    while True:
        if pos + 2 > n:
            raise InvalidImage("JPEG is truncated (no end-of-image marker)")
        if data[pos] != 0xFF:
            raise InvalidImage(f"JPEG is corrupt: marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == _JPEG_EOI:
            break
        if marker == _JPEG_SOI:
            raise InvalidImage("JPEG is corrupt: a second start-of-image marker")
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InvalidImage(f"JPEG has more than {MAX_JPEG_SEGMENTS} marker segments")
        if pos + 4 > n:
            raise InvalidImage("JPEG is truncated inside its header")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2 or pos + 2 + length > n:
            raise InvalidImage("JPEG is truncated inside its header")
        if marker in _JPEG_SOF:
            if frame is not None:
                raise InvalidImage("JPEG has more than one frame header")
            if length < 8:
                raise InvalidImage("JPEG frame header is too short")
            if marker not in _JPEG_ACCEPTED_SOF:
                raise InvalidImage("JPEG uses an unsupported coding (only baseline and progressive Huffman)")
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            frame = (width, height, components, precision)
        elif marker == _JPEG_DNL:
            raise InvalidImage("JPEG with a DNL marker (height given after the scan) is not accepted")
        elif marker == _JPEG_SOS:
            if frame is None:
                raise InvalidImage("JPEG has no frame header before its image data")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise InvalidImage(f"JPEG has more than {MAX_JPEG_SCANS} scans")
            pos = _jpeg_scan_end(data, pos + 2 + length)
            continue
        pos += 2 + length
    if frame is None or scans == 0:
        raise InvalidImage("JPEG has no frame header" if frame is None else "JPEG has no image data (no scan)")
    width, height, components, precision = frame
    return ImageHeader("jpeg", width, height, components, precision, end=pos + 2)


# --------------------------------------------------------------------------- PNG


def _png_header(data: bytes) -> ImageHeader:
    """Walk every chunk to IEND, checking lengths and CRCs; IHDR gives the size."""
    n = len(data)
    view = memoryview(data)
    pos = len(PNG_MAGIC)
    header: ImageHeader | None = None
    chunks = 0
    seen_image_data = False
    while True:
        if pos + 12 > n:
            raise InvalidImage("PNG is truncated (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            raise InvalidImage("PNG is truncated (no IEND chunk)")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InvalidImage(f"PNG has more than {MAX_PNG_CHUNKS} chunks")
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            name = kind.decode("latin-1") if kind.isalpha() else kind.hex()
            raise InvalidImage(f"PNG is corrupt: the {name} chunk fails its CRC check")
        if header is None:
            if kind != b"IHDR" or length != 13:
                raise InvalidImage("PNG is corrupt: it does not start with a 13-byte IHDR chunk")
            header = _png_ihdr(data[pos + 8 : pos + 21])
        elif kind == b"acTL" and not seen_image_data:
            raise InvalidImage("animated PNG is not accepted")
        elif kind == b"IDAT":
            seen_image_data = True
        elif kind == b"IEND":
            break
        pos = end
    if not seen_image_data:
        raise InvalidImage("PNG has no image data (no IDAT chunk)")
    return ImageHeader(header.format, header.width, header.height, header.channels, header.bit_depth, end=end)


def _png_ihdr(body: bytes) -> ImageHeader:
    width, height, bit_depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None:
        raise InvalidImage(f"PNG has an invalid colour type {colour_type}")
    if bit_depth not in _PNG_DEPTHS[colour_type]:
        raise InvalidImage(f"PNG has an invalid bit depth {bit_depth} for colour type {colour_type}")
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise InvalidImage("PNG header names an unknown compression, filter or interlace method")
    return ImageHeader("png", width, height, channels, bit_depth)


# --------------------------------------------------------------------------- BMP


def _bmp_header(data: bytes) -> ImageHeader:
    """File and DIB header; the pixel array must lie inside the file (checked after the limits)."""
    if len(data) < 26:
        raise InvalidImage("BMP is truncated inside its header")
    (pixel_offset, dib_size) = struct.unpack_from("<II", data, 10)
    if dib_size == 12:  # OS/2 core header: unsigned 16-bit sizes, always bottom-up, uncompressed
        width, height, planes, bits = struct.unpack_from("<HHHH", data, 18)
        compression, colours = _BMP_RGB, 0
    elif dib_size in _BMP_INFO_HEADERS:
        if len(data) < 14 + 40:
            raise InvalidImage("BMP is truncated inside its header")
        width, height, planes, bits, compression = struct.unpack_from("<iiHHI", data, 18)
        (colours,) = struct.unpack_from("<I", data, 46)
    else:
        raise InvalidImage(f"BMP has an unsupported header ({dib_size}-byte DIB header)")
    if planes != 1:
        raise InvalidImage(f"BMP header is invalid: {planes} colour planes")
    if width < 0:
        raise InvalidImage(f"BMP declares a negative width {width}")
    # A negative height means rows are stored top-down.
    height = abs(height)
    if (bits, compression) not in _BMP_ACCEPTED:
        if compression not in (_BMP_RGB, _BMP_BITFIELDS):
            raise InvalidImage(f"BMP with compression type {compression} is not accepted (only uncompressed)")
        raise InvalidImage(f"BMP with {bits} bits per pixel is not accepted (only 8, 24 and 32)")
    # Colour masks follow a 40-byte header with BITFIELDS; a palette follows for 8 bits.
    table_start = 14 + dib_size + (12 if dib_size == 40 and compression == _BMP_BITFIELDS else 0)
    if bits == 8:
        if colours > 256:
            raise InvalidImage(f"BMP palette declares {colours} colours; 8 bits index at most 256")
        table_start += (colours or 256) * (3 if dib_size == 12 else 4)
    if not table_start <= pixel_offset <= len(data):
        raise InvalidImage(f"BMP pixel data offset {pixel_offset} is outside the file or inside its header")
    row_bytes = (bits * width + 31) // 32 * 4
    return ImageHeader("bmp", width, height, 1 if bits == 8 else 3, 8, end=pixel_offset + row_bytes * height)


# --------------------------------------------------------------------------- checks


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
        raise InvalidImage(
            f"JPEG with {header.channels} colour components is not accepted (only greyscale or YCbCr, not CMYK)"
        )
    if header.format == "png" and header.channels in (2, 4):
        raise InvalidImage("PNG with an alpha channel is not accepted")


def _check_extent(data: bytes, header: ImageHeader) -> None:
    """Nothing missing (BMP), and no more than a small trailer that is not another file."""
    if header.end > len(data):
        raise InvalidImage(
            f"BMP is truncated: its pixel data ends at byte {header.end}, the file has {len(data)} bytes"
        )
    trailing = len(data) - header.end
    if trailing > MAX_TRAILER_BYTES:
        raise InvalidImage(
            f"{header.format.upper()} has {trailing} bytes after the end of its image, more than the "
            f"{MAX_TRAILER_BYTES} tolerated (another file appended?): re-encode it"
        )
    trailer = data[header.end :].lower()
    for signature, what in _EMBEDDED_FILES.items():
        if signature in trailer:
            raise InvalidImage(
                f"{header.format.upper()} has {what} after the end of its image (a polyglot file): re-encode it"
            )


def decode_image(data: bytes, limits: ImageLimits) -> BgrImage:
    """Decode ``data`` into a fresh (H, W, 3) uint8 BGR array or raise ``InvalidImage``."""
    if not data:
        raise InvalidImage("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes, more than the limit of {limits.max_bytes}")
    header = read_header(data)
    check_header(header, limits)
    _check_extent(data, header)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        # OpenCV raises for what its own checks catch (a ceiling, a broken stream) and
        # returns None for the rest; the text names OpenCV internals, not the client's input.
        image = None
    if image is None:
        raise InvalidImage(f"{header.format.upper()} is corrupt and cannot be decoded")
    # IMREAD_COLOR applies a JPEG's EXIF orientation, which may swap width and height.
    if image.shape[:2] not in ((header.height, header.width), (header.width, header.height)):
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
