"""What the live session's active liveness adds per frame: the face mesh and the measures.

Each is one ``benchmark(fn, *args)`` call on a real 640x480 webcam frame whose face was
detected outside the timing. Untimed (run once) under the suite's
``--benchmark-disable``; for figures:

    python -m pytest tests/bench/test_bench_session.py -n 0 --benchmark-enable

``test_bench_mesh_measures`` is the whole per-frame cost of the challenges (crop,
mesh inference, landmarks back to image pixels, EAR/MAR/yaw/pitch); the state machine
itself is a few comparisons. Compare with ``test_bench_detect`` in
test_bench_pipeline.py, which every frame pays anyway.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiosk.pipeline.challenge import measure
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.session import MeshMeasurer
from kiosk.pipeline.types import BgrImage, FaceDetection, ImageRole


@pytest.fixture(scope="module")
def frame(faces: Path, verifier) -> tuple[BgrImage, FaceDetection]:
    image = decode_image(sorted((faces / "nuaa__s01").iterdir())[-1].read_bytes(), verifier.image_limits)
    with Scratch() as scratch:
        face = verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)
    return image, face


def _stamp(benchmark, verifier) -> None:
    benchmark.extra_info["profile"] = verifier.profile.name
    benchmark.extra_info["threads"] = verifier.profile.onnxruntime.intra_op_threads
    benchmark.extra_info["face_mesh"] = verifier.face_mesh.entry.version


def test_bench_face_mesh(benchmark, verifier, frame):
    _stamp(benchmark, verifier)
    result = benchmark(verifier.face_mesh.landmarks, *frame)
    assert result.points.shape == (468, 3) and result.face_score > 0.5


def test_bench_mesh_measures(benchmark, verifier, frame):
    _stamp(benchmark, verifier)
    measures = benchmark(MeshMeasurer(verifier.face_mesh).measure, *frame)
    assert measures is not None and 0.1 < measures.ear < 0.5


def test_bench_measures_only(benchmark, verifier, frame):
    points = verifier.face_mesh.landmarks(*frame).points
    _stamp(benchmark, verifier)
    measures = benchmark(measure, points)
    assert np.isfinite([measures.yaw, measures.pitch]).all()
