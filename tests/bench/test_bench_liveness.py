"""What passive liveness and the new quality checks add per live frame.

Each is one ``benchmark(fn, *args)`` call on a real 640x480 webcam frame whose face was
detected and aligned outside the timing. Untimed (run once) under the suite's
``--benchmark-disable``; for figures:

    python -m pytest tests/bench/test_bench_liveness.py -n 0 --benchmark-enable

``test_bench_passive_liveness`` is the whole per-frame cost of the passive check (crop,
resize, fr_liveness, softmax); ``test_bench_eye_state`` the eye model's two patches;
``test_bench_quality_live_frame`` every quality check of a live frame, eye model included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kiosk.pipeline.align import align_face
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.types import AlignedFace, BgrImage, FaceDetection, ImageRole


@pytest.fixture(scope="module")
def frame(faces: Path, verifier) -> tuple[BgrImage, FaceDetection, AlignedFace]:
    image = decode_image(sorted((faces / "nuaa__s01").iterdir())[-1].read_bytes(), verifier.image_limits)
    with Scratch() as scratch:
        face = verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)
    return image, face, align_face(image, face.landmarks)


def _stamp(benchmark, verifier) -> None:
    benchmark.extra_info["profile"] = verifier.profile.name
    benchmark.extra_info["threads"] = verifier.profile.onnxruntime.intra_op_threads
    benchmark.extra_info["models"] = {role: verifier.model_versions[role] for role in ("liveness", "eye_state")}


def test_bench_passive_liveness(benchmark, verifier, frame):
    _stamp(benchmark, verifier)
    image, face, _ = frame
    score = benchmark(verifier.passive_liveness.score, image, face)
    assert score >= verifier.liveness_calibration.threshold


def test_bench_eye_state(benchmark, verifier, frame):
    _stamp(benchmark, verifier)
    image, face, _ = frame
    openness = benchmark(verifier.eye_state.openness, image, face)
    assert max(openness.right, openness.left) > 0.5


def test_bench_quality_live_frame(benchmark, verifier, frame):
    _stamp(benchmark, verifier)
    checks = benchmark(verifier.assess_quality, *frame, ImageRole.LIVE_FRAME)
    assert all(check.passed for check in checks)
