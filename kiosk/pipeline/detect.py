"""MTCNN face detection: boxes and five landmarks.

Three small networks in a cascade (p-net over an image pyramid, r-net and o-net on
candidate crops). These MTCNN weights were trained on transposed images, so every
network input is laid out width-first ("NWHC" in the manifest); box regressions and
landmarks come back in ordinary image coordinates (x = column).

The manifest lists each network's outputs in the order face probability (index 1 =
face), box regression (dx1, dy1, dx2, dy2 as fractions of the box size), and for o-net
landmarks (x1..x5 then y1..y5 as fractions of the box).

The choice of *which* face is the subject is a separate plain function
(``dominant_face``) so it can be tested without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

from kiosk.errors import MultipleFaces, NoFace
from kiosk.pipeline.tensors import run_model
from kiosk.pipeline.types import BgrImage, Box, FaceDetection, ImageRole
from kiosk.runtime.manifest import ModelEntry

PNET_CELL = 12
PNET_STRIDE = 2
# Candidate boxes: (K, 9) float64 rows of x1, y1, x2, y2, score, dx1, dy1, dx2, dy2.
Candidates = np.ndarray


@dataclass(frozen=True)
class MtcnnThresholds:
    pnet: float = 0.6
    rnet: float = 0.7
    onet: float = 0.7
    pyramid_factor: float = 0.709


class _Net:
    """One cascade stage: a session and its manifest entry."""

    def __init__(self, session: ort.InferenceSession, entry: ModelEntry):
        self.session = session
        self.entry = entry

    def run(self, batch_bgr: np.ndarray) -> list[np.ndarray]:
        return run_model(self.session, self.entry, batch_bgr, list(self.entry.outputs))


def pyramid_scales(height: int, width: int, min_face_px: float, factor: float) -> list[float]:
    """Scales at which p-net's 12 px window covers faces from ``min_face_px`` up to the whole image."""
    scale = PNET_CELL / min_face_px
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def nms(boxes: Candidates, overlap: float, mode: str = "union") -> np.ndarray:
    """Indices of boxes kept by greedy non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        if mode == "min":
            ratio = inter / np.minimum(area[i], area[rest])
        else:
            ratio = inter / (area[i] + area[rest] - inter)
        order = rest[ratio <= overlap]
    return np.asarray(keep, dtype=np.int64)


def apply_regression(boxes: Candidates, regression: np.ndarray, plus_one: bool = True) -> Candidates:
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    out[:, 0] += regression[:, 0] * w
    out[:, 1] += regression[:, 1] * h
    out[:, 2] += regression[:, 2] * w
    out[:, 3] += regression[:, 3] * h
    return out


def squared(boxes: Candidates) -> Candidates:
    """Boxes made square around their centres (side = the longer side)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crop_batch(image: BgrImage, boxes: Candidates, size: int) -> np.ndarray:
    """(K, size, size, 3) uint8 crops of ``boxes`` (integer-rounded), zero outside the image."""
    height, width = image.shape[:2]
    batch = np.zeros((len(boxes), size, size, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(np.fix(boxes[:, :4]).astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 0 or bh <= 0:
            continue
        # Resized straight into the batch: no temporary copy of a face to wipe or leave behind.
        if x1 >= 0 and y1 >= 0 and x2 < width and y2 < height:
            # Inside the image (most candidates): resize the view, with no zero-padded copy.
            cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (size, size), dst=batch[k], interpolation=cv2.INTER_AREA)
            continue
        patch = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx1, sy1 = max(x1, 0), max(y1, 0)
        sx2, sy2 = min(x2 + 1, width), min(y2 + 1, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        cv2.resize(patch, (size, size), dst=batch[k], interpolation=cv2.INTER_AREA)
        patch.fill(0)
    return batch


class MtcnnDetector:
    def __init__(
        self,
        pnet: tuple[ort.InferenceSession, ModelEntry],
        rnet: tuple[ort.InferenceSession, ModelEntry],
        onet: tuple[ort.InferenceSession, ModelEntry],
        thresholds: MtcnnThresholds = MtcnnThresholds(),
    ):
        self.pnet = _Net(*pnet)
        self.rnet = _Net(*rnet)
        self.onet = _Net(*onet)
        self.thresholds = thresholds

    def detect(
        self, image: BgrImage, min_face_px: float, thresholds: MtcnnThresholds | None = None
    ) -> list[FaceDetection]:
        """All faces of at least ``min_face_px`` pixels, best score first."""
        thresholds = thresholds or self.thresholds
        boxes = self._proposals(image, min_face_px, thresholds)
        if len(boxes):
            boxes = self._refine(image, boxes, thresholds)
        if len(boxes) == 0:
            return []
        return self._output(image, boxes, thresholds)

    def _proposals(self, image: BgrImage, min_face_px: float, thresholds: MtcnnThresholds) -> Candidates:
        height, width = image.shape[:2]
        found = []
        for scale in pyramid_scales(height, width, min_face_px, thresholds.pyramid_factor):
            size = (math.ceil(width * scale), math.ceil(height * scale))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            try:
                regression, probability = self._pnet_maps(level)
            finally:
                level.fill(0)
            ys, xs = np.nonzero(probability >= thresholds.pnet)
            if len(ys) == 0:
                continue
            candidates = np.column_stack(
                [
                    np.fix((PNET_STRIDE * xs + 1) / scale),
                    np.fix((PNET_STRIDE * ys + 1) / scale),
                    np.fix((PNET_STRIDE * xs + PNET_CELL) / scale),
                    np.fix((PNET_STRIDE * ys + PNET_CELL) / scale),
                    probability[ys, xs],
                    regression[ys, xs],
                ]
            )
            found.append(candidates[nms(candidates, 0.5)])
        if not found:
            return np.empty((0, 9))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes, 0.7)]
        return squared(apply_regression(boxes, boxes[:, 5:9], plus_one=False))

    def _pnet_maps(self, level: BgrImage) -> tuple[np.ndarray, np.ndarray]:
        """Regression (H', W', 4) and face probability (H', W') in image orientation."""
        probability, regression = self.pnet.run(level[np.newaxis])
        # Output maps are width-first like the input.
        return regression[0].transpose(1, 0, 2), probability[0, :, :, 1].T

    def _refine(self, image: BgrImage, boxes: Candidates, thresholds: MtcnnThresholds) -> Candidates:
        crops = crop_batch(image, boxes, 24)
        try:
            probability, regression = self.rnet.run(crops)
        finally:
            crops.fill(0)
        keep = probability[:, 1] > thresholds.rnet
        boxes = boxes[keep].copy()
        boxes[:, 4] = probability[keep, 1]
        regression = regression[keep]
        picked = nms(boxes, 0.7)
        return squared(apply_regression(boxes[picked], regression[picked]))

    def _output(self, image: BgrImage, boxes: Candidates, thresholds: MtcnnThresholds) -> list[FaceDetection]:
        crops = crop_batch(image, boxes, 48)
        try:
            probability, regression, points = self.onet.run(crops)
        finally:
            crops.fill(0)
        keep = probability[:, 1] > thresholds.onet
        boxes, regression, points = boxes[keep].copy(), regression[keep], points[keep]
        boxes[:, 4] = probability[keep, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, np.newaxis]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, np.newaxis]
        xs = boxes[:, 0:1] + w * points[:, 0:5] - 1
        ys = boxes[:, 1:2] + h * points[:, 5:10] - 1
        boxes = apply_regression(boxes, regression)
        picked = nms(boxes, 0.7, mode="min")
        return [
            FaceDetection(
                box=Box(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                score=float(b[4]),
                landmarks=np.stack([xs[i], ys[i]], axis=1).astype(np.float32),
            )
            for i, b in ((i, boxes[i]) for i in picked)
        ]


def subject_weight(box: Box, width: int, height: int) -> float:
    """How much a box looks like the photo's subject: its size, discounted away from the centre.

    The plainly largest box in a news photo is often a bystander cut by the frame edge;
    the subject is large *and* near the middle.
    """
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    dx = (cx - width / 2) / width
    dy = (cy - height / 2) / height
    centrality = math.exp(-(dx * dx + dy * dy) / (2 * 0.25**2))
    return math.sqrt(max(box.width * box.height, 0.0)) * centrality


# A second live face at least this fraction of the subject's size is another person
# standing at the kiosk, not a poster in the background.
COMPARABLE_FACE_RATIO = 0.6


def dominant_face(faces: list[FaceDetection], width: int, height: int, role: ImageRole) -> FaceDetection:
    if not faces:
        raise NoFace(f"no_face_in_{role.value}", f"no face found in the {role.value.replace('_', ' ')}")
    ranked = sorted(faces, key=lambda f: subject_weight(f.box, width, height), reverse=True)
    subject = ranked[0]
    if role is ImageRole.LIVE_FRAME:
        subject_side = math.sqrt(subject.box.width * subject.box.height)
        for other in ranked[1:]:
            if math.sqrt(other.box.width * other.box.height) >= COMPARABLE_FACE_RATIO * subject_side:
                raise MultipleFaces(
                    "multiple_faces_in_live_frame", "more than one person is in front of the camera"
                )
    return subject
