"""Detector post-processing, subject choice and quality arithmetic, without a model."""

import numpy as np
import pytest

from kiosk.errors import MultipleFaces, NoFace
from kiosk.pipeline.align import ARCFACE_TEMPLATE
from kiosk.pipeline.detect import dominant_face, nms, pyramid_scales, squared
from kiosk.pipeline.quality import assess, failed, operator_signals, roll_degrees, yaw_ratio
from kiosk.pipeline.types import Box, FaceDetection, ImageRole
from kiosk.settings import QualityLimits


def face(x, y, side, score=0.99):
    return FaceDetection(Box(x, y, side, side), score, np.zeros((5, 2), dtype=np.float32))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.95], [50, 50, 60, 60, 0.5]], dtype=float)
    assert list(nms(boxes, 0.5)) == [1, 2]
    assert len(nms(np.empty((0, 5)), 0.5)) == 0


def test_pyramid_covers_min_face_to_whole_image():
    scales = pyramid_scales(480, 640, 40, 0.709)
    assert scales[0] == pytest.approx(12 / 40)
    assert 480 * scales[-1] >= 12 and 480 * scales[-1] * 0.709 < 12


def test_squared_boxes_keep_their_centre():
    out = squared(np.array([[10.0, 20.0, 30.0, 60.0, 1.0]]))
    assert out[0, 2] - out[0, 0] == pytest.approx(out[0, 3] - out[0, 1])
    assert (out[0, 0] + out[0, 2]) / 2 == pytest.approx(20.0)


def test_central_subject_beats_larger_bystander_at_the_edge():
    subject = face(90, 80, 80)
    bystander = face(200, 60, 95)  # larger but cut by the right edge of a 250x250 photo
    assert dominant_face([bystander, subject], 250, 250, ImageRole.ID_PHOTO) is subject


def test_second_comparable_face_in_a_live_frame_is_refused():
    with pytest.raises(MultipleFaces) as caught:
        dominant_face([face(200, 150, 200), face(420, 160, 170)], 640, 480, ImageRole.LIVE_FRAME)
    assert caught.value.reason == "multiple_faces_in_live_frame"


def test_small_background_face_is_ignored():
    subject = face(220, 120, 220)
    assert dominant_face([subject, face(20, 20, 40)], 640, 480, ImageRole.LIVE_FRAME) is subject


def test_no_face_reason_names_the_image():
    with pytest.raises(NoFace) as caught:
        dominant_face([], 100, 100, ImageRole.ID_PHOTO)
    assert caught.value.reason == "no_face_in_id_photo"


def test_frontal_template_has_no_yaw_or_roll():
    assert abs(yaw_ratio(ARCFACE_TEMPLATE)) < 0.02
    assert abs(roll_degrees(ARCFACE_TEMPLATE)) < 1.0


def test_nose_towards_one_eye_reads_as_yaw():
    turned = ARCFACE_TEMPLATE.copy()
    turned[2, 0] += 20  # nose moved 20 px towards the right eye (inter-eye distance ~35 px)
    assert yaw_ratio(turned) < -0.5 or yaw_ratio(turned) > 0.5


def test_quality_findings_carry_guidance_codes():
    rng = np.random.default_rng(3)
    textured = rng.integers(60, 200, size=(112, 112, 3), dtype=np.uint8)
    limits = QualityLimits()
    assert failed(assess(ARCFACE_TEMPLATE * 1.0, textured, limits)) == ()
    dark = (textured // 8).astype(np.uint8)
    dark_findings = assess(ARCFACE_TEMPLATE, dark, limits)
    # Lighting is the operator's to fix: a signal, not a refusal of the face.
    assert "TOO_DARK" in {f.code for f in operator_signals(dark_findings)}
    assert "TOO_DARK" not in {f.code for f in failed(dark_findings)}
    small = ARCFACE_TEMPLATE * 0.3
    assert {f.code for f in failed(assess(small, textured, limits))} == {"MOVE_CLOSER"}
    flat = np.full((112, 112, 3), 128, dtype=np.uint8)
    assert "HOLD_STILL" in {f.code for f in failed(assess(ARCFACE_TEMPLATE, flat, limits))}
