"""Finding the subject face of one image: detection, then the one face the request is about.

Beside ``detect`` (the MTCNN cascade) and using only its public ``detect`` and
``dominant_face``: the ID photo gets a replicated margin (chip photos are cropped tight
around the head, and MTCNN misses faces cut by the border) and a second, relaxed pass;
a live frame is shrunk to the profile's detection size. Either way the detection comes
back in the original image's pixels, so every later stage works on one geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kiosk.pipeline.detect import MtcnnDetector, MtcnnThresholds, SubjectRule, dominant_face
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.types import BgrImage, Box, FaceDetection, ImageRole

# Chip photos are cropped tight around the head; MTCNN misses faces cut by the border,
# so the ID photo gets a replicated margin of this fraction on every side.
ID_PHOTO_MARGIN = 0.2


@dataclass(frozen=True)
class SubjectRules:
    """How small a face may be and how hard to look for it, per image role."""

    # The smallest face searched for is at least this fraction of the image's short side.
    min_face_fraction: float
    # ID photo: the smallest face in pixels, and the relaxed MTCNN threshold of the second pass.
    id_photo_min_face_px: float
    id_photo_retry_threshold: float
    # Live frame: the smallest face in pixels and the long side the frame is shrunk to.
    live_min_face_px: float
    live_max_input_side: int

    @classmethod
    def of(cls, quality, detector_profile) -> "SubjectRules":
        """From the ``[quality]`` settings and the hardware profile's detector settings."""
        return cls(
            min_face_fraction=quality.min_face_fraction,
            id_photo_min_face_px=quality.id_photo_min_face_px,
            id_photo_retry_threshold=quality.id_photo_retry_threshold,
            live_min_face_px=detector_profile.min_face_px,
            live_max_input_side=detector_profile.max_input_side,
        )

    def min_face_px(self, image: BgrImage, floor_px: float) -> float:
        return max(floor_px, self.min_face_fraction * min(image.shape[:2]))


def find_subject_face(
    detector: MtcnnDetector, image: BgrImage, role: ImageRole, rules: SubjectRules, scratch: Scratch
) -> FaceDetection:
    """The dominant face of ``image`` with box and landmarks in ``image``'s pixels.

    Raises ``NoFace`` or ``MultipleFaces`` (``Undecidable``); every copy of the image it
    makes is kept in ``scratch``.
    """
    height, width = image.shape[:2]
    if role is ImageRole.ID_PHOTO:
        margin = round(ID_PHOTO_MARGIN * max(height, width))
        padded = scratch.keep(cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE))
        min_face = rules.min_face_px(image, rules.id_photo_min_face_px)
        # The pyramid skips scales whose faces could not change the subject (kiosk.pipeline.detect).
        rule = SubjectRule(role, width, height, -margin, 1.0)
        faces = detector.detect(padded, min_face, subject_rule=rule)
        if not faces:
            relaxed = rules.id_photo_retry_threshold
            faces = detector.detect(padded, min_face, MtcnnThresholds(relaxed, relaxed, relaxed), subject_rule=rule)
        faces = [shift_detection(f, -margin, 1.0) for f in faces]
    else:
        small, scale = scaled_for_detection(image, rules.live_max_input_side)
        if small is not image:
            scratch.keep(small)
        faces = detector.detect(
            small,
            rules.min_face_px(image, rules.live_min_face_px) * scale,
            subject_rule=SubjectRule(role, width, height, 0.0, scale),
        )
        faces = [shift_detection(f, 0, scale) for f in faces]
    return dominant_face(faces, width, height, role)


def scaled_for_detection(image: BgrImage, max_side: int) -> tuple[BgrImage, float]:
    """The image shrunk so its long side is at most ``max_side``, and the scale applied."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def shift_detection(face: FaceDetection, offset: float, scale: float) -> FaceDetection:
    """Map a detection from a padded or scaled copy back to the original image's pixels."""
    box = face.box
    return FaceDetection(
        box=Box((box.x + offset) / scale, (box.y + offset) / scale, box.width / scale, box.height / scale),
        score=face.score,
        landmarks=((face.landmarks + offset) / scale).astype(np.float32),
    )
