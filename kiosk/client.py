"""Client of the kiosk gRPC service, and the CLI's remote commands.

``KioskClient`` speaks domain types: ``verify`` returns the same ``Verification`` the
in-process pipeline does, so `kiosk verify --server` prints exactly what `kiosk
verify` prints. TLS is used when a CA certificate is given (and mutual TLS when a
client certificate and key are given too); otherwise the channel is plain, as the
service allows only on loopback and unix sockets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kiosk.channel import ChannelError, create_channel
from kiosk.cli import EXIT_UNDECIDED, print_verification
from kiosk.errors import KioskError
from kiosk.pipeline.session import Frame
from kiosk.pipeline.types import Verification
from kiosk.server import convert
from kiosk.server.calls import (
    CallMeta,
    Consent,
    DecisionEvent,
    GuidanceEvent,
    PromptEvent,
    SessionOpening,
    SessionUpdate,
    VerifyCall,
)
from kiosk.receipts import SignedReceipt, write_receipt_file
from kiosk.server.info import ServiceInfo
from kiosk.settings import ConsentSettings
from kiosk.v1 import kiosk_pb2, kiosk_pb2_grpc


class RemoteError(KioskError):
    """A call to the service ended with a gRPC error status."""

    def __init__(self, address: str, error: grpc.RpcError):
        code = error.code()
        super().__init__(f"{address}: {code.name}: {error.details()}")
        self.status_code = code.name


def _read_file(path: str | Path, what: str) -> bytes:
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


# --------------------------------------------------------------------------- CLI


def _client_from_args(args: argparse.Namespace) -> KioskClient:
    return KioskClient(
        args.server, ca=args.ca, cert=args.cert, key=args.key, timeout=args.timeout,
        service_config=getattr(args, "service_config", None),
    )


def _consent_from_args(args: argparse.Namespace) -> Consent:
    # Running the command is the operator's statement that the person accepted this text.
    return Consent(True, args.consent_version or ConsentSettings().accepted_versions[0])


def remote_verify(args: argparse.Namespace, id_photo: bytes, live_photos: list[bytes]) -> Verification:
    """`kiosk verify --server ADDR`: the same verification, computed by a running service."""
    with _client_from_args(args) as client:
        verification, receipt = client.verify_with_receipt(
            id_photo,
            live_photos,
            consent=_consent_from_args(args),
            target_fmr=args.target_fmr,
            request_id=uuid.uuid4().hex,
        )
    if getattr(args, "receipt_out", None):
        if receipt is None:
            raise KioskError(f"{args.server} sent no receipt (a service older than receipts?): nothing written")
        write_receipt_file(args.receipt_out, receipt)
    return verification


def _print_guidance(event: GuidanceEvent, as_json: bool) -> None:
    if as_json:
        items = [{"code": g.code, "message": g.message} for g in event.guidance]
        print(json.dumps({"event": "guidance", "frame_index": event.frame_index, "guidance": items}), flush=True)
    else:
        text = "; ".join(f"{g.code}: {g.message}" for g in event.guidance)
        print(f"frame {event.frame_index}: {text}", flush=True)


def _print_prompt(event: PromptEvent, as_json: bool) -> None:
    prompt = event.prompt
    if as_json:
        fields = {"step": prompt.step, "challenge": prompt.challenge.value, "deadline_ms": prompt.deadline_ms}
        print(json.dumps({"event": "prompt", **fields, "message": prompt.message}), flush=True)
    else:
        print(f"challenge {prompt.step}: {prompt.message} (by {prompt.deadline_ms} ms)", flush=True)


def run_session_command(args: argparse.Namespace) -> int:
    """`kiosk session --server ADDR --id-photo F FRAME...`: stream frames, print guidance, then the decision."""
    try:
        if not args.server:
            raise KioskError("kiosk session needs --server ADDR (host:port or unix:PATH)")
        if not args.fps > 0:
            raise KioskError(f"--fps must be positive, got {args.fps:g}")
        id_photo = _read_file(args.id_photo, "ID photo")
        frames = [
            Frame(_read_file(path, "frame"), timestamp_ms=round(i * 1000.0 / args.fps))
            for i, path in enumerate(args.frames)
        ]
        decision: Verification | None = None
        receipt: SignedReceipt | None = None
        with _client_from_args(args) as client:
            updates = client.session(
                id_photo,
                frames,
                args.fps,
                consent=_consent_from_args(args),
                target_fmr=args.target_fmr,
                request_id=uuid.uuid4().hex,
            )
            for update in updates:
                if isinstance(update, GuidanceEvent):
                    _print_guidance(update, args.json)
                elif isinstance(update, PromptEvent):
                    _print_prompt(update, args.json)
                elif isinstance(update, DecisionEvent):
                    decision, receipt = update.verification, update.receipt
        if decision is None:
            raise KioskError("the server ended the session without a decision")
        if getattr(args, "receipt_out", None):
            if receipt is None:
                raise KioskError(f"{args.server} sent no receipt (a service older than receipts?): nothing written")
            write_receipt_file(args.receipt_out, receipt)
        return print_verification(decision, args.json)
    except KioskError as e:
        print(f"kiosk: {e.message}", file=sys.stderr)
        return EXIT_UNDECIDED
