"""Receipts and device keys (kiosk/receipts.py): signing, offline verification, tamper detection, key files."""

from __future__ import annotations

import json
import stat

import pytest

from kiosk import receipts
from kiosk.errors import ConfigError
from kiosk.receipts import (
    CHECKPOINT_TYPE,
    RECEIPT_KEYS,
    RECEIPT_TYPE,
    DeviceSigner,
    Provenance,
    ReceiptInvalid,
    verify_signed,
)

PROVENANCE = Provenance(
    model_sha256={"embedder/pkg@1": "ab" * 32},
    calibration_sha256="cd" * 32,
    liveness_calibration_sha256="ef" * 32,
    service_version="0.1.0",
    service_device_id="kiosk-17",
)


def _fields(**overrides) -> dict:
    values = dict(
        method="Verify",
        request_id="req-1",
        device_id="kiosk-17",
        decision="match",
        retry_reason="",
        similarity=0.876543,
        threshold=0.6437,
        target_fmr=1e-3,
        model_versions={"embedder": "embedder/pkg@1", "liveness": "liveness/pkg@2"},
        liveness_status="passed",
        liveness_failed_check="",
        liveness_established="passive_still",
        audit_seq=42,
        audit_chain_hash="12" * 32,
        provenance=PROVENANCE,
    )
    values.update(overrides)
    return receipts.receipt_fields(**values)


@pytest.fixture(scope="module")
def signer() -> DeviceSigner:
    return DeviceSigner.ephemeral_key()


def test_receipt_holds_the_decision_and_nothing_else(signer):
    receipt = signer.sign(_fields())
    fields = verify_signed(receipt.body, receipt.signature, signer.public_key, RECEIPT_TYPE)
    assert set(fields) == RECEIPT_KEYS
    assert fields["similarity"] == 0.88  # rounded as the audit log records it
    assert fields["audit"] == {"seq": 42, "chain_hash": "12" * 32}
    assert fields["models"]["embedder"] == {"version": "embedder/pkg@1", "sha256": "ab" * 32}
    assert fields["models"]["liveness"]["sha256"] == ""  # not in the manifest: said so, not invented
    assert fields["key_id"] == signer.key_id
    # Canonical: re-serialising the parsed fields gives the signed bytes back.
    assert receipts.canonical_bytes(fields) == receipt.body


def test_every_flipped_byte_of_a_receipt_is_detected(signer):
    receipt = signer.sign(_fields())
    for i in range(len(receipt.body)):
        body = bytearray(receipt.body)
        body[i] ^= 0x01
        with pytest.raises(ReceiptInvalid, match="signature does not verify"):
            verify_signed(bytes(body), receipt.signature, signer.public_key, RECEIPT_TYPE)
    for i in range(len(receipt.signature)):
        signature = bytearray(receipt.signature)
        signature[i] ^= 0x80
        with pytest.raises(ReceiptInvalid, match="signature does not verify"):
            verify_signed(receipt.body, bytes(signature), signer.public_key, RECEIPT_TYPE)


def test_another_key_or_the_wrong_type_is_refused(signer):
    receipt = signer.sign(_fields())
    with pytest.raises(ReceiptInvalid, match="signed by another key"):
        verify_signed(receipt.body, receipt.signature, DeviceSigner.ephemeral_key().public_key, RECEIPT_TYPE)
    # A checkpoint is signed by the same key, but is not a receipt (and the other way round).
    checkpoint = signer.sign({"type": CHECKPOINT_TYPE, "seq": 1, "chain_hash": "0" * 64, "time": "t",
                              "service_device_id": "", "reason": "start"})
    with pytest.raises(ReceiptInvalid, match="expected 'kiosk.receipt.v1'"):
        verify_signed(checkpoint.body, checkpoint.signature, signer.public_key, RECEIPT_TYPE)
    with pytest.raises(ReceiptInvalid, match="expected 'kiosk.audit_checkpoint.v1'"):
        verify_signed(receipt.body, receipt.signature, signer.public_key, CHECKPOINT_TYPE)


def test_receipt_fields_refuse_oversized_text_and_non_finite_scores():
    with pytest.raises(ValueError, match="at most 256"):
        _fields(request_id="x" * 257)
    with pytest.raises(ValueError, match="finite"):
        _fields(similarity=float("nan"))


def test_liveness_established_says_what_a_still_cannot_prove():
    assert receipts.liveness_established("VerifySession", "passed", False, challenges=True) == "active_session"
    assert receipts.liveness_established("VerifySession", "passed", True, challenges=False) == "passive_still"
    assert receipts.liveness_established("Verify", "passed", True, challenges=True) == "passive_still"
    assert receipts.liveness_established("Verify", "not_performed", False, challenges=True) == "none"
    assert receipts.liveness_established("Verify", "failed", True, challenges=True) == "none"


# --------------------------------------------------------------------------- key files and the CLI


def test_keygen_writes_a_private_0600_key_and_its_public_half(tmp_path, capsys):
    from kiosk.cli import main

    out = tmp_path / "receipt.key"
    assert main(["keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub = tmp_path / "receipt.key.pub"
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    signer = DeviceSigner.from_file(out)
    assert signer.public_pem == pub.read_text() and not signer.ephemeral
    # Never overwritten: replacing a device key orphans its receipts.
    before = out.read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_a_key_others_can_read_is_refused(tmp_path):
    out, _ = receipts.generate_key_file(tmp_path / "k")
    out.chmod(0o640)
    with pytest.raises(ConfigError, match="mode 0640"):
        DeviceSigner.from_file(out)
    (tmp_path / "junk").write_text("not a key")
    (tmp_path / "junk").chmod(0o600)
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        DeviceSigner.from_file(tmp_path / "junk")


def _run_receipt_verify(capsys, *args: str) -> tuple[int, str, str]:
    from kiosk.cli import main

    code = main(["receipt", "verify", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_receipt_verify_exit_codes_and_every_flipped_file_byte(tmp_path, capsys):
    key, pub = receipts.generate_key_file(tmp_path / "device.key")
    receipt = DeviceSigner.from_file(key).sign(_fields())
    path = tmp_path / "r.json"
    receipts.write_receipt_file(path, receipt)

    code, out, _ = _run_receipt_verify(capsys, str(path), "--public-key", str(pub))
    assert code == 0 and out.startswith("valid: request 'req-1' match")
    code, out, _ = _run_receipt_verify(capsys, str(path), "--public-key", str(pub), "--json")
    assert code == 0 and json.loads(out)["request_id"] == "req-1"

    # Valid signature, wrong key: invalid (1), with the reason.
    _, other = receipts.generate_key_file(tmp_path / "other.key")
    code, out, _ = _run_receipt_verify(capsys, str(path), "--public-key", str(other))
    assert code == 1 and "signed by another key" in out

    # Any one bit of the file flipped, anywhere (values, keys, punctuation, whitespace): invalid.
    original = path.read_bytes()
    flipped = tmp_path / "flipped.json"
    public_key = receipts.load_public_key(pub)
    for i in range(len(original)):
        for bit in (0x01, 0x20, 0x80):
            data = bytearray(original)
            data[i] ^= bit
            with pytest.raises(ReceiptInvalid):
                document = receipts.read_receipt_document(bytes(data))
                verify_signed(document.body, document.signature, public_key, RECEIPT_TYPE)
    data = bytearray(original)
    data[original.index(b'"decision": "match"') + len(b'"decision": "')] ^= 0x01  # match -> latch
    flipped.write_bytes(bytes(data))
    code, out, _ = _run_receipt_verify(capsys, str(flipped), "--public-key", str(pub))
    assert code == 1 and "signature does not verify" in out

    # Errors (2): a missing receipt, a public key file that is not one, a usage error.
    code, _, err = _run_receipt_verify(capsys, str(tmp_path / "missing.json"), "--public-key", str(pub))
    assert code == 2 and "No such file" in err
    code, _, err = _run_receipt_verify(capsys, str(path), "--public-key", str(path))
    assert code == 2 and "not a PEM public key" in err
    code, _, _ = _run_receipt_verify(capsys, str(path))
    assert code == 2
