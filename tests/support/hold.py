"""Test-only: hold a `kiosk serve` answer at the moment it is ready, so a test can scan the memory then.

Installed in the server process by a bootstrap (tests/integration/measures.py,
``HOLD_ANSWER``) with the gate file named in ``KIOSK_TEST_GATE``. While the gate file
exists, each Verify (after the servicer has built its answer or raised its error) and
each session (before its decision event, or after its error) writes ``GATE.held`` and
waits until the gate is removed. The answer is then sent as usual.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kiosk.server import servicer

# Longest a call is held; a test that forgot to open the gate does not hang the server.
HOLD_LIMIT_S = 120.0


def _hold(gate: Path) -> None:
    if not gate.exists():
        return
    Path(f"{gate}.held").write_text("")
    deadline = time.monotonic() + HOLD_LIMIT_S
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def install() -> None:
    gate = Path(os.environ["KIOSK_TEST_GATE"])
    cls = servicer.KioskServicer
    verify, session = cls.Verify, cls.VerifySession

    def held_verify(self, request, context):
        try:
            return verify(self, request, context)
        finally:
            _hold(gate)

    def held_session(self, requests, context):
        try:
            for event in session(self, requests, context):
                if event.WhichOneof("kind") == "decision":
                    _hold(gate)
                yield event
        except Exception:
            _hold(gate)
            raise

    cls.Verify, cls.VerifySession = held_verify, held_session
