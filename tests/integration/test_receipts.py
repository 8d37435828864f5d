"""Signed receipts and audit checkpoints through the real service (issue: back office).

In process: every Verify and session decision carries a receipt that verifies offline
against GetInfo's public key and names its audit record. Through a real `kiosk serve`
subprocess: the CLI writes and checks a receipt, the service signs the audit head at
start, periodically and at shutdown, and a truncated log is caught by `kiosk audit
verify` against the checkpoints and against a receipt kept elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from kiosk import receipts
from kiosk.cli import main as cli_main
from kiosk.receipts import RECEIPT_TYPE, verify_signed
from kiosk.settings import ReceiptSettings, ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2 as pb

from .rpc import TIMEOUT, ServeProcess, frame_message, settings_with, start_message, verify_request


def _verified(response: pb.VerifyResponse, public_pem: str) -> dict:
    public_key = receipts.parse_public_key(public_pem)
    return verify_signed(response.receipt, response.receipt_signature, public_key, RECEIPT_TYPE)


def test_verify_receipt_verifies_offline_and_names_its_audit_record(start_server, photos, tmp_path):
    key_file, pub_file = receipts.generate_key_file(tmp_path / "device.key")
    settings = dataclasses.replace(
        Settings(),
        service=ServiceSettings(listen=("127.0.0.1:0",), device_id="kiosk-7"),
        receipts=ReceiptSettings(key_file=str(key_file)),
    )
    kiosk = start_server(settings)
    stub = kiosk.stub()
    info = stub.GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
    assert info.receipt_public_key == pub_file.read_text() and not info.receipt_key_ephemeral

    genuine, impostor = photos.scorsese[0].read_bytes(), photos.stranger.read_bytes()
    match = stub.Verify(verify_request(genuine, [photos.scorsese[1].read_bytes()], request_id="r-1"), timeout=TIMEOUT)
    no_match = stub.Verify(verify_request(genuine, [impostor], request_id="r-2"), timeout=TIMEOUT)
    retry = stub.Verify(verify_request(genuine, [photos.no_face], request_id="r-3"), timeout=TIMEOUT)
    assert [r.decision for r in (match, no_match, retry)] == [pb.VerifyResponse.MATCH, pb.VerifyResponse.NO_MATCH,
                                                              pb.VerifyResponse.RETRY]
    records = kiosk.audit_records()
    for response, record in zip((match, no_match, retry), records, strict=True):
        fields = _verified(response, info.receipt_public_key)
        assert fields["request_id"] == response.request_id == record["request_id"]
        assert fields["decision"] == record["decision"]
        assert fields["retry_reason"] == response.retry_reason == record["reason"]
        assert fields["similarity"] == record["similarity"]  # rounded to 2 decimals, as the audit
        assert (fields["threshold"], fields["target_fmr"]) == (response.threshold, response.target_fmr)
        assert fields["audit"] == {"seq": record["seq"], "chain_hash": record["mac"]}
        assert fields["service_device_id"] == fields["device_id"] == "kiosk-7"
        assert fields["method"] == "Verify"
        assert {role: m["version"] for role, m in fields["models"].items()} == dict(response.model_versions)
        # Every model the decision used is named with the SHA-256 its manifest checks at load.
        assert all(len(m["sha256"]) == 64 for m in fields["models"].values())
        assert len(fields["calibration_sha256"]) == 64
    assert _verified(match, info.receipt_public_key)["liveness"]["established"] == "passive_still"
    assert _verified(retry, info.receipt_public_key)["similarity"] is None
    # Small and fixed in shape (RECEIPT_KEYS): no room for anything image-sized ...
    assert max(len(r.receipt) for r in (match, no_match, retry)) < 2048
    # ... and nothing of the photos is in it.
    for photo in (genuine, impostor):
        assert photo[-32:] not in match.receipt and photo[:-32][-32:] not in no_match.receipt


def test_session_decision_carries_a_receipt_and_an_unset_key_is_ephemeral(start_server, photos):
    kiosk = start_server(settings_with(challenges=False))
    stub = kiosk.stub()
    info = stub.GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
    assert info.receipt_key_ephemeral and info.receipt_public_key.startswith("-----BEGIN PUBLIC KEY-----")
    requests = [start_message(photos.nuaa_id.read_bytes(), request_id="s-1")]
    requests += [frame_message(p.read_bytes(), 100 * i) for i, p in enumerate(photos.nuaa_frames[:4])]
    decision = list(stub.VerifySession(iter(requests), timeout=TIMEOUT))[-1].decision
    fields = _verified(decision, info.receipt_public_key)
    assert (fields["method"], fields["request_id"], fields["decision"]) == ("VerifySession", "s-1", "match")
    # Challenges off: the session's liveness rests on the passive model alone.
    assert fields["liveness"] == {"status": "passed", "failed_check": "", "established": "passive_still"}
    [record] = kiosk.audit_records()
    assert fields["audit"] == {"seq": record["seq"], "chain_hash": record["mac"]}


def test_cli_session_writes_its_receipt(start_server, photos, tmp_path, capsys):
    kiosk = start_server(settings_with(challenges=False))
    info = kiosk.stub().GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
    public = tmp_path / "served.pub"
    public.write_text(info.receipt_public_key)
    out = tmp_path / "session.json"
    frames = [str(p) for p in photos.nuaa_frames[:4]]
    args = ["session", "--server", kiosk.address, "--id-photo", str(photos.nuaa_id), *frames, "--receipt-out", str(out)]
    assert cli_main(args) == 0
    capsys.readouterr()
    assert cli_main(["receipt", "verify", str(out), "--public-key", str(public), "--json"]) == 0
    fields = json.loads(capsys.readouterr().out)
    assert (fields["method"], fields["decision"]) == ("VerifySession", "match")


def _audit_verify(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def test_cli_receipts_and_checkpoints_catch_a_truncated_log(tmp_path, photos, capsys):
    """`kiosk serve` with a device key; CLI verify --receipt-out, info, receipt verify; then an insider truncates."""
    key_file, pub_file = receipts.generate_key_file(tmp_path / "device.key")
    serve = ServeProcess.start(
        tmp_path,
        extra_config=f'checkpoint_interval_s = 0.2\n\n[receipts]\nkey_file = "{key_file}"\n',
    )
    try:
        serve.wait_serving()
        # GetInfo through the CLI: strict JSON with the public key.
        assert cli_main(["info", serve.address, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["receipt_public_key"] == pub_file.read_text() and info["receipt_key_ephemeral"] is False
        assert cli_main(["info", serve.address]) == 0
        text = capsys.readouterr().out
        assert "receipt_key_ephemeral: false" in text and "-----BEGIN PUBLIC KEY-----" in text
        served_pub = tmp_path / "served.pub"
        served_pub.write_text(info["receipt_public_key"])

        genuine = [str(p) for p in photos.scorsese[:2]]
        receipt_files = []
        for i in range(3):
            out = tmp_path / f"receipt{i}.json"
            assert cli_main(["verify", "--server", serve.address, *genuine, "--receipt-out", str(out)]) == 0
            receipt_files.append(out)
            time.sleep(0.3)  # a periodic checkpoint between decisions
        capsys.readouterr()
        for out in receipt_files:
            assert cli_main(["receipt", "verify", str(out), "--public-key", str(served_pub)]) == 0
        assert capsys.readouterr().out.count("valid: request") == 3
        # --receipt-out needs a service to sign it.
        assert cli_main(["verify", *genuine, "--receipt-out", str(tmp_path / "x.json")]) == 2
        assert "--receipt-out needs --server" in capsys.readouterr().err
    finally:
        assert serve.terminate() == 0
    checkpoints = [json.loads(line)["checkpoint"] for line in (tmp_path / "audit.jsonl.checkpoints").read_text().splitlines()]
    assert checkpoints[-1]["reason"] == "shutdown" and checkpoints[-1]["seq"] == 3
    assert "periodic" in {c["reason"] for c in checkpoints}
    assert os.stat(tmp_path / "audit.jsonl.checkpoints").st_mode & 0o077 == 0

    log, key = tmp_path / "audit.jsonl", tmp_path / "audit.key"
    base = [str(log), "--key-file", str(key), "--public-key", str(pub_file)]
    code, out = _audit_verify(capsys, *base, "--anchor", str(receipt_files[-1]))
    assert code == 0 and out.startswith("ok: 3 records, chain intact,") and "anchor(s)" in out

    # The insider deletes the last decision: the chain alone is still valid ...
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    code, out = _audit_verify(capsys, str(log), "--key-file", str(key))
    assert code == 1 and "truncated: checkpoint (" in out and "vouches for seq 3" in out and "chain ends at seq 2" in out
    # ... and deleting the checkpoints that name it too leaves the device's own files consistent,
    cp = tmp_path / "audit.jsonl.checkpoints"
    cp.write_text("".join(l for l in cp.read_text().splitlines(keepends=True) if json.loads(l)["checkpoint"]["seq"] < 3))
    code, out = _audit_verify(capsys, *base)
    assert code == 0, out
    # but the receipt the back office kept of that decision shows the truncation.
    code, out = _audit_verify(capsys, *base, "--anchor", str(receipt_files[-1]))
    assert code == 1 and "truncated: receipt of request" in out and "vouches for seq 3" in out
    # A forged anchor (edited after signing) is refused as such.
    forged = tmp_path / "forged.json"
    forged.write_text(receipt_files[-1].read_text().replace('"seq": 3', '"seq": 2'))
    code, out = _audit_verify(capsys, *base, "--anchor", str(forged))
    assert code == 1 and "signature does not verify" in out
