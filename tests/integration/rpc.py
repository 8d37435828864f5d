"""Request builders, settings and a `kiosk serve` subprocess, shared by the hostile-input, fault, load, ops and server tests.

Kept apart from test_server.py so these suites do not depend on another test module.
Starting, waiting for and stopping the service is hardware/service.py's (shared with
the retention tests, the benchmarks and the HIL runner); this adds the test settings.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from hardware.service import ServiceFailed, ServiceProcess, environment, kiosk_command

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
        kiosk_command(*args),
        cwd=REPO,
        env=environment(),
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
class ServeProcess(ServiceProcess):
    """`kiosk serve` (or a ``python -c`` script that ends in it) with the settings of ``serve_config``."""

    audit_path: Path = Path()

    @classmethod
    def start(
        cls, directory: Path, *, extra_config: str = "", script: str | None = None, script_args: list[str] = ()
    ) -> ServeProcess:
        """`kiosk serve`, or ``script`` (``python -c``) given the same arguments plus ``script_args``."""
        port = free_port()
        config = serve_config(directory, port, extra_config)
        running = ServiceProcess.start(
            config,
            f"127.0.0.1:{port}",
            directory / "serve.log",
            script=script,
            serve_args=script_args if script else (),
            stdout_pipe=True,
        )
        return cls(running.process, running.address, running.log_path, running.started, audit_path=directory / "audit.jsonl")

    def health_statuses(self, timeout: float = TIMEOUT) -> list[int]:
        return super().health_statuses(timeout)

    def wait_serving(self) -> None:
        try:
            super().wait_serving(TIMEOUT)
        except ServiceFailed as e:
            raise AssertionError(f"kiosk serve never became SERVING: {e}") from None

    def audit_records(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, then wait for the exit status."""
        return super().terminate(timeout)

    def stop(self) -> None:
        self.kill()
