"""Consent gate and audit trail of the service: who may be verified, and the record of every outcome.

Every decision the service hands out, and every refusal for lack of consent, is first
appended to the audit log (when one is configured); if that append fails the caller
gets INTERNAL instead of an unrecorded decision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kiosk.audit import AuditLog, AuditRecord
from kiosk.errors import ActiveSessionRequired, ConsentRequired
from kiosk.pipeline.types import Decision, LivenessOutcome, LivenessStatus, Verification
from kiosk.server.calls import CallMeta
from kiosk.settings import Settings

# A refusal for lack of consent happens before any liveness check.
LIVENESS_NOT_PERFORMED = LivenessStatus.NOT_PERFORMED.value
# Longest version string quoted back in a refusal message.
MAX_QUOTED_CHARS = 64


# How much of the similarity a caller is told (ServiceSettings.remote_similarity, local_similarity).
SIMILARITY_DISCLOSURES = ("exact", "rounded", "match_only")
# Decimals of a rounded similarity: as the audit log records it.
SIMILARITY_DECIMALS = 2


@dataclass(frozen=True)
class Caller:
    """Who made a call, for the audit trail."""

    # Client certificate subject under mutual TLS, "local" on a plain local listener.
    identity: str
    device_id: str
    # Reached the service over mutual TLS (from the network), not the kiosk's own screen.
    remote: bool = False


def disclosed(verification: Verification, disclosure: str) -> Verification:
    """The verification as a caller may see it: the similarity exact, rounded, or only on a MATCH.

    An exact score on every answer is an oracle: a caller can adjust a synthetic face
    until the score climbs past the threshold (Adler 2004). Rounding to 2 decimals
    flattens the slope it climbs; ``match_only`` leaves nothing to climb on a non-match.
    """
    similarity = verification.similarity
    if similarity is None or disclosure == "exact":
        return verification
    if disclosure == "match_only" and verification.decision is not Decision.MATCH:
        return dataclasses.replace(verification, similarity=None)
    return dataclasses.replace(verification, similarity=round(similarity, SIMILARITY_DECIMALS))


def audit_liveness(outcome: LivenessOutcome) -> str:
    """The audit record's liveness field: "passed", "failed:<check>" or "not_performed" (no score)."""
    if outcome.status is LivenessStatus.FAILED:
        return f"{outcome.status.value}:{outcome.failed_check}"
    return outcome.status.value


class ServicePolicy:
    def __init__(self, settings: Settings, audit: AuditLog | None):
        self.accepted_versions = settings.consent.accepted_versions
        self.default_device_id = settings.service.device_id
        self.remote_similarity = settings.service.remote_similarity
        self.local_similarity = settings.service.local_similarity
        self.require_active_session_remote = settings.service.require_active_session_remote
        self.audit = audit

    def caller(self, identity: str, meta: CallMeta, remote: bool = False) -> Caller:
        return Caller(identity, meta.device_id or self.default_device_id, remote)

    def for_caller(self, caller: Caller, verification: Verification) -> Verification:
        """What of ``verification`` this caller is told (the audit keeps its own record)."""
        return disclosed(verification, self.remote_similarity if caller.remote else self.local_similarity)

    def admit_stills(self, caller: Caller) -> None:
        """Raise ``ActiveSessionRequired`` for a Verify (still photos) the settings do not take from this caller."""
        if caller.remote and self.require_active_session_remote:
            raise ActiveSessionRequired(
                "this service verifies remote callers only in a live session with challenges (VerifySession): "
                "a still photo sent over the network cannot show that a person is present"
            )

    def admit(self, caller: Caller, meta: CallMeta, model_versions: dict[str, str]) -> None:
        """Raise ``ConsentRequired`` (after auditing the refusal) unless consent is valid."""
        consent = meta.consent
        if not consent.granted:
            reason = "consent_missing"
            message = "consent is required: the person has not granted consent (consent.granted is false)"
        elif consent.text_version not in self.accepted_versions:
            reason = "consent_version_unknown"
            quoted = consent.text_version[:MAX_QUOTED_CHARS]
            message = (
                f"consent text version {quoted!r} is not accepted by this service; "
                f"accepted: {', '.join(self.accepted_versions)}"
            )
        else:
            return
        if self.audit is not None:
            self.audit.append(
                request_id=meta.request_id,
                client_identity=caller.identity,
                device_id=caller.device_id,
                event="refused",
                decision="refused",
                reason=reason,
                threshold=None,
                target_fmr=meta.target_fmr,
                model_versions=model_versions,
                consent_version=consent.text_version[:MAX_QUOTED_CHARS],
                liveness=LIVENESS_NOT_PERFORMED,
            )
        raise ConsentRequired(message)

    def record_cancelled(self, caller: Caller, meta: CallMeta, model_versions: dict[str, str]) -> None:
        """Audit a call the client cancelled before its answer: no decision was given, so none is recorded."""
        if self.audit is None:
            return
        self.audit.append(
            request_id=meta.request_id,
            client_identity=caller.identity,
            device_id=caller.device_id,
            event="cancelled",
            decision="cancelled",
            reason="client_cancelled",
            threshold=None,
            target_fmr=meta.target_fmr,
            model_versions=model_versions,
            consent_version=meta.consent.text_version,
            liveness=LIVENESS_NOT_PERFORMED,
        )

    def record(self, caller: Caller, meta: CallMeta, verification: Verification) -> str:
        """Append the decision to the audit log; its audit id, or "" without a log."""
        record = self.append_decision(caller, meta, verification)
        return record.audit_id if record is not None else ""

    def append_decision(self, caller: Caller, meta: CallMeta, verification: Verification) -> AuditRecord | None:
        """Append the decision to the audit log; the record (its seq and mac go into the receipt), or None."""
        if self.audit is None:
            return None
        point = verification.operating_point
        return self.audit.append(
            request_id=meta.request_id,
            client_identity=caller.identity,
            device_id=caller.device_id,
            event="decision",
            decision=verification.decision.value,
            reason=verification.reason,
            similarity=verification.similarity,
            threshold=point.threshold,
            target_fmr=point.target_fmr,
            model_versions=verification.model_versions,
            consent_version=meta.consent.text_version,
            liveness=audit_liveness(verification.liveness),
        )
