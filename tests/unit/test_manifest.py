"""Every bundled model is hash-checked; a changed byte refuses to load and names the file."""

import shutil
from pathlib import Path

import pytest

from kiosk.errors import ModelIntegrityError
from kiosk.runtime.manifest import load_manifest, sha256_of, verified_model_path
from kiosk.runtime.profile import select_profile
from kiosk.runtime.sessions import SessionFactory
from kiosk.settings import bundled_models_dir

MODELS = bundled_models_dir()


def test_manifest_describes_every_committed_model():
    manifest = load_manifest(MODELS / "manifest.toml")
    files = {entry.file for entry in manifest.model}
    assert files == {p.name for p in MODELS.glob("*.onnx")}
    for entry in manifest.model:
        assert sha256_of(MODELS / entry.file) == entry.sha256
        assert entry.source_package and entry.source_version and entry.licence
        assert entry.input.colour in ("BGR", "RGB", "GRAY")


def test_a_flipped_byte_is_refused_with_the_file_named(tmp_path):
    manifest = load_manifest(MODELS / "manifest.toml")
    entry = manifest.entry("embedder")
    copy = tmp_path / entry.file
    shutil.copy(MODELS / entry.file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=f"{copy}.*fails its integrity check"):
        verified_model_path(tmp_path, entry)
    factory = SessionFactory(tmp_path, manifest, select_profile("x86").onnxruntime)
    with pytest.raises(ModelIntegrityError, match="role embedder"):
        factory.create("embedder")


def test_a_missing_file_is_refused(tmp_path):
    entry = load_manifest(MODELS / "manifest.toml").entry("mtcnn_pnet")
    with pytest.raises(ModelIntegrityError, match="is missing"):
        verified_model_path(Path(tmp_path), entry)
