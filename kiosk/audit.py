"""Append-only, tamper-evident audit trail of verification decisions.

One JSON object per line (UTF-8, keys sorted, compact separators), one line per
decision or refusal. A record holds *who asked, what was decided and under which
operating point* and nothing biometric: no image bytes, no embeddings and no image
hashes (a hash of a face photo is itself a linkable identifier). ``AuditRecord`` has
exactly the fields below, each type- and length-checked, so there is no field in
which a caller could put such data, and ``similarity`` is rounded to two decimals
when the record is built.

Chain
    ``mac`` = HMAC-SHA256(key, canonical JSON of the record without ``mac``), hex.
    ``prev`` is the previous record's ``mac`` (64 zeros for the first record, seq 1),
    and ``seq`` counts up by one across the whole chain. Altering, removing,
    inserting or reordering a record breaks a mac, a ``prev`` link or the ``seq``
    sequence, and ``verify_chain`` reports the first such place by file and line.

Rotation
    When the next record would push ``<path>`` past ``max_bytes`` the file is renamed
    ``<path>.<first_seq>-<last_seq>`` (12-digit, zero-padded, so the names sort) and a
    new ``<path>`` continues the chain: its first ``prev`` is the rotated file's last
    mac. The name's range is checked too, so records cut off the end of a rotated
    file are found.

Key file (``load_audit_key``)
    Either hex text (e.g. ``openssl rand -hex 32``; surrounding whitespace ignored) or
    raw bytes (e.g. ``head -c 32 /dev/urandom``): content that is, once stripped, an
    even number of hex digits is hex-decoded, anything else is used byte for byte. At
    least 32 key bytes, file mode 0600 or stricter.

Checkpoints (anchoring)
    A hash chain alone cannot show that its newest records were deleted: the shorter
    chain is valid. So the service signs the chain's head (``seq`` and ``mac``) with
    the device's Ed25519 key (``kiosk.receipts``) periodically, at start and at
    shutdown, appending one line per checkpoint to ``<path>.checkpoints``; and every
    decision's receipt names its own record's ``seq`` and ``mac``. ``verify_chain``
    takes such anchors (the checkpoints file, and checkpoint or receipt files kept
    elsewhere, e.g. by the back office) and reports a chain that ends before an
    anchored seq, or holds another mac there. An insider who deletes records and the
    newest checkpoints on the device is caught by any anchor kept off it.

Limits: whoever holds the HMAC key can rewrite history the device alone still holds;
truncation is detectable only up to the newest anchor kept off the device. Keep the
keys readable only by the service and copy the log and checkpoints off the device as
the operator's retention policy says.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import stat
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kiosk.errors import ConfigError, KioskError

__all__ = [
    "Anchor",
    "AuditCheckpoints",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "ChainReport",
    "GENESIS_PREV",
    "RECORD_KEYS",
    "chain_files",
    "checkpoints_path",
    "load_anchors",
    "load_audit_key",
    "main_verify",
    "open_audit_log",
    "verify_chain",
]

GENESIS_PREV = "0" * 64
MIN_KEY_BYTES = 32
# Long enough for any request id, certificate subject or version string; far too short
# for an image or an embedding, which keeps the text fields from becoming a side channel.
MAX_TEXT_CHARS = 256
MAX_MODEL_VERSIONS = 16
# "cancelled": the client cancelled the call before its answer; no decision was given.
EVENTS = ("decision", "refused", "cancelled")
DECISIONS = ("match", "no_match", "retry", "refused", "cancelled")
RECORD_KEYS = frozenset(
    {
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
)
_TEXT_FIELDS = ("request_id", "client_identity", "device_id", "reason", "consent_version", "liveness")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_ROTATED = re.compile(r"\.(\d+)-(\d+)\Z")
_HEX_TEXT = re.compile(rb"(?:[0-9a-fA-F]{2})+")


class AuditError(KioskError):
    """The audit log cannot be extended: its tail is broken, it is locked, or a write failed.

    The service must not hand out a decision it could not record, hence INTERNAL.
    """

    status_code = "INTERNAL"


# --------------------------------------------------------------------------- records


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"{name} is {len(value)} characters; at most {MAX_TEXT_CHARS} are allowed")


def _check_number(name: str, value: object, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    # bool is an int subclass; True as a threshold is a caller bug, not a number.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number{' or None' if nullable else ''}, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log; the field set is the whole of what may be recorded."""

    seq: int
    time: str  # UTC, ISO-8601 with milliseconds and 'Z'
    request_id: str
    client_identity: str  # mTLS certificate subject, or "local"
    device_id: str
    event: str  # "decision" | "refused"
    decision: str  # "match" | "no_match" | "retry" | "refused"
    reason: str  # "" or a stable snake_case code
    similarity: float | None  # rounded to 2 decimals: enough to audit, too coarse to be a template
    threshold: float | None  # None only when refused before an operating point was chosen
    target_fmr: float | None
    model_versions: Mapping[str, str] = field(hash=False)
    consent_version: str
    liveness: str  # "passed", "failed:<check>", "not_performed"
    prev: str  # hex mac of the previous record, GENESIS_PREV for seq 1
    mac: str  # hex HMAC-SHA256 of the canonical JSON without "mac"

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int):
            raise TypeError(f"seq must be int, got {type(self.seq).__name__}")
        if self.seq < 1:
            raise ValueError(f"seq must be >= 1, got {self.seq}")
        if not isinstance(self.time, str) or not _TIME.fullmatch(self.time):
            raise ValueError(f"time must look like 2026-01-31T12:00:00.000Z, got {self.time!r}")
        for name in _TEXT_FIELDS:
            _check_text(name, getattr(self, name))
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, got {self.event!r}")
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if (self.event in ("refused", "cancelled") or self.decision in ("refused", "cancelled")) and (
            self.event != self.decision
        ):
            raise ValueError(f"event {self.event!r} does not go with decision {self.decision!r}")
        similarity = _check_number("similarity", self.similarity, nullable=True)
        object.__setattr__(self, "similarity", None if similarity is None else round(similarity, 2))
        object.__setattr__(self, "threshold", _check_number("threshold", self.threshold, nullable=True))
        object.__setattr__(self, "target_fmr", _check_number("target_fmr", self.target_fmr, nullable=True))
        if not isinstance(self.model_versions, Mapping):
            raise TypeError(f"model_versions must be a mapping, got {type(self.model_versions).__name__}")
        if len(self.model_versions) > MAX_MODEL_VERSIONS:
            raise ValueError(f"model_versions has {len(self.model_versions)} entries; at most {MAX_MODEL_VERSIONS}")
        for name, version in self.model_versions.items():
            _check_text("model_versions key", name)
            _check_text(f"model_versions[{name!r}]", version)
        # A read-only copy: the record is frozen, so must be what it holds.
        object.__setattr__(self, "model_versions", types.MappingProxyType(dict(sorted(self.model_versions.items()))))
        for name in ("prev", "mac"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX64.fullmatch(value):
                raise ValueError(f"{name} must be 64 lowercase hex digits")

    @property
    def audit_id(self) -> str:
        """Short id a client can quote to find this record: ``<seq>-<first 16 hex of mac>``."""
        return f"{self.seq}-{self.mac[:16]}"

    def to_dict(self) -> dict[str, object]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["model_versions"] = dict(self.model_versions)
        return fields


def _canonical(obj: Mapping[str, object]) -> str:
    # Sorted keys and no whitespace make the serialisation unique, so the mac can be
    # recomputed from the parsed record and any byte-level edit is visible.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _compute_mac(key: bytes, fields: Mapping[str, object]) -> str:
    unsigned = {name: value for name, value in fields.items() if name != "mac"}
    return hmac.new(key, _canonical(unsigned).encode("utf-8"), hashlib.sha256).hexdigest()


def _utc_now() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class _BadLine(Exception):
    """A line that is not a valid, correctly signed record; the text is the problem."""


def _parse_line(raw: bytes, key: bytes) -> AuditRecord:
    """Check one line (with its newline) and return its record, or raise ``_BadLine``."""
    if not raw.endswith(b"\n"):
        raise _BadLine("truncated record: last line has no terminating newline")
    body = raw[:-1]
    if not body.strip():
        raise _BadLine("empty line")
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise _BadLine("malformed record: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise _BadLine(f"malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(data, dict):
        raise _BadLine(f"malformed record: JSON {type(data).__name__}, not an object")
    unexpected = sorted(set(data) - RECORD_KEYS)
    missing = sorted(RECORD_KEYS - set(data))
    if unexpected:
        raise _BadLine(f"unexpected field(s) {', '.join(unexpected)}")
    if missing:
        raise _BadLine(f"missing field(s) {', '.join(missing)}")
    try:
        expected = _compute_mac(key, data)
    except (TypeError, ValueError):  # e.g. a value json can parse but not re-serialise
        raise _BadLine("malformed record: values cannot be serialised canonically") from None
    if not isinstance(data["mac"], str) or not hmac.compare_digest(expected, data["mac"]):
        raise _BadLine("mac mismatch: record altered (or wrong key)")
    if _canonical(data) != text:
        raise _BadLine("record is not in canonical form (edited after signing)")
    try:
        record = AuditRecord(**data)
    except (TypeError, ValueError) as e:
        raise _BadLine(f"invalid field: {e}") from None
    if record.to_dict() != data:
        raise _BadLine("invalid field: similarity is not rounded to 2 decimals")
    return record


# --------------------------------------------------------------------------- key


def read_private_file(path: str | Path, what: str, missing_hint: str = "") -> bytes:
    """The bytes of a key file that only its owner may read; ``ConfigError`` naming ``what`` otherwise."""
    path = Path(path)
    try:
        # fstat of the opened file, not stat of the name: no swap between check and read.
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{what} {path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"{what} {path} has mode {mode:04o}; group and others must have no access "
                    f"(0600 or stricter: chmod 600 {path})"
                )
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file{missing_hint}") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None


def load_audit_key(path: str | Path) -> bytes:
    """Read the HMAC key; refuse a file others can access or a key under 32 bytes.

    Accepts hex text or raw bytes, see the module docstring.
    """
    content = read_private_file(path, "audit key file")
    stripped = content.strip()
    if _HEX_TEXT.fullmatch(stripped):
        key, form = bytes.fromhex(stripped.decode("ascii")), "hex-decoded"
    else:
        key, form = content, "raw"
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"audit key file {path} holds a {len(key)}-byte key ({form}); at least {MIN_KEY_BYTES} bytes "
            f"are required (e.g. openssl rand -hex 32 > {path})"
        )
    return key


# --------------------------------------------------------------------------- files


def _rotated_range(path: Path, base_name: str | None = None) -> tuple[int, int] | None:
    """``(first_seq, last_seq)`` from a rotated file's name (of ``base_name``, if given), else None."""
    match = _ROTATED.search(path.name)
    if match is None or (base_name is not None and path.name[: match.start()] != base_name):
        return None
    return int(match.group(1)), int(match.group(2))


def chain_files(base: str | Path) -> list[Path]:
    """The rotated files of ``base`` in chain order, then ``base`` itself if it exists."""
    base = Path(base)
    parent = base.parent
    rotated = []
    if parent.is_dir():
        for entry in parent.iterdir():
            seqs = _rotated_range(entry, base.name)
            if seqs is not None and entry.is_file():
                rotated.append((seqs, entry))
    files = [entry for _, entry in sorted(rotated)]
    if base.exists():
        files.append(base)
    return files


def _read_first_line(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.readline()


def _read_last_line(path: Path) -> bytes:
    """The last line with its newline, if any, reading backwards from the end."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        buf = b""
        while pos > 0:
            step = min(8192, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            cut = buf.rfind(b"\n", 0, len(buf) - 1)
            if cut >= 0:
                return buf[cut + 1 :]
        return buf


def _fsync_dir(directory: Path) -> None:
    # A rename or a new file is durable only once its directory entry is.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# --------------------------------------------------------------------------- writer


class AuditLog:
    """Thread-safe appender of signed records to ``path``, rotating at ``max_bytes``.

    One writer per path: a lock file ``<path>.lock`` (flock) refuses a second writer,
    in this or another process, because two writers would fork the chain. Call
    ``close()`` (or use ``with``) to release it.
    """

    def __init__(self, path: str | Path, key: bytes, max_bytes: int):
        self.path = Path(path)
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"audit key must be at least {MIN_KEY_BYTES} bytes")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"audit max_bytes must be a positive integer, got {max_bytes!r}")
        self._key = key
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        # Set after a failed write: the file's tail is then unknown, so nothing more is
        # appended until a restart checks it again.
        self._failure = ""
        self._fd: int | None = None
        self._lock_fd: int | None = self._take_writer_lock()
        try:
            self._seq, self._prev, self._first_seq = self._resume()
            self._fd = self._open_current()
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            self.close()
            raise

    def _take_writer_lock(self) -> int:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"audit log {self.path}: cannot create {lock_path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(
                f"audit log {self.path} already has a writer ({lock_path} is locked); "
                "two writers would fork the chain"
            ) from None
        return fd

    def _tail_record(self, path: Path, raw: bytes, which: str) -> AuditRecord:
        try:
            return _parse_line(raw, self._key)
        except _BadLine as e:
            raise AuditError(
                f"audit log {path} is broken at its {which} record ({e}); refusing to extend a broken "
                f"chain: check it with `kiosk audit verify {self.path}` and move the files aside"
            ) from None

    def _resume(self) -> tuple[int, str, int | None]:
        """``(last seq, last mac, first seq of the current file)`` of the existing chain."""
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"audit log {self.path} is not a regular file")
        try:
            if self.path.exists() and self.path.stat().st_size > 0:
                first = self._tail_record(self.path, _read_first_line(self.path), "first")
                last = self._tail_record(self.path, _read_last_line(self.path), "last")
                return last.seq, last.mac, first.seq
            # Empty or missing current file: a rotation may have been the last thing done.
            previous = [p for p in chain_files(self.path) if p != self.path]
            if previous:
                last = self._tail_record(previous[-1], _read_last_line(previous[-1]), "last")
                return last.seq, last.mac, None
        except OSError as e:
            raise ConfigError(f"audit log {self.path}: cannot read: {e.strerror}") from None
        return 0, GENESIS_PREV, None

    def _open_current(self) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(f"audit log {self.path}: cannot open: {e.strerror}") from None
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)  # a file from an older install may have been looser
        _fsync_dir(self.path.parent)
        return fd

    def _rotate(self) -> None:
        assert self._fd is not None and self._first_seq is not None
        target = self.path.with_name(f"{self.path.name}.{self._first_seq:012d}-{self._seq:012d}")
        if target.exists():
            raise FileExistsError(f"{target} already exists")  # never overwrite history
        os.close(self._fd)
        self._fd = None
        os.rename(self.path, target)
        self._fd = self._open_current()
        self._size = 0
        self._first_seq = None

    def append(
        self,
        *,
        request_id: str,
        client_identity: str,
        device_id: str,
        event: str,
        decision: str,
        reason: str = "",
        similarity: float | None = None,
        threshold: float | None,
        target_fmr: float | None,
        model_versions: Mapping[str, str],
        consent_version: str,
        liveness: str,
    ) -> AuditRecord:
        """Sign, write and fsync one record; return it (``record.audit_id`` for the reply).

        Keyword-only, and only these names: there is no argument for anything biometric.
        Raises TypeError/ValueError for a bad field (nothing is written) and AuditError
        when the record could not be made durable.
        """
        with self._lock:
            if self._fd is None:
                raise AuditError(f"audit log {self.path} is closed")
            if self._failure:
                raise AuditError(self._failure)
            unsigned = AuditRecord(
                seq=self._seq + 1,
                time=_utc_now(),
                request_id=request_id,
                client_identity=client_identity,
                device_id=device_id,
                event=event,
                decision=decision,
                reason=reason,
                similarity=similarity,
                threshold=threshold,
                target_fmr=target_fmr,
                model_versions=model_versions,
                consent_version=consent_version,
                liveness=liveness,
                prev=self._prev,
                mac=GENESIS_PREV,  # placeholder, replaced by the real mac just below
            )
            record = dataclasses.replace(unsigned, mac=_compute_mac(self._key, unsigned.to_dict()))
            line = (_canonical(record.to_dict()) + "\n").encode("utf-8")
            try:
                if self._size > 0 and self._size + len(line) > self._max_bytes:
                    self._rotate()
                assert self._fd is not None
                _write_all(self._fd, line)
                os.fsync(self._fd)
            except OSError as e:
                self._failure = (
                    f"writing audit log {self.path} failed ({e.strerror or e}); no further records "
                    "are written until the service restarts and checks the log"
                )
                raise AuditError(self._failure) from e
            self._seq, self._prev = record.seq, record.mac
            self._size += len(line)
            if self._first_seq is None:
                self._first_seq = record.seq
            return record

    def head(self) -> tuple[int, str]:
        """``(seq, mac)`` of the newest record; ``(0, GENESIS_PREV)`` for an empty chain."""
        with self._lock:
            return self._seq, self._prev

    def close(self) -> None:
        with self._lock:
            for name in ("_fd", "_lock_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    setattr(self, name, None)
                    os.close(fd)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audit_log(settings) -> AuditLog | None:  # settings: kiosk.settings.AuditSettings
    """The service's log from ``[audit]`` settings, or None when ``path`` is empty (disabled)."""
    if not settings.path:
        return None
    if not settings.key_file:
        raise ConfigError("audit.path is set but audit.key_file is empty")
    return AuditLog(Path(settings.path), load_audit_key(settings.key_file), settings.max_bytes)


# --------------------------------------------------------------------------- checkpoints


def checkpoints_path(base: str | Path) -> Path:
    """Where the service appends signed checkpoints of ``base``'s chain: ``<base>.checkpoints``."""
    base = Path(base)
    return base.with_name(base.name + ".checkpoints")


class AuditCheckpoints:
    """Signs the chain's head into ``<path>.checkpoints``: at start, every ``interval_s`` (if it moved), at close.

    ``signer`` is the device's ``kiosk.receipts.DeviceSigner``. Each line is canonical
    JSON ``{"checkpoint": {...}, "signature": base64}``; the file is append-only, mode
    0600, fsynced per line. A failed write is logged and retried at the next
    checkpoint: the chain itself stays the record, a checkpoint only anchors it.
    """

    def __init__(self, audit: AuditLog, signer, *, interval_s: float, device_id: str, log=None):
        if not math.isfinite(interval_s) or interval_s < 0:
            raise ConfigError(f"audit.checkpoint_interval_s must be 0 or positive, got {interval_s}")
        self.audit = audit
        self.path = checkpoints_path(audit.path)
        self._signer = signer
        self._interval_s = interval_s
        self._device_id = device_id
        self._log = log
        self._last_seq = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def write(self, reason: str) -> bool:
        """Sign and append the current head (unless a periodic one finds it unmoved); True if written."""
        from kiosk.receipts import CHECKPOINT_TYPE, utc_now  # light: no key is used here

        with self._write_lock:
            seq, mac = self.audit.head()
            if seq == 0 or (reason == "periodic" and seq == self._last_seq):
                return False
            fields = {
                "type": CHECKPOINT_TYPE,
                "seq": seq,
                "chain_hash": mac,
                "time": utc_now(),
                "service_device_id": self._device_id,
                "reason": reason,
            }
            signed = self._signer.sign(fields)
            line = _canonical(
                {"checkpoint": json.loads(signed.body), "signature": base64.b64encode(signed.signature).decode("ascii")}
            )
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    _write_all(fd, (line + "\n").encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                if self._log is not None:
                    self._log.error("writing audit checkpoint %s failed: %s", self.path, e.strerror or e)
                return False
            self._last_seq = seq
            return True

    def start(self) -> None:
        self.write("start")
        if self._interval_s > 0:
            self._thread = threading.Thread(target=self._run, name="kiosk-audit-checkpoints", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.write("periodic")

    def close(self) -> None:
        """Stop the periodic writer and sign the final head (call before closing the log)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.write("shutdown")


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
    if len(given) == 1 and _rotated_range(given[0]) is None:
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
                        record = _parse_line(raw, key)
                    except _BadLine as e:
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
        named = _rotated_range(path)
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
        if len(args.files) == 1 and _rotated_range(args.files[0]) is None:
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
