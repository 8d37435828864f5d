"""A real ``kiosk serve`` process on this machine, for HIL runs without a board and for benchmarks.

``LocalService`` starts ``python -m kiosk --config FILE serve`` on a unix socket in a
private temporary directory (no TCP port to collide with), with the call rate limit
off, and polls the gRPC health service until it says SERVING. The time from process
start to SERVING is the cold start: interpreter, imports, hash checks, session
creation and the warm-up inference, exactly as on a kiosk at boot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hardware.hil.probes import parse_vmrss_kib

REPO = Path(__file__).resolve().parent.parent.parent
# Between health checks while the models load; small against a cold start of seconds.
POLL_INTERVAL_S = 0.05


class ServiceFailed(RuntimeError):
    """The service exited or did not become SERVING in time; carries its stderr tail."""


class LocalService:
    """``with LocalService(profile="x86") as service: service.address, service.pid, service.cold_start_s``."""

    def __init__(self, profile: str = "auto", extra_toml: str = "", start_timeout_s: float = 300.0):
        self.profile = profile
        self.extra_toml = extra_toml
        self.start_timeout_s = start_timeout_s
        self.cold_start_s = float("nan")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None
        self._stderr = None

    @property
    def pid(self) -> int:
        return self._process.pid

    def __enter__(self) -> "LocalService":
        self._tmp = tempfile.TemporaryDirectory(prefix="kiosk-local-")
        folder = Path(self._tmp.name)
        socket = folder / "kiosk.sock"
        self.address = f"unix:{socket}"
        config = folder / "kiosk.toml"
        config.write_text(
            f'[service]\nlisten = ["{self.address}"]\n'
            # A benchmark or HIL run is one client calling as fast as it can, on purpose.
            "rate_limit_per_s = 0\n"
            f'[hardware]\nprofile = "{self.profile}"\n' + self.extra_toml
        )
        self._stderr = open(folder / "stderr.log", "w+b")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        started = time.monotonic()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "--config", str(config), "serve"],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env=env, cwd=REPO,
        )
        try:
            self._wait_serving(started)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_serving(self, started: float) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() - started < self.start_timeout_s:
                if self._process.poll() is not None:
                    raise ServiceFailed(f"kiosk serve exited with {self._process.returncode}: {self.stderr_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    self.cold_start_s = time.monotonic() - started
                    return
                time.sleep(POLL_INTERVAL_S)
        raise ServiceFailed(f"kiosk serve not SERVING after {self.start_timeout_s} s: {self.stderr_tail()}")

    def stderr_tail(self, limit: int = 2000) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def rss_kib(self) -> int:
        """The service's resident set now (VmRSS)."""
        rss = parse_vmrss_kib(Path(f"/proc/{self.pid}/status").read_text())
        if rss is None:
            raise ServiceFailed("no VmRSS in /proc status")
        return rss

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._stderr is not None:
            self._stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
