"""Each model's inference alone, at the shapes one Verify of a 640x480 webcam frame uses, with its arithmetic.

One ``benchmark`` per model on tensors prepared outside the timing from a real frame:
p-net over the frame's whole pyramid (the live-frame path: min face 48 px), r-net on the
p-net candidates, o-net on the r-net survivors, the embedder on the aligned face,
passive liveness on its crop, the eye model on two patches, the face mesh on its crop.

``extra_info`` carries the FLOPs of that work (``hardware/flops.py``: 2 x the MACs of
every Conv, Gemm and MatMul at those shapes) and, when timed (``--benchmark-enable``),
the achieved GFLOP/s (FLOPs / median time) against this machine's float32 peak (a large
numpy matmul at the profile's thread count):

    python -m pytest tests/bench/test_bench_models.py -n 0 --benchmark-enable --benchmark-json=models.json
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardware.flops import model_flops
from kiosk.pipeline.align import align_face
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.detect import crop_batch, pyramid_scales
from kiosk.pipeline.eyes import eye_patch_boxes
from kiosk.pipeline.landmarks import mesh_crop_matrix
from kiosk.pipeline.liveness import crop_window
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.tensors import to_input_tensor
from kiosk.pipeline.types import ImageRole
from kiosk.pipeline.verifier import Verifier

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass
class Work:
    """One model's share of a verify: its session, output names and input tensors (one per run)."""

    session: object
    version: str
    input_name: str
    outputs: list[str]
    tensors: list[np.ndarray]
    gflop: float

    def run(self) -> None:
        for tensor in self.tensors:
            self.session.run(self.outputs, {self.input_name: tensor})


def _work(session, entry, batches: list[np.ndarray]) -> Work:
    tensors = [to_input_tensor(b, entry.input) for b in batches]
    gflop = sum(model_flops(MODELS_DIR / entry.file, t.shape).gflop for t in tensors)
    return Work(session, entry.version, entry.input.name, list(entry.outputs), tensors, gflop)


@pytest.fixture(scope="module")
def workloads(faces: Path, verifier: Verifier) -> dict[str, Work]:
    image = decode_image(sorted((faces / "nuaa__s01").iterdir())[-1].read_bytes(), verifier.image_limits)
    with Scratch() as scratch:
        face = verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)
    detector = verifier.detector
    min_face = verifier.min_face_px(image, verifier.profile.detector.min_face_px)
    height, width = image.shape[:2]
    levels = [
        cv2.resize(image, (math.ceil(width * s), math.ceil(height * s)), interpolation=cv2.INTER_AREA)[np.newaxis]
        for s in pyramid_scales(height, width, min_face, detector.thresholds.pyramid_factor)
    ]
    proposals = detector._proposals(image, min_face, detector.thresholds)
    refined = detector._refine(image, proposals, detector.thresholds)
    left, top, side = crop_window(face.box, width, height)
    live = verifier.passive_liveness
    live_crop = cv2.resize(image[top : top + side, left : left + side], (live.size, live.size), interpolation=cv2.INTER_AREA)
    mesh = verifier.face_mesh
    mesh_crop = cv2.warpAffine(image, mesh_crop_matrix(face, mesh.size), (mesh.size, mesh.size))
    eyes = verifier.eye_state
    nets = {
        "mtcnn_pnet": (detector.pnet.session, detector.pnet.entry, levels),
        "mtcnn_rnet": (detector.rnet.session, detector.rnet.entry, [crop_batch(image, proposals, 24)]),
        "mtcnn_onet": (detector.onet.session, detector.onet.entry, [crop_batch(image, refined, 48)]),
        "embedder": (verifier.embedder.session, verifier.embedder.entry, [align_face(image, face.landmarks)[np.newaxis]]),
        "liveness": (live.session, live.entry, [live_crop[np.newaxis]]),
        "eye_state": (eyes.session, eyes.entry, [crop_batch(image, eye_patch_boxes(face.landmarks), eyes.patch_size)]),
        "face_mesh": (mesh.session, mesh.entry, [mesh_crop[np.newaxis]]),
    }
    return {role: _work(*net) for role, net in nets.items()}


@pytest.mark.parametrize(
    "role", ["mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder", "liveness", "eye_state", "face_mesh"]
)
def test_bench_model(benchmark, role, workloads, verifier, stamp, peak_gflops):
    work = workloads[role]
    stamp(
        benchmark, verifier, role=role, model=work.version,
        input_shapes=[list(t.shape) for t in work.tensors], gflop=round(work.gflop, 4),
    )
    benchmark(work.run)
    if benchmark.stats is not None:
        achieved = work.gflop / benchmark.stats.stats.median
        benchmark.extra_info["median_ms"] = round(benchmark.stats.stats.median * 1000, 3)
        benchmark.extra_info["gflops_per_s"] = round(achieved, 2)
        benchmark.extra_info["peak_gflops_per_s"] = round(peak_gflops, 1)
        benchmark.extra_info["share_of_peak"] = round(achieved / peak_gflops, 3)
    assert work.gflop > 0
