"""Five-point similarity alignment to the ArcFace template (112x112, scaled to the embedder's size).

The embedder was trained on faces warped this way; any other crop costs accuracy
(the source package's own 3-point crop measured EER 17 % against 5.3 % with this one).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from kiosk.pipeline.types import AlignedFace, BgrImage, Landmarks5

ALIGNED_SIZE = 112
# Left eye, right eye, nose tip, left and right mouth corner in the 112x112 crop
# (insightface's ArcFace reference points).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

Affine2x3 = npt.NDArray[np.float64]  # (2, 3) float64


def similarity_transform(source: Landmarks5, target: Landmarks5) -> Affine2x3:
    """Least-squares rotation + uniform scale + translation mapping ``source`` onto ``target``.

    Umeyama's closed form; exact for noise-free points, unlike RANSAC/LMEDS estimators
    that pick a subset of the five points.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    variance = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / variance if variance > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(image: BgrImage, landmarks: Landmarks5, size: int = ALIGNED_SIZE) -> AlignedFace:
    """The face warped onto the template, ``size`` pixels square (the embedder's input side)."""
    template = ARCFACE_TEMPLATE if size == ALIGNED_SIZE else ARCFACE_TEMPLATE * np.float32(size / ALIGNED_SIZE)
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
