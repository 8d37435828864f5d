"""Threshold-at-FMR and ROC arithmetic on synthetic score sets."""

import math

import numpy as np
import pytest

from kiosk.calibration import CalibratedPoint, Calibration
from kiosk.errors import UnknownOperatingPoint
from kiosk.offline.scores import (
    calibration_toml,
    equal_error_rate,
    roc_auc,
    score_report,
    threshold_at_fmr,
)
from kiosk.settings import from_mapping


def test_threshold_admits_at_most_the_target_share_of_impostors():
    impostor = np.linspace(0.0, 0.999, 1000)
    for fmr in (0.1, 0.01, 0.001):
        t = threshold_at_fmr(impostor, fmr)
        assert np.mean(impostor >= t) <= fmr
        # and it is the lowest such threshold: one step below lets one more impostor in
        assert np.mean(impostor >= np.nextafter(t, -np.inf)) > fmr - 1e-12 or t == impostor.min()


def test_with_too_few_impostors_the_threshold_sits_above_the_highest():
    impostor = np.array([0.1, 0.2, 0.35])
    t = threshold_at_fmr(impostor, 1e-3)
    assert t > 0.35 and np.mean(impostor >= t) == 0


def test_ties_never_exceed_the_target():
    impostor = np.array([0.5] * 10 + [0.1] * 90)
    t = threshold_at_fmr(impostor, 0.05)
    assert np.mean(impostor >= t) <= 0.05


def test_auc_and_eer_of_separated_and_identical_sets():
    assert roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    same = np.array([0.1, 0.5, 0.9])
    assert math.isclose(roc_auc(same, same), 0.5)
    eer, _ = equal_error_rate(np.array([0.9, 0.8, 0.7, 0.3]), np.array([0.1, 0.2, 0.35, 0.75]))
    assert math.isclose(eer, 0.25)


def test_report_flags_too_few_impostors():
    rng = np.random.default_rng(1)
    report = score_report(rng.normal(0.7, 0.1, 500), rng.normal(0.2, 0.1, 900))
    by_fmr = {r.target_fmr: r for r in report.at_fmr}
    assert by_fmr[1e-2].enough_impostors
    assert not by_fmr[1e-3].enough_impostors and not by_fmr[1e-4].enough_impostors


def test_calibration_file_round_trips():
    import tomllib

    calibration = Calibration(
        embedder="e@1", pairs="pairs.csv", created="2026-11-22", auc=0.99, eer=0.05,
        operating_point=(CalibratedPoint(1e-3, 0.61, 0.0, 0.8, 900, 900, "few impostors"),),
    )
    loaded = from_mapping(Calibration, tomllib.loads(calibration_toml(calibration)))
    assert loaded == calibration
    assert loaded.operating_point_for(0.001).threshold == 0.61
    with pytest.raises(UnknownOperatingPoint, match="target FMR 0.05 is not calibrated; calibrated: 0.001"):
        loaded.operating_point_for(0.05)


def test_operating_points_take_the_strictest_subset_and_stay_monotonic():
    from kiosk.offline.scores import strictest_operating_points

    rng = np.random.default_rng(5)
    easy = rng.normal(0.1, 0.1, 40_000)
    hard = rng.normal(0.35, 0.1, 5_000)  # enough for 1e-3, too few for 1e-4
    genuine = rng.normal(0.7, 0.1, 1_000)
    pooled = np.concatenate([easy, hard])
    points = strictest_operating_points(genuine, pooled, {"easy": easy, "hard": hard}, (1e-2, 1e-3, 1e-4))
    by_fmr = {p.target_fmr: p for p in points}
    assert by_fmr[1e-3].threshold == threshold_at_fmr(hard, 1e-3)
    assert np.mean(hard >= by_fmr[1e-3].threshold) <= 1e-3
    assert "hard" in by_fmr[1e-3].note
    assert by_fmr[1e-2].threshold <= by_fmr[1e-3].threshold <= by_fmr[1e-4].threshold
