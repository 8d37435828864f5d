"""Concurrency limit for the expensive methods (Verify, VerifySession).

Past ``max_concurrent_calls`` a call is refused at once with RESOURCE_EXHAUSTED
rather than queued: on a kiosk board every verification competes for the same few
cores, so a queue would only turn one slow answer into several timed-out ones. The
thread pool has headroom beyond the limit (see ``app``) so that excess calls reach
this interceptor and get that clear answer. Every call's log line and metrics come
from ``kiosk.server.observe``, which wraps this interceptor and so sees its refusals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc

from kiosk.errors import Overloaded
from kiosk.server import status


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
    def __init__(self, limit: int, guarded_methods: frozenset[str]):
        self._limit = limit
        self._semaphore = threading.BoundedSemaphore(limit)
        self._guarded = guarded_methods

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
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _acquire(self, method: str, context: grpc.ServicerContext) -> _Slot:
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
                yield from behaviour(requests, context)
            finally:
                slot.release()

        return guarded
