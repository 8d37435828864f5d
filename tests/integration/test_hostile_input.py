"""Hostile input and hostile clients against a real server: every refusal is clean and precise.

Broken, oversized, polyglot and non-image files, malformed protobuf, absurd field
values and floods all end in INVALID_ARGUMENT or RESOURCE_EXHAUSTED with a message that
says what is wrong, nothing is audited for them, and the server goes on serving.
Hostile images are made here from synthetic pixels or by damaging a shared photo in
memory; nothing is written to the repository.
"""

from __future__ import annotations

import grp
import os
import stat
import struct
import zlib

import cv2
import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kiosk.errors import ConfigError
from kiosk.server.app import build_server
from kiosk.server.status import RETRY_AFTER_KEY
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc
from tests.integration.rpc import (
    TIMEOUT,
    frame_message,
    raw_frame_message,
    rpc_error,
    session_error,
    settings_with,
    start_message,
    verify_request,
)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _synthetic(channels: int = 3, dtype=np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:60, 0:80]
    plane = ((x * 3 + y * 2) % 256).astype(dtype)
    return np.dstack([plane] * channels) if channels > 1 else plane


def _cmyk(jpeg: bytes) -> bytes:
    sof = jpeg.find(b"\xff\xc0")
    return jpeg[: sof + 9] + b"\x04" + jpeg[sof + 10 :]


def _huge_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _animated_png() -> bytes:
    png = _encode(".png", _synthetic())
    return png[:33] + _png_chunk(b"acTL", struct.pack(">II", 2, 0)) + png[33:]


def _bmp_declaring(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + dib + bytes(16)


# (make from a good JPEG, exact message)
HOSTILE_IMAGES = {
    "zip-polyglot": (
        lambda good: good + b"PK\x05\x06" + bytes(18),
        "JPEG has a ZIP archive after the end of its image (a polyglot file): re-encode it",
    ),
    "html-polyglot": (
        lambda good: good + b"<script>alert(1)</script>",
        "JPEG has a script after the end of its image (a polyglot file): re-encode it",
    ),
    "truncated-jpeg": (lambda good: good[: len(good) // 2], "JPEG is truncated (no end-of-image marker)"),
    "cmyk-jpeg": (
        _cmyk,
        "JPEG with 4 colour components is not accepted (only greyscale or YCbCr, not CMYK)",
    ),
    "huge-png": (lambda good: _huge_png(), "image is 30000x30000, larger than 8192 pixels on a side"),
    "16-bit-png": (
        lambda good: _encode(".png", _synthetic(dtype=np.uint16) * 200),
        "PNG with 16-bit samples is not accepted",
    ),
    "alpha-png": (lambda good: _encode(".png", _synthetic(4)), "PNG with an alpha channel is not accepted"),
    "animated-png": (lambda good: _animated_png(), "animated PNG is not accepted"),
    "corrupt-png": (
        lambda good: (png := _encode(".png", _synthetic()))[:45] + bytes([png[45] ^ 0xFF]) + png[46:],
        "PNG is corrupt: the IDAT chunk fails its CRC check",
    ),
    "bmp-huge-in-tiny-file": (
        lambda good: _bmp_declaring(6000, 1500),
        "BMP is truncated: its pixel data ends at byte 27000054, the file has 70 bytes",
    ),
    "bmp-negative-width": (lambda good: _bmp_declaring(-60, 80), "BMP declares a negative width -60"),
    "gif": (lambda good: b"GIF89a" + bytes(100), "not a JPEG, PNG or BMP image (unrecognised content)"),
    "html": (lambda good: b"<!doctype html><p>hi", "not a JPEG, PNG or BMP image (unrecognised content)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_IMAGES))
def test_hostile_image_is_invalid_argument_with_a_precise_message(kiosk, photos, name):
    make, message = HOSTILE_IMAGES[name]
    bad = make(photos.scorsese[1].read_bytes())
    stub = kiosk.stub()
    # As the ID photo it is refused before any model runs ...
    error = rpc_error(stub.Verify, verify_request(bad, [photos.scorsese[1].read_bytes()]))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    # ... and as a session's first camera frame, after the ID photo was analysed.
    requests = [start_message(photos.nuaa_id.read_bytes()), frame_message(bad, 0)]
    error = session_error(stub, requests)
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert kiosk.audit_records() == []


def test_hostile_live_photo_is_refused_and_the_server_goes_on(kiosk, photos):
    stub = kiosk.stub()
    id_photo, good = photos.scorsese[0].read_bytes(), photos.scorsese[1].read_bytes()
    error = rpc_error(stub.Verify, verify_request(id_photo, [good, good + b"PK\x05\x06" + bytes(18)]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.Verify(verify_request(id_photo, [good]), timeout=TIMEOUT).decision == pb.VerifyResponse.MATCH


# --------------------------------------------------------------------------- protobuf


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"id_photo": b"", "live_photos": [b"x"]}, "the request has no id_photo"),
        ({"id_photo": b"x", "live_photos": [b"x", b""]}, "live_photos[1] is empty"),
        ({"id_photo": b"x", "live_photos": []}, "at least one live photo is required"),
        # 100 000 empty entries: 200 kB on the wire, refused before they become objects.
        ({"id_photo": b"x", "live_photos": [b""] * 100_000}, "100000 live photos given, at most 5 are accepted"),
        ({"id_photo": b"x", "live_photos": [b"x"], "request_id": "r" * 129}, "request_id is 129 characters"),
    ],
    ids=["no-id-photo", "empty-live-photo", "no-live-photos", "absurd-count", "long-request-id"],
)
def test_missing_or_absurd_fields_are_invalid_argument(kiosk, request_fields, message):
    error = rpc_error(kiosk.stub().Verify, verify_request(**request_fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(message)


def test_bytes_that_are_not_protobuf_are_invalid_argument(kiosk, photos):
    channel = kiosk.channel()
    garbage = b"\xff\xff\xff\xff\x0f not protobuf"
    verify = channel.unary_unary("/kiosk.v1.Kiosk/Verify", request_serializer=bytes, response_deserializer=bytes)
    error = rpc_error(verify, garbage)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid kiosk.v1.VerifyRequest message" in error.details(), error.details()

    session = channel.stream_stream(
        "/kiosk.v1.Kiosk/VerifySession", request_serializer=bytes, response_deserializer=bytes
    )
    start = start_message(photos.nuaa_id.read_bytes()).SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        list(session(iter([start, garbage]), timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid kiosk.v1.SessionRequest message" in caught.value.details(), caught.value.details()


def test_oversize_session_frame_is_resource_exhausted(start_server, photos):
    running = start_server(settings_with(max_message_bytes=256 * 1024))
    requests = [start_message(photos.nuaa_id.read_bytes()), frame_message(bytes(300 * 1024), 0)]
    error = session_error(running.stub(), requests)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (raw_frame_message(bytes(5), 4, 4, pb.RawImage.BGR, 0), "raw BGR frame of 4x4 needs 48 bytes, got 5"),
        (raw_frame_message(bytes(47), 4, 4, pb.RawImage.BGR, 0), "raw BGR frame of 4x4 needs 48 bytes, got 47"),
        (raw_frame_message(bytes(20), 4, 4, pb.RawImage.NV12, 0), "raw NV12 frame of 4x4 needs 24 bytes, got 20"),
        (raw_frame_message(bytes(12), 3, 3, pb.RawImage.NV12, 0), "NV12 frame needs even width and height, got 3x3"),
        (raw_frame_message(b"", 100_000, 100_000, pb.RawImage.BGR, 0), "raw frame of 100000x100000 exceeds"),
        (raw_frame_message(bytes(48), 0, 4, pb.RawImage.BGR, 0), "raw frame has an empty size 0x4"),
        (raw_frame_message(bytes(48), 4, 4, pb.RawImage.PIXEL_FORMAT_UNSPECIFIED, 0), "raw frame needs pixel_format"),
        (pb.SessionRequest(frame=pb.CameraFrame(timestamp_ms=0)), "frame has no image (neither encoded nor raw)"),
        (pb.SessionRequest(), "empty session message: no frame"),
    ],
    ids=["bgr-short", "bgr-off-by-one", "nv12-short", "nv12-odd", "huge", "zero", "no-format", "no-image",
         "empty"],
)
def test_malformed_frames_are_refused_precisely(kiosk, photos, frame, message):
    error = session_error(kiosk.stub(), [start_message(photos.nuaa_id.read_bytes()), frame])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(message)


def test_session_start_without_id_photo_is_refused(kiosk):
    error = session_error(kiosk.stub(), [start_message(b"")])
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the session's start message has no id_photo",
    )


def test_frames_out_of_order_or_at_absurd_rates_are_refused(kiosk, photos):
    frame = photos.nuaa_frames[0].read_bytes()
    stub = kiosk.stub()
    error = session_error(
        stub, [start_message(photos.nuaa_id.read_bytes()), frame_message(frame, 100), frame_message(frame, 50)]
    )
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "frame timestamps must increase: 50 ms after 100 ms",
    )
    # 1000 frames/s: no kiosk camera does that; the liveness checks end the session (kiosk.pipeline.challenge).
    requests = [start_message(photos.nuaa_id.read_bytes(), request_id="fast")]
    requests += [frame_message(frame, i) for i in range(5)]
    events = list(stub.VerifySession(iter(requests), timeout=TIMEOUT))
    decision = events[-1].decision
    assert (decision.decision, decision.retry_reason) == (pb.VerifyResponse.RETRY, "liveness_failed")
    assert decision.liveness.failed_check == "frame_timing"


# --------------------------------------------------------------------------- hostile clients


def test_a_flooding_client_is_rate_limited_with_a_retry_hint(start_server):
    # One token per 10 s: the third call inside a test run can never have earned one.
    running = start_server(settings_with(rate_limit_per_s=0.1, rate_limit_burst=2))
    stub = running.stub()
    cheap = verify_request(b"x", [])  # refused by validation, after the rate limit took its token
    for _ in range(2):
        assert rpc_error(stub.Verify, cheap).code() == grpc.StatusCode.INVALID_ARGUMENT
    error = rpc_error(stub.Verify, cheap)

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details().startswith("rate limit reached for this client (0.1 calls/s, bursts of 2): retry in ")
    retry_after = int(dict(error.trailing_metadata())[RETRY_AFTER_KEY])
    assert 0 < retry_after <= 10_000
    assert error.details().endswith(f"retry in {retry_after} ms")
    # Sessions share the bucket; GetInfo and health are never limited.
    assert session_error(stub, [start_message(b"x")]).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetInfo(pb.InfoRequest(), timeout=TIMEOUT).limits.max_concurrent_calls > 0


def test_rate_limit_is_per_client_certificate(start_server, tls_files, tmp_path):
    socket_path = tmp_path / "local.sock"
    settings = settings_with(
        ("127.0.0.1:0", f"unix:{socket_path}"), tls=tls_files.server_settings(), rate_limit_per_s=0.1,
        rate_limit_burst=1,
    )
    running = start_server(settings)
    remote = running.stub(tls_files.client_credentials(tls_files.client_cert, tls_files.client_key))
    cheap = verify_request(b"x", [])
    assert rpc_error(remote.Verify, cheap).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(remote.Verify, cheap).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The kiosk UI on the unix socket ("local") has its own bucket.
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    running.channels.append(channel)
    local = kiosk_pb2_grpc.KioskStub(channel)
    assert rpc_error(local.Verify, cheap).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reflection_is_off_when_listeners_use_tls(start_server, tls_files):
    running = start_server(settings_with(tls=tls_files.server_settings(), reflection=True))
    channel = running.channel(tls_files.client_credentials(tls_files.client_cert, tls_files.client_key))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as caught:
        list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The service itself answers on the same channel.
    assert kiosk_pb2_grpc.KioskStub(channel).GetInfo(pb.InfoRequest(), timeout=TIMEOUT).limits.max_concurrent_calls > 0


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "kiosk.example:50051"])
def test_network_listener_without_tls_refuses_to_start(verifier, listen):
    with pytest.raises(ConfigError, match="reachable from the network and need mutual TLS"):
        build_server(settings_with((listen,)), verifier)


def _another_group() -> grp.struct_group | None:
    """A group the socket may be handed to: any as root, else one this user belongs to."""
    mine = os.getegid()
    candidates = grp.getgrall() if os.geteuid() == 0 else [grp.getgrgid(g) for g in os.getgroups()]
    return next((g for g in candidates if g.gr_gid != mine), None)


def test_unix_socket_is_0660_and_handed_to_the_configured_group(start_server, tmp_path, verifier):
    group = _another_group()
    if group is None:
        pytest.skip("this user belongs to no second group to hand the socket to")
    path = tmp_path / "kiosk.sock"
    start_server(settings_with((f"unix:{path}",), unix_socket_group=group.gr_name))
    mode = path.stat()

    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o660
    assert mode.st_gid == group.gr_gid
    with pytest.raises(ConfigError, match="service.unix_socket_group 'no-such-group-kiosk': no such group"):
        build_server(settings_with((f"unix:{tmp_path / 'other.sock'}",), unix_socket_group="no-such-group-kiosk"))


def test_rate_limit_settings_are_checked(verifier):
    with pytest.raises(ConfigError, match="service.rate_limit_per_s must not be negative"):
        build_server(settings_with(rate_limit_per_s=-1.0), verifier)
    with pytest.raises(ConfigError, match="service.rate_limit_burst must be at least 1, got 0"):
        build_server(settings_with(rate_limit_burst=0), verifier)
