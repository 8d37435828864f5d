"""End-to-end acceptance: the report command on a small real set, its transactions decided
exactly as Verify decides them, and decisions that survive bad frames.

Real models, real captures from the shared set (read in place); every variation is
generated in code (kiosk.offline.acceptance).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from kiosk.cli import main
from kiosk.offline.acceptance import (
    VARIATIONS,
    analyse_face,
    blur,
    chip_photo,
    decide_transaction,
    encode_capture,
    exposure,
    run_report,
)
from kiosk.pipeline.session import open_session, Frame
from kiosk.pipeline.types import Decision, ImageRole
from kiosk.settings import LivenessChallengeSettings

NUAA = ("nuaa__s01/0001_00_00_01_213.jpg", "nuaa__s01/0001_00_00_02_395.jpg", "nuaa__s01/0001_00_00_01_0.jpg")
OTHER = "nuaa__s02"


@pytest.fixture(scope="module")
def captures(faces):
    other = sorted((faces / OTHER).glob("*.jpg"))[0]
    return [(faces / p).read_bytes() for p in NUAA], other.read_bytes()


def varied(encoded: bytes, fn) -> bytes:
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    return encode_capture(fn(image))


def test_the_report_on_a_small_real_set_counts_every_transaction(verifier, faces):
    report = run_report(
        verifier, faces, subsets=("nuaa_live",), variations=("exposure_x1.8",), variation_every=2,
        impostors_per_condition=50, max_genuine=6, chip=True, attacks=True,
    )
    groups = {key: figures.as_dict() for key, figures in report.groups.items()}
    captured = groups[("nuaa_live", "as_captured")]
    assert captured["genuine"] == 6 and captured["impostor"] > 0
    # Every genuine transaction ends in exactly one of: match, no match, capture or PAD refusal.
    c = captured["counts"]
    assert c["genuine_match"] + c["genuine_no_match"] + c["genuine_capture_refused"] + c["genuine_pad_refused"] == 6
    assert groups[("nuaa_live", "exposure_x1.8")]["genuine"] == 3
    assert groups[("nuaa_live", "chip_path")]["genuine"] == 6
    assert captured["fmr"] == 0.0
    pad = report.pad
    assert pad["bpcer_counts"][1] > 60 and "print" in pad["apcer"]
    assert pad["apcer"]["print"]["accepted"] == 0
    # The attacks also meet each camera variation.
    varied_pad = report.pad_by_condition["exposure_x1.8"]
    assert varied_pad["apcer"]["print"]["presentations"] > 30


def test_noisy_prints_are_stopped_before_liveness_in_the_report(verifier, faces):
    report = run_report(
        verifier, faces, subsets=("nuaa_live",), variations=("noise_sigma20",), variation_every=6,
        impostors_per_condition=10, max_genuine=2, chip=False, attacks=True,
    )
    noisy = report.pad_by_condition["noise_sigma20"]
    prints = noisy["apcer"]["print"]
    # Sensor noise this strong carried 15 of 38 prints through passive liveness before the
    # noise check (NOISY_IMAGE); now every one is refused by it, before liveness is asked.
    assert prints["accepted"] == 0
    assert noisy["capture_refused"]["print"] == prints["presentations"]


def test_the_report_command_prints_json(faces, capsys):
    status = main([
        "acceptance-report", "--root", str(faces), "--subset", "phone_selfie_live", "--max-genuine", "3",
        "--variations", "", "--no-chip", "--no-attacks", "--json",
    ])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(g["subset"], g["condition"]): g for g in report["groups"]}
    assert rows[("phone_selfie_live", "as_captured")]["genuine"] == 3
    assert report["target_fmr"] == pytest.approx(1e-3)


def test_report_command_refuses_an_unknown_variation(faces, capsys):
    assert main(["acceptance-report", "--root", str(faces), "--variations", "sepia"]) == 2
    assert "unknown variation" in capsys.readouterr().err


@pytest.mark.parametrize("live_variation", ["as_captured", "exposure_x1.8", "blur_0.025"])
def test_a_transaction_is_decided_as_verify_decides_it(verifier, captures, live_variation):
    (a, b, _), stranger = captures
    live = b if live_variation == "as_captured" else varied(b, VARIATIONS[live_variation])
    threshold = verifier.operating_point(None).threshold
    for id_photo in (a, stranger):
        decision, _, similarity = decide_transaction(
            analyse_face(verifier, id_photo, ImageRole.ID_PHOTO), analyse_face(verifier, live, ImageRole.LIVE_FRAME),
            threshold,
        )
        verification = verifier.verify(id_photo, [live])
        expected = verification.reason or verification.decision.value
        assert decision == expected
        if similarity is not None:
            assert similarity == pytest.approx(verification.similarity, abs=1e-5)


def test_a_multi_photo_verify_decides_on_the_good_frame_when_another_is_motion_blurred(verifier, captures):
    (a, b, _), _ = captures
    smeared = varied(b, lambda im: blur(im, 0.04))
    alone = verifier.verify(a, [smeared])
    assert alone.decision is Decision.RETRY and alone.reason in ("low_quality", "no_face_in_live_frame")
    both = verifier.verify(a, [smeared, b])
    assert both.decision is Decision.MATCH


def test_lighting_signals_the_operator_but_does_not_refuse_a_matching_face(verifier, captures):
    (a, _, same_session), stranger = captures
    # x3.4 takes this dim webcam frame's face centre past the 220 grey-level limit.
    bright = varied(same_session, lambda im: exposure(im, 3.4))
    verification = verifier.verify(a, [bright])
    signals = [q for f in verification.findings for q in f.quality if q.code == "TOO_BRIGHT"]
    assert signals and not signals[0].passed
    assert verification.decision is Decision.MATCH
    # A non-match under the same light is a lighting retry: never a match.
    impostor = verifier.verify(stranger, [bright])
    assert impostor.decision is not Decision.MATCH


def test_a_session_with_motion_frames_still_reaches_a_decision(verifier, captures):
    (a, b, c), _ = captures
    smeared = [varied(x, lambda im: blur(im, 0.04)) for x in (b, c)]
    frames = [smeared[0], smeared[1], b, smeared[0], c, smeared[1], b]
    no_challenges = LivenessChallengeSettings(enabled=False)
    with open_session(verifier, a, challenges=no_challenges) as session:
        result = None
        for i, data in enumerate(frames):
            result = session.add_frame(Frame(data, timestamp_ms=100 * (i + 1)))
            if result.verification is not None:
                break
        assert result.verification is not None
        assert result.verification.decision is Decision.MATCH


@pytest.mark.parametrize("grey", [False, True])
def test_a_chip_photo_transaction_is_decided_as_verify_decides_it(verifier, captures, grey):
    (a, b, _), stranger = captures
    point = verifier.operating_point(None)
    # A chip-sized ID photo is decided at the chip calibration's threshold, lower than the main one.
    threshold = verifier.operating_point(None, chip_sized=True).threshold
    assert threshold < point.threshold
    for source in (a, stranger):
        image = cv2.imdecode(np.frombuffer(source, np.uint8), cv2.IMREAD_COLOR)
        box = analyse_face(verifier, source, ImageRole.ID_PHOTO).box
        chip = chip_photo(image, box, grey=grey)
        reference = analyse_face(verifier, chip, ImageRole.ID_PHOTO)
        assert reference.chip_sized
        live = analyse_face(verifier, b, ImageRole.LIVE_FRAME, soften=reference.chip_sized)
        decision, _, similarity = decide_transaction(reference, live, threshold)
        verification = verifier.verify(chip, [b])
        assert decision == (verification.reason or verification.decision.value)
        assert similarity == pytest.approx(verification.similarity, abs=1e-5)
        assert verification.operating_point.threshold == threshold
