"""What a caller is told: the liveness established and the similarity disclosed (kiosk.server)."""

from __future__ import annotations

import pytest

from kiosk.pipeline.types import Decision, LivenessOutcome, LivenessStatus, OperatingPoint, Verification
from kiosk.server.convert import established
from kiosk.server.policy import disclosed
from kiosk.v1 import kiosk_pb2 as pb


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (LivenessOutcome(LivenessStatus.PASSED, "", 0.99, ("blink", "turn_left")), pb.LivenessOutcome.ACTIVE_SESSION),
        (LivenessOutcome(LivenessStatus.PASSED, "", 0.99), pb.LivenessOutcome.PASSIVE_STILLS),
        (LivenessOutcome(LivenessStatus.FAILED, "passive", 0.2), pb.LivenessOutcome.NOTHING),
        (LivenessOutcome(LivenessStatus.FAILED, "wrong_action", 0.99, ("blink",)), pb.LivenessOutcome.NOTHING),
        (LivenessOutcome(), pb.LivenessOutcome.NOTHING),
    ],
)
def test_established_says_what_the_checks_showed(outcome, expected):
    assert established(outcome) == expected


def _verification(decision: Decision, similarity: float) -> Verification:
    return Verification(decision, "", similarity, OperatingPoint(1e-3, 0.64), (), {}, {})


@pytest.mark.parametrize(
    ("disclosure", "decision", "expected"),
    [
        ("exact", Decision.NO_MATCH, 0.612345),
        ("rounded", Decision.NO_MATCH, 0.61),
        ("match_only", Decision.NO_MATCH, None),
        ("match_only", Decision.MATCH, 0.61),
    ],
)
def test_disclosed_similarity(disclosure, decision, expected):
    assert disclosed(_verification(decision, 0.612345), disclosure).similarity == expected
