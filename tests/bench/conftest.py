"""Shared pieces of the speed benchmarks: what machine the figures belong to, and its float32 peak.

``machine`` is recorded in every benchmark's ``extra_info`` by the ``stamp`` helper,
with the hardware profile, thread count and model versions, so a JSON file of results
(``--benchmark-json``) says which board, runtime and models produced it;
``hardware/speed_table.py`` turns such files into the per-board table of models/README.md.
"""

from __future__ import annotations

import os
import platform
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
    """Best float32 matmul GFLOP/s at the profile's thread count; measured only when timed."""
    return measure_peak_gflops(verifier.profile.onnxruntime.intra_op_threads) if timed else None
