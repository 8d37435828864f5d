"""Typed errors of the verification service.

Each error carries the name of the gRPC status code it maps to, so the one mapping in
``kiosk.server.status`` needs no table of its own and the core never imports grpc.
Messages are safe to show a client: they never contain image bytes, scores of a
person, or stack traces.
"""

from __future__ import annotations


class KioskError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(KioskError):
    """Settings, profile or calibration file is malformed; raised at start-up."""

    status_code = "FAILED_PRECONDITION"


class ModelIntegrityError(KioskError):
    """A model file is missing or its SHA-256 differs from the manifest."""

    status_code = "FAILED_PRECONDITION"


class ModelFailure(KioskError):
    """ONNX Runtime failed during inference."""

    status_code = "INTERNAL"


class InvalidImage(KioskError):
    """The bytes are not an acceptable image (format, size, corruption)."""

    status_code = "INVALID_ARGUMENT"


class InvalidRequest(KioskError):
    """The request is malformed in a way that is not about an image."""

    status_code = "INVALID_ARGUMENT"


class UnknownOperatingPoint(InvalidRequest):
    """The requested target FMR has no calibrated threshold."""


class ConsentRequired(KioskError):
    """No consent, or consent to a text version the service does not know."""

    status_code = "FAILED_PRECONDITION"


class Cancelled(KioskError):
    """The client cancelled the call (or went away): the work stops at the next stage."""

    status_code = "CANCELLED"


class ActiveSessionRequired(KioskError):
    """The service takes only live sessions with active challenges from this caller."""

    status_code = "FAILED_PRECONDITION"


class Overloaded(KioskError):
    """Concurrency or rate limit reached; the client may retry later."""

    status_code = "RESOURCE_EXHAUSTED"


class RateLimited(Overloaded):
    """The client's own call rate is exhausted; a call is admitted again after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int):
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class DeadlineExceeded(KioskError):
    """The call ran past its server-side deadline."""

    status_code = "DEADLINE_EXCEEDED"


class Undecidable(KioskError):
    """A capture problem that makes a decision impossible; becomes a RETRY, not a status.

    ``reason`` is a stable snake_case code the kiosk UI and the CLI show
    (``no_face_in_id_photo``, ``multiple_faces_in_live_frame``, ``low_quality`` ...).
    """

    status_code = "OK"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class NoFace(Undecidable):
    """No face was found in an image."""


class MultipleFaces(Undecidable):
    """A live photo shows a second face of comparable size."""


class LowQuality(Undecidable):
    """A face was found but is unusable (too small, blurred, dark, turned away)."""
