"""Server reflection under both names clients ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection (1.85) serves only ``grpc.reflection.v1alpha.ServerReflection``;
current grpcurl, Postman and gRPC UI ask for ``grpc.reflection.v1`` first. The v1
protocol is the v1alpha one under a new package name: every message and field number
is the same, so the library's own servicer answers both, registered under each name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_server_reflection(service_names: Sequence[str], server: grpc.Server) -> None:
    """Reflection for ``service_names`` (plus both reflection services) on ``server``."""
    names = tuple(dict.fromkeys((*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)))
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
