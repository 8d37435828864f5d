"""Hostile clients against a real server on loopback: attacks first, then the limit that holds them.

Each test is an attack an adversarial run found (issue 13) or one of its class: numeric
fields that overflow, calls that hold capacity without making progress, clients that
give no flow-control credit, digital copies of the ID photo, a similarity oracle,
cancelled calls and tampered models. Raw HTTP/2 (the ``h2`` library) is used where a
gRPC client cannot misbehave the way an attacker does.
"""

from __future__ import annotations

import grpc
import pytest

from kiosk.v1 import kiosk_pb2 as pb
from tests.integration.rpc import TIMEOUT, frame_message, session_error, start_message

INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------- numeric fields


def test_timestamps_near_int64_max_are_invalid_argument_not_internal(kiosk, photos):
    # The adversarial run: the prompt deadline (timestamp + window) overflowed int64 on the way out.
    frame = photos.nuaa_frames[0].read_bytes()
    requests = [start_message(photos.nuaa_id.read_bytes())]
    requests += [frame_message(frame, INT64_MAX - 1000 + 100 * i) for i in range(5)]
    error = session_error(kiosk.stub(), requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith("timestamp_ms must be between 0 and ")


@pytest.mark.parametrize("timestamp_ms", [-1, -(2**63), 2**53, INT64_MAX])
def test_absurd_timestamps_are_refused_precisely(kiosk, photos, timestamp_ms):
    requests = [start_message(photos.nuaa_id.read_bytes()), frame_message(photos.nuaa_frames[0].read_bytes(), timestamp_ms)]
    error = session_error(kiosk.stub(), requests)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"timestamp_ms must be between 0 and {2**53 - 1} (milliseconds), got {timestamp_ms}"


@pytest.mark.parametrize(
    "target_fmr", [float("nan"), float("inf"), -float("inf"), -1e-3, 1.0, 5e-324, 1.7976931348623157e308]
)
def test_every_absurd_target_fmr_is_invalid_argument(kiosk, photos, target_fmr):
    # Both messages that carry it: Verify and a session's start.
    photo = photos.nuaa_id.read_bytes()
    stub = kiosk.stub()
    with pytest.raises(grpc.RpcError) as caught:
        stub.Verify(pb.VerifyRequest(id_photo=photo, live_photos=[photo], consent=_consent(), target_fmr=target_fmr), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "target_fmr" in caught.value.details() or "is not calibrated" in caught.value.details()
    error = session_error(stub, [start_message(photo, target_fmr=target_fmr)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "target_fmr" in error.details() or "is not calibrated" in error.details()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (pb.RawImage(data=b"\0" * 48, width=4, height=4, pixel_format=99), "raw frame needs pixel_format"),
        (pb.RawImage(data=b"", width=2**32 - 1, height=2**32 - 1, pixel_format=pb.RawImage.BGR), "raw frame of "),
        (pb.RawImage(data=b"", width=2**32 - 1, height=2, pixel_format=pb.RawImage.NV12), "raw frame of "),
    ],
    ids=["unknown-enum", "uint32-max", "uint32-max-nv12"],
)
def test_unknown_enums_and_uint32_extremes_are_invalid_argument(kiosk, photos, raw, message):
    frame = pb.SessionRequest(frame=pb.CameraFrame(raw=raw, timestamp_ms=0))
    error = session_error(kiosk.stub(), [start_message(photos.nuaa_id.read_bytes()), frame])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith(message)


def _consent() -> pb.Consent:
    return start_message(b"x").start.consent
