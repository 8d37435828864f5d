"""A live verification session: the ID photo once, then camera frames until a decision.

The ID-photo embedding is computed once and held only in the session's scratch. Each
frame yields guidance the kiosk UI can show (no face, move closer, hold still, ...).
With active liveness on (the default), the first frames with a good face set the
person's neutral baseline, then the session prompts a random sequence of challenges
(``kiosk.pipeline.challenge``) measured on the face mesh of every frame. The session
ends with a decision once

- the fused embedding of the usable frames matches the ID photo (as before),
- every challenge was met in order, each within its window,
- the face never left the frame, no second person appeared, and every usable frame's
  embedding matches the session's first live embedding (the same person throughout),
- the frame timestamps advance at a plausible camera rate, without long gaps.

Any failed liveness check ends the session at once: RETRY with reason
``liveness_failed`` and the check's name in ``Verification.liveness``. Closing the
session wipes everything it held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kiosk.domain import Frame, FrameResult, Guidance  # noqa: F401 (re-exported: wire types)
from kiosk.errors import InvalidRequest, MultipleFaces, Undecidable
from kiosk.outcomes import GUIDANCE_CODES
from kiosk.pipeline import quality
from kiosk.pipeline.analysis import AnalysedFace, CaptureProblem, analyse_face, conclude, decide, decode_photo
from kiosk.pipeline.challenge import (
    ChallengeFailed,
    ChallengePlan,
    ChallengeRun,
    FaceMeasures,
    FrameTiming,
    Prompt,
    StepPassed,
    measure,
)
from kiosk.pipeline.compare import cosine_similarity, fuse_embeddings
from kiosk.pipeline.decode import decode_image, decode_raw_frame
from kiosk.pipeline.landmarks import FaceMesh
from kiosk.pipeline.liveness import PASSIVE_CHECK, PresentationAttackSuspected
from kiosk.pipeline.scratch import Scratch, StageTimer, wipe_bytes
from kiosk.pipeline.tracking import FaceTracker
from kiosk.pipeline.types import (
    BgrImage,
    Decision,
    Embedding,
    FaceDetection,
    FaceFinding,
    ImageRole,
    LivenessOutcome,
    LivenessStatus,
    OperatingPoint,
    Verification,
)
from kiosk.pipeline.verifier import Verifier
from kiosk.settings import LivenessChallengeSettings

# Guidance codes for capture problems that are not quality findings.
NO_FACE = "NO_FACE"
ONLY_ONE_PERSON = "ONLY_ONE_PERSON"
GOOD_FRAME = "GOOD_FRAME"

# Liveness checks the session itself makes (the challenge module names the others).
MULTIPLE_FACES = "multiple_faces"
IDENTITY_CHANGED = "identity_changed"
LIVENESS_FAILED = "liveness_failed"

# The mesh's face flag is 1.00 on every detected LFW face and at most 0.002 on
# background patches (models/README.md): below one half, the mesh did not see a face.
MIN_MESH_FACE_SCORE = 0.5

# The screen text of each guidance code is kept once, with its meaning, in kiosk.outcomes.
_MESSAGES = {code: text for code, (_, text) in GUIDANCE_CODES.items()}


def guidance_message(code: str) -> str:
    return _MESSAGES.get(code, code.replace("_", " ").capitalize())


@dataclass(frozen=True)
class SessionLimits:
    usable_frames_needed: int = 3
    max_frames: int = 300


class LandmarkMeasurer(Protocol):
    """Where a frame's challenge measures come from; tests substitute a scripted series."""

    def measure(self, image: BgrImage, face: FaceDetection) -> FaceMeasures | None: ...


class MeshMeasurer:
    """Measures from the face mesh; None when the mesh does not confirm a face in the crop."""

    def __init__(self, face_mesh: FaceMesh):
        self.face_mesh = face_mesh

    def measure(self, image: BgrImage, face: FaceDetection) -> FaceMeasures | None:
        result = self.face_mesh.landmarks(image, face)
        try:
            if result.face_score < MIN_MESH_FACE_SCORE:
                return None
            return measure(result.points)
        finally:
            result.points.fill(0)


class LiveSession:
    """Use as ``with open_session(verifier, id_photo) as session: session.add_frame(frame)``.

    Holds only what it derives: the ID photo's embedding, the usable frames' embeddings
    and the challenge state. Each photo or frame is decoded and analysed in a scratch of
    its own, wiped before ``start`` or ``add_frame`` returns.
    """

    def __init__(
        self,
        verifier: Verifier,
        operating_point: OperatingPoint,
        limits: SessionLimits,
        challenges: LivenessChallengeSettings,
        measurer: LandmarkMeasurer | None = None,
        plan: ChallengePlan | None = None,
    ):
        self.models = verifier.models
        self.rules = verifier.rules
        # Replaced by the chip calibration's point once the ID photo proves chip-sized.
        self.operating_point = operating_point
        self.operating_point_for = verifier.operating_point
        self.limits = limits
        self.challenge_settings = challenges
        # The embeddings the session keeps between frames; everything else is per frame.
        self.scratch = Scratch()
        self.timer = StageTimer()
        self.findings: list[FaceFinding] = []
        self.reference: Embedding | None = None
        # A chip-sized ID photo: frames are embedded from crops softened alike (analysis.py).
        self.chip_sized_id_photo = False
        self.live_embeddings: list[Embedding] = []
        self.frames_seen = 0
        self.last_timestamp_ms: int | None = None
        self.verification: Verification | None = None
        self.model_versions = dict(verifier.model_versions)
        self.challenge_run: ChallengeRun | None = None
        self.timing = FrameTiming(challenges)
        self.passed_challenges: list[str] = []
        # P(live) of each usable frame; the session reports the lowest.
        self.passive_scores: list[float] = []
        # Window detection around the face, a full scan every few frames (tracking.py).
        self.tracker = FaceTracker()
        self.measurer: LandmarkMeasurer | None = None
        if challenges.enabled:
            if measurer is None:
                if self.models.face_mesh is None:
                    raise InvalidRequest("liveness challenges need the face mesh model, which is not loaded")
                measurer = MeshMeasurer(self.models.face_mesh)
                self.model_versions["face_mesh"] = self.models.face_mesh.entry.version
            self.measurer = measurer
            self.challenge_run = ChallengeRun(plan or ChallengePlan.draw(challenges), challenges)

    @property
    def done(self) -> bool:
        return self.verification is not None

    def waiting_for(self) -> str:
        """What the session still needs before it can decide, for an error message."""
        run = self.challenge_run
        if run is not None and run.prompted and not run.passed:
            return "the liveness challenges are not done"
        return f"{self.limits.usable_frames_needed} usable frames are needed"

    def start(self, id_photo: bytes, *, wipe_payload: bool = False) -> Verification | None:
        """Analyse the ID photo; returns a RETRY verification (session over) if it is unusable.

        Only its embedding stays; with ``wipe_payload`` (the service, which owns the bytes)
        the encoded photo is zeroed as soon as it is decoded.
        """
        with Scratch() as photo:
            try:
                image = decode_photo(id_photo, self.rules, photo, self.timer)
            finally:
                if wipe_payload:
                    wipe_bytes(id_photo)
            result = analyse_face(
                self.models, image, ImageRole.ID_PHOTO, self.rules, photo, self.timer, keep=self.scratch
            )
        self.findings.append(result.finding)
        if isinstance(result, CaptureProblem):
            self.verification = self._result(Decision.RETRY, result.error.reason, None, result.error.message)
        else:
            self.reference = result.embedding
            self.chip_sized_id_photo = result.chip_sized
            self.operating_point = self.operating_point_for(self.operating_point.target_fmr, result.chip_sized)
        return self.verification

    def add_frame(self, frame: Frame, *, wipe_payload: bool = False) -> FrameResult:
        """Analyse one frame; with ``wipe_payload`` its bytes are zeroed as soon as they are decoded."""
        if self.done:
            raise InvalidRequest("the session has already ended with a decision")
        if self.reference is None:
            raise InvalidRequest("the session has no ID photo")
        if self.last_timestamp_ms is not None and frame.timestamp_ms <= self.last_timestamp_ms:
            raise InvalidRequest(
                f"frame timestamps must increase: {frame.timestamp_ms} ms after {self.last_timestamp_ms} ms"
            )
        self.last_timestamp_ms = frame.timestamp_ms
        index = self.frames_seen
        self.frames_seen += 1
        run = self.challenge_run
        if run is not None:
            timing = self.timing.problem(frame.timestamp_ms, gaps_matter=run.prompted)
            if timing is not None:
                return self._liveness_failed(index, None, timing)
        # Only the latest frame's pixels are needed: its scratch is wiped before this returns.
        with Scratch() as pixels:
            try:
                with self.timer.stage("decode"):
                    image = pixels.keep(self._decode(frame))
            finally:
                if wipe_payload:
                    wipe_bytes(frame.data)
            result = analyse_face(
                self.models,
                image,
                ImageRole.LIVE_FRAME,
                self.rules,
                pixels,
                self.timer,
                index=index,
                # Usable frames are liveness-checked whenever the model is loaded.
                passive_liveness=self.models.liveness is not None,
                measure=self.measurer.measure if self.measurer is not None else None,
                keep=self.scratch,
                tracker=self.tracker,
                # Compared with a chip-sized ID photo: embedded from a crop softened alike.
                soften=self.chip_sized_id_photo,
            )
        return self._after_analysis(frame, index, result)

    def _after_analysis(self, frame: Frame, index: int, result: AnalysedFace | CaptureProblem) -> FrameResult:
        run = self.challenge_run
        self.findings.append(result.finding)
        if isinstance(result, CaptureProblem):
            error = result.error
            if not result.finding.face_found:
                if run is not None and run.prompted and isinstance(error, MultipleFaces):
                    failure = ChallengeFailed(MULTIPLE_FACES, "a second person came into view during the challenge")
                    return self._liveness_failed(index, None, failure)
                return self._after_challenge(frame, index, None, self._guidance_for(error, None), None)
            if isinstance(error, PresentationAttackSuspected):
                self.passive_scores.append(error.score)
                return self._liveness_failed(index, result.finding, ChallengeFailed(PASSIVE_CHECK, error.message))
            # Unusable (e.g. eyes closed during a blink): not used for matching. Baseline
            # frames must be good, face-on frames: a turned or blurred face would shift the
            # person's neutral measures.
            measures = result.measures if run is not None and run.prompted else None
            guidance = self._guidance_for(None, result.finding)
            return self._after_challenge(frame, index, result.finding, guidance, measures)
        if result.passive_score is not None:
            self.passive_scores.append(result.passive_score)
        embedding = result.embedding
        if self.live_embeddings:
            with self.timer.stage("compare"):
                same_person = cosine_similarity(self.live_embeddings[0], embedding)
            if run is not None and same_person < self.challenge_settings.identity_min_similarity:
                failure = ChallengeFailed(
                    IDENTITY_CHANGED, "the face in front of the camera changed during the session"
                )
                return self._liveness_failed(index, result.finding, failure)
        self.live_embeddings.append(embedding)
        guidance = (Guidance(GOOD_FRAME, guidance_message(GOOD_FRAME)),)
        return self._after_challenge(frame, index, result.finding, guidance, result.measures)

    def _after_challenge(
        self,
        frame: Frame,
        index: int,
        finding: FaceFinding | None,
        guidance: tuple[Guidance, ...],
        measures: FaceMeasures | None,
    ) -> FrameResult:
        """Feed the frame's measures to the challenges, then decide if everything is in."""
        run = self.challenge_run
        prompt = None
        if run is not None:
            was_prompted = run.prompted
            for event in run.observe(frame.timestamp_ms, measures, frame.challenge_nonce):
                if isinstance(event, ChallengeFailed):
                    return self._liveness_failed(index, finding, event)
                if isinstance(event, StepPassed):
                    self.passed_challenges.append(event.challenge.value)
                if isinstance(event, Prompt):
                    prompt = event
            if was_prompted and not run.passed and (not guidance or guidance[0].code != NO_FACE):
                # While a challenge runs, its prompt is the instruction; pose guidance
                # ("look straight at the camera") would contradict a turn or a nod.
                guidance = ()
        ready = run is None or run.passed
        if ready and len(self.live_embeddings) >= self.limits.usable_frames_needed:
            self.verification = self._decide()
            return FrameResult(index, (), finding, self.verification, prompt)
        result = FrameResult(index, guidance, finding, None, prompt)
        return self._maybe_give_up(result)

    def _decode(self, frame: Frame) -> BgrImage:
        limits = self.rules.image_limits
        if frame.pixel_format == "encoded":
            return decode_image(frame.data, limits)
        return decode_raw_frame(frame.data, frame.width, frame.height, frame.pixel_format, limits)

    @staticmethod
    def _guidance_for(error: Undecidable | None, finding: FaceFinding | None) -> tuple[Guidance, ...]:
        """Guidance from the finding's failed quality checks, else from the detection error."""
        if finding is not None and finding.quality:
            codes = dict.fromkeys(q.code for q in finding.quality if not q.passed)
            return tuple(Guidance(code, guidance_message(code)) for code in codes)
        code = ONLY_ONE_PERSON if isinstance(error, MultipleFaces) else NO_FACE
        return (Guidance(code, guidance_message(code)),)

    def _maybe_give_up(self, result: FrameResult) -> FrameResult:
        if self.frames_seen < self.limits.max_frames:
            return result
        self.verification = self._result(
            Decision.RETRY, "no_usable_live_frames", None,
            f"no usable face in {self.frames_seen} frames" + quality.commonest_refusal(self.findings),
        )
        return FrameResult(result.frame_index, result.guidance, result.finding, self.verification)

    def _liveness_failed(self, index: int, finding: FaceFinding | None, failure: ChallengeFailed) -> FrameResult:
        outcome = LivenessOutcome(
            LivenessStatus.FAILED, failure.check, self._passive_score(), tuple(self.passed_challenges)
        )
        self.verification = self._result(Decision.RETRY, LIVENESS_FAILED, None, failure.message, outcome)
        return FrameResult(index, (), finding, self.verification)

    def _passive_score(self) -> float | None:
        return min(self.passive_scores) if self.passive_scores else None

    def _decide(self) -> Verification:
        with self.timer.stage("compare"):
            probe = self.scratch.keep(fuse_embeddings(self.live_embeddings))
            similarity = cosine_similarity(self.reference, probe)
        outcome = LivenessOutcome()
        if self.challenge_run is not None or self.passive_scores:
            outcome = LivenessOutcome(
                LivenessStatus.PASSED, "", self._passive_score(), tuple(self.passed_challenges)
            )
        return self._result(decide(similarity, self.operating_point), "", similarity, "", outcome)

    def _result(
        self,
        decision: Decision,
        reason: str,
        similarity: float | None,
        message: str,
        liveness: LivenessOutcome | None = None,
    ) -> Verification:
        return conclude(
            decision, reason, similarity, self.operating_point, self.findings, self.model_versions, self.timer,
            message, liveness,
        )

    def close(self) -> None:
        self.scratch.wipe()
        self.live_embeddings.clear()
        self.reference = None

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_session(
    verifier: Verifier,
    id_photo: bytes,
    target_fmr: float | None = None,
    limits: SessionLimits = SessionLimits(),
    *,
    challenges: LivenessChallengeSettings | None = None,
    measurer: LandmarkMeasurer | None = None,
    plan: ChallengePlan | None = None,
    wipe_payload: bool = False,
) -> LiveSession:
    """A started session; if the ID photo is unusable, ``session.done`` is already true.

    ``challenges`` defaults to the verifier's settings. ``measurer`` and ``plan`` replace
    the face-mesh measures and the random plan: only tests pass them. ``wipe_payload``
    zeroes ``id_photo`` as soon as it is decoded (for a caller that owns the bytes alone).
    """
    session = LiveSession(
        verifier,
        verifier.operating_point(target_fmr),
        limits,
        challenges or verifier.settings.liveness_challenge,
        measurer,
        plan,
    )
    try:
        session.start(id_photo, wipe_payload=wipe_payload)
    except BaseException:
        session.close()
        raise
    return session
