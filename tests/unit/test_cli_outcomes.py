"""The UI builders' list of outcomes is complete: every code the code can emit is documented.

The codes are collected from the source itself (every retry reason given to an
Undecidable or a RETRY result, every guidance constant, every liveness check name), so a
new code that nobody documents fails here; the README table and the proto comments must
carry each code of kiosk/outcomes.py.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from kiosk import outcomes
from kiosk.pipeline import challenge, liveness, quality, session
from kiosk.pipeline.types import Decision, ImageRole, OperatingPoint, Verification

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted((REPO / "kiosk").rglob("*.py"))
# A reason handed to an Undecidable (or a subclass's super().__init__) or to a RETRY result.
REASON_SITES = re.compile(
    r"(?:\b(?:NoFace|MultipleFaces|LowQuality|Undecidable)|super\(\)\.__init__)\(\s*(f?\"[^\"]+\"|[A-Z_]+)\s*,"
    r"|Decision\.RETRY,\s*(\"[^\"]+\"|[A-Z_]+)\s*,"
)


def _module(path: Path):
    return importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))


def emitted_reasons() -> set[str]:
    reasons = set()
    for path in SOURCES:
        text = path.read_text()
        for match in REASON_SITES.finditer(text):
            token = match.group(1) or match.group(2)
            if token.startswith("f\""):
                # f"no_face_in_{role.value}": one code per image role.
                template = token[2:-1]
                reasons |= {re.sub(r"\{role\.value\}", role.value, template) for role in ImageRole}
            elif token.startswith("\""):
                reasons.add(token[1:-1])
            else:
                value = getattr(_module(path), token)
                if re.fullmatch(r"[a-z_]+", value):  # a reason, not an upper-case message constant
                    reasons.add(value)
    return reasons


def test_the_source_scan_finds_the_known_reasons():
    # The scan itself has teeth: it sees reasons made in four different ways.
    assert {
        "no_face_in_id_photo",  # f-string per role (detect.py)
        "multiple_faces_in_live_frame",  # literal (detect.py)
        "presentation_attack_suspected",  # constant through super().__init__ (liveness.py)
        "liveness_failed",  # constant in a RETRY result (session.py)
        "no_usable_live_frames",  # literal in a RETRY result (session.py)
    } <= emitted_reasons()


def test_every_retry_reason_the_code_can_emit_is_documented():
    assert emitted_reasons() <= set(outcomes.RETRY_REASONS), emitted_reasons() - set(outcomes.RETRY_REASONS)


def test_reason_names_use_the_api_nouns():
    # id_photo and live_frame, as ImageRole and the proto name the images.
    for reason in outcomes.RETRY_REASONS:
        assert "live_photo" not in reason and "id_frame" not in reason, reason


def guidance_codes() -> set[str]:
    constants = {
        value
        for module in (quality, session)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z_]+", value) and value == name
    }
    return constants


def test_every_guidance_code_is_documented_with_the_text_the_session_sends():
    codes = guidance_codes()
    assert {"NO_FACE", "MOVE_CLOSER", "OPEN_EYES", "GOOD_FRAME"} <= codes
    assert codes <= set(outcomes.GUIDANCE_CODES), codes - set(outcomes.GUIDANCE_CODES)
    for code, (_, text) in outcomes.GUIDANCE_CODES.items():
        assert session.guidance_message(code) == text, code


def test_every_failed_liveness_check_is_documented():
    checks = {
        value
        for name, value in vars(challenge).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z_]+", value)
    }
    checks |= {session.MULTIPLE_FACES, session.IDENTITY_CHANGED, liveness.PASSIVE_CHECK}
    assert {"challenge_timeout", "nonce_mismatch", "passive"} <= checks
    assert checks <= set(outcomes.FAILED_CHECKS), checks - set(outcomes.FAILED_CHECKS)


@pytest.mark.parametrize("table", ["RETRY_REASONS", "GUIDANCE_CODES", "FAILED_CHECKS"])
def test_readme_and_proto_list_every_code(table):
    readme = (REPO / "README.md").read_text()
    proto = (REPO / "proto" / "kiosk" / "v1" / "kiosk.proto").read_text()
    for code, (meaning, text) in getattr(outcomes, table).items():
        assert f"| `{code}` | {meaning} | {text} |" in readme, code
        assert f"//   {code}: {meaning}." in proto, code


@pytest.mark.parametrize("decision", list(Decision))
def test_every_decision_has_a_message(decision):
    verification = Verification(
        decision=decision,
        reason="low_quality" if decision is Decision.RETRY else "",
        similarity=None,
        operating_point=OperatingPoint(1e-3, 0.6),
        findings=(),
        message="the live frame is not usable: TOO_DARK" if decision is Decision.RETRY else "",
    )
    assert verification.message
    if decision is not Decision.RETRY:
        assert verification.message == outcomes.DECISION_MESSAGES[decision.value]
