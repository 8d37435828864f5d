"""Request builders and settings shared by the hostile-input, fault and load tests.

Kept apart from test_server.py so these suites do not depend on another test module.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from kiosk.settings import LivenessChallengeSettings, ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2 as pb

CONSENT_VERSION = Settings().consent.accepted_versions[0]
# Generous per-call timeout: nothing should come close on a loaded 2-core runner.
TIMEOUT = 60


def settings_with(
    listen: tuple[str, ...] = ("127.0.0.1:0",), *, challenges: bool = True, **service_overrides
) -> Settings:
    """Default settings with these service fields; ``challenges=False`` lets still photos end a session."""
    service = dataclasses.replace(ServiceSettings(), listen=listen, **service_overrides)
    return dataclasses.replace(
        Settings(), service=service, liveness_challenge=LivenessChallengeSettings(enabled=challenges)
    )


def consent() -> pb.Consent:
    return pb.Consent(granted=True, text_version=CONSENT_VERSION)


def verify_request(id_photo: bytes, live_photos: list[bytes], **fields) -> pb.VerifyRequest:
    return pb.VerifyRequest(id_photo=id_photo, live_photos=live_photos, consent=consent(), **fields)


def start_message(id_photo: bytes, **fields) -> pb.SessionRequest:
    return pb.SessionRequest(start=pb.SessionStart(id_photo=id_photo, consent=consent(), **fields))


def frame_message(data: bytes, timestamp_ms: int) -> pb.SessionRequest:
    return pb.SessionRequest(frame=pb.CameraFrame(encoded=data, timestamp_ms=timestamp_ms))


def raw_frame_message(data: bytes, width: int, height: int, pixel_format: int, timestamp_ms: int) -> pb.SessionRequest:
    raw = pb.RawImage(data=data, width=width, height=height, pixel_format=pixel_format)
    return pb.SessionRequest(frame=pb.CameraFrame(raw=raw, timestamp_ms=timestamp_ms))


def rpc_error(method, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=TIMEOUT, **kwargs)
    return caught.value


def session_error(stub, requests: list[pb.SessionRequest]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.VerifySession(iter(requests), timeout=TIMEOUT))
    return caught.value
