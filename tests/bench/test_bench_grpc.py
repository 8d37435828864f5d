"""Verify latency end to end over gRPC on localhost vs the in-process pipeline, same inputs, same run.

Under the suite's default ``--benchmark-disable`` each runs once, untimed. Timed:

    python -m pytest tests/bench/test_bench_grpc.py --benchmark-enable

runs ``ROUNDS`` calls of each; the report shows min/median/mean, and ``extra_info``
(``--benchmark-json``) adds the p95 and the hardware profile the numbers belong to.
``faces`` and ``verifier`` come from tests/conftest.py.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import grpc
import pytest

from kiosk.pipeline.types import Decision
from kiosk.pipeline.verifier import Verifier
from kiosk.server.app import build_server
from kiosk.settings import ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc

ROUNDS = 30


@dataclasses.dataclass(frozen=True)
class Pair:
    id_photo: bytes
    live_photo: bytes


@pytest.fixture(scope="module")
def pair(faces: Path) -> Pair:
    photos = sorted((faces / "lfw__Martin_Scorsese").glob("*.jpg"))
    return Pair(photos[0].read_bytes(), photos[1].read_bytes())


@pytest.fixture(scope="module")
def stub(verifier: Verifier):
    settings = dataclasses.replace(Settings(), service=ServiceSettings(listen=("127.0.0.1:0",)))
    server, (port,) = build_server(settings, verifier)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield kiosk_pb2_grpc.KioskStub(channel)
    server.stop(0).wait()


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
