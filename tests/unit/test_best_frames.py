"""Best-frame choice and fusion (kiosk.pipeline.compare), frame utility and who acts on a
check (kiosk.pipeline.quality), as plain functions on arrays."""

import numpy as np
import pytest

from kiosk.errors import LowQuality, NoFace
from kiosk.pipeline.compare import best_frames, cosine_similarity, fuse_embeddings, fuse_weighted, l2_normalise
from kiosk.pipeline.liveness import PresentationAttackSuspected
from kiosk.pipeline.quality import OPERATOR_CODES, failed, frame_utility, operator_signals
from kiosk.pipeline.types import QualityFinding
from kiosk.pipeline.verifier import usable_live_faces


def unit(seed, dim=16):
    return l2_normalise(np.random.default_rng(seed).normal(size=dim).astype(np.float32))


def test_best_frames_skips_unusable_frames_and_orders_by_utility():
    assert best_frames([0.2, 0.9, 0.5, 1.0], [True, True, True, False], 2) == (1, 2)
    assert best_frames([0.5, 0.5], [True, True], 3) == (0, 1)
    assert best_frames([0.9], [False], 3) == ()
    with pytest.raises(ValueError):
        best_frames([0.1, 0.2], [True], 1)


def test_weighted_fusion_follows_the_weights_and_falls_back_to_the_mean():
    a, b = unit(1), unit(2)
    assert cosine_similarity(fuse_weighted([a, b], [1.0, 0.0]), a) == pytest.approx(1.0, abs=1e-6)
    assert cosine_similarity(fuse_weighted([a, b], [0.0, 0.0]), fuse_embeddings([a, b])) == pytest.approx(1.0, abs=1e-6)
    heavy_a = fuse_weighted([a, b], [3.0, 1.0])
    assert cosine_similarity(heavy_a, a) > cosine_similarity(heavy_a, b)
    assert np.linalg.norm(heavy_a) == pytest.approx(1.0, abs=1e-5)


def finding(check, value, limit, passed=True, code=""):
    return QualityFinding(check, value, limit, passed, code)


def test_frame_utility_prefers_the_sharp_frontal_open_eyed_frame():
    good = (finding("sharpness", 400.0, 15.0), finding("yaw_ratio", 0.02, 0.5), finding("eye_open_probability", 0.9, 0.001))
    blurred = (finding("sharpness", 20.0, 15.0), finding("yaw_ratio", 0.02, 0.5), finding("eye_open_probability", 0.9, 0.001))
    blinking = (finding("sharpness", 400.0, 15.0), finding("yaw_ratio", 0.02, 0.5), finding("eye_open_probability", 0.01, 0.001))
    assert frame_utility(good) == pytest.approx(1.0)
    assert frame_utility(good) > frame_utility(blurred)
    assert frame_utility(good) > frame_utility(blinking)
    assert 0.0 <= frame_utility(blurred) < 0.2


def test_lighting_findings_are_operator_signals_not_refusals():
    bright = finding("brightness_max", 228.0, 220.0, False, "TOO_BRIGHT")
    closed = finding("eye_open_probability", 0.0, 0.001, False, "OPEN_EYES")
    assert failed((bright, closed)) == (closed,)
    assert operator_signals((bright, closed)) == (bright,)
    assert {"TOO_BRIGHT", "TOO_DARK"} == set(OPERATOR_CODES)


def test_a_multi_photo_verify_skips_bad_frames_but_never_an_attack():
    from kiosk.pipeline.analysis import AnalysedFace, CaptureProblem
    from kiosk.pipeline.types import FaceFinding, ImageRole

    def result(kind):
        finding = FaceFinding(ImageRole.LIVE_FRAME, 0, kind != "empty")
        if kind == "blink":
            return CaptureProblem(finding, LowQuality("low_quality", "the live frame is not usable: OPEN_EYES"))
        if kind == "empty":
            return CaptureProblem(finding, NoFace("no_face_in_live_frame", "no face"))
        if kind == "print":
            return CaptureProblem(finding, PresentationAttackSuspected(0.1))
        return AnalysedFace(finding, np.zeros(4, np.float32))

    good1, good2 = result("good"), result("good")
    assert usable_live_faces([result("blink"), good1, result("empty"), good2]) == [good1, good2]
    assert isinstance(usable_live_faces([result("blink"), result("empty")]), LowQuality)
    assert isinstance(usable_live_faces([good1, result("print")]), PresentationAttackSuspected)


def test_a_session_that_gives_up_names_the_guidance_most_frames_needed():
    from kiosk.pipeline.quality import commonest_refusal
    from kiosk.pipeline.types import FaceFinding, ImageRole

    blink = (finding("eye_open_probability", 0.0, 0.001, False, "OPEN_EYES"),)
    bright = (finding("brightness_max", 240.0, 220.0, False, "TOO_BRIGHT"),)
    frames = [FaceFinding(ImageRole.LIVE_FRAME, i, True, quality=blink if i % 3 else bright) for i in range(6)]
    assert commonest_refusal(frames) == "; most frames needed: OPEN_EYES (4 of 6)"
    assert commonest_refusal([FaceFinding(ImageRole.LIVE_FRAME, 0, False)]) == ""


def test_only_chip_sized_id_photos_are_compared_softened():
    from kiosk.pipeline.compare import CHIP_SIZED_INTER_EYE_PX, chip_sized, matched_degradation

    assert chip_sized(26.0) and not chip_sized(CHIP_SIZED_INTER_EYE_PX) and not chip_sized(45.0)
    edge = np.zeros((112, 112, 3), np.uint8)
    edge[:, 56:] = 255
    soft = matched_degradation(edge)
    assert soft.shape == edge.shape and soft.dtype == np.uint8
    assert 0 < soft[50, 55, 0] < 255 and soft[50, 10, 0] == 0
