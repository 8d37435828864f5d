"""Coarse-to-fine detection: the subject rule's arithmetic, and real photos decided as by the whole pyramid."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.errors import Undecidable
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.detect import (
    COMPARABLE_FACE_RATIO,
    MtcnnThresholds,
    SubjectRule,
    dominant_face,
    pyramid_scales,
)
from kiosk.pipeline.types import Box, FaceDetection, ImageRole
from kiosk.pipeline.subject import ID_PHOTO_MARGIN, scaled_for_detection, shift_detection


def face(x, y, side, score=0.99):
    return FaceDetection(Box(x, y, side, side), score, np.zeros((5, 2), dtype=np.float32))


def test_floor_of_an_id_photo_is_the_heaviest_face():
    # A centred face weighs its side: nothing smaller can become the subject.
    rule = SubjectRule(ImageRole.ID_PHOTO, 200, 200)
    assert rule.floor_px([face(50, 50, 100)]) == pytest.approx(100)
    # No second-face check on an ID photo, so no comparable-size floor either.
    assert rule.floor_px([face(50, 50, 100), face(0, 0, 90)]) == pytest.approx(100)


def test_floor_of_a_live_frame_keeps_comparable_faces():
    rule = SubjectRule(ImageRole.LIVE_FRAME, 640, 480)
    subject = face(220, 140, 200)
    assert rule.floor_px([subject]) == pytest.approx(COMPARABLE_FACE_RATIO * 200, rel=0.02)


def test_off_centre_subject_lowers_the_floor():
    # Far from the centre a face weighs less than its side: smaller central faces could outweigh it.
    rule = SubjectRule(ImageRole.ID_PHOTO, 640, 480)
    assert rule.floor_px([face(0, 0, 100)]) < 50


def test_floor_is_in_the_detector_input_pixels():
    # A live frame downscaled by 0.5: a 100 px face found there is 200 px in the frame.
    half = SubjectRule(ImageRole.LIVE_FRAME, 640, 480, 0.0, 0.5)
    full = SubjectRule(ImageRole.LIVE_FRAME, 640, 480)
    assert half.floor_px([face(110, 70, 100)]) == pytest.approx(full.floor_px([face(220, 140, 200)]) * 0.5)
    # A padded ID photo: the margin is taken off before weighing (centre of the 200 px photo).
    padded = SubjectRule(ImageRole.ID_PHOTO, 200, 200, -40.0, 1.0)
    assert padded.floor_px([face(90, 90, 100)]) == pytest.approx(100)
    assert padded.ceiling_px(100) == 100 and half.ceiling_px(100) == pytest.approx(60)


def test_no_face_no_floor():
    assert SubjectRule(ImageRole.LIVE_FRAME, 640, 480).floor_px([]) == 0.0


def _sample(faces: Path, count: int) -> list[Path]:
    rows = list(csv.DictReader(open(faces / "manifest.csv")))
    paths = sorted(r["path"] for r in rows if r["path"].lower().endswith((".jpg", ".jpeg", ".png")))
    random.Random(15).shuffle(paths)
    return [faces / p for p in paths[:count]]


def _decide(detector, image, role, rule: bool, settings, profile):
    """As Verifier.subject_face, with or without the subject rule: the subject or the refusal reason."""
    height, width = image.shape[:2]
    if role is ImageRole.ID_PHOTO:
        margin = round(ID_PHOTO_MARGIN * max(height, width))
        padded = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
        min_face = max(settings.quality.id_photo_min_face_px, settings.quality.min_face_fraction * min(height, width))
        extra = {"subject_rule": SubjectRule(role, width, height, -margin, 1.0)} if rule else {}
        found = detector.detect(padded, min_face, **extra)
        if not found:
            relaxed = settings.quality.id_photo_retry_threshold
            found = detector.detect(padded, min_face, MtcnnThresholds(relaxed, relaxed, relaxed), **extra)
        found = [shift_detection(f, -margin, 1.0) for f in found]
    else:
        small, scale = scaled_for_detection(image, profile.detector.max_input_side)
        min_face = max(profile.detector.min_face_px, settings.quality.min_face_fraction * min(height, width)) * scale
        extra = {"subject_rule": SubjectRule(role, width, height, 0.0, scale)} if rule else {}
        found = [shift_detection(f, 0, scale) for f in detector.detect(small, min_face, **extra)]
    try:
        return dominant_face(found, width, height, role)
    except Undecidable as refusal:
        return refusal.reason


def test_real_photos_get_the_whole_pyramids_decision(verifier, faces):
    """On real shared photos of every subset, stopping early changes neither the subject nor a refusal."""
    checked = 0
    for path in _sample(faces, 24):
        image = decode_image(path.read_bytes(), verifier.image_limits)
        for role in ImageRole:
            whole = _decide(verifier.detector, image, role, False, verifier.settings, verifier.profile)
            early = _decide(verifier.detector, image, role, True, verifier.settings, verifier.profile)
            if isinstance(whole, str) or isinstance(early, str):
                assert whole == early, (path.name, role)
                continue
            eye = float(np.linalg.norm(whole.landmarks[0] - whole.landmarks[1]))
            assert np.abs(whole.landmarks - early.landmarks).max() <= 0.01 * eye, (path.name, role)
            for a, b in zip(
                (whole.box.x, whole.box.y, whole.box.width, whole.box.height),
                (early.box.x, early.box.y, early.box.width, early.box.height),
            ):
                assert abs(a - b) <= 0.01 * eye, (path.name, role)
            checked += 1
    assert checked >= 30


def test_large_face_stops_before_the_finest_level(verifier, faces):
    """A selfie's face ends the pyramid early: the rule does skip work, not only promise to."""
    selfie = faces / "phone_selfie_live__05b89f74" / "selfie_live_selfie.jpg"
    image = decode_image(selfie.read_bytes(), verifier.image_limits)
    small, scale = scaled_for_detection(image, verifier.profile.detector.max_input_side)
    min_face = verifier.min_face_px(image, verifier.profile.detector.min_face_px) * scale
    levels = []
    detector = verifier.detector
    original = detector._pnet_maps

    def counted(level):
        levels.append(level.shape)
        return original(level)

    detector._pnet_maps = counted
    try:
        rule = SubjectRule(ImageRole.LIVE_FRAME, image.shape[1], image.shape[0], 0.0, scale)
        found = detector.detect(small, min_face, subject_rule=rule)
    finally:
        del detector._pnet_maps
    total = len(pyramid_scales(*small.shape[:2], min_face, MtcnnThresholds().pyramid_factor))
    assert found and len(levels) < total
    # The finest level (the largest copy of the frame) is the one skipped first.
    assert max(shape[0] * shape[1] for shape in levels) < small.shape[0] * small.shape[1] * (12 / min_face) ** 2


@pytest.mark.parametrize("mode, overlap", [("union", 0.5), ("union", 0.7), ("min", 0.7)])
def test_matrix_nms_keeps_what_the_loop_keeps(monkeypatch, mode, overlap):
    import kiosk.pipeline.detect as detect

    rng = np.random.default_rng(7)
    for _ in range(200):
        k = int(rng.integers(1, 120))
        corner = np.round(rng.uniform(0, 200, (k, 2)))
        side = np.round(rng.uniform(5, 80, (k, 1)) * rng.uniform(0.8, 1.2, (k, 2)))
        score = np.round(rng.uniform(0.5, 1, (k, 1)), 2)  # ties included
        boxes = np.hstack([corner, corner + side, score])
        matrix = detect.nms(boxes, overlap, mode)
        monkeypatch.setattr(detect, "NMS_MATRIX_MAX", 0)
        loop = detect.nms(boxes, overlap, mode)
        monkeypatch.undo()
        assert np.array_equal(matrix, loop)
