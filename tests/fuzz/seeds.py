"""Seed inputs for the fuzzers, made from synthetic pixels (never a photo of a person).

    python -m tests.fuzz.seeds decode DIR    # or: request DIR

writes them as files, one input per file, as libFuzzer reads a corpus directory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from kiosk.v1 import kiosk_pb2 as pb

SIZES = ((8, 8), (17, 33), (48, 64))


def _pictures() -> Iterator[np.ndarray]:
    rng = np.random.default_rng(2024)
    for height, width in SIZES:
        y, x = np.mgrid[0:height, 0:width]
        gradient = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1).astype(np.uint8)
        yield gradient
        yield rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _encode(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {ext} seed")
    return data.tobytes()


def image_seeds() -> dict[str, bytes]:
    """Valid JPEG (baseline, progressive, grey), PNG (RGB, grey) and BMP (24-, 8-, 32-bit) files."""
    seeds = {}
    for i, picture in enumerate(_pictures()):
        grey = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
        seeds[f"{i}.jpg"] = _encode(".jpg", picture, cv2.IMWRITE_JPEG_QUALITY, 80)
        seeds[f"{i}-progressive.jpg"] = _encode(".jpg", picture, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
        seeds[f"{i}-grey.jpg"] = _encode(".jpg", grey)
        seeds[f"{i}.png"] = _encode(".png", picture)
        seeds[f"{i}-grey.png"] = _encode(".png", grey)
        seeds[f"{i}.bmp"] = _encode(".bmp", picture)
        seeds[f"{i}-grey.bmp"] = _encode(".bmp", grey)
        seeds[f"{i}-alpha.bmp"] = _encode(".bmp", np.dstack([picture, grey]))
    return seeds


def request_seeds() -> dict[str, bytes]:
    """Serialised VerifyRequest and SessionRequest messages around small synthetic images."""
    picture = next(_pictures())
    jpeg = _encode(".jpg", picture)
    height, width = picture.shape[:2]
    consent = pb.Consent(granted=True, text_version="2026-01")
    raw_bgr = pb.RawImage(data=picture.tobytes(), width=width, height=height, pixel_format=pb.RawImage.BGR)
    nv12 = np.full((height * 3 // 2, width), 128, dtype=np.uint8).tobytes()
    raw_nv12 = pb.RawImage(data=nv12, width=width, height=height, pixel_format=pb.RawImage.NV12)
    messages = {
        "verify": pb.VerifyRequest(
            request_id="r-1", device_id="kiosk-1", id_photo=jpeg, live_photos=[jpeg, jpeg], consent=consent,
            target_fmr=0.001,
        ),
        "verify-empty": pb.VerifyRequest(),
        "start": pb.SessionRequest(start=pb.SessionStart(request_id="s-1", id_photo=jpeg, consent=consent)),
        "frame-encoded": pb.SessionRequest(frame=pb.CameraFrame(encoded=jpeg, timestamp_ms=100)),
        "frame-bgr": pb.SessionRequest(frame=pb.CameraFrame(raw=raw_bgr, timestamp_ms=200)),
        "frame-nv12": pb.SessionRequest(frame=pb.CameraFrame(raw=raw_nv12, timestamp_ms=300)),
    }
    return {name: message.SerializeToString() for name, message in messages.items()}


def write(seeds: dict[str, bytes], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)


if __name__ == "__main__":
    kind, target = sys.argv[1], Path(sys.argv[2])
    write({"decode": image_seeds, "request": request_seeds}[kind](), target)
