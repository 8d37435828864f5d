"""Domain types that cross the wire: decisions, findings, frames, guidance, prompts.

Standard library only. The gRPC client, the converters and the CLI's remote commands
import these without loading the inference stack (numpy, OpenCV, ONNX Runtime);
``kiosk.pipeline.types`` re-exports them beside the array types the pipeline uses
inside a request. Results returned to callers never hold an image, a crop or an
embedding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from kiosk.outcomes import DECISION_MESSAGES


class Decision(enum.Enum):
    MATCH = "match"
    NO_MATCH = "no_match"
    RETRY = "retry"


class ImageRole(enum.Enum):
    ID_PHOTO = "id_photo"
    LIVE_FRAME = "live_frame"


@dataclass(frozen=True)
class Box:
    """Axis-aligned face box in pixels of the decoded image."""

    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class QualityFinding:
    """One quality check of one face: ``code`` is a stable guidance code when it failed."""

    check: str
    value: float
    limit: float
    passed: bool
    code: str = ""


@dataclass(frozen=True)
class FaceFinding:
    """What was found in one image, safe to return (no pixels, no landmarks, no embedding)."""

    role: ImageRole
    index: int
    face_found: bool
    box: Box | None = None
    detection_score: float = 0.0
    quality: tuple[QualityFinding, ...] = ()


@dataclass(frozen=True)
class OperatingPoint:
    target_fmr: float
    threshold: float


class LivenessStatus(enum.Enum):
    NOT_PERFORMED = "not_performed"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class LivenessOutcome:
    """Presentation-attack checks of a verification: which ran, and which one failed."""

    status: LivenessStatus = LivenessStatus.NOT_PERFORMED
    # Stable name of the failed check (FAILED only), e.g. "challenge_timeout".
    failed_check: str = ""
    # Lowest passive (single-frame) liveness score over the frames, when that model ran.
    passive_score: float | None = None
    # The active challenges passed, in the order they were asked for.
    challenges_passed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verification:
    """Outcome of one ID photo vs live photo(s) comparison."""

    decision: Decision
    # Stable snake_case code: "" for MATCH/NO_MATCH, else why no decision was possible.
    reason: str
    similarity: float | None
    operating_point: OperatingPoint
    findings: tuple[FaceFinding, ...]
    model_versions: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    message: str = ""
    liveness: LivenessOutcome = field(default_factory=LivenessOutcome)

    def __post_init__(self) -> None:
        # Every decision carries a message a kiosk may show: a MATCH or NO_MATCH made
        # anywhere (Verify, session, a client's copy) gets the one from kiosk.outcomes.
        if not self.message and self.decision is not Decision.RETRY:
            object.__setattr__(self, "message", DECISION_MESSAGES[self.decision.value])


class Challenge(enum.Enum):
    """The active-liveness challenges; each has its rule in ``kiosk.pipeline.challenge.RULES``."""

    BLINK = "blink"
    # Turn to the subject's own left / right.
    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    OPEN_MOUTH = "open_mouth"
    NOD = "nod"


@dataclass(frozen=True)
class Prompt:
    """Ask for step ``step``; it must be done by frame time ``deadline_ms``."""

    step: int
    challenge: Challenge
    nonce: str
    deadline_ms: int
    window_ms: int
    # What the kiosk shows the person, e.g. "Blink once".
    message: str = ""


@dataclass(frozen=True)
class Frame:
    """One camera frame: encoded (``pixel_format`` "encoded") or raw "bgr" / "nv12"."""

    data: bytes
    timestamp_ms: int
    pixel_format: str = "encoded"
    width: int = 0
    height: int = 0
    # Nonce of the latest challenge prompt the kiosk had when it captured the frame.
    challenge_nonce: str = ""


@dataclass(frozen=True)
class Guidance:
    code: str
    message: str


@dataclass(frozen=True)
class FrameResult:
    """What one frame produced: guidance, a challenge prompt, and the decision when the session ends."""

    frame_index: int
    guidance: tuple[Guidance, ...]
    finding: FaceFinding | None
    verification: Verification | None = None
    prompt: Prompt | None = None
