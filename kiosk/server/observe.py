"""One structured log line and the metrics of every ``kiosk.v1.Kiosk`` call, read off the wire.

``CallObserver`` is the outermost interceptor, so it also sees the calls ``CallGuard``
refuses. From a call it keeps only what the audit record may hold anyway, minus the
similarity: the request id, the client identity, the status, and from the response
the decision, reason code, liveness status, audit id and stage timings. It never
touches an image field or a score. Health and reflection calls pass untouched: systemd
and the back office poll health every few seconds, which would flood the journal.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from kiosk.logs import fields
from kiosk.server.metrics import ServiceMetrics
from kiosk.server.servicer import client_identity
from kiosk.v1 import kiosk_pb2 as pb

LOG = logging.getLogger("kiosk.server")

# The service refuses longer request ids; a hostile one is cut before it reaches a log.
MAX_LOGGED_ID_CHARS = 128


@dataclass
class CallRecord:
    """What is known about one call so far; filled in while it runs."""

    rpc: str
    client_identity: str
    request_id: str = ""
    decision: str = ""  # "match" | "no_match" | "retry", "" when none was given
    reason: str = ""
    liveness: str = ""  # "not_performed" | "passed" | "failed", "" when not reported
    failed_check: str = ""
    audit_id: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    def note_request_id(self, request_id: str) -> None:
        self.request_id = request_id[:MAX_LOGGED_ID_CHARS]

    def note_response(self, response: pb.VerifyResponse) -> None:
        """The decision part of a response; ``similarity`` and ``findings`` are not read."""
        self.note_request_id(response.request_id)
        self.decision = pb.VerifyResponse.Decision.Name(response.decision).lower()
        self.reason = response.retry_reason
        if response.HasField("liveness"):
            self.liveness = pb.LivenessOutcome.Status.Name(response.liveness.status).lower()
            self.failed_check = response.liveness.failed_check
        self.audit_id = response.audit_id
        self.timings_ms = {stage: round(ms, 1) for stage, ms in response.timings_ms.items()}


class _SessionStartReader:
    """Passes a request stream through, noting the request id of its first (Verify or start) message."""

    def __init__(self, requests: Iterator[pb.SessionRequest], record: CallRecord):
        self._requests = requests
        self._record = record
        self._first = True

    def __iter__(self) -> _SessionStartReader:
        return self

    def __next__(self) -> pb.SessionRequest:
        message = next(self._requests)
        if self._first:
            self._first = False
            if isinstance(message, pb.VerifyRequest):
                self._record.note_request_id(message.request_id)
            elif isinstance(message, pb.SessionRequest) and message.WhichOneof("kind") == "start":
                self._record.note_request_id(message.start.request_id)
        return message


class _Once:
    """Calls ``action`` the first time only, from whichever thread gets there first."""

    def __init__(self, action: Callable[[str], None]):
        self._action = action
        self._lock = threading.Lock()
        self._done = False

    def __call__(self, ended: str) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._action(ended)


class CallObserver(grpc.ServerInterceptor):
    def __init__(self, service_name: str, metrics: ServiceMetrics):
        self._prefix = f"/{service_name}/"
        self._metrics = metrics

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        rpc = details.method.removeprefix(self._prefix)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(rpc, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            # Verify and GetInfo as the call guard serves them: reading their one message itself.
            return grpc.stream_unary_rpc_method_handler(
                self._stream_unary(rpc, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(rpc, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _unary(self, rpc: str, behaviour: Callable) -> Callable:
        @functools.wraps(behaviour)  # keeps the call guard's thread pool (experimental_thread_pool)
        def observed(request, context: grpc.ServicerContext):
            record = CallRecord(rpc, client_identity(context))
            if isinstance(request, pb.VerifyRequest):
                record.note_request_id(request.request_id)
            started = time.perf_counter()
            ended = "UNKNOWN"  # what gRPC reports for an exception no one mapped
            try:
                response = behaviour(request, context)
                ended = "OK"
                if isinstance(response, pb.VerifyResponse):
                    record.note_response(response)
                return response
            finally:
                self._finish(record, context, started, ended)

        return observed

    def _stream_unary(self, rpc: str, behaviour: Callable) -> Callable:
        @functools.wraps(behaviour)  # keeps the call guard's thread pool (experimental_thread_pool)
        def observed(requests: Iterator, context: grpc.ServicerContext):
            record = CallRecord(rpc, client_identity(context))
            started = time.perf_counter()
            ended = "UNKNOWN"  # what gRPC reports for an exception no one mapped
            try:
                response = behaviour(_SessionStartReader(requests, record), context)
                ended = "OK"
                if isinstance(response, pb.VerifyResponse):
                    record.note_response(response)
                return response
            finally:
                self._finish(record, context, started, ended)

        return observed

    def _stream(self, rpc: str, behaviour: Callable) -> Callable:
        @functools.wraps(behaviour)  # keeps the call guard's thread pool (experimental_thread_pool)
        def observed(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            record = CallRecord(rpc, client_identity(context))
            started = time.perf_counter()
            finish = _Once(lambda ended: self._finish(record, context, started, ended))
            # A cancelled stream's generator may never be resumed to run its finally;
            # gRPC's end-of-call callback reports the call then.
            if not context.add_callback(lambda: finish("CANCELLED")):
                finish("CANCELLED")
            ended = "UNKNOWN"
            try:
                for event in behaviour(_SessionStartReader(requests, record), context):
                    if event.WhichOneof("kind") == "decision":
                        record.note_response(event.decision)
                    yield event
                ended = "OK"
            except GeneratorExit:
                ended = "CANCELLED"  # gRPC closed the stream: the client went away
                raise
            finally:
                finish(ended)

        return observed

    def _finish(self, record: CallRecord, context: grpc.ServicerContext, started: float, ended: str) -> None:
        seconds = time.perf_counter() - started
        # A status set by abort() wins over how the handler ended.
        code = context.code()
        status = code.name if code is not None else ended
        details = context.details() or b""
        if isinstance(details, bytes):
            details = details.decode("utf-8", "replace")
        self._metrics.observe_call(
            record.rpc,
            status,
            seconds,
            decision=record.decision,
            reason=record.reason,
            liveness=record.liveness,
            failed_check=record.failed_check,
            timings_ms=record.timings_ms,
        )
        outcome = f": {record.decision}" if record.decision else (f": {details}" if details else "")
        LOG.info(
            "%s %s%s",
            record.rpc,
            status,
            outcome,
            extra=fields(
                rpc=record.rpc,
                request_id=record.request_id,
                client_identity=record.client_identity,
                status=status,
                details=details,
                decision=record.decision,
                reason=record.reason,
                liveness=record.liveness,
                audit_id=record.audit_id,
                duration_ms=round(seconds * 1000.0, 1),
                timings_ms=record.timings_ms,
            ),
        )
