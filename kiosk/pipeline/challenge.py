"""Active liveness: random challenges measured on face-mesh landmark time series.

A printed or displayed photo cannot blink, turn or open its mouth on request, and a
recorded video does not know which of the 20-60 possible orders this session drew. The
pieces here are plain functions and small classes on numbers, so they are tested on
synthetic series without a model:

- ``measure``: per-frame measures from the 468 mesh points: eye aspect ratio per eye
  (EAR), mouth aspect ratio (MAR), yaw and pitch, and the face's aspect (height/width).
- ``Baseline``: the person's neutral measures, the median of the first good frames.
- ``ChallengePlan``: 2-3 distinct challenges drawn with ``secrets``, a nonce each.
- ``ChallengeRun``: the state machine that turns per-frame measures into events:
  prompt the next step, step passed, or failed (naming the check).
- ``FrameTiming``: refuses absurd frame rates and gaps.

Yaw and pitch are *affine coordinates* of the nose tip in the frame spanned by the face
outline (cheek to cheek, forehead to chin). A flat photo moved, rotated, scaled or
tilted in front of the camera is (nearly) an affine image of itself, so these
coordinates do not change; a real head turn or nod moves the protruding nose against the
outline. Eye and mouth ratios only count while the face keeps its baseline aspect, so
squashing a photo vertically cannot fake a blink.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kiosk.domain import Challenge, Prompt
from kiosk.pipeline.landmarks import MeshPoints
from kiosk.settings import LivenessChallengeSettings

# MediaPipe face-mesh indices. "Right"/"left" are the subject's own sides: the subject's
# right eye is on the image's left in an unmirrored camera frame.
# EAR points in the order p1 (outer corner), p2, p3 (upper lid), p4 (inner corner), p5, p6 (lower lid).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (263, 387, 385, 362, 380, 373)
# Inner-lip pairs (upper, lower) and the outer mouth corners.
MOUTH_GAPS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (61, 291)
NOSE_TIP = 1
RIGHT_CHEEK, LEFT_CHEEK = 234, 454
FOREHEAD, CHIN = 10, 152


# Stable names of the checks a session can fail on (LivenessOutcome.failed_check).
CHALLENGE_TIMEOUT = "challenge_timeout"
WRONG_ACTION = "wrong_action"
FACE_LOST = "face_lost"
FRAME_TIMING = "frame_timing"
NONCE_MISMATCH = "nonce_mismatch"


@dataclass(frozen=True)
class FaceMeasures:
    """One frame's measures; dimensionless, so they do not depend on the face's size in the image."""

    right_ear: float
    left_ear: float
    mar: float
    # Nose tip in the outline frame: 0 at the middle, +-1 at the cheek / forehead-chin line.
    # yaw > 0: turned to the subject's left; pitch > 0: tilted down.
    yaw: float
    pitch: float
    # Forehead-chin distance / cheek-cheek distance.
    aspect: float

    @property
    def ear(self) -> float:
        return (self.right_ear + self.left_ear) / 2.0


def _distance(points: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(points[a] - points[b]))


def eye_aspect_ratio(points: np.ndarray, eye: Sequence[int]) -> float:
    """(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) (Soukupova and Cech 2016)."""
    p1, p2, p3, p4, p5, p6 = eye
    width = _distance(points, p1, p4)
    return (_distance(points, p2, p6) + _distance(points, p3, p5)) / (2.0 * width) if width > 0 else 0.0


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """Mean inner-lip gap / mouth width."""
    width = _distance(points, *MOUTH_CORNERS)
    gap = float(np.mean([_distance(points, a, b) for a, b in MOUTH_GAPS]))
    return gap / width if width > 0 else 0.0


def head_pose(points: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch): the nose tip's affine coordinates in the face outline's frame.

    Solves ``nose - centre = (yaw / 2) * (left cheek - right cheek) + (pitch / 2) * (chin - forehead)``.
    Affine coordinates are unchanged by any affine map of the image, so moving, rotating,
    scaling or tilting a flat photo leaves them where they are.
    """
    centre = (points[RIGHT_CHEEK] + points[LEFT_CHEEK] + points[FOREHEAD] + points[CHIN]) / 4.0
    basis = np.stack([points[LEFT_CHEEK] - points[RIGHT_CHEEK], points[CHIN] - points[FOREHEAD]], axis=1)
    if abs(np.linalg.det(basis)) < 1e-9:
        return 0.0, 0.0
    half_yaw, half_pitch = np.linalg.solve(basis, points[NOSE_TIP] - centre)
    return float(2.0 * half_yaw), float(2.0 * half_pitch)


def measure(points: MeshPoints) -> FaceMeasures:
    """The measures of one frame from its mesh points (x, y in image pixels; z is not used)."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    yaw, pitch = head_pose(xy)
    width = _distance(xy, RIGHT_CHEEK, LEFT_CHEEK)
    return FaceMeasures(
        right_ear=eye_aspect_ratio(xy, RIGHT_EYE),
        left_ear=eye_aspect_ratio(xy, LEFT_EYE),
        mar=mouth_aspect_ratio(xy),
        yaw=yaw,
        pitch=pitch,
        aspect=_distance(xy, FOREHEAD, CHIN) / width if width > 0 else 0.0,
    )


@dataclass(frozen=True)
class Baseline:
    """The person's neutral measures: medians over the first good frames of the session."""

    ear: float
    mar: float
    yaw: float
    pitch: float
    aspect: float

    @classmethod
    def of(cls, frames: Sequence[FaceMeasures]) -> "Baseline":
        if not frames:
            raise ValueError("a baseline needs at least one frame")

        def median(values: list[float]) -> float:
            return float(np.median(values))

        return cls(
            ear=median([f.ear for f in frames]),
            mar=median([f.mar for f in frames]),
            yaw=median([f.yaw for f in frames]),
            pitch=median([f.pitch for f in frames]),
            aspect=median([f.aspect for f in frames]),
        )


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class ChallengeStep:
    challenge: Challenge
    # Random per step; the kiosk echoes it in the frames that answer the prompt.
    nonce: str


@dataclass(frozen=True)
class ChallengePlan:
    steps: tuple[ChallengeStep, ...]

    @classmethod
    def draw(cls, settings: LivenessChallengeSettings, rng: secrets.SystemRandom | None = None) -> "ChallengePlan":
        """Distinct challenges in a random order, their number random in [min, max] (OS CSPRNG)."""
        rng = rng or secrets.SystemRandom()
        pool = [Challenge(name) for name in settings.challenges]
        count = rng.randint(settings.min_challenges, settings.max_challenges)
        return cls(tuple(ChallengeStep(c, secrets.token_hex(8)) for c in rng.sample(pool, count)))


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class StepPassed:
    step: int
    challenge: Challenge


@dataclass(frozen=True)
class ChallengeFailed:
    """The session's liveness failed: ``check`` is a stable name, ``message`` safe to show."""

    check: str
    message: str
    step: int | None = None


ChallengeEvent = Prompt | StepPassed | ChallengeFailed


# --------------------------------------------------------------------------- state machine


class _Step:
    """Progress on the current step: armed once the face was neutral after the prompt."""

    def __init__(self, index: int, step: ChallengeStep, started_ms: int, window_ms: int):
        self.index = index
        self.step = step
        self.deadline_ms = started_ms + window_ms
        self.window_ms = window_ms
        self.armed = False
        # BLINK: eyes seen closed; NOD: head seen tilted.
        self.extreme_seen = False

    def prompt(self) -> Prompt:
        challenge = self.step.challenge
        return Prompt(self.index, challenge, self.step.nonce, self.deadline_ms, self.window_ms, RULES[challenge].prompt)


class ChallengeRun:
    """Feeds on one frame at a time (``observe``); finished once ``passed`` or ``failure`` is set."""

    def __init__(self, plan: ChallengePlan, settings: LivenessChallengeSettings):
        if not plan.steps:
            raise ValueError("a challenge plan needs at least one step")
        self.plan = plan
        self.settings = settings
        self.baseline_frames: list[FaceMeasures] = []
        self.baseline: Baseline | None = None
        self.current: _Step | None = None
        self.passed = False
        self.failure: ChallengeFailed | None = None
        self.last_face_ms: int | None = None
        self.previous_nonce = ""

    @property
    def finished(self) -> bool:
        return self.passed or self.failure is not None

    @property
    def prompted(self) -> bool:
        """True once the first prompt went out: from then on, the face must stay in view."""
        return self.current is not None

    def observe(self, timestamp_ms: int, measures: FaceMeasures | None, nonce: str = "") -> list[ChallengeEvent]:
        """One frame: its capture time, its measures (None: no face) and the nonce it echoes."""
        if self.finished:
            return []
        if self.current is None:
            return self._collect_baseline(timestamp_ms, measures)
        step = self.current
        if timestamp_ms > step.deadline_ms:
            return self._fail(
                CHALLENGE_TIMEOUT, f"'{step.step.challenge.value}' was not done within {step.window_ms} ms"
            )
        if nonce and nonce not in (step.step.nonce, self.previous_nonce):
            return self._fail(NONCE_MISMATCH, "a frame echoes a nonce that is neither the current prompt's nor the previous one's")
        if measures is None:
            if timestamp_ms - (self.last_face_ms or timestamp_ms) > self.settings.max_face_missing_ms:
                return self._fail(FACE_LOST, "the face left the camera's view during the challenge")
            return []
        self.last_face_ms = timestamp_ms
        answers_prompt = nonce == step.step.nonce or not self.settings.require_nonce_echo
        return self._advance(step, timestamp_ms, measures, answers_prompt)

    def _collect_baseline(self, timestamp_ms: int, measures: FaceMeasures | None) -> list[ChallengeEvent]:
        if measures is None:
            return []
        self.baseline_frames.append(measures)
        if len(self.baseline_frames) < self.settings.baseline_frames:
            return []
        self.baseline = Baseline.of(self.baseline_frames)
        self.last_face_ms = timestamp_ms
        return [self._start(0, timestamp_ms)]

    def _start(self, index: int, timestamp_ms: int) -> Prompt:
        self.current = _Step(index, self.plan.steps[index], timestamp_ms, self.settings.step_window_ms)
        return self.current.prompt()

    def _fail(self, check: str, message: str) -> list[ChallengeEvent]:
        self.failure = ChallengeFailed(check, message, self.current.index if self.current else None)
        return [self.failure]

    def _advance(self, step: _Step, timestamp_ms: int, m: FaceMeasures, answers_prompt: bool) -> list[ChallengeEvent]:
        s = self.settings
        motion = Motion.of(m, self.baseline, s)
        challenge = step.step.challenge
        if not step.armed:
            # The action counts only from a neutral face after the prompt, so a pose held
            # from the previous step (or a replay already mid-action) cannot pass it, and
            # that pose is not taken for a wrong action either.
            step.armed = motion.neutral and motion.eyes_open
            return []
        wrong = wrong_action(challenge, motion, s)
        if wrong is not None:
            return self._fail(WRONG_ACTION, f"asked to {challenge.value.replace('_', ' ')}, saw {wrong}")
        if not answers_prompt:
            return []
        done = RULES[challenge].done(step, motion, s)
        if not done:
            return []
        events: list[ChallengeEvent] = [StepPassed(step.index, challenge)]
        self.previous_nonce = step.step.nonce
        if step.index + 1 == len(self.plan.steps):
            self.passed = True
        else:
            events.append(self._start(step.index + 1, timestamp_ms))
        return events


# --------------------------------------------------------------------------- the challenges as data


@dataclass(frozen=True)
class Motion:
    """One frame's measures against the person's baseline, as every challenge rule reads them."""

    measures: FaceMeasures
    baseline: Baseline
    d_yaw: float
    d_pitch: float
    d_mar: float
    # Neutral pose (within the neutral limits of yaw, pitch and mouth) and eyes open.
    neutral: bool
    eyes_open: bool
    # Eye and mouth ratios only count on frames with the baseline's face shape: a photo
    # squashed or tilted away changes the whole face's aspect, a blink does not.
    same_shape: bool

    @classmethod
    def of(cls, m: FaceMeasures, b: Baseline, s: LivenessChallengeSettings) -> "Motion":
        d_yaw, d_pitch, d_mar = m.yaw - b.yaw, m.pitch - b.pitch, m.mar - b.mar
        return cls(
            measures=m,
            baseline=b,
            d_yaw=d_yaw,
            d_pitch=d_pitch,
            d_mar=d_mar,
            neutral=abs(d_yaw) <= s.neutral_yaw and abs(d_pitch) <= s.neutral_pitch and d_mar <= s.neutral_mar,
            eyes_open=m.ear >= s.blink_open_ratio * b.ear,
            same_shape=abs(m.aspect / b.aspect - 1.0) <= s.shape_tolerance if b.aspect > 0 else False,
        )


@dataclass(frozen=True)
class ChallengeRule:
    """One challenge: what to ask, when it is done, and what it looks like when not asked for.

    Adding a challenge is one rule here and one value of the same name in ``Challenge``
    (kiosk/domain.py) and in the proto's ``ChallengePrompt.Challenge``; settings, the plan
    and the converters take it from there.
    """

    challenge: Challenge
    # What the kiosk shows the person.
    prompt: str
    # Whether this frame completes the step; may record progress on the step (a closed eye seen).
    done: Callable[[_Step, Motion, LivenessChallengeSettings], bool]
    # This challenge's action seen while another one was asked for: a wrong action,
    # described as ``deviation_text``. None: it never counts as one (a spontaneous blink).
    deviation: Callable[[Motion, LivenessChallengeSettings], bool] | None = None
    deviation_text: str = ""


def _blink_done(step: _Step, motion: Motion, s: LivenessChallengeSettings) -> bool:
    m, b = motion.measures, motion.baseline
    closed = max(m.left_ear, m.right_ear) <= s.blink_closed_ratio * b.ear
    step.extreme_seen = step.extreme_seen or (closed and motion.same_shape)
    return step.extreme_seen and motion.eyes_open


def _turned_left(motion: Motion, s: LivenessChallengeSettings) -> bool:
    return motion.d_yaw >= s.turn_min_yaw


def _turned_right(motion: Motion, s: LivenessChallengeSettings) -> bool:
    return motion.d_yaw <= -s.turn_min_yaw


def _mouth_opened(motion: Motion, s: LivenessChallengeSettings) -> bool:
    return motion.d_mar >= s.mouth_min_increase


def _nodded(motion: Motion, s: LivenessChallengeSettings) -> bool:
    # A head turned aside also tilts a little, and the outline frame skews with it:
    # pitch is judged only while the face is turned no further than neutral.
    return abs(motion.d_yaw) <= s.neutral_yaw and abs(motion.d_pitch) >= s.nod_min_pitch


def _nod_done(step: _Step, motion: Motion, s: LivenessChallengeSettings) -> bool:
    step.extreme_seen = step.extreme_seen or abs(motion.d_pitch) >= s.nod_min_pitch
    return step.extreme_seen and abs(motion.d_pitch) <= s.neutral_pitch


RULES: dict[Challenge, ChallengeRule] = {
    rule.challenge: rule
    for rule in (
        ChallengeRule(Challenge.BLINK, "Blink once", _blink_done),
        ChallengeRule(
            Challenge.TURN_LEFT, "Turn your head to your left",
            lambda step, motion, s: _turned_left(motion, s), _turned_left, "a turn to the left",
        ),
        ChallengeRule(
            Challenge.TURN_RIGHT, "Turn your head to your right",
            lambda step, motion, s: _turned_right(motion, s), _turned_right, "a turn to the right",
        ),
        ChallengeRule(
            Challenge.OPEN_MOUTH, "Open your mouth",
            lambda step, motion, s: _mouth_opened(motion, s) and motion.same_shape, _mouth_opened, "an open mouth",
        ),
        ChallengeRule(Challenge.NOD, "Nod: tilt your head down, then back up", _nod_done, _nodded, "a nod"),
    )
}
if set(RULES) != set(Challenge):
    raise RuntimeError("every Challenge needs exactly one rule in kiosk.pipeline.challenge.RULES")

# What a prompt says, per challenge (kept for callers that read the text by challenge).
PROMPT_MESSAGES = {challenge: rule.prompt for challenge, rule in RULES.items()}


def wrong_action(asked: Challenge, motion: Motion, s: LivenessChallengeSettings) -> str | None:
    """A deliberate action other than the one asked for, described; a spontaneous blink never counts."""
    for challenge, rule in RULES.items():
        if challenge is not asked and rule.deviation is not None and rule.deviation(motion, s):
            return rule.deviation_text
    return None

# --------------------------------------------------------------------------- frame timing


class FrameTiming:
    """Checks that frames arrive at a rate a live camera produces: not absurdly fast, no long gaps."""

    def __init__(self, settings: LivenessChallengeSettings):
        self.settings = settings
        self.last_ms: int | None = None

    def problem(self, timestamp_ms: int, gaps_matter: bool) -> ChallengeFailed | None:
        """The failure this frame's timestamp shows (timestamps already increase), else None.

        Gaps matter once the challenges run; before that the person may still be
        walking up, and the kiosk may pause its stream.
        """
        last, self.last_ms = self.last_ms, timestamp_ms
        if last is None:
            return None
        interval = timestamp_ms - last
        if interval < self.settings.min_frame_interval_ms:
            return ChallengeFailed(
                FRAME_TIMING,
                f"frames {interval} ms apart: faster than any kiosk camera "
                f"(at least {self.settings.min_frame_interval_ms} ms)",
            )
        if gaps_matter and interval > self.settings.max_frame_gap_ms:
            return ChallengeFailed(
                FRAME_TIMING, f"a {interval} ms gap between frames (at most {self.settings.max_frame_gap_ms} ms)"
            )
        return None
