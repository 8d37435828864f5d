"""One way to run ``kiosk serve`` as a subprocess: start it, wait for SERVING, stop it with SIGTERM.

Used by the integration tests (tests/integration/rpc.py, test_retention.py), the
benchmarks (tests/bench) and the HIL runner's local mode (hardware/hil/local.py), so
all of them start, wait for and stop the service the same way. It lives in
``hardware/`` rather than ``tests/`` because the HIL runner is a tool an operator runs
from a checkout, and a tool must not import the test suite; it is not in the ``kiosk``
package because the product never starts itself as a subprocess.

The service writes its log (stdout and stderr) to a file: a pipe nobody reads would
fill and stall it. ``script`` runs ``python -c SCRIPT`` in place of ``python -m kiosk``
with the same arguments (the retention tests use it to undo one measure in test code).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
# Cold start on a Pi 4 is tens of seconds; a loaded 2-core CI runner can take minutes.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
# Between health checks while the models load; small against a cold start of seconds.
POLL_INTERVAL_S = 0.05


class ServiceFailed(RuntimeError):
    """The service exited or did not become SERVING in time; carries its log tail."""


def environment(overrides: Mapping[str, str] = {}, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus ``overrides``, with the checkout first on PYTHONPATH."""
    env = {**(os.environ if base is None else base), **overrides}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def kiosk_command(*args: str, script: str | None = None) -> list[str]:
    """``python -m kiosk ARGS``, or ``python -c SCRIPT ARGS``."""
    return [sys.executable, *(["-c", script] if script else ["-m", "kiosk"]), *args]


def health_status(channel: grpc.Channel, timeout: float = 1.0) -> int | None:
    """Health of "" now; None while nothing answers (not listening yet, or gone)."""
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status
    except grpc.RpcError:
        return None


def terminate(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM and wait up to ``timeout`` for the exit status; then SIGKILL (and that status)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    return process.returncode


@dataclass
class ServiceProcess:
    """A running ``kiosk serve`` (or ``script``) subprocess listening on ``address``."""

    process: subprocess.Popen
    address: str
    log_path: Path
    started: float
    # Seconds from process start to SERVING, once ``wait_serving`` has seen it.
    cold_start_s: float = field(default=float("nan"))

    @classmethod
    def start(
        cls,
        config: Path,
        address: str,
        log_path: Path,
        *,
        serve_args: Sequence[str] = (),
        script: str | None = None,
        env: Mapping[str, str] = {},
        cwd: Path = REPO,
        stdout_pipe: bool = False,
    ) -> ServiceProcess:
        """``kiosk --config CONFIG serve SERVE_ARGS``; ``address`` is where it will listen (for health).

        The log is stdout and stderr; with ``stdout_pipe`` it is stderr only, and stdout is
        ``process.stdout`` (text) for a script that reports to the test there.
        """
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                kiosk_command("--config", str(config), "serve", *serve_args, script=script),
                cwd=cwd,
                env=environment(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log if stdout_pipe else subprocess.STDOUT,
                text=stdout_pipe,
            )
        return cls(process, address, log_path, time.monotonic())

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, limit: int = 3000) -> str:
        return self.log()[-limit:]

    def health_statuses(self, timeout: float = START_TIMEOUT_S) -> list[int]:
        """Health of "" as it changes, until SERVING, the process's end, or ``timeout``."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            while time.monotonic() < deadline and self.process.poll() is None:
                status = health_status(channel)
                if status is not None and (not statuses or statuses[-1] != status):
                    statuses.append(status)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    self.cold_start_s = time.monotonic() - self.started
                    break
                time.sleep(POLL_INTERVAL_S)
        return statuses

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until health says SERVING; otherwise the process is stopped and ServiceFailed says why."""
        statuses = self.health_statuses(timeout)
        if statuses and statuses[-1] == health_pb2.HealthCheckResponse.SERVING:
            return
        code = self.process.poll()
        self.kill()
        why = f"exited with {code}" if code is not None else f"not SERVING after {timeout:g} s"
        raise ServiceFailed(f"kiosk serve {why}: {self.log_tail()}")

    def proc_status(self, name: str) -> int:
        """A ``kB`` field of /proc/PID/status (VmRSS, VmLck, ...), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
        raise ServiceFailed(f"no {name} in /proc/{self.pid}/status")

    def rss_kib(self) -> int:
        return self.proc_status("VmRSS")

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a graceful stop), wait for the exit status; SIGKILL after ``timeout``."""
        return terminate(self.process, timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()
