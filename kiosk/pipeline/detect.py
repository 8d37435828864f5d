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
# How large a face (side of the o-net box, sqrt(w*h)) one pyramid level still decides,
# as a multiple of its p-net window: a level whose window times this is below
# ``SubjectRule.floor_px`` is not run. Measured on 300 shared photos of every subset, ID
# and live paths (models/README.md "Speed"): at 3 every subject and every refusal was
# bit-identical to the whole pyramid's; at 2, 14 of 598 subjects moved (embedding cosine
# down to 0.966) because their best o-net box came from a finer level.
MAX_FACE_PER_WINDOW = 3.0
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


# Up to this many boxes NMS compares all pairs at once (a K x K matrix, 2.6 MB of float64
# at the limit); beyond it, the row-at-a-time loop bounds the memory.
NMS_MATRIX_MAX = 400


def nms(boxes: Candidates, overlap: float, mode: str = "union") -> np.ndarray:
    """Indices of boxes kept by greedy non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2, score = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], boxes[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(score)[::-1]
    if len(boxes) <= NMS_MATRIX_MAX:
        return order[_greedy(_overlaps(x1[order], y1[order], x2[order], y2[order], area[order], mode), overlap)]
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


def _overlaps(x1, y1, x2, y2, area, mode: str) -> np.ndarray:
    """(K, K) overlap of every pair, the same arithmetic as the loop (so the same decisions)."""
    w = np.maximum(0.0, np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]) + 1)
    h = np.maximum(0.0, np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]) + 1)
    inter = w * h
    if mode == "min":
        return inter / np.minimum(area[:, None], area[None, :])
    return inter / (area[:, None] + area[None, :] - inter)


def _greedy(ratio: np.ndarray, overlap: float) -> np.ndarray:
    """Rows (in score order) kept when each kept row removes the later rows it overlaps too much."""
    # "Not <= overlap" rather than "> overlap": a NaN ratio suppresses, as in the loop.
    suppresses = ~(ratio <= overlap)
    alive = np.ones(len(ratio), dtype=bool)
    keep = []
    for i in range(len(ratio)):
        if alive[i]:
            keep.append(i)
            alive &= ~suppresses[i]
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


def refined(
    boxes: Candidates, probability: np.ndarray, regression: np.ndarray, threshold: float
) -> tuple[Candidates, np.ndarray]:
    """After r-net: boxes above ``threshold``, suppressed, regressed and squared, with their rows in ``boxes``."""
    keep = np.flatnonzero(probability > threshold)
    survivors = boxes[keep].copy()
    survivors[:, 4] = probability[keep]
    picked = nms(survivors, 0.7)
    return squared(apply_regression(survivors[picked], regression[keep][picked])), keep[picked]


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
        self,
        image: BgrImage,
        min_face_px: float,
        thresholds: MtcnnThresholds | None = None,
        *,
        subject_rule: "SubjectRule | None" = None,
    ) -> list[FaceDetection]:
        """All faces of at least ``min_face_px`` pixels, best score first.

        With a ``subject_rule`` the pyramid runs coarse to fine and stops at the first
        level whose faces could no longer change which face is the subject, or whether a
        second comparable face is present (``SubjectRule.floor_px``): the faces returned
        are then those that decide, not necessarily every small face in the background.
        """
        thresholds = thresholds or self.thresholds
        height, width = image.shape[:2]
        scales = pyramid_scales(height, width, min_face_px, thresholds.pyramid_factor)
        cascade = _Cascade(self, image, thresholds)
        try:
            # Coarse to fine: the largest faces first, so the rule can stop before the
            # finest levels, which hold most of p-net's pixels and candidates.
            for level in reversed(range(len(scales))):
                reach = MAX_FACE_PER_WINDOW * PNET_CELL / scales[level]
                # Running r-net and o-net early only pays when the candidates so far are
                # large enough for the rule to stop here; otherwise the level just runs.
                if subject_rule is not None and reach < subject_rule.ceiling_px(cascade.largest_candidate()):
                    faces = cascade.faces()
                    if faces and reach < subject_rule.floor_px(faces):
                        break
                cascade.add_level(level, scales[level])
            return cascade.faces()
        finally:
            cascade.wipe()

    def _proposals(self, image: BgrImage, min_face_px: float, thresholds: MtcnnThresholds) -> Candidates:
        """r-net's input boxes for the whole pyramid (the benchmarks and tools time the nets on them)."""
        cascade = _Cascade(self, image, thresholds)
        for level, scale in enumerate(pyramid_scales(*image.shape[:2], min_face_px, thresholds.pyramid_factor)):
            cascade.add_level(level, scale)
        return cascade.proposals()[0]

    def _refine(self, image: BgrImage, boxes: Candidates, thresholds: MtcnnThresholds) -> Candidates:
        """o-net's input boxes: r-net on ``boxes``, thresholded, suppressed, regressed, squared."""
        crops = crop_batch(image, boxes, 24)
        try:
            probability, regression = self.rnet.run(crops)
        finally:
            crops.fill(0)
        return refined(boxes, probability[:, 1], regression, thresholds.rnet)[0]

    def _pnet_maps(self, level: BgrImage) -> tuple[np.ndarray, np.ndarray]:
        """Regression (H', W', 4) and face probability (H', W') in image orientation."""
        probability, regression = self.pnet.run(level[np.newaxis])
        # Output maps are width-first like the input.
        return regression[0].transpose(1, 0, 2), probability[0, :, :, 1].T


class _Cascade:
    """One detection's p-net candidates, level by level, and r-net / o-net outputs run once each.

    ``faces()`` applies exactly the post-processing of a whole-pyramid run (the same
    candidate order, NMS steps and thresholds) to the levels added so far; r-net and o-net
    run only on candidates they have not seen, so adding a level and asking again costs
    only the new candidates.
    """

    def __init__(self, detector: MtcnnDetector, image: BgrImage, thresholds: MtcnnThresholds):
        self.detector = detector
        self.image = image
        self.thresholds = thresholds
        # Per level index: (K, 9) candidates (see ``Candidates``).
        self.levels: dict[int, Candidates] = {}
        # Outputs per candidate id; an id is the candidate's row in the pyramid's
        # fine-to-coarse concatenation, recomputed when a level is added.
        self.rnet: dict[tuple[int, int], tuple[float, np.ndarray]] = {}
        self.onet: dict[tuple[int, int], tuple[float, np.ndarray, np.ndarray]] = {}
        self._faces: list[FaceDetection] | None = []
        self.face_levels: list[int] = []

    def largest_candidate(self) -> float:
        """Side of the largest p-net candidate box so far (after its regression), 0 if none."""
        sides = [
            float(np.max(np.maximum(c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]) * (1 + np.abs(c[:, 5:9]).sum(axis=1))))
            for c in self.levels.values()
            if len(c)
        ]
        return max(sides, default=0.0)

    def add_level(self, level: int, scale: float) -> None:
        height, width = self.image.shape[:2]
        size = (math.ceil(width * scale), math.ceil(height * scale))
        pixels = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
        try:
            regression, probability = self.detector._pnet_maps(pixels)
        finally:
            pixels.fill(0)
        ys, xs = np.nonzero(probability >= self.thresholds.pnet)
        if len(ys) == 0:
            return
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
        self.levels[level] = candidates[nms(candidates, 0.5)]
        self._faces = None

    def faces(self) -> list[FaceDetection]:
        if self._faces is None:
            self._faces = self._evaluate()
        return self._faces

    def proposals(self) -> tuple[Candidates, list[tuple[int, int]]]:
        """r-net's input boxes (p-net candidates of every level so far, regressed and squared) and their ids."""
        if not self.levels:
            return np.empty((0, 9)), []
        order = sorted(self.levels)  # fine to coarse, as a whole-pyramid run concatenates them
        boxes = np.concatenate([self.levels[level] for level in order])
        ids = [(level, row) for level in order for row in range(len(self.levels[level]))]
        kept = nms(boxes, 0.7)
        return squared(apply_regression(boxes[kept], boxes[kept, 5:9], plus_one=False)), [ids[k] for k in kept]

    def _evaluate(self) -> list[FaceDetection]:
        boxes, ids = self.proposals()
        if len(boxes) == 0:
            return []
        # r-net on every candidate it has not seen yet.
        self._run_missing(self.rnet, ids, boxes, 24, self.detector.rnet, self._store_rnet)
        probability = np.array([self.rnet[i][0] for i in ids], dtype=np.float32)
        regression = np.array([self.rnet[i][1] for i in ids], dtype=np.float32).reshape(-1, 4)
        boxes, picked = refined(boxes, probability, regression, self.thresholds.rnet)
        ids = [ids[k] for k in picked]
        if len(boxes) == 0:
            return []
        # o-net on every r-net survivor it has not seen yet.
        self._run_missing(self.onet, ids, boxes, 48, self.detector.onet, self._store_onet)
        probability = np.array([self.onet[i][0] for i in ids], dtype=np.float32)
        regression = np.array([self.onet[i][1] for i in ids], dtype=np.float32).reshape(-1, 4)
        points = np.array([self.onet[i][2] for i in ids], dtype=np.float32).reshape(-1, 10)
        keep = probability > self.thresholds.onet
        boxes, regression, points = boxes[keep].copy(), regression[keep], points[keep]
        boxes[:, 4] = probability[keep]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, np.newaxis]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, np.newaxis]
        xs = boxes[:, 0:1] + w * points[:, 0:5] - 1
        ys = boxes[:, 1:2] + h * points[:, 5:10] - 1
        boxes = apply_regression(boxes, regression)
        picked = nms(boxes, 0.7, mode="min")
        # Which pyramid level each face came from (how MAX_FACE_PER_WINDOW was measured).
        self.face_levels = [ids[i][0] for i in picked]
        faces = [
            FaceDetection(
                box=Box(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                score=float(b[4]),
                landmarks=np.stack([xs[i], ys[i]], axis=1).astype(np.float32),
            )
            for i, b in ((i, boxes[i]) for i in picked)
        ]
        xs.fill(0)
        ys.fill(0)
        points.fill(0)
        return faces

    def _run_missing(self, cache: dict, ids: list, boxes: Candidates, size: int, net: _Net, store) -> None:
        missing = [k for k, i in enumerate(ids) if i not in cache]
        if not missing:
            return
        crops = crop_batch(self.image, boxes[missing], size)
        try:
            outputs = net.run(crops)
        finally:
            crops.fill(0)
        store([ids[k] for k in missing], outputs)

    def _store_rnet(self, ids: list, outputs: list[np.ndarray]) -> None:
        probability, regression = outputs
        for n, i in enumerate(ids):
            self.rnet[i] = (probability[n, 1], regression[n].copy())

    def _store_onet(self, ids: list, outputs: list[np.ndarray]) -> None:
        probability, regression, points = outputs
        for n, i in enumerate(ids):
            self.onet[i] = (probability[n, 1], regression[n].copy(), points[n].copy())
        # The landmarks are face geometry: the batch output is wiped once copied.
        points.fill(0)

    def wipe(self) -> None:
        for _, _, points in self.onet.values():
            points.fill(0)
        self.onet.clear()
        self.rnet.clear()
        self.levels.clear()


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


@dataclass(frozen=True)
class SubjectRule:
    """What ``dominant_face`` will decide on, so detection can stop at faces too small to matter.

    ``width``/``height`` are the original image's; the detector's input maps to it as
    ``(p + offset) / scale`` (a padded ID photo: offset -margin; a downscaled live frame:
    scale < 1), the same mapping the caller applies to the detections afterwards.
    """

    role: ImageRole
    width: int
    height: int
    offset: float = 0.0
    scale: float = 1.0

    def ceiling_px(self, largest_side: float) -> float:
        """The most ``floor_px`` could be if the largest face found had ``largest_side`` (input pixels)."""
        ratio = COMPARABLE_FACE_RATIO if self.role is ImageRole.LIVE_FRAME else 1.0
        return ratio * largest_side

    def floor_px(self, faces: list[FaceDetection]) -> float:
        """Side, in the detector's input pixels, below which no further face can change the decision.

        A face of side s weighs at most s (``subject_weight``'s centrality is at most 1),
        so one smaller than the heaviest face found cannot become the subject; on a live
        frame it must also be smaller than ``COMPARABLE_FACE_RATIO`` times the subject to
        be ignored by the second-person check.
        """
        if not faces:
            return 0.0
        weighed = []
        for face in faces:
            box = face.box
            mapped = Box(
                (box.x + self.offset) / self.scale, (box.y + self.offset) / self.scale,
                box.width / self.scale, box.height / self.scale,
            )
            weighed.append((subject_weight(mapped, self.width, self.height), mapped))
        heaviest, subject = max(weighed, key=lambda pair: pair[0])
        floor = heaviest
        if self.role is ImageRole.LIVE_FRAME:
            floor = min(floor, COMPARABLE_FACE_RATIO * math.sqrt(max(subject.width * subject.height, 0.0)))
        return floor * self.scale
