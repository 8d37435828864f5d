"""Protobuf <-> domain types, in both directions: the only module that touches both.

The server turns requests into ``kiosk.server.calls`` types and domain results into
responses; the client does the reverse, so ``kiosk verify --server`` rebuilds the same
``Verification`` the in-process pipeline returns. Request fields are validated here,
where they are read: a malformed request is an ``InvalidRequest`` before any image is
touched. Nothing biometric is ever written into a response: the domain results have
no field for it.
"""

from __future__ import annotations

import math

from kiosk.errors import InvalidRequest, KioskError
from kiosk.domain import (
    Box,
    Challenge,
    Decision,
    FaceFinding,
    Frame,
    FrameResult,
    Guidance,
    ImageRole,
    LivenessOutcome,
    LivenessStatus,
    OperatingPoint,
    Prompt,
    QualityFinding,
    Verification,
)
from kiosk.server.calls import (
    CallMeta,
    Consent,
    DecisionEvent,
    FrameEvent,
    GuidanceEvent,
    PromptEvent,
    SessionOpening,
    SessionUpdate,
    VerifyCall,
)
from kiosk.server.info import ServiceInfo, ServiceLimits
from kiosk.v1 import kiosk_pb2 as pb

# Long enough for a UUID or a kiosk serial; the audit trail stores these verbatim.
MAX_ID_CHARS = 128

_DECISIONS = {
    Decision.MATCH: pb.VerifyResponse.MATCH,
    Decision.NO_MATCH: pb.VerifyResponse.NO_MATCH,
    Decision.RETRY: pb.VerifyResponse.RETRY,
}
_ROLES = {ImageRole.ID_PHOTO: pb.FaceFinding.ID_PHOTO, ImageRole.LIVE_FRAME: pb.FaceFinding.LIVE_FRAME}
_PIXEL_FORMATS = {"bgr": pb.RawImage.BGR, "nv12": pb.RawImage.NV12}
_DECISIONS_FROM_PROTO = {v: k for k, v in _DECISIONS.items()}
_ROLES_FROM_PROTO = {v: k for k, v in _ROLES.items()}
_PIXEL_FORMATS_FROM_PROTO = {v: k for k, v in _PIXEL_FORMATS.items()}
# By name: a new challenge is a proto enum value of the same name, nothing here.
_CHALLENGES = {challenge: pb.ChallengePrompt.Challenge.Value(challenge.name) for challenge in Challenge}
_CHALLENGES_FROM_PROTO = {v: k for k, v in _CHALLENGES.items()}
_LIVENESS = {
    LivenessStatus.NOT_PERFORMED: pb.LivenessOutcome.NOT_PERFORMED,
    LivenessStatus.PASSED: pb.LivenessOutcome.PASSED,
    LivenessStatus.FAILED: pb.LivenessOutcome.FAILED,
}
_LIVENESS_FROM_PROTO = {v: k for k, v in _LIVENESS.items()}
# Server nonces are 16 hex digits; anything much longer is not an echo of one.
MAX_NONCE_CHARS = 64
# Frame times are milliseconds on the kiosk's clock (monotonic or since the epoch: about
# 1.8e12 today). The largest integer a double holds exactly (JavaScript clients) leaves
# room for every deadline the server derives from a timestamp (timestamp + a challenge
# window) within int64, which a prompt's deadline_ms must fit on the way back.
MAX_TIMESTAMP_MS = 2**53 - 1


# --------------------------------------------------------------------------- requests


def _bounded_text(name: str, value: str) -> str:
    if len(value) > MAX_ID_CHARS:
        raise InvalidRequest(f"{name} is {len(value)} characters; at most {MAX_ID_CHARS} are allowed")
    return value


def _target_fmr(message: pb.VerifyRequest | pb.SessionStart) -> float | None:
    if not message.HasField("target_fmr") or message.target_fmr == 0:
        return None
    value = message.target_fmr
    if not math.isfinite(value) or not 0 < value < 1:
        raise InvalidRequest(f"target_fmr must be between 0 and 1 (exclusive), got {value:g}")
    return value


def _meta_from_proto(message: pb.VerifyRequest | pb.SessionStart) -> CallMeta:
    return CallMeta(
        request_id=_bounded_text("request_id", message.request_id),
        device_id=_bounded_text("device_id", message.device_id),
        consent=Consent(message.consent.granted, message.consent.text_version),
        target_fmr=_target_fmr(message),
    )


def _meta_fields(meta: CallMeta) -> dict:
    fields = {
        "request_id": meta.request_id,
        "device_id": meta.device_id,
        "consent": pb.Consent(granted=meta.consent.granted, text_version=meta.consent.text_version),
    }
    if meta.target_fmr is not None:
        fields["target_fmr"] = meta.target_fmr
    return fields


def verify_call_from_proto(request: pb.VerifyRequest, max_live_photos: int) -> VerifyCall:
    # Counted before any photo is copied out of the message: millions of empty entries
    # fit in one message and must not become millions of Python objects.
    count = len(request.live_photos)
    if count > max_live_photos:
        raise InvalidRequest(f"{count} live photos given, at most {max_live_photos} are accepted")
    if not count:
        raise InvalidRequest("at least one live photo is required")
    # Each field access is a new copy of the bytes: read each photo once.
    id_photo = request.id_photo
    if not id_photo:
        raise InvalidRequest("the request has no id_photo")
    live_photos = tuple(request.live_photos)
    for index, photo in enumerate(live_photos):
        if not photo:
            raise InvalidRequest(f"live_photos[{index}] is empty")
    return VerifyCall(_meta_from_proto(request), id_photo, live_photos)


def verify_call_to_proto(call: VerifyCall) -> pb.VerifyRequest:
    return pb.VerifyRequest(id_photo=call.id_photo, live_photos=call.live_photos, **_meta_fields(call.meta))


def session_opening_from_proto(message: pb.SessionRequest | None) -> SessionOpening:
    if message is None:
        raise InvalidRequest("the session stream ended before its start message")
    kind = message.WhichOneof("kind")
    if kind != "start":
        raise InvalidRequest(f"the first message of a session must be start, not {kind or 'an empty message'}")
    id_photo = message.start.id_photo
    if not id_photo:
        raise InvalidRequest("the session's start message has no id_photo")
    return SessionOpening(_meta_from_proto(message.start), id_photo)


def session_opening_to_proto(opening: SessionOpening) -> pb.SessionRequest:
    return pb.SessionRequest(start=pb.SessionStart(id_photo=opening.id_photo, **_meta_fields(opening.meta)))


def frame_from_proto(message: pb.SessionRequest) -> Frame:
    kind = message.WhichOneof("kind")
    if kind != "frame":
        raise InvalidRequest(
            "after start, a session takes only frames" if kind == "start" else "empty session message: no frame"
        )
    frame = message.frame
    image = frame.WhichOneof("image")
    nonce = frame.challenge_nonce
    if len(nonce) > MAX_NONCE_CHARS:
        raise InvalidRequest(f"challenge_nonce is {len(nonce)} characters; at most {MAX_NONCE_CHARS} are allowed")
    timestamp_ms = frame.timestamp_ms
    if not 0 <= timestamp_ms <= MAX_TIMESTAMP_MS:
        raise InvalidRequest(
            f"timestamp_ms must be between 0 and {MAX_TIMESTAMP_MS} (milliseconds), got {timestamp_ms}"
        )
    if image == "encoded":
        return Frame(frame.encoded, timestamp_ms, challenge_nonce=nonce)
    if image == "raw":
        pixel_format = _PIXEL_FORMATS_FROM_PROTO.get(frame.raw.pixel_format)
        if pixel_format is None:
            raise InvalidRequest("raw frame needs pixel_format BGR or NV12")
        raw = frame.raw
        return Frame(raw.data, timestamp_ms, pixel_format, raw.width, raw.height, challenge_nonce=nonce)
    raise InvalidRequest("frame has no image (neither encoded nor raw)")


def frame_to_proto(frame: Frame) -> pb.SessionRequest:
    stamps = {"timestamp_ms": frame.timestamp_ms, "challenge_nonce": frame.challenge_nonce}
    if frame.pixel_format == "encoded":
        camera = pb.CameraFrame(encoded=frame.data, **stamps)
    else:
        raw = pb.RawImage(
            data=frame.data,
            width=frame.width,
            height=frame.height,
            pixel_format=_PIXEL_FORMATS[frame.pixel_format],
        )
        camera = pb.CameraFrame(raw=raw, **stamps)
    return pb.SessionRequest(frame=camera)


# --------------------------------------------------------------------------- findings


def _finding_to_proto(finding: FaceFinding) -> pb.FaceFinding:
    message = pb.FaceFinding(
        role=_ROLES[finding.role],
        index=finding.index,
        face_found=finding.face_found,
        detection_score=finding.detection_score,
        quality=[
            pb.QualityCheck(check=q.check, value=q.value, limit=q.limit, passed=q.passed, code=q.code)
            for q in finding.quality
        ],
    )
    if finding.box is not None:
        box = finding.box
        message.box.CopyFrom(pb.Box(x=box.x, y=box.y, width=box.width, height=box.height))
    return message


def _finding_from_proto(message: pb.FaceFinding) -> FaceFinding:
    role = _ROLES_FROM_PROTO.get(message.role)
    if role is None:
        raise KioskError("the server sent a face finding without a role")
    box = message.box
    return FaceFinding(
        role=role,
        index=message.index,
        face_found=message.face_found,
        box=Box(box.x, box.y, box.width, box.height) if message.HasField("box") else None,
        detection_score=message.detection_score,
        quality=tuple(QualityFinding(q.check, q.value, q.limit, q.passed, q.code) for q in message.quality),
    )


# --------------------------------------------------------------------------- verification


def verification_to_proto(
    verification: Verification, request_id: str, audit_id: str, receipt=None
) -> pb.VerifyResponse:
    """``receipt``: the decision's ``kiosk.receipts.SignedReceipt``, if one was issued."""
    point = verification.operating_point
    response = pb.VerifyResponse(
        request_id=request_id,
        decision=_DECISIONS[verification.decision],
        retry_reason=verification.reason,
        message=verification.message,
        threshold=point.threshold,
        target_fmr=point.target_fmr,
        findings=[_finding_to_proto(f) for f in verification.findings],
        model_versions=verification.model_versions,
        timings_ms=verification.timings_ms,
        audit_id=audit_id,
        liveness=_liveness_to_proto(verification.liveness),
    )
    if verification.similarity is not None:
        response.similarity = verification.similarity
    if receipt is not None:
        response.receipt, response.receipt_signature = receipt.body, receipt.signature
    return response


def receipt_from_proto(response: pb.VerifyResponse):
    """The response's ``kiosk.receipts.SignedReceipt``, or None when the server sent none."""
    from kiosk.receipts import SignedReceipt  # stdlib only until a key is used

    if not response.receipt:
        return None
    return SignedReceipt(response.receipt, response.receipt_signature)


def established(liveness: LivenessOutcome) -> int:
    """What the liveness checks established: an active session, passive checks of stills, or nothing."""
    if liveness.status is not LivenessStatus.PASSED:
        return pb.LivenessOutcome.NOTHING
    if liveness.challenges_passed:
        return pb.LivenessOutcome.ACTIVE_SESSION
    return pb.LivenessOutcome.PASSIVE_STILLS


def _liveness_to_proto(liveness: LivenessOutcome) -> pb.LivenessOutcome:
    message = pb.LivenessOutcome(
        status=_LIVENESS[liveness.status], failed_check=liveness.failed_check, established=established(liveness)
    )
    if liveness.passive_score is not None:
        message.passive_score = liveness.passive_score
    return message


def _liveness_from_proto(message: pb.LivenessOutcome) -> LivenessOutcome:
    status = _LIVENESS_FROM_PROTO.get(message.status, LivenessStatus.NOT_PERFORMED)
    passive = message.passive_score if message.HasField("passive_score") else None
    return LivenessOutcome(status, message.failed_check, passive)


def verification_from_proto(response: pb.VerifyResponse) -> Verification:
    decision = _DECISIONS_FROM_PROTO.get(response.decision)
    if decision is None:
        raise KioskError("the server sent a response without a decision")
    return Verification(
        decision=decision,
        reason=response.retry_reason,
        similarity=response.similarity if response.HasField("similarity") else None,
        operating_point=OperatingPoint(response.target_fmr, response.threshold),
        findings=tuple(_finding_from_proto(f) for f in response.findings),
        model_versions=dict(response.model_versions),
        timings_ms=dict(response.timings_ms),
        message=response.message,
        liveness=_liveness_from_proto(response.liveness),
    )


# --------------------------------------------------------------------------- session events


def frame_events(result: FrameResult) -> list[pb.SessionEvent]:
    """A frame's finding, then its guidance if there is any; the decision is sent separately."""
    frame_result = pb.FrameResult(frame_index=result.frame_index)
    if result.finding is not None:
        frame_result.finding.CopyFrom(_finding_to_proto(result.finding))
    events = [pb.SessionEvent(frame_result=frame_result)]
    if result.guidance:
        items = [pb.GuidanceItem(code=g.code, message=g.message) for g in result.guidance]
        events.append(pb.SessionEvent(guidance=pb.Guidance(frame_index=result.frame_index, items=items)))
    if result.prompt is not None:
        events.append(pb.SessionEvent(prompt=_prompt_to_proto(result.prompt)))
    return events


def _prompt_to_proto(prompt: Prompt) -> pb.ChallengePrompt:
    return pb.ChallengePrompt(
        challenge=_CHALLENGES[prompt.challenge],
        nonce=prompt.nonce,
        deadline_ms=prompt.deadline_ms,
        step=prompt.step,
        message=prompt.message,
    )


def _prompt_from_proto(message: pb.ChallengePrompt) -> Prompt:
    challenge = _CHALLENGES_FROM_PROTO.get(message.challenge)
    if challenge is None:
        raise KioskError("the server sent a challenge this client does not know")
    # The window is not on the wire: the deadline is what the kiosk needs.
    return Prompt(message.step, challenge, message.nonce, message.deadline_ms, window_ms=0, message=message.message)


def decision_event(verification: Verification, request_id: str, audit_id: str, receipt=None) -> pb.SessionEvent:
    return pb.SessionEvent(decision=verification_to_proto(verification, request_id, audit_id, receipt))


def session_update_from_proto(event: pb.SessionEvent) -> SessionUpdate:
    kind = event.WhichOneof("kind")
    if kind == "guidance":
        guidance = tuple(Guidance(item.code, item.message) for item in event.guidance.items)
        return GuidanceEvent(event.guidance.frame_index, guidance)
    if kind == "frame_result":
        result = event.frame_result
        finding = _finding_from_proto(result.finding) if result.HasField("finding") else None
        return FrameEvent(result.frame_index, finding)
    if kind == "decision":
        return DecisionEvent(
            verification_from_proto(event.decision), event.decision.audit_id, receipt_from_proto(event.decision)
        )
    if kind == "prompt":
        return PromptEvent(_prompt_from_proto(event.prompt))
    raise KioskError("the server sent an empty session event")


# --------------------------------------------------------------------------- info


def info_to_proto(info: ServiceInfo) -> pb.InfoResponse:
    limits = info.limits
    return pb.InfoResponse(
        service_version=info.service_version,
        model_versions=info.model_versions,
        operating_points=[pb.OperatingPoint(target_fmr=p.target_fmr, threshold=p.threshold) for p in info.operating_points],
        default_target_fmr=info.default_target_fmr,
        hardware_profile=info.hardware_profile,
        limits=pb.Limits(
            max_message_bytes=limits.max_message_bytes,
            max_image_bytes=limits.max_image_bytes,
            max_image_pixels=limits.max_image_pixels,
            max_image_side=limits.max_image_side,
            max_live_photos=limits.max_live_photos,
            max_concurrent_calls=limits.max_concurrent_calls,
            call_deadline_s=limits.call_deadline_s,
            session_deadline_s=limits.session_deadline_s,
        ),
        device_id=info.device_id,
        accepted_consent_versions=info.accepted_consent_versions,
        swap_active=info.swap_active,
        core_dumps_disabled=info.core_dumps_disabled,
        runtime_versions=info.runtime_versions,
        calibration_created=info.calibration_created,
        board_model=info.board_model,
        receipt_public_key=info.receipt_public_key,
        receipt_key_ephemeral=info.receipt_key_ephemeral,
        memory_locked=info.memory_locked,
        chip_operating_points=[
            pb.OperatingPoint(target_fmr=p.target_fmr, threshold=p.threshold) for p in info.chip_operating_points
        ],
    )


def info_from_proto(response: pb.InfoResponse) -> ServiceInfo:
    limits = response.limits
    return ServiceInfo(
        service_version=response.service_version,
        model_versions=dict(response.model_versions),
        operating_points=tuple(OperatingPoint(p.target_fmr, p.threshold) for p in response.operating_points),
        default_target_fmr=response.default_target_fmr,
        hardware_profile=response.hardware_profile,
        limits=ServiceLimits(
            max_message_bytes=limits.max_message_bytes,
            max_image_bytes=limits.max_image_bytes,
            max_image_pixels=limits.max_image_pixels,
            max_image_side=limits.max_image_side,
            max_live_photos=limits.max_live_photos,
            max_concurrent_calls=limits.max_concurrent_calls,
            call_deadline_s=limits.call_deadline_s,
            session_deadline_s=limits.session_deadline_s,
        ),
        device_id=response.device_id,
        accepted_consent_versions=tuple(response.accepted_consent_versions),
        swap_active=response.swap_active,
        core_dumps_disabled=response.core_dumps_disabled,
        runtime_versions=dict(response.runtime_versions),
        calibration_created=response.calibration_created,
        board_model=response.board_model,
        receipt_public_key=response.receipt_public_key,
        receipt_key_ephemeral=response.receipt_key_ephemeral,
        memory_locked=response.memory_locked,
        chip_operating_points=tuple(OperatingPoint(p.target_fmr, p.threshold) for p in response.chip_operating_points),
    )
