"""Request builders, settings and a `kiosk serve` subprocess, shared by the hostile-input, fault, load, ops and server tests.

Kept apart from test_server.py so these suites do not depend on another test module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiosk.settings import LivenessChallengeSettings, ServiceSettings, Settings
from kiosk.v1 import kiosk_pb2 as pb

CONSENT_VERSION = Settings().consent.accepted_versions[0]
# Generous per-call timeout: nothing should come close on a loaded 2-core runner.
TIMEOUT = 60


def settings_with(
    listen: tuple[str, ...] = ("127.0.0.1:0",), *, challenges: bool = True, **service_overrides
) -> Settings:
    """Default settings with these service fields; ``challenges=False`` lets still photos end a session."""
    service = dataclasses.replace(ServiceSettings(), listen=listen, **service_overrides)
    return dataclasses.replace(
        Settings(), service=service, liveness_challenge=LivenessChallengeSettings(enabled=challenges)
    )


def consent() -> pb.Consent:
    return pb.Consent(granted=True, text_version=CONSENT_VERSION)


def verify_request(id_photo: bytes, live_photos: list[bytes], **fields) -> pb.VerifyRequest:
    return pb.VerifyRequest(id_photo=id_photo, live_photos=live_photos, consent=consent(), **fields)


def start_message(id_photo: bytes, **fields) -> pb.SessionRequest:
    return pb.SessionRequest(start=pb.SessionStart(id_photo=id_photo, consent=consent(), **fields))


def frame_message(data: bytes, timestamp_ms: int) -> pb.SessionRequest:
    return pb.SessionRequest(frame=pb.CameraFrame(encoded=data, timestamp_ms=timestamp_ms))


def raw_frame_message(data: bytes, width: int, height: int, pixel_format: int, timestamp_ms: int) -> pb.SessionRequest:
    raw = pb.RawImage(data=data, width=width, height=height, pixel_format=pixel_format)
    return pb.SessionRequest(frame=pb.CameraFrame(raw=raw, timestamp_ms=timestamp_ms))


def rpc_error(method, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=TIMEOUT, **kwargs)
    return caught.value


def session_error(stub, requests: list[pb.SessionRequest]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.VerifySession(iter(requests), timeout=TIMEOUT))
    return caught.value


# --------------------------------------------------------------------------- a real `kiosk serve` process

REPO = Path(__file__).resolve().parents[2]
AUDIT_KEY = bytes(range(32, 64))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def kiosk_subprocess(*args: str) -> Iterator[subprocess.Popen]:
    """``python -m kiosk *args`` from the checkout, stdout and stderr piped as text; killed if still running after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def sigterm_and_wait(process: subprocess.Popen) -> str:
    """SIGTERM, then wait for the exit; what the process wrote to stderr (its log)."""
    process.send_signal(signal.SIGTERM)
    _, log = process.communicate(timeout=TIMEOUT)
    return log


def serve_config(directory: Path, port: int, extra: str = "") -> Path:
    """A settings file for `kiosk serve` on 127.0.0.1:``port`` with an audit log in ``directory``.

    No per-client rate limit (the tests drive one "local" client hard on purpose) and
    no liveness challenges (still photos must be able to end a session); ``extra`` is
    appended TOML.
    """
    key = directory / "audit.key"
    key.write_bytes(AUDIT_KEY)
    key.chmod(0o600)
    config = directory / "kiosk.toml"
    config.write_text(
        f"""[service]
listen = ["127.0.0.1:{port}"]
rate_limit_per_s = 0.0

[liveness_challenge]
enabled = false

[audit]
path = "{directory / 'audit.jsonl'}"
key_file = "{key}"
{extra}"""
    )
    return config


@dataclass
class ServeProcess:
    """`kiosk serve` (or a ``python -c`` script that ends in it) in a subprocess of its own."""

    process: subprocess.Popen
    address: str
    audit_path: Path
    # The service's log (stderr) goes to a file: a pipe nobody reads would fill and stall it.
    log_path: Path

    @classmethod
    def start(
        cls, directory: Path, *, extra_config: str = "", script: str | None = None, script_args: list[str] = ()
    ) -> ServeProcess:
        """`kiosk serve`, or ``script`` (``python -c``) given the same arguments plus ``script_args``."""
        port = free_port()
        config = serve_config(directory, port, extra_config)
        program = ["-c", script] if script else ["-m", "kiosk"]
        log_path = directory / "serve.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, *program, "--config", str(config), "serve", *(script_args if script else ())],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        return cls(process, f"127.0.0.1:{port}", directory / "audit.jsonl", log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health_statuses(self, timeout: float = TIMEOUT) -> list[int]:
        """Health of "" as it changes, until SERVING, the process's end, or ``timeout``."""
        statuses: list[int] = []
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    status = check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                except grpc.RpcError:
                    status = None  # not listening yet, or already gone
                if status is not None and (not statuses or statuses[-1] != status):
                    statuses.append(status)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
        return statuses

    def wait_serving(self) -> None:
        statuses = self.health_statuses()
        if not statuses or statuses[-1] != health_pb2.HealthCheckResponse.SERVING:
            self.stop()
            raise AssertionError(f"kiosk serve never became SERVING: {self.log()[-3000:]}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def audit_records(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, then wait for the exit status."""
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=timeout)
        return self.process.returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
