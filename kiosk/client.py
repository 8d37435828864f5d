"""Client of the kiosk gRPC service.

``KioskClient`` speaks domain types: ``verify`` returns the same ``Verification`` the
in-process pipeline does, so `kiosk verify --server` prints exactly what `kiosk
verify` prints. TLS is used when a CA certificate is given (and mutual TLS when a
client certificate and key are given too); otherwise the channel is plain, as the
service allows only on loopback and unix sockets.

A light library: it loads grpcio, protobuf, the generated ``kiosk.v1`` code and the
standard-library modules of ``kiosk`` (``domain``, ``server.convert`` and its types),
never numpy, OpenCV or ONNX Runtime, so a kiosk UI or a back office can use it without
the inference stack (tests/integration/test_light_client.py holds this). The CLI's
remote commands are in ``kiosk.cli_remote``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiosk.channel import ChannelError, create_channel
from kiosk.domain import Frame, Verification
from kiosk.errors import KioskError
from kiosk.server import convert
from kiosk.server.calls import (
    CallMeta,
    Consent,
    PromptEvent,
    SessionOpening,
    SessionUpdate,
    VerifyCall,
)
from kiosk.receipts import SignedReceipt
from kiosk.server.info import ServiceInfo
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc


class RemoteError(KioskError):
    """A call to the service ended with a gRPC error status."""

    def __init__(self, address: str, error: grpc.RpcError):
        code = error.code()
        super().__init__(f"{address}: {code.name}: {error.details()}")
        self.status_code = code.name


def read_file(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KioskError(f"cannot read {what} {path}: {e.strerror}") from None


class KioskClient:
    """Use as ``with KioskClient("unix:/run/kiosk.sock") as client: client.verify(...)``."""

    def __init__(
        self,
        address: str,
        *,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        timeout: float = 30.0,
        server_name: str | None = None,
        service_config: str | dict | None = None,
    ):
        self.address = address
        self.timeout = timeout
        # Any gRPC target; several addresses are load-balanced with health checks and
        # retries (kiosk.channel says how, and how to override it).
        try:
            self._channel = create_channel(
                address, ca=ca, cert=cert, key=key, server_name=server_name, service_config=service_config
            )
            # Health is asked on a channel of its own without client-side health checking:
            # that would never pick a NOT_SERVING replica, so could never report one.
            self._health_channel = create_channel(
                address, ca=ca, cert=cert, key=key, server_name=server_name, service_config=service_config,
                health_check=False,
            )
        except ChannelError as e:
            raise KioskError(str(e)) from None
        self._stub = kiosk_pb2_grpc.KioskStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._health_channel)

    def verify(
        self,
        id_photo: bytes,
        live_photos: Sequence[bytes],
        *,
        consent: Consent,
        target_fmr: float | None = None,
        request_id: str = "",
        device_id: str = "",
    ) -> Verification:
        return self.verify_with_receipt(
            id_photo, live_photos, consent=consent, target_fmr=target_fmr, request_id=request_id, device_id=device_id
        )[0]

    def verify_with_receipt(
        self,
        id_photo: bytes,
        live_photos: Sequence[bytes],
        *,
        consent: Consent,
        target_fmr: float | None = None,
        request_id: str = "",
        device_id: str = "",
    ) -> tuple[Verification, SignedReceipt | None]:
        """``verify``, plus the decision's signed receipt (None from a server that sends none)."""
        call = VerifyCall(CallMeta(request_id, device_id, consent, target_fmr), id_photo, tuple(live_photos))
        try:
            response = self._stub.Verify(convert.verify_call_to_proto(call), timeout=self.timeout)
        except grpc.RpcError as e:
            raise RemoteError(self.address, e) from None
        return convert.verification_from_proto(response), convert.receipt_from_proto(response)

    def session(
        self,
        id_photo: bytes,
        frames: Iterable[Frame],
        fps: float | None = None,
        *,
        consent: Consent,
        target_fmr: float | None = None,
        request_id: str = "",
        device_id: str = "",
    ) -> Iterator[SessionUpdate]:
        """Stream ``frames`` (at most ``fps`` per second; None = as fast as possible) and yield the server's events.

        Each frame without a nonce of its own is sent echoing the latest challenge prompt
        received so far, as a kiosk does. The last event is a ``DecisionEvent``; frames
        not yet sent by then are dropped.
        """
        finished = threading.Event()
        # Written by the response loop, read by the request thread: one reference, swapped whole.
        latest_nonce = [""]
        opening = SessionOpening(CallMeta(request_id, device_id, consent, target_fmr), id_photo)

        def requests() -> Iterator[kiosk_pb2.SessionRequest]:
            yield convert.session_opening_to_proto(opening)
            interval = 1.0 / fps if fps else 0.0
            due = time.monotonic()
            for frame in frames:
                # Waiting on the event, not sleeping: the stream stops as soon as the call ends.
                if finished.wait(max(0.0, due - time.monotonic())):
                    return
                if not frame.challenge_nonce:
                    frame = dataclasses.replace(frame, challenge_nonce=latest_nonce[0])
                yield convert.frame_to_proto(frame)
                due += interval

        call = self._stub.VerifySession(requests(), timeout=self.timeout)
        try:
            for event in call:
                update = convert.session_update_from_proto(event)
                if isinstance(update, PromptEvent):
                    latest_nonce[0] = update.prompt.nonce
                yield update
        except grpc.RpcError as e:
            raise RemoteError(self.address, e) from None
        finally:
            finished.set()
            call.cancel()  # a no-op once the server has ended the stream

    def info(self) -> ServiceInfo:
        try:
            response = self._stub.GetInfo(kiosk_pb2.InfoRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise RemoteError(self.address, e) from None
        return convert.info_from_proto(response)

    def health(self, service: str = "") -> str:
        """The health status name of ``service`` ("" = the whole server), e.g. "SERVING"."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as e:
            raise RemoteError(self.address, e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self._channel.close()
        self._health_channel.close()

    def __enter__(self) -> KioskClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
