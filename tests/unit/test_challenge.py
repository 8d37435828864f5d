"""Active liveness challenges on synthetic landmark time series, without a model.

A small synthetic 3-D face holds only the mesh points the measures use (eyes, lips,
nose tip, face outline), in MediaPipe's indices. Series are made by rotating it in 3-D
(a real head turning or nodding), closing its eyelids or opening its mouth, or by
moving/rotating/squashing its 2-D projection (a flat photo in front of the camera).
"""

from __future__ import annotations

import dataclasses
import math
import secrets

import numpy as np
import pytest

from kiosk.errors import ConfigError
from kiosk.pipeline.challenge import (
    CHALLENGE_TIMEOUT,
    FACE_LOST,
    FRAME_TIMING,
    NONCE_MISMATCH,
    WRONG_ACTION,
    Baseline,
    Challenge,
    ChallengeFailed,
    ChallengePlan,
    ChallengeRun,
    ChallengeStep,
    FrameTiming,
    Prompt,
    StepPassed,
    measure,
)
from kiosk.settings import LivenessChallengeSettings

SETTINGS = LivenessChallengeSettings()
FRAME_MS = 100  # 10 fps

# Subject-centred 3-D points (x to the image's right, y down, z away from the camera):
# the subject's right cheek and eye are on the image's left. The nose is deep enough
# that yaw and pitch move as on real meshes (about 0.35 and 0.30 per 20 degrees).
_EYE_HALF_OPENING = 3.6  # EAR 0.24, the mean measured on real faces


def _face_points(eye_open: float = 1.0, mouth_gap: float = 5.0) -> dict[int, tuple[float, float, float]]:
    h = _EYE_HALF_OPENING * eye_open
    points = {
        234: (-70, 0, -10), 454: (70, 0, -10), 10: (0, -90, 0), 152: (0, 90, 0), 1: (0, 10, -80),
        61: (-25, 50, -15), 291: (25, 50, -15),
    }
    for sign, (outer, up_out, up_in, inner, low_in, low_out) in (
        (-1, (33, 160, 158, 133, 153, 144)),
        (1, (263, 387, 385, 362, 380, 373)),
    ):
        points[outer] = (sign * 47, -25, -10)
        points[inner] = (sign * 17, -25, -10)
        points[up_out] = (sign * 39, -25 - h, -12)
        points[up_in] = (sign * 25, -25 - h, -12)
        points[low_out] = (sign * 39, -25 + h, -12)
        points[low_in] = (sign * 25, -25 + h, -12)
    for x, (upper, lower) in zip((-10, 0, 10), ((82, 87), (13, 14), (312, 317))):
        points[upper] = (x, 50 - mouth_gap / 2, -16)
        points[lower] = (x, 50 + mouth_gap / 2, -16)
    return points


def mesh(
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    eye_open: float = 1.0,
    mouth_gap: float = 5.0,
    affine: np.ndarray | None = None,
) -> np.ndarray:
    """(468, 3) points of the synthetic face: a real head pose, or a flat photo's ``affine`` image."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    # yaw > 0 turns the nose towards the image's right: the subject's own left.
    turn = np.array([[math.cos(yaw), 0, -math.sin(yaw)], [0, 1, 0], [math.sin(yaw), 0, math.cos(yaw)]])
    # pitch > 0 tilts the head down: the nose tip moves down in the image.
    tilt = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    out = np.zeros((468, 3))
    for index, point in _face_points(eye_open, mouth_gap).items():
        out[index] = tilt @ turn @ np.asarray(point, dtype=float)
    out[:, :2] += (320, 240)
    if affine is not None:
        out[:, :2] = out[:, :2] @ affine[:, :2].T + affine[:, 2]
    return out


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array(
        [[scale * math.cos(a), -scale * math.sin(a), shift[0]], [scale * math.sin(a), scale * math.cos(a), shift[1]]]
    )


# --------------------------------------------------------------------------- measures


def test_neutral_face_measures():
    m = measure(mesh())
    assert m.ear == pytest.approx(0.24, abs=1e-6)
    assert m.mar == pytest.approx(0.1)
    assert m.yaw == pytest.approx(0.0)
    assert m.pitch == pytest.approx(2 * 10 / 180)
    assert m.aspect == pytest.approx(180 / 140)


def test_turning_and_nodding_move_yaw_and_pitch_with_the_right_sign():
    base = measure(mesh())
    left, right = measure(mesh(yaw_deg=20)), measure(mesh(yaw_deg=-20))
    down, up = measure(mesh(pitch_deg=20)), measure(mesh(pitch_deg=-20))

    assert left.yaw - base.yaw > SETTINGS.turn_min_yaw
    assert right.yaw - base.yaw < -SETTINGS.turn_min_yaw
    assert down.pitch - base.pitch > SETTINGS.nod_min_pitch
    assert up.pitch - base.pitch < -SETTINGS.nod_min_pitch
    # A turn barely moves pitch, a nod barely moves yaw.
    assert abs(left.pitch - base.pitch) < SETTINGS.neutral_pitch
    assert abs(down.yaw - base.yaw) < SETTINGS.neutral_yaw


@pytest.mark.parametrize(
    "affine",
    [
        similarity(35, 1.6, (-80, 40)),
        similarity(-20, 0.5, (100, -60)),
        # A photo tilted about its vertical / horizontal axis, and sheared: not similarities.
        np.array([[0.55, 0.0, 90.0], [0.0, 1.0, 0.0]]),
        np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 120.0]]),
        np.array([[1.0, 0.3, 0.0], [0.1, 0.9, 0.0]]),
    ],
)
def test_a_flat_photo_moved_rotated_or_tilted_keeps_its_yaw_and_pitch(affine):
    still, moved = measure(mesh()), measure(mesh(affine=affine))

    assert moved.yaw == pytest.approx(still.yaw, abs=1e-9)
    assert moved.pitch == pytest.approx(still.pitch, abs=1e-9)


def test_similarity_transforms_keep_eye_and_mouth_ratios():
    still, moved = measure(mesh()), measure(mesh(affine=similarity(50, 2.2, (10, 10))))
    assert (moved.ear, moved.mar, moved.aspect) == pytest.approx((still.ear, still.mar, still.aspect))


def test_baseline_is_the_median():
    frames = [measure(mesh(yaw_deg=a)) for a in (0, 1, 30)]
    assert Baseline.of(frames).yaw == pytest.approx(frames[1].yaw)


# --------------------------------------------------------------------------- plan


def test_plan_draws_two_or_three_distinct_challenges_with_unique_nonces():
    plans = [ChallengePlan.draw(SETTINGS) for _ in range(200)]

    assert {len(p.steps) for p in plans} == {2, 3}
    assert all(len({s.challenge for s in p.steps}) == len(p.steps) for p in plans)
    nonces = [s.nonce for p in plans for s in p.steps]
    assert len(set(nonces)) == len(nonces) and all(len(n) == 16 for n in nonces)
    # Every challenge opens some plan, and many orders occur.
    assert {p.steps[0].challenge for p in plans} == set(Challenge)
    assert len({tuple(s.challenge for s in p.steps) for p in plans}) > 30


def test_plan_size_and_pool_follow_the_settings():
    settings = LivenessChallengeSettings(challenges=("blink", "nod"), min_challenges=2, max_challenges=2)
    plan = ChallengePlan.draw(settings, secrets.SystemRandom())
    assert {s.challenge for s in plan.steps} == {Challenge.BLINK, Challenge.NOD}


@pytest.mark.parametrize(
    "fields",
    [{"challenges": ("blink", "smile")}, {"min_challenges": 3, "max_challenges": 2}, {"max_challenges": 6},
     {"challenges": ("nod", "nod")}],
)
def test_impossible_challenge_settings_are_refused(fields):
    with pytest.raises(ConfigError):
        LivenessChallengeSettings(**fields)


# --------------------------------------------------------------------------- state machine


def plan_of(*challenges: Challenge) -> ChallengePlan:
    return ChallengePlan(tuple(ChallengeStep(c, f"nonce-{i}") for i, c in enumerate(challenges)))


@dataclasses.dataclass
class Kiosk:
    """Plays frames into a ChallengeRun as a kiosk would: 10 fps, echoing the latest prompt's nonce."""

    run: ChallengeRun
    time_ms: int = 0
    nonce: str = ""
    events: list = dataclasses.field(default_factory=list)

    def show(self, points: np.ndarray | None, frames: int = 1, nonce: str | None = None) -> None:
        for _ in range(frames):
            self.time_ms += FRAME_MS
            measures = None if points is None else measure(points)
            new = self.run.observe(self.time_ms, measures, self.nonce if nonce is None else nonce)
            self.events += new
            for event in new:
                if isinstance(event, Prompt):
                    self.nonce = event.nonce

    @property
    def failure(self) -> ChallengeFailed | None:
        return self.run.failure


def kiosk_for(*challenges: Challenge, **settings) -> Kiosk:
    kiosk = Kiosk(ChallengeRun(plan_of(*challenges), dataclasses.replace(SETTINGS, **settings)))
    kiosk.show(mesh(), frames=SETTINGS.baseline_frames)
    return kiosk


def blink(kiosk: Kiosk) -> None:
    kiosk.show(mesh(), 2)
    kiosk.show(mesh(eye_open=0.5))
    kiosk.show(mesh(eye_open=0.15), 2)
    kiosk.show(mesh(eye_open=0.6))
    kiosk.show(mesh(), 2)


def turn(kiosk: Kiosk, direction: int) -> None:
    kiosk.show(mesh(), 2)
    for angle in (5, 10, 15, 20, 25):
        kiosk.show(mesh(yaw_deg=direction * angle))


def nod(kiosk: Kiosk) -> None:
    kiosk.show(mesh(), 2)
    for angle in (5, 10, 15, 20, 15, 10, 5, 0):
        kiosk.show(mesh(pitch_deg=angle))


def open_mouth(kiosk: Kiosk) -> None:
    kiosk.show(mesh(), 2)
    for gap in (10, 20, 30):
        kiosk.show(mesh(mouth_gap=gap))


ACTIONS = {
    Challenge.BLINK: blink,
    Challenge.TURN_LEFT: lambda k: turn(k, +1),
    Challenge.TURN_RIGHT: lambda k: turn(k, -1),
    Challenge.NOD: nod,
    Challenge.OPEN_MOUTH: open_mouth,
}


def test_baseline_frames_then_the_first_prompt():
    kiosk = kiosk_for(Challenge.BLINK, Challenge.NOD)

    [prompt] = kiosk.events
    assert (prompt.step, prompt.challenge, prompt.nonce) == (0, Challenge.BLINK, "nonce-0")
    assert prompt.deadline_ms == 3 * FRAME_MS + SETTINGS.step_window_ms
    assert prompt.message == "Blink once"


@pytest.mark.parametrize(
    "challenges",
    [
        (Challenge.BLINK, Challenge.TURN_LEFT),
        (Challenge.TURN_RIGHT, Challenge.NOD, Challenge.OPEN_MOUTH),
        (Challenge.OPEN_MOUTH, Challenge.BLINK, Challenge.TURN_RIGHT),
        (Challenge.NOD, Challenge.TURN_LEFT),
        (Challenge.TURN_LEFT, Challenge.TURN_RIGHT),
    ],
)
def test_each_challenge_done_in_order_passes(challenges):
    kiosk = kiosk_for(*challenges)
    for challenge in challenges:
        ACTIONS[challenge](kiosk)

    assert kiosk.failure is None and kiosk.run.passed
    assert [e.challenge for e in kiosk.events if isinstance(e, StepPassed)] == list(challenges)
    assert [e.step for e in kiosk.events if isinstance(e, Prompt)] == list(range(len(challenges)))


def test_a_blink_must_reopen_the_eyes():
    kiosk = kiosk_for(Challenge.BLINK, Challenge.NOD)
    kiosk.show(mesh(), 2)
    kiosk.show(mesh(eye_open=0.1), 5)
    assert not any(isinstance(e, StepPassed) for e in kiosk.events)


def test_wrong_order_fails_on_the_first_unasked_action():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.NOD)
    nod(kiosk)

    assert kiosk.failure.check == WRONG_ACTION
    assert kiosk.failure.message == "asked to turn left, saw a nod"
    assert kiosk.failure.step == 0


def test_turning_the_wrong_way_fails():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.BLINK)
    turn(kiosk, -1)
    assert kiosk.failure.check == WRONG_ACTION


def test_a_spontaneous_blink_is_not_a_wrong_action():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.OPEN_MOUTH)
    blink(kiosk)
    turn(kiosk, +1)
    open_mouth(kiosk)
    assert kiosk.run.passed


def test_a_pose_held_from_the_previous_step_neither_passes_nor_fails_the_next():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.TURN_RIGHT)
    turn(kiosk, +1)
    kiosk.show(mesh(yaw_deg=25), 5)  # still turned left while the next prompt travels
    assert kiosk.failure is None and not kiosk.run.passed
    turn(kiosk, -1)
    assert kiosk.run.passed


def test_too_slow_fails_with_a_timeout():
    kiosk = kiosk_for(Challenge.NOD, Challenge.BLINK)
    kiosk.show(mesh(), SETTINGS.step_window_ms // FRAME_MS - 3)
    nod(kiosk)

    assert kiosk.failure.check == CHALLENGE_TIMEOUT
    assert kiosk.failure.message == "'nod' was not done within 3000 ms"


def test_a_static_series_times_out():
    kiosk = kiosk_for(Challenge.BLINK, Challenge.TURN_RIGHT)
    kiosk.show(mesh(), 40)
    assert kiosk.failure.check == CHALLENGE_TIMEOUT


@pytest.mark.parametrize("challenge", list(Challenge))
def test_a_photo_moved_rotated_scaled_or_squashed_passes_no_challenge(challenge):
    kiosk = kiosk_for(challenge, Challenge.BLINK if challenge is not Challenge.BLINK else Challenge.NOD)
    motions = [similarity(a, 1 + a / 60, (2 * a, -a)) for a in range(0, 40, 4)]
    # Tilting the photo backwards or sideways squashes it: the eyes' EAR drops like a blink.
    motions += [np.array([[1.0, 0.0, 0.0], [0.0, f, 0.0]]) for f in (0.8, 0.6, 0.45, 0.6, 1.0)]
    motions += [np.array([[f, 0.0, 0.0], [0.0, 1.0, 0.0]]) for f in (0.8, 0.6, 0.45, 0.6, 1.0)]
    for affine in motions + motions[::-1]:
        kiosk.show(mesh(affine=affine))
    kiosk.show(mesh(), 20)

    assert kiosk.failure.check == CHALLENGE_TIMEOUT
    assert not any(isinstance(e, StepPassed) for e in kiosk.events)


def test_face_missing_longer_than_allowed_fails():
    kiosk = kiosk_for(Challenge.BLINK, Challenge.NOD)
    kiosk.show(None, 3)  # 300 ms: a detector miss is tolerated
    assert kiosk.failure is None
    kiosk.show(mesh())
    kiosk.show(None, 4)
    assert kiosk.failure.check == FACE_LOST


def test_a_foreign_nonce_fails():
    kiosk = kiosk_for(Challenge.BLINK, Challenge.NOD)
    kiosk.show(mesh(), nonce="recorded-elsewhere")
    assert kiosk.failure.check == NONCE_MISMATCH


def test_frames_without_the_prompts_nonce_cannot_pass_it():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.NOD)
    kiosk.nonce = ""
    kiosk.events.clear()
    kiosk.show(mesh(), 2, nonce="")
    for angle in (10, 20, 25, 25):
        kiosk.show(mesh(yaw_deg=angle), nonce="")
    assert not any(isinstance(e, StepPassed) for e in kiosk.events)


def test_without_required_echo_frames_pass_unechoed():
    kiosk = kiosk_for(Challenge.TURN_LEFT, Challenge.NOD, require_nonce_echo=False)
    kiosk.show(mesh(), 2, nonce="")
    for angle in (10, 20, 25):
        kiosk.show(mesh(yaw_deg=angle), nonce="")
    assert any(isinstance(e, StepPassed) for e in kiosk.events)


def test_frame_timing_refuses_absurd_rates_and_gaps_once_prompted():
    timing = FrameTiming(SETTINGS)
    assert timing.problem(0, gaps_matter=False) is None
    assert timing.problem(2000, gaps_matter=False) is None  # still walking up
    assert timing.problem(2100, gaps_matter=True) is None
    assert timing.problem(2900, gaps_matter=True).check == FRAME_TIMING
    too_fast = timing.problem(2905, gaps_matter=True)
    assert too_fast.check == FRAME_TIMING
    assert too_fast.message == "frames 5 ms apart: faster than any kiosk camera (at least 20 ms)"
