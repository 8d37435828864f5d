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
    sequence, and ``verify_chain`` (``kiosk.offline.audit_verify``, `kiosk audit verify`)
    reports the first such place by file and line.

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
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from kiosk.errors import ConfigError, KioskError
from kiosk.keyfiles import read_private_file

__all__ = [
    "AuditCheckpoints",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "BadLine",
    "GENESIS_PREV",
    "RECORD_KEYS",
    "chain_files",
    "checkpoints_path",
    "load_audit_key",
    "open_audit_log",
    "parse_line",
    "rotated_range",
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


class BadLine(Exception):
    """A line that is not a valid, correctly signed record; the text is the problem."""


def parse_line(raw: bytes, key: bytes) -> AuditRecord:
    """Check one line (with its newline) and return its record, or raise ``BadLine``."""
    if not raw.endswith(b"\n"):
        raise BadLine("truncated record: last line has no terminating newline")
    body = raw[:-1]
    if not body.strip():
        raise BadLine("empty line")
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except UnicodeDecodeError:
        raise BadLine("malformed record: not UTF-8") from None
    except json.JSONDecodeError as e:
        raise BadLine(f"malformed JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(data, dict):
        raise BadLine(f"malformed record: JSON {type(data).__name__}, not an object")
    unexpected = sorted(set(data) - RECORD_KEYS)
    missing = sorted(RECORD_KEYS - set(data))
    if unexpected:
        raise BadLine(f"unexpected field(s) {', '.join(unexpected)}")
    if missing:
        raise BadLine(f"missing field(s) {', '.join(missing)}")
    try:
        expected = _compute_mac(key, data)
    except (TypeError, ValueError):  # e.g. a value json can parse but not re-serialise
        raise BadLine("malformed record: values cannot be serialised canonically") from None
    if not isinstance(data["mac"], str) or not hmac.compare_digest(expected, data["mac"]):
        raise BadLine("mac mismatch: record altered (or wrong key)")
    if _canonical(data) != text:
        raise BadLine("record is not in canonical form (edited after signing)")
    try:
        record = AuditRecord(**data)
    except (TypeError, ValueError) as e:
        raise BadLine(f"invalid field: {e}") from None
    if record.to_dict() != data:
        raise BadLine("invalid field: similarity is not rounded to 2 decimals")
    return record


# --------------------------------------------------------------------------- key


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


def rotated_range(path: Path, base_name: str | None = None) -> tuple[int, int] | None:
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
            seqs = rotated_range(entry, base.name)
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
            return parse_line(raw, self._key)
        except BadLine as e:
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
