"""Requests as they come off the wire: decoded once, the received bytes wiped, undecodable ones refused.

gRPC Python copies each request message out of its transport buffers into one
``bytes`` object and hands it to the method's request deserializer; after that gRPC
never reads it again, but it frees it only when the call's handler has returned and
the answer has been sent. For a Verify or a session frame that object is a whole
encoded photo. ``RequestDecoding`` wraps every method's deserializer (the kiosk's,
health's and reflection's alike) so that the received bytes are zeroed in place as
soon as protobuf has parsed them, whatever the outcome.

What it cannot reach, measured by tests/integration/test_retention.py and stated in
README "Zero retention": protobuf (upb) parses into its own arena, which keeps a copy
of every bytes field until gRPC drops the message right after sending the answer
(glibc then overwrites the freed arena, ``kiosk.runtime.hardening``), and gRPC's
core keeps the unused end of a connection's last read buffer until its next read or
the connection's idle close (``app.CONNECTION_IDLE_MS``).

Bytes that are not a valid message for the method are answered INVALID_ARGUMENT with
the method and the expected message type named, for every method: gRPC itself would
answer INTERNAL "Exception deserializing request!".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from kiosk.errors import InvalidRequest
from kiosk.pipeline.scratch import wipe_bytes
from kiosk.server import status


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request message that could not be decoded; ``message`` says why."""

    message: str

    def WhichOneof(self, group: str) -> None:  # noqa: N802 - protobuf's name
        # Like an empty message, so code that peeks at a stream's messages on the way
        # (the call log notes a session's request id) hands it on to where it is refused.
        return None


def _message_type(deserializer: Callable[[bytes], object]) -> str:
    # Generated code registers ``Message.FromString``: its class names the type.
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "protobuf")


def owning_deserializer(deserializer: Callable[[bytes], object], method: str) -> Callable[[bytes], object]:
    """``deserializer`` that zeroes the received bytes once parsed and returns ``Undecodable`` instead of raising."""
    expected = _message_type(deserializer)

    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - whatever the parser raises, the client's bytes are at fault
            return Undecodable(
                f"the request to {method} is not a valid {expected} message "
                f"({len(data)} bytes that protobuf cannot decode)"
            )
        finally:
            # gRPC's own copy of the message as received; nothing reads it after this.
            wipe_bytes(data)

    return deserialize


def _refuse(context: grpc.ServicerContext, method: str, request: Undecodable, kiosk_method: bool) -> None:
    if kiosk_method:
        status.abort(context, method, InvalidRequest(request.message))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


class RequestDecoding(grpc.ServerInterceptor):
    """Every method's requests through ``owning_deserializer``; ``Undecodable`` ones refused INVALID_ARGUMENT.

    ``kiosk_prefix`` ("/kiosk.v1.Kiosk/") marks the methods whose handlers map kiosk
    errors to statuses (``status.mapped_errors``): in their request streams an
    undecodable message raises ``InvalidRequest`` where the handler reads it.
    """

    def __init__(self, kiosk_prefix: str):
        self._kiosk_prefix = kiosk_prefix

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = details.method
        kiosk_method = method.startswith(self._kiosk_prefix)
        deserializer = owning_deserializer(handler.request_deserializer, method)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, kiosk_method), deserializer, serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary(method, handler.unary_stream, kiosk_method), deserializer, serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._stream(method, handler.stream_unary, kiosk_method), deserializer, serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream, kiosk_method), deserializer, serializer
        )

    @staticmethod
    def _unary(method: str, behaviour: Callable, kiosk_method: bool) -> Callable:
        def decoded(request, context: grpc.ServicerContext):
            if isinstance(request, Undecodable):
                _refuse(context, method, request, kiosk_method)
            return behaviour(request, context)

        return decoded

    @staticmethod
    def _stream(method: str, behaviour: Callable, kiosk_method: bool) -> Callable:
        def decoded(requests: Iterator, context: grpc.ServicerContext):
            def checked() -> Iterator:
                for request in requests:
                    if isinstance(request, Undecodable):
                        if kiosk_method:
                            # Read on the session's reader thread; the handler maps it (timing.StreamReader).
                            raise InvalidRequest(request.message)
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                    yield request

            return behaviour(checked(), context)

        return decoded
