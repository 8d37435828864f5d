"""Passive liveness and eye-state wrappers with stand-in sessions; the ISO/IEC 30107-3 arithmetic; outcomes.

The stand-in sessions record the tensor a wrapper feeds and return fixed logits, so the
crop, colour order, scaling and output index are checked without running a model. The
bundled manifest supplies the real input specs.
"""

import dataclasses

import numpy as np
import pytest

from kiosk import cli_output
from kiosk.errors import ConfigError
from kiosk.liveness_calibration import load_liveness_calibration
from kiosk.offline.liveness_report import (
    Presentation,
    calibrate,
    liveness_toml,
    pad_figures,
    species_of,
    threshold_at_bpcer,
    upper_bound_95,
)
from kiosk.pipeline.eyes import EyeStateModel, eye_patch_boxes
from kiosk.pipeline.liveness import PASSIVE_CHECK, PassiveLiveness, PresentationAttackSuspected, crop_window
from kiosk.pipeline.types import (
    Box,
    Decision,
    FaceDetection,
    LivenessOutcome,
    LivenessStatus,
    OperatingPoint,
    Verification,
)
from kiosk.pipeline.verifier import refused_liveness
from kiosk.errors import NoFace
from kiosk.runtime.manifest import load_manifest
from kiosk.server.policy import audit_liveness
from kiosk.settings import bundled_models_dir

MANIFEST = load_manifest(bundled_models_dir() / "manifest.toml")


class StandInSession:
    """Records the fed tensor; answers with fixed logits."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype=np.float32)
        self.fed: np.ndarray | None = None

    def run(self, outputs, feeds):
        (tensor,) = feeds.values()
        self.fed = tensor.copy()
        return [self.logits.copy()]


def face_at(x, y, width, height) -> FaceDetection:
    eyes = np.array([[x + 0.3 * width, y + 0.4 * height], [x + 0.7 * width, y + 0.4 * height]])
    rest = np.array([[x + 0.5 * width, y + 0.6 * height], [x + 0.35 * width, y + 0.8 * height],
                     [x + 0.65 * width, y + 0.8 * height]])  # fmt: skip
    return FaceDetection(Box(x, y, width, height), 0.99, np.vstack([eyes, rest]).astype(np.float32))


# --------------------------------------------------------------------------- crop


def test_crop_is_a_square_of_2_7_box_heights_about_the_box_centre():
    left, top, side = crop_window(Box(900, 700, 80, 100), 2000, 2000)
    assert side == 270
    assert (left + side / 2, top + side / 2) == (940, 750)


def test_crop_is_shifted_back_inside_the_image():
    assert crop_window(Box(0, 0, 80, 100), 2000, 2000) == (0, 0, 270)
    assert crop_window(Box(1950, 1950, 40, 50), 2000, 2000)[:2] == (2000 - 135, 2000 - 135)


def test_crop_is_clamped_to_the_image_when_the_face_is_large():
    # A kiosk frame: 200-px face in 640x480 -> 540 px wanted, 480 available.
    assert crop_window(Box(220, 150, 170, 200), 640, 480) == (65, 0, 480)


# --------------------------------------------------------------------------- wrappers


def test_passive_liveness_feeds_bgr_0_255_nchw_and_reads_index_0_as_live():
    session = StandInSession([[2.0, 0.0, -1.0]])
    liveness = PassiveLiveness(session, MANIFEST.entry("liveness"))
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    image[..., 0] = 200  # blue
    score = liveness.score(image, face_at(270, 150, 100, 120))
    assert session.fed.shape == (1, 3, 128, 128)
    # BGR, not normalised: channel 0 is the blue plane at 200.
    assert session.fed[0, 0].mean() == pytest.approx(200) and session.fed[0, 2].max() == 0
    expected = np.exp(2.0) / (np.exp(2.0) + 1 + np.exp(-1.0))
    assert score == pytest.approx(expected)


def test_eye_state_feeds_two_grey_patches_scaled_to_0_1_and_reads_index_1_as_open():
    session = StandInSession([[4.0, -4.0], [-4.0, 4.0]])
    eyes = EyeStateModel(session, MANIFEST.entry("eye_state"))
    image = np.full((480, 640, 3), 255, dtype=np.uint8)
    openness = eyes.openness(image, face_at(200, 100, 200, 240))
    assert session.fed.shape == (2, 1, 24, 24)
    assert session.fed.max() == pytest.approx(1.0)
    # Patch 0 is the image-left eye (the subject's right): closed by its logits; patch 1 open.
    assert openness.right < 0.01 and openness.left > 0.99


def test_eye_patches_are_squares_of_0_75_inter_eye_distances_on_the_eye_points():
    face = face_at(200, 100, 200, 240)  # eyes 80 px apart
    boxes = eye_patch_boxes(face.landmarks)
    assert boxes[:, 2] - boxes[:, 0] + 1 == pytest.approx([60, 60])
    assert (boxes[:, 0] + boxes[:, 2] + 1) / 2 == pytest.approx(face.landmarks[:2, 0])


# --------------------------------------------------------------------------- ISO/IEC 30107-3 arithmetic


def test_attack_types_map_to_three_species_and_unknown_ones_stop_the_report():
    assert [species_of(t) for t in ("print_curved", "screen_tablet", "print_cutout")] == [
        "print",
        "screen_replay",
        "mask_or_cutout",
    ]
    with pytest.raises(ConfigError, match="silicone_mask"):
        species_of("silicone_mask")


def test_upper_bound_95():
    assert upper_bound_95(0, 38) == pytest.approx(1 - 0.05 ** (1 / 38), rel=1e-6)
    assert upper_bound_95(0, 0) == 1.0
    assert 2 / 3 < upper_bound_95(2, 3) < 1.0
    # Thousands of trials with hundreds of errors (a report over generated variations) once
    # overflowed a float in comb(); the bound sits just above the observed rate.
    assert 400 / 3130 < upper_bound_95(400, 3130) < 0.14


def test_threshold_at_bpcer_rejects_at_most_the_target_share():
    bona_fide = np.linspace(0.5, 1.0, 20)
    threshold = threshold_at_bpcer(bona_fide, 0.10)
    assert np.count_nonzero(bona_fide < threshold) == 2


def test_pad_figures_count_attacks_accepted_at_or_above_the_threshold():
    figures = pad_figures(
        np.array([0.999, 0.998, 0.5]),
        {"print": np.array([0.1, 0.995]), "screen_replay": np.array([0.9]), "mask_or_cutout": np.array([])},
        0.995,
    )
    assert (figures.bona_fide, figures.bona_fide_rejected) == (3, 1)
    assert (figures.rate("print").accepted, figures.rate("print").apcer) == (1, 0.5)
    assert figures.rate("screen_replay").apcer == 0.0
    assert np.isnan(figures.rate("mask_or_cutout").apcer)


def test_a_written_calibration_loads_back_and_is_refused_for_another_model(tmp_path):
    presentations = [
        Presentation("real/a.jpg", "real", "", 0.9999),
        Presentation("real/b.jpg", "real", "", 0.7),
        Presentation("attack/c.jpg", "attack", "print", 0.01),
        Presentation("attack/d.jpg", "attack", "mask_or_cutout", 0.999),
        Presentation("attack/e.jpg", "attack", "screen_replay", None),
    ]
    calibration = calibrate(presentations, 0.995, "fr-liveness@1", "spoof/labels.csv", "2026-01-01", 'says "why"')
    path = tmp_path / "liveness.toml"
    path.write_text(liveness_toml(calibration))
    loaded = load_liveness_calibration(path, "fr-liveness@1")
    assert (loaded.threshold, loaded.rationale, loaded.attacks_without_face) == (0.995, 'says "why"', 1)
    assert [(r.species, r.attacks, r.accepted) for r in loaded.shipped.species] == [
        ("print", 1, 0),
        ("screen_replay", 0, 0),
        ("mask_or_cutout", 1, 1),
    ]
    assert loaded.shipped.bona_fide_rejected == 1 and loaded.shipped.bpcer == 0.5
    assert [p.target_bpcer for p in loaded.at_bpcer] == [0.05, 0.10]
    with pytest.raises(ConfigError, match="run kiosk liveness-report"):
        load_liveness_calibration(path, "fr-liveness@2")
    path.write_text(liveness_toml(dataclasses.replace(calibration, threshold=0.9)))
    with pytest.raises(ConfigError, match="not for the threshold in force"):
        load_liveness_calibration(path, "fr-liveness@1")


def test_the_bundled_calibration_is_for_the_bundled_model():
    entry = MANIFEST.entry("liveness")
    calibration = load_liveness_calibration(bundled_models_dir() / "liveness.toml", entry.version)
    assert 0.5 < calibration.threshold < 1.0
    assert calibration.shipped.bona_fide > 0 and calibration.rationale


# --------------------------------------------------------------------------- outcomes


def test_a_suspected_attack_fails_the_passive_check_and_other_refusals_perform_none():
    assert refused_liveness(PresentationAttackSuspected(0.12)) == LivenessOutcome(
        LivenessStatus.FAILED, PASSIVE_CHECK, 0.12
    )
    assert refused_liveness(NoFace("no_face_in_live_frame", "no face")).status is LivenessStatus.NOT_PERFORMED


def test_audit_and_json_carry_the_outcome_without_the_score_in_the_audit():
    failed = LivenessOutcome(LivenessStatus.FAILED, PASSIVE_CHECK, 0.12)
    assert audit_liveness(failed) == "failed:passive"
    assert audit_liveness(LivenessOutcome(LivenessStatus.PASSED, passive_score=0.999)) == "passed"
    verification = Verification(
        Decision.RETRY, "presentation_attack_suspected", None, OperatingPoint(1e-3, 0.6), (), liveness=failed
    )
    assert cli_output.verification_dict(verification)["liveness"] == {
        "status": "failed",
        "failed_check": "passive",
        "passive_score": 0.12,
    }
    assert cli_output.liveness_text(verification) == "failed: passive (passive score 0.1200)"
