"""A live verification session: the ID photo once, then camera frames until a decision.

The ID-photo embedding is computed once and held only in the session's scratch. Each
frame yields guidance the kiosk UI can show (no face, move closer, hold still, ...);
once enough usable frames are in, their fused embedding is compared and the session
ends with a decision. Closing the session wipes everything it held.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.errors import InvalidRequest, Undecidable
from kiosk.pipeline.compare import cosine_similarity, fuse_embeddings
from kiosk.pipeline.decode import decode_image, decode_raw_frame
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.types import Decision, Embedding, FaceFinding, ImageRole, OperatingPoint, Verification
from kiosk.pipeline.verifier import AnalysedFace, Verifier, decide

# Guidance codes for capture problems that are not quality findings.
NO_FACE = "NO_FACE"
ONLY_ONE_PERSON = "ONLY_ONE_PERSON"
GOOD_FRAME = "GOOD_FRAME"

_MESSAGES = {
    NO_FACE: "No face found: look at the camera",
    ONLY_ONE_PERSON: "Only the person registering should be in front of the camera",
    GOOD_FRAME: "Hold still",
    "MOVE_CLOSER": "Move closer to the camera",
    "MOVE_BACK": "Move back from the camera",
    "FACE_THE_CAMERA": "Look straight at the camera",
    "HOLD_STILL": "Hold still",
    "TOO_DARK": "Too dark: find more light",
    "TOO_BRIGHT": "Too bright: avoid direct light",
    "OPEN_EYES": "Keep your eyes open",
}


def guidance_message(code: str) -> str:
    return _MESSAGES.get(code, code.replace("_", " ").capitalize())


@dataclass(frozen=True)
class Frame:
    """One camera frame: encoded (``pixel_format`` "encoded") or raw "bgr" / "nv12"."""

    data: bytes
    timestamp_ms: int
    pixel_format: str = "encoded"
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class Guidance:
    code: str
    message: str


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: guidance for the UI, and the decision when the session ends."""

    frame_index: int
    guidance: tuple[Guidance, ...]
    finding: FaceFinding | None
    verification: Verification | None = None


@dataclass(frozen=True)
class SessionLimits:
    usable_frames_needed: int = 3
    max_frames: int = 300


class LiveSession:
    """Use as ``with verifier.open_session(id_photo) as session: session.add_frame(frame)``."""

    def __init__(self, verifier: Verifier, operating_point: OperatingPoint, limits: SessionLimits):
        self.verifier = verifier
        self.operating_point = operating_point
        self.limits = limits
        self.scratch = Scratch()
        self.timer = StageTimer()
        self.findings: list[FaceFinding] = []
        self.reference: AnalysedFace | None = None
        self.live_embeddings: list[Embedding] = []
        self.frames_seen = 0
        self.last_timestamp_ms: int | None = None
        self.verification: Verification | None = None

    @property
    def done(self) -> bool:
        return self.verification is not None

    def start(self, id_photo: bytes) -> Verification | None:
        """Analyse the ID photo; returns a RETRY verification (session over) if it is unusable."""
        try:
            self.reference = self.verifier.analyse(
                self.scratch, id_photo, ImageRole.ID_PHOTO, 0, self.findings, self.timer
            )
        except Undecidable as e:
            self.verification = self._result(Decision.RETRY, e.reason, None, e.message)
        return self.verification

    def add_frame(self, frame: Frame) -> FrameResult:
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
        with self.timer.stage("decode"):
            image = self.scratch.keep(self._decode(frame))
        frame_findings: list[FaceFinding] = []
        try:
            face = self.verifier.analyse_image(
                self.scratch, image, ImageRole.LIVE_FRAME, index, frame_findings, self.timer
            )
        except Undecidable as e:
            finding = frame_findings[-1] if frame_findings else None
            result = FrameResult(index, self._guidance_for(e, finding), finding)
            return self._maybe_give_up(result)
        finally:
            # Only the latest frame's pixels are needed; wipe them now rather than at session end.
            image.fill(0)
        self.live_embeddings.append(face.embedding)
        self.findings.append(face.finding)
        if len(self.live_embeddings) >= self.limits.usable_frames_needed:
            self.verification = self._decide()
            return FrameResult(index, (), face.finding, self.verification)
        return FrameResult(index, (Guidance(GOOD_FRAME, guidance_message(GOOD_FRAME)),), face.finding)

    def _decode(self, frame: Frame):
        limits = self.verifier.image_limits
        if frame.pixel_format == "encoded":
            return decode_image(frame.data, limits)
        return decode_raw_frame(frame.data, frame.width, frame.height, frame.pixel_format, limits)

    @staticmethod
    def _guidance_for(error: Undecidable, finding: FaceFinding | None) -> tuple[Guidance, ...]:
        if finding is not None and finding.quality:
            codes = dict.fromkeys(q.code for q in finding.quality if not q.passed)
            return tuple(Guidance(code, guidance_message(code)) for code in codes)
        code = ONLY_ONE_PERSON if error.reason.startswith("multiple_faces") else NO_FACE
        return (Guidance(code, guidance_message(code)),)

    def _maybe_give_up(self, result: FrameResult) -> FrameResult:
        if self.frames_seen < self.limits.max_frames:
            return result
        self.verification = self._result(
            Decision.RETRY, "no_usable_live_frames", None, f"no usable face in {self.frames_seen} frames"
        )
        return FrameResult(result.frame_index, result.guidance, result.finding, self.verification)

    def _decide(self) -> Verification:
        with self.timer.stage("compare"):
            probe = self.scratch.keep(fuse_embeddings(self.live_embeddings))
            similarity = cosine_similarity(self.reference.embedding, probe)
        return self._result(decide(similarity, self.operating_point), "", similarity, "")

    def _result(self, decision: Decision, reason: str, similarity: float | None, message: str) -> Verification:
        return Verification(
            decision=decision,
            reason=reason,
            similarity=similarity,
            operating_point=self.operating_point,
            findings=tuple(self.findings),
            model_versions=dict(self.verifier.model_versions),
            timings_ms=self.timer.as_dict(),
            message=message,
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
    verifier: Verifier, id_photo: bytes, target_fmr: float | None = None, limits: SessionLimits = SessionLimits()
) -> LiveSession:
    """A started session; if the ID photo is unusable, ``session.done`` is already true."""
    session = LiveSession(verifier, verifier.operating_point(target_fmr), limits)
    try:
        session.start(id_photo)
    except BaseException:
        session.close()
        raise
    return session
