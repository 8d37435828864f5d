"""Capacity of the service: who may hold a worker thread, a slot, and for how long.

Every call a client can make holds a gRPC worker thread from its first byte, before
any handler code runs (gRPC Python reads a unary request on the worker). So every
handler is turned into one that takes a request stream: the guard's code runs as soon
as the call arrives, admits or refuses it at once, and bounds how long the call may
wait for its request message (``first_message_timeout_s``). Calls come in two classes,
each with its own share of the worker threads (``app``): analysis calls (Verify,
VerifySession: ``max_concurrent_calls``, ``max_calls_per_client``) and light calls
(health, GetInfo, reflection: ``max_light_calls``, ``max_light_calls_per_client``), so
analysis calls can never exhaust what health is answered from. A client is its
mutual-TLS subject, or on a local listener its connection (``context.peer()``): one
local process holding every slot is not "the kiosk". A call past its whole time
budget is cancelled by ``kiosk.server.watchdog`` even where it is stuck inside gRPC
(a write to a client that gives no flow-control credit).

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

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

from google.protobuf.message import DecodeError

from dataclasses import dataclass

from kiosk.errors import InvalidRequest, Overloaded, RateLimited
from kiosk.server import status
from kiosk.server.ratelimit import RateLimiter
from kiosk.server.servicer import client_identity
from kiosk.server.watchdog import Watchdog

LOG = logging.getLogger("kiosk.server")

# An analysis call that has waited this fraction of first_message_timeout_s without
# sending its message may be evicted by a new call when its pool is full (a photo may
# take a moment to arrive on a busy machine; the first-message timeout cuts it anyway).
EVICTABLE_FRACTION = 0.5

# Time past a call's own deadline before the watchdog cancels it: the servicer's deadline
# checks answer first with a precise message whenever the handler can run at all.
WATCHDOG_SLACK_S = 2.0


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



@dataclass(frozen=True)
class CallLimits:
    """The capacity settings the guard enforces (``ServiceSettings``)."""

    max_concurrent_calls: int
    max_calls_per_client: int
    max_light_calls: int
    max_light_calls_per_client: int
    first_message_timeout_s: float
    call_deadline_s: float
    session_deadline_s: float
    # Streams that have no deadline of their own (health Watch, reflection) end with
    # their connection: max connection age plus its grace.
    stream_lifetime_s: float


class _Slot:
    """One acquired unit of a limit, released exactly once however the call ends."""

    __slots__ = ("pool", "client", "context", "held", "since")

    def __init__(self, pool: _Pool, client: str, context: grpc.ServicerContext):
        self.pool = pool
        self.client = client
        self.since = time.monotonic()
        # Kept only while the call waits for its first message (it may be evicted then).
        self.context: grpc.ServicerContext | None = context
        self.held = True

    def release(self) -> None:
        self.pool.release(self)

    def progressed(self) -> None:
        """The call's first message arrived: it is making progress and is no longer evictable."""
        self.pool.progressed(self)


class _Pool:
    """At most ``limit`` calls in flight, and at most ``per_client`` of them from one client.

    A call that has not yet sent its first message is not making progress: when the
    pool (or the client's share) is full, a new call evicts the oldest such call
    (cancels it) instead of being refused. An honest client sends its message with the
    call, so only a client that opens calls and sends nothing loses them, and such
    calls can never keep anyone else out, whatever their number of connections.
    """

    def __init__(self, name: str, limit: int, per_client: int, evictable_after_s: float):
        self.name = name
        self.limit = limit
        self.per_client = per_client
        # A call may be evicted only after waiting this long: an honest call's message is
        # then long overdue, while one that is merely still arriving (a busy machine, a
        # large photo on a slow link) is left alone.
        self.evictable_after_s = evictable_after_s
        self._lock = threading.Lock()
        self._total = 0
        self._by_client: dict[str, int] = {}
        self._waiting: dict[_Slot, None] = {}  # insertion-ordered: oldest first

    def acquire(self, client: str, context: grpc.ServicerContext) -> _Slot:
        with self._lock:
            mine = self._by_client.get(client, 0)
            victim = None
            stale = time.monotonic() - self.evictable_after_s
            if mine >= self.per_client:
                victim = next((s for s in self._waiting if s.client == client and s.since <= stale), None)
                if victim is None:
                    raise Overloaded(
                        f"this client already has {mine} {self.name} in flight "
                        f"(at most {self.per_client} per client): wait for one to finish"
                    )
            elif self._total >= self.limit:
                victim = next((s for s in self._waiting if s.since <= stale), None)
                if victim is None:
                    raise Overloaded(f"server busy: {self.limit} {self.name} in flight, retry later")
            evicted = None
            if victim is not None:
                evicted = victim.context
                self._release_locked(victim)
            slot = _Slot(self, client, context)
            self._total += 1
            self._by_client[client] = self._by_client.get(client, 0) + 1
            self._waiting[slot] = None
        if evicted is not None:
            LOG.info("evicting a call that sent no request message: %s full", self.name)
            evicted.cancel()
        return slot

    def progressed(self, slot: _Slot) -> None:
        with self._lock:
            self._waiting.pop(slot, None)
            slot.context = None

    def release(self, slot: _Slot) -> None:
        with self._lock:
            self._release_locked(slot)

    def _release_locked(self, slot: _Slot) -> None:
        if not slot.held:
            return
        slot.held = False
        slot.context = None
        self._waiting.pop(slot, None)
        self._total -= 1
        left = self._by_client[slot.client] - 1
        if left:
            self._by_client[slot.client] = left
        else:
            del self._by_client[slot.client]  # bounded by the calls in flight, whoever connects


class _Progress:
    """Passes a request stream through, telling the slot when the first message has arrived."""

    def __init__(self, requests: Iterator, slot: _Slot):
        self._requests = requests
        self._slot: _Slot | None = slot

    def __iter__(self) -> _Progress:
        return self

    def __next__(self):
        message = next(self._requests)
        if self._slot is not None:
            self._slot.progressed()
            self._slot = None
        return message


def client_key(context: grpc.ServicerContext) -> str:
    """Who a call counts against: the certificate subject, else the connection (peer address)."""
    identity = client_identity(context)
    if identity != "local":
        return identity
    return f"local:{context.peer()}"


class CallGuard(grpc.ServerInterceptor):
    def __init__(
        self,
        limits: CallLimits,
        guarded_methods: frozenset[str],
        rate_limiter: RateLimiter | None = None,
        watchdog: Watchdog | None = None,
        session_methods: frozenset[str] = frozenset(),
        light_pool: futures.ThreadPoolExecutor | None = None,
    ):
        self._limits = limits
        evictable = limits.first_message_timeout_s * EVICTABLE_FRACTION
        self._analysis = _Pool("calls", limits.max_concurrent_calls, limits.max_calls_per_client, evictable)
        # A light call's message is a few bytes sent with its headers: one still waiting when
        # the pool is full is not coming, so it may be evicted at once.
        self._light = _Pool("health/info calls", limits.max_light_calls, limits.max_light_calls_per_client, 0.0)
        self._guarded = guarded_methods
        self._sessions = session_methods
        self._rates = rate_limiter
        self._watchdog = watchdog or Watchdog()
        self._light_pool = light_pool

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        analysis = details.method in self._guarded
        method = details.method.rsplit("/", 1)[-1]
        limits = self._limits
        if analysis:
            deserializer = _tolerant(handler.request_deserializer)
            budget = limits.session_deadline_s if details.method in self._sessions else limits.call_deadline_s
        else:
            deserializer = handler.request_deserializer
            streaming = handler.response_streaming or handler.request_streaming
            budget = limits.stream_lifetime_s if streaming else limits.call_deadline_s
        budget += limits.first_message_timeout_s + WATCHDOG_SLACK_S
        admit = (lambda context: self._admit_analysis(method, context)) if analysis else (
            lambda context: self._admit_light(method, context)
        )
        serializer = handler.response_serializer
        pool = None if analysis else self._light_pool
        if handler.unary_unary is not None:
            behaviour = self._first_message(method, handler.unary_unary, analysis)
            return grpc.stream_unary_rpc_method_handler(
                _on_pool(self._unary_response(method, behaviour, admit, budget), pool), deserializer, serializer
            )
        if handler.unary_stream is not None:
            behaviour = self._first_message(method, handler.unary_stream, analysis)
            return grpc.stream_stream_rpc_method_handler(
                _on_pool(self._stream_response(method, behaviour, admit, budget), pool), deserializer, serializer
            )
        if handler.stream_unary is not None:
            behaviour = _checked_stream(handler.stream_unary) if analysis else handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(
                _on_pool(self._unary_response(method, behaviour, admit, budget), pool), deserializer, serializer
            )
        behaviour = _checked_stream(handler.stream_stream) if analysis else handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(
            _on_pool(self._stream_response(method, behaviour, admit, budget), pool), deserializer, serializer
        )

    # ------------------------------------------------------------------ admission

    def _admit_analysis(self, method: str, context: grpc.ServicerContext) -> _Slot:
        if self._rates is not None:
            try:
                self._rates.admit(client_identity(context))
            except RateLimited as e:
                status.abort(context, method, e)
        return self._take(self._analysis, method, context)

    def _admit_light(self, method: str, context: grpc.ServicerContext) -> _Slot:
        return self._take(self._light, method, context)

    def _take(self, pool: _Pool, method: str, context: grpc.ServicerContext) -> _Slot:
        try:
            slot = pool.acquire(client_key(context), context)
        except Overloaded as e:
            status.abort(context, method, e)
        # Also release when gRPC ends the call, in case a cancelled stream's generator
        # is never resumed to run its ``finally``.
        if not context.add_callback(slot.release):
            slot.release()
        return slot

    # ------------------------------------------------------------------ behaviours

    def _first_message(self, method: str, behaviour: Callable, analysis: bool) -> Callable:
        """A unary-request behaviour made to take the request stream, reading its one message in time."""
        timeout = self._limits.first_message_timeout_s
        watchdog = self._watchdog

        def first(requests: Iterator, context: grpc.ServicerContext):
            timer = watchdog.watch(context, timeout, f"{method}: no request message within {timeout:g} s")
            try:
                request = next(requests)
            except StopIteration:
                status.abort(context, method, InvalidRequest(f"{method} needs one request message; the client sent none"))
            except grpc.RpcError:
                # Cancelled: by the client, or by the watchdog for sending nothing in time.
                status.abort(context, method, status.ClientCancelled("the call was cancelled before its request message"))
            finally:
                timer.disarm()
            if analysis and isinstance(request, _Malformed):
                status.abort(context, method, InvalidRequest(MALFORMED_MESSAGE))
            return behaviour(request, context)

        return first

    def _unary_response(self, method: str, behaviour: Callable, admit: Callable, budget: float) -> Callable:
        watchdog = self._watchdog

        def guarded(requests: Iterator, context: grpc.ServicerContext):
            slot = admit(context)
            timer = watchdog.watch(context, budget, f"{method} ran past its {budget:g} s limit")
            try:
                return behaviour(_Progress(requests, slot), context)
            finally:
                timer.disarm()
                slot.release()

        return guarded

    def _stream_response(self, method: str, behaviour: Callable, admit: Callable, budget: float) -> Callable:
        watchdog = self._watchdog

        # A generator, so the slot is taken when gRPC starts iterating the responses,
        # and held until the last one is sent.
        def guarded(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            slot = admit(context)
            timer = watchdog.watch(context, budget, f"{method} ran past its {budget:g} s limit")
            try:
                yield from behaviour(_Progress(requests, slot), context)
            finally:
                timer.disarm()
                slot.release()

        return guarded


def _on_pool(behaviour: Callable, pool: futures.ThreadPoolExecutor | None) -> Callable:
    """Have gRPC run ``behaviour`` on ``pool`` (gRPC Python's ``experimental_thread_pool``)."""
    if pool is not None:
        behaviour.experimental_thread_pool = pool
    return behaviour


def _checked_stream(behaviour: Callable) -> Callable:
    """A request-streaming analysis behaviour whose undecodable messages become INVALID_ARGUMENT."""

    def checked(requests: Iterator, context: grpc.ServicerContext):
        return behaviour(_decoded(requests), context)

    return checked
