"""Bytes that are not protobuf, sent to every method, are INVALID_ARGUMENT (issue 13, failure 2).

A real server on loopback (``app.build_server`` with the loaded models), raw bytes sent with the generic ``channel.unary_unary`` /
``stream_stream`` so the client sends exactly what an attacker would. Also: the
deserializer zeroes gRPC's received copy of the message once parsed.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from kiosk.pipeline import scratch
from kiosk.server import wire
from kiosk.server.app import build_server
from kiosk.v1 import kiosk_pb2 as pb
from tests.integration.rpc import TIMEOUT, settings_with

# A varint that never ends inside the message: no protobuf parser accepts it.
NOT_PROTOBUF = b"\xff\xff\xff\xff\x0f"
# Field 1, wire type 7 (no such type).
BAD_WIRE_TYPE = b"\x0f\x00"


@pytest.fixture(scope="module")
def channel(verifier) -> Iterator[grpc.Channel]:
    server, (port,) = build_server(settings_with(), verifier)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(0).wait()


UNARY = ("/kiosk.v1.Kiosk/GetInfo", "/kiosk.v1.Kiosk/Verify", "/grpc.health.v1.Health/Check")


@pytest.mark.parametrize("payload", [NOT_PROTOBUF, BAD_WIRE_TYPE], ids=["endless varint", "bad wire type"])
@pytest.mark.parametrize("method", UNARY)
def test_unary_methods_refuse_bytes_that_are_not_protobuf(channel: grpc.Channel, method: str, payload: bytes):
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(method)(payload, timeout=TIMEOUT)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert method in error.details() and "not a valid" in error.details(), error.details()


def test_health_watch_refuses_bytes_that_are_not_protobuf(channel: grpc.Channel):
    stream = channel.unary_stream("/grpc.health.v1.Health/Watch")(NOT_PROTOBUF, timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "grpc.health.v1.HealthCheckRequest" in caught.value.details()


def test_a_session_refuses_a_message_that_is_not_protobuf(channel: grpc.Channel):
    stream = channel.stream_stream("/kiosk.v1.Kiosk/VerifySession")(iter([NOT_PROTOBUF]), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()


def test_valid_requests_still_decode(channel: grpc.Channel):
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    answer = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=TIMEOUT)
    assert health_pb2.HealthCheckResponse.FromString(answer).status == health_pb2.HealthCheckResponse.SERVING


def test_the_received_bytes_are_zeroed_once_parsed():
    received = pb.VerifyRequest(id_photo=b"\xff\xd8" + bytes(range(256)) * 4, request_id="r").SerializeToString()
    received = bytes(bytearray(received))  # a fresh object, as gRPC hands over
    message = wire.owning_deserializer(pb.VerifyRequest.FromString, "/kiosk.v1.Kiosk/Verify")(received)
    assert message.request_id == "r" and message.id_photo[:2] == b"\xff\xd8"
    assert received == bytes(len(received))
    garbage = bytes(bytearray(NOT_PROTOBUF * 4))
    refused = wire.owning_deserializer(pb.VerifyRequest.FromString, "/kiosk.v1.Kiosk/Verify")(garbage)
    assert isinstance(refused, wire.Undecodable) and "kiosk.v1.VerifyRequest" in refused.message
    assert garbage == bytes(len(garbage))
    assert scratch.wipe_bytes is wire.wipe_bytes
