"""Live sessions with active challenges, on frame sequences built in code from real photos.

What is real and what is scripted:

- Real, in every test: the photos (NUAA webcam captures of three people, read from the
  shared data folder, never copied here), decoding, MTCNN detection, quality, alignment,
  the embedder, identity consistency, frame timing, the challenge state machine.
- Real in the attack tests: the face mesh and the measures taken from it. A still
  photo, a photo moved/rotated/scaled/squashed over time, spliced people, a face that
  leaves the frame and a second person are all judged on what the models see.
- Scripted in the tests that need someone to *perform* (the positive path and the
  replay): we cannot film a person here, so the per-frame measures (EAR, MAR, yaw,
  pitch) come from ``ScriptedMeasures``, a script of what a person doing the challenges
  would show, while the frames, detection and embeddings are real. The measures
  themselves are tested on synthetic meshes in tests/unit/test_challenge.py.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk import cli
from kiosk.pipeline.challenge import Challenge, ChallengePlan, ChallengeStep, FaceMeasures
from kiosk.pipeline.session import Frame, FrameResult, LiveSession, open_session
from kiosk.pipeline.types import BgrImage, Decision, FaceDetection, LivenessStatus, Verification

FRAME_MS = 100  # a 10 fps kiosk


@pytest.fixture(scope="module")
def with_passive(verifier):
    """The service's verifier as shipped: passive liveness runs on every usable frame."""
    return verifier


@pytest.fixture(scope="module")
def verifier(verifier):
    """The same verifier with passive liveness off, so the active checks are shown on their own.

    Passive liveness would often refuse these photo attacks first (see
    test_a_moved_photo_is_refused_with_passive_liveness_on); it is tested by itself in
    test_liveness_pad.py.
    """
    return verifier.without("liveness")


def read(path: Path) -> BgrImage:
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


@pytest.fixture(scope="module")
def people(faces: Path) -> dict[str, list[BgrImage]]:
    """NUAA webcam captures (640x480) of three people, 20 each."""
    return {p: [read(f) for f in sorted((faces / f"nuaa__{p}").glob("*.jpg"))] for p in ("s01", "s02", "s03")}


def encode(image: BgrImage) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return data.tobytes()


def raw_frame(image: BgrImage, timestamp_ms: int, nonce: str) -> Frame:
    height, width = image.shape[:2]
    return Frame(np.ascontiguousarray(image).tobytes(), timestamp_ms, "bgr", width, height, nonce)


@dataclasses.dataclass
class Kiosk:
    """Sends frames as a kiosk does: at 10 fps, each echoing the latest prompt's nonce."""

    session: LiveSession
    time_ms: int = 0
    nonce: str = ""
    results: list[FrameResult] = dataclasses.field(default_factory=list)

    def send(self, image: BgrImage, interval_ms: int = FRAME_MS, nonce: str | None = None) -> FrameResult:
        self.time_ms += interval_ms
        result = self.session.add_frame(raw_frame(image, self.time_ms, self.nonce if nonce is None else nonce))
        if result.prompt is not None:
            self.nonce = result.prompt.nonce
        self.results.append(result)
        return result

    def play(self, images: Iterable[BgrImage], **kwargs) -> Verification | None:
        """Send frames until the session decides; the decision, or None if the frames ran out."""
        for image in images:
            result = self.send(image, **kwargs)
            if result.verification is not None:
                return result.verification
        return None

    @property
    def prompts(self) -> list:
        return [r.prompt for r in self.results if r.prompt is not None]


def cycle(images: list[BgrImage], count: int) -> Iterator[BgrImage]:
    return (images[i % len(images)] for i in range(count))


def start(verifier, id_photo: BgrImage, **kwargs) -> LiveSession:
    return open_session(verifier, encode(id_photo), **kwargs)


def assert_refused(verification: Verification | None, check: str) -> None:
    assert verification is not None, "the session did not end"
    assert (verification.decision, verification.reason) == (Decision.RETRY, "liveness_failed")
    assert verification.liveness.status is LivenessStatus.FAILED
    assert verification.liveness.failed_check == check, verification.message
    assert verification.similarity is None


# --------------------------------------------------------------------------- scripted measures

NEUTRAL = FaceMeasures(right_ear=0.28, left_ear=0.28, mar=0.05, yaw=0.0, pitch=0.10, aspect=1.30)


def _with(**changes) -> FaceMeasures:
    return dataclasses.replace(NEUTRAL, **changes)


# What a person doing each challenge shows, frame by frame at 10 fps, starting and ending face-on.
PERFORMANCES = {
    Challenge.BLINK: [NEUTRAL, NEUTRAL, _with(right_ear=0.18, left_ear=0.17), _with(right_ear=0.06, left_ear=0.05),
                      _with(right_ear=0.12, left_ear=0.12), NEUTRAL, NEUTRAL],
    Challenge.TURN_LEFT: [NEUTRAL, NEUTRAL, *(_with(yaw=y) for y in (0.1, 0.25, 0.4, 0.45, 0.3, 0.1)), NEUTRAL],
    Challenge.TURN_RIGHT: [NEUTRAL, NEUTRAL, *(_with(yaw=-y) for y in (0.1, 0.25, 0.4, 0.45, 0.3, 0.1)), NEUTRAL],
    Challenge.OPEN_MOUTH: [NEUTRAL, NEUTRAL, *(_with(mar=m, aspect=1.4) for m in (0.2, 0.45, 0.55)),
                           _with(mar=0.2), NEUTRAL],
    Challenge.NOD: [NEUTRAL, NEUTRAL, *(_with(pitch=p) for p in (0.2, 0.35, 0.42, 0.3, 0.15)), NEUTRAL, NEUTRAL],
}


class ScriptedMeasures:
    """Test seam for the session's landmark measurement: a script replaces the face mesh.

    Detection, quality and embedding still run on the real frame; only the measures the
    challenges read come from the script (then NEUTRAL once it is used up).
    """

    def __init__(self, challenges: Iterable[Challenge], lead_in: int = 3):
        self.script = [NEUTRAL] * lead_in
        for challenge in challenges:
            self.script += PERFORMANCES[challenge]

    def measure(self, image: BgrImage, face: FaceDetection) -> FaceMeasures:
        return self.script.pop(0) if self.script else NEUTRAL


def plan_of(*challenges: Challenge) -> ChallengePlan:
    return ChallengePlan(tuple(ChallengeStep(c, secrets.token_hex(8)) for c in challenges))


# --------------------------------------------------------------------------- the positive path


def test_a_person_doing_this_sessions_random_challenges_is_matched(verifier, people):
    """Real frames of one person; the measures perform whatever this session drew."""
    s01 = people["s01"]
    plan = ChallengePlan.draw(verifier.settings.liveness_challenge)  # with secrets, 2-3 steps
    measures = ScriptedMeasures(step.challenge for step in plan.steps)
    with start(verifier, s01[0], plan=plan, measurer=measures) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play(cycle(s01[1:], 60))

    assert verification is not None and verification.decision is Decision.MATCH
    assert verification.similarity >= verification.operating_point.threshold
    assert verification.liveness.status is LivenessStatus.PASSED
    assert list(verification.liveness.challenges_passed) == [s.challenge.value for s in plan.steps]
    assert [(p.step, p.challenge) for p in kiosk.prompts] == [(i, s.challenge) for i, s in enumerate(plan.steps)]
    # A few seconds at 10 fps: baseline, then about a second per challenge.
    assert len(kiosk.results) <= 3 + 10 * len(plan.steps)
    assert "landmarks" in verification.timings_ms


# --------------------------------------------------------------------------- attacks, measured for real


def test_a_still_photo_repeated_is_refused(verifier, people):
    s01 = people["s01"]
    with start(verifier, s01[0]) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play(cycle([s01[1]], 60))

    assert_refused(verification, "challenge_timeout")
    assert len(kiosk.prompts) == 1
    assert kiosk.time_ms <= 4 * 1000 + 100  # baseline + one 3 s window


def _moved(image: BgrImage, step: int) -> BgrImage:
    """The photo held up and moved: rotated, scaled and shifted, then tilted (squashed) away."""
    height, width = image.shape[:2]
    if step < 16:
        angle, scale = 2.0 * step, 1.0 + 0.015 * step
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[:, 2] += (3 * step, -2 * step)
    else:
        squash = 1.0 - 0.04 * (step - 15) if step < 26 else 0.6 + 0.04 * (step - 25)
        # Tilting the photo backwards foreshortens it vertically: the eyes' EAR drops.
        matrix = np.array([[1.0, 0.0, 0.0], [0.0, squash, height * (1 - squash) / 2]])
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)


def test_a_photo_moved_rotated_scaled_and_tilted_is_refused(verifier, people):
    s01 = people["s01"]
    with start(verifier, s01[0]) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play(_moved(s01[1], i) for i in range(60))

    assert_refused(verification, "challenge_timeout")
    assert verification.liveness.challenges_passed == ()


def test_a_moved_photo_is_refused_with_passive_liveness_on(with_passive, people):
    s01 = people["s01"]
    with start(with_passive, s01[0]) as session:
        verification = Kiosk(session).play(_moved(s01[1], i) for i in range(60))

    assert verification is not None and verification.decision is Decision.RETRY
    assert verification.liveness.failed_check in ("passive", "challenge_timeout")


def test_frames_of_different_people_spliced_are_refused(verifier, people):
    with start(verifier, people["s01"][0]) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play([*people["s01"][1:6], *people["s02"][1:10]])

    assert_refused(verification, "identity_changed")
    assert kiosk.results[-1].frame_index == 5  # the first frame of the second person


def test_a_face_leaving_the_frame_is_refused(verifier, people):
    s01 = people["s01"]
    empty = np.full_like(s01[1], 128)
    with start(verifier, s01[0]) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play([*s01[1:5], *[empty] * 6])

    assert_refused(verification, "face_lost")


def test_a_second_person_during_the_challenge_is_refused(verifier, people):
    s01, s02 = people["s01"], people["s02"]
    pair = np.hstack([s01[2], s02[2]])
    frames = [cv2.copyMakeBorder(f, 0, 0, 320, 320, cv2.BORDER_REPLICATE) for f in s01[1:5]]
    with start(verifier, s01[0]) as session:
        kiosk = Kiosk(session)
        verification = kiosk.play([*frames, pair])

    assert_refused(verification, "multiple_faces")


@pytest.mark.parametrize(("intervals", "message"), [
    ([100, 100, 100, 100, 10], "frames 10 ms apart: faster than any kiosk camera (at least 20 ms)"),
    ([100, 100, 100, 100, 900], "a 900 ms gap between frames (at most 500 ms)"),
])
def test_absurd_frame_rates_and_gaps_are_refused(verifier, people, intervals, message):
    s01 = people["s01"]
    with start(verifier, s01[0]) as session:
        kiosk = Kiosk(session)
        for image, interval in zip(s01[1:], intervals):
            result = kiosk.send(image, interval_ms=interval)

    assert_refused(result.verification, "frame_timing")
    assert result.verification.message == message


# --------------------------------------------------------------------------- replay


def _record(verifier, people, plan: ChallengePlan) -> list[tuple[BgrImage, int, str, FaceMeasures]]:
    """A valid-looking session for ``plan``: frames, timestamps, echoed nonces and measures."""
    s01 = people["s01"]
    script = ScriptedMeasures(step.challenge for step in plan.steps)
    recording, measures = [], list(script.script)
    with start(verifier, s01[0], plan=plan, measurer=script) as session:
        kiosk = Kiosk(session)
        for i, image in enumerate(cycle(s01[1:], 60)):
            nonce = kiosk.nonce
            result = kiosk.send(image)
            recording.append((image, kiosk.time_ms, nonce, measures[i] if i < len(measures) else NEUTRAL))
            if result.verification is not None:
                break
    assert result.verification.decision is Decision.MATCH  # the recording itself was accepted
    return recording


def _replay(verifier, people, recording, plan: ChallengePlan, echo_live_nonces: bool) -> Verification | None:
    measures = ScriptedMeasures([], lead_in=0)
    measures.script = [m for _, _, _, m in recording]
    with start(verifier, people["s01"][0], plan=plan, measurer=measures) as session:
        kiosk = Kiosk(session)
        for image, timestamp_ms, nonce, _ in recording:
            kiosk.time_ms = timestamp_ms - FRAME_MS
            result = kiosk.send(image, nonce=None if echo_live_nonces else nonce)
            if result.verification is not None:
                return result.verification
    return None


def test_a_replay_that_does_not_follow_this_sessions_order_is_refused(verifier, people):
    recorded_plan = plan_of(Challenge.TURN_LEFT, Challenge.NOD)
    recording = _record(verifier, people, recorded_plan)

    # Replayed as it was sent, the recording carries the other session's nonces.
    assert_refused(_replay(verifier, people, recording, plan_of(Challenge.NOD, Challenge.TURN_LEFT), False),
                   "nonce_mismatch")
    # A forged client that echoes this session's nonces: the recorded turn comes when a nod was asked for.
    wrong = _replay(verifier, people, recording, plan_of(Challenge.NOD, Challenge.TURN_LEFT), True)
    assert_refused(wrong, "wrong_action")
    assert wrong.message == "asked to nod, saw a turn to the left"
    # Other challenges: the recorded turn is again an action nobody asked for.
    assert_refused(_replay(verifier, people, recording, plan_of(Challenge.BLINK, Challenge.OPEN_MOUTH), True),
                   "wrong_action")
    # Only a session that happens to draw the recorded order accepts it, which is why the order is random.
    same = _replay(verifier, people, recording, recorded_plan, True)
    assert same.decision is Decision.MATCH and same.liveness.status is LivenessStatus.PASSED


# --------------------------------------------------------------------------- the CLI as a kiosk


def test_kiosk_session_cli_prints_the_prompt_and_the_refusal(start_server, faces, capsys):
    running = start_server(unix=True)
    photos = sorted((faces / "nuaa__s01").glob("*.jpg"))
    frames = [str(photos[1])] * 40  # 4 s of a still photo at 10 fps, past the 3 s window

    assert cli.main(["session", "--server", running.address, "--fps", "10", "--id-photo", str(photos[0]), *frames]) == 2
    lines = capsys.readouterr().out.splitlines()
    [prompt] = [line for line in lines if line.startswith("challenge ")]
    assert prompt.startswith("challenge 0: ") and prompt.endswith("(by 3200 ms)")
    assert "decision: retry" in lines and "retry_reason: liveness_failed" in lines
