"""What the verification commands print, shared by the local (`kiosk.cli`) and remote
(`kiosk.cli_remote`) commands: text and strict JSON forms of a verification, and exit codes.

Its own module so neither command module imports the other.
"""

from __future__ import annotations

import dataclasses
import json

from kiosk.domain import Decision, Verification

EXIT_MATCH, EXIT_NO_MATCH, EXIT_UNDECIDED = 0, 1, 2


def _finite(value):
    """``value`` with every non-finite float replaced by None: JSON has no Infinity or NaN."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259) for every `--json`: a limit that is off (infinite) or a rate
    that is undefined (NaN) becomes null, which JavaScript's JSON.parse accepts."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def finding_dict(finding) -> dict:
    """One image's FaceFinding as JSON: role, index, face box, detection score, quality checks."""
    return {
        "role": finding.role.value,
        "index": finding.index,
        "face_found": finding.face_found,
        "box": dataclasses.asdict(finding.box) if finding.box else None,
        "detection_score": finding.detection_score,
        "quality": [dataclasses.asdict(q) for q in finding.quality],
    }


def verification_dict(verification: Verification) -> dict:
    """The JSON form printed by `kiosk verify --json` and `kiosk session --json`."""
    return {
        # As the API: "match", "no_match" or "retry", and for "retry" the reason (README, "Outcomes").
        "decision": verification.decision.value,
        "retry_reason": verification.reason,
        "message": verification.message,
        "similarity": verification.similarity,
        "threshold": verification.operating_point.threshold,
        "target_fmr": verification.operating_point.target_fmr,
        "model_versions": verification.model_versions,
        "timings_ms": verification.timings_ms,
        "findings": [finding_dict(f) for f in verification.findings],
        "liveness": {
            "status": verification.liveness.status.value,
            "failed_check": verification.liveness.failed_check,
            "passive_score": verification.liveness.passive_score,
        },
    }


def print_verification(verification: Verification, as_json: bool, out=None) -> int:
    """Print a verification and return the exit status it maps to."""
    if as_json:
        print(json_text(verification_dict(verification)), file=out)
    else:
        print(f"decision: {verification.decision.value}", file=out)
        if verification.decision is Decision.RETRY:
            print(f"retry_reason: {verification.reason}", file=out)
        if verification.message:
            print(f"message: {verification.message}", file=out)
        if verification.similarity is not None:
            print(f"similarity: {verification.similarity:.4f}", file=out)
        point = verification.operating_point
        print(f"threshold: {point.threshold:.4f} (target FMR {point.target_fmr:g})", file=out)
        print(f"liveness: {liveness_text(verification)}", file=out)
        print("models: " + ", ".join(f"{k}={v}" for k, v in sorted(verification.model_versions.items())), file=out)
        print("timings_ms: " + ", ".join(f"{k}={v:.1f}" for k, v in verification.timings_ms.items()), file=out)
    return exit_status(verification)


def exit_status(verification: Verification) -> int:
    """0 match, 1 no match, 2 no decision possible."""
    return {Decision.MATCH: EXIT_MATCH, Decision.NO_MATCH: EXIT_NO_MATCH}.get(verification.decision, EXIT_UNDECIDED)


def liveness_text(verification: Verification) -> str:
    """"passed (passive score 0.9990)", "failed: passive (passive score 0.0123)", "not_performed"."""
    liveness = verification.liveness
    text = liveness.status.value + (f": {liveness.failed_check}" if liveness.failed_check else "")
    if liveness.passive_score is not None:
        text += f" (passive score {liveness.passive_score:.4f})"
    return text
