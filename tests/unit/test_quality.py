"""Capture-quality arithmetic without a model: pitch, frame checks, eye openness, ID-photo limits."""

import math

import numpy as np
import pytest

from kiosk.pipeline.align import ARCFACE_TEMPLATE
from kiosk.pipeline.quality import (
    FACE_THE_CAMERA,
    MOVE_BACK,
    OPEN_EYES,
    assess,
    box_inside_share,
    eyes_check,
    failed,
    frame_checks,
    landmarks_inside,
    pitch_ratio,
    yaw_ratio,
)
from kiosk.pipeline.types import Box, EyeOpenness
from kiosk.settings import QualityLimits, QualitySettings

LIVE = QualityLimits()
ID_PHOTO = QualitySettings().id_photo


def rotated(points: np.ndarray, degrees: float, scale: float = 1.0) -> np.ndarray:
    angle = math.radians(degrees)
    matrix = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points @ matrix.T + 300).astype(np.float32)


@pytest.fixture
def textured():
    return np.random.default_rng(3).integers(60, 200, size=(112, 112, 3), dtype=np.uint8)


def test_frontal_template_has_no_pitch():
    assert abs(pitch_ratio(ARCFACE_TEMPLATE)) < 1e-6


def test_nose_towards_the_mouth_reads_as_tilted_down_and_towards_the_eyes_as_up():
    down, up = ARCFACE_TEMPLATE.copy(), ARCFACE_TEMPLATE.copy()
    down[2, 1] += 8  # 8 px of the ~40 px eye-to-mouth distance
    up[2, 1] -= 8
    assert pitch_ratio(down) == pytest.approx(0.2, abs=0.01)
    assert pitch_ratio(up) == pytest.approx(-0.2, abs=0.01)
    # A nod is not a turn.
    assert abs(yaw_ratio(down)) < 0.02


def test_pitch_ignores_roll_and_scale():
    down = ARCFACE_TEMPLATE.copy()
    down[2, 1] += 8
    assert pitch_ratio(rotated(down, 25, scale=3.0)) == pytest.approx(pitch_ratio(down), abs=1e-4)


def test_box_inside_share_and_landmarks_inside():
    assert box_inside_share(Box(10, 10, 100, 100), 640, 480) == 1.0
    assert box_inside_share(Box(-50, 10, 100, 100), 640, 480) == pytest.approx(0.5)
    assert box_inside_share(Box(0, 0, 0, 0), 640, 480) == 0.0
    points = ARCFACE_TEMPLATE.copy()
    assert landmarks_inside(points, 112, 112) == 5
    points[3:, 1] += 30  # mouth corners below a 112-px frame
    assert landmarks_inside(points, 112, 112) == 3


def codes(findings) -> set[str]:
    return {f.code for f in failed(findings)}


def test_a_face_filling_the_frame_is_told_to_move_back():
    assert codes(frame_checks(ARCFACE_TEMPLATE * 4, Box(100, 20, 300, 440), (640, 480), LIVE)) == {MOVE_BACK}


def test_a_face_cut_by_the_edge_moves_back_when_large_and_faces_the_camera_when_small():
    close = Box(400, 40, 330, 330)  # 69 % of the frame's height, a quarter outside on the right
    assert codes(frame_checks(rotated(ARCFACE_TEMPLATE, 0), close, (640, 480), LIVE)) == {MOVE_BACK}
    aside = Box(580, 200, 120, 120)  # small, half outside
    assert codes(frame_checks(rotated(ARCFACE_TEMPLATE, 0), aside, (640, 480), LIVE)) == {FACE_THE_CAMERA}


def test_landmarks_outside_the_frame_fail_even_when_the_box_is_mostly_inside():
    points = rotated(ARCFACE_TEMPLATE, 0)
    points[4, 0] = 700
    findings = frame_checks(points, Box(280, 300, 100, 100), (640, 480), LIVE)
    assert [f.check for f in failed(findings)] == ["landmarks_inside"]


def test_open_eyes_fails_only_when_both_eyes_read_closed():
    assert not eyes_check(EyeOpenness(0.0001, 0.0002), LIVE).passed
    assert eyes_check(EyeOpenness(0.0001, 0.9), LIVE).passed
    closed = eyes_check(EyeOpenness(0.0001, 0.0002), LIVE)
    assert (closed.check, closed.code, closed.value) == ("eye_open_probability", OPEN_EYES, 0.0002)


def test_assess_runs_the_frame_and_eye_checks_only_when_given_what_they_need(textured):
    plain = assess(ARCFACE_TEMPLATE, textured, LIVE)
    assert {f.check for f in plain} >= {"pitch_ratio", "yaw_ratio", "roll_deg", "sharpness"}
    assert "box_inside_share" not in {f.check for f in plain}
    full = assess(
        rotated(ARCFACE_TEMPLATE, 0),
        textured,
        LIVE,
        box=Box(250, 250, 110, 130),
        frame_size=(640, 480),
        eyes=EyeOpenness(0.9, 0.8),
    )
    assert {"box_inside_share", "landmarks_inside", "face_height_share", "eye_open_probability"} <= {
        f.check for f in full
    }
    assert failed(full) == ()


def test_a_tilted_down_face_is_asked_to_face_the_camera(textured):
    nodding = ARCFACE_TEMPLATE.copy()
    nodding[2, 1] += 0.5 * 40  # half the eye-to-mouth distance: a deep nod
    assert codes(assess(nodding, textured, LIVE)) == {FACE_THE_CAMERA}


def test_a_chip_photo_is_not_rejected_for_its_size_or_tight_framing(textured):
    """102x126 chip: eyes ~26 px apart, the detector's box reaching past the photo's edges."""
    eyes_26px = (ARCFACE_TEMPLATE - ARCFACE_TEMPLATE[:2].mean(axis=0)) * (26 / 35.2) + (51, 55)
    findings = assess(eyes_26px, textured, ID_PHOTO, box=Box(-4, 8, 110, 125), frame_size=(102, 126))
    assert failed(findings) == ()


def test_a_grey_id_photo_passes_and_the_id_photo_has_no_eye_check(textured):
    grey = np.repeat(textured[..., :1], 3, axis=2)
    assert failed(assess(ARCFACE_TEMPLATE, grey, ID_PHOTO)) == ()
    assert ID_PHOTO.min_eye_open_probability == 0.0
