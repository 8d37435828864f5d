"""Simulated chip photos: what an ID card's chip holds, made in code from a capture.

Used by the acceptance report's chip path and by `kiosk calibrate --chip-id-photos`,
which measures the threshold Verify applies when the ID photo is chip-sized.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.errors import InvalidImage
from kiosk.pipeline.types import Box

CHIP_SIZE = (102, 126)  # width, height of an ID card's chip portrait
CHIP_JPEG_QUALITY = 30


def chip_photo(image: np.ndarray, face: Box, grey: bool, quality_jpeg: int = CHIP_JPEG_QUALITY) -> bytes:
    """A simulated chip portrait of ``face``: card framing (face ~55 % of the width, eyes a
    little above the middle), 102x126, hard JPEG, optionally grey."""
    width = face.width / 0.55
    height = width * CHIP_SIZE[1] / CHIP_SIZE[0]
    cx, cy = face.x + face.width / 2, face.y + face.height * 0.45
    x0, y0 = int(round(cx - width / 2)), int(round(cy - height * 0.45))
    x1, y1 = int(round(x0 + width)), int(round(y0 + height))
    pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
    framed = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    chip = cv2.resize(framed[y0 + pad : y1 + pad, x0 + pad : x1 + pad], CHIP_SIZE, interpolation=cv2.INTER_AREA)
    if grey:
        chip = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, quality_jpeg])
    if not ok:
        raise InvalidImage("cannot encode the chip photo")
    return encoded.tobytes()
