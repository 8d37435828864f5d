"""The ``kiosk.v1.Kiosk`` servicer: convert the request, call the pipeline, convert the result.

Every method runs inside ``status.mapped_errors``, so errors become statuses in one
place. The servicer owns the photos it reads from a request: protobuf (upb) hands out
a new ``bytes`` copy of a field on every access, so the copies the call works on are
put in a ``Scratch`` and zeroed in place when the call (or, in a session, the frame)
is done, on success and on error. The protobuf message's own copy lives in its arena
until gRPC drops the message; glibc overwrites it then (``kiosk.runtime.hardening``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from kiosk.errors import Cancelled, InvalidRequest
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.session import LiveSession, open_session
from kiosk.pipeline.verifier import Verifier
from kiosk.receipts import ReceiptIssuer, SignedReceipt
from kiosk.server import convert, status
from kiosk.server.calls import CallMeta
from kiosk.server.info import collect_info
from kiosk.server.policy import Caller, ServicePolicy
from kiosk.server.timing import CallDeadline, StreamReader
from kiosk.settings import Settings
from kiosk.v1 import kiosk_pb2 as pb
from kiosk.v1 import kiosk_pb2_grpc

LOCAL_IDENTITY = "local"
# The audit trail's text fields hold at most 256 characters.
MAX_IDENTITY_CHARS = 256


class VerifierSlot:
    """The loaded verifier; until it is set, calls are UNAVAILABLE (health says NOT_SERVING)."""

    def __init__(self) -> None:
        self._verifier: Verifier | None = None

    def set(self, verifier: Verifier) -> None:
        self._verifier = verifier

    def get(self) -> Verifier:
        verifier = self._verifier
        if verifier is None:
            raise status.ServiceUnavailable("the service is starting: models are still loading")
        return verifier


def client_identity(context: grpc.ServicerContext) -> str:
    """The mutual-TLS client certificate's subject, or "local" on a plain listener."""
    auth = context.auth_context()
    # "x509_subject" is the full distinguished name; the common name is a fallback.
    for key in ("x509_subject", "x509_common_name"):
        values = auth.get(key)
        if values:
            return values[0].decode("utf-8", "replace")[:MAX_IDENTITY_CHARS]
    return LOCAL_IDENTITY


class KioskServicer(kiosk_pb2_grpc.KioskServicer):
    def __init__(
        self, settings: Settings, policy: ServicePolicy, verifier: VerifierSlot, receipts: ReceiptIssuer | None = None
    ):
        self.settings = settings
        self.policy = policy
        self.verifier = verifier
        # Signs each decision's receipt (kiosk.receipts); None only in tests that build a bare servicer.
        self.receipts = receipts

    def _record(self, method: str, caller: Caller, meta: CallMeta, verification) -> tuple[str, SignedReceipt | None]:
        """Audit the decision, then sign its receipt naming the audit record: (audit id, receipt)."""
        record = self.policy.append_decision(caller, meta, verification)
        receipt = None
        if self.receipts is not None:
            receipt = self.receipts.issue(method, meta.request_id, caller.device_id, verification, record)
        return (record.audit_id if record is not None else ""), receipt

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        with status.mapped_errors(context, "Verify"), Scratch() as payloads:
            verifier = self.verifier.get()
            deadline = CallDeadline.start(context, self.settings.service.call_deadline_s)
            call = convert.verify_call_from_proto(request, self.settings.limits.max_live_photos)
            for photo in (call.id_photo, *call.live_photos):
                payloads.keep_payload(photo)
            caller = self._caller(context, call.meta)
            self.policy.admit_stills(caller)
            self.policy.admit(caller, call.meta, verifier.model_versions)
            deadline.check("before analysis")
            # Checked as each stage starts: a call the client cancelled stops there.
            timer = StageTimer(cancelled=lambda: not context.is_active())
            try:
                verification = verifier.verify(call.id_photo, call.live_photos, call.meta.target_fmr, timer=timer)
                if not context.is_active():
                    raise Cancelled("the client cancelled the call during its last stage")
            except Cancelled:
                # A call whose deadline passed is no longer active either: that is not a cancellation.
                deadline.check("during analysis")
                self.policy.record_cancelled(caller, call.meta, verifier.model_versions)
                raise
            # A stage cannot be interrupted midway; an answer past the deadline is not given.
            deadline.check("during analysis")
            audit_id, receipt = self._record("Verify", caller, call.meta, verification)
            return convert.verification_to_proto(
                self.policy.for_caller(caller, verification), call.meta.request_id, audit_id, receipt
            )

    def VerifySession(
        self, requests: Iterator[pb.SessionRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.SessionEvent]:
        with status.mapped_errors(context, "VerifySession"):
            verifier = self.verifier.get()
            deadline = CallDeadline.start(context, self.settings.service.session_deadline_s)
            with StreamReader(requests) as reader:
                caller, meta, session = self._open_session(verifier, reader, deadline, context)
                audit = AuditOnce()
                # gRPC may never resume (or close) the handler of a stream the client cancelled
                # while it waits at an event: the call's end is recorded from gRPC's own callback.
                cancelled = lambda: audit.claim() and self.policy.record_cancelled(  # noqa: E731
                    caller, meta, verifier.model_versions
                )
                if not context.add_callback(cancelled):
                    cancelled()
                with session, self._audit_cancellation(caller, meta, verifier, audit):
                    while not session.done:
                        message = reader.read(
                            deadline, f"frame {session.frames_seen}", self.settings.service.frame_idle_timeout_s
                        )
                        if message is None:
                            raise InvalidRequest(
                                f"the session ended after {session.frames_seen} frame(s), before a decision: "
                                f"{session.waiting_for()}"
                            )
                        frame = convert.frame_from_proto(message)
                        # Only the latest frame is needed: its copy is zeroed before the next is read.
                        with Scratch() as payload:
                            payload.keep_payload(frame.data)
                            result = session.add_frame(frame, wipe_payload=True)
                        deadline.check(f"analysing frame {result.frame_index}")
                        yield from convert.frame_events(result)
                    verification = session.verification
                    if not context.is_active() or not audit.claim():
                        raise Cancelled("the client cancelled the session before its decision")
                    audit_id, receipt = self._record("VerifySession", caller, meta, verification)
            yield convert.decision_event(self.policy.for_caller(caller, verification), meta.request_id, audit_id, receipt)

    def _open_session(
        self, verifier: Verifier, reader: StreamReader, deadline: CallDeadline, context: grpc.ServicerContext
    ) -> tuple[Caller, CallMeta, LiveSession]:
        """Read the start message, check consent and analyse the ID photo.

        A separate function so the start message and its ID photo are dropped as soon
        as the session holds what it needs.
        """
        opening = convert.session_opening_from_proto(
            reader.read(deadline, "the start message", self.settings.service.first_message_timeout_s)
        )
        # The session keeps what it derives from the ID photo, not the encoded photo: this copy is zeroed here.
        with Scratch() as payload:
            payload.keep_payload(opening.id_photo)
            caller = self._caller(context, opening.meta)
            self.policy.admit(caller, opening.meta, verifier.model_versions)
            session = open_session(
                verifier,
                opening.id_photo,
                opening.meta.target_fmr,
                challenges=self.settings.liveness_challenge,
                wipe_payload=True,
            )
        return caller, opening.meta, session

    @contextmanager
    def _audit_cancellation(
        self, caller: Caller, meta: CallMeta, verifier: Verifier, audit: "AuditOnce"
    ) -> Iterator[None]:
        """A session the client cancels after it opened is audited as cancelled (it got no decision).

        Exactly once, whichever sees the end first: this handler, or gRPC's end-of-call
        callback; a session that ends with an error the client was sent records nothing.
        """
        try:
            yield
        except (Cancelled, status.ClientCancelled, GeneratorExit):
            # GeneratorExit: gRPC dropped the stream of a cancelled call at one of its events.
            if audit.claim():
                self.policy.record_cancelled(caller, meta, verifier.model_versions)
            raise
        except BaseException:
            audit.claim()
            raise

    def _caller(self, context: grpc.ServicerContext, meta: CallMeta) -> Caller:
        identity = client_identity(context)
        # Only a mutual-TLS listener gives an identity other than "local": such a caller is remote.
        return self.policy.caller(identity, meta, remote=identity != LOCAL_IDENTITY)

    def GetInfo(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        with status.mapped_errors(context, "GetInfo"):
            signer = self.receipts.signer if self.receipts is not None else None
            return convert.info_to_proto(collect_info(self.settings, self.verifier.get(), signer))


class AuditOnce:
    """One audit record per session: the decision, or the cancellation, never both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = False

    def claim(self) -> bool:
        """True for the first caller only."""
        with self._lock:
            taken, self._taken = self._taken, True
            return not taken
