"""Signed decision receipts and audit checkpoints: what a back office can check without trusting the kiosk's disk.

A receipt is the canonical JSON (UTF-8, keys sorted, no whitespace, no NaN) of one
decision, signed with the device's Ed25519 key. It names who asked (request id,
device), what was decided (decision, retry reason, similarity rounded to 2 decimals as
in the audit log), under which operating point (threshold, target FMR, the models'
versions and SHA-256, the calibration files' SHA-256), what liveness was established,
when, and which audit record holds it (sequence number and chain hash). It holds
nothing biometric: no image, embedding, landmark or image hash; the model has no field
for it (``RECEIPT_KEYS`` is the whole of it).

A checkpoint (``kiosk.audit`` writes them) is the same construction over the audit
chain's head: ``{seq, chain_hash, time, ...}`` signed by the same key. The ``type`` field
("kiosk.receipt.v1" / "kiosk.audit_checkpoint.v1") is part of the signed bytes and
checked on verification, so neither can be passed off as the other.

Keys
    ``kiosk keygen --out PATH`` writes the private key (PKCS#8 PEM, mode 0600, refuses
    to overwrite) and its public half beside it (``PATH.pub``, SubjectPublicKeyInfo
    PEM). The service loads ``[receipts] key_file``; without one it generates an
    ephemeral key at start (logged as a warning, reported by GetInfo as
    ``receipt_key_ephemeral``): its receipts verify against the public key GetInfo
    shows, but that key dies with the process, so a back office must pin only keys
    read from the device's ``.pub`` file at installation.

``cryptography`` is imported only where keys are used, so a light client can read a
receipt's fields without it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from kiosk.errors import ConfigError, KioskError
from kiosk.keyfiles import read_private_file

__all__ = [
    "CHECKPOINT_TYPE",
    "RECEIPT_TYPE",
    "ReceiptInvalid",
    "SignedReceipt",
    "DeviceSigner",
    "canonical_bytes",
    "generate_key_file",
    "key_id",
    "load_public_key",
    "main_receipt",
    "read_receipt_file",
    "verify_signed",
    "write_receipt_file",
]

RECEIPT_TYPE = "kiosk.receipt.v1"
CHECKPOINT_TYPE = "kiosk.audit_checkpoint.v1"
FILE_FORMAT = "kiosk.receipt_file.v1"
RECEIPT_KEYS = frozenset(
    {
        "type",
        "method",
        "request_id",
        "device_id",
        "service_device_id",
        "decision",
        "retry_reason",
        "similarity",
        "threshold",
        "target_fmr",
        "models",
        "calibration_sha256",
        "liveness_calibration_sha256",
        "liveness",
        "time",
        "audit",
        "service_version",
        "key_id",
    }
)
CHECKPOINT_KEYS = frozenset({"type", "seq", "chain_hash", "time", "service_device_id", "reason", "key_id"})
# Longest text a receipt quotes; as in the audit log, too short to smuggle a template.
MAX_TEXT_CHARS = 256
# Exit codes of `kiosk receipt verify`.
EXIT_VALID, EXIT_INVALID, EXIT_ERROR = 0, 1, 2


class ReceiptInvalid(KioskError):
    """A receipt or checkpoint whose signature, type or fields do not check out; the message says which."""

    status_code = "INVALID_ARGUMENT"


def canonical_bytes(obj: Mapping[str, object]) -> bytes:
    # Sorted keys, no whitespace, no NaN: one byte string per content, so a verifier
    # can re-serialise a parsed receipt and get exactly the bytes that were signed.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def utc_now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def key_id(public_raw: bytes) -> str:
    """SHA-256 (hex) of the raw 32-byte Ed25519 public key: names the key in every receipt."""
    return hashlib.sha256(public_raw).hexdigest()


def rounded(value: float | None) -> float | None:
    """Similarity as the audit log records it: 2 decimals, enough to audit, too coarse to hill-climb."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return round(float(value), 2)


@dataclass(frozen=True)
class SignedReceipt:
    """Canonical JSON bytes and their Ed25519 signature, as carried in VerifyResponse."""

    body: bytes
    signature: bytes

    def fields(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


# --------------------------------------------------------------------------- keys


def _private_key_type():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey


def _public_raw(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_key_path(private_path: str | Path) -> Path:
    """Where ``kiosk keygen`` writes the public half: beside the key, ``.pub`` appended (as ssh-keygen)."""
    private_path = Path(private_path)
    return private_path.with_name(private_path.name + ".pub")


def generate_key_file(out: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and its public PEM beside it.

    Refuses to overwrite either file: replacing a device key orphans every receipt
    signed so far unless the old public key was kept.
    """
    from cryptography.hazmat.primitives import serialization

    out = Path(out)
    pub = public_key_path(out)
    key = _private_key_type().generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for path, data, mode in ((out, private_pem, 0o600), (pub, public_pem(key.public_key()).encode("ascii"), 0o644)):
        try:
            # O_EXCL: never replace an existing key; the mode is set at creation, so the
            # private key is never readable by others, not even for an instant.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise ConfigError(f"{path} already exists: move it aside to make a new key") from None
        except OSError as e:
            raise ConfigError(f"cannot create {path}: {e.strerror}") from None
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    return out, pub


def load_private_key(path: str | Path):
    """The Ed25519 key of ``path`` (PKCS#8 PEM, unencrypted); refuse a file others can access."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    data = read_private_file(path, "receipt key file", f" (make one with kiosk keygen --out {path})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"receipt key file {path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, _private_key_type()):
        raise ConfigError(f"receipt key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file (``kiosk keygen``'s ``.pub`` or GetInfo's ``receipt_public_key``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"public key {path}: {e.strerror}") from None
    return parse_public_key(data, str(path))


def parse_public_key(pem: bytes | str, where: str = "public key"):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where} is not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where} holds a {type(key).__name__}, not an Ed25519 key")
    return key


class DeviceSigner:
    """The device's Ed25519 key: signs receipts and audit checkpoints."""

    def __init__(self, private_key, *, ephemeral: bool):
        self._key = private_key
        self.ephemeral = ephemeral
        self.public_key = private_key.public_key()
        self.public_pem = public_pem(self.public_key)
        self.key_id = key_id(_public_raw(self.public_key))

    @classmethod
    def from_file(cls, path: str | Path) -> DeviceSigner:
        return cls(load_private_key(path), ephemeral=False)

    @classmethod
    def ephemeral_key(cls) -> DeviceSigner:
        return cls(_private_key_type().generate(), ephemeral=True)

    def sign(self, fields: Mapping[str, object]) -> SignedReceipt:
        body = canonical_bytes({**fields, "key_id": self.key_id})
        return SignedReceipt(body, self._key.sign(body))


def open_signer(key_file: str, log=None) -> DeviceSigner:
    """``[receipts] key_file``'s key, or an ephemeral one (with a warning) when it is empty."""
    if key_file:
        return DeviceSigner.from_file(key_file)
    if log is not None:
        log.warning(
            "receipts.key_file is not set: receipts and audit checkpoints are signed with an ephemeral key "
            "made at start-up, which no back office can have pinned (make one with kiosk keygen)"
        )
    return DeviceSigner.ephemeral_key()


# --------------------------------------------------------------------------- issuing


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters; at most {MAX_TEXT_CHARS} are allowed")
    return value


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, or "" when it does not exist (an uncalibrated service)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class Provenance:
    """What the operating point rests on, read once at start: model hashes by version, calibration files' hashes."""

    model_sha256: Mapping[str, str]  # model version ("name/package@version") -> file SHA-256
    calibration_sha256: str
    liveness_calibration_sha256: str
    service_version: str
    service_device_id: str

    @classmethod
    def from_settings(cls, settings) -> Provenance:  # settings: kiosk.settings.Settings
        from kiosk import __version__
        from kiosk.runtime.manifest import load_manifest

        models = settings.models
        directory = models.resolved_dir()
        try:
            manifest = load_manifest(directory / models.manifest)
            hashes = {entry.version: entry.sha256 for entry in manifest.model}
        except ConfigError:
            hashes = {}  # the verifier refuses a missing manifest itself, with its own message
        return cls(
            model_sha256=hashes,
            calibration_sha256=file_sha256(directory / models.calibration),
            liveness_calibration_sha256=file_sha256(directory / models.liveness),
            service_version=__version__,
            service_device_id=settings.service.device_id,
        )


def liveness_established(method: str, status: str, passive_ran: bool, challenges: bool) -> str:
    """What a decision's liveness rests on: "active_session", "passive_still" or "none".

    A still over the network proves no liveness beyond the passive model's score; only a
    session with challenges that passed is an active check.
    """
    if status != "passed":
        return "none"
    if method == "VerifySession" and challenges:
        return "active_session"
    return "passive_still" if passive_ran else "none"


def receipt_fields(
    *,
    method: str,
    request_id: str,
    device_id: str,
    decision: str,
    retry_reason: str,
    similarity: float | None,
    threshold: float,
    target_fmr: float,
    model_versions: Mapping[str, str],
    liveness_status: str,
    liveness_failed_check: str,
    liveness_established: str,
    audit_seq: int | None,
    audit_chain_hash: str,
    provenance: Provenance,
) -> dict:
    """The fields of one receipt, checked; keyword-only, and nothing biometric can be passed."""
    models = {
        _text("model role", role): {
            "version": _text("model version", version),
            "sha256": provenance.model_sha256.get(version, ""),
        }
        for role, version in sorted(model_versions.items())
    }
    return {
        "type": RECEIPT_TYPE,
        "method": _text("method", method),
        "request_id": _text("request_id", request_id),
        "device_id": _text("device_id", device_id),
        "service_device_id": _text("service_device_id", provenance.service_device_id),
        "decision": _text("decision", decision),
        "retry_reason": _text("retry_reason", retry_reason),
        "similarity": rounded(similarity),
        "threshold": float(threshold),
        "target_fmr": float(target_fmr),
        "models": models,
        "calibration_sha256": provenance.calibration_sha256,
        "liveness_calibration_sha256": provenance.liveness_calibration_sha256,
        "liveness": {
            "status": _text("liveness status", liveness_status),
            "failed_check": _text("liveness failed_check", liveness_failed_check),
            "established": _text("liveness established", liveness_established),
        },
        "time": utc_now(),
        "audit": None if audit_seq is None else {"seq": int(audit_seq), "chain_hash": audit_chain_hash},
        "service_version": provenance.service_version,
    }


# --------------------------------------------------------------------------- verifying


def verify_signed(body: bytes, signature: bytes, public_key, expected_type: str) -> dict:
    """The signed fields of ``body``, or ``ReceiptInvalid`` saying precisely what is wrong."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise ReceiptInvalid(
            "signature does not verify: the receipt was altered after signing, or signed by another key"
        ) from None
    # Past this point the bytes are the device's own; the checks below catch a
    # valid signature over something that is not what the caller expects.
    try:
        fields = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReceiptInvalid("signed bytes are not JSON") from None
    if not isinstance(fields, dict):
        raise ReceiptInvalid("signed JSON is not an object")
    if fields.get("type") != expected_type:
        raise ReceiptInvalid(f"type is {fields.get('type')!r}, expected {expected_type!r}")
    expected_keys = RECEIPT_KEYS if expected_type == RECEIPT_TYPE else CHECKPOINT_KEYS
    if set(fields) != expected_keys:
        raise ReceiptInvalid(f"fields differ from {expected_type}: {sorted(set(fields) ^ expected_keys)}")
    if fields["key_id"] != key_id(_public_raw(public_key)):
        raise ReceiptInvalid("key_id does not name the public key it verifies with")
    return fields


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise ReceiptInvalid(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ReceiptInvalid(f"{what} is not valid base64") from None


def receipt_document(receipt: SignedReceipt) -> dict:
    """The JSON written by ``--receipt-out``: the receipt's fields (readable) and its signature."""
    return {"format": FILE_FORMAT, "receipt": receipt.fields(), "signature": _b64(receipt.signature)}


def write_receipt_file(path: str | Path, receipt: SignedReceipt) -> None:
    text = json.dumps(receipt_document(receipt), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise KioskError(f"cannot write receipt {path}: {e.strerror}") from None


def read_receipt_document(data: bytes, where: str = "receipt") -> SignedReceipt:
    """The signed bytes a receipt file (or any JSON with ``receipt`` and ``signature``) stands for.

    The receipt's fields are re-serialised canonically: that is exactly the signed body,
    so any edit to a value shows up as a signature failure.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ReceiptInvalid(f"{where} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ReceiptInvalid(f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(document, dict) or not isinstance(document.get("receipt"), dict):
        raise ReceiptInvalid(f"{where} has no receipt object")
    # Exactly these keys: an edit anywhere in the file, even outside the signed part, shows.
    if set(document) != {"format", "receipt", "signature"}:
        raise ReceiptInvalid(f"{where} has fields {sorted(document)}, expected format, receipt, signature")
    if document["format"] != FILE_FORMAT:
        raise ReceiptInvalid(f"{where} has format {document['format']!r}, expected {FILE_FORMAT!r}")
    try:
        body = canonical_bytes(document["receipt"])
    except ValueError:
        raise ReceiptInvalid(f"{where}: receipt values cannot be serialised canonically") from None
    return SignedReceipt(body, _unb64(document.get("signature"), f"{where}'s signature"))


def read_receipt_file(path: str | Path) -> SignedReceipt:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"receipt {path}: {e.strerror}") from None
    return read_receipt_document(data, str(path))


def main_receipt(argv: Sequence[str]) -> int:
    """``kiosk receipt verify FILE --public-key KEY.pem [--json]``: 0 valid, 1 invalid, 2 error."""
    parser = argparse.ArgumentParser(
        prog="kiosk receipt", description="Check a signed decision receipt offline against the device's public key."
    )
    sub = parser.add_subparsers(dest="action", required=True)
    verify = sub.add_parser("verify", help="check a receipt file's signature: exit 0 valid, 1 invalid, 2 error")
    verify.add_argument("file", type=Path, metavar="FILE", help="receipt written by kiosk verify --receipt-out")
    verify.add_argument(
        "--public-key", required=True, type=Path, metavar="KEY.pem",
        help="the device's public key (PEM): its keygen .pub file, or receipt_public_key from kiosk info",
    )
    verify.add_argument("--json", action="store_true", help="print the verified receipt's fields as JSON")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:
        return EXIT_VALID if e.code in (0, None) else EXIT_ERROR
    try:
        public_key = load_public_key(args.public_key)
        receipt = read_receipt_file(args.file)
        fields = verify_signed(receipt.body, receipt.signature, public_key, RECEIPT_TYPE)
    except ReceiptInvalid as e:
        print(f"invalid: {args.file}: {e.message}")
        return EXIT_INVALID
    except ConfigError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(fields, indent=2, sort_keys=True))
    else:
        audit = fields["audit"]
        where = f"audit seq {audit['seq']}" if audit else "no audit log"
        shown = fields["decision"] + (f" ({fields['retry_reason']})" if fields["retry_reason"] else "")
        print(
            f"valid: request {fields['request_id']!r} {shown} at {fields['time']} "
            f"on device {fields['service_device_id']!r}, {where}, key {fields['key_id'][:16]}"
        )
    return EXIT_VALID


class ReceiptIssuer:
    """Signs the receipt of each decision the service hands out (used by the servicer)."""

    def __init__(self, signer: DeviceSigner, provenance: Provenance, *, challenges: bool):
        self.signer = signer
        self.provenance = provenance
        # Whether sessions run active challenges: only then is a passed session "active_session".
        self.challenges = challenges

    def issue(self, method: str, request_id: str, device_id: str, verification, record) -> SignedReceipt:
        """``verification``: a ``kiosk.pipeline.types.Verification``; ``record``: its ``AuditRecord`` or None."""
        liveness = verification.liveness
        point = verification.operating_point
        fields = receipt_fields(
            method=method,
            request_id=request_id,
            device_id=device_id,
            decision=verification.decision.value,
            retry_reason=verification.reason,
            similarity=verification.similarity,
            threshold=point.threshold,
            target_fmr=point.target_fmr,
            model_versions=verification.model_versions,
            liveness_status=liveness.status.value,
            liveness_failed_check=liveness.failed_check,
            liveness_established=liveness_established(
                method, liveness.status.value, liveness.passive_score is not None, self.challenges
            ),
            audit_seq=None if record is None else record.seq,
            audit_chain_hash="" if record is None else record.mac,
            provenance=self.provenance,
        )
        return self.signer.sign(fields)
