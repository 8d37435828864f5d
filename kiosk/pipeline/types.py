"""Domain types passed between stages and returned to callers.

Array aliases name what an array means; the shape and dtype are in the comment beside
each. The types that cross the wire live in ``kiosk.domain`` (no numpy, so a remote
client does not load the inference stack) and are re-exported here; the ones below hold
arrays and never leave a request. Results returned to callers never hold an image, a
crop or an embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kiosk.domain import (  # noqa: F401 (re-exported: the pipeline's callers import them from here)
    Box,
    Decision,
    FaceFinding,
    ImageRole,
    LivenessOutcome,
    LivenessStatus,
    OperatingPoint,
    QualityFinding,
    Verification,
)

BgrImage = npt.NDArray[np.uint8]  # (H, W, 3) uint8, OpenCV channel order
Landmarks5 = npt.NDArray[np.float32]  # (5, 2) float32 x, y: left eye, right eye, nose, mouth left, mouth right
AlignedFace = npt.NDArray[np.uint8]  # (S, S, 3) uint8 BGR, ArcFace template geometry; S from the embedder (112)
Embedding = npt.NDArray[np.float32]  # (D,) float32, L2-normalised


@dataclass(frozen=True)
class FaceDetection:
    box: Box
    score: float
    landmarks: Landmarks5  # not returned to callers: geometry of a face, used only inside a request


@dataclass(frozen=True)
class EyeOpenness:
    """How open each eye of one face looks: fr_eye's P(open) per eye, 0..1."""

    # The subject's own right eye (the image-left one in an unmirrored frame) and left eye.
    right: float
    left: float
