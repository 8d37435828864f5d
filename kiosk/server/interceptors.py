"""Concurrency limit for the expensive methods (Verify, VerifySession).

Past ``max_concurrent_calls`` a call is refused at once with RESOURCE_EXHAUSTED
rather than queued: on a kiosk board every verification competes for the same few
cores, so a queue would only turn one slow answer into several timed-out ones. The
thread pool has headroom beyond the limit (see ``app``) so that excess calls reach
this interceptor and get that clear answer. Before a slot is taken, the caller's
own rate (``kiosk.server.ratelimit``) is checked, so a client flooding the service
is refused without holding a slot even for a moment. A message that is not valid
protobuf is refused with INVALID_ARGUMENT like any other malformed request (gRPC
itself would answer INTERNAL "Exception deserializing request!"). Every call's log line and
metrics come from ``kiosk.server.observe``, which wraps this interceptor and so sees
its refusals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc

from google.protobuf.message import DecodeError

from kiosk.errors import InvalidRequest, Overloaded, RateLimited
from kiosk.server import status
from kiosk.server.ratelimit import RateLimiter
from kiosk.server.servicer import client_identity


MALFORMED_MESSAGE = "the request is not a valid kiosk.v1 message (protobuf decoding failed)"


class _Malformed:
    """Stands in for a request message that could not be decoded."""


def _tolerant(deserializer: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except DecodeError:
            return _Malformed()

    return deserialize


def _decoded(requests: Iterator) -> Iterator:
    # Raised on the stream reader's thread, which hands it to the handler (timing.StreamReader).
    for request in requests:
        if isinstance(request, _Malformed):
            raise InvalidRequest(MALFORMED_MESSAGE)
        yield request


class _Slot:
    """One acquired unit of the limit, released exactly once however the call ends."""

    def __init__(self, semaphore: threading.BoundedSemaphore):
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._semaphore.release()


class CallGuard(grpc.ServerInterceptor):
    def __init__(self, limit: int, guarded_methods: frozenset[str], rate_limiter: RateLimiter | None = None):
        self._limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)
        self._guarded = guarded_methods
        self._rates = rate_limiter

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method not in self._guarded:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler

    def _acquire(self, method: str, context: grpc.ServicerContext) -> _Slot:
        if self._rates is not None:
            try:
                self._rates.admit(client_identity(context))
            except RateLimited as e:
                status.abort(context, method, e)
        if not self._semaphore.acquire(blocking=False):
            status.abort(context, method, Overloaded(f"server busy: {self._limit} calls in flight, retry later"))
        slot = _Slot(self._semaphore)
        # Also release when gRPC ends the call, in case a cancelled stream's generator
        # is never resumed to run its ``finally``.
        if not context.add_callback(slot.release):
            slot.release()
        return slot

    def _unary(self, method: str, behaviour: Callable) -> Callable:
        def guarded(request, context: grpc.ServicerContext):
            if isinstance(request, _Malformed):
                status.abort(context, method, InvalidRequest(MALFORMED_MESSAGE))
            slot = self._acquire(method, context)
            try:
                return behaviour(request, context)
            finally:
                slot.release()

        return guarded

    def _stream(self, method: str, behaviour: Callable) -> Callable:
        # A generator, so the slot is taken when gRPC starts iterating the responses,
        # and held until the last one is sent.
        def guarded(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            slot = self._acquire(method, context)
            try:
                yield from behaviour(_decoded(requests), context)
            finally:
                slot.release()

        return guarded
