"""A remote client loads no inference stack and writes nothing, and the pipeline writes no telemetry.

Each check runs in a fresh interpreter (a subprocess) with an empty HOME and TMPDIR of its
own, against a real server on 127.0.0.1 started by the ``start_server`` fixture: the
client process must end with neither onnxruntime nor OpenCV nor numpy imported and with
both directories still empty (ONNX Runtime's telemetry would have left a device id in
``~/.cache/Microsoft`` and an event queue in ``$TMPDIR/.ses``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("onnxruntime", "cv2", "numpy")

# Runs the CLI's main in-process, then reports which heavy modules it loaded.
CLIENT_SCRIPT = """
import json, sys
from kiosk.cli import main
code = main(sys.argv[1:])
loaded = [name for name in {heavy!r} if name in sys.modules]
print("LOADED " + json.dumps(loaded))
sys.exit(code)
"""


def run_isolated(tmp_path: Path, *argv: str, code: str | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """Run ``code`` (default: the CLI with ``argv``) with an empty HOME and TMPDIR; return them too."""
    root = tmp_path / "client"
    home, tmp = root / "home", root / "tmp"
    home.mkdir(parents=True)
    tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp)}
    # The variable must not be what keeps the directories empty.
    env.pop("ORT_DISABLE_TELEMETRY", None)
    script = code if code is not None else CLIENT_SCRIPT.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    return done, root


def loaded_modules(done: subprocess.CompletedProcess) -> list[str]:
    lines = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert lines, done.stdout + done.stderr
    return json.loads(lines[-1].removeprefix("LOADED "))


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_importing_the_client_loads_no_inference_stack(tmp_path):
    code = (
        "import sys, json, kiosk.client, kiosk.cli_remote\n"
        f"print('LOADED ' + json.dumps([n for n in {HEAVY!r} if n in sys.modules]))\n"
    )
    done, root = run_isolated(tmp_path, code=code)
    assert done.returncode == 0, done.stderr
    assert loaded_modules(done) == []
    assert files_under(root) == []


def test_kiosk_verify_server_loads_no_inference_stack_and_writes_nothing(start_server, photos, tmp_path):
    running = start_server()
    done, root = run_isolated(
        tmp_path, "verify", "--server", running.address, str(photos.scorsese[0]), str(photos.scorsese[1])
    )
    assert done.returncode == 0, done.stdout + done.stderr  # a genuine pair: MATCH
    assert "decision: match" in done.stdout
    assert loaded_modules(done) == []
    assert files_under(root) == []


def test_kiosk_session_and_health_load_no_inference_stack(start_server, photos, tmp_path):
    running = start_server()
    frames = [str(p) for p in photos.nuaa_frames[:3]]
    (tmp_path / "session").mkdir()
    done, root = run_isolated(
        tmp_path / "session", "session", "--server", running.address, "--id-photo", str(photos.nuaa_id), *frames
    )
    # Three frames cannot pass the challenges: the server ends the call, the CLI says why (exit 2).
    assert done.returncode == 2, done.stdout + done.stderr
    assert loaded_modules(done) == []
    assert files_under(root) == []
    (tmp_path / "health").mkdir()
    done, root = run_isolated(tmp_path / "health", "health", running.address)
    assert done.returncode == 0, done.stdout + done.stderr
    assert loaded_modules(done) == []
    assert files_under(root) == []


def test_the_pipeline_writes_no_onnxruntime_telemetry(tmp_path):
    """Loading the models (what `kiosk verify` without --server does) leaves HOME and TMPDIR empty."""
    code = (
        "from kiosk.runtime.models import load_models\n"
        "from kiosk.runtime.profile import select_profile\n"
        "from kiosk.settings import Settings\n"
        "s = Settings()\n"
        "models = load_models(s, select_profile(s.hardware.profile), ('embedder',))\n"
        "models.warm_up(40)\n"
        "print('LOADED []')\n"
    )
    done, root = run_isolated(tmp_path, code=code)
    assert done.returncode == 0, done.stderr
    assert files_under(root) == []


@pytest.mark.parametrize("module", ["kiosk.domain", "kiosk.server.convert", "kiosk.server.calls"])
def test_wire_modules_load_no_inference_stack(module, tmp_path):
    code = f"import sys, json, {module}\nprint('LOADED ' + json.dumps([n for n in {HEAVY!r} if n in sys.modules]))\n"
    done, _ = run_isolated(tmp_path, code=code)
    assert done.returncode == 0, done.stderr
    assert loaded_modules(done) == []
