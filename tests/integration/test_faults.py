"""Faults: clients that cancel or vanish, deadlines during inference, SIGTERM under load, broken start-up.

Every fault ends with the server still serving (or, for SIGTERM, with every accepted
call answered and exit status 0), the concurrency slot given back, and nothing audited
for a call that was not answered. Timing assertions are bounds on progress ("freed
within the session deadline"), never on speed.
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from kiosk.settings import bundled_models_dir
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc
from tests.integration.rpc import (
    CONSENT_VERSION,
    REPO,
    TIMEOUT,
    ServeProcess,
    frame_message,
    rpc_error,
    settings_with,
    start_message,
    verify_request,
)

SESSION_DEADLINE_S = 5.0


def _genuine(photos, **fields) -> pb.VerifyRequest:
    return verify_request(photos.scorsese[0].read_bytes(), [photos.scorsese[1].read_bytes()], **fields)


def _wait_until_admitted(stub, photos, within_s: float) -> pb.VerifyResponse:
    """Retry Verify while the server says RESOURCE_EXHAUSTED; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return stub.Verify(_genuine(photos), timeout=TIMEOUT)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _open_session(stub, photos) -> tuple[queue.SimpleQueue, object]:
    """A session holding its slot: start and one frame sent, the frame's result received."""
    outbox: queue.SimpleQueue = queue.SimpleQueue()
    events = stub.VerifySession(iter(outbox.get, None), timeout=TIMEOUT)
    outbox.put(start_message(photos.nuaa_id.read_bytes(), request_id="held"))
    outbox.put(frame_message(photos.nuaa_frames[0].read_bytes(), 0))
    assert next(events).WhichOneof("kind") == "frame_result"
    return outbox, events


@pytest.fixture
def one_slot(start_server):
    """A server that runs one Verify/VerifySession at a time, no rate limit, no challenges."""
    return start_server(
        settings_with(
            challenges=False, max_concurrent_calls=1, rate_limit_per_s=0.0, session_deadline_s=SESSION_DEADLINE_S
        )
    )


def test_client_cancelling_mid_stream_frees_its_slot(one_slot, photos):
    stub = one_slot.stub()
    outbox, events = _open_session(stub, photos)
    assert rpc_error(stub.Verify, _genuine(photos)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    events.cancel()
    outbox.put(None)

    assert _wait_until_admitted(stub, photos, SESSION_DEADLINE_S).decision == pb.VerifyResponse.MATCH
    # The cancelled session left no decision, only the record that it was cancelled.
    records = sorted((r["request_id"], r["event"]) for r in one_slot.audit_records())
    assert records == [("", "decision"), ("held", "cancelled")]


CLIENT_SCRIPT = textwrap.dedent(
    """
    import sys, time, grpc
    from kiosk.v1 import kiosk_pb2 as pb, kiosk_pb2_grpc
    address, id_photo, frame = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
    consent = pb.Consent(granted=True, text_version=sys.argv[4])
    def requests():
        yield pb.SessionRequest(start=pb.SessionStart(id_photo=id_photo, consent=consent, request_id="vanished"))
        yield pb.SessionRequest(frame=pb.CameraFrame(encoded=frame, timestamp_ms=0))
        time.sleep(3600)  # the stream stays open: this client will be killed, never closes it
    events = kiosk_pb2_grpc.KioskStub(grpc.insecure_channel(address)).VerifySession(requests())
    next(events)
    print("in flight", flush=True)
    time.sleep(3600)
    """
)


def test_client_killed_mid_stream_frees_its_slot_and_the_server_goes_on(one_slot, photos):
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, one_slot.address, str(photos.nuaa_id), str(photos.nuaa_frames[0]),
         CONSENT_VERSION],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "in flight"
        stub = one_slot.stub()
        assert rpc_error(stub.Verify, _genuine(photos)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        client.send_signal(signal.SIGKILL)  # no close, no cancel: the connection just drops
        client.wait(timeout=TIMEOUT)
        killed = time.monotonic()
        # Freed when gRPC sees the connection gone, at the latest at the session deadline.
        response = _wait_until_admitted(stub, photos, SESSION_DEADLINE_S + 5)
        print(f"slot given back and a Verify answered {time.monotonic() - killed:.2f} s after the kill")
    finally:
        if client.poll() is None:
            client.kill()
        client.communicate()
    assert response.decision == pb.VerifyResponse.MATCH
    # No decision for the vanished client (at most the record that its session was cancelled).
    assert set(r["event"] for r in one_slot.audit_records() if r["request_id"] == "vanished") <= {"cancelled"}


class HeldVerifier:
    """The real verifier; each ``verify`` signals that it started and waits for the go-ahead."""

    def __init__(self, inner):
        self._inner = inner
        self.entered = threading.Semaphore(0)
        self.proceed = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def verify(self, *args, **kwargs):
        self.entered.release()
        self.proceed.wait(timeout=TIMEOUT)
        return self._inner.verify(*args, **kwargs)


def test_client_deadline_expiring_during_inference(start_server, photos, verifier):
    held = HeldVerifier(verifier)
    running = start_server(settings_with(max_concurrent_calls=1, rate_limit_per_s=0.0), verifier=held)
    stub = running.stub()
    call = stub.Verify.future(_genuine(photos, request_id="late"), timeout=1.0)
    assert held.entered.acquire(timeout=TIMEOUT)  # inside the pipeline when the deadline passes
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    held.proceed.set()

    # The pipeline finishes, sees the deadline passed, gives no answer and frees the slot.
    assert _wait_until_admitted(stub, photos, TIMEOUT).decision == pb.VerifyResponse.MATCH
    assert [r["request_id"] for r in running.audit_records()] == [""]


HELD_SERVE_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import kiosk.pipeline
    from kiosk import cli
    from kiosk.pipeline.verifier import Verifier

    gate = Path(sys.argv[sys.argv.index("--gate") + 1])
    original = Verifier.verify

    def held(self, *args, **kwargs):
        # Say so on stdout, then wait for the test to let the call finish. One write(2) of
        # a whole line: print() writes the text and its newline separately, and three
        # threads' lines once interleaved as "enteredentered".
        os.write(sys.stdout.fileno(), b"entered\\n")
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return original(self, *args, **kwargs)

    Verifier.verify = held
    argv = sys.argv[1:]
    del argv[argv.index("--gate") : argv.index("--gate") + 2]
    sys.exit(cli.main(argv))
    """
)


def test_sigterm_under_load_drains_in_flight_calls_then_exits_0(tmp_path, photos):
    gate = tmp_path / "go"
    server = ServeProcess.start(tmp_path, script=HELD_SERVE_SCRIPT, script_args=["--gate", str(gate)])
    try:
        server.wait_serving()
        channel = grpc.insecure_channel(server.address)
        stub = kiosk_pb2_grpc.KioskStub(channel)
        calls = [stub.Verify.future(_genuine(photos, request_id=f"r{i}"), timeout=TIMEOUT) for i in range(3)]
        for _ in calls:
            assert server.process.stdout.readline().strip() == "entered"  # all three are inside the pipeline

        server.process.send_signal(signal.SIGTERM)
        # New calls are refused while the three drain. A probe that still gets in before the
        # signal is handled must not be held too, so it is one that validation refuses.
        refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        # On a loaded machine the signal can take seconds to be handled; probes past the
        # per-client rate limit are refused as RESOURCE_EXHAUSTED meanwhile.
        not_yet = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        deadline = time.monotonic() + 30
        while (code := rpc_error(stub.Verify, verify_request(b"x", [])).code()) not in refused:
            assert code in not_yet and time.monotonic() < deadline, (code, server.log()[-1500:])
            time.sleep(0.1)
        gate.touch()

        assert [call.result().decision for call in calls] == [pb.VerifyResponse.MATCH] * 3
        server.process.communicate(timeout=TIMEOUT)
        channel.close()
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()[-3000:]
    assert sorted(r["request_id"] for r in server.audit_records()) == ["r0", "r1", "r2"]
    assert "stopped" in server.log()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_corrupted_model_refuses_to_start_and_is_never_serving(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(bundled_models_dir(), models, ignore=shutil.ignore_patterns("*.py", "README.md"))
    _flip_a_byte(models / "mtcnn_rnet.onnx")
    server = ServeProcess.start(tmp_path, extra_config=f'\n[models]\ndir = "{models}"\n')
    try:
        statuses = server.health_statuses()  # polls until the process is gone
        server.process.communicate(timeout=TIMEOUT)
    finally:
        server.stop()

    assert health_pb2.HealthCheckResponse.SERVING not in statuses
    assert server.process.returncode != 0
    log = server.log()
    assert f"model file {models / 'mtcnn_rnet.onnx'} (role mtcnn_rnet) fails its integrity check" in log


def test_network_listener_without_tls_stops_kiosk_serve_before_it_listens(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "kiosk", "serve", "--listen", "0.0.0.0:0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 2
    assert "listen address(es) 0.0.0.0:0 are reachable from the network and need mutual TLS" in done.stderr
