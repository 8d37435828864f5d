"""The command line's surface: help for every argument, required options shown as such, strict JSON.

No model runs here (tests/integration/test_ops.py runs the commands on real faces).
"""

from __future__ import annotations

import argparse
import json
import math

import pytest

from kiosk import cli, cli_output
from kiosk.pipeline.types import (
    Box,
    Decision,
    FaceFinding,
    ImageRole,
    LivenessOutcome,
    OperatingPoint,
    QualityFinding,
    Verification,
)


def _subparsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_every_argument_of_every_command_has_help():
    missing = [
        f"{parser.prog} {action.dest}"
        for parser in _subparsers(cli.build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
        # `kiosk audit verify ...` hands its arguments to kiosk.offline.audit_verify's own parser, with its own help.
        and parser.prog != "kiosk audit verify"
    ]
    assert not missing, missing


def test_session_shows_server_as_required(capsys):
    # Joined into one line: argparse wraps long usages anywhere, "--server" and "ADDR" included.
    usage = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["session"].format_usage().split())
    assert "--server ADDR" in usage and "[--server ADDR]" not in usage
    with pytest.raises(SystemExit) as exited:
        cli.main(["session", "--id-photo", "id.jpg", "frame.jpg"])
    assert exited.value.code == 2
    assert "the following arguments are required: --server" in capsys.readouterr().err


def test_audit_help_lists_its_subcommands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["audit", "--help"])
    out = capsys.readouterr().out
    assert "{verify}" in out and "HMAC chain" in out and "rest" not in out
    assert cli.main(["audit", "verify", "--help"]) == 0
    assert "--key-file" in capsys.readouterr().out


def _verification(decision: Decision, reason: str = "") -> Verification:
    checks = (
        QualityFinding("inter_eye_px", 30.0, 20.0, True),
        # A check that is off has an infinite limit: JSON has no Infinity.
        QualityFinding("face_height_share", 0.4, math.inf, True),
        QualityFinding("sharpness", math.nan, 15.0, False, "HOLD_STILL"),
    )
    finding = FaceFinding(ImageRole.LIVE_FRAME, 0, True, Box(1, 2, 3, 4), 0.99, checks)
    return Verification(
        decision=decision,
        reason=reason,
        similarity=None,
        operating_point=OperatingPoint(1e-3, 0.64),
        findings=(finding,),
        message="the live frame is not usable: HOLD_STILL" if reason else "",
        liveness=LivenessOutcome(),
    )


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_verify_json_is_strict_and_carries_the_api_decision(capsys):
    assert cli_output.print_verification(_verification(Decision.RETRY, "low_quality"), as_json=True) == 2
    result = _strict(capsys.readouterr().out)
    assert (result["decision"], result["retry_reason"]) == ("retry", "low_quality")
    limits = [check["limit"] for check in result["findings"][0]["quality"]]
    assert limits == [20.0, None, 15.0]
    assert result["findings"][0]["quality"][2]["value"] is None

    assert cli_output.print_verification(_verification(Decision.MATCH), as_json=True) == 0
    result = _strict(capsys.readouterr().out)
    assert (result["decision"], result["retry_reason"]) == ("match", "")
    assert result["message"]


def test_verify_text_names_the_decision_and_the_reason(capsys):
    cli_output.print_verification(_verification(Decision.RETRY, "low_quality"), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["decision: retry", "retry_reason: low_quality"]
