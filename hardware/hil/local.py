"""A real ``kiosk serve`` process on this machine, for HIL runs without a board and for benchmarks.

``LocalService`` starts ``python -m kiosk --config FILE serve`` on a unix socket in a
private temporary directory (no TCP port to collide with), with the call rate limit
off, and waits until the gRPC health service says SERVING (hardware/service.py, the
harness the tests share). The time from process start to SERVING is the cold start:
interpreter, imports, hash checks, session creation and the warm-up inference,
exactly as on a kiosk at boot.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hardware.hil.probes import parse_vmrss_kib
from hardware.service import ServiceFailed, ServiceProcess

__all__ = ["LocalService", "ServiceFailed"]


class LocalService:
    """``with LocalService(profile="x86") as service: service.address, service.pid, service.cold_start_s``."""

    def __init__(self, profile: str = "auto", extra_toml: str = "", start_timeout_s: float = 300.0):
        self.profile = profile
        self.extra_toml = extra_toml
        self.start_timeout_s = start_timeout_s
        self.cold_start_s = float("nan")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._service: ServiceProcess | None = None

    @property
    def pid(self) -> int:
        return self._service.pid

    def __enter__(self) -> "LocalService":
        self._tmp = tempfile.TemporaryDirectory(prefix="kiosk-local-")
        folder = Path(self._tmp.name)
        self.address = f"unix:{folder / 'kiosk.sock'}"
        config = folder / "kiosk.toml"
        config.write_text(
            f'[service]\nlisten = ["{self.address}"]\n'
            # A benchmark or HIL run is one client calling as fast as it can, on purpose.
            "rate_limit_per_s = 0\n"
            f'[hardware]\nprofile = "{self.profile}"\n' + self.extra_toml
        )
        self._service = ServiceProcess.start(config, self.address, folder / "stderr.log")
        try:
            self._service.wait_serving(self.start_timeout_s)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.cold_start_s = self._service.cold_start_s
        return self

    def stderr_tail(self, limit: int = 2000) -> str:
        return self._service.log_tail(limit)

    def rss_kib(self) -> int:
        """The service's resident set now (VmRSS)."""
        rss = parse_vmrss_kib(Path(f"/proc/{self.pid}/status").read_text())
        if rss is None:
            raise ServiceFailed("no VmRSS in /proc status")
        return rss

    def __exit__(self, *exc_info: object) -> None:
        if self._service is not None:
            self._service.terminate(30)
        if self._tmp is not None:
            self._tmp.cleanup()
