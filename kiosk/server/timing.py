"""Server-side call deadlines, and reading a request stream without waiting past one.

gRPC gives a Python handler the client's deadline but no deadline of its own, and a
request iterator that blocks until the client sends something. A kiosk that opens a
session and then stalls would hold a concurrency slot for as long as its own deadline
says; ``StreamReader`` lets the handler give up at the server's deadline instead. The
same timed read is what liveness challenges need (a prompt has its own deadline).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc

from kiosk.errors import DeadlineExceeded, KioskError
from kiosk.server.status import ClientCancelled

T = TypeVar("T")


@dataclass(frozen=True)
class CallDeadline:
    """The earlier of the client's deadline and the server's limit for this call."""

    expires_at: float  # time.monotonic() seconds
    budget_s: float

    @classmethod
    def start(cls, context: grpc.ServicerContext, server_limit_s: float) -> CallDeadline:
        client_remaining = context.time_remaining()  # very large when the client set none
        budget = server_limit_s if client_remaining is None else min(server_limit_s, client_remaining)
        return cls(time.monotonic() + budget, budget)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def check(self, stage: str) -> None:
        """Raise ``DeadlineExceeded`` if the deadline has passed; ``stage`` says where we are."""
        if time.monotonic() >= self.expires_at:
            raise DeadlineExceeded(f"the call ran past its {self.budget_s:g} s deadline {stage}")


class _End:
    """The stream ended (the client half-closed)."""


class _Cancelled:
    """The client cancelled the call."""


class StreamReader(Generic[T]):
    """Reads a request stream one message at a time on a helper thread, with a timeout.

    The helper reads only when the handler asks, so nothing is read ahead of the
    handler and gRPC flow control still slows a client that sends too fast. Use as a
    context manager; the helper ends when the call does.
    """

    def __init__(self, requests: Iterator[T]):
        self._requests = requests
        self._wanted: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[T | _End | _Cancelled | KioskError] = queue.SimpleQueue()
        self._pending = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="kiosk-stream-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._wanted.get():
            try:
                # Straight into the queue: this thread holds no message (and so no photo)
                # while it waits for the next one.
                self._results.put(next(self._requests))
            except StopIteration:
                self._results.put(_End())
                return
            except grpc.RpcError as e:
                # gRPC raises this from a frame that holds it: a reference cycle that keeps
                # every frame of the traceback, and the messages they hold, alive until the
                # garbage collector happens to run. Clearing the frames frees them now.
                traceback.clear_frames(e.__traceback__)
                self._results.put(_Cancelled())
                return
            except KioskError as e:
                # The request stream refused a message (one that is not valid protobuf):
                # the handler raises it in its own thread.
                self._results.put(e)
                return

    def read(self, deadline: CallDeadline, waiting_for: str, idle_s: float | None = None) -> T | None:
        """The next message, or None once the client has half-closed the stream.

        Raises ``DeadlineExceeded`` if nothing arrives before ``deadline`` or within
        ``idle_s`` seconds, and ``ClientCancelled`` if the client cancelled the call.
        """
        if self._ended:
            return None
        if not self._pending:
            self._wanted.put(True)
            self._pending = True
        remaining = deadline.remaining()
        idle = idle_s is not None and idle_s < remaining
        try:
            result = self._results.get(timeout=idle_s if idle else remaining)
        except queue.Empty:
            if idle:
                raise DeadlineExceeded(f"nothing received for {idle_s:g} s while waiting for {waiting_for}") from None
            raise DeadlineExceeded(
                f"the call ran past its {deadline.budget_s:g} s deadline waiting for {waiting_for}"
            ) from None
        self._pending = False
        if isinstance(result, _Cancelled):
            raise ClientCancelled("the client cancelled the call")
        if isinstance(result, KioskError):
            self._ended = True
            raise result
        if isinstance(result, _End):
            self._ended = True
            return None
        return result

    def close(self) -> None:
        # A helper blocked in next() returns once the call ends; an idle one stops here.
        self._wanted.put(False)

    def __enter__(self) -> StreamReader[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
