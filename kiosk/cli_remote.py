"""The CLI's remote commands: `kiosk verify --server`, `kiosk session`, on ``KioskClient``.

Apart from ``kiosk.cli`` (output and exit codes) and the client, nothing here loads the
pipeline: a remote command never imports numpy, OpenCV or ONNX Runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from kiosk.cli_output import EXIT_UNDECIDED, exit_status, finding_dict, json_text, print_verification, verification_dict
from kiosk.client import KioskClient, read_file
from kiosk.domain import Frame, Verification
from kiosk.errors import KioskError
from kiosk.receipts import SignedReceipt, write_receipt_file
from kiosk.server.calls import Consent, DecisionEvent, FrameEvent, GuidanceEvent, PromptEvent
from kiosk.settings import ConsentSettings


def _client_from_args(args: argparse.Namespace) -> KioskClient:
    return KioskClient(
        args.server,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        timeout=args.timeout,
        server_name=args.server_name,
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
    _write_receipt(args, receipt)
    return verification


def _write_receipt(args: argparse.Namespace, receipt: SignedReceipt | None) -> None:
    """`--receipt-out FILE`: the decision's signed receipt, as the service sent it."""
    if getattr(args, "receipt_out", None):
        if receipt is None:
            raise KioskError(f"{args.server} sent no receipt (a service older than receipts?): nothing written")
        write_receipt_file(args.receipt_out, receipt)


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
        id_photo = read_file(args.id_photo, "ID photo")
        frames = [
            Frame(read_file(path, "frame"), timestamp_ms=round(i * 1000.0 / args.fps))
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
                elif isinstance(update, FrameEvent) and args.json:
                    finding = finding_dict(update.finding) if update.finding else None
                    event = {"event": "frame_result", "frame_index": update.frame_index, "finding": finding}
                    print(json_text(event, None), flush=True)
                elif isinstance(update, DecisionEvent):
                    decision, receipt = update.verification, update.receipt
        if decision is None:
            raise KioskError("the server ended the session without a decision")
        _write_receipt(args, receipt)
        if args.json:
            # One JSON object per line, like the events before it.
            print(json_text({"event": "decision", **verification_dict(decision)}, None), flush=True)
            return exit_status(decision)
        return print_verification(decision, args.json)
    except KioskError as e:
        print(f"kiosk: {e.message}", file=sys.stderr)
        return EXIT_UNDECIDED
