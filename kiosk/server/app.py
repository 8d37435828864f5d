"""Build and run the gRPC server: listeners, TLS, limits, health, reflection, graceful shutdown.

Listeners are ``host:port`` or ``unix:PATH``. A unix socket is always plain text and
protected by its file mode (0660: the service user and its group, e.g. the kiosk
app). A TCP listener uses mutual TLS when ``service.tls`` is configured; without
TLS only loopback addresses are allowed, so a misconfigured kiosk fails at start-up
instead of serving faces in clear text on the network.

Server reflection is served only while no listener uses TLS: gRPC Python serves one
set of services on every port of a server, so reflection cannot be kept to the local
listeners of a server that also has remote (mutual-TLS) ones; such a server has none.

Health (grpc.health.v1) says NOT_SERVING until ``KioskServer.ready`` gets a loaded,
warmed-up verifier, and again from the moment shutdown starts.

Metrics (``[metrics] listen``) are served over plain HTTP on a loopback address only:
they hold nothing personal, but a back office reaches them through an agent on the
device or a tunnel it secures, never as a port open to the kiosk's network.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kiosk import logs
from kiosk.audit import AuditCheckpoints, AuditLog, open_audit_log
from kiosk.errors import ConfigError
from kiosk.pipeline.decode import check_opencv
from kiosk.pipeline.verifier import Verifier
from kiosk.receipts import DeviceSigner, Provenance, ReceiptIssuer, open_signer
from kiosk.runtime.hardening import harden_process
from kiosk.server.info import collect_info
from kiosk.server.interceptors import CallGuard, CallLimits
from kiosk.server.metrics import ServiceMetrics
from kiosk.server.observe import CallObserver
from kiosk.server.policy import SIMILARITY_DISCLOSURES, ServicePolicy
from kiosk.server.probes import build_probe_server
from kiosk.server.ratelimit import RateLimiter
from kiosk.server.reflection import enable_server_reflection
from kiosk.server.servicer import KioskServicer, VerifierSlot
from kiosk.server.startup import bind_failure, check_startup
from kiosk.server.wire import RequestDecoding
from kiosk.settings import ServiceSettings, Settings, TlsSettings
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc

LOG = logging.getLogger("kiosk.server")

SERVICE_NAME = kiosk_pb2.DESCRIPTOR.services_by_name["Kiosk"].full_name
# Only these are bounded by max_concurrent_calls: they run the models.
GUARDED_METHODS = frozenset(f"/{SERVICE_NAME}/{name}" for name in ("Verify", "VerifySession"))
SESSION_METHODS = frozenset({f"/{SERVICE_NAME}/VerifySession"})
# Worker threads beyond the analysis and light calls' own: excess calls, which must
# reach the interceptor to be refused with a clear message (in microseconds).
THREAD_HEADROOM = 4
# Server keepalive pings (gRFC A8): a client that vanished without closing its
# connection (power cut, cable pulled) is noticed within about these 80 s and its
# calls cancelled, instead of holding them until max connection age.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
# Group may connect (the kiosk app's user), others may not.
UNIX_SOCKET_MODE = 0o660
LOOPBACK_NAMES = frozenset({"localhost"})
# A connection without calls for this long is closed. gRPC keeps the unused end of its
# last socket read buffer for the next read, and with it the last bytes received (the
# end of a photo); closing the connection frees them to be overwritten (README, "Zero
# retention"). The kiosk's channel reconnects on its next call, in about a millisecond.
CONNECTION_IDLE_MS = 1000


@dataclass(frozen=True)
class Listener:
    spec: str
    unix_path: str = ""  # set for unix:PATH
    host: str = ""
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return bool(self.unix_path)

    @property
    def is_loopback(self) -> bool:
        if self.is_unix or self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name other than localhost may resolve to anything


def parse_listener(spec: str) -> Listener:
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:")
        if not path:
            raise ConfigError(f"listen address {spec!r}: empty socket path")
        return Listener(spec, unix_path=path)
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {spec!r}: expected host:port or unix:PATH")
    return Listener(spec, host=host.removeprefix("[").removesuffix("]"), port=int(port))


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"service.tls.{what} {path}: {e.strerror}") from None


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """Mutual TLS: the server's certificate, and client certificates required from ``client_ca``."""
    files = {"server_cert": tls.server_cert, "server_key": tls.server_key, "client_ca": tls.client_ca}
    missing = [name for name, path in files.items() if not path]
    if missing:
        raise ConfigError(f"service.tls needs server_cert, server_key and client_ca; missing: {', '.join(missing)}")
    return grpc.ssl_server_credentials(
        [(_read(tls.server_key, "server_key"), _read(tls.server_cert, "server_cert"))],
        root_certificates=_read(tls.client_ca, "client_ca"),
        require_client_auth=True,
    )


def _tls_configured(tls: TlsSettings) -> bool:
    # Any TLS file set means TLS was intended; server_credentials() rejects a partial set.
    return any((tls.server_cert, tls.server_key, tls.client_ca))


def _check_service_settings(settings: Settings) -> list[Listener]:
    service = settings.service
    for name in ("max_message_bytes", "max_concurrent_calls", "call_deadline_s", "session_deadline_s"):
        if getattr(service, name) <= 0:
            raise ConfigError(f"service.{name} must be positive, got {getattr(service, name)}")
    if service.grace_period_s < 0:
        raise ConfigError(f"service.grace_period_s must not be negative, got {service.grace_period_s}")
    if service.rate_limit_per_s < 0:
        raise ConfigError(
            f"service.rate_limit_per_s must not be negative (0 = no limit), got {service.rate_limit_per_s}"
        )
    _check_capacity_settings(service)
    _check_disclosure_settings(settings)
    if service.rate_limit_per_s > 0 and service.rate_limit_burst < 1:
        raise ConfigError(f"service.rate_limit_burst must be at least 1, got {service.rate_limit_burst}")
    if not service.listen:
        raise ConfigError("service.listen is empty: nothing to serve on")
    listeners = [parse_listener(spec) for spec in service.listen]
    remote = [l.spec for l in listeners if not l.is_loopback]
    if remote and not _tls_configured(service.tls):
        raise ConfigError(
            f"listen address(es) {', '.join(remote)} are reachable from the network and need "
            "mutual TLS: set service.tls (server_cert, server_key, client_ca) or listen on loopback or unix:PATH"
        )
    return listeners


# --------------------------------------------------------------------------- capacity (hostile clients)


def _check_capacity_settings(service: ServiceSettings) -> None:
    for name in (
        "max_calls_per_client",
        "max_light_calls",
        "max_light_calls_per_client",
        "first_message_timeout_s",
        "frame_idle_timeout_s",
        "max_connection_age_s",
    ):
        if getattr(service, name) <= 0:
            raise ConfigError(f"service.{name} must be positive, got {getattr(service, name)}")
    if service.max_connection_age_grace_s < 0:
        raise ConfigError(f"service.max_connection_age_grace_s must not be negative, got {service.max_connection_age_grace_s}")
    if service.max_open_calls < worker_threads(service):
        raise ConfigError(
            f"service.max_open_calls ({service.max_open_calls}) must be at least max_concurrent_calls + "
            f"max_light_calls + {THREAD_HEADROOM} = {worker_threads(service)}"
        )


def _check_disclosure_settings(settings: Settings) -> None:
    service = settings.service
    for name in ("remote_similarity", "local_similarity"):
        if getattr(service, name) not in SIMILARITY_DISCLOSURES:
            raise ConfigError(
                f"service.{name} must be one of {', '.join(SIMILARITY_DISCLOSURES)}, got {getattr(service, name)!r}"
            )
    if service.require_active_session_remote and not settings.liveness_challenge.enabled:
        raise ConfigError(
            "service.require_active_session_remote needs liveness_challenge.enabled: "
            "without challenges no session is active"
        )


def worker_threads(service: ServiceSettings) -> int:
    """gRPC worker threads: every analysis and light call gets one, plus room to refuse the excess."""
    return service.max_concurrent_calls + service.max_light_calls + THREAD_HEADROOM


def light_call_pool(service: ServiceSettings) -> futures.ThreadPoolExecutor:
    """Worker threads of their own for health, GetInfo and reflection.

    gRPC hands every call to a worker before any handler runs. With one pool, health
    checks wait in its queue behind whatever analysis calls (and the refusals of excess
    ones: a flood of them) are queued. gRPC runs a handler whose behaviour names an
    ``experimental_thread_pool`` there instead (the call guard sets it on light calls),
    so analysis traffic of any size cannot delay a health check.
    """
    return futures.ThreadPoolExecutor(max_workers=service.max_light_calls + THREAD_HEADROOM, thread_name_prefix="kiosk-light")


def call_limits(service: ServiceSettings) -> CallLimits:
    return CallLimits(
        max_concurrent_calls=service.max_concurrent_calls,
        max_calls_per_client=service.max_calls_per_client,
        max_light_calls=service.max_light_calls,
        max_light_calls_per_client=service.max_light_calls_per_client,
        first_message_timeout_s=service.first_message_timeout_s,
        call_deadline_s=service.call_deadline_s,
        session_deadline_s=service.session_deadline_s,
        stream_lifetime_s=service.max_connection_age_s + service.max_connection_age_grace_s,
    )


def connection_options(service: ServiceSettings) -> list[tuple[str, int]]:
    """gRPC connection management (gRFC A9, A8): maximum age with a grace period, keepalive."""
    return [
        ("grpc.max_connection_age_ms", int(service.max_connection_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(service.max_connection_age_grace_s * 1000)),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]


def _metrics_listener(settings: Settings) -> Listener | None:
    spec = settings.metrics.listen
    if not spec:
        return None
    try:
        listener = parse_listener(spec)
    except ConfigError as e:
        raise ConfigError(f"metrics.{e.message}") from None
    if listener.is_unix or not listener.is_loopback:
        raise ConfigError(
            f"metrics.listen {spec!r}: metrics are served on a loopback host:port only "
            "(e.g. 127.0.0.1:9464); scrape them from the device or through a tunnel"
        )
    return listener


class KioskServer:
    """The running service: a grpc.Server with health, and the gate that opens once models are loaded."""

    def __init__(
        self,
        server: grpc.Server,
        health_servicer: health.HealthServicer,
        verifier: VerifierSlot,
        settings: Settings,
        metrics: ServiceMetrics,
        metrics_listener: Listener | None,
    ):
        self.grpc_server = server
        self.health = health_servicer
        self._verifier = verifier
        self._settings = settings
        self.metrics = metrics
        self._metrics_listener = metrics_listener
        # The bound metrics port once started; 0 while metrics are off.
        self.metrics_port = 0
        # Health-only plain-text listener (service.health_listen) and its port; None/0 when off.
        self.probe_server: grpc.Server | None = None
        self.probe_port = 0

    def start(self) -> None:
        self.grpc_server.start()
        if self.probe_server is not None:
            self.probe_server.start()
        if self._metrics_listener is not None:
            listener = self._metrics_listener
            try:
                self.metrics_port = self.metrics.serve(listener.host, listener.port)
            except OSError as e:
                self.grpc_server.stop(0)
                raise ConfigError(f"cannot serve metrics on {listener.spec}: {e.strerror}") from None

    def ready(self, verifier: Verifier) -> None:
        """Take calls with this loaded, warmed-up verifier; health goes SERVING."""
        self._verifier.set(verifier)
        self.metrics.loaded(collect_info(self._settings, verifier))
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None) -> threading.Event:
        """Health NOT_SERVING, refuse new calls, give in-flight ones ``grace`` seconds.

        Returns an event set once every call has finished or been cancelled. The
        metrics endpoint closes at once: a stopping service is not scraped.
        """
        self.health.enter_graceful_shutdown()
        self.metrics.stopping()
        stopped = self.grpc_server.stop(grace)
        self.metrics.close()
        if self.probe_server is not None:
            # Probes keep seeing NOT_SERVING while calls drain, then the port closes.
            probe = self.probe_server
            threading.Thread(target=lambda: (stopped.wait(), probe.stop(0)), daemon=True).start()
        return stopped


def build_server(
    settings: Settings,
    verifier: Verifier | None = None,
    *,
    audit: AuditLog | None = None,
    signer: DeviceSigner | None = None,
) -> tuple[KioskServer, tuple[int, ...]]:
    """The server bound to every ``service.listen`` address, not yet started.

    Returns it with the bound ports in ``listen`` order (0 for unix sockets), so tests
    can listen on port 0. Without ``verifier`` it answers NOT_SERVING/UNAVAILABLE
    until ``ready()``. ``audit`` stays owned by the caller. ``signer`` signs receipts;
    without one, ``[receipts] key_file``'s key (or an ephemeral one) is used.
    """
    listeners = _check_service_settings(settings)
    # A bad metrics address fails here, before anything is bound.
    metrics_listener = _metrics_listener(settings)
    # A vulnerable OpenCV, or one whose own decoder ceilings were never read, decodes nothing here.
    check_opencv()
    service = settings.service
    socket_group = _unix_socket_gid(service.unix_socket_group)
    rates = RateLimiter(service.rate_limit_per_s, service.rate_limit_burst)
    metrics = ServiceMetrics()
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=service.max_concurrent_calls + THREAD_HEADROOM, thread_name_prefix="kiosk-rpc"
        ),
        # The observer comes first, so it also logs and counts the calls CallGuard refuses.
        interceptors=[
            CallObserver(SERVICE_NAME, metrics),
            CallGuard(
                call_limits(service),
                GUARDED_METHODS,
                rates,
                session_methods=SESSION_METHODS,
                light_pool=light_call_pool(service),
            ),
            # Innermost, so every method's received bytes are wiped once parsed (kiosk.server.wire).
            RequestDecoding(f"/{SERVICE_NAME}/"),
        ],
        # Past this gRPC itself answers RESOURCE_EXHAUSTED instead of queueing without bound.
        maximum_concurrent_rpcs=service.max_open_calls,
        options=[
            # service.max_message_bytes (default 8 MiB: an ID photo and five live JPEGs with room
            # to spare) bounds each message; larger ones get RESOURCE_EXHAUSTED from gRPC itself.
            ("grpc.max_receive_message_length", service.max_message_bytes),
            ("grpc.max_send_message_length", service.max_message_bytes),
            # gRPC sets SO_REUSEPORT by default, which would let a second instance share the port silently.
            ("grpc.so_reuseport", 0),
            ("grpc.max_connection_idle_ms", CONNECTION_IDLE_MS),
            *connection_options(service),
        ],
    )
    slot = VerifierSlot()
    if signer is None:
        signer = open_signer(settings.receipts.key_file, LOG)
    receipts = ReceiptIssuer(
        signer, Provenance.from_settings(settings), challenges=settings.liveness_challenge.enabled
    )
    kiosk_pb2_grpc.add_KioskServicer_to_server(
        KioskServicer(settings, ServicePolicy(settings, audit), slot, receipts), server
    )
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    credentials = server_credentials(service.tls) if _tls_configured(service.tls) else None
    if service.reflection and credentials is None:
        # Under grpc.reflection.v1 and v1alpha (kiosk/server/reflection.py).
        enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
    elif service.reflection:
        LOG.info("server reflection is off: TLS listeners are reachable from the network")
    ports = tuple(_bind(server, listener, credentials, socket_group) for listener in listeners)
    kiosk_server = KioskServer(server, health_servicer, slot, settings, metrics, metrics_listener)
    if service.health_listen:
        kiosk_server.probe_server, kiosk_server.probe_port = build_probe_server(service.health_listen, health_servicer)
    if verifier is not None:
        kiosk_server.ready(verifier)
    return kiosk_server, ports


def _unix_socket_gid(group: str) -> int:
    """The gid of ``service.unix_socket_group``, or -1 (leave the group as it is) when empty."""
    if not group:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"service.unix_socket_group {group!r}: no such group") from None


def _bind(
    server: grpc.Server, listener: Listener, credentials: grpc.ServerCredentials | None, socket_gid: int = -1
) -> int:
    try:
        if listener.is_unix:
            server.add_insecure_port(listener.spec)
            # Bound with the process umask (at most 0755 here: only the owner may connect),
            # then handed to the kiosk UI's group and opened to it.
            if socket_gid >= 0:
                os.chown(listener.unix_path, -1, socket_gid)
            os.chmod(listener.unix_path, UNIX_SOCKET_MODE)
            return 0
        if credentials is not None:
            return server.add_secure_port(listener.spec, credentials)
        return server.add_insecure_port(listener.spec)
    except (RuntimeError, OSError) as e:
        reason = str(e) if listener.is_unix else bind_failure(listener.host, listener.port)
        raise ConfigError(f"cannot listen on {listener.spec}: {reason}") from None


def serve_forever(settings: Settings) -> int:
    """Run the service until SIGTERM or SIGINT, then shut down gracefully; returns the exit status."""
    logs.configure()
    # Settings that can never serve stop start-up here, before any listener opens.
    check_startup(settings)
    # Before any listener opens or model loads: no request may ever reach an unhardened process.
    harden_process(LOG)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        LOG.info("received %s: shutting down", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    audit = open_audit_log(settings.audit)
    checkpoints = None
    try:
        signer = open_signer(settings.receipts.key_file, LOG)
        if audit is not None:
            # The chain's head is signed now, periodically and at shutdown (kiosk.audit, "Checkpoints").
            checkpoints = AuditCheckpoints(
                audit,
                signer,
                interval_s=settings.audit.checkpoint_interval_s,
                device_id=settings.service.device_id,
                log=LOG,
            )
            checkpoints.start()
        server, ports = build_server(settings, audit=audit, signer=signer)
        server.start()
        for spec, port in zip(settings.service.listen, ports):
            LOG.info("listening on %s", f"{spec.rpartition(':')[0]}:{port}" if port else spec)
        if server.probe_port:
            host = settings.service.health_listen.rpartition(":")[0]
            LOG.info("health probes (grpc.health.v1 only, plain text) on %s:%d", host, server.probe_port)
        if server.metrics_port:
            host = settings.metrics.listen.rpartition(":")[0]
            LOG.info("metrics on http://%s:%d/metrics", host, server.metrics_port)
        try:
            verifier = Verifier.load(settings)  # hash check + warm-up before SERVING
            if verifier.profile.onnxruntime.enable_cpu_mem_arena:
                # The arena reuses tensor memory without freeing it, so no wipe reaches it.
                LOG.warning(
                    "hardware profile %s enables ONNX Runtime's CPU arena: tensors outlive requests",
                    verifier.profile.name,
                )
            if not stopping.is_set():
                server.ready(verifier)
                LOG.info("serving (hardware profile %s)", verifier.profile.name)
                # Wake up now and then: Python runs signal handlers only in the main thread,
                # between bytecodes, and a SIGTERM taken by another thread would otherwise
                # wait for an untimed wait that never ends.
                while not stopping.wait(0.5):
                    pass
        finally:
            grace = settings.service.grace_period_s
            LOG.info("stopping: finishing in-flight calls (up to %g s)", grace)
            server.stop(grace).wait()
            LOG.info("stopped")
    finally:
        if checkpoints is not None:
            checkpoints.close()  # after the last call: the final head is what it signs
        if audit is not None:
            audit.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
