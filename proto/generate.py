"""Regenerate the protobuf/gRPC Python code in ``kiosk/v1`` from ``proto/kiosk/v1/*.proto``.

A copy of each .proto goes there too: it is package data of the wheel, for clients in
other languages.

Run from anywhere::

    python proto/generate.py

The proto files live under ``proto/`` at the same relative path as their package
(``kiosk/v1/kiosk.proto``, package ``kiosk.v1``), so with ``proto/`` as the include
root protoc writes ``kiosk/v1/kiosk_pb2.py`` and the gRPC module imports it as
``from kiosk.v1 import kiosk_pb2``: no import rewriting is needed. Output goes to a
temporary directory first and only the generated files are copied over, so a failed
run leaves ``kiosk/v1`` untouched. ``tests/unit/test_generated_fresh.py`` calls
``generate()`` to prove the committed code matches the protos and the installed
grpcio-tools.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("kiosk") / "v1"
# What protoc writes per .proto file: messages, type stubs for editors/mypy, gRPC stubs.
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Run protoc over every proto into ``out_root/kiosk/v1``; return the generated files."""
    protos = proto_files()
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(PROTO_ROOT)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed (see its messages above)")
    # The .proto itself ships in the wheel beside the generated code (package data), so a
    # kiosk UI in another language builds its client from the installed package.
    for proto in protos:
        shutil.copyfile(proto, out_root / PACKAGE_DIR / proto.name)
    generated = [out_root / PACKAGE_DIR / (p.stem + suffix) for p in protos for suffix in SUFFIXES]
    return generated + [out_root / PACKAGE_DIR / p.name for p in protos]


def main() -> int:
    target = REPO_ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        for generated in generate(Path(tmp)):
            shutil.copyfile(generated, target / generated.name)
            print(f"wrote {(target / generated.name).relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
