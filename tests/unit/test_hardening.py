"""Process hardening: the start-up environment, swap detection, and the measures in a real process.

``harden_process`` changes its process for good (the core limit cannot be raised again,
the process stays non-dumpable), so it runs in a child interpreter, never in pytest's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.runtime import hardening
from kiosk.runtime.hardening import TCACHE_OFF, startup_environment, swap_active

REPO = Path(__file__).resolve().parents[2]
ON_GLIBC = hardening.runs_on_glibc()


def run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(not ON_GLIBC, reason="GLIBC_TUNABLES only matters on glibc")
def test_startup_environment_turns_the_tcache_and_onnxruntime_telemetry_off():
    assert startup_environment({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": TCACHE_OFF,
        "ORT_DISABLE_TELEMETRY": "1",
        "PYTHONMALLOC": "malloc",
    }
    # Other tunables are kept; another tcache count is replaced.
    given = {"GLIBC_TUNABLES": "glibc.malloc.check=3:glibc.malloc.tcache_count=7"}
    assert startup_environment(given)["GLIBC_TUNABLES"] == f"glibc.malloc.check=3:{TCACHE_OFF}"
    # Already started with both: nothing to do, so `kiosk serve` does not start over again.
    started = {"GLIBC_TUNABLES": TCACHE_OFF, "ORT_DISABLE_TELEMETRY": "1", "PYTHONMALLOC": "malloc"}
    assert startup_environment(started) is None


def test_without_glibc_only_onnxruntime_telemetry_is_turned_off(monkeypatch):
    monkeypatch.setattr(hardening, "runs_on_glibc", lambda: False)
    assert startup_environment({}) == {"ORT_DISABLE_TELEMETRY": "1"}
    assert startup_environment({"ORT_DISABLE_TELEMETRY": "1"}) is None


@pytest.mark.parametrize(
    "content, active",
    [
        ("Filename\tType\tSize\tUsed\tPriority\n", False),
        ("Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n", True),
        (None, True),  # unreadable: the service cannot tell, so it does not claim there is none
    ],
)
def test_swap_active(tmp_path, content, active):
    swaps = tmp_path / "swaps"
    if content is not None:
        swaps.write_text(content)
    assert swap_active(swaps) is active


def test_harden_process_disables_core_dumps_and_warns_about_swap(tmp_path):
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n")
    code = f"""
import dataclasses, json, logging, resource
from pathlib import Path
from kiosk.runtime import hardening
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
result = hardening.harden_process(logging.getLogger("test"), Path({str(swaps)!r}))
print(json.dumps({{**dataclasses.asdict(result), "core_dumps_disabled": hardening.core_dumps_disabled(),
                  "hard_core_limit": resource.getrlimit(resource.RLIMIT_CORE)[1]}}))
"""
    child = run_child(code, tmp_path)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["core_limit_zero"] and result["not_dumpable"] and result["core_dumps_disabled"]
    assert result["hard_core_limit"] == 0  # nothing later in the process can raise it again
    assert result["freed_memory_overwritten"] is ON_GLIBC
    assert result["swap_active"]
    assert "WARNING swap is active" in child.stderr
    # Started without `kiosk serve`'s environment: the state is reported, not assumed.
    # Importing kiosk turns ONNX Runtime's telemetry off in-process (kiosk/__init__.py),
    # so only the glibc cache, which must be set before the process starts, is still on.
    assert result["onnxruntime_telemetry_off"]
    assert "ONNX Runtime telemetry is on" not in child.stderr
    if ON_GLIBC:
        assert not result["small_chunk_cache_off"] and "per-thread cache is on" in child.stderr


@pytest.mark.skipif(not ON_GLIBC, reason="M_PERTURB is a glibc mallopt")
def test_freed_memory_is_overwritten(tmp_path):
    """A chunk freed after ``overwrite_freed_memory`` holds the fill byte, not what it held."""
    code = """
import ctypes
from kiosk.runtime import hardening
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
assert hardening.overwrite_freed_memory()
# Above the per-thread cache's 1032 bytes, below the mmap threshold: an ordinary heap chunk.
size = 8192
copy = ctypes.create_string_buffer(size)  # allocated first: reading must not reuse the freed chunk
chunk = libc.malloc(size)
ctypes.memset(chunk, 0x5A, size)
libc.free(chunk)
ctypes.memmove(copy, chunk, size)
# Skip the first 32 bytes, where glibc keeps its free-list pointers.
print(copy.raw[32:-32].hex())
"""
    child = run_child(code, tmp_path)
    assert child.returncode == 0, child.stderr
    freed = bytes.fromhex(child.stdout.strip())
    assert freed == bytes([hardening.FREED_MEMORY_BYTE]) * len(freed)
