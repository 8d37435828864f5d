"""What the board is doing while it serves: SoC temperature, throttling, the service's memory.

A probe reads on the device itself (``LocalProbe``: the harness runs on the Pi, or the
service runs on this host) or through ``ssh`` (``SshProbe``: the harness on a host,
the service on the Pi). Every reading can be missing: an x86 host has no
``vcgencmd``, a container may have no thermal zones, a remote service's process is not
ours to read. Missing is ``None``, never an error: the run goes on and the report says
what it could not see.

``vcgencmd get_throttled`` bits (Raspberry Pi firmware): 0 under-voltage now, 1 ARM
frequency capped now, 2 throttled now, 3 soft temperature limit now; bits 16-19 are the
same conditions "has occurred since boot".
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

THERMAL_ROOT = Path("/sys/class/thermal")
THROTTLE_FLAGS = {
    0: "under_voltage",
    1: "frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
}
SINCE_BOOT_SHIFT = 16
# A probe command that hangs (ssh to a board that went away) must not stall the run.
COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Throttling:
    raw: int
    now: tuple[str, ...]
    since_boot: tuple[str, ...]


def parse_throttled(text: str) -> Throttling | None:
    """``throttled=0x50005`` -> flags now and since boot; None if the text is not that."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text)
    if match is None:
        return None
    raw = int(match.group(1), 16)
    now = tuple(name for bit, name in THROTTLE_FLAGS.items() if raw >> bit & 1)
    since = tuple(name for bit, name in THROTTLE_FLAGS.items() if raw >> (bit + SINCE_BOOT_SHIFT) & 1)
    return Throttling(raw, now, since)


def parse_vmrss_kib(status_text: str) -> int | None:
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status_text, re.MULTILINE)
    return int(match.group(1)) if match else None


def soc_temperature_c(zones: dict[str, str]) -> float | None:
    """The SoC's temperature from thermal zones (type -> millidegrees text): the CPU zone, else the hottest."""
    readings = {}
    for zone_type, text in zones.items():
        try:
            readings[zone_type] = int(text.strip()) / 1000.0
        except ValueError:
            continue
    if not readings:
        return None
    for preferred in ("cpu-thermal", "soc-thermal", "x86_pkg_temp"):
        if preferred in readings:
            return readings[preferred]
    return max(readings.values())


@dataclass(frozen=True)
class Sample:
    """One reading of the board, ``t`` seconds into the run."""

    t: float
    temperature_c: float | None
    throttling: Throttling | None
    rss_kib: int | None


class LocalProbe:
    """Reads this machine; ``pid`` is the service's process, if it runs here."""

    where = "local"

    def __init__(self, pid: int | None = None):
        self.pid = pid

    def _run(self, command: list[str]) -> str | None:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    def thermal_zones(self) -> dict[str, str]:
        zones = {}
        for zone in sorted(THERMAL_ROOT.glob("thermal_zone*")):
            try:
                zones[(zone / "type").read_text().strip() or zone.name] = (zone / "temp").read_text()
            except OSError:
                continue
        return zones

    def throttled_text(self) -> str | None:
        return self._run(["vcgencmd", "get_throttled"])

    def status_text(self) -> str | None:
        if self.pid is None:
            return None
        try:
            return Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None

    def sample(self, t: float) -> Sample:
        throttled = self.throttled_text()
        status = self.status_text()
        return Sample(
            round(t, 3),
            soc_temperature_c(self.thermal_zones()),
            parse_throttled(throttled) if throttled else None,
            parse_vmrss_kib(status) if status else None,
        )


class SshProbe(LocalProbe):
    """Reads a remote board with ``ssh HOST`` (key-based login; BatchMode, so it never prompts).

    The service's process is the systemd unit's main PID (``unit``), as hardware/INSTALL.md installs it.
    """

    def __init__(self, host: str, unit: str = "kiosk"):
        super().__init__(None)
        self.host = host
        self.unit = unit
        self.where = f"ssh {host}"

    def _remote(self, script: str) -> str | None:
        return self._run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", self.host, script])

    def thermal_zones(self) -> dict[str, str]:
        text = self._remote(
            "for z in /sys/class/thermal/thermal_zone*; do printf '%s %s\\n' \"$(cat $z/type)\" \"$(cat $z/temp)\"; done"
        )
        zones = {}
        for line in (text or "").splitlines():
            name, _, temp = line.rpartition(" ")
            if name:
                zones[name] = temp
        return zones

    def throttled_text(self) -> str | None:
        return self._remote("vcgencmd get_throttled")

    def status_text(self) -> str | None:
        unit = shlex.quote(self.unit)
        return self._remote(f'cat /proc/"$(systemctl show -p MainPID --value {unit})"/status')
