"""`kiosk ui`'s HTTP side and WebSocket relay, driven without a browser against a real `kiosk serve`.

The page is input like any other: every malformed message gets an error naming the
problem and closes the socket, never a traceback; a whole session over the relay
reaches the service's decision; nothing is served cacheable.
"""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiohttp
import pytest

from kiosk.ui import bridge
from tests.browser.conftest import Service, free_port, start_ui, stop_ui

# Every wait of these tests is bounded by this.
TIMEOUT = aiohttp.ClientTimeout(total=60)


def message(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + payload


def start(photo: bytes = b"", **changes) -> bytes:
    header = {"type": "start", "consent_version": "2026-01", "consent_granted": True, "id_photo": "upload"}
    return message({**header, **changes}, photo)


def frame(jpeg: bytes, timestamp_ms: int, nonce: str = "") -> bytes:
    return message({"type": "frame", "timestamp_ms": timestamp_ms, "nonce": nonce}, jpeg)


async def exchange(url: str, messages: list, *, pause_s: float = 0.0, headers: dict | None = None) -> tuple[list[dict], int | None]:
    """Send ``messages`` (bytes, or str for a text message) over one socket; every event received until it closes."""
    events: list[dict] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.ws_connect(url.replace("http://", "ws://") + "ws", headers=headers or {}, max_msg_size=0) as ws:
            try:
                for item in messages:
                    if ws.closed:
                        break
                    await (ws.send_str(item) if isinstance(item, str) else ws.send_bytes(item))
                    await asyncio.sleep(pause_s)
                async for received in ws:
                    if received.type == aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(received.data))
            except (aiohttp.ClientError, ConnectionError):
                # The relay closed while this side was still sending (the oversized message).
                return events, ws.close_code or "reset"
            return events, ws.close_code


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 90))


@pytest.fixture(scope="module")
def photos(faces: Path) -> dict:
    nuaa = sorted((faces / "nuaa__s01").glob("*.jpg"))
    return {"id": nuaa[0].read_bytes(), "frames": [p.read_bytes() for p in nuaa[1:6]]}


@pytest.fixture(scope="module")
def ui(service_no_challenges):
    """One relay for the module: each test's socket is a session of its own, as at a kiosk."""
    started = start_ui(service_no_challenges)
    yield started
    stop_ui(started)


def test_a_whole_session_over_the_relay_reaches_the_decision(ui, photos):
    frames = [frame(jpeg, 1000 + 100 * i) for i, jpeg in enumerate(photos["frames"] * 2)]
    events, code = run(exchange(ui.url, [start(photos["id"]), *frames], pause_s=0.1))
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "decision" and "frame_result" in kinds, kinds
    assert events[-1]["decision"] == "MATCH", events[-1]
    assert events[-1]["liveness"]["failed_check"] == "" and events[-1]["similarity"] > events[-1]["threshold"]
    found = [e["finding"] for e in events if e["type"] == "frame_result"]
    assert all(f["face_found"] and len(f["box"]) == 4 for f in found)
    assert code == 1000  # one session per socket: the relay closes it after the decision


@pytest.mark.parametrize(
    ("messages", "code", "says"),
    [
        (["hello"], "bad_message", "binary messages only"),
        ([b"\x00\x00"], "bad_message", "shorter than its 4-byte header"),
        ([struct.pack(">I", 10_000) + b"{}"], "bad_message", "over 4096 bytes"),
        ([struct.pack(">I", 3) + b"\xff\xfe{"], "bad_message", "not UTF-8 JSON"),
        ([message(["start"])], "bad_message", "not a JSON object"),
        ([frame(b"jpeg", 1)], "bad_message", "first message must be a start"),
        ([start(b"x", extra=1)], "bad_message", "unknown fields ['extra']"),
        ([start(b"x", consent_granted="yes")], "bad_message", "consent_granted must be bool"),
        ([start(b"x", consent_granted=False)], "consent", "not accepted the consent"),
        ([start(b"")], "bad_message", "no ID photo"),
        ([start(b"", id_photo="scanner")], "bad_message", 'id_photo must be "upload" or "card"'),
        ([start(b"", id_photo="card")], "card_reader", "no card reader configured"),
        ([start(b"x", consent_version="v" * 200)], "bad_message", "at most 128 chars"),
    ],
)
def test_bad_start_messages_get_a_named_error(ui, messages, code, says):
    events, close = run(exchange(ui.url, messages))
    assert events == [{"type": "error", "code": code, "message": events[0]["message"]}], events
    assert says in events[0]["message"]
    assert close == 1000


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (frame(b"", 5000), "no image"),
        (message({"type": "frame", "timestamp_ms": True, "nonce": ""}, b"x"), "timestamp_ms must be int"),
        (message({"type": "frame", "timestamp_ms": -1, "nonce": ""}, b"x"), "out of range"),
        (frame(b"x", 5000, nonce="n" * 129), "at most 128 chars"),
        (start(b"x"), "only frame messages"),
        ("text", "binary messages only"),
    ],
)
def test_bad_frames_end_the_session_with_a_named_error(ui, photos, bad, says):
    events, _ = run(exchange(ui.url, [start(photos["id"]), frame(photos["frames"][0], 1000), bad], pause_s=0.3))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "bad_message", events
    assert says in events[-1]["message"]


def test_the_service_refusal_reaches_the_page(ui, photos):
    events, _ = run(exchange(ui.url, [start(photos["id"], consent_version="1999-01"), frame(photos["frames"][0], 1000)]))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "service", events
    assert "1999-01" in events[-1]["message"] and "Traceback" not in events[-1]["message"]


def test_an_oversized_message_closes_the_socket(ui, photos):
    events, close = run(exchange(ui.url, [start(b"\xff" * (bridge.MAX_MESSAGE_BYTES + 1))]))
    # aiohttp refuses it while reading, with close code 1009 "message too big" (the page
    # shows its own text for that code); a client still sending sees the connection reset.
    assert close in (1009, "reset") and events == [], (close, events)
    # The relay goes on serving the next customer.
    frames = [frame(jpeg, 1000 + 100 * i) for i, jpeg in enumerate(photos["frames"] * 2)]
    events, _ = run(exchange(ui.url, [start(photos["id"]), *frames], pause_s=0.1))
    assert events[-1]["type"] == "decision", events[-1]


def test_frames_faster_than_the_service_are_refused(ui, photos):
    burst = [frame(photos["frames"][0], 1000 + 30 * i) for i in range(100)]
    events, _ = run(exchange(ui.url, [start(photos["id"]), *burst]))
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == "busy", [e["type"] for e in events]


def test_http_answers_are_never_cacheable_and_strict(ui):
    async def fetch():
        answers = {}
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            for path in ("/", "/app.js", "/style.css", "/api/info", "/nothing-here", "/static/app.js"):
                async with session.get(ui.url.rstrip("/") + path) as r:
                    answers[path] = (r.status, r.headers.get("Cache-Control"), r.headers.get("Content-Security-Policy"), await r.read())
            host = ui.url.split("//")[1].rstrip("/")
            async with session.get(ui.url, headers={"Host": f"rebound.example:{host.split(':')[1]}"}) as r:
                answers["rebound"] = (r.status, r.headers.get("Cache-Control"), None, b"")
            async with session.get(ui.url + "ws", headers={"Origin": "http://elsewhere.example", "Connection": "Upgrade",
                                                            "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
                answers["cross-origin"] = (r.status, r.headers.get("Cache-Control"), None, b"")
        return answers

    answers = run(fetch())
    for path, (status, cache, _, _) in answers.items():
        assert cache == "no-store", path
    assert [answers[p][0] for p in ("/", "/app.js", "/style.css", "/api/info")] == [200] * 4
    assert "default-src 'none'" in answers["/"][2]
    assert answers["/nothing-here"][0] == answers["/static/app.js"][0] == 404
    assert answers["rebound"][0] == 403 and answers["cross-origin"][0] == 403
    info = json.loads(answers["/api/info"][3])
    assert info["accepted_consent_versions"] == ["2026-01"] and info["card_reader"] is False
    assert 0 < info["max_image_bytes"] < bridge.MAX_MESSAGE_BYTES


def test_a_service_that_is_not_there(ui_factory, tmp_path):
    nothing = Service(process=None, address=f"127.0.0.1:{free_port()}", log_path=tmp_path / "none.log")
    ui = ui_factory(nothing)

    async def info():
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.get(ui.url + "api/info") as r:
                return r.status, await r.json()

    status, body = run(info())
    assert status == 503 and "UNAVAILABLE" in body["error"]
    events, _ = run(exchange(ui.url, [start(b"x")]))
    assert events[-1]["code"] == "service" and "UNAVAILABLE" in events[-1]["message"]


@pytest.mark.parametrize(
    ("listen", "says"),
    [("0.0.0.0:8080", "listen on loopback"), ("192.0.2.1:8080", "listen on loopback"), ("8080", "expected HOST:PORT")],
)
def test_listen_is_loopback_only(listen, says):
    from kiosk.errors import KioskError

    with pytest.raises(KioskError, match=says):
        bridge.parse_listen(listen)
    assert bridge.parse_listen("[::1]:0") == ("::1", 0)


def test_kiosk_ui_refuses_a_network_address_in_one_line():
    import subprocess
    import sys

    from tests.browser.conftest import REPO

    result = subprocess.run(
        [sys.executable, "-m", "kiosk", "ui", "--listen", "0.0.0.0:8080", "--service", "127.0.0.1:1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("kiosk: --listen '0.0.0.0:8080'") and result.stderr.count("\n") == 1, result.stderr
