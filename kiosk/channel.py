"""gRPC channels to the kiosk service: any target, replicas behind client-side load balancing, TLS.

Imports only grpc and the standard library, so every client (the CLI's remote
commands, a kiosk UI, a back office) can use it without the inference stack.

Targets
    Anything gRPC resolves: ``host:port``, ``unix:PATH`` (or ``unix:///PATH``),
    ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, ``ipv6:[::1]:50051,[::1]:50052``,
    ``dns:///kiosk.internal:50051`` (every address the name resolves to, e.g. a
    Kubernetes headless Service).

Replicas
    The service keeps no state between calls (a live session lives within one
    stream), so several replicas need no cluster of their own: the default service
    config below (gRPC's standard JSON, https://github.com/grpc/grpc/blob/master/doc/service_config.md)
    spreads calls over every resolved address with ``round_robin``, watches each one's
    ``grpc.health.v1`` status (client-side health checking: a replica that says
    NOT_SERVING, e.g. while loading models or draining on SIGTERM, gets no new calls),
    and retries a Verify or GetInfo that failed with UNAVAILABLE (a replica killed or
    gone) on another address, up to 5 attempts with 0.1-1 s backoff. A live session
    is not retried: its frames were sent to a replica that is gone, and the kiosk must
    start the session again. Override it with ``service_config`` (a JSON string or
    dict), e.g. ``{"loadBalancingConfig": [{"pick_first": {}}]}``.

A retried Verify may already have been decided, and audited, by the replica that
failed before its answer arrived; the answer the client gets is the retry's, with
its own receipt naming the replica that gave it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import grpc

SERVICE_NAME = "kiosk.v1.Kiosk"
# Requests up to the service's default max_message_bytes (8 MiB) can be retried: gRPC
# keeps a copy of each request until it is committed, up to this much per call.
RETRY_BUFFER_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

DEFAULT_SERVICE_CONFIG: dict = {
    "loadBalancingConfig": [{"round_robin": {}}],
    # Health of the kiosk service itself, not of the whole server: a replica with
    # models still loading answers NOT_SERVING for it.
    "healthCheckConfig": {"serviceName": SERVICE_NAME},
    "methodConfig": [
        {
            "name": [
                {"service": SERVICE_NAME, "method": "Verify"},
                {"service": SERVICE_NAME, "method": "GetInfo"},
                {"service": "grpc.health.v1.Health", "method": "Check"},
            ],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


class ChannelError(ValueError):
    """A target or TLS option that cannot make a channel; the message says which."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ChannelError(f"cannot read {what} {path}: {e.strerror}") from None


def check_target(target: str) -> str:
    """Refuse what gRPC would only fail on later with a vague UNAVAILABLE: empty or spaced targets."""
    if not target or target != target.strip() or any(c.isspace() for c in target):
        raise ChannelError(f"gRPC target {target!r}: expected host:port, unix:PATH, ipv4:A:P,B:P or dns:///HOST:PORT")
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("ipv4", "ipv6") and not all(rest.split(",")):
        raise ChannelError(f"gRPC target {target!r}: an empty address in the list")
    return target


def service_config_json(service_config: str | Mapping | None = None, health_check: bool = True) -> str:
    """The service config a channel uses: ``service_config`` (JSON text or a mapping) or the default.

    ``health_check=False`` drops client-side health checking from the default: a
    channel that asks for health itself must reach replicas that are NOT_SERVING.
    """
    if service_config is None:
        config = dict(DEFAULT_SERVICE_CONFIG)
        if not health_check:
            del config["healthCheckConfig"]
        return json.dumps(config)
    if isinstance(service_config, Mapping):
        return json.dumps(service_config)
    try:
        json.loads(service_config)
    except json.JSONDecodeError as e:
        raise ChannelError(f"service config is not JSON: {e.msg} at column {e.colno}") from None
    return service_config


def channel_options(
    service_config: str | Mapping | None = None, server_name: str | None = None, health_check: bool = True
) -> list[tuple]:
    options = [
        ("grpc.service_config", service_config_json(service_config, health_check)),
        # The resolver's own service config (DNS TXT records) must not override ours.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if server_name:
        # TLS: the name the server's certificate must carry, when it differs from the target's host.
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def create_channel(
    target: str,
    *,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
    server_name: str | None = None,
    service_config: str | Mapping | None = None,
    health_check: bool = True,
) -> grpc.Channel:
    """A channel to ``target``: TLS when ``ca`` is given (mutual TLS with ``cert`` and ``key``), plain otherwise.

    The service accepts plain text only on loopback and unix sockets, so a remote
    target needs ``ca``. ``health_check=False``: see ``service_config_json``.
    """
    check_target(target)
    if (cert is None) != (key is None):
        raise ChannelError("a client certificate needs its private key, and a key its certificate")
    options = channel_options(service_config, server_name, health_check)
    if ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "CA certificate"),
            private_key=_read(key, "client key") if key is not None else None,
            certificate_chain=_read(cert, "client certificate") if cert is not None else None,
        )
        return grpc.secure_channel(target, credentials, options=options)
    if server_name:
        raise ChannelError("--server-name is only used with TLS: give the server's CA certificate too")
    if cert is not None:
        raise ChannelError("a client certificate is only used with TLS: give the server's CA certificate too")
    return grpc.insecure_channel(target, options=options)
