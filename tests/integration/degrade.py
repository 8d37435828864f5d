"""ID-card-quality copies of real photos, generated in code (nothing is written to disk).

A chip photo is a 102x126 head-and-shoulders portrait, JPEG-compressed hard; some
cards print it in grey. The crop is placed around the face the way a card portrait is
framed: the face about 55 % of the width, eyes a little above the middle.
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.pipeline.types import Box

CHIP_SIZE = (102, 126)  # width, height


def chip_photo(image: np.ndarray, face: Box, quality: int = 30, grey: bool = False) -> bytes:
    width = face.width / 0.55
    height = width * CHIP_SIZE[1] / CHIP_SIZE[0]
    cx = face.x + face.width / 2
    cy = face.y + face.height * 0.45
    x0, y0 = int(round(cx - width / 2)), int(round(cy - height * 0.45))
    x1, y1 = int(round(x0 + width)), int(round(y0 + height))
    pad = max(0, -x0, -y0, x1 - image.shape[1], y1 - image.shape[0])
    framed = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(235, 235, 235))
    crop = framed[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    chip = cv2.resize(crop, CHIP_SIZE, interpolation=cv2.INTER_AREA)
    if grey:
        chip = cv2.cvtColor(chip, cv2.COLOR_BGR2GRAY)
    ok, encoded = cv2.imencode(".jpg", chip, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()
