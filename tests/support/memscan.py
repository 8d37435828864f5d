"""Memory forensics on a live process: search every writable mapping for byte strings ("needles").

A *marker* is one request image with the byte strings that would betray it if a
server kept them (chunks of its encoded bytes, decoded pixel rows, crop rows, float
vectors); how those are made is the test's business. ``scan_memory`` reads every
readable and writable mapping of a process (``/proc/PID/maps``) through
``/proc/PID/mem`` and returns every occurrence of every needle. Reading a non-dumpable
process's memory needs root (CAP_SYS_PTRACE): the scan raises PermissionError
otherwise, and callers skip with that reason.

``wait_until_idle`` waits until the process has used no CPU for a moment, so a scan
sees the state after the call and gRPC's cleanup, not in the middle of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Marker:
    """One request image, unique to its test, and the byte strings (by kind) that would betray it."""

    name: str
    encoded: bytes
    needles: dict[str, tuple[bytes, ...]]


@dataclass(frozen=True)
class Hit:
    marker: str
    kind: str
    needle: int
    address: int
    mapping: str

    def __str__(self) -> str:
        return f"{self.marker}: {self.kind} #{self.needle} at {self.address:#x} in {self.mapping or '[anonymous]'}"


def writable_mappings(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, name) of every readable and writable mapping of ``pid``."""
    mappings = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if parts[1].startswith("rw"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            mappings.append((start, end, parts[5] if len(parts) > 5 else ""))
    return mappings


def memory_regions(pid: int) -> Iterator[tuple[int, str, bytes]]:
    """(start, name, content) of every writable mapping of ``pid`` that could be read."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, name in writable_mappings(pid):
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue  # unmapped between reading maps and reading it
            yield start, name, data


def scan_memory(pid: int, markers: Iterable[Marker]) -> list[Hit]:
    """Every occurrence of every needle of ``markers`` in the memory of ``pid``."""
    markers = list(markers)
    hits = []
    for start, name, data in memory_regions(pid):
        for marker in markers:
            for kind, needles in marker.needles.items():
                for i, needle in enumerate(needles):
                    at = data.find(needle)
                    while at >= 0:
                        hits.append(Hit(marker.name, kind, i, start + at, name))
                        at = data.find(needle, at + 1)
    return hits


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of all threads


def wait_until_idle(pid: int, timeout: float, quiet_s: float = 0.5) -> None:
    """Until ``pid`` used no CPU for ``quiet_s``: the call and gRPC's cleanup after it are over.

    gRPC Python holds the request message until after it has sent the response, and
    ONNX Runtime's threads spin for a moment after a run: a scan waits for both.
    Raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    before = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_ticks(pid)
        if now == before:
            return
        before = now
    raise TimeoutError(f"process {pid} did not go idle within {timeout} s")


def needle_report(hits: list[Hit], markers: list[Marker], kinds: tuple[str, ...]) -> str:
    """One line per marker and kind of needle (in ``kinds`` order): found or absent, and how often."""
    found = {(h.marker, h.kind) for h in hits}
    lines = []
    for marker in markers:
        for kind in kinds:
            if kind in marker.needles:
                count = sum(1 for h in hits if (h.marker, h.kind) == (marker.name, kind))
                flag = "FOUND" if (marker.name, kind) in found else "absent"
                lines.append(f"  {marker.name:22} {kind:9} {len(marker.needles[kind])} needles: {flag} ({count} hits)")
    return "\n".join(lines)
