"""Checking an audit chain offline: the engine behind `kiosk audit verify`.

The chain, its rotation, the key file and the checkpoints are described in
``kiosk.audit``, which writes them on the device; this module reads them back, with
the same record parser (``kiosk.audit.parse_line``), and reports the first place where
the chain or an anchor (a checkpoint or a receipt) does not hold.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiosk.audit import (
    GENESIS_PREV,
    AuditRecord,
    BadLine,
    chain_files,
    checkpoints_path,
    load_audit_key,
    parse_line,
    rotated_range,
)
from kiosk.errors import ConfigError, KioskError

__all__ = ["Anchor", "ChainReport", "load_anchors", "main_verify", "verify_chain"]


@dataclass(frozen=True)
class Anchor:
    """A (seq, mac) of the chain vouched for by a checkpoint or a receipt, and where it came from."""

    seq: int
    chain_hash: str
    source: str  # file it was read from
    line: int
    what: str  # e.g. "checkpoint (shutdown, 2026-01-31T12:00:00.000Z)"


def _anchor_problem(anchor: Anchor, last_seq: int, mac: str | None) -> str:
    if anchor.seq > last_seq:
        return (
            f"truncated: {anchor.what} vouches for seq {anchor.seq} (chain hash {anchor.chain_hash[:16]}), "
            f"but the chain ends at seq {last_seq}: its newest records were deleted"
        )
    if mac != anchor.chain_hash:
        return (
            f"rewritten: {anchor.what} vouches for chain hash {anchor.chain_hash[:16]} at seq {anchor.seq}, "
            f"but the record there has {str(mac)[:16]}: records were replaced"
        )
    return ""


def load_anchors(path: str | Path, public_key=None) -> list[Anchor]:
    """Anchors from a checkpoints file (JSON lines) or a receipt file (``kiosk verify --receipt-out``).

    With ``public_key`` (an Ed25519 public key) every signature must verify; without
    it the contents are taken as they are (enough to show a truncation to the device's
    operator, not to prove it to anyone else). Raises ``ConfigError`` for an unreadable
    file and ``kiosk.receipts.ReceiptInvalid`` for a bad one.
    """
    from kiosk.receipts import (
        CHECKPOINT_TYPE,
        RECEIPT_TYPE,
        ReceiptInvalid,
        canonical_bytes,
        read_receipt_document,
        verify_signed,
    )

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"anchor file {path}: {e.strerror}") from None

    def checked(body: bytes, signature: bytes, kind: str, where: str) -> dict:
        if public_key is not None:
            try:
                return verify_signed(body, signature, public_key, kind)
            except ReceiptInvalid as e:
                raise ReceiptInvalid(f"{where}: {e.message}") from None
        fields = json.loads(body)
        if fields.get("type") != kind:
            raise ReceiptInvalid(f"{where}: type is {fields.get('type')!r}, expected {kind!r}")
        return fields

    def anchor(fields: dict, line: int, what: str, where: str) -> Anchor:
        seq, chain_hash = fields.get("seq"), fields.get("chain_hash")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not isinstance(chain_hash, str):
            raise ReceiptInvalid(f"{where}: no valid seq and chain_hash")
        return Anchor(seq, chain_hash, str(path), line, what)

    if data.lstrip().startswith(b"{") and b'"receipt"' in data:
        receipt = read_receipt_document(data, str(path))
        fields = checked(receipt.body, receipt.signature, RECEIPT_TYPE, str(path))
        audit = fields.get("audit")
        if not audit:
            return []  # a receipt from a service without an audit log anchors nothing
        what = f"receipt of request {fields.get('request_id')!r} ({fields.get('time')})"
        return [anchor(audit, 0, what, str(path))]
    anchors = []
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
            body = canonical_bytes(entry["checkpoint"])
            signature = base64.b64decode(entry["signature"], validate=True)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ReceiptInvalid(f"{where}: not a signed checkpoint line") from None
        fields = checked(body, signature, CHECKPOINT_TYPE, where)
        what = f"checkpoint ({fields.get('reason')}, {fields.get('time')})"
        anchors.append(anchor(fields, number, what, where))
    return anchors


# --------------------------------------------------------------------------- verifier


@dataclass(frozen=True)
class ChainReport:
    """Result of ``verify_chain``: the first problem found, or ``ok``."""

    ok: bool
    records: int  # records verified (before the problem, if any)
    problem: str = ""
    file: str = ""
    line: int = 0  # 1-based; 0 when the problem is about a whole file
    anchors: int = 0  # checkpoints and receipts the chain was checked against

    def __str__(self) -> str:
        if self.ok:
            agreed = f", {self.anchors} anchor(s) (checkpoints, receipts) agree" if self.anchors else ""
            return f"ok: {self.records} records, chain intact{agreed}"
        return f"broken: {self.file}:{self.line}: {self.problem}"


def _link_problem(record: AuditRecord, count: int, last_seq: int, last_mac: str) -> str:
    """How ``record`` fails to follow the last verified record, or ''."""
    # seq before prev: a gap or a step back says *what* happened (missing, reordered),
    # a bad prev alone says only that the link is broken.
    if record.seq != last_seq + 1:
        if count == 0:
            return f"chain starts at seq {record.seq}, not 1 (earlier records or files missing)"
        if record.seq <= last_seq:
            return f"seq goes backwards: {record.seq} after {last_seq} (records reordered)"
        return f"seq gap: expected {last_seq + 1}, found {record.seq} (records missing or reordered)"
    if record.prev != last_mac:
        if count == 0:
            return "first record's prev is not the genesis value (64 zeros)"
        return "prev does not match the previous record's mac (record removed or reordered)"
    return ""


def verify_chain(
    paths: Sequence[str | Path] | str | Path, key: bytes, anchors: Sequence[Anchor] = ()
) -> ChainReport:
    """Walk the chain and report its first problem.

    One path that is not itself a rotated file (``<name>.<first>-<last>``) is taken as
    the base path: its rotated files are found next to it and walked first, in seq
    order. Several paths are walked exactly in the order given. The walk must start at
    the chain's first record (seq 1, prev = 64 zeros): a missing head is reported,
    since it cannot be told apart from deleted records. Each of ``anchors`` (see
    ``load_anchors``) must name a record the chain holds, with the same mac: a chain
    that ends before an anchored seq has lost its newest records.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    given = [Path(p) for p in paths]
    if not given:
        return ChainReport(False, 0, "no audit log files given")
    files = given
    if len(given) == 1 and rotated_range(given[0]) is None:
        files = chain_files(given[0]) or given

    count, last_seq, last_mac = 0, 0, GENESIS_PREV
    # Only the macs anchors name are kept: a chain may hold millions of records.
    anchored = {anchor.seq for anchor in anchors}
    macs: dict[int, str] = {}

    def broken(path: Path, line: int, problem: str) -> ChainReport:
        return ChainReport(False, count, problem, str(path), line)

    for path in files:
        first_in_file = last_in_file = None
        line_no = 0
        try:
            with open(path, "rb") as f:
                for line_no, raw in enumerate(f, start=1):
                    try:
                        record = parse_line(raw, key)
                    except BadLine as e:
                        return broken(path, line_no, str(e))
                    problem = _link_problem(record, count, last_seq, last_mac)
                    if problem:
                        return broken(path, line_no, problem)
                    count, last_seq, last_mac = count + 1, record.seq, record.mac
                    if record.seq in anchored:
                        macs[record.seq] = record.mac
                    first_in_file = record.seq if first_in_file is None else first_in_file
                    last_in_file = record.seq
        except OSError as e:
            return broken(path, 0, f"cannot read: {e.strerror or e}")
        named = rotated_range(path)
        if named is not None and named != (first_in_file, last_in_file):
            held = "no records" if first_in_file is None else f"seq {first_in_file}-{last_in_file}"
            problem = f"file name says seq {named[0]}-{named[1]} but it holds {held} (records cut off or file renamed)"
            return broken(path, line_no, problem)
    for anchor in sorted(anchors, key=lambda a: a.seq):
        problem = _anchor_problem(anchor, last_seq, macs.get(anchor.seq))
        if problem:
            return ChainReport(False, count, problem, anchor.source, anchor.line, len(anchors))
    return ChainReport(True, count, anchors=len(anchors))


def main_verify(argv: Sequence[str]) -> int:
    """``kiosk audit verify FILE... [--key-file KEYFILE | --config SETTINGS] [--anchor FILE]... [--public-key PEM]``.

    Prints the report; returns 0 when the chain is intact, 1 when it is broken and 2
    for a usage or key error.
    """
    parser = argparse.ArgumentParser(
        prog="kiosk audit verify", description="Check the mac chain of a kiosk audit log."
    )
    parser.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="the audit log path (its rotated files are found next to it), or several files in chain order",
    )
    parser.add_argument("--key-file", type=Path, metavar="KEYFILE", help="HMAC key file (hex or raw, mode 0600)")
    parser.add_argument(
        "--config", type=Path, metavar="SETTINGS", help="settings TOML whose audit.key_file is used without --key-file"
    )
    parser.add_argument(
        "--anchor", type=Path, action="append", default=[], metavar="FILE",
        help="checkpoints file or receipt file kept elsewhere (repeatable): the chain must reach and match each; "
        "the log's own <path>.checkpoints is used as well",
    )
    parser.add_argument(
        "--public-key", type=Path, metavar="KEY.pem",
        help="the device's receipt public key: every checkpoint's and receipt's signature must verify against it "
        "(default with --config: receipts.key_file + .pub)",
    )
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as e:  # argparse exits; a caller of this function wants a code
        return 0 if e.code in (0, None) else 2
    try:
        key_file, public_key_file = args.key_file, args.public_key
        if args.config is not None:
            from kiosk.settings import load_settings  # only the CLI path needs settings

            settings = load_settings(args.config)
            key_file = key_file or settings.audit.key_file or None
            # The device's own receipt key: its public half sits beside it (kiosk keygen).
            if public_key_file is None and settings.receipts.key_file:
                from kiosk.receipts import public_key_path

                public_key_file = public_key_path(settings.receipts.key_file)
        if key_file is None:
            print("error: no key: pass --key-file KEYFILE (or --config with audit.key_file set)", file=sys.stderr)
            return 2
        key = load_audit_key(key_file)
        anchor_files = list(args.anchor)
        if len(args.files) == 1 and rotated_range(args.files[0]) is None:
            own = checkpoints_path(args.files[0])
            if own.exists() and own not in anchor_files:
                anchor_files.insert(0, own)
        public_key = None
        if public_key_file is not None:
            from kiosk.receipts import load_public_key

            public_key = load_public_key(public_key_file)
        anchors = [a for path in anchor_files for a in load_anchors(path, public_key)]
    except ConfigError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    except KioskError as e:  # kiosk.receipts.ReceiptInvalid: a forged or damaged anchor
        print(f"broken: {e.message}")
        return 1
    report = verify_chain(args.files, key, anchors)
    print(report)
    if anchors and public_key is None:
        print("note: anchors' signatures were not checked (pass --public-key KEY.pem)")
    return 0 if report.ok else 1
