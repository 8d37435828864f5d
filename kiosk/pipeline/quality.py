"""Capture quality of one face, measured from its landmarks and its aligned crop.

Each check yields a ``QualityFinding``; a failed one carries the guidance code the kiosk
UI shows ("MOVE_CLOSER", "FACE_THE_CAMERA", ...). Plain functions on arrays, so the
arithmetic is tested without a model.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.pipeline.types import AlignedFace, Landmarks5, QualityFinding
from kiosk.settings import QualityLimits


def inter_eye_distance(landmarks: Landmarks5) -> float:
    return float(np.linalg.norm(landmarks[1] - landmarks[0]))


def roll_degrees(landmarks: Landmarks5) -> float:
    dx, dy = landmarks[1] - landmarks[0]
    return math.degrees(math.atan2(float(dy), float(dx)))


def yaw_ratio(landmarks: Landmarks5) -> float:
    """Signed horizontal offset of the nose from the face midline, in inter-eye distances.

    The midline runs through the eye midpoint and the mouth midpoint; a frontal face
    has its nose on it. Measured perpendicular to the midline so roll does not count.
    """
    eye_mid = (landmarks[0] + landmarks[1]) / 2
    mouth_mid = (landmarks[3] + landmarks[4]) / 2
    axis = mouth_mid - eye_mid
    length = float(np.linalg.norm(axis))
    eye_distance = inter_eye_distance(landmarks)
    if length == 0.0 or eye_distance == 0.0:
        return 0.0
    offset = landmarks[2] - eye_mid
    cross = float(axis[0] * offset[1] - axis[1] * offset[0]) / length
    return -cross / eye_distance


def sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def _check(name: str, value: float, limit: float, passed: bool, code: str) -> QualityFinding:
    return QualityFinding(name, value, limit, passed, "" if passed else code)


def assess(landmarks: Landmarks5, face: AlignedFace, limits: QualityLimits) -> tuple[QualityFinding, ...]:
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    try:
        eye_px = inter_eye_distance(landmarks)
        yaw = abs(yaw_ratio(landmarks))
        roll = abs(roll_degrees(landmarks))
        sharp = sharpness(grey)
        # The central region avoids background and hair at the crop's edges.
        centre = grey[24:100, 24:88]
        brightness = float(centre.mean())
        contrast = float(centre.std())
    finally:
        grey.fill(0)
    return (
        _check("inter_eye_px", eye_px, limits.min_inter_eye_px, eye_px >= limits.min_inter_eye_px, "MOVE_CLOSER"),
        _check("yaw_ratio", yaw, limits.max_yaw_ratio, yaw <= limits.max_yaw_ratio, "FACE_THE_CAMERA"),
        _check("roll_deg", roll, limits.max_roll_deg, roll <= limits.max_roll_deg, "FACE_THE_CAMERA"),
        _check("sharpness", sharp, limits.min_sharpness, sharp >= limits.min_sharpness, "HOLD_STILL"),
        _check("brightness_min", brightness, limits.min_brightness, brightness >= limits.min_brightness, "TOO_DARK"),
        _check("brightness_max", brightness, limits.max_brightness, brightness <= limits.max_brightness, "TOO_BRIGHT"),
        _check("contrast", contrast, limits.min_contrast, contrast >= limits.min_contrast, "TOO_DARK"),
    )


def failed(findings: tuple[QualityFinding, ...]) -> tuple[QualityFinding, ...]:
    return tuple(f for f in findings if not f.passed)
