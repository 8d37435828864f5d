from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consent(_message.Message):
    __slots__ = ("granted", "text_version")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    text_version: str
    def __init__(self, granted: _Optional[bool] = ..., text_version: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("request_id", "id_photo", "live_photos", "consent", "target_fmr", "device_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ID_PHOTO_FIELD_NUMBER: _ClassVar[int]
    LIVE_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    id_photo: bytes
    live_photos: _containers.RepeatedScalarFieldContainer[bytes]
    consent: Consent
    target_fmr: float
    device_id: str
    def __init__(self, request_id: _Optional[str] = ..., id_photo: _Optional[bytes] = ..., live_photos: _Optional[_Iterable[bytes]] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ..., target_fmr: _Optional[float] = ..., device_id: _Optional[str] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("request_id", "decision", "retry_reason", "message", "similarity", "threshold", "target_fmr", "findings", "model_versions", "timings_ms", "audit_id", "liveness", "receipt", "receipt_signature")
    class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DECISION_UNSPECIFIED: _ClassVar[VerifyResponse.Decision]
        MATCH: _ClassVar[VerifyResponse.Decision]
        NO_MATCH: _ClassVar[VerifyResponse.Decision]
        RETRY: _ClassVar[VerifyResponse.Decision]
    DECISION_UNSPECIFIED: VerifyResponse.Decision
    MATCH: VerifyResponse.Decision
    NO_MATCH: VerifyResponse.Decision
    RETRY: VerifyResponse.Decision
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RETRY_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    LIVENESS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    decision: VerifyResponse.Decision
    retry_reason: str
    message: str
    similarity: float
    threshold: float
    target_fmr: float
    findings: _containers.RepeatedCompositeFieldContainer[FaceFinding]
    model_versions: _containers.ScalarMap[str, str]
    timings_ms: _containers.ScalarMap[str, float]
    audit_id: str
    liveness: LivenessOutcome
    receipt: bytes
    receipt_signature: bytes
    def __init__(self, request_id: _Optional[str] = ..., decision: _Optional[_Union[VerifyResponse.Decision, str]] = ..., retry_reason: _Optional[str] = ..., message: _Optional[str] = ..., similarity: _Optional[float] = ..., threshold: _Optional[float] = ..., target_fmr: _Optional[float] = ..., findings: _Optional[_Iterable[_Union[FaceFinding, _Mapping]]] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., audit_id: _Optional[str] = ..., liveness: _Optional[_Union[LivenessOutcome, _Mapping]] = ..., receipt: _Optional[bytes] = ..., receipt_signature: _Optional[bytes] = ...) -> None: ...

class FaceFinding(_message.Message):
    __slots__ = ("role", "index", "face_found", "box", "detection_score", "quality")
    class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ROLE_UNSPECIFIED: _ClassVar[FaceFinding.Role]
        ID_PHOTO: _ClassVar[FaceFinding.Role]
        LIVE_FRAME: _ClassVar[FaceFinding.Role]
    ROLE_UNSPECIFIED: FaceFinding.Role
    ID_PHOTO: FaceFinding.Role
    LIVE_FRAME: FaceFinding.Role
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FACE_FOUND_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    role: FaceFinding.Role
    index: int
    face_found: bool
    box: Box
    detection_score: float
    quality: _containers.RepeatedCompositeFieldContainer[QualityCheck]
    def __init__(self, role: _Optional[_Union[FaceFinding.Role, str]] = ..., index: _Optional[int] = ..., face_found: _Optional[bool] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., detection_score: _Optional[float] = ..., quality: _Optional[_Iterable[_Union[QualityCheck, _Mapping]]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ...) -> None: ...

class QualityCheck(_message.Message):
    __slots__ = ("check", "value", "limit", "passed", "code")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    check: str
    value: float
    limit: float
    passed: bool
    code: str
    def __init__(self, check: _Optional[str] = ..., value: _Optional[float] = ..., limit: _Optional[float] = ..., passed: _Optional[bool] = ..., code: _Optional[str] = ...) -> None: ...

class LivenessOutcome(_message.Message):
    __slots__ = ("status", "failed_check", "passive_score", "established")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[LivenessOutcome.Status]
        NOT_PERFORMED: _ClassVar[LivenessOutcome.Status]
        PASSED: _ClassVar[LivenessOutcome.Status]
        FAILED: _ClassVar[LivenessOutcome.Status]
    STATUS_UNSPECIFIED: LivenessOutcome.Status
    NOT_PERFORMED: LivenessOutcome.Status
    PASSED: LivenessOutcome.Status
    FAILED: LivenessOutcome.Status
    class Established(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ESTABLISHED_UNSPECIFIED: _ClassVar[LivenessOutcome.Established]
        NOTHING: _ClassVar[LivenessOutcome.Established]
        PASSIVE_STILLS: _ClassVar[LivenessOutcome.Established]
        ACTIVE_SESSION: _ClassVar[LivenessOutcome.Established]
    ESTABLISHED_UNSPECIFIED: LivenessOutcome.Established
    NOTHING: LivenessOutcome.Established
    PASSIVE_STILLS: LivenessOutcome.Established
    ACTIVE_SESSION: LivenessOutcome.Established
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECK_FIELD_NUMBER: _ClassVar[int]
    PASSIVE_SCORE_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    status: LivenessOutcome.Status
    failed_check: str
    passive_score: float
    established: LivenessOutcome.Established
    def __init__(self, status: _Optional[_Union[LivenessOutcome.Status, str]] = ..., failed_check: _Optional[str] = ..., passive_score: _Optional[float] = ..., established: _Optional[_Union[LivenessOutcome.Established, str]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("start", "frame")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    start: SessionStart
    frame: CameraFrame
    def __init__(self, start: _Optional[_Union[SessionStart, _Mapping]] = ..., frame: _Optional[_Union[CameraFrame, _Mapping]] = ...) -> None: ...

class SessionStart(_message.Message):
    __slots__ = ("request_id", "id_photo", "consent", "target_fmr", "device_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ID_PHOTO_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    id_photo: bytes
    consent: Consent
    target_fmr: float
    device_id: str
    def __init__(self, request_id: _Optional[str] = ..., id_photo: _Optional[bytes] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ..., target_fmr: _Optional[float] = ..., device_id: _Optional[str] = ...) -> None: ...

class CameraFrame(_message.Message):
    __slots__ = ("encoded", "raw", "timestamp_ms", "challenge_nonce")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_NONCE_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawImage
    timestamp_ms: int
    challenge_nonce: str
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ..., timestamp_ms: _Optional[int] = ..., challenge_nonce: _Optional[str] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("data", "width", "height", "pixel_format")
    class PixelFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PIXEL_FORMAT_UNSPECIFIED: _ClassVar[RawImage.PixelFormat]
        BGR: _ClassVar[RawImage.PixelFormat]
        NV12: _ClassVar[RawImage.PixelFormat]
    PIXEL_FORMAT_UNSPECIFIED: RawImage.PixelFormat
    BGR: RawImage.PixelFormat
    NV12: RawImage.PixelFormat
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    width: int
    height: int
    pixel_format: RawImage.PixelFormat
    def __init__(self, data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., pixel_format: _Optional[_Union[RawImage.PixelFormat, str]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("guidance", "frame_result", "prompt", "decision")
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    FRAME_RESULT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    guidance: Guidance
    frame_result: FrameResult
    prompt: ChallengePrompt
    decision: VerifyResponse
    def __init__(self, guidance: _Optional[_Union[Guidance, _Mapping]] = ..., frame_result: _Optional[_Union[FrameResult, _Mapping]] = ..., prompt: _Optional[_Union[ChallengePrompt, _Mapping]] = ..., decision: _Optional[_Union[VerifyResponse, _Mapping]] = ...) -> None: ...

class Guidance(_message.Message):
    __slots__ = ("frame_index", "items")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    items: _containers.RepeatedCompositeFieldContainer[GuidanceItem]
    def __init__(self, frame_index: _Optional[int] = ..., items: _Optional[_Iterable[_Union[GuidanceItem, _Mapping]]] = ...) -> None: ...

class GuidanceItem(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("frame_index", "finding")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    FINDING_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    finding: FaceFinding
    def __init__(self, frame_index: _Optional[int] = ..., finding: _Optional[_Union[FaceFinding, _Mapping]] = ...) -> None: ...

class ChallengePrompt(_message.Message):
    __slots__ = ("challenge", "nonce", "deadline_ms", "step", "message")
    class Challenge(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CHALLENGE_UNSPECIFIED: _ClassVar[ChallengePrompt.Challenge]
        BLINK: _ClassVar[ChallengePrompt.Challenge]
        TURN_LEFT: _ClassVar[ChallengePrompt.Challenge]
        TURN_RIGHT: _ClassVar[ChallengePrompt.Challenge]
        OPEN_MOUTH: _ClassVar[ChallengePrompt.Challenge]
        NOD: _ClassVar[ChallengePrompt.Challenge]
    CHALLENGE_UNSPECIFIED: ChallengePrompt.Challenge
    BLINK: ChallengePrompt.Challenge
    TURN_LEFT: ChallengePrompt.Challenge
    TURN_RIGHT: ChallengePrompt.Challenge
    OPEN_MOUTH: ChallengePrompt.Challenge
    NOD: ChallengePrompt.Challenge
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    challenge: ChallengePrompt.Challenge
    nonce: str
    deadline_ms: int
    step: int
    message: str
    def __init__(self, challenge: _Optional[_Union[ChallengePrompt.Challenge, str]] = ..., nonce: _Optional[str] = ..., deadline_ms: _Optional[int] = ..., step: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("service_version", "model_versions", "operating_points", "default_target_fmr", "hardware_profile", "limits", "device_id", "accepted_consent_versions", "swap_active", "core_dumps_disabled", "runtime_versions", "calibration_created", "board_model", "receipt_public_key", "receipt_key_ephemeral", "memory_locked", "chip_operating_points")
    class ModelVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RuntimeVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    OPERATING_POINTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_CONSENT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SWAP_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CORE_DUMPS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_CREATED_FIELD_NUMBER: _ClassVar[int]
    BOARD_MODEL_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_KEY_EPHEMERAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LOCKED_FIELD_NUMBER: _ClassVar[int]
    CHIP_OPERATING_POINTS_FIELD_NUMBER: _ClassVar[int]
    service_version: str
    model_versions: _containers.ScalarMap[str, str]
    operating_points: _containers.RepeatedCompositeFieldContainer[OperatingPoint]
    default_target_fmr: float
    hardware_profile: str
    limits: Limits
    device_id: str
    accepted_consent_versions: _containers.RepeatedScalarFieldContainer[str]
    swap_active: bool
    core_dumps_disabled: bool
    runtime_versions: _containers.ScalarMap[str, str]
    calibration_created: str
    board_model: str
    receipt_public_key: str
    receipt_key_ephemeral: bool
    memory_locked: bool
    chip_operating_points: _containers.RepeatedCompositeFieldContainer[OperatingPoint]
    def __init__(self, service_version: _Optional[str] = ..., model_versions: _Optional[_Mapping[str, str]] = ..., operating_points: _Optional[_Iterable[_Union[OperatingPoint, _Mapping]]] = ..., default_target_fmr: _Optional[float] = ..., hardware_profile: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., device_id: _Optional[str] = ..., accepted_consent_versions: _Optional[_Iterable[str]] = ..., swap_active: _Optional[bool] = ..., core_dumps_disabled: _Optional[bool] = ..., runtime_versions: _Optional[_Mapping[str, str]] = ..., calibration_created: _Optional[str] = ..., board_model: _Optional[str] = ..., receipt_public_key: _Optional[str] = ..., receipt_key_ephemeral: _Optional[bool] = ..., memory_locked: _Optional[bool] = ..., chip_operating_points: _Optional[_Iterable[_Union[OperatingPoint, _Mapping]]] = ...) -> None: ...

class OperatingPoint(_message.Message):
    __slots__ = ("target_fmr", "threshold")
    TARGET_FMR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    target_fmr: float
    threshold: float
    def __init__(self, target_fmr: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_image_bytes", "max_image_pixels", "max_image_side", "max_live_photos", "max_concurrent_calls", "call_deadline_s", "session_deadline_s")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_SIDE_FIELD_NUMBER: _ClassVar[int]
    MAX_LIVE_PHOTOS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_CALLS_FIELD_NUMBER: _ClassVar[int]
    CALL_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    SESSION_DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_image_bytes: int
    max_image_pixels: int
    max_image_side: int
    max_live_photos: int
    max_concurrent_calls: int
    call_deadline_s: float
    session_deadline_s: float
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_image_side: _Optional[int] = ..., max_live_photos: _Optional[int] = ..., max_concurrent_calls: _Optional[int] = ..., call_deadline_s: _Optional[float] = ..., session_deadline_s: _Optional[float] = ...) -> None: ...
