"""End-to-end tests of the gRPC service: a real server on 127.0.0.1:0 or a unix socket, real models, real faces.

Calls go through the generated stubs (to see the wire protocol: statuses, messages,
event order), through ``KioskClient`` and through the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import stat
import threading
from pathlib import Path

import cv2
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kiosk import cli
from kiosk.client import KioskClient
from kiosk.errors import ConfigError
from kiosk.pipeline.session import Frame
from kiosk.pipeline.types import Decision
from kiosk.server.app import build_server
from kiosk.server.calls import Consent
from kiosk.settings import LivenessChallengeSettings, ServiceSettings, Settings, TlsSettings
from kiosk.v1 import kiosk_pb2 as pb
from tests.integration.rpc import free_port, frame_message, kiosk_subprocess, rpc_error, sigterm_and_wait

CONSENT_VERSION = Settings().consent.accepted_versions[0]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIMEOUT = 60  # generous per-call timeout: nothing here should come close on a 2-core runner


def service_settings(listen: tuple[str, ...] = ("127.0.0.1:0",), **overrides) -> Settings:
    return dataclasses.replace(Settings(), service=dataclasses.replace(ServiceSettings(), listen=listen, **overrides))


def without_challenges(settings: Settings | None = None) -> Settings:
    """Liveness challenges off: still photos can then end a session with a face-match decision.

    The challenges themselves are tested in test_session_liveness.py; here they would
    need a person on camera.
    """
    settings = settings or service_settings()
    return dataclasses.replace(settings, liveness_challenge=LivenessChallengeSettings(enabled=False))


def consent(version: str = CONSENT_VERSION, granted: bool = True) -> pb.Consent:
    return pb.Consent(granted=granted, text_version=version)


def verify_request(id_photo: bytes, live_photos: list[bytes], **fields) -> pb.VerifyRequest:
    fields.setdefault("consent", consent())
    return pb.VerifyRequest(id_photo=id_photo, live_photos=live_photos, **fields)


def genuine_request(photos, **fields) -> pb.VerifyRequest:
    return verify_request(photos.scorsese[0].read_bytes(), [photos.scorsese[1].read_bytes()], **fields)


def start_message(id_photo: bytes, **fields) -> pb.SessionRequest:
    fields.setdefault("consent", consent())
    return pb.SessionRequest(start=pb.SessionStart(id_photo=id_photo, **fields))


class DelegatingVerifier:
    """The real, loaded verifier behind a test hook on ``verify``."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


class HeldVerifier(DelegatingVerifier):
    """Each ``verify`` signals that it started, then waits for the test's go-ahead."""

    def __init__(self, inner):
        super().__init__(inner)
        self.entered = threading.Semaphore(0)
        self.proceed = threading.Event()

    def verify(self, *args, **kwargs):
        self.entered.release()
        self.proceed.wait(timeout=TIMEOUT)
        return self._inner.verify(*args, **kwargs)


class BrokenVerifier(DelegatingVerifier):
    def verify(self, id_photo, live_photos, target_fmr=None, timer=None):
        raise RuntimeError(f"bug while holding {id_photo[:4].hex()}")


# --------------------------------------------------------------------------- Verify


def test_verify_genuine_pair_matches_and_is_audited(kiosk, photos):
    request = genuine_request(photos, request_id="req-1", device_id="kiosk-A")
    response = kiosk.stub().Verify(request, timeout=TIMEOUT)

    assert response.decision == pb.VerifyResponse.MATCH
    assert response.HasField("similarity") and response.similarity >= response.threshold
    assert response.target_fmr == Settings().decision.target_fmr
    assert response.request_id == "req-1"
    assert response.retry_reason == ""
    assert [(f.role, f.index, f.face_found) for f in response.findings] == [
        (pb.FaceFinding.ID_PHOTO, 0, True),
        (pb.FaceFinding.LIVE_FRAME, 0, True),
    ]
    assert all(f.HasField("box") and f.quality for f in response.findings)
    assert set(response.model_versions) == {
        "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder", "eye_state", "liveness", "face_mesh"
    }  # fmt: skip
    assert response.timings_ms["embed"] > 0
    # The live photo was checked by the passive-liveness model (the ID photo never is).
    assert response.liveness.status == pb.LivenessOutcome.PASSED and response.liveness.HasField("passive_score")
    # Decision, scores, boxes and quality figures only: nothing image-sized comes back
    # (the signed receipt is bounded and checked in test_receipts.py).
    assert response.ByteSize() - len(response.receipt) - len(response.receipt_signature) < 2048

    [record] = kiosk.audit_records()
    assert response.audit_id == f"{record['seq']}-{record['mac'][:16]}"
    assert {k: record[k] for k in ("event", "decision", "request_id", "device_id", "client_identity")} == {
        "event": "decision",
        "decision": "match",
        "request_id": "req-1",
        "device_id": "kiosk-A",
        "client_identity": "local",
    }
    assert record["similarity"] == round(response.similarity, 2)
    assert record["threshold"] == response.threshold
    assert record["consent_version"] == CONSENT_VERSION
    assert record["liveness"] == "passed"
    assert record["model_versions"] == dict(response.model_versions)


def test_verify_different_people_do_not_match(kiosk, photos):
    request = verify_request(photos.scorsese[0].read_bytes(), [photos.stranger.read_bytes()])
    response = kiosk.stub().Verify(request, timeout=TIMEOUT)

    assert response.decision == pb.VerifyResponse.NO_MATCH
    assert response.similarity < response.threshold
    assert kiosk.audit_records()[0]["decision"] == "no_match"


def test_photo_without_a_face_is_a_retry_with_reason(kiosk, photos):
    request = verify_request(photos.scorsese[0].read_bytes(), [photos.no_face])
    response = kiosk.stub().Verify(request, timeout=TIMEOUT)

    assert response.decision == pb.VerifyResponse.RETRY
    assert response.retry_reason == "no_face_in_live_frame"
    assert response.message == "no face found in the live frame"
    assert not response.HasField("similarity")
    assert not response.findings[-1].face_found and not response.findings[-1].HasField("box")
    [record] = kiosk.audit_records()
    assert (record["decision"], record["reason"], record["similarity"]) == ("retry", "no_face_in_live_frame", None)


@pytest.mark.parametrize(
    ("make_photo", "message"),
    [
        (lambda good: b"GIF89a" + bytes(100), "not a JPEG, PNG or BMP image (unrecognised content)"),
        (lambda good: good[: len(good) // 2], "JPEG is truncated (no end-of-image marker)"),
        (lambda good: b"", "live_photos[0] is empty"),
    ],
    ids=["gif", "truncated-jpeg", "empty"],
)
def test_invalid_image_is_invalid_argument_and_harms_nothing(kiosk, photos, make_photo, message):
    stub = kiosk.stub()
    good = photos.scorsese[1].read_bytes()
    error = rpc_error(stub.Verify, verify_request(photos.scorsese[0].read_bytes(), [make_photo(good)]))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message
    assert kiosk.audit_records() == []  # an error is not a decision
    # The same server and channel go on serving.
    assert stub.Verify(genuine_request(photos), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH


@pytest.mark.parametrize(
    ("given", "reason", "message"),
    [
        (
            consent(granted=False),
            "consent_missing",
            "consent is required: the person has not granted consent (consent.granted is false)",
        ),
        (
            None,
            "consent_missing",
            "consent is required: the person has not granted consent (consent.granted is false)",
        ),
        (
            consent("1999-01"),
            "consent_version_unknown",
            f"consent text version '1999-01' is not accepted by this service; accepted: {CONSENT_VERSION}",
        ),
    ],
    ids=["not-granted", "absent", "unknown-version"],
)
def test_verify_without_valid_consent_is_refused_and_audited(kiosk, photos, given, reason, message):
    request = genuine_request(photos, request_id="req-c")
    if given is None:
        request.ClearField("consent")
    else:
        request.consent.CopyFrom(given)
    error = rpc_error(kiosk.stub().Verify, request)

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == message
    [record] = kiosk.audit_records()
    assert (record["event"], record["decision"], record["reason"]) == ("refused", "refused", reason)
    assert (record["request_id"], record["similarity"], record["threshold"]) == ("req-c", None, None)


def test_oversize_message_is_resource_exhausted(start_server, photos):
    running = start_server(service_settings(max_message_bytes=64 * 1024))
    stub = running.stub()
    error = rpc_error(stub.Verify, verify_request(bytes(100_000), [photos.scorsese[1].read_bytes()]))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Verify(genuine_request(photos), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH


@pytest.mark.parametrize(
    ("count", "message"),
    [(6, "6 live photos given, at most 5 are accepted"), (0, "at least one live photo is required")],
)
def test_wrong_number_of_live_photos_is_invalid_argument(kiosk, photos, count, message):
    live = photos.scorsese[1].read_bytes()
    error = rpc_error(kiosk.stub().Verify, verify_request(photos.scorsese[0].read_bytes(), [live] * count))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


@pytest.mark.parametrize(
    ("target_fmr", "message"),
    [
        (0.05, "target FMR 0.05 is not calibrated; calibrated: 0.01, 0.001, 0.0001"),
        (1.5, "target_fmr must be between 0 and 1 (exclusive), got 1.5"),
    ],
)
def test_unknown_target_fmr_is_invalid_argument(kiosk, photos, target_fmr, message):
    error = rpc_error(kiosk.stub().Verify, genuine_request(photos, target_fmr=target_fmr))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == message


def test_calibrated_target_fmr_is_used(kiosk, photos):
    response = kiosk.stub().Verify(genuine_request(photos, target_fmr=0.01), timeout=TIMEOUT)

    assert (response.target_fmr, response.decision) == (0.01, pb.VerifyResponse.MATCH)


def test_unexpected_failure_is_internal_without_details(start_server, photos, verifier, caplog):
    running = start_server(verifier=BrokenVerifier(verifier))
    with caplog.at_level(logging.INFO, logger="kiosk.server"):
        error = rpc_error(running.stub().Verify, genuine_request(photos))

    assert (error.code(), error.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    assert "unexpected RuntimeError" in caplog.text
    # The stack is logged, the exception's text is not: it could quote request data.
    assert photos.scorsese[0].read_bytes()[:4].hex() not in caplog.text


def test_unrecordable_decision_is_not_given(start_server, photos):
    running = start_server()
    running.audit.close()  # every append now fails
    error = rpc_error(running.stub().Verify, genuine_request(photos))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "the decision could not be recorded in the audit log, so none is given"


# --------------------------------------------------------------------------- VerifySession


def test_session_gives_guidance_then_one_decision(start_server, photos):
    kiosk = start_server(without_challenges())
    frames = [photos.no_face, *(p.read_bytes() for p in photos.nuaa_frames[:4])]
    requests = [start_message(photos.nuaa_id.read_bytes(), request_id="s-1")]
    requests += [frame_message(data, 100 * i) for i, data in enumerate(frames)]
    events = list(kiosk.stub().VerifySession(iter(requests), timeout=TIMEOUT))

    kinds = [(e.WhichOneof("kind"), e.frame_result.frame_index or e.guidance.frame_index) for e in events]
    # Three usable frames decide; the fifth frame is never analysed.
    assert kinds == [
        ("frame_result", 0),
        ("guidance", 0),
        ("frame_result", 1),
        ("guidance", 1),
        ("frame_result", 2),
        ("guidance", 2),
        ("frame_result", 3),
        ("decision", 0),
    ]
    assert not events[0].frame_result.finding.face_found
    assert [(i.code, i.message) for i in events[1].guidance.items] == [("NO_FACE", "No face found: look at the camera")]
    assert [i.code for i in events[3].guidance.items] == ["GOOD_FRAME"]
    decision = events[-1].decision
    assert decision.decision == pb.VerifyResponse.MATCH and decision.similarity >= decision.threshold
    # Challenges are off here, but every usable frame passed passive liveness.
    assert decision.liveness.status == pb.LivenessOutcome.PASSED
    assert decision.liveness.HasField("passive_score")
    assert decision.request_id == "s-1"
    [record] = kiosk.audit_records()
    assert decision.audit_id == f"{record['seq']}-{record['mac'][:16]}"
    assert (record["decision"], record["request_id"]) == ("match", "s-1")


def test_session_prompts_a_challenge_and_still_photos_fail_it(kiosk, photos):
    """Default settings: after the baseline frames a prompt arrives; still photos never do it."""
    frames = [p.read_bytes() for p in photos.nuaa_frames[:3]]
    requests = [start_message(photos.nuaa_id.read_bytes(), request_id="s-2")]
    # 100 ms apart, past the 3 s window: the session must end by itself.
    requests += [frame_message(frames[i % 3], 100 * i) for i in range(40)]
    events = list(kiosk.stub().VerifySession(iter(requests), timeout=TIMEOUT))

    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[:7] == ["frame_result", "guidance", "frame_result", "guidance", "frame_result", "guidance", "prompt"]
    prompt = events[6].prompt
    assert prompt.challenge != pb.ChallengePrompt.CHALLENGE_UNSPECIFIED and prompt.message
    assert (prompt.step, prompt.deadline_ms) == (0, 200 + LivenessChallengeSettings().step_window_ms)
    assert len(prompt.nonce) == 16
    assert kinds.count("prompt") == 1 and kinds[-1] == "decision"
    decision = events[-1].decision
    assert (decision.decision, decision.retry_reason) == (pb.VerifyResponse.RETRY, "liveness_failed")
    assert decision.liveness.status == pb.LivenessOutcome.FAILED
    assert decision.liveness.failed_check == "challenge_timeout"
    assert "face_mesh" in decision.model_versions
    [record] = kiosk.audit_records()
    assert (record["decision"], record["request_id"]) == ("retry", "s-2")


def test_session_with_unusable_id_photo_decides_at_once(kiosk, photos):
    events = list(kiosk.stub().VerifySession(iter([start_message(photos.no_face)]), timeout=TIMEOUT))

    [event] = events
    assert event.decision.decision == pb.VerifyResponse.RETRY
    assert event.decision.retry_reason == "no_face_in_id_photo"


@pytest.mark.parametrize(
    ("shape", "code", "message"),
    [
        ("frame-first", grpc.StatusCode.INVALID_ARGUMENT, "the first message of a session must be start, not frame"),
        ("second-start", grpc.StatusCode.INVALID_ARGUMENT, "after start, a session takes only frames"),
        (
            "ends-early",
            grpc.StatusCode.INVALID_ARGUMENT,
            "the session ended after 1 frame(s), before a decision: 3 usable frames are needed",
        ),
        (
            "no-consent",
            grpc.StatusCode.FAILED_PRECONDITION,
            "consent is required: the person has not granted consent (consent.granted is false)",
        ),
    ],
)
def test_malformed_session_is_refused(kiosk, photos, shape, code, message):
    id_photo, frame = photos.nuaa_id.read_bytes(), frame_message(photos.nuaa_frames[0].read_bytes(), 0)
    requests = {
        "frame-first": [frame],
        "second-start": [start_message(id_photo), start_message(id_photo)],
        "ends-early": [start_message(id_photo), frame],
        "no-consent": [start_message(id_photo, consent=consent(granted=False)), frame],
    }[shape]
    with pytest.raises(grpc.RpcError) as caught:
        list(kiosk.stub().VerifySession(iter(requests), timeout=TIMEOUT))

    assert (caught.value.code(), caught.value.details()) == (code, message)


def test_client_session_and_info(start_server, photos):
    kiosk = start_server(without_challenges())
    with KioskClient(kiosk.address) as client:
        frames = [Frame(p.read_bytes(), 100 * i) for i, p in enumerate(photos.nuaa_frames[:3])]
        updates = list(client.session(photos.nuaa_id.read_bytes(), frames, consent=Consent(True, CONSENT_VERSION)))
        info = client.info()

    assert updates[-1].verification.decision is Decision.MATCH
    assert updates[-1].audit_id
    assert info.limits.max_concurrent_calls == ServiceSettings().max_concurrent_calls


# --------------------------------------------------------------------------- limits


def test_calls_past_the_concurrency_limit_are_refused_at_once(start_server, photos):
    running = start_server(without_challenges(service_settings(max_concurrent_calls=1)))
    stub = running.stub()
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    events = stub.VerifySession(iter(outbox.get, None), timeout=TIMEOUT)
    outbox.put(start_message(photos.nuaa_id.read_bytes()))
    outbox.put(frame_message(photos.nuaa_frames[0].read_bytes(), 0))
    assert next(events).WhichOneof("kind") == "frame_result"  # the session now holds the only slot

    error = rpc_error(stub.Verify, genuine_request(photos))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "server busy: 1 calls in flight, retry later"
    assert stub.GetInfo(pb.InfoRequest(), timeout=TIMEOUT).limits.max_concurrent_calls == 1  # not limited

    for i, path in enumerate(photos.nuaa_frames[1:3], start=1):
        outbox.put(frame_message(path.read_bytes(), 100 * i))
    outbox.put(None)
    assert list(events)[-1].decision.decision == pb.VerifyResponse.MATCH
    # The slot is free again.
    assert stub.Verify(genuine_request(photos), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH


def enlarged_jpeg(path: Path, side: int) -> bytes:
    image = cv2.resize(cv2.imread(str(path)), (side, side), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def test_verify_past_the_server_deadline_is_deadline_exceeded(start_server, photos):
    # The analysis cannot be interrupted, so the deadline must be shorter than the
    # analysis on any machine: six 2000 px photos take about 300 ms on a 2-core x86 VM,
    # a 250 px pair only 50 ms (a faster CI machine once finished that inside 50 ms).
    running = start_server(service_settings(call_deadline_s=0.02))
    request = verify_request(
        enlarged_jpeg(photos.scorsese[0], 2000), [enlarged_jpeg(photos.scorsese[1], 2000)] * 5
    )
    error = rpc_error(running.stub().Verify, request)

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error.details() == "the call ran past its 0.02 s deadline during analysis"
    assert running.audit_records() == []


def test_stalled_session_ends_at_the_server_deadline(start_server, photos):
    running = start_server(service_settings(session_deadline_s=1.0))
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    outbox.put(start_message(photos.nuaa_id.read_bytes()))
    with pytest.raises(grpc.RpcError) as caught:
        # The client keeps the stream open and sends nothing more.
        list(running.stub().VerifySession(iter(outbox.get, None), timeout=TIMEOUT))
    outbox.put(None)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert caught.value.details() == "the call ran past its 1 s deadline waiting for frame 0"


# --------------------------------------------------------------------------- health, reflection, info


def test_health_follows_model_loading_and_shutdown(start_server, photos, verifier):
    running = start_server(verifier=None)
    watch = health_pb2_grpc.HealthStub(running.channel()).Watch(
        health_pb2.HealthCheckRequest(service="kiosk.v1.Kiosk"), timeout=TIMEOUT
    )
    assert next(watch).status == NOT_SERVING
    error = rpc_error(running.stub().Verify, genuine_request(photos))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "the service is starting: models are still loading",
    )

    running.server.ready(verifier)
    assert next(watch).status == SERVING
    assert running.stub().Verify(genuine_request(photos), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH

    stopped = running.server.stop(grace=TIMEOUT)
    assert next(watch).status == NOT_SERVING
    watch.cancel()
    assert stopped.wait(timeout=TIMEOUT)


def test_reflection_lists_the_services(kiosk, start_server):
    def services(running) -> set[str]:
        stub = reflection_pb2_grpc.ServerReflectionStub(running.channel())
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)
        return {s.name for s in response.list_services_response.service}

    assert {"kiosk.v1.Kiosk", "grpc.health.v1.Health"} <= services(kiosk)
    with pytest.raises(grpc.RpcError) as caught:
        services(start_server(service_settings(reflection=False)))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_get_info_reports_the_running_service(start_server, verifier):
    running = start_server(service_settings(device_id="kiosk-lagos-07", max_concurrent_calls=2))
    info = running.stub().GetInfo(pb.InfoRequest(), timeout=TIMEOUT)

    assert dict(info.model_versions) == verifier.model_versions
    assert [(p.target_fmr, p.threshold) for p in info.operating_points] == [
        (p.target_fmr, p.threshold) for p in verifier.operating_points
    ]
    # A chip-sized ID photo is compared at its own, lower thresholds: the back office sees them.
    chip = {p.target_fmr: p.threshold for p in info.chip_operating_points}
    assert chip == {p.target_fmr: p.threshold for p in verifier.chip_operating_points}
    assert chip[1e-3] < {p.target_fmr: p.threshold for p in info.operating_points}[1e-3]
    assert info.default_target_fmr == Settings().decision.target_fmr
    assert info.hardware_profile == verifier.profile.name
    assert info.device_id == "kiosk-lagos-07"
    assert list(info.accepted_consent_versions) == [CONSENT_VERSION]
    limits = Settings().limits
    assert (info.limits.max_live_photos, info.limits.max_image_bytes) == (limits.max_live_photos, limits.max_image_bytes)
    assert (info.limits.max_message_bytes, info.limits.max_concurrent_calls) == (8 * 1024 * 1024, 2)
    assert (info.limits.call_deadline_s, info.limits.session_deadline_s) == (10.0, 30.0)
    assert info.swap_active == (len(Path("/proc/swaps").read_text().splitlines()) > 1)
    # Only serve_forever hardens its process (kiosk.runtime.hardening); this test process stays dumpable.
    assert info.core_dumps_disabled is False
    assert info.service_version


# --------------------------------------------------------------------------- listeners and TLS


def test_mutual_tls_serves_known_clients_only(start_server, photos, tls_files):
    running = start_server(service_settings(tls=tls_files.server_settings()))
    tls = {"ca": tls_files.ca, "cert": tls_files.client_cert, "key": tls_files.client_key}
    with KioskClient(running.address, **tls, timeout=TIMEOUT) as client:
        verification = client.verify(
            photos.scorsese[0].read_bytes(),
            [photos.scorsese[1].read_bytes()],
            consent=Consent(True, CONSENT_VERSION),
        )
    assert verification.decision is Decision.MATCH
    [record] = running.audit_records()
    assert f"CN={tls_files.client_subject_cn}" in record["client_identity"]

    refused = {
        "no client certificate": running.stub(tls_files.client_credentials()),
        "certificate from another CA": running.stub(
            tls_files.client_credentials(tls_files.rogue_cert, tls_files.rogue_key)
        ),
        "plain text": running.stub(),
    }
    for name, stub in refused.items():
        error = rpc_error(stub.GetInfo, pb.InfoRequest())
        assert error.code() == grpc.StatusCode.UNAVAILABLE, name
    assert len(running.audit_records()) == 1


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ({"listen": ("0.0.0.0:0",)}, "listen address(es) 0.0.0.0:0 are reachable from the network and need mutual TLS"),
        ({"listen": ("127.0.0.1:0",), "tls": TlsSettings(server_cert="x.crt")}, "missing: server_key, client_ca"),
        ({"listen": ("127.0.0.1",)}, "expected host:port or unix:PATH"),
        ({"max_concurrent_calls": 0}, "service.max_concurrent_calls must be positive"),
    ],
    ids=["remote-without-tls", "partial-tls", "no-port", "no-calls"],
)
def test_unsafe_or_broken_service_settings_refuse_to_start(verifier, service, message):
    with pytest.raises(ConfigError) as caught:
        build_server(service_settings(**service), verifier)
    assert message in caught.value.message


def test_unix_socket_is_group_only(start_server, photos):
    running = start_server(unix=True)
    socket_path = Path(running.address.removeprefix("unix:"))

    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660
    assert running.stub().Verify(genuine_request(photos), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH
    assert running.audit_records()[0]["client_identity"] == "local"


# --------------------------------------------------------------------------- shutdown


def test_graceful_shutdown_answers_every_call_in_flight(start_server, photos, verifier):
    held = HeldVerifier(verifier)
    running = start_server(verifier=held)
    stub = running.stub()
    calls = [stub.Verify.future(genuine_request(photos, request_id=f"r{i}"), timeout=TIMEOUT) for i in range(3)]
    for _ in calls:
        assert held.entered.acquire(timeout=TIMEOUT)  # all three are inside the pipeline

    stopped = running.server.stop(grace=TIMEOUT)
    # Refused on the same channel and on a new connection; depending on timing gRPC
    # reports a call that raced the shutdown as CANCELLED rather than UNAVAILABLE.
    for new_stub in (stub, running.stub()):
        error = rpc_error(new_stub.Verify, genuine_request(photos, request_id="late"))
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    held.proceed.set()

    assert [call.result().decision for call in calls] == [pb.VerifyResponse.MATCH] * 3
    assert stopped.wait(timeout=TIMEOUT)
    assert sorted(r["request_id"] for r in running.audit_records()) == ["r0", "r1", "r2"]


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_stdout(capsys):
    return capsys


def _without_timings(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("timings_ms")]


def test_cli_verify_remote_prints_what_in_process_prints(start_server, photos, cli_stdout):
    running = start_server(unix=True)
    id_photo, genuine, stranger = (str(p) for p in (photos.scorsese[0], photos.scorsese[1], photos.stranger))

    assert cli.main(["verify", "--server", running.address, id_photo, genuine]) == 0
    remote = cli_stdout.readouterr().out
    assert cli.main(["verify", id_photo, genuine]) == 0
    local = cli_stdout.readouterr().out
    assert remote.startswith("decision: match\n")
    assert _without_timings(remote) == _without_timings(local)

    assert cli.main(["verify", "--server", running.address, "--json", id_photo, stranger]) == 1
    assert json.loads(cli_stdout.readouterr().out)["decision"] == "no_match"


def test_cli_remote_errors_are_one_line_and_exit_2(start_server, photos, cli_stdout, tmp_path):
    running = start_server(unix=True)
    photo = str(photos.scorsese[0])

    assert cli.main(["verify", "--server", running.address, "--consent-version", "1999-01", photo, photo]) == 2
    err = cli_stdout.readouterr().err
    assert err.startswith(f"kiosk: {running.address}: FAILED_PRECONDITION: consent text version '1999-01'")
    assert err.count("\n") == 1

    missing = f"unix:{tmp_path / 'nobody.sock'}"
    assert cli.main(["session", "--server", missing, "--id-photo", photo, photo]) == 2
    err = cli_stdout.readouterr().err
    assert err.startswith(f"kiosk: {missing}: UNAVAILABLE") and err.count("\n") == 1


def test_cli_session_prints_guidance_then_the_decision(start_server, photos, cli_stdout, tmp_path):
    running = start_server(without_challenges(service_settings((f"unix:{tmp_path / 'kiosk.sock'}",))))
    no_face = tmp_path / "no_face.jpg"
    no_face.write_bytes(photos.no_face)
    frames = [str(no_face), *(str(p) for p in photos.nuaa_frames[:3])]
    args = ["session", "--server", running.address, "--fps", "100"]

    assert cli.main([*args, "--id-photo", str(photos.nuaa_id), *frames]) == 0
    lines = cli_stdout.readouterr().out.splitlines()
    assert lines[:4] == [
        "frame 0: NO_FACE: No face found: look at the camera",
        "frame 1: GOOD_FRAME: Hold still",
        "frame 2: GOOD_FRAME: Hold still",
        "decision: match",
    ]

    assert cli.main([*args, "--json", "--id-photo", str(photos.stranger), *frames]) == 1
    # One JSON object per line: guidance, frame results and, last, the decision.
    events = [json.loads(line) for line in cli_stdout.readouterr().out.splitlines()]
    guidance = [e for e in events if e["event"] == "guidance"]
    assert [g["guidance"][0]["code"] for g in guidance] == ["NO_FACE", "GOOD_FRAME", "GOOD_FRAME"]
    assert (events[-1]["event"], events[-1]["decision"]) == ("decision", "no_match")


def test_kiosk_serve_reaches_serving_and_exits_0_on_sigterm():
    address = f"127.0.0.1:{free_port()}"
    with kiosk_subprocess("serve", "--listen", address) as process:
        with grpc.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT, wait_for_ready=True
            )
            statuses = []
            for response in watch:
                statuses.append(response.status)
                if response.status == SERVING:
                    break
            watch.cancel()
        assert statuses[-1] == SERVING
        log = sigterm_and_wait(process)

    assert process.returncode == 0, log
    assert f"listening on {address}" in log
    assert "serving" in log and "stopped" in log
