"""The model manifest: what each bundled model is, where it came from, how to feed it.

Pre-processing comes from here, never from guesses about the graph. Every file's SHA-256
is checked before a session is built from it, so a corrupted or swapped model refuses to
start instead of answering wrongly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.errors import ModelIntegrityError
from kiosk.settings import load_toml


@dataclass(frozen=True)
class InputSpec:
    name: str
    # Symbolic dims are strings ("batch", "height"); fixed dims are ints.
    shape: tuple[int | str, ...]
    # Axis order of the tensor, e.g. "NCHW", "NHWC", or "NWHC" for MTCNN's transposed input.
    layout: str
    colour: str  # "BGR", "RGB" or "GRAY"
    # The network sees (pixel - mean) / std, pixels in 0..255.
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class ModelEntry:
    role: str
    file: str
    sha256: str
    version: str
    source_package: str
    source_version: str
    source_path: str
    source_sha256: str
    licence: str
    conversion: str
    input: InputSpec
    outputs: tuple[str, ...]
    preprocessing: str
    notes: str = ""


@dataclass(frozen=True)
class Manifest:
    model: tuple[ModelEntry, ...] = field(default_factory=tuple)

    def entry(self, role: str) -> ModelEntry:
        for entry in self.model:
            if entry.role == role:
                return entry
        raise ModelIntegrityError(f"manifest has no model with role {role!r}")


def load_manifest(path: Path) -> Manifest:
    return load_toml(Manifest, path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_model_path(models_dir: Path, entry: ModelEntry) -> Path:
    """Path of ``entry``'s file after checking it exists and matches its SHA-256."""
    path = models_dir / entry.file
    if not path.is_file():
        raise ModelIntegrityError(f"model file {path} (role {entry.role}) is missing")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise ModelIntegrityError(
            f"model file {path} (role {entry.role}) fails its integrity check: "
            f"SHA-256 {actual} but the manifest says {entry.sha256}"
        )
    return path
