"""kiosk/v1 holds exactly what `python proto/generate.py` produces from the committed protos.

Fails after a .proto edit without regeneration, a hand edit of generated code, or a
grpcio-tools upgrade (the generated code pins the runtime versions it needs): in each
case run `python proto/generate.py` and commit the result.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "kiosk" / "v1"


def load_generate_script():
    spec = importlib.util.spec_from_file_location("kiosk_proto_generate", REPO / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path):
    fresh = load_generate_script().generate(tmp_path)

    stale = [f.name for f in fresh if (GENERATED / f.name).read_bytes() != f.read_bytes()]
    assert not stale, f"kiosk/v1/{', '.join(stale)} out of date: run `python proto/generate.py`"
    committed = {p.name for p in GENERATED.iterdir() if p.is_file()}
    assert committed == {f.name for f in fresh} | {"__init__.py"}, "kiosk/v1 holds files generate.py did not write"
