"""Safe decode: formats by content, header limits before decoding, precise refusals.

Hostile files are built byte by byte here (helpers ``png_file``, ``bmp_file``,
``jpeg_segments``) from synthetic pixels: no real photo is involved.
"""

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.errors import ConfigError, InvalidImage
from kiosk.pipeline.decode import (
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    ImageLimits,
    decode_image,
    decode_raw_frame,
    opencv_ceilings_in_force,
    read_header,
    require_opencv_version,
)

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


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_header(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


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
    actl = png_chunk(b"acTL", struct.pack(">II", 2, 0))
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


# --------------------------------------------------------------------------- OpenCV itself


def test_opencv_version_gate():
    for version in ("4.12.0", "4.13.0-dev", "5.0.0"):
        require_opencv_version(version)
    with pytest.raises(ConfigError, match=r"OpenCV 4\.11\.0 is installed; 4\.12 or later is required"):
        require_opencv_version("4.11.0")


def test_opencv_ceilings_are_in_force_in_this_process():
    # tests/conftest.py imports kiosk.pipeline before any test imports cv2.
    assert opencv_ceilings_in_force()


def _import_order_probe(first: str) -> str:
    code = f"import {first}\nfrom kiosk.pipeline.decode import check_opencv\ncheck_opencv()\nprint('in force')"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for name in ("OPENCV_IO_MAX_IMAGE_PIXELS", "OPENCV_IO_MAX_IMAGE_WIDTH", "OPENCV_IO_MAX_IMAGE_HEIGHT"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_opencv_reads_its_ceilings_when_loaded_so_kiosk_sets_them_first():
    # kiosk.pipeline first (as the service imports it): OpenCV refuses past its ceiling.
    assert "in force" in _import_order_probe("kiosk.pipeline")
    # cv2 first: OpenCV has already read its defaults, and the start-up check says so.
    assert "are not in force: cv2 was loaded before kiosk.pipeline" in _import_order_probe("cv2")


def test_opencv_ceiling_behind_the_header_check_is_a_clean_refusal():
    # Limits looser than OpenCV's own ceilings: the header passes, OpenCV refuses, and
    # the caller still gets InvalidImage (OpenCV 5 raises cv2.error here).
    loose = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 30, max_side=1 << 20)
    ok, wide = cv2.imencode(".png", np.zeros((1, 16385), dtype=np.uint8))
    with pytest.raises(InvalidImage, match="PNG is corrupt and cannot be decoded"):
        decode_image(wide.tobytes(), loose)


# --------------------------------------------------------------------------- crafted files


def png_file(
    pixels: np.ndarray, colour_type: int, *, palette: bytes = b"", interlace: int = 0, extra: bytes = b""
) -> bytes:
    """A PNG of ``pixels`` (H, W) or (H, W, C) uint8 written by hand: palette, Adam7 and odd chunks."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width, -1)
    if interlace:
        # Adam7: seven reduced images, each row with filter type 0.
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(
            b"\0" + row.tobytes() for x0, y0, dx, dy in passes for row in rows[y0::dy, x0::dx] if row.size
        )
    else:
        raw = b"".join(b"\0" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace)
    body = png_chunk(b"IHDR", ihdr) + extra
    if palette:
        body += png_chunk(b"PLTE", palette)
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def bmp_file(
    width: int,
    height: int,
    bits: int = 24,
    *,
    compression: int = 0,
    dib_size: int = 40,
    planes: int = 1,
    colours: int = 0,
    pixels: bytes | None = None,
    offset: int | None = None,
) -> bytes:
    """A BMP with a hand-written header; ``pixels`` defaults to a full, zeroed pixel array."""
    palette = bytes(4 * (colours or 256)) if bits <= 8 else b""
    if pixels is None:
        pixels = bytes((bits * abs(width) + 31) // 32 * 4 * abs(height))
    dib = struct.pack("<IiiHHIIiiII", dib_size, width, height, planes, bits, compression, 0, 2835, 2835, colours, 0)
    dib += bytes(dib_size - len(dib))
    start = 14 + len(dib) + len(palette) if offset is None else offset
    head = b"BM" + struct.pack("<IHHI", start + len(pixels), 0, 0, start)
    return head + dib + palette + pixels


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(marker, offset) of each marker segment before the first scan of a JPEG."""
    found, pos = [], 2
    while data[pos + 1] != 0xDA:
        found.append((data[pos + 1], pos))
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    found.append((0xDA, pos))
    return found


def with_marker(data: bytes, marker: int) -> bytes:
    """``data`` with its frame header's marker replaced (SOF0 -> another SOFn)."""
    [sof] = [pos for m, pos in jpeg_segments(data) if m in (0xC0, 0xC2)]
    return data[: sof + 1] + bytes([marker]) + data[sof + 2 :]


def insert_segment(data: bytes, marker: int, body: bytes, before: int = 0xDA) -> bytes:
    [pos] = [pos for m, pos in jpeg_segments(data) if m == before][:1]
    return data[:pos] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + data[pos:]


@pytest.fixture
def small() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, size=(24, 16, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- accepted variants


def test_progressive_jpeg_is_accepted(picture):
    data = encoded(".jpg", picture, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert decode_image(data, LIMITS).shape == (126, 102, 3)


def test_exif_rotated_jpeg_is_accepted_upright(small):
    # Orientation 6: the camera was turned; OpenCV rotates, so width and height swap.
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    data = encoded(".jpg", small)
    rotated = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]
    assert decode_image(rotated, LIMITS).shape == (16, 24, 3)


def test_interlaced_palette_and_grey_pngs_are_accepted(small):
    assert np.array_equal(decode_image(png_file(small[..., ::-1], 2, interlace=1), LIMITS), small)
    grey = small[..., 0]
    assert np.array_equal(decode_image(encoded(".png", grey), LIMITS)[..., 0], grey)
    ramp = bytes(v for i in range(256) for v in (i, 255 - i, i // 2))  # PLTE is RGB
    indices = small[..., 1]
    expected = np.stack([indices // 2, 255 - indices, indices], axis=-1)  # as BGR
    assert np.array_equal(decode_image(png_file(indices, 3, palette=ramp), LIMITS), expected)


def test_bmp_variants_are_accepted(small):
    assert decode_image(encoded(".bmp", small[..., 0]), LIMITS).shape == (24, 16, 3)  # 8-bit palette
    assert decode_image(encoded(".bmp", np.dstack([small, small[..., :1]])), LIMITS).shape == (24, 16, 3)  # 32-bit
    bottom_up = encoded(".bmp", small)
    # Negative height: the same rows stored top-down.
    rows = np.frombuffer(bottom_up[54:], dtype=np.uint8).reshape(24, -1)[::-1]
    top_down = bottom_up[:22] + struct.pack("<i", -24) + bottom_up[26:54] + rows.tobytes()
    assert np.array_equal(decode_image(top_down, LIMITS), decode_image(bottom_up, LIMITS))


@pytest.mark.parametrize(
    "trailer",
    [bytes(16), b"\r\n", b" " * 5891, b"/*  |xGv00|0dd238b9d799f257fba287efb5348adb */", b"\xff" * 8192],
    ids=["zeros", "crlf", "spaces", "cms-watermark", "8-KiB"],
)
def test_small_trailers_of_real_photos_are_tolerated(small, trailer):
    # Trailers seen on the shared photos (web CMS watermarks, line ends, runs of spaces).
    for ext in (".jpg", ".png", ".bmp"):
        assert decode_image(encoded(ext, small) + trailer, LIMITS).shape == (24, 16, 3)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "make, message",
    [
        # Polyglots and appended files.
        (lambda j: j + b"PK\x05\x06" + bytes(18), "JPEG has a ZIP archive after the end of its image"),
        (lambda j: j + b"<HTML><script>alert(1)</script></html>", "JPEG has an HTML page after the end"),
        (lambda j: j + b"\n<?php system($_GET[0]); ?>", "PHP code after the end of its image"),
        (lambda j: j + bytes(9000), "JPEG has 9000 bytes after the end of its image, more than the 8192 tolerated"),
        (lambda j: j + j, "JPEG has a JPEG image after the end of its image"),
        # Frame headers.
        (lambda j: insert_segment(j, 0xC0, j[jpeg_segments(j)[-2][1] + 4 : jpeg_segments(j)[-2][1] + 21]),
         "more than one frame header"),
        (lambda j: with_marker(j, 0xC9), r"unsupported coding \(only baseline and progressive Huffman\)"),
        (lambda j: with_marker(j, 0xC3), "unsupported coding"),
        (lambda j: insert_segment(j, 0xDC, b"\x00\x80"), "DNL marker"),
        (lambda j: j[:2] + j[jpeg_segments(j)[-1][1] :], "no frame header before its image data"),
        (lambda j: j[:2] + b"\xff\xd8" + j[2:], "second start-of-image marker"),
        (lambda j: j[:20] + b"\x00\x00" + j[20:], "JPEG is corrupt: marker expected at byte 20"),
        (lambda j: j[:2] + b"\xff\xe0\xff\xff" + b"x" * 10, "truncated inside its header"),
        (lambda j: j[:-2], r"JPEG is truncated \(no end-of-image marker\)"),
        (lambda j: j[:2] + b"\xff\xd9", "JPEG has no frame header"),
    ],
    ids=["zip", "html", "php", "zeros-9000", "two-jpegs", "two-sofs", "arithmetic", "lossless", "dnl", "no-sof",
         "second-soi", "no-marker", "header-cut", "no-eoi", "eoi-only"],
)
def test_jpeg_refusals_are_precise(small, make, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(make(encoded(".jpg", small)), LIMITS)


def test_jpeg_frame_fields_are_checked(small):
    data = encoded(".jpg", small)
    [sof] = [pos for m, pos in jpeg_segments(data) if m == 0xC0]

    def patched(offset: int, value: bytes) -> bytes:
        return data[: sof + offset] + value + data[sof + offset + len(value) :]

    with pytest.raises(InvalidImage, match="JPEG with 12-bit samples"):
        decode_image(patched(4, b"\x0c"), LIMITS)
    with pytest.raises(InvalidImage, match="JPEG declares an empty size 16x0"):
        decode_image(patched(5, b"\x00\x00"), LIMITS)  # height 0: the DNL form
    with pytest.raises(InvalidImage, match="larger than 8192 pixels on a side"):
        decode_image(patched(5, b"\xff\xff"), LIMITS)
    with pytest.raises(InvalidImage, match="JPEG with 2 colour components is not accepted"):
        decode_image(patched(9, b"\x02"), LIMITS)


def test_progressive_jpeg_with_absurdly_many_scans_is_refused(picture):
    data = encoded(".jpg", picture, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    first_scan = jpeg_segments(data)[-1][1]
    # One tiny scan repeated: a real decoder would pass over the whole image for each.
    (length,) = struct.unpack(">H", data[first_scan + 2 : first_scan + 4])
    scan = data[first_scan : data.index(b"\xff", first_scan + 2 + length)]
    hostile = data[:first_scan] + scan * (MAX_JPEG_SCANS + 1) + b"\xff\xd9"
    with pytest.raises(InvalidImage, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode_image(hostile, LIMITS)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p[:29] + b"\0\0\0\0" + p[33:], "the IHDR chunk fails its CRC check"),
        (lambda p: p[:40] + bytes([p[40] ^ 1]) + p[41:], "fails its CRC check"),
        (lambda p: p[:33] + b"\xff\xff\xff\xff" + p[37:], "PNG is truncated"),
        (lambda p: p[:8] + png_chunk(b"gAMA", b"\0\0\xb1\x8f") + p[8:], "does not start with a 13-byte IHDR"),
        (lambda p: p[:33] + png_chunk(b"IEND", b""), r"no image data \(no IDAT chunk\)"),
        (lambda p: p + b"PK\x05\x06" + bytes(18), "PNG has a ZIP archive after the end of its image"),
        (lambda p: p[:-12], r"PNG is truncated \(no IEND chunk\)"),
        (
            lambda p: p[:33] + png_chunk(b"tEXt", b"a\0b") * MAX_PNG_CHUNKS + p[33:],
            f"more than {MAX_PNG_CHUNKS} chunks",
        ),
    ],
    ids=["ihdr-crc", "idat-crc", "chunk-length", "ihdr-not-first", "no-idat", "zip", "no-iend", "chunk-flood"],
)
def test_png_refusals_are_precise(small, make, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(make(encoded(".png", small)), LIMITS)


@pytest.mark.parametrize(
    "data, message",
    [
        (png_with_header(64, 64, bit_depth=4, colour_type=2), "invalid bit depth 4 for colour type 2"),
        (png_with_header(64, 64, bit_depth=4, colour_type=3), "PNG with 4-bit samples is not accepted"),
        (png_with_header(64, 64, bit_depth=16, colour_type=0), "PNG with 16-bit samples"),
        (png_with_header(64, 64, colour_type=4), "PNG with an alpha channel"),
        (png_with_header(64, 64, interlace=2), "unknown compression, filter or interlace method"),
        (png_with_header(2**31, 1), "larger than 8192 pixels on a side"),
    ],
    ids=["rgb-4bit", "palette-4bit", "grey-16bit", "grey-alpha", "interlace-2", "width-2^31"],
)
def test_png_header_refusals(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data, LIMITS)


def test_png_with_alpha_or_16_bits_from_an_encoder_is_refused(small):
    with pytest.raises(InvalidImage, match="alpha"):
        decode_image(encoded(".png", np.dstack([small, small[..., :1]])), LIMITS)
    with pytest.raises(InvalidImage, match="16-bit"):
        decode_image(encoded(".png", small.astype(np.uint16) * 257), LIMITS)


@pytest.mark.parametrize(
    "data, message",
    [
        (bmp_file(-16, 24), "BMP declares a negative width -16"),
        (bmp_file(16, 0), "BMP declares an empty size 16x0"),
        (bmp_file(16, -(2**31), pixels=b""), "larger than 8192 pixels on a side"),
        (bmp_file(100_000, 100_000, pixels=b""), "larger than 8192 pixels on a side"),
        (bmp_file(8000, 1400, pixels=bytes(64)), "BMP is truncated: its pixel data ends at byte 33600054"),
        (bmp_file(16, 24, pixels=bytes(100)), "BMP is truncated"),
        (bmp_file(16, 24, bits=16), "BMP with 16 bits per pixel is not accepted"),
        (bmp_file(16, 24, bits=1, colours=2), "BMP with 1 bits per pixel"),
        (bmp_file(16, 24, bits=4, colours=16), "BMP with 4 bits per pixel"),
        (bmp_file(16, 24, bits=8, compression=1, pixels=b"\0\0"), "compression type 1 is not accepted"),
        (bmp_file(16, 24, compression=4), "compression type 4"),
        (bmp_file(16, 24, dib_size=64), r"unsupported header \(64-byte DIB header\)"),
        (bmp_file(16, 24, planes=0), "0 colour planes"),
        (bmp_file(16, 24, bits=8, colours=1000), "declares 1000 colours"),
        (bmp_file(16, 24, offset=1 << 30), "pixel data offset 1073741824 is outside the file"),
        (bmp_file(16, 24, offset=20), "inside its header"),
        (bmp_file(16, 24) + b"<?php system($_GET[0]); ?>", "BMP has PHP code after the end of its image"),
        (b"BM" + bytes(10), "BMP is truncated inside its header"),
    ],
    ids=["negative-width", "zero-height", "int-min-height", "huge-tiny-file", "huge-truncated", "truncated",
         "16-bit", "1-bit", "4-bit", "rle8", "jpeg-in-bmp", "os2-v2", "planes", "palette-size", "offset-past-end",
         "offset-in-header", "php", "header-cut"],
)
def test_bmp_refusals_are_precise(data, message):
    with pytest.raises(InvalidImage, match=message):
        decode_image(data, LIMITS)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff",
        b"\xff\xd8\xff",
        b"\x89PNG\r\n\x1a\n",
        b"BM",
        b"PK\x03\x04" + bytes(40),
        b"<!DOCTYPE html><html></html>",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"II*\x00" + bytes(20),
        b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000 (ePassport chips): not accepted
        bytes(range(256)) * 4,
    ],
    ids=["one-byte", "jpeg-magic", "png-magic", "bmp-magic", "zip", "html", "webp", "tiff", "jp2", "noise"],
)
def test_non_images_and_bare_signatures_are_invalid(data):
    with pytest.raises(InvalidImage):
        decode_image(data, LIMITS)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_every_truncation_is_refused(small, ext):
    data = encoded(ext, small)
    for length in range(1, len(data)):
        with pytest.raises(InvalidImage):
            decode_image(data[:length], LIMITS)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp"])
def test_any_flipped_byte_is_refused_or_decodes_to_the_declared_shape(small, ext):
    # Deterministic sweep: every byte position, one bit flipped. Whatever survives the
    # checks must come out as a plain BGR image of the size the (possibly altered) header says.
    data = encoded(ext, small)
    for pos in range(len(data)):
        mutated = data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1 :]
        try:
            image = decode_image(mutated, LIMITS)
        except InvalidImage:
            continue
        header = read_header(mutated)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.shape[:2] in ((header.height, header.width), (header.width, header.height))
