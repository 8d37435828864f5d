"""A health-only gRPC listener for probes that cannot do mutual TLS (``service.health_listen``).

Kubernetes' native gRPC probes (and most load balancers' health checks) speak plain
gRPC without a client certificate, while a remote kiosk listener requires mutual TLS.
This second server registers nothing but ``grpc.health.v1.Health``, backed by the same
``HealthServicer`` as the main server, so it reports the same SERVING / NOT_SERVING,
including NOT_SERVING while models load and from the start of a graceful shutdown.
No kiosk method, reflection or image ever reaches it.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from kiosk.errors import ConfigError

# Health checks are tiny and answered at once: two threads serve any probe rate.
PROBE_WORKERS = 2


def build_probe_server(spec: str, health_servicer: health.HealthServicer) -> tuple[grpc.Server, int]:
    """The health-only server bound to ``spec`` (host:port), not yet started, and its port."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or spec.startswith("unix:"):
        raise ConfigError(f"service.health_listen {spec!r}: expected host:port")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=PROBE_WORKERS, thread_name_prefix="kiosk-probe"),
        maximum_concurrent_rpcs=PROBE_WORKERS * 4,
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 1024)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = server.add_insecure_port(spec)
    except RuntimeError as e:
        raise ConfigError(f"cannot listen on service.health_listen {spec}: {e}") from None
    return server, bound
