"""The model manifest: what each bundled model is, where it came from, how to feed it.

Pre-processing comes from here, never from guesses about the graph. Every file's SHA-256
is checked before a session is built from it, so a corrupted or swapped model refuses to
start instead of answering wrongly.

A hash only proves that a model matches its manifest: whoever can change a model can
change its hash too. So the manifest itself is signed (Ed25519, a detached signature in
``manifest.toml.sig`` beside it, base64) and the service verifies it before anything is
loaded: against the project's public key below, or against the operator's own key
(``models.manifest_public_key``, a PEM file) when a vendor ships its own model bundle.
The project's private key is kept offline, never in the repository; a vendor signs its
manifest with ``python -m kiosk.runtime.manifest sign --key VENDOR_KEY.pem MANIFEST``
(README, "Signed models").
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kiosk.errors import ModelIntegrityError
from kiosk.settings import load_toml

# Public half of the key the project signs its bundled models/manifest.toml with.
PROJECT_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAk8RHdCFqpsXIpXn+VLUQjY+5joBdOnBDRhNPWdmzrrc=
-----END PUBLIC KEY-----
"""
SIGNATURE_SUFFIX = ".sig"


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


# --------------------------------------------------------------------------- signature


def signature_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + SIGNATURE_SUFFIX)


def _public_key(vendor_key: str) -> tuple[Ed25519PublicKey, str]:
    if not vendor_key:
        key = serialization.load_pem_public_key(PROJECT_PUBLIC_KEY_PEM)
        return key, "the project's key"  # type: ignore[return-value]
    try:
        key = serialization.load_pem_public_key(Path(vendor_key).read_bytes())
    except OSError as e:
        raise ModelIntegrityError(f"models.manifest_public_key {vendor_key}: {e.strerror}") from None
    except ValueError:
        raise ModelIntegrityError(f"models.manifest_public_key {vendor_key} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelIntegrityError(f"models.manifest_public_key {vendor_key} is not an Ed25519 public key")
    return key, f"the key in {vendor_key}"


def verify_manifest_signature(manifest: Path, vendor_key: str = "") -> None:
    """Raise ``ModelIntegrityError`` naming the file unless ``manifest`` carries a valid signature."""
    signature_file = signature_path(manifest)
    key, whose = _public_key(vendor_key)
    try:
        data = manifest.read_bytes()
        encoded = signature_file.read_bytes()
    except FileNotFoundError as e:
        raise ModelIntegrityError(f"model manifest {manifest} is not signed: {e.filename} is missing") from None
    except OSError as e:
        raise ModelIntegrityError(f"cannot read {e.filename}: {e.strerror}") from None
    try:
        signature = base64.b64decode(encoded.strip(), validate=True)
        key.verify(signature, data)
    except (binascii.Error, InvalidSignature):
        raise ModelIntegrityError(
            f"model manifest {manifest} fails its signature check against {whose} ({signature_file}): "
            "the manifest or a model was changed after signing"
        ) from None


def load_verified_manifest(manifest: Path, vendor_key: str = "") -> Manifest:
    """The manifest, after its signature is verified: what the service loads models from."""
    verify_manifest_signature(manifest, vendor_key)
    return load_manifest(manifest)


def sign_manifest(manifest: Path, private_key: Path) -> Path:
    """Write ``manifest``'s detached signature with the Ed25519 key in ``private_key`` (PEM); its path."""
    key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ModelIntegrityError(f"{private_key} is not an Ed25519 private key")
    target = signature_path(manifest)
    target.write_bytes(base64.b64encode(key.sign(manifest.read_bytes())) + b"\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kiosk.runtime.manifest", description="sign or check a model manifest (Ed25519)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    sign = commands.add_parser("sign", help="write MANIFEST.sig with a PEM Ed25519 private key")
    sign.add_argument("--key", required=True, type=Path, help="PEM Ed25519 private key (keep it offline)")
    sign.add_argument("manifest", type=Path)
    check = commands.add_parser("verify", help="check MANIFEST.sig: exit 0 valid, 1 invalid")
    check.add_argument("--public-key", default="", help="PEM public key; default: the project's")
    check.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "sign":
            print(f"wrote {sign_manifest(args.manifest, args.key)}")
            return 0
        verify_manifest_signature(args.manifest, args.public_key)
    except ModelIntegrityError as e:
        print(e.message, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"cannot sign {args.manifest}: {e}", file=sys.stderr)
        return 2
    print(f"{args.manifest}: signature valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
