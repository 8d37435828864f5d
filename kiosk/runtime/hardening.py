"""Start-up hardening of the service process: no core dumps, freed heap overwritten, swap reported.

Each measure closes a way for a photo or an embedding to outlive the request:

* A core dump would copy the whole heap, the images of every call in flight included,
  to disk. ``RLIMIT_CORE = 0`` stops the kernel from writing one (a core_pattern pipe
  such as systemd-coredump is handed the limit and honours it), and
  ``prctl(PR_SET_DUMPABLE, 0)`` also marks the process non-dumpable, which the kernel
  checks whatever the limit says. Side effect: a non-dumpable process's
  ``/proc/PID/mem``, ``fd/`` and ``environ`` become readable by root only, and only root
  may ptrace it; processes of the service's own user (a debugger, a monitoring agent)
  lose that access. That is the point, so there is no setting to turn it off.
* Swap would put heap pages on disk where no wipe reaches them. The service cannot
  turn swap off (that is the operator's job); it says so at start-up, and where swap is
  active at start-up it locks its memory: ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`` keeps every page it
  touches, now and later, out of swap (pages are locked as they are first used, so the
  resident size does not grow). The kernel counts every mapping's full size against
  ``RLIMIT_MEMLOCK`` (the service maps several GB of address space it never touches),
  and with ``MCL_FUTURE`` an allocation past the limit would fail, so the lock is taken
  only where it cannot run out: an unlimited ``RLIMIT_MEMLOCK`` (the systemd unit sets
  ``LimitMEMLOCK=infinity``; resident memory stays bounded by ``MemoryMax``) or
  CAP_IPC_LOCK. Otherwise the service warns, reports ``VmLck`` 0 and runs unlocked.
  Without swap it does not lock: locked pages that are freed cannot be handed back to
  the kernel, so the resident size grows more (measured: +9 % over 150 calls). A swap
  device enabled after start-up is not covered (the unit's ``MemorySwapMax=0`` is).
  ``MADV_DONTDUMP`` is not needed on top: no core dump is written at all.
* glibc's ``free()`` leaves the bytes where they were until the memory is reused. With
  ``mallopt(M_PERTURB, byte)`` every ``free()`` that reaches glibc's bins overwrites the
  chunk first, so the copies that libraries make on the way (gRPC's receive buffers,
  protobuf's arena, libjpeg's and OpenCV's buffers, numpy temporaries) are overwritten
  when they are released. It does not reach memory that never goes back to glibc's
  bins: glibc's per-thread cache (chunks up to 1032 bytes), pymalloc's pools (Python
  objects up to 512 bytes), numpy's cache of small buffers (under 1024 bytes) and ONNX
  Runtime's CPU arena, which is why the hardware profiles turn that arena off.
* glibc's per-thread cache was measured keeping the last few hundred bytes of a request
  message (a photo's end) in a small chunk that never got the perturb fill. It can only
  be turned off by ``GLIBC_TUNABLES=glibc.malloc.tcache_count=0`` in the environment the
  process starts with.
* Python's own allocator for objects up to 512 bytes (pymalloc) hands freed blocks
  back to its pools without calling ``free()``, so M_PERTURB never reaches them: a
  48-byte slice of a photo (its last bytes) was once found ~80 calls after its session,
  and a test that slices photos into small objects finds them after the call with
  pymalloc and not without it. ``PYTHONMALLOC=malloc``, read when the interpreter
  starts, sends every Python allocation to glibc, where the perturb fill and the
  disabled per-thread cache apply (measured cost: tests/bench/test_bench_retention.py).
* ONNX Runtime's Linux wheels (1.29 and later) record usage events (process and model
  information, run counts and durations) in a database under ``~/.cache/Microsoft`` and
  upload them to Microsoft. ``ORT_DISABLE_TELEMETRY=1``, set before ONNX Runtime
  initialises, turns that off completely: no file, no device id, no upload.

``kiosk serve`` starts itself over once (same pid and arguments) with the environment
of the last three (``startup_environment``).

The README's "Zero retention" section has the measurements behind each choice.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# <sys/prctl.h>
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
# <malloc.h>: glibc's mallopt parameter for the perturb byte.
M_PERTURB = -6
# Freed chunks are filled with this byte; glibc fills fresh allocations with its
# complement (0x00), so nothing a request leaves behind survives either way.
FREED_MEMORY_BYTE = 0xFF

PROC_SWAPS = Path("/proc/swaps")
PROC_STATUS = Path("/proc/self/status")
# <sys/mman.h>: lock what is mapped now and what is mapped later, each page when first touched.
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
# <linux/capability.h>: lets a process lock memory past RLIMIT_MEMLOCK.
CAP_IPC_LOCK = 14
# The glibc tunable that turns the per-thread cache off; glibc reads it at process start only.
TCACHE_OFF = "glibc.malloc.tcache_count=0"
# ONNX Runtime's telemetry opt-out, read once when it initialises.
ORT_TELEMETRY_OFF = ("ORT_DISABLE_TELEMETRY", "1")
# Every Python allocation through glibc (no pymalloc pools), read when the interpreter starts.
PYTHON_ALLOCATOR: tuple[str, str] | None = ("PYTHONMALLOC", "malloc")


@dataclass(frozen=True)
class Hardening:
    """Which measures are in force in this process."""

    core_limit_zero: bool
    not_dumpable: bool
    freed_memory_overwritten: bool
    small_chunk_cache_off: bool
    onnxruntime_telemetry_off: bool
    python_objects_via_glibc: bool
    memory_locked: bool
    swap_active: bool

    @property
    def core_dumps_disabled(self) -> bool:
        return self.core_limit_zero and self.not_dumpable


def _libc() -> ctypes.CDLL:
    # The C library the interpreter already runs on; use_errno so a failure can be reported.
    return ctypes.CDLL(None, use_errno=True)


def disable_core_dumps() -> None:
    """RLIMIT_CORE to 0 (soft and hard, so no later code can raise it) and PR_SET_DUMPABLE 0."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def core_limit_zero() -> bool:
    soft, _ = resource.getrlimit(resource.RLIMIT_CORE)
    return soft == 0


def not_dumpable() -> bool:
    return _libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0


def core_dumps_disabled() -> bool:
    """True when no core dump of this process can be written: zero limit and not dumpable."""
    return core_limit_zero() and not_dumpable()


def overwrite_freed_memory(byte: int = FREED_MEMORY_BYTE) -> bool:
    """Make glibc overwrite every chunk it frees from now on; False where that is not available.

    Without glibc (musl, for instance) there is no ``mallopt`` and the caller is told so.
    """
    try:
        mallopt = _libc().mallopt
    except AttributeError:
        return False
    return mallopt(M_PERTURB, byte) == 1


def runs_on_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError):
        return False  # not a GNU C library: no such configuration name


def tcache_off(environ: Mapping[str, str]) -> bool:
    return TCACHE_OFF in environ.get("GLIBC_TUNABLES", "").split(":")


def startup_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """``environ`` with what must be set when the process starts, or None when it already is.

    That is ONNX Runtime's telemetry opt-out and, on glibc, the per-thread cache turned
    off and Python's small objects sent to glibc; other tunables in ``GLIBC_TUNABLES``
    are kept.
    """
    wanted = dict(environ)
    name, value = ORT_TELEMETRY_OFF
    wanted[name] = value
    if runs_on_glibc() and PYTHON_ALLOCATOR is not None:
        name, value = PYTHON_ALLOCATOR
        wanted[name] = value
    if runs_on_glibc() and not tcache_off(environ):
        tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
        kept = [t for t in tunables if not t.startswith("glibc.malloc.tcache_count=")]
        wanted["GLIBC_TUNABLES"] = ":".join([*kept, TCACHE_OFF])
    return None if wanted == dict(environ) else wanted


def python_objects_via_glibc(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this interpreter was started with every allocation through the C library."""
    return environ.get("PYTHONMALLOC") == "malloc"


def has_ipc_lock(proc_status: Path = PROC_STATUS) -> bool:
    """True when this process may lock memory whatever RLIMIT_MEMLOCK says (CAP_IPC_LOCK in effect)."""
    for line in proc_status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return False


def lock_memory() -> str | None:
    """Lock every page of this process, now and later, against swap; None when done, else why not.

    The soft RLIMIT_MEMLOCK is raised to the hard one first (allowed without privilege).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and not has_ipc_lock():
        return (
            f"RLIMIT_MEMLOCK is {soft // 1024} KiB, not unlimited: locking would make allocations past it fail "
            "(set LimitMEMLOCK=infinity in the systemd unit, or `ulimit -l unlimited`)"
        )
    if _libc().mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        return f"mlockall failed: {os.strerror(ctypes.get_errno())}"
    return None


def locked_kib(proc_status: Path = PROC_STATUS) -> int:
    """This process's locked memory (VmLck), in KiB."""
    for line in proc_status.read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    return 0


def swap_active(proc_swaps: Path = PROC_SWAPS) -> bool:
    """True when any swap device is in use: a header line, then one line per active device."""
    try:
        lines = proc_swaps.read_text().splitlines()
    except OSError:
        return True  # cannot tell, so do not claim that images stay out of swap
    return len(lines) > 1


def harden_process(log: logging.Logger, proc_swaps: Path = PROC_SWAPS) -> Hardening:
    """Apply every measure once at start-up, before any request can arrive; log what is in force.

    A measure that cannot be applied is a warning, not a refusal to start: the kiosk
    would otherwise stop registering people over a libc difference. ``GetInfo``
    reports the state, so a fleet check sees it.
    """
    try:
        disable_core_dumps()
    except OSError as e:
        log.warning("core dumps could not be disabled: %s", e)
    overwritten = overwrite_freed_memory()
    if not overwritten:
        log.warning("freed memory is not overwritten: this C library has no mallopt(M_PERTURB)")
    cache_off = runs_on_glibc() and tcache_off(os.environ)
    if runs_on_glibc() and not cache_off:
        log.warning("glibc's per-thread cache is on: start the service with `kiosk serve` (or set %s)", TCACHE_OFF)
    name, value = ORT_TELEMETRY_OFF
    telemetry_off = os.environ.get(name) == value
    if not telemetry_off:
        log.warning("ONNX Runtime telemetry is on: start the service with `kiosk serve` (or set %s=%s)", name, value)
    swap = swap_active(proc_swaps)
    # Locked pages cannot be handed back to the kernel when freed, so the resident size
    # grows (9 % over 150 Verify calls in the service soak): worth it only with swap.
    not_locked = lock_memory() if swap else "no swap device is active"
    if swap and not_locked:
        log.warning("memory is not locked, pages holding photos may be swapped out: %s", not_locked)
    python_via_glibc = python_objects_via_glibc()
    if runs_on_glibc() and not python_via_glibc:
        log.warning("Python's small-object allocator is on: start the service with `kiosk serve` (or set PYTHONMALLOC=malloc)")
    hardening = Hardening(
        core_limit_zero(),
        not_dumpable(),
        overwritten,
        cache_off,
        telemetry_off,
        python_via_glibc,
        not_locked is None,
        swap,
    )
    if hardening.swap_active and not hardening.memory_locked:
        log.warning(
            "swap is active: heap pages holding photos may be written to the swap device; "
            "disable swap (or use encrypted swap) on a kiosk"
        )
    elif hardening.swap_active:
        log.warning("swap is active: this service's memory is locked out of it, other processes' is not")
    log.info(
        "hardening: core dumps %s, freed memory %s, glibc per-thread cache %s, ONNX Runtime telemetry %s, "
        "Python small-object allocator %s, memory %s",
        "disabled" if hardening.core_dumps_disabled else "ENABLED",
        "overwritten" if overwritten else "NOT overwritten",
        "off" if cache_off else "ON",
        "off" if telemetry_off else "ON",
        "off" if python_via_glibc else "ON",
        "locked" if hardening.memory_locked else "NOT locked" if swap else "not locked (no swap)",
    )
    return hardening
