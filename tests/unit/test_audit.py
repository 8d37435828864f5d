"""Audit trail: signed chain, tamper detection, rotation, resume, key checks, CLI codes.

Real files in tmp_path throughout; tampering is done by editing the bytes on disk.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from kiosk.audit import (
    GENESIS_PREV,
    AuditError,
    AuditLog,
    AuditRecord,
    chain_files,
    load_audit_key,
)
from kiosk.errors import ConfigError
from kiosk.offline.audit_verify import main_verify, verify_chain

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ALLOWED_KEYS = {
    "seq",
    "time",
    "request_id",
    "client_identity",
    "device_id",
    "event",
    "decision",
    "reason",
    "similarity",
    "threshold",
    "target_fmr",
    "model_versions",
    "consent_version",
    "liveness",
    "prev",
    "mac",
}


def fields(i: int = 0, **overrides):
    base = dict(
        request_id=f"req-{i:04d}",
        client_identity="CN=kiosk-0042,O=Operator",
        device_id="kiosk-0042",
        event="decision",
        decision="match",
        reason="",
        similarity=0.61234,
        threshold=0.37,
        target_fmr=1e-3,
        model_versions={"detector": "yunet-2023mar", "recognizer": "arcface-r100-v1"},
        consent_version="2026-01",
        liveness="passed",
    )
    base.update(overrides)
    return base


def write_chain(path: Path, n: int, key: bytes = KEY, max_bytes: int = 1 << 20) -> list[AuditRecord]:
    with AuditLog(path, key, max_bytes) as log:
        return [log.append(**fields(i)) for i in range(n)]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


# --------------------------------------------------------------------------- chain


def test_chain_of_records_verifies(log_path):
    records = write_chain(log_path, 10)
    report = verify_chain([log_path], KEY)
    assert report.ok and report.records == 10 and report.problem == "" and report.line == 0
    assert [r.seq for r in records] == list(range(1, 11))
    assert records[0].prev == GENESIS_PREV
    assert all(b.prev == a.mac for a, b in zip(records, records[1:]))
    assert records[3].audit_id == f"4-{records[3].mac[:16]}"


def test_record_lines_are_canonical_json(log_path):
    records = write_chain(log_path, 2)
    for raw, record in zip(lines_of(log_path), records):
        text = raw.decode("utf-8").rstrip("\n")
        data = json.loads(text)
        assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert data == record.to_dict()
        assert data["time"].endswith("Z") and len(data["time"]) == len("2026-01-31T12:00:00.000Z")


def test_record_json_holds_exactly_the_allowed_keys(log_path):
    write_chain(log_path, 3)
    for raw in lines_of(log_path):
        assert set(json.loads(raw)) == ALLOWED_KEYS


def test_nothing_biometric_can_be_passed(log_path):
    with AuditLog(log_path, KEY, 1 << 20) as log:
        with pytest.raises(TypeError):
            log.append(**fields(), embedding=[0.1] * 512)
        with pytest.raises(TypeError):
            log.append(**fields(), id_photo_sha256="ab" * 32)
        with pytest.raises(TypeError):
            log.append(**fields(request_id=b"\xff\xd8\xff\xe0 jpeg bytes"))
        with pytest.raises(ValueError):  # a base64 image does not fit a text field
            log.append(**fields(reason="A" * 10_000))
        with pytest.raises(TypeError):
            log.append(**fields(similarity=[0.1, 0.2]))
        with pytest.raises(TypeError):
            log.append(**fields(model_versions={"recognizer": [0.1] * 512}))
        with pytest.raises(ValueError):
            log.append(**fields(event="refused", decision="match"))
        record = log.append(**fields(similarity=0.61789))
    # Rejected calls wrote nothing and did not consume a seq.
    assert record.seq == 1 and record.similarity == 0.62
    assert verify_chain(log_path, KEY).records == 1


def test_refusal_without_operating_point_is_recordable(log_path):
    with AuditLog(log_path, KEY, 1 << 20) as log:
        record = log.append(
            **fields(event="refused", decision="refused", reason="consent_missing", similarity=None, threshold=None)
        )
    data = json.loads(lines_of(log_path)[0])
    assert data["similarity"] is None and data["threshold"] is None and data["reason"] == "consent_missing"
    assert record.liveness == "passed" and verify_chain(log_path, KEY).ok


def test_log_file_is_created_0600(log_path):
    write_chain(log_path, 1)
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- tampering


def test_flipped_character_found_at_its_line(log_path):
    write_chain(log_path, 8)
    lines = lines_of(log_path)
    lines[3] = lines[3].replace(b"req-0003", b"req-0009")
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert not report.ok
    assert (report.file, report.line, report.records) == (str(log_path), 4, 3)
    assert "mac mismatch" in report.problem


def test_flipped_digit_of_similarity_found(log_path):
    write_chain(log_path, 5)
    lines = lines_of(log_path)
    assert b'"similarity":0.61' in lines[1]
    lines[1] = lines[1].replace(b'"similarity":0.61', b'"similarity":0.91')
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert report.line == 2 and "mac mismatch" in report.problem


def test_reformatted_record_found(log_path):
    write_chain(log_path, 3)
    lines = lines_of(log_path)
    lines[2] = lines[2].replace(b'"event":', b'"event": ')
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert report.line == 3 and "canonical" in report.problem


def test_deleted_record_found(log_path):
    write_chain(log_path, 8)
    lines = lines_of(log_path)
    del lines[4]
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert not report.ok and report.line == 5
    assert "seq gap: expected 5, found 6" in report.problem


def test_deleted_first_record_found(log_path):
    write_chain(log_path, 3)
    log_path.write_bytes(b"".join(lines_of(log_path)[1:]))
    report = verify_chain([log_path], KEY)
    assert report.line == 1 and "starts at seq 2" in report.problem


def test_swapped_records_found(log_path):
    write_chain(log_path, 8)
    lines = lines_of(log_path)
    lines[2], lines[3] = lines[3], lines[2]
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert not report.ok and report.line == 3 and "seq" in report.problem


def test_replayed_record_found_as_backwards_seq(log_path):
    write_chain(log_path, 6)
    lines = lines_of(log_path)
    log_path.write_bytes(b"".join(lines[:4] + [lines[1]] + lines[4:]))  # seq 2 again after 4
    report = verify_chain([log_path], KEY)
    assert report.line == 5 and "seq goes backwards: 2 after 4" in report.problem


def test_relinked_record_with_valid_mac_but_wrong_prev_found(log_path, tmp_path):
    # Two chains under the same key: splicing a valid record of the other chain in
    # keeps every mac valid, but its prev does not link.
    other = tmp_path / "other.jsonl"
    write_chain(log_path, 4)
    with AuditLog(other, KEY, 1 << 20) as log:
        spliced = [log.append(**fields(100 + i, decision="no_match")) for i in range(4)]
    lines = lines_of(log_path)
    lines[2] = lines_of(other)[2]
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert spliced[2].seq == 3
    assert report.line == 3 and "prev does not match" in report.problem


def test_truncated_last_line_found(log_path):
    write_chain(log_path, 6)
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-20])
    report = verify_chain([log_path], KEY)
    assert not report.ok and report.line == 6 and "truncated" in report.problem
    assert report.records == 5


def test_malformed_json_found(log_path):
    write_chain(log_path, 4)
    lines = lines_of(log_path)
    lines[1] = b'{"seq":2,\n'
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert report.line == 2 and "malformed JSON" in report.problem


def test_smuggled_field_found(log_path):
    write_chain(log_path, 2)
    lines = lines_of(log_path)
    data = json.loads(lines[1])
    data["embedding"] = [0.1, 0.2]
    lines[1] = json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    log_path.write_bytes(b"".join(lines))
    report = verify_chain([log_path], KEY)
    assert report.line == 2 and "unexpected field(s) embedding" in report.problem


def test_wrong_key_found(log_path):
    write_chain(log_path, 3)
    report = verify_chain([log_path], OTHER_KEY)
    assert not report.ok and report.line == 1 and "mac mismatch" in report.problem


# --------------------------------------------------------------------------- rotation


def test_rotation_across_files_verifies(log_path):
    records = write_chain(log_path, 30, max_bytes=1500)
    files = chain_files(log_path)
    assert len(files) >= 4 and files[-1] == log_path  # at least 3 rotated files + current
    for path in files:
        assert path.stat().st_size <= 1500
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Names carry the seq range and sort in chain order.
    rotated = files[:-1]
    assert [p.name for p in rotated] == sorted(p.name for p in rotated)
    first = [json.loads(lines_of(p)[0]) for p in files]
    assert first[0]["seq"] == 1
    assert rotated[0].name == f"audit.jsonl.{1:012d}-{first[1]['seq'] - 1:012d}"
    # Each file's first prev links to the previous file's last mac.
    for earlier, later in zip(files, files[1:]):
        assert json.loads(lines_of(later)[0])["prev"] == json.loads(lines_of(earlier)[-1])["mac"]

    report = verify_chain([log_path], KEY)
    assert report.ok and report.records == 30
    assert verify_chain(files, KEY).ok  # explicit list in chain order
    assert records[-1].seq == 30


def test_removed_middle_rotated_file_found(log_path):
    write_chain(log_path, 30, max_bytes=1500)
    files = chain_files(log_path)
    files[1].unlink()
    report = verify_chain([log_path], KEY)
    assert not report.ok
    assert report.file == str(files[2]) and report.line == 1
    assert "seq gap" in report.problem


def test_records_cut_from_end_of_rotated_file_found(log_path):
    write_chain(log_path, 30, max_bytes=1500)
    files = chain_files(log_path)
    # Cut the last record of the newest rotated file and fix up nothing else: the next
    # file's link breaks, and the name's range no longer matches.
    files[-2].write_bytes(b"".join(lines_of(files[-2])[:-1]))
    report = verify_chain([log_path], KEY)
    assert not report.ok and report.file == str(files[-2]) and "file name says" in report.problem


def test_explicit_files_out_of_order_found(log_path):
    write_chain(log_path, 30, max_bytes=1500)
    files = chain_files(log_path)
    files[0], files[1] = files[1], files[0]
    report = verify_chain(files, KEY)
    assert not report.ok and report.file == str(files[0]) and report.line == 1


# --------------------------------------------------------------------------- resume


def test_resume_after_reopen_continues_chain(log_path):
    first = write_chain(log_path, 3)
    with AuditLog(log_path, KEY, 1 << 20) as log:
        record = log.append(**fields(3))
        log.append(**fields(4))
    assert record.seq == 4 and record.prev == first[-1].mac
    report = verify_chain([log_path], KEY)
    assert report.ok and report.records == 5


def test_resume_across_rotation_continues_chain(log_path):
    write_chain(log_path, 20, max_bytes=1500)
    write_chain(log_path, 20, max_bytes=1500)
    assert verify_chain([log_path], KEY).records == 40


def test_resume_when_current_file_missing_after_rotation(log_path):
    records = write_chain(log_path, 20, max_bytes=1500)
    # As if the process stopped right after renaming the full file, before the new one.
    first_seq = json.loads(lines_of(log_path)[0])["seq"]
    renamed = log_path.with_name(f"audit.jsonl.{first_seq:012d}-{20:012d}")
    log_path.rename(renamed)
    with AuditLog(log_path, KEY, 1500) as log:
        record = log.append(**fields(99))
    assert record.seq == 21 and record.prev == records[-1].mac
    assert chain_files(log_path)[-2:] == [renamed, log_path]
    report = verify_chain([log_path], KEY)
    assert report.ok and report.records == 21


def test_resume_refuses_tampered_tail(log_path):
    write_chain(log_path, 3)
    lines = lines_of(log_path)
    lines[-1] = lines[-1].replace(b"req-0002", b"req-0007")
    log_path.write_bytes(b"".join(lines))
    with pytest.raises(AuditError, match="broken at its last record.*mac mismatch"):
        AuditLog(log_path, KEY, 1 << 20)


def test_resume_refuses_truncated_tail(log_path):
    write_chain(log_path, 3)
    log_path.write_bytes(log_path.read_bytes()[:-5])
    with pytest.raises(AuditError, match="truncated"):
        AuditLog(log_path, KEY, 1 << 20)


def test_resume_refuses_wrong_key(log_path):
    write_chain(log_path, 2)
    with pytest.raises(AuditError, match="mac mismatch"):
        AuditLog(log_path, OTHER_KEY, 1 << 20)


def test_second_writer_on_same_path_refused(log_path):
    with AuditLog(log_path, KEY, 1 << 20):
        with pytest.raises(AuditError, match="already has a writer"):
            AuditLog(log_path, KEY, 1 << 20)
    with AuditLog(log_path, KEY, 1 << 20):  # released on close
        pass


def test_append_after_close_refused(log_path):
    log = AuditLog(log_path, KEY, 1 << 20)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(**fields())


def test_bad_constructor_arguments_refused(log_path):
    with pytest.raises(ConfigError):
        AuditLog(log_path, b"short", 1 << 20)
    with pytest.raises(ConfigError):
        AuditLog(log_path, KEY, 0)


# --------------------------------------------------------------------------- threads


def test_concurrent_appends_make_one_valid_chain(log_path):
    per_thread, n_threads = 40, 8
    seqs: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    with AuditLog(log_path, KEY, 4000) as log:

        def worker(t: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    seqs.append(log.append(**fields(t * 1000 + i)).seq)
            except BaseException as e:  # surfaced below, a thread cannot fail the test
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    total = per_thread * n_threads
    assert not errors
    assert sorted(seqs) == list(range(1, total + 1))  # no duplicate, no gap
    report = verify_chain([log_path], KEY)
    assert report.ok and report.records == total
    on_disk = [json.loads(raw)["seq"] for path in chain_files(log_path) for raw in lines_of(path)]
    assert on_disk == list(range(1, total + 1))


# --------------------------------------------------------------------------- key file


def write_key(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def test_key_file_hex_and_raw_accepted(tmp_path):
    assert load_audit_key(write_key(tmp_path / "hex.key", KEY.hex().encode() + b"\n")) == KEY
    raw = bytes([0xFF]) * 40
    assert load_audit_key(write_key(tmp_path / "raw.key", raw)) == raw
    assert load_audit_key(write_key(tmp_path / "ro.key", KEY.hex().encode(), 0o400)) == KEY


def test_key_file_0644_refused(tmp_path):
    path = write_key(tmp_path / "audit.key", KEY.hex().encode(), 0o644)
    with pytest.raises(ConfigError) as info:
        load_audit_key(path)
    assert str(path) in info.value.message and "0644" in info.value.message


def test_key_file_group_readable_refused(tmp_path):
    with pytest.raises(ConfigError, match="0640"):
        load_audit_key(write_key(tmp_path / "audit.key", KEY.hex().encode(), 0o640))


def test_short_key_refused(tmp_path):
    path = write_key(tmp_path / "short.key", bytes(16).hex().encode())
    with pytest.raises(ConfigError) as info:
        load_audit_key(path)
    assert str(path) in info.value.message and "16-byte" in info.value.message


def test_missing_key_file_refused(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_audit_key(tmp_path / "absent.key")


# --------------------------------------------------------------------------- CLI


def test_main_verify_exit_codes(log_path, tmp_path, capsys):
    write_chain(log_path, 30, max_bytes=1500)
    key_file = write_key(tmp_path / "audit.key", KEY.hex().encode())

    assert main_verify([str(log_path), "--key-file", str(key_file)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 30 records, chain intact"

    wrong = write_key(tmp_path / "wrong.key", OTHER_KEY.hex().encode())
    assert main_verify([str(log_path), "--key-file", str(wrong)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"broken: {chain_files(log_path)[0]}:1: mac mismatch")

    loose = write_key(tmp_path / "loose.key", KEY.hex().encode(), 0o644)
    assert main_verify([str(log_path), "--key-file", str(loose)]) == 2
    assert "0644" in capsys.readouterr().err

    assert main_verify([str(log_path)]) == 2  # no key given
    assert main_verify([]) == 2  # no FILE
    assert main_verify(["--bogus"]) == 2
    capsys.readouterr()


def test_main_verify_reports_tampered_line(log_path, tmp_path, capsys):
    write_chain(log_path, 5)
    key_file = write_key(tmp_path / "audit.key", KEY)
    lines = lines_of(log_path)
    del lines[2]
    log_path.write_bytes(b"".join(lines))
    assert main_verify([str(log_path), "--key-file", str(key_file)]) == 1
    assert capsys.readouterr().out.startswith(f"broken: {log_path}:3: seq gap")


def test_main_verify_key_from_settings(log_path, tmp_path, capsys):
    write_chain(log_path, 2)
    key_file = write_key(tmp_path / "audit.key", KEY.hex().encode())
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[audit]\npath = "{log_path}"\nkey_file = "{key_file}"\n')
    assert main_verify([str(log_path), "--config", str(config)]) == 0
    assert "ok: 2 records" in capsys.readouterr().out


# --------------------------------------------------------------------------- checkpoints (anchoring)


def _checkpointed_chain(path: Path, n: int, signer, interval_s: float = 0.0) -> list[AuditRecord]:
    """``n`` records with a signed checkpoint after each, as a running service leaves them at shutdown."""
    from kiosk.audit import AuditCheckpoints

    with AuditLog(path, KEY, 1 << 20) as log:
        checkpoints = AuditCheckpoints(log, signer, interval_s=interval_s, device_id="kiosk-0042")
        records = []
        for i in range(n):
            records.append(log.append(**fields(i)))
            assert checkpoints.write("periodic")
        assert not checkpoints.write("periodic")  # head unmoved: nothing new to anchor
        checkpoints.close()  # the shutdown checkpoint is written even so
        return records


@pytest.fixture(scope="module")
def signer():
    from kiosk.receipts import DeviceSigner

    return DeviceSigner.ephemeral_key()


def test_checkpoints_are_signed_heads_and_verify(log_path, signer):
    from kiosk.audit import checkpoints_path
    from kiosk.offline.audit_verify import load_anchors

    records = _checkpointed_chain(log_path, 3, signer)
    anchors = load_anchors(checkpoints_path(log_path), signer.public_key)
    assert [(a.seq, a.chain_hash) for a in anchors] == [(r.seq, r.mac) for r in records] + [(3, records[-1].mac)]
    assert "shutdown" in anchors[-1].what
    assert stat.S_IMODE(os.stat(checkpoints_path(log_path)).st_mode) == 0o600
    report = verify_chain(log_path, KEY, anchors)
    assert report.ok and report.anchors == 4, report
    assert main_verify([str(log_path), "--key-file", str(_key_file(log_path))]) == 0


def _key_file(log_path: Path) -> Path:
    key_file = log_path.with_name("audit.key")
    if not key_file.exists():
        key_file.write_bytes(KEY)
        key_file.chmod(0o600)
    return key_file


def test_deleting_the_newest_records_is_caught_by_a_checkpoint(log_path, signer, capsys):
    from kiosk.audit import checkpoints_path
    from kiosk.offline.audit_verify import load_anchors

    _checkpointed_chain(log_path, 5, signer)
    log_path.write_bytes(b"".join(lines_of(log_path)[:-2]))
    # Without an anchor the shorter chain is valid: the gap a hash chain alone leaves.
    assert verify_chain(log_path, KEY).ok
    report = verify_chain(log_path, KEY, load_anchors(checkpoints_path(log_path), signer.public_key))
    assert not report.ok
    assert "truncated" in report.problem and "vouches for seq 4" in report.problem and "ends at seq 3" in report.problem
    assert report.file == str(checkpoints_path(log_path)) and report.line == 4
    # The CLI finds <path>.checkpoints on its own.
    assert main_verify([str(log_path), "--key-file", str(_key_file(log_path))]) == 1
    assert "truncated" in capsys.readouterr().out


def test_a_rewritten_head_and_a_forged_checkpoint_are_caught(log_path, signer, tmp_path):
    from kiosk.audit import checkpoints_path
    from kiosk.offline.audit_verify import load_anchors
    from kiosk.receipts import DeviceSigner, ReceiptInvalid

    _checkpointed_chain(log_path, 3, signer)
    held = tmp_path / "held.checkpoints"  # a copy the back office keeps
    held.write_bytes(checkpoints_path(log_path).read_bytes())
    # The insider rewrites the whole chain (they hold the HMAC key) with other records.
    log_path.unlink()
    with AuditLog(log_path, KEY, 1 << 20) as log:
        for i in range(3):
            log.append(**fields(i, decision="no_match"))
    report = verify_chain(log_path, KEY, load_anchors(held, signer.public_key))
    assert not report.ok and report.problem.startswith("rewritten:") and "at seq 1" in report.problem
    # ... and cannot sign a checkpoint that matches without the device key.
    forged = tmp_path / "forged.checkpoints"
    with AuditLog(tmp_path / "other.jsonl", KEY, 1 << 20) as other:
        other.append(**fields(0))
        from kiosk.audit import AuditCheckpoints

        AuditCheckpoints(other, DeviceSigner.ephemeral_key(), interval_s=0, device_id="x").write("start")
    forged.write_bytes(checkpoints_path(tmp_path / "other.jsonl").read_bytes())
    with pytest.raises(ReceiptInvalid, match="forged.checkpoints:1: signature does not verify"):
        load_anchors(forged, signer.public_key)
    edited = tmp_path / "edited.checkpoints"
    edited.write_bytes(held.read_bytes().replace(b'"seq":3', b'"seq":2', 1))
    with pytest.raises(ReceiptInvalid, match="signature does not verify"):
        load_anchors(edited, signer.public_key)


def test_periodic_checkpoints_only_when_the_head_moved(log_path, signer):
    import time as _time

    from kiosk.audit import AuditCheckpoints, checkpoints_path

    with AuditLog(log_path, KEY, 1 << 20) as log:
        checkpoints = AuditCheckpoints(log, signer, interval_s=0.05, device_id="")
        checkpoints.start()  # empty chain: nothing to anchor yet
        log.append(**fields(0))
        deadline = _time.monotonic() + 10
        while not checkpoints_path(log_path).exists() and _time.monotonic() < deadline:
            _time.sleep(0.02)
        _time.sleep(0.3)  # several more periods with the head unmoved
        checkpoints.close()
    reasons = [json.loads(line)["checkpoint"]["reason"] for line in checkpoints_path(log_path).read_text().splitlines()]
    assert reasons == ["periodic", "shutdown"]


def test_audit_verify_with_config_checks_anchors_against_the_device_key(log_path, tmp_path, capsys):
    from kiosk.receipts import DeviceSigner, generate_key_file

    receipt_key, _ = generate_key_file(tmp_path / "receipt.key")
    _checkpointed_chain(log_path, 2, DeviceSigner.from_file(receipt_key))
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[audit]\nkey_file = "{_key_file(log_path)}"\n\n[receipts]\nkey_file = "{receipt_key}"\n')
    assert main_verify([str(log_path), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "3 anchor(s)" in out and "not checked" not in out
    # Checkpoints signed by another key are refused once the device key is known.
    (tmp_path / "receipt.key.pub").write_text(DeviceSigner.ephemeral_key().public_pem)
    assert main_verify([str(log_path), "--config", str(config)]) == 1
    assert "signature does not verify" in capsys.readouterr().out
