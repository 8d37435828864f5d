"""What each zero-retention measure costs: Verify over gRPC against `kiosk serve` with that measure undone.

Every variant is a real ``python -m kiosk serve`` process (unix socket in a temporary
directory, rate limit off, this machine's hardware profile) answering the same genuine
pair; one ``benchmark(fn)`` per variant. The measures are undone in test code
(tests/integration/measures.py, shared with the retention tests), never by a switch
in the product: a bootstrap replaces the function that applies the measure before
``kiosk.cli.main`` runs (the re-exec of ``kiosk serve`` runs the bootstrap again), and
the arena variant gets a copy of the profile with ``enable_cpu_mem_arena = true``.

* ``hardened``: as shipped (the baseline every other figure is compared with);
* ``hardened_twin``: a second hardened process: how far two identical servers differ,
  the noise floor of every other comparison;
* ``freed_memory_not_overwritten``: no ``mallopt(M_PERTURB)``;
* ``glibc_tcache_on``: no ``GLIBC_TUNABLES=glibc.malloc.tcache_count=0``;
* ``onnxruntime_arena_on``: ONNX Runtime's CPU arena on;
* ``no_explicit_wipes``: ``Scratch`` zeroes nothing (pipeline arrays, request payloads);
* ``no_measures``: all of the above at once;
* ``pymalloc_on``: Python's small-object allocator back on (no ``PYTHONMALLOC=malloc``);
* ``hardened_new_connection``: hardened, each call on a new channel: what a kiosk pays
  for the server closing idle connections after a second (a reconnect per call).

Untimed (one call each) under the suite's ``--benchmark-disable``. Figures:

    python -m pytest tests/bench/test_bench_retention.py -n 0 --benchmark-enable

``extra_info`` (``--benchmark-json``) holds the median and p95 in ms and the machine.
The server shares the machine with the client and anything else running: compare
variants from one run, not across runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import onnxruntime
import pytest

from kiosk.runtime.profile import select_profile
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc
from hardware.service import ServiceFailed, ServiceProcess
from tests.integration.measures import NO_PERTURB, NO_WIPES, PYMALLOC_ON, TCACHE_ON, arena_on_profile, bootstrap
from tests.integration.rpc import verify_request

ROUNDS = 30
TIMEOUT = 120


@dataclass(frozen=True)
class Variant:
    patches: tuple[str, ...] = ()
    arena: bool = False
    env: tuple[tuple[str, str], ...] = ()


VARIANTS = {
    "hardened": Variant(),
    "hardened_twin": Variant(),
    "freed_memory_not_overwritten": Variant(patches=(NO_PERTURB,)),
    "glibc_tcache_on": Variant(patches=(TCACHE_ON,)),
    "onnxruntime_arena_on": Variant(arena=True),
    "no_explicit_wipes": Variant(patches=(NO_WIPES,)),
    "no_measures": Variant(patches=(NO_PERTURB, TCACHE_ON, NO_WIPES, PYMALLOC_ON), arena=True),
    "pymalloc_on": Variant(patches=(PYMALLOC_ON,)),
}


def start(variant: Variant, folder: Path) -> ServiceProcess:
    config = folder / "kiosk.toml"
    address = f"unix:{folder / 'kiosk.sock'}"
    hardware = f'[hardware]\nprofile = "{arena_on_profile(folder)}"\n' if variant.arena else ""
    # One client calling as fast as it can, on purpose: no rate limit.
    config.write_text(f'[service]\nlisten = ["{address}"]\nrate_limit_per_s = 0\n{hardware}')
    script = bootstrap(*variant.patches) if variant.patches else None
    running = ServiceProcess.start(
        config, address, folder / "server.log", script=script, env=dict(variant.env), cwd=folder
    )
    try:
        running.wait_serving(TIMEOUT)
    except ServiceFailed as e:
        pytest.fail(str(e))
    return running


@pytest.fixture(scope="module", params=list(VARIANTS))
def server(request) -> Iterator[tuple[str, ServiceProcess]]:
    with tempfile.TemporaryDirectory(prefix="kiosk-retention-bench-") as folder:
        running = start(VARIANTS[request.param], Path(folder))
        try:
            yield request.param, running
        finally:
            running.terminate(TIMEOUT)


@pytest.fixture(scope="module")
def request_message(faces: Path) -> pb.VerifyRequest:
    photos = sorted((faces / "lfw__Martin_Scorsese").glob("*.jpg"))
    return verify_request(photos[0].read_bytes(), [photos[1].read_bytes()])


def rounds(timed: bool) -> tuple[int, int]:
    """(rounds, warm-up rounds): ROUNDS under --benchmark-enable (``timed``), one untimed call otherwise."""
    return (ROUNDS, 1) if timed else (1, 0)


def annotate(benchmark, variant: str) -> None:
    profile = select_profile("auto")
    benchmark.extra_info["variant"] = variant
    benchmark.extra_info["profile"] = profile.name
    benchmark.extra_info["threads"] = profile.onnxruntime.intra_op_threads
    benchmark.extra_info["machine"] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }
    if benchmark.stats is not None:  # None when benchmarks are disabled
        data = benchmark.stats.stats.data
        benchmark.extra_info["median_ms"] = round(statistics.median(data) * 1000, 1)
        benchmark.extra_info["p95_ms"] = round(statistics.quantiles(data, n=20)[-1] * 1000, 1)


def test_verify_with_measure_undone(benchmark, server, request_message, timed):
    variant, running = server
    count, warmup = rounds(timed)
    with grpc.insecure_channel(running.address) as channel:
        verify = kiosk_pb2_grpc.KioskStub(channel).Verify
        response = benchmark.pedantic(
            verify, args=(request_message,), kwargs={"timeout": TIMEOUT}, rounds=count, warmup_rounds=warmup
        )
    annotate(benchmark, variant)
    assert response.decision == pb.VerifyResponse.MATCH


def test_verify_on_a_new_connection_each_call(benchmark, request_message, timed, tmp_path):
    """The hardened server, each call opening its own channel: the price of closing idle connections."""
    running = start(VARIANTS["hardened"], tmp_path)

    def verify_on_new_channel() -> pb.VerifyResponse:
        # A local subchannel pool: otherwise gRPC may hand the new channel the last one's connection.
        with grpc.insecure_channel(running.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            return kiosk_pb2_grpc.KioskStub(channel).Verify(request_message, timeout=TIMEOUT)

    count, warmup = rounds(timed)
    try:
        response = benchmark.pedantic(verify_on_new_channel, rounds=count, warmup_rounds=warmup)
    finally:
        running.terminate(TIMEOUT)
    annotate(benchmark, "hardened_new_connection")
    assert response.decision == pb.VerifyResponse.MATCH
