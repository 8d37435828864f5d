"""Verify latency end to end over gRPC on localhost vs the in-process pipeline, same inputs, same run.

Under the suite's default ``--benchmark-disable`` each runs once, untimed. Timed:

    python -m pytest tests/bench/test_bench_grpc.py --benchmark-enable

runs ``ROUNDS`` calls of each; the report shows min/median/mean, and ``extra_info``
(``--benchmark-json``) adds the p95 and the hardware profile the numbers belong to.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path

import grpc
import pytest

from kiosk.pipeline.types import Decision
from kiosk.pipeline.verifier import Verifier
from kiosk.server.app import build_server
from kiosk.settings import ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 30


@dataclasses.dataclass(frozen=True)
class Pair:
    id_photo: bytes
    live_photo: bytes


@pytest.fixture(scope="module")
def pair() -> Pair:
    root = Path(os.environ.get("KIOSK_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    photos = sorted((root / "lfw__Martin_Scorsese").glob("*.jpg"))
    if len(photos) < 2:
        pytest.fail(f"face data not found at {root}")
    return Pair(photos[0].read_bytes(), photos[1].read_bytes())


@pytest.fixture(scope="module")
def loaded_verifier() -> Verifier:
    return Verifier.load(Settings())


@pytest.fixture(scope="module")
def stub(loaded_verifier: Verifier):
    settings = dataclasses.replace(Settings(), service=ServiceSettings(listen=("127.0.0.1:0",)))
    server, (port,) = build_server(settings, loaded_verifier)
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


def test_verify_in_process(benchmark, loaded_verifier: Verifier, pair: Pair):
    result = benchmark.pedantic(
        loaded_verifier.verify, args=(pair.id_photo, [pair.live_photo]), rounds=ROUNDS, warmup_rounds=1
    )
    _annotate(benchmark, loaded_verifier)
    assert result.decision is Decision.MATCH


def test_verify_grpc_localhost(benchmark, stub, loaded_verifier: Verifier, pair: Pair):
    request = kiosk_pb2.VerifyRequest(
        id_photo=pair.id_photo,
        live_photos=[pair.live_photo],
        consent=kiosk_pb2.Consent(granted=True, text_version=Settings().consent.accepted_versions[0]),
    )
    response = benchmark.pedantic(stub.Verify, args=(request,), kwargs={"timeout": 30}, rounds=ROUNDS, warmup_rounds=1)
    _annotate(benchmark, loaded_verifier)
    assert response.decision == kiosk_pb2.VerifyResponse.MATCH
