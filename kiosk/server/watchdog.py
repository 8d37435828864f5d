"""Cancel calls that outlive their limit wherever they are stuck, from one timer thread.

A gRPC Python handler cannot give up on its own while it is blocked inside gRPC: a
unary call waits for a request message the client never sends, and a response write
waits for flow-control credit a client never gives (SETTINGS_INITIAL_WINDOW_SIZE 0).
Either would hold a worker thread and a slot for as long as the connection stays
open. ``Watchdog.watch`` arms a timer per call; when it fires, the call is cancelled
(``ServicerContext.cancel``), which completes gRPC's pending operations so the blocked
thread returns and the call's slot is released. Calls that make progress disarm or
outlast nothing: the servicer's own deadlines fire first with a precise message; this
is the bound that holds when the handler cannot run at all.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

import grpc

LOG = logging.getLogger("kiosk.server")


class Timer:
    """One armed limit; ``disarm`` it once what it guarded is done."""

    __slots__ = ("context", "reason", "armed")

    def __init__(self, context: grpc.ServicerContext, reason: str):
        self.context = context
        self.reason = reason
        self.armed = True

    def disarm(self) -> None:
        self.armed = False
        # Drop the context now rather than when the timer's time comes.
        self.context = None


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="kiosk-watchdog", daemon=True)
        self._thread.start()

    def watch(self, context: grpc.ServicerContext, seconds: float, reason: str) -> Timer:
        """Cancel the call ``seconds`` from now unless the timer is disarmed first."""
        timer = Timer(context, reason)
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), timer))
            self._wake.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, timer = heapq.heappop(self._heap)
            context = timer.context
            if timer.armed and context is not None and context.is_active():
                LOG.info("cancelling a call: %s", timer.reason)
                context.cancel()
            timer.disarm()
