"""Shared pieces of the speed benchmarks: what machine the figures belong to, and its float32 peak.

``machine`` is recorded in every benchmark's ``extra_info`` by the ``stamp`` helper,
with the hardware profile, thread count and model versions, so a JSON file of results
(``--benchmark-json``) says which board, runtime and models produced it;
``hardware/speed_table.py`` turns such files into the per-board table of models/README.md.
"""

from __future__ import annotations

import os
import platform
import statistics
from importlib import metadata

import onnxruntime
import pytest

from hardware.flops import measure_peak_gflops
from kiosk.runtime.profile import read_board_model


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


@pytest.fixture(scope="session")
def machine() -> dict:
    return {
        "board": read_board_model() or _cpu_model(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": metadata.version("opencv-python-headless"),
        "python": platform.python_version(),
    }


@pytest.fixture(scope="session")
def stamp(machine):
    """``stamp(benchmark, verifier, **extra)``: profile, threads, models and machine into extra_info."""

    def _stamp(benchmark, verifier, **extra) -> None:
        benchmark.extra_info["profile"] = verifier.profile.name
        benchmark.extra_info["threads"] = verifier.profile.onnxruntime.intra_op_threads
        benchmark.extra_info["models"] = dict(verifier.model_versions)
        benchmark.extra_info["machine"] = machine
        benchmark.extra_info.update(extra)

    return _stamp


@pytest.fixture(scope="session")
def timed(request) -> bool:
    """True under ``--benchmark-enable``: figures are wanted, not just a run-through."""
    # pyproject's addopts always pass --benchmark-disable; --benchmark-enable overrides it.
    options = request.config.option
    return bool(options.benchmark_enable) or not options.benchmark_disable


@pytest.fixture(scope="session")
def peak_gflops(timed, verifier) -> float | None:
    """Best float32 matmul GFLOP/s with one thread or the profile's count; measured only when timed.

    The better of the two, because on a loaded machine the multi-threaded product can
    come out below the single-threaded one, and a peak is what the machine can do at least.
    """
    if not timed:
        return None
    return max(measure_peak_gflops(n) for n in sorted({1, verifier.profile.onnxruntime.intra_op_threads}))


@pytest.fixture(scope="session")
def percentiles():
    """``percentiles(benchmark)``: median and p95 ms into extra_info, when the benchmark was timed."""

    def _record(benchmark) -> None:
        if benchmark.stats is None:
            return
        data = sorted(benchmark.stats.stats.data)
        benchmark.extra_info["median_ms"] = round(statistics.median(data) * 1000, 2)
        benchmark.extra_info["p95_ms"] = round(data[min(len(data) - 1, round(0.95 * (len(data) - 1)))] * 1000, 2)

    return _record


def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts run the suite on xdist workers, where pytest-benchmark would
    # silently stop timing: ask for one process instead of printing no figures.
    if config.getoption("benchmark_enable", False) and config.getoption("numprocesses", None):
        raise pytest.UsageError("timed benchmarks run in one process: add -n 0 (python -m pytest tests/bench -n 0 --benchmark-enable)")
