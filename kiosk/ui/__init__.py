"""The reference kiosk screen: `kiosk ui` serves one static page and relays it to the service.

The page (``static/``: plain JavaScript, no build step) walks a person through consent,
the ID photo, the live camera session with its guidance and challenges, and the
decision. A browser cannot speak native gRPC, so ``bridge`` relays each WebSocket to
one ``VerifySession`` stream of the service. It needs the ``ui`` extra (aiohttp).
"""

from __future__ import annotations

from kiosk.errors import KioskError


def serve_ui(listen: str, service: str, *, card_reader: str | None = None) -> int:
    """Run the page and relay on ``listen`` (loopback only) until interrupted; the exit status."""
    try:
        from kiosk.ui import bridge
    except ImportError as e:
        if e.name != "aiohttp":
            raise
        raise KioskError("kiosk ui needs aiohttp: pip install 'kiosk[ui]'") from None
    return bridge.run(listen, service, card_reader=card_reader)
