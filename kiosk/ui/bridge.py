"""The page's server: three static files, the service's public facts, and a WebSocket relay.

One WebSocket carries one live session: the page sends a start message and then camera
frames, the relay turns each into a ``SessionRequest`` of one ``VerifySession`` stream
(grpc.aio, the generated stubs in kiosk/v1) and sends every ``SessionEvent`` back to the
page as JSON. After the decision or an error the relay closes the socket.

Page -> relay, binary messages only::

    uint32 big-endian N | N bytes of UTF-8 JSON (the header) | payload

    start  {"type": "start", "consent_version": str, "consent_granted": true,
            "id_photo": "upload" | "card"}        payload: the ID photo ("upload") or empty
    frame  {"type": "frame", "timestamp_ms": int, "nonce": str}   payload: a JPEG

Relay -> page, JSON text: ``guidance``, ``frame_result``, ``prompt``, ``decision`` (the
proto's fields in snake_case) and ``{"type": "error", "code", "message"}``, which
names what was wrong and ends the session. Nothing here keeps a frame: each is handed
to gRPC and dropped, and nothing of one is logged.

The relay is strict because a page is input like any other: bounded message and header
sizes, exact header fields and types, at most ``MAX_IN_FLIGHT`` frames unanswered, time
limits on every wait, the socket's Origin and Host checked (another web page, or a DNS
name rebound to 127.0.0.1, cannot drive the camera session), and loopback only: the
page is plain HTTP, which browsers allow the camera on only for localhost, and frames
must not cross a network in clear.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import struct
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import grpc
from aiohttp import WSCloseCode, WSMsgType, web

from kiosk.errors import KioskError
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc

log = logging.getLogger("kiosk.ui")

# A start message carries the ID photo: the service's default max_image_bytes (3 MiB)
# plus room for the header; a camera frame (a 640x480 JPEG is ~50 KB) is far smaller.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_FRAME_BYTES = 2 * 1024 * 1024
MAX_HEADER_BYTES = 4096
MAX_TEXT_CHARS = 128
# Frames sent to the service and not yet answered by a frame_result (at most 64 x 2 MiB
# queued). The page holds back at 60; more means a page that ignores the protocol.
MAX_IN_FLIGHT = 64
# Open sessions at once: a kiosk has one screen (2 lets a reloaded page start while
# the old socket is still closing).
MAX_SESSIONS = 2
# Waits: for the start message after the socket opens, for each next frame, for the
# whole stream (the service ends its own sessions sooner: session_deadline_s), for GetInfo.
START_TIMEOUT_S = 30.0
FRAME_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 120.0
INFO_TIMEOUT_S = 5.0

_STATIC = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}
_HEADERS = {
    # Frames and decisions are personal: nothing the page or relay serves may be cached.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}
_DECISIONS = {pb.VerifyResponse.MATCH: "MATCH", pb.VerifyResponse.NO_MATCH: "NO_MATCH", pb.VerifyResponse.RETRY: "RETRY"}
_LIVENESS = {
    pb.LivenessOutcome.NOT_PERFORMED: "NOT_PERFORMED",
    pb.LivenessOutcome.PASSED: "PASSED",
    pb.LivenessOutcome.FAILED: "FAILED",
}


class PageError(Exception):
    """The page broke the relay protocol (or asked for what cannot be done): shown to it, then the socket closes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- page messages


def parse_message(data: bytes) -> tuple[dict, bytes]:
    """Split a page message into its JSON header and payload; PageError when malformed."""
    if len(data) < 4:
        raise PageError("bad_message", "message shorter than its 4-byte header length")
    (size,) = struct.unpack_from(">I", data)
    if size > MAX_HEADER_BYTES or 4 + size > len(data):
        raise PageError("bad_message", f"header length {size} is over {MAX_HEADER_BYTES} bytes or past the message")
    try:
        header = json.loads(bytes(data[4 : 4 + size]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PageError("bad_message", "header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise PageError("bad_message", "header is not a JSON object")
    return header, bytes(data[4 + size :])


def _fields(header: dict, kind: str, expected: dict[str, type]) -> None:
    if set(header) != set(expected):
        unknown, missing = sorted(set(header) - set(expected)), sorted(set(expected) - set(header))
        raise PageError("bad_message", f"{kind} header: unknown fields {unknown}, missing fields {missing}")
    for name, kind_of in expected.items():
        value = header[name]
        # bool is an int in Python, never a timestamp here.
        if not isinstance(value, kind_of) or (kind_of is int and isinstance(value, bool)):
            raise PageError("bad_message", f"{kind} header: {name} must be {kind_of.__name__}")
        if isinstance(value, str) and (len(value) > MAX_TEXT_CHARS or not value.isprintable()):
            raise PageError("bad_message", f"{kind} header: {name} must be printable, at most {MAX_TEXT_CHARS} chars")


@dataclass(frozen=True)
class Start:
    consent_version: str
    id_photo_source: str  # "upload" | "card"


def parse_start(header: dict, payload: bytes) -> Start:
    if header.get("type") != "start":
        raise PageError("bad_message", "the first message must be a start message")
    _fields(header, "start", {"type": str, "consent_version": str, "consent_granted": bool, "id_photo": str})
    if not header["consent_granted"]:
        raise PageError("consent", "the person has not accepted the consent text")
    if header["id_photo"] not in ("upload", "card"):
        raise PageError("bad_message", 'start header: id_photo must be "upload" or "card"')
    if header["id_photo"] == "upload" and not payload:
        raise PageError("bad_message", "start message: no ID photo after the header")
    if header["id_photo"] == "card" and payload:
        raise PageError("bad_message", "start message: the card reader's photo is read here, send none")
    return Start(header["consent_version"], header["id_photo"])


def parse_frame(header: dict, payload: bytes) -> pb.SessionRequest:
    if header.get("type") != "frame":
        raise PageError("bad_message", "after the start message only frame messages may follow")
    _fields(header, "frame", {"type": str, "timestamp_ms": int, "nonce": str})
    if not 0 <= header["timestamp_ms"] < 2**53:
        raise PageError("bad_message", "frame header: timestamp_ms out of range")
    if not payload:
        raise PageError("bad_message", "frame message: no image after the header")
    if len(payload) > MAX_FRAME_BYTES:
        raise PageError("bad_message", f"frame of {len(payload)} bytes is over {MAX_FRAME_BYTES}")
    frame = pb.CameraFrame(encoded=payload, timestamp_ms=header["timestamp_ms"], challenge_nonce=header["nonce"])
    return pb.SessionRequest(frame=frame)


# --------------------------------------------------------------------------- service events


def _finding(finding: pb.FaceFinding) -> dict:
    box = finding.box
    return {
        "face_found": finding.face_found,
        "box": [box.x, box.y, box.width, box.height] if finding.HasField("box") else None,
        "quality_ok": all(q.passed for q in finding.quality),
    }


def event_to_page(event: pb.SessionEvent) -> dict:
    """One SessionEvent as the page's JSON: decisions, scores, boxes, never pixels (the service sends none)."""
    kind = event.WhichOneof("kind")
    if kind == "guidance":
        items = [{"code": i.code, "message": i.message} for i in event.guidance.items]
        return {"type": "guidance", "frame_index": event.guidance.frame_index, "items": items}
    if kind == "frame_result":
        result = event.frame_result
        finding = _finding(result.finding) if result.HasField("finding") else None
        return {"type": "frame_result", "frame_index": result.frame_index, "finding": finding}
    if kind == "prompt":
        p = event.prompt
        return {
            "type": "prompt",
            "challenge": pb.ChallengePrompt.Challenge.Name(p.challenge),
            "nonce": p.nonce,
            "deadline_ms": p.deadline_ms,
            "step": p.step,
            "message": p.message,
        }
    if kind == "decision":
        d = event.decision
        return {
            "type": "decision",
            "decision": _DECISIONS.get(d.decision, "RETRY"),
            "retry_reason": d.retry_reason,
            "message": d.message,
            "similarity": d.similarity if d.HasField("similarity") else None,
            "threshold": d.threshold,
            "liveness": {
                "status": _LIVENESS.get(d.liveness.status, "NOT_PERFORMED"),
                "failed_check": d.liveness.failed_check,
            },
            "audit_id": d.audit_id,
        }
    raise PageError("service", f"the service sent an unknown event {kind!r}")


# --------------------------------------------------------------------------- one session


class SessionRelay:
    """One WebSocket <-> one VerifySession stream."""

    def __init__(self, ws: web.WebSocketResponse, stub: kiosk_pb2_grpc.KioskStub, card_reader: Path | None):
        self.ws = ws
        self.stub = stub
        self.card_reader = card_reader
        self.in_flight = 0

    async def _receive(self, timeout: float, waiting_for: str) -> bytes | None:
        """The next binary message; None when the page closed the socket."""
        try:
            message = await self.ws.receive(timeout=timeout)
        except asyncio.TimeoutError:
            raise PageError("timeout", f"no {waiting_for} within {timeout:g} s") from None
        if message.type == WSMsgType.BINARY:
            return message.data
        if message.type == WSMsgType.TEXT:
            raise PageError("bad_message", "text message: the page sends binary messages only")
        # CLOSE / CLOSING / CLOSED, or ERROR (e.g. over max_msg_size, which aiohttp
        # answers itself with close code 1009): the session is over either way.
        return None

    def _id_photo(self, start: Start, payload: bytes) -> bytes:
        if start.id_photo_source == "upload":
            return payload
        if self.card_reader is None:
            raise PageError("card_reader", "this kiosk has no card reader configured (kiosk ui --card-reader)")
        try:
            with open(self.card_reader, "rb") as f:
                photo = f.read(MAX_MESSAGE_BYTES + 1)
        except OSError as e:
            raise PageError("card_reader", f"no ID photo from the card reader ({e.strerror}): insert the card again") from None
        if not photo or len(photo) > MAX_MESSAGE_BYTES:
            raise PageError("card_reader", f"the card reader's photo is empty or over {MAX_MESSAGE_BYTES} bytes")
        return photo

    async def run(self) -> None:
        data = await self._receive(START_TIMEOUT_S, "start message")
        if data is None:
            return
        header, payload = parse_message(data)
        start = parse_start(header, payload)
        opening = pb.SessionStart(
            request_id=uuid.uuid4().hex,
            id_photo=self._id_photo(start, payload),
            consent=pb.Consent(granted=True, text_version=start.consent_version),
        )
        del data, payload
        call = self.stub.VerifySession(timeout=SESSION_TIMEOUT_S)
        tasks: list[asyncio.Future] = []
        try:
            await call.write(pb.SessionRequest(start=opening))
            del opening
            events = asyncio.ensure_future(self._service_to_page(call))
            frames = asyncio.ensure_future(self._page_to_service(call))
            tasks = [events, frames]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            failures = [task.exception() for task in tasks if task in done]
            for failure in failures:
                if failure is not None:
                    raise failure
            # Either the decision went out, or the page closed the socket mid-session
            # (its reset): the call is cancelled below.
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
            # Collect what the cancelled side ended with, so nothing is logged as "never retrieved".
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _page_to_service(self, call) -> None:
        while True:
            data = await self._receive(FRAME_TIMEOUT_S, "camera frame")
            if data is None:
                return
            header, payload = parse_message(data)
            request = parse_frame(header, payload)
            del data, payload
            self.in_flight += 1
            if self.in_flight > MAX_IN_FLIGHT:
                raise PageError("busy", f"more than {MAX_IN_FLIGHT} frames unanswered: send fewer frames")
            await call.write(request)
            del request

    async def _service_to_page(self, call) -> None:
        while True:
            event = await call.read()
            if event is grpc.aio.EOF:
                raise PageError("service", "the service ended the session without a decision")
            if event.WhichOneof("kind") == "frame_result":
                self.in_flight -= 1
            await self.ws.send_str(json.dumps(event_to_page(event)))
            if event.WhichOneof("kind") == "decision":
                return


# --------------------------------------------------------------------------- the web app


def _read_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("kiosk.ui") / "static"
    return {route: ((folder / name).read_bytes(), kind) for route, (name, kind) in _STATIC.items()}


async def _send_error(ws: web.WebSocketResponse, code: str, message: str) -> None:
    if not ws.closed:
        await ws.send_str(json.dumps({"type": "error", "code": code, "message": message}))


def build_app(service: str, card_reader: str | None, allowed_hosts: set[str] | None = None) -> web.Application:
    """The aiohttp app; ``allowed_hosts`` (Host header values) is filled in by ``start`` once the port is bound."""
    app = web.Application(client_max_size=64 * 1024)
    static = _read_static()
    reader = Path(card_reader) if card_reader else None
    hosts = allowed_hosts if allowed_hosts is not None else set()
    sessions = asyncio.Semaphore(MAX_SESSIONS)

    async def open_channel(app: web.Application) -> None:
        app["channel"] = grpc.aio.insecure_channel(service)
        app["stub"] = kiosk_pb2_grpc.KioskStub(app["channel"])

    async def close_channel(app: web.Application) -> None:
        await app["channel"].close()

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(_HEADERS)

    @web.middleware
    async def checks(request: web.Request, handler):
        # A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) sends its own Host.
        if hosts and request.host not in hosts:
            return web.Response(status=403, text="unknown Host\n")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as e:  # never a traceback to the page
            log.error("kiosk ui: %s on %s %s", type(e).__name__, request.method, request.path)
            return web.json_response({"error": "internal error of the kiosk screen"}, status=500)

    async def page(request: web.Request) -> web.Response:
        body, kind = static[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def info(request: web.Request) -> web.Response:
        try:
            answer = await request.app["stub"].GetInfo(pb.InfoRequest(), timeout=INFO_TIMEOUT_S)
        except grpc.aio.AioRpcError as e:
            return web.json_response({"error": f"service {service}: {e.code().name}: {e.details()}"}, status=503)
        return web.json_response(
            {
                "accepted_consent_versions": list(answer.accepted_consent_versions),
                "max_image_bytes": min(answer.limits.max_image_bytes or MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES - MAX_HEADER_BYTES - 4),
                "session_deadline_s": answer.limits.session_deadline_s,
                "card_reader": reader is not None,
                "service_version": answer.service_version,
            }
        )

    async def socket(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{request.host}":
            return web.Response(status=403, text="cross-origin WebSocket refused\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, receive_timeout=None, compress=False)
        await ws.prepare(request)
        if sessions.locked():
            await _send_error(ws, "busy", f"{MAX_SESSIONS} sessions are already open on this kiosk")
            await ws.close()
            return ws
        async with sessions:
            try:
                await SessionRelay(ws, request.app["stub"], reader).run()
            except PageError as e:
                await _send_error(ws, e.code, e.message)
            except grpc.aio.AioRpcError as e:
                await _send_error(ws, "service", f"{e.code().name}: {e.details()}")
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            except Exception as e:  # never a traceback to the page; the log says what kind
                log.error("kiosk ui: session relay failed: %s", type(e).__name__)
                await _send_error(ws, "internal", "internal error of the kiosk screen")
            finally:
                if not ws.closed:
                    await ws.close(code=WSCloseCode.OK)
        return ws

    app.on_startup.append(open_channel)
    app.on_cleanup.append(close_channel)
    app.on_response_prepare.append(headers)
    app.middlewares.append(checks)
    for route in _STATIC:
        app.router.add_get(route, page)
    app.router.add_get("/api/info", info)
    app.router.add_get("/ws", socket)
    return app


# --------------------------------------------------------------------------- running it


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:8080", "localhost:8080" or "[::1]:8080" -> (host, port); loopback only."""
    host, sep, port_text = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise KioskError(f"--listen {listen!r}: expected HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise KioskError(
            f"--listen {listen!r}: kiosk ui serves plain HTTP and live camera frames; listen on loopback "
            "(127.0.0.1, ::1 or localhost), where the browser also allows the camera"
        )
    return host, int(port_text)


async def start(listen: str, service: str, card_reader: str | None = None) -> tuple[web.AppRunner, str]:
    """Start the page and relay; the runner (``await runner.cleanup()`` stops it) and the page's URL."""
    host, port = parse_listen(listen)
    hosts: set[str] = set()
    runner = web.AppRunner(build_app(service, card_reader, hosts), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise KioskError(f"cannot listen on {listen}: {e.strerror}") from None
    bound = runner.addresses[0][1]
    hosts.update({f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"})
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}/"


async def _serve(listen: str, service: str, card_reader: str | None) -> int:
    runner, url = await start(listen, service, card_reader)
    print(f"kiosk ui: {url} (service {service})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def run(listen: str, service: str, *, card_reader: str | None = None) -> int:
    """`kiosk ui`: serve until SIGINT or SIGTERM; exit status 0."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return asyncio.run(_serve(listen, service, card_reader))
