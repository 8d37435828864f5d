"""Requests for the HIL run: (ID photo, live frame) pairs of the same person, encoded as a kiosk sends them.

Two sources:

* ``from_directory(DIR)``: the operator's own photos, one folder per person
  (``DIR/<person>/*.jpg|png``, as ``shared/data/faces`` is laid out); each person's first
  photo is the ID photo, the others are live frames. A flat folder of photos pairs each
  photo with the next.
* ``generated(faces)``: made from the shared faces (NUAA webcam captures first, then
  LFW): a person's first photo becomes a card chip photo (400 px tall, JPEG quality 75)
  and later photos 640x480 camera frames (letterboxed, JPEG quality 90), so every request
  has the sizes a kiosk sends.

Photos are read on the host that runs the harness and sent to the device; nothing is
written anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
CAMERA_SIZE = (640, 480)
ID_PHOTO_HEIGHT = 400


@dataclass(frozen=True)
class Pair:
    id_photo: bytes
    live_frame: bytes
    label: str


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def from_directory(root: Path, limit: int = 200) -> list[Pair]:
    """Pairs from the operator's folder (see the module docstring), at most ``limit``."""
    people = sorted(d for d in root.iterdir() if d.is_dir())
    pairs: list[Pair] = []
    if people:
        for person in people:
            photos = _images(person)
            pairs += [Pair(photos[0].read_bytes(), live.read_bytes(), f"{person.name}/{live.name}") for live in photos[1:]]
    else:
        photos = _images(root)
        pairs = [Pair(a.read_bytes(), b.read_bytes(), b.name) for a, b in zip(photos, photos[1:])]
    if not pairs:
        raise ValueError(f"no photo pairs under {root}: one folder per person with two or more photos each")
    return pairs[:limit]


def as_chip_photo(image: np.ndarray) -> bytes:
    height, width = image.shape[:2]
    scale = ID_PHOTO_HEIGHT / height
    chip = cv2.resize(image, (max(1, round(width * scale)), ID_PHOTO_HEIGHT), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()


def as_camera_frame(image: np.ndarray) -> bytes:
    """The photo letterboxed into a 640x480 frame, as a kiosk camera delivers it."""
    frame_w, frame_h = CAMERA_SIZE
    height, width = image.shape[:2]
    scale = min(frame_w / width, frame_h / height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    frame = np.zeros((frame_h, frame_w, 3), dtype=np.uint8)
    x, y = (frame_w - w) // 2, (frame_h - h) // 2
    frame[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def generated(faces: Path, limit: int = 60, per_person: int = 10, subsets: tuple[str, ...] = ("nuaa", "lfw")) -> list[Pair]:
    """Chip-photo / camera-frame pairs from the shared faces (same person on both sides).

    Subsets in order of preference: NUAA's photos are real 640x480 webcam captures, the
    closest to a kiosk camera; LFW adds variety (and sometimes a bystander).
    """
    pairs = []
    for subset in subsets:
        for person in sorted(d for d in faces.iterdir() if d.is_dir() and d.name.startswith(subset + "__")):
            photos = _images(person)
            id_image = cv2.imread(str(photos[0]), cv2.IMREAD_COLOR) if len(photos) > 1 else None
            if id_image is None:
                continue
            chip = as_chip_photo(id_image)
            # Spread over the person's photos: consecutive NUAA frames are near-duplicates.
            step = max(1, (len(photos) - 1) // per_person)
            for live_path in photos[1::step][:per_person]:
                live_image = cv2.imread(str(live_path), cv2.IMREAD_COLOR)
                if live_image is not None:
                    pairs.append(Pair(chip, as_camera_frame(live_image), f"{person.name}/{live_path.name}"))
                if len(pairs) >= limit:
                    return pairs
    if not pairs:
        raise ValueError(f"no usable faces under {faces}")
    return pairs
