"""Digital injection: a live photo that reproduces the ID photo is not a live face.

The cheapest attack on a still-photo Verify is to send the card's own chip photo (or
any copy of it: upscaled, re-encoded, cropped, slightly rotated, colour-shifted) as
the live photo. The passive-liveness model does not see it (an upscaled chip scored
0.9994 to 0.9999 "live") and the comparison calls it a near-perfect match. Two real
captures of a person are never that close in *both* senses at once: identity (the
embedding cosine) and pixels (the correlation of the aligned crops). Video frames a
fraction of a second apart are as close in pixels, but a moved head, a blink and
sensor noise already lower their embedding cosine; photos from other sessions differ
in both.

Measured on the shared set's real captures (NUAA webcam sessions, webcam_pigface, six
phone_selfie_live people; 46 chip photos made in code at card framing, 102x126, JPEG
q30, half grey) against 10 copies of each chip (upscaled 4x cubic, 6x Lanczos, 1.5x
q70, cropped, rotated 4 degrees, colour-shifted, gamma 0.7, noise, blurred, pasted
into a webcam-sized frame):

- other real captures of the same person vs the chip (232 pairs): embedding cosine at
  most 0.878; none meets both limits below;
- copies (459 with a face found): 453 meet both (98.7 %); the six that do not are
  heavy edits of one person's chip (gamma, rotation, noise: cosine 0.81 to 0.887).

So a live face is a copy when its cosine to the ID photo is at least
``COPY_MIN_SIMILARITY`` and the aligned crops correlate at least
``COPY_MIN_CORRELATION``. The limits hold for the shipped embedder only: another
embedder's cosines differ and need the measurement (tests/unit/test_injection.py
pins the behaviour; ``python -m tests.bench.injection_measure`` reproduces the figures).
"""

from __future__ import annotations

import cv2
import numpy as np

from kiosk.errors import Undecidable
from kiosk.pipeline.types import AlignedFace

# Highest cosine of two real captures measured: 0.878; lowest of a plain upscaled chip: 0.902.
COPY_MIN_SIMILARITY = 0.89
# Correlation of the blurred grey aligned crops; copies measured 0.859 to 1.0.
COPY_MIN_CORRELATION = 0.85
# Blur before correlating, in pixels of the aligned crop: removes JPEG blocks, resampling
# ringing and sensor noise, which differ between copies of one photo, and keeps the face.
BLUR_SIGMA_PX = 2.0
# The face inside the aligned crop (fractions of its side): not the background corners.
FACE_ROWS = (1 / 7, 13 / 14)
FACE_COLUMNS = (1 / 7, 6 / 7)

REASON = "live_frame_is_id_photo"
CHECK = "id_photo_copy"


class LivePhotoIsIdPhoto(Undecidable):
    """The live photo is a copy of the ID photo (a digital injection), not a capture of a person."""

    def __init__(self, index: int):
        super().__init__(
            REASON,
            f"live photo {index} reproduces the ID photo: a live photo must be taken by the kiosk camera now",
        )
        self.index = index


def aligned_correlation(a: AlignedFace, b: AlignedFace) -> float:
    """Pearson correlation of the two aligned crops' blurred grey face regions, in [-1, 1]."""
    if not (_varies(a) and _varies(b)):
        return 0.0
    first, second = _face_region(a), _face_region(b)
    try:
        return float(np.corrcoef(first, second)[0, 1])
    finally:
        first.fill(0)
        second.fill(0)


def is_copy(similarity: float, correlation: float) -> bool:
    return similarity >= COPY_MIN_SIMILARITY and correlation >= COPY_MIN_CORRELATION


def _face_region(aligned: AlignedFace) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(aligned), cv2.COLOR_BGR2GRAY).astype(np.float32)
    grey = cv2.GaussianBlur(grey, (0, 0), BLUR_SIGMA_PX)
    height, width = grey.shape
    rows = slice(round(height * FACE_ROWS[0]), round(height * FACE_ROWS[1]))
    columns = slice(round(width * FACE_COLUMNS[0]), round(width * FACE_COLUMNS[1]))
    region = grey[rows, columns].ravel()
    grey.fill(0)  # a copy of the face: zeroed like every other buffer of the request
    return region


def _varies(aligned: AlignedFace) -> bool:
    # A flat crop has no correlation to speak of (and corrcoef would divide by zero).
    return bool(np.ptp(aligned) > 0)
