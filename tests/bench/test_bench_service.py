"""The service as a kiosk runs it: cold start, and memory over many requests.

Both start a real ``kiosk serve`` process (``hardware/hil/local.py``: unix socket in a
temporary directory, rate limit off, the machine's hardware profile) with the process
hardening in force.

* ``test_cold_start``: process start to health SERVING (imports, hash checks, sessions,
  warm-up); 3 starts when timed, 1 otherwise.
* ``test_memory_soak``: resident memory after the start, after a warm-up of
  ``WARMUP_REQUESTS`` Verify calls, and after ``KIOSK_SOAK_REQUESTS`` more (default
  ``CI_SOAK_REQUESTS``; the real figure is ``KIOSK_SOAK_REQUESTS=10000``). Growth from
  after the warm-up to the end must stay under 1 %. Every request's ID photo has its own
  pixel size (the requests cycle through ``ID_SIZES`` sizes), because a runtime that
  keeps something per input shape would grow with the kiosk's variety of ID photos, and
  a soak of one photo would hide it.

    KIOSK_SOAK_REQUESTS=10000 python -m pytest tests/bench/test_bench_service.py -k soak -n 0 --benchmark-enable \\
        --benchmark-json=soak.json
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import cv2
import pytest

from hardware.hil.local import LocalService
from kiosk.client import KioskClient
from kiosk.pipeline.types import Decision
from kiosk.runtime.profile import select_profile
from kiosk.server.calls import Consent
from kiosk.settings import Settings

CI_SOAK_REQUESTS = 150
# The warm-up sends every distinct ID photo size once: onnxruntime keeps per-shape state
# for p-net's pyramid levels, which grows RSS until each size has been seen (measured:
# +5 % over 30 requests after a 40-request warm-up), bounded, not a leak.
WARMUP_REQUESTS = 100
# Issue 7's criterion (< 1 %) is for 10,000 requests; CI's short run of 150 measures mostly
# allocator noise (thread stacks, arenas settling), so it gets a looser bound and reports
# the figure. A leak of 60 KiB or more per request would still exceed it.
MAX_GROWTH = 0.01
MAX_GROWTH_SHORT_RUN = 0.05
FULL_SOAK_REQUESTS = 10_000
# Distinct ID photo sizes: fewer than the warm-up and a real soak send.
ID_SIZES = 97


@pytest.fixture(scope="module")
def requests(faces: Path) -> list[tuple[bytes, bytes]]:
    """(ID photo, live frame) pairs: one person's card-like portrait at ``ID_SIZES`` sizes, one webcam frame."""
    photos = sorted((faces / "nuaa__s01").iterdir())
    portrait = cv2.imread(str(photos[0]))[40:440, 120:520]
    live = photos[-1].read_bytes()
    pairs = []
    for k in range(ID_SIZES):
        side = 200 + 3 * k
        card = cv2.resize(portrait, (side, round(side * 1.25)), interpolation=cv2.INTER_AREA)
        pairs.append((cv2.imencode(".jpg", card, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes(), live))
    return pairs


def test_cold_start(benchmark, machine, timed):
    seconds: list[float] = []

    def start_and_stop() -> None:
        with LocalService() as service:
            seconds.append(service.cold_start_s)

    benchmark.pedantic(start_and_stop, rounds=3 if timed else 1, iterations=1)
    benchmark.extra_info.update(
        machine=machine, profile=select_profile("auto").name, cold_start_s=[round(s, 2) for s in seconds],
        cold_start_median_s=round(statistics.median(seconds), 2),
    )
    assert seconds


def test_memory_soak(benchmark, requests, machine):
    total = int(os.environ.get("KIOSK_SOAK_REQUESTS", CI_SOAK_REQUESTS))
    consent = Consent(True, Settings().consent.accepted_versions[0])
    outcomes: dict[str, int] = {}
    with LocalService() as service, KioskClient(service.address, timeout=60) as client:
        info = client.info()

        def call(k: int) -> None:
            id_photo, live = requests[k % len(requests)]
            verification = client.verify(id_photo, [live], consent=consent)
            key = verification.reason or verification.decision.value
            outcomes[key] = outcomes.get(key, 0) + 1

        rss_serving = service.rss_kib()
        for k in range(WARMUP_REQUESTS):
            call(k)
        rss_warm = service.rss_kib()
        benchmark.pedantic(lambda: [call(k) for k in range(WARMUP_REQUESTS, WARMUP_REQUESTS + total)],
                           rounds=1, iterations=1)
        rss_end = service.rss_kib()
    growth = (rss_end - rss_warm) / rss_warm
    benchmark.extra_info.update(
        machine=machine, profile=info.hardware_profile, models=info.model_versions,
        requests=total, warmup_requests=WARMUP_REQUESTS, distinct_id_sizes=ID_SIZES,
        rss_mb_serving=round(rss_serving / 1024, 1), rss_mb_after_warmup=round(rss_warm / 1024, 1),
        rss_mb_end=round(rss_end / 1024, 1), growth_pct=round(100 * growth, 3), outcomes=outcomes,
    )
    # Every request went the whole way (decode to decision): a RETRY would skip stages.
    assert set(outcomes) <= {Decision.MATCH.value, Decision.NO_MATCH.value}, outcomes
    limit = MAX_GROWTH if total >= FULL_SOAK_REQUESTS else MAX_GROWTH_SHORT_RUN
    assert growth < limit, f"RSS grew {100 * growth:.2f} % over {total} requests ({rss_warm} -> {rss_end} KiB)"
