"""Zero-retention measures undone in test code, for a `kiosk serve` subprocess (hardware/service.py).

Shared by the retention tests (test_retention.py) and the benchmark of what each
measure costs (tests/bench/test_bench_retention.py), so both undo a measure the same
way. The product has no switch for any of this: a server started with ``bootstrap``
replaces the function that applies a measure before ``kiosk.cli.main`` runs (and again
after its re-exec), and ``arena_on_profile`` writes a copy of this machine's hardware
profile with ONNX Runtime's CPU arena switched back on.
"""

from __future__ import annotations

from pathlib import Path

from kiosk.runtime.profile import select_profile
from kiosk.settings import bundled_profiles_dir

# Each undoes one retention measure in a server started with ``bootstrap``.
NO_WIPES = "scratch.Scratch.wipe = lambda self: None"
NO_PERTURB = "hardening.overwrite_freed_memory = lambda byte=0: False"
NO_STARTUP_ENVIRONMENT = "hardening.startup_environment = lambda environ: None"
# startup_environment then leaves GLIBC_TUNABLES alone (ONNX Runtime telemetry stays off).
TCACHE_ON = "hardening.runs_on_glibc = lambda: False"
CONNECTIONS_KEPT = "app.CONNECTION_IDLE_MS = 2**31 - 1"


def bootstrap(*patches: str) -> str:
    """``python -c`` code that applies ``patches`` and runs `kiosk` (again after its re-exec)."""
    lines = [
        "import sys",
        "from kiosk.pipeline import scratch",
        "from kiosk.runtime import hardening",
        "from kiosk.server import app",
        *patches,
        "from kiosk.cli import main",
        "sys.exit(main(sys.argv[1:]))",
    ]
    return "\n".join(lines) + "\n"


def arena_on_profile(directory: Path) -> Path:
    """This machine's hardware profile with ONNX Runtime's CPU arena switched back on."""
    profile = select_profile("auto")
    text = (bundled_profiles_dir() / f"{profile.name}.toml").read_text()
    assert "enable_cpu_mem_arena = false" in text
    path = directory / "arena_on.toml"
    path.write_text(text.replace("enable_cpu_mem_arena = false", "enable_cpu_mem_arena = true"))
    return path

# Not a measure: holds each answer at the moment it is ready (tests/support/hold.py).
HOLD_ANSWER = "from tests.support import hold; hold.install()"
# The received request bytes are not wiped once parsed (kiosk.server.wire).
NO_REQUEST_WIPE = "from kiosk.server import wire; wire.wipe_bytes = lambda data: None"
# Not a measure: the end of every live photo becomes small bytes objects (48 to 480 bytes,
# one per pymalloc size class group), dropped at once, as any code slicing a payload makes
# them (a small-object residue, README "Zero retention").
SMALL_SLICE = (
    "from kiosk.server import convert; _call = convert.verify_call_from_proto; "
    "convert.verify_call_from_proto = lambda *a: [c for c in [_call(*a)] "
    "if [p[-n:] for p in c.live_photos for n in range(48, 481, 24)]][0]"
)
# Python's small-object allocator (pymalloc) back on.
PYMALLOC_ON = "hardening.PYTHON_ALLOCATOR = None"
