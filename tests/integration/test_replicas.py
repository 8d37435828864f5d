"""Three real `kiosk serve` replicas behind one multi-address gRPC target: load spreads, failover loses nothing.

A client (``kiosk.client.KioskClient``, i.e. ``kiosk.channel``'s default service config:
round_robin, client-side health checking, retry on UNAVAILABLE) drives Verify calls
from a few threads through ``ipv4:A,B,C``. Mid-run one replica is frozen (SIGSTOP)
until a Verify is in flight on it, then killed (SIGKILL), so the kill cuts a call; later
another is drained (SIGTERM: health NOT_SERVING, then graceful stop). Every call must
still get its decision, and the calls must spread over the replicas. gRPC's channelz
counts show the cut attempts and that the channel saw none fail. Each replica signs
with its own ephemeral key, so a receipt's ``key_id`` tells which replica answered;
the per-replica counts are printed (run with -s).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from kiosk.client import KioskClient, RemoteError
from kiosk.receipts import RECEIPT_TYPE, parse_public_key, verify_signed
from kiosk.server.calls import Consent
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc

from .rpc import CONSENT_VERSION, TIMEOUT, ServeProcess

THREADS = 3
# Calls each live replica must have answered in a phase before the next step: enough to
# show the spread, few enough to stay bounded (about 10 s on an idle 2-core machine).
PER_REPLICA = 3
# Bound of the whole run on a badly overloaded machine; a step not reached by then fails.
RUN_LIMIT_S = 240.0


def _key_id(address: str) -> tuple[str, object]:
    with grpc.insecure_channel(address) as channel:
        info = kiosk_pb2_grpc.KioskStub(channel).GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
    public_key = parse_public_key(info.receipt_public_key)
    from kiosk.receipts import _public_raw, key_id

    return key_id(_public_raw(public_key)), public_key


CALLS = ("callsStarted", "callsSucceeded", "callsFailed")


def _channelz(target: str) -> tuple[Counter, dict[str, Counter]]:
    """Calls started/succeeded/failed on the live channels to ``target``, and per address (gRPC channelz).

    Channel counts are what the application sees, after gRPC's retries. Address
    (subchannel) counts are per attempt, and include each connection's health-watch
    stream; channels with the same options share subchannels, so each is counted once.
    """
    import json

    from grpc._cython import cygrpc  # channelz has no public Python query API (grpcio-channelz serves it over gRPC)

    channels: Counter = Counter()
    addresses: dict[str, Counter] = {}
    seen: set[int] = set()
    for channel in json.loads(cygrpc.channelz_get_top_channels(0)).get("channel", []):
        if channel["data"]["target"] != target:
            continue
        channels.update({k: int(channel["data"].get(k, 0)) for k in CALLS})
        for ref in channel.get("subchannelRef", []):
            if int(ref["subchannelId"]) in seen:
                continue
            seen.add(int(ref["subchannelId"]))
            data = json.loads(cygrpc.channelz_get_subchannel(int(ref["subchannelId"])))["subchannel"]["data"]
            counts = addresses.setdefault(data["target"].removeprefix("ipv4:"), Counter())
            counts.update({k: int(data.get(k, 0)) for k in CALLS})
    return channels, addresses


def _open_calls(counts: Counter) -> int:
    return counts["callsStarted"] - counts["callsSucceeded"] - counts["callsFailed"]


def test_replicas_share_the_load_and_failover_loses_no_call(tmp_path: Path, photos):
    replicas = []
    try:
        for n in range(3):
            (tmp_path / f"r{n}").mkdir()
            replicas.append(ServeProcess.start(tmp_path / f"r{n}"))
        for replica in replicas:
            replica.wait_serving()
        keys = {}
        for n, replica in enumerate(replicas):
            kid, public_key = _key_id(replica.address)
            keys[kid] = (n, public_key)
        target = "ipv4:" + ",".join(r.address for r in replicas)

        id_photo, live = photos.scorsese[0].read_bytes(), photos.scorsese[1].read_bytes()
        answered: list[tuple[float, int, str]] = []  # (time since start, replica, request id)
        spans: list[tuple[float, float]] = []  # (sent, answered) of each call
        failures: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        started = time.monotonic()

        clients = [KioskClient(target, timeout=TIMEOUT) for _ in range(THREADS)]

        def drive(worker: int) -> None:
            client = clients[worker]
            if True:
                i = 0
                while not stop.is_set():
                    request_id = f"w{worker}-{i}"
                    i += 1
                    sent = time.monotonic() - started
                    try:
                        verification, receipt = client.verify_with_receipt(
                            id_photo, [live], consent=Consent(True, CONSENT_VERSION), request_id=request_id
                        )
                        kid = receipt.fields()["key_id"]
                        replica, public_key = keys[kid]
                        fields = verify_signed(receipt.body, receipt.signature, public_key, RECEIPT_TYPE)
                        assert fields["request_id"] == request_id and verification.decision.value == "match"
                        with lock:
                            answered.append((time.monotonic() - started, replica, request_id))
                            spans.append((sent, answered[-1][0]))
                    except (RemoteError, AssertionError, KeyError) as e:
                        with lock:
                            failures.append(f"{request_id}: {e}")

        def wait_for(since: float, wanted: tuple[int, ...], step: str) -> None:
            """Until each of ``wanted`` replicas answered PER_REPLICA calls after ``since``."""
            while time.monotonic() - started < RUN_LIMIT_S:
                with lock:
                    counts = Counter(r for t, r, _ in answered if t >= since)
                if all(counts[n] >= PER_REPLICA for n in wanted) or failures:
                    return
                time.sleep(0.05)
            raise AssertionError(f"{step}: replicas {wanted} did not each answer {PER_REPLICA} calls: {counts}")

        workers = [threading.Thread(target=drive, args=(w,)) for w in range(THREADS)]
        for w in workers:
            w.start()
        try:
            wait_for(0.0, (0, 1, 2), "before the kill")
            # Freeze replica 0 and kill it once a Verify is known to be in flight on it
            # (besides its health-watch stream): the kill must cut a call, not just miss one.
            replicas[0].process.send_signal(signal.SIGSTOP)
            while time.monotonic() - started < RUN_LIMIT_S:
                if _open_calls(_channelz(target)[1].get(replicas[0].address, Counter())) >= 2:
                    break
                time.sleep(0.05)
            replicas[0].process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic() - started
            wait_for(killed_at, (1, 2), "after the kill")
            replicas[1].process.send_signal(signal.SIGTERM)
            drained_at = time.monotonic() - started
            wait_for(drained_at, (2,), "after the drain")
        finally:
            stop.set()
            for w in workers:
                w.join(TIMEOUT * 2)
        elapsed = time.monotonic() - started
        channelz, per_address = _channelz(target)
        for client in clients:
            client.close()
        drain_exit = replicas[1].process.wait(TIMEOUT)
    finally:
        for replica in replicas:
            replica.stop()

    phases = {
        "before kill": Counter(r for t, r, _ in answered if t < killed_at),
        "killed r0, before drain": Counter(r for t, r, _ in answered if killed_at <= t < drained_at),
        "after drain of r1": Counter(r for t, r, _ in answered if t >= drained_at),
    }
    for name, counts in phases.items():
        print(f"{name}: " + ", ".join(f"r{n}={counts[n]}" for n in range(3)))
    print(
        f"answered {len(answered)} in {elapsed:.1f} s, failed {len(failures)}; "
        f"killed at {killed_at:.1f} s, drained at {drained_at:.1f} s; r1 exit status after SIGTERM: {drain_exit}"
    )

    assert not failures, failures[:5]
    # gRPC itself saw every call succeed: none failed and was hidden from the workers ...
    assert channelz["callsFailed"] == 0 and channelz["callsSucceeded"] == channelz["callsStarted"] == len(answered)

    assert drain_exit == 0
    # Nothing lost: every call a worker started was answered once (ids are consecutive per worker).
    ids = Counter(request_id for _, _, request_id in answered)
    assert all(n == 1 for n in ids.values())
    for w in range(THREADS):
        numbers = sorted(int(rid.split("-")[1]) for rid in ids if rid.startswith(f"w{w}-"))
        assert numbers == list(range(len(numbers)))
    # The load spread over all three while they were up, and the survivors took over.
    assert all(phases["before kill"][n] > 0 for n in range(3)), phases
    assert phases["killed r0, before drain"][1] > 0 and phases["killed r0, before drain"][2] > 0, phases
    assert phases["after drain of r1"][2] > 0, phases
    # Each decision was audited by the replica that answered it; a killed replica may
    # also hold a decision whose answer was lost and retried elsewhere, never fewer.
    audited = [{rec["request_id"] for rec in replica.audit_records()} for replica in replicas]
    for n in range(3):
        assert {rid for _, r, rid in answered if r == n} <= audited[n]
    # Decided by the killed replica but answered by another: the calls its death cut, retried.
    retried = audited[0] - {rid for _, r, rid in answered if r == 0}
    in_flight = {name: sum(a < at < b for a, b in spans) for name, at in (("kill", killed_at), ("drain", drained_at))}
    print(f"calls in flight at the kill: {in_flight['kill']}, at the drain: {in_flight['drain']} (all answered)")
    print(f"gRPC channels (channelz): {channelz['callsStarted']} calls started, "
          f"{channelz['callsSucceeded']} succeeded, {channelz['callsFailed']} failed")
    for n, replica in enumerate(replicas):
        counts = per_address[replica.address]
        print(f"r{n} attempts: {counts['callsStarted']} started, {counts['callsSucceeded']} succeeded, "
              f"{counts['callsFailed']} failed (health-watch stream included)")
    # r0's failed attempts: the Verify calls its death cut, plus its health-watch stream.
    cut = per_address[replicas[0].address]["callsFailed"] - 1
    print(f"Verify calls cut by the kill and retried on another replica: {cut}")
    # The kill cut at least one attempt on r0, and gRPC retried it elsewhere.
    assert cut >= 1, per_address
    print(f"calls r0 had decided (audited) when killed, answered again by another replica: {len(retried)}")
    assert all(rid in ids for rid in retried)


def test_client_reaches_the_service_through_every_target_form(start_server, tmp_path):
    """One in-process server, addressed as host:port, ipv4:, dns:/// and unix:; health still sees NOT_SERVING."""
    import dataclasses

    from kiosk.settings import ServiceSettings, Settings

    sock = tmp_path / "k.sock"
    settings = dataclasses.replace(Settings(), service=ServiceSettings(listen=("127.0.0.1:0", f"unix:{sock}")))
    kiosk = start_server(settings)
    port = kiosk.address.rpartition(":")[2]
    for target in (f"127.0.0.1:{port}", f"ipv4:127.0.0.1:{port}", f"dns:///localhost:{port}", f"unix:{sock}"):
        with KioskClient(target, timeout=TIMEOUT) as client:
            assert client.health() == "SERVING", target
            assert client.info().receipt_public_key, target
    # Models not loaded: the kiosk service is NOT_SERVING. Calls find no healthy replica,
    # but `health` asks on a channel without health checking, so it can say so.
    loading = start_server(verifier=None)
    with KioskClient(f"ipv4:{loading.address}", timeout=5) as client:
        assert client.health("kiosk.v1.Kiosk") == "NOT_SERVING"


def test_health_probe_port_answers_health_only_in_plain_text(start_server, tls_files):
    """A mutual-TLS service still answers Kubernetes' plain gRPC probes on service.health_listen, and nothing else."""
    import dataclasses

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from kiosk.settings import ServiceSettings, Settings

    service = ServiceSettings(listen=("127.0.0.1:0",), tls=tls_files.server_settings(), health_listen="127.0.0.1:0")
    kiosk = start_server(dataclasses.replace(Settings(), service=service))
    probe = f"127.0.0.1:{kiosk.server.probe_port}"
    assert kiosk.server.probe_port
    with grpc.insecure_channel(probe) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        for name in ("", "kiosk.v1.Kiosk"):
            assert check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT).status == 1  # SERVING
        # No kiosk method is served there, in plain text or at all.
        with pytest.raises(grpc.RpcError) as caught:
            kiosk_pb2_grpc.KioskStub(channel).GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # A graceful stop shows on the probe port first: NOT_SERVING while calls drain.
        kiosk.server.health.enter_graceful_shutdown()
        assert check(health_pb2.HealthCheckRequest(service="kiosk.v1.Kiosk"), timeout=TIMEOUT).status == 2
    # The main listener still wants a client certificate.
    with grpc.insecure_channel(kiosk.address) as channel:
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
