"""Passive presentation-attack detection with the real models on the shared spoof set.

The shipped figures (models/liveness.toml) must be what the pipeline measures today,
so `kiosk liveness-report` and this test agree; a Verify whose live photo is a print
held to the webcam is a RETRY (never a MATCH) with the passive check failed, in process
and over gRPC with its audit record. Photos are read from the shared folder, never copied.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.liveness_calibration import PadFigures
from kiosk.offline.liveness_report import calibrate, read_spoof_labels, score_presentations
from kiosk.pipeline.liveness import ATTACK_SUSPECTED, PASSIVE_CHECK
from kiosk.pipeline.types import Decision, LivenessStatus
from kiosk.v1 import kiosk_pb2 as pb

from .rpc import CONSENT_VERSION, TIMEOUT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def print_of_s01(faces: Path) -> Path:
    """A hand-held print of nuaa__s01's portrait, photographed by the same webcam as the live frames."""
    return sorted((faces / "spoof" / "attack").glob("nuaa_s01_*.jpg"))[0]


def counts(figures: PadFigures) -> tuple:
    """The counts behind a table row (the file stores rates rounded to 6 digits)."""
    return (
        figures.bona_fide,
        figures.bona_fide_rejected,
        [(rate.species, rate.attacks, rate.accepted) for rate in figures.species],
    )


def test_shipped_figures_are_what_the_pipeline_measures(verifier, faces):
    shipped = verifier.liveness_calibration
    presentations = score_presentations(verifier.passive_score_file, faces, read_spoof_labels(faces))
    measured = calibrate(presentations, shipped.threshold, shipped.model, shipped.data, shipped.created, "")
    assert counts(measured.shipped) == counts(shipped.shipped)
    assert [counts(p.figures) for p in measured.at_bpcer] == [counts(p.figures) for p in shipped.at_bpcer]
    assert (measured.attacks_without_face, measured.bona_fide_without_face) == (
        shipped.attacks_without_face,
        shipped.bona_fide_without_face,
    )
    # Prints and screen replays are the attacks the passive model can stop.
    assert shipped.shipped.rate("print").apcer <= 0.05
    assert shipped.shipped.rate("screen_replay").apcer <= 0.05
    assert shipped.shipped.bpcer <= 0.05


def test_a_print_as_live_photo_is_never_a_match(verifier, photos, print_of_s01):
    result = verifier.verify(photos.nuaa_id.read_bytes(), [print_of_s01.read_bytes()])
    assert (result.decision, result.reason) == (Decision.RETRY, ATTACK_SUSPECTED)
    assert result.similarity is None
    assert result.liveness.status is LivenessStatus.FAILED
    assert result.liveness.failed_check == PASSIVE_CHECK
    assert result.liveness.passive_score < verifier.liveness_calibration.threshold


def test_one_attack_among_live_photos_fails_the_verification(verifier, photos, print_of_s01):
    live = [photos.nuaa_frames[0].read_bytes(), print_of_s01.read_bytes()]
    result = verifier.verify(photos.nuaa_id.read_bytes(), live)
    assert (result.decision, result.liveness.status) == (Decision.RETRY, LivenessStatus.FAILED)


def test_live_photos_pass_and_report_the_lowest_score(verifier, photos, faces):
    # Live frames of another webcam session than the "ID photo": frames of the same
    # one-second clip are near-copies of it, which the digital-copy check refuses
    # (kiosk.pipeline.injection; cosine 0.90-0.94 there against 0.71-0.75 across sessions).
    other_session = sorted((faces / "nuaa__s01").glob("0001_00_00_02_*.jpg"))[:2]
    live = [p.read_bytes() for p in other_session]
    result = verifier.verify(photos.nuaa_id.read_bytes(), live)
    assert result.decision is Decision.MATCH
    assert result.liveness.status is LivenessStatus.PASSED
    scores = [verifier.passive_score_file(p) for p in other_session]
    assert result.liveness.passive_score == pytest.approx(min(scores))
    assert "liveness" in result.timings_ms


def test_the_id_photo_is_never_liveness_checked(verifier, photos, print_of_s01):
    """A print of the portrait is what an ID photo is: as the ID side it must still match."""
    result = verifier.verify(print_of_s01.read_bytes(), [photos.nuaa_frames[0].read_bytes()])
    assert result.decision is Decision.MATCH
    assert result.liveness.status is LivenessStatus.PASSED


def test_grpc_verify_reports_the_failed_check_and_audits_it(kiosk, photos, print_of_s01):
    request = pb.VerifyRequest(
        request_id="pad-1",
        id_photo=photos.nuaa_id.read_bytes(),
        live_photos=[print_of_s01.read_bytes()],
        consent=pb.Consent(granted=True, text_version=CONSENT_VERSION),
    )
    response = kiosk.stub().Verify(request, timeout=TIMEOUT)
    assert (response.decision, response.retry_reason) == (pb.VerifyResponse.RETRY, ATTACK_SUSPECTED)
    assert response.liveness.status == pb.LivenessOutcome.FAILED
    assert response.liveness.failed_check == PASSIVE_CHECK
    assert response.liveness.HasField("passive_score") and not response.HasField("similarity")
    [record] = kiosk.audit_records()
    assert (record["decision"], record["reason"], record["liveness"]) == ("retry", ATTACK_SUSPECTED, "failed:passive")
