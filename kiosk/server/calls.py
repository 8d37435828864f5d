"""What a call asks for and what a live session streams back, in domain terms.

``convert`` builds these from protobuf messages on the server and the other way round
in the client, so neither the servicer nor the client reads a protobuf field itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.domain import FaceFinding, Guidance, Prompt, Verification


@dataclass(frozen=True)
class Consent:
    granted: bool
    text_version: str


@dataclass(frozen=True)
class CallMeta:
    """Everything about a verification request except the images."""

    request_id: str
    device_id: str
    consent: Consent
    # None means the service's default operating point.
    target_fmr: float | None


@dataclass(frozen=True)
class VerifyCall:
    meta: CallMeta
    id_photo: bytes
    live_photos: tuple[bytes, ...]


@dataclass(frozen=True)
class SessionOpening:
    """The first message of a live session."""

    meta: CallMeta
    id_photo: bytes


@dataclass(frozen=True)
class GuidanceEvent:
    """What the kiosk should tell the person after frame ``frame_index``."""

    frame_index: int
    guidance: tuple[Guidance, ...]


@dataclass(frozen=True)
class FrameEvent:
    """The finding of one analysed frame (None when nothing could be analysed)."""

    frame_index: int
    finding: FaceFinding | None


@dataclass(frozen=True)
class PromptEvent:
    """A liveness challenge the person must now perform; frames answering it echo ``prompt.nonce``."""

    prompt: Prompt


@dataclass(frozen=True)
class DecisionEvent:
    """The session's outcome: always its last event."""

    verification: Verification
    audit_id: str
    # The decision's signed receipt (kiosk.receipts.SignedReceipt), None from a server without receipts.
    receipt: object = None


SessionUpdate = GuidanceEvent | FrameEvent | PromptEvent | DecisionEvent
