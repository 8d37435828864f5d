"""Eye state on single photos: the fr_eye model on square patches around MTCNN's eye points.

The network takes a 24x24 grey patch per eye and returns two logits, index 1 = open
(manifest ``eye_state``). Its crop was defined on 68-point landmarks (1.6 x the eye's
width); from MTCNN's five points the equivalent square is ``EYE_PATCH_SCALE`` x the
inter-eye distance, centred on the eye point. On the shared faces a crop levelled for
head roll misread more open eyes than this axis-aligned one, so the patches are not
rotated.

The model is unreliable on single photos (dark webcam frames of a person wearing
glasses read as closed), so ``kiosk.pipeline.quality`` only acts on it when both eyes
are read as closed with high confidence.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from kiosk.pipeline.detect import crop_batch
from kiosk.pipeline.tensors import run_model, softmax
from kiosk.pipeline.types import BgrImage, EyeOpenness, FaceDetection, Landmarks5
from kiosk.runtime.manifest import ModelEntry

EYE_PATCH_SCALE = 0.75
# Output index of "open" after the softmax (manifest notes, models/README.md).
OPEN_INDEX = 1


def eye_patch_boxes(landmarks: Landmarks5) -> np.ndarray:
    """(2, 4) float64 inclusive x1, y1, x2, y2 of the subject's right then left eye patch."""
    side = EYE_PATCH_SCALE * float(np.linalg.norm(landmarks[1] - landmarks[0]))
    centres = np.asarray(landmarks[:2], dtype=np.float64)
    return np.column_stack([centres - side / 2, centres + side / 2 - 1])


class EyeStateModel:
    """fr_eye: P(open) of each eye of a detected face."""

    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry
        self.output_name = entry.outputs[0]
        # NCHW: the patch side is the last dimension.
        self.patch_size = int(entry.input.shape[-1])

    def openness(self, image: BgrImage, face: FaceDetection) -> EyeOpenness:
        patches = crop_batch(image, eye_patch_boxes(face.landmarks), self.patch_size)
        try:
            (logits,) = run_model(self.session, self.entry, patches, [self.output_name])
        finally:
            patches.fill(0)
        p_open = softmax(logits)[:, OPEN_INDEX]
        return EyeOpenness(right=float(p_open[0]), left=float(p_open[1]))

    def warm_up(self) -> None:
        blank = np.zeros((2, self.patch_size, self.patch_size, 3), dtype=np.uint8)
        run_model(self.session, self.entry, blank, [self.output_name])
