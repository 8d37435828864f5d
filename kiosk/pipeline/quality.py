"""Capture quality of one face, measured from its landmarks, its box and its aligned crop.

Each check yields a ``QualityFinding``; a failed one carries the guidance code the kiosk
UI shows ("MOVE_CLOSER", "FACE_THE_CAMERA", ...). Plain functions on arrays, so the
arithmetic is tested without a model; the one model-based measure, eye openness,
arrives already measured (``kiosk.pipeline.eyes``, or the face mesh in live sessions).
Why each limit has its value: ``kiosk.settings.QualityLimits`` and README "Capture quality".

Who can act on a finding decides what it does (as OFIQ / ISO/IEC 29794-5 separate
capture-related from subject-related components): guidance the person can follow
(move, face the camera, hold still, open eyes) refuses the face; lighting is the
operator's (the kiosk's lamp is not the customer's to move), so TOO_DARK and TOO_BRIGHT
never refuse a face on their own: ``failed`` leaves them out, ``operator_signals``
returns them, and Verify turns them into a refusal only when the comparison did not
match (then the light may be why).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from kiosk.pipeline.align import ARCFACE_TEMPLATE
from kiosk.pipeline.types import AlignedFace, Box, EyeOpenness, Landmarks5, QualityFinding
from kiosk.settings import QualityLimits

MOVE_CLOSER = "MOVE_CLOSER"
MOVE_BACK = "MOVE_BACK"
FACE_THE_CAMERA = "FACE_THE_CAMERA"
HOLD_STILL = "HOLD_STILL"
TOO_DARK = "TOO_DARK"
TOO_BRIGHT = "TOO_BRIGHT"
OPEN_EYES = "OPEN_EYES"
NOISY_IMAGE = "NOISY_IMAGE"

# Findings only the kiosk's operator can act on (lighting): signals, never refusals by themselves.
OPERATOR_CODES = frozenset({TOO_DARK, TOO_BRIGHT})

# A face cut by the frame edge whose box is at least this share of the frame's height is
# too close (MOVE_BACK); a smaller one is off to the side (FACE_THE_CAMERA).
CUT_FACE_CLOSE_SHARE = 0.6


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


def _nose_height(landmarks: Landmarks5) -> float:
    """Where the nose tip lies along the eyes-to-mouth midline: 0 at the eyes, 1 at the mouth."""
    eye_mid = (landmarks[0] + landmarks[1]) / 2
    axis = (landmarks[3] + landmarks[4]) / 2 - eye_mid
    length_sq = float(axis @ axis)
    if length_sq == 0.0:
        return 0.0
    return float((landmarks[2] - eye_mid) @ axis) / length_sq


# The nose's height on the frontal ArcFace template (0.495).
FRONTAL_NOSE_HEIGHT = _nose_height(ARCFACE_TEMPLATE)


def pitch_ratio(landmarks: Landmarks5) -> float:
    """Signed head pitch from the five points: > 0 tilted down (chin in), < 0 tilted up.

    The nose tip stands out of the plane of the eyes and mouth, so nodding moves it along
    the eyes-to-mouth midline: down towards the mouth when the head tilts down, up towards
    the eyes when it tilts back. The measure is that shift from the frontal template's
    position, as a fraction of the eye-to-mouth distance (roll- and scale-free). For a
    nose standing out about 0.35 x the eye-to-mouth distance it is roughly
    0.35 x tan(pitch): 0.13 at 20 degrees, 0.20 at 30 degrees.
    """
    return _nose_height(landmarks) - FRONTAL_NOSE_HEIGHT


def box_inside_share(box: Box, width: int, height: int) -> float:
    """Share of the face box's area that lies inside a ``width`` x ``height`` frame."""
    area = box.width * box.height
    if area <= 0.0:
        return 0.0
    inside_w = max(0.0, min(box.x + box.width, width) - max(box.x, 0.0))
    inside_h = max(0.0, min(box.y + box.height, height) - max(box.y, 0.0))
    return inside_w * inside_h / area


def landmarks_inside(landmarks: Landmarks5, width: int, height: int) -> int:
    """How many of the five points lie inside the frame."""
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    return int(np.count_nonzero((xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)))


def sharpness(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


# Immerkaer's mask: two Laplacians whose difference cancels image structure of up to
# second order, leaving mostly noise (J. Immerkaer, "Fast noise variance estimation", 1996).
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
# The noise is measured in at most this many pixels square of the face box, at full
# resolution (a central window of a larger box: the noise of a camera is the same all over).
NOISE_WINDOW_PX = 320


def image_noise(image: np.ndarray, box: Box) -> float:
    """Sensor noise of the face region in grey levels (Immerkaer's estimate of its sigma).

    Measured on the frame's own pixels, not the aligned crop: resizing averages noise
    away, and the passive-liveness model sees the frame's noise at its own scale.
    """
    height, width = image.shape[:2]
    side = min(box.width, box.height, NOISE_WINDOW_PX)
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    x0, y0 = max(int(cx - side / 2), 0), max(int(cy - side / 2), 0)
    x1, y1 = min(int(cx + side / 2), width), min(int(cy + side / 2), height)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0.0
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    response = cv2.filter2D(grey, cv2.CV_32F, _NOISE_MASK)
    try:
        np.abs(response, out=response)  # in place: no further copy of the face to wipe
        inner = response[1:-1, 1:-1]
        return float(math.sqrt(math.pi / 2) * inner.sum() / (6 * inner.shape[0] * inner.shape[1]))
    finally:
        # Face pixels and a function of them: zeroed, like every buffer of the request.
        grey.fill(0)
        response.fill(0)


def _check(name: str, value: float, limit: float, passed: bool, code: str) -> QualityFinding:
    return QualityFinding(name, value, limit, passed, "" if passed else code)


def frame_checks(
    landmarks: Landmarks5, box: Box, frame_size: tuple[int, int], limits: QualityLimits
) -> tuple[QualityFinding, ...]:
    """Is the whole face in the frame, and not so close that it fills it?"""
    width, height = frame_size
    face_share = box.height / height if height else 0.0
    inside = box_inside_share(box, width, height)
    points = landmarks_inside(landmarks, width, height)
    # A face cut by the edge is too close when it is large, off to the side when it is not.
    cut_code = MOVE_BACK if face_share >= CUT_FACE_CLOSE_SHARE else FACE_THE_CAMERA
    return (
        _check("face_height_share", face_share, limits.max_face_height_share,
               face_share <= limits.max_face_height_share, MOVE_BACK),
        _check("box_inside_share", inside, limits.min_box_inside_share,
               inside >= limits.min_box_inside_share, cut_code),
        _check("landmarks_inside", points, 5, points == 5, cut_code),
    )


def eyes_check(eyes: EyeOpenness, limits: QualityLimits) -> QualityFinding:
    """OPEN_EYES only when *both* eyes read as closed: one eye can be hidden by hair or glare.

    The value is the more open eye's figure.
    """
    more_open = max(eyes.right, eyes.left)
    limit = limits.min_eye_open_probability
    return _check("eye_open_probability", more_open, limit, more_open >= limit, OPEN_EYES)


def assess(
    landmarks: Landmarks5,
    face: AlignedFace,
    limits: QualityLimits,
    *,
    box: Box | None = None,
    frame_size: tuple[int, int] | None = None,
    eyes: EyeOpenness | None = None,
    noise: float | None = None,
) -> tuple[QualityFinding, ...]:
    """Every check of one face; the frame checks need ``box`` and ``frame_size`` (width, height),
    the eye check ``eyes``, the noise check ``noise`` (``image_noise``), and each runs only
    when what it needs is given."""
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    try:
        eye_px = inter_eye_distance(landmarks)
        yaw = abs(yaw_ratio(landmarks))
        pitch = abs(pitch_ratio(landmarks))
        roll = abs(roll_degrees(landmarks))
        sharp = sharpness(grey)
        # The central region avoids background and hair at the crop's edges.
        centre = grey[24:100, 24:88]
        brightness = float(centre.mean())
        contrast = float(centre.std())
    finally:
        grey.fill(0)
    checks = (
        _check("inter_eye_px", eye_px, limits.min_inter_eye_px, eye_px >= limits.min_inter_eye_px, MOVE_CLOSER),
        _check("yaw_ratio", yaw, limits.max_yaw_ratio, yaw <= limits.max_yaw_ratio, FACE_THE_CAMERA),
        _check("pitch_ratio", pitch, limits.max_pitch_ratio, pitch <= limits.max_pitch_ratio, FACE_THE_CAMERA),
        _check("roll_deg", roll, limits.max_roll_deg, roll <= limits.max_roll_deg, FACE_THE_CAMERA),
        _check("sharpness", sharp, limits.min_sharpness, sharp >= limits.min_sharpness, HOLD_STILL),
        _check("brightness_min", brightness, limits.min_brightness, brightness >= limits.min_brightness, TOO_DARK),
        _check("brightness_max", brightness, limits.max_brightness, brightness <= limits.max_brightness, TOO_BRIGHT),
        _check("contrast", contrast, limits.min_contrast, contrast >= limits.min_contrast, TOO_DARK),
    )
    if box is not None and frame_size is not None:
        checks += frame_checks(landmarks, box, frame_size, limits)
    if eyes is not None:
        checks += (eyes_check(eyes, limits),)
    if noise is not None:
        # Not an operator signal although light is the operator's: past this limit the
        # passive-liveness check cannot be trusted (prints pass it), so the face is refused.
        checks += (_check("noise_sigma", noise, limits.max_noise, noise <= limits.max_noise, NOISY_IMAGE),)
    return checks


def failed(findings: tuple[QualityFinding, ...]) -> tuple[QualityFinding, ...]:
    """The failed checks that refuse the face: those the person can act on."""
    return tuple(f for f in findings if not f.passed and f.code not in OPERATOR_CODES)


def operator_signals(findings: tuple[QualityFinding, ...]) -> tuple[QualityFinding, ...]:
    """The failed checks only the operator can act on (lighting): reported, not refused."""
    return tuple(f for f in findings if not f.passed and f.code in OPERATOR_CODES)


def _ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good`` (either direction), linear between, clipped."""
    if good == bad:
        return 1.0 if value >= good else 0.0
    return float(min(1.0, max(0.0, (value - bad) / (good - bad))))


def frame_utility(findings: tuple[QualityFinding, ...]) -> float:
    """How good one usable frame is for the comparison, 0..1, from its quality findings.

    The product of a ramp per subject-related measure, from its refusal limit (0) to a
    comfortable value (1): sharpness (limit -> 4x limit), pose (|yaw|, |pitch| limit ->
    a fifth of it), eye openness (limit -> 0.5). Used to choose and weight the best frames
    of a multi-photo Verify; lighting is the same for every frame of one kiosk and is left out.
    """
    by_name = {f.check: f for f in findings}
    utility = 1.0
    if "sharpness" in by_name:
        f = by_name["sharpness"]
        utility *= _ramp(f.value, f.limit, 4.0 * f.limit)
    for name in ("yaw_ratio", "pitch_ratio"):
        if name in by_name:
            f = by_name[name]
            utility *= _ramp(f.value, f.limit, 0.2 * f.limit)
    if "eye_open_probability" in by_name:
        f = by_name["eye_open_probability"]
        utility *= _ramp(f.value, f.limit, max(0.5, f.limit))
    return utility


def commonest_refusal(findings) -> str:
    """"; most frames needed: OPEN_EYES (7 of 12)" for a session that gave up, "" when no
    frame was refused by a check (no face at all): the guidance that would have helped most."""
    counts: dict[str, int] = {}
    frames = 0
    for finding in findings:
        if finding.role.value != "live_frame":
            continue
        frames += 1
        for code in {f.code for f in failed(finding.quality)}:
            counts[code] = counts.get(code, 0) + 1
    if not counts:
        return ""
    code, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return f"; most frames needed: {code} ({count} of {frames})"
