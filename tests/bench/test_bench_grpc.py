"""Verify latency end to end over gRPC on localhost vs the in-process pipeline, same inputs, same run;
and frames per second streamed through a VerifySession.

Under the suite's default ``--benchmark-disable`` each runs once, untimed. Timed:

    python -m pytest tests/bench/test_bench_grpc.py -n 0 --benchmark-enable

runs ``ROUNDS`` calls of each; the report shows min/median/mean, and ``extra_info``
(``--benchmark-json``) adds the p95 and the hardware profile the numbers belong to.
``faces`` and ``verifier`` come from tests/conftest.py.

``test_session_stream_grpc`` streams ``STREAM_FRAMES`` camera frames (timestamps 33 ms
apart, sent as fast as the server answers) through one session per round with the
kiosk client, and records frames per second from the first frame result to the last
(the ID photo's analysis, once per session, is not in it).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import grpc
import pytest

from kiosk.client import KioskClient, RemoteError
from kiosk.pipeline.session import Frame
from kiosk.pipeline.types import Decision
from kiosk.server.calls import Consent, FrameEvent
from kiosk.pipeline.verifier import Verifier
from kiosk.server.app import build_server
from kiosk.settings import ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc

ROUNDS = 30
STREAM_ROUNDS = 3
# One second of 30 fps frames: inside the first challenge's window, so a still photo
# streams to the end without the session failing its liveness check.
STREAM_FRAMES = 30
# A loaded CI machine can take a second a frame: deadlines far beyond any real session.
STREAM_DEADLINE_S = 600.0


@dataclasses.dataclass(frozen=True)
class Pair:
    id_photo: bytes
    live_photo: bytes


@pytest.fixture(scope="module")
def pair(faces: Path) -> Pair:
    photos = sorted((faces / "lfw__Martin_Scorsese").glob("*.jpg"))
    return Pair(photos[0].read_bytes(), photos[1].read_bytes())


@pytest.fixture(scope="module")
def address(verifier: Verifier):
    # Rate limit off: the benchmark is one client calling back to back on purpose.
    settings = dataclasses.replace(
        Settings(),
        service=ServiceSettings(listen=("127.0.0.1:0",), rate_limit_per_s=0, session_deadline_s=STREAM_DEADLINE_S),
    )
    server, (port,) = build_server(settings, verifier)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0).wait()


@pytest.fixture(scope="module")
def stub(address: str):
    with grpc.insecure_channel(address) as channel:
        yield kiosk_pb2_grpc.KioskStub(channel)


def _annotate(benchmark, verifier: Verifier) -> None:
    benchmark.extra_info["hardware_profile"] = verifier.profile.name
    if benchmark.stats is not None:  # None when benchmarks are disabled
        data = benchmark.stats.stats.data
        benchmark.extra_info["median_ms"] = round(statistics.median(data) * 1000, 1)
        benchmark.extra_info["p95_ms"] = round(statistics.quantiles(data, n=20)[-1] * 1000, 1)


def test_verify_in_process(benchmark, verifier: Verifier, pair: Pair):
    result = benchmark.pedantic(
        verifier.verify, args=(pair.id_photo, [pair.live_photo]), rounds=ROUNDS, warmup_rounds=1
    )
    _annotate(benchmark, verifier)
    assert result.decision is Decision.MATCH


def test_verify_grpc_localhost(benchmark, stub, verifier: Verifier, pair: Pair):
    request = kiosk_pb2.VerifyRequest(
        id_photo=pair.id_photo,
        live_photos=[pair.live_photo],
        consent=kiosk_pb2.Consent(granted=True, text_version=Settings().consent.accepted_versions[0]),
    )
    response = benchmark.pedantic(stub.Verify, args=(request,), kwargs={"timeout": 30}, rounds=ROUNDS, warmup_rounds=1)
    _annotate(benchmark, verifier)
    assert response.decision == kiosk_pb2.VerifyResponse.MATCH


def test_session_stream_grpc(benchmark, address: str, verifier: Verifier, pair: Pair, timed: bool, stamp):
    consent = Consent(True, Settings().consent.accepted_versions[0])
    rates: list[float] = []

    def stream() -> int:
        frames = (Frame(pair.live_photo, 1_000 + 33 * k) for k in range(STREAM_FRAMES))
        answered, first, last = 0, 0.0, 0.0
        with KioskClient(address, timeout=STREAM_DEADLINE_S) as client:
            try:
                for event in client.session(pair.id_photo, frames, consent=consent):
                    if isinstance(event, FrameEvent):
                        last = time.perf_counter()
                        first = first or last
                        answered += 1
            except RemoteError as e:
                # The stream ends with its last frame, before any challenge was performed.
                assert e.status_code == "INVALID_ARGUMENT", e
        rates.append((answered - 1) / (last - first))
        return answered

    answered = benchmark.pedantic(stream, rounds=STREAM_ROUNDS if timed else 1, iterations=1)
    stamp(benchmark, verifier, frames_per_session=STREAM_FRAMES,
          frames_per_s=round(statistics.median(rates), 2), budget_frames_per_s=verifier.profile.budgets.session_fps)
    assert answered == STREAM_FRAMES
