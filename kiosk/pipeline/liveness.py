"""Passive presentation-attack detection: one camera frame -> P(live), with fr_liveness.

The network sees the face with a lot of its surroundings (the edge of a print or of a
phone, the hand holding it, moiré): the crop is the detector box squared to its height,
scaled ``CROP_SCALE`` about its centre, moved back inside the image and clamped to it,
resized to 128x128, BGR 0..255 (manifest ``liveness``). The output is three logits;
after a softmax, index 0 is live.

The score alone never decides a verification: the verifier turns a live photo scoring
below the calibrated threshold (``models/liveness.toml``, ``kiosk.liveness_calibration``)
into a RETRY, never a MATCH. It is only meaningful on camera captures: ordinary web
photos often score as attacks, so the ID photo is never scored.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort

from kiosk.errors import Undecidable
from kiosk.pipeline.tensors import run_model, softmax
from kiosk.pipeline.types import BgrImage, Box, FaceDetection
from kiosk.runtime.manifest import ModelEntry

# The source package's crop scale (its alignLivenessImage); models/README.md measured it on MTCNN boxes.
CROP_SCALE = 2.7
LIVE_INDEX = 0
# LivenessOutcome.failed_check when this check fails.
PASSIVE_CHECK = "passive"
# Verification.reason of a verification refused for a suspected attack.
ATTACK_SUSPECTED = "presentation_attack_suspected"


class PresentationAttackSuspected(Undecidable):
    """A live photo scored below the passive-liveness threshold."""

    def __init__(self, score: float):
        super().__init__(
            ATTACK_SUSPECTED,
            "the live photo looks like a photo, screen or mask rather than a person: retry with staff present",
        )
        self.score = score


def crop_window(box: Box, width: int, height: int, scale: float = CROP_SCALE) -> tuple[int, int, int]:
    """(left, top, side) of the square liveness crop in a ``width`` x ``height`` image.

    Side ``scale`` x the box's height, about the box's centre, shifted back inside the image;
    where the image is smaller than that, the side is clamped to the image's shorter side.
    """
    side = max(1, min(round(box.height * scale), width, height))
    centre_x, centre_y = box.x + box.width / 2, box.y + box.height / 2
    left = min(max(round(centre_x - side / 2), 0), width - side)
    top = min(max(round(centre_y - side / 2), 0), height - side)
    return left, top, side


class PassiveLiveness:
    """fr_liveness: ``score(image, face)`` is P(live) of one camera frame's subject face."""

    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry
        self.output_name = entry.outputs[0]
        # NCHW: the crop side is the last dimension.
        self.size = int(entry.input.shape[-1])

    def score(self, image: BgrImage, face: FaceDetection) -> float:
        """P(live) in 0..1 for ``face`` (as detected in ``image``, in its pixels)."""
        height, width = image.shape[:2]
        left, top, side = crop_window(face.box, width, height)
        # Bilinear like the source package's canvas scaling; area averaging lifted a curved
        # print from 0.992 to 0.999 and a phone replay from 0.948 to 0.977 on the spoof set.
        window = image[top : top + side, left : left + side]
        crop = cv2.resize(window, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        try:
            (logits,) = run_model(self.session, self.entry, crop[np.newaxis], [self.output_name])
        finally:
            crop.fill(0)
        return float(softmax(logits[0])[LIVE_INDEX])

    def warm_up(self) -> None:
        blank = np.zeros((1, self.size, self.size, 3), dtype=np.uint8)
        run_model(self.session, self.entry, blank, [self.output_name])
