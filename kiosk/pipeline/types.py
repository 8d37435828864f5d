"""Domain types passed between stages and returned to callers.

Array aliases name what an array means; the shape and dtype are in the comment beside
each. Results returned to callers never hold an image, a crop or an embedding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kiosk.outcomes import DECISION_MESSAGES

BgrImage = npt.NDArray[np.uint8]  # (H, W, 3) uint8, OpenCV channel order
Landmarks5 = npt.NDArray[np.float32]  # (5, 2) float32 x, y: left eye, right eye, nose, mouth left, mouth right
AlignedFace = npt.NDArray[np.uint8]  # (112, 112, 3) uint8 BGR, ArcFace template geometry
Embedding = npt.NDArray[np.float32]  # (D,) float32, L2-normalised


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
class FaceDetection:
    box: Box
    score: float
    landmarks: Landmarks5  # not returned to callers: geometry of a face, used only inside a request


@dataclass(frozen=True)
class QualityFinding:
    """One quality check of one face: ``code`` is a stable guidance code when it failed."""

    check: str
    value: float
    limit: float
    passed: bool
    code: str = ""


@dataclass(frozen=True)
class EyeOpenness:
    """How open each eye of one face looks: fr_eye's P(open) per eye, 0..1."""

    # The subject's own right eye (the image-left one in an unmirrored frame) and left eye.
    right: float
    left: float


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
