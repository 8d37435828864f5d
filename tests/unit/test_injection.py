"""kiosk.pipeline.injection: the aligned-crop correlation and the copy rule, on crops generated here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiosk.pipeline import injection


def _crop(seed: int) -> np.ndarray:
    """A 112x112 BGR crop with smooth structure (a face-sized pattern, not a face)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC)


def test_a_crop_correlates_fully_with_itself_and_not_with_another():
    crop = _crop(1)
    assert injection.aligned_correlation(crop, crop.copy()) == pytest.approx(1.0)
    assert injection.aligned_correlation(crop, _crop(2)) < injection.COPY_MIN_CORRELATION


def test_re_encoding_resampling_and_a_colour_shift_keep_a_copy_correlated():
    crop = _crop(3)
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    copy = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    copy = cv2.resize(cv2.resize(copy, (40, 40), interpolation=cv2.INTER_AREA), (112, 112), interpolation=cv2.INTER_CUBIC)
    copy = np.clip(copy.astype(np.int16) + np.array([25, -10, 15]), 0, 255).astype(np.uint8)
    assert injection.aligned_correlation(crop, copy) >= injection.COPY_MIN_CORRELATION


def test_a_flat_crop_has_no_correlation():
    flat = np.full((112, 112, 3), 128, np.uint8)
    assert injection.aligned_correlation(flat, _crop(4)) == 0.0


@pytest.mark.parametrize(
    ("similarity", "correlation", "copy"),
    [
        (injection.COPY_MIN_SIMILARITY, injection.COPY_MIN_CORRELATION, True),
        (0.99, 0.99, True),
        # Video frames of one person: pixels as close as a copy, identity features not.
        (0.878, 0.996, False),
        # A look-alike photo: close identity, different pixels.
        (0.95, 0.6, False),
        (injection.COPY_MIN_SIMILARITY - 1e-6, 1.0, False),
    ],
)
def test_a_copy_needs_both_identity_and_pixels_to_match(similarity, correlation, copy):
    assert injection.is_copy(similarity, correlation) is copy
