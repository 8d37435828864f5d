"""Per-stage and whole-verify benchmarks of the in-process pipeline, for 1, 2 and 4 threads.

Each is one ``benchmark(fn, *args)`` call on inputs prepared outside the timing.
Untimed (run once) under the suite's ``--benchmark-disable``; for figures:

    python -m pytest tests/bench/test_bench_pipeline.py -n 0 --benchmark-enable --benchmark-json=bench.json

Every result is stamped with the hardware profile, thread count and model versions.

``test_bench_session_frame`` is one camera frame through a running live session (the
ID photo analysed once at the start, outside the timing): decode, detect, align,
quality, face mesh and challenge state, embed. Its ``extra_info`` gives frames per
second (1 / median) when timed, the figure the session budget (``session_fps``) is about.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from kiosk.pipeline.align import align_face
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.session import Frame, SessionLimits, open_session
from kiosk.pipeline.types import Decision, ImageRole
from kiosk.pipeline.verifier import Verifier
from kiosk.runtime.profile import select_profile
from kiosk.settings import HardwareSettings, Settings

THREADS = (1, 2, 4)


@dataclasses.dataclass(frozen=True)
class Inputs:
    id_photo: bytes
    live_photo: bytes


@pytest.fixture(scope="module")
def inputs(faces: Path) -> Inputs:
    # A card-like portrait (LFW, 250x250) and a 640x480 webcam frame of another sitting.
    photos = sorted((faces / "nuaa__s01").iterdir())
    return Inputs(photos[0].read_bytes(), photos[-1].read_bytes())


@pytest.fixture(scope="module", params=THREADS, ids=lambda n: f"{n}threads")
def threaded_verifier(request, tmp_path_factory) -> Verifier:
    base = select_profile("auto")
    profile = dataclasses.replace(
        base, onnxruntime=dataclasses.replace(base.onnxruntime, intra_op_threads=request.param)
    )
    path = tmp_path_factory.mktemp("profile") / f"{base.name}-{request.param}t.toml"
    path.write_text(_profile_toml(profile))
    return Verifier.load(Settings(hardware=HardwareSettings(profile=str(path))))


def _profile_toml(profile) -> str:
    ort = profile.onnxruntime
    det = profile.detector
    return (
        f'name = "{profile.name}"\n'
        f"[onnxruntime]\nintra_op_threads = {ort.intra_op_threads}\ninter_op_threads = {ort.inter_op_threads}\n"
        f'graph_optimization = "{ort.graph_optimization}"\nexecution_mode = "{ort.execution_mode}"\n'
        f"enable_cpu_mem_arena = {str(ort.enable_cpu_mem_arena).lower()}\n"
        f"[detector]\nmax_input_side = {det.max_input_side}\nmin_face_px = {det.min_face_px}\n"
    )


def _stamp(benchmark, verifier: Verifier) -> None:
    benchmark.extra_info["profile"] = verifier.profile.name
    benchmark.extra_info["threads"] = verifier.profile.onnxruntime.intra_op_threads
    benchmark.extra_info["models"] = verifier.model_versions


def test_bench_verify(benchmark, threaded_verifier, inputs, percentiles):
    _stamp(benchmark, threaded_verifier)
    result = benchmark(threaded_verifier.verify, inputs.id_photo, [inputs.live_photo])
    percentiles(benchmark)
    assert result.decision is Decision.MATCH


def test_bench_decode(benchmark, verifier, inputs):
    _stamp(benchmark, verifier)
    image = benchmark(decode_image, inputs.live_photo, verifier.image_limits)
    assert image.shape == (480, 640, 3)


def test_bench_detect_live_frame(benchmark, threaded_verifier, inputs):
    _stamp(benchmark, threaded_verifier)
    image = decode_image(inputs.live_photo, threaded_verifier.image_limits)

    def detect():
        with Scratch() as scratch:
            return threaded_verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)

    face = benchmark(detect)
    assert face.box.width > 60


def test_bench_detect_id_photo(benchmark, verifier, inputs):
    _stamp(benchmark, verifier)
    image = decode_image(inputs.id_photo, verifier.image_limits)

    def detect():
        with Scratch() as scratch:
            return verifier.subject_face(scratch, image, ImageRole.ID_PHOTO)

    assert benchmark(detect).score > 0.9


def test_bench_align(benchmark, verifier, inputs):
    _stamp(benchmark, verifier)
    image = decode_image(inputs.live_photo, verifier.image_limits)
    with Scratch() as scratch:
        face = verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)
    assert benchmark(align_face, image, face.landmarks).shape == (112, 112, 3)


def test_bench_embed(benchmark, threaded_verifier):
    _stamp(benchmark, threaded_verifier)
    face = np.random.default_rng(0).integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    embedding = benchmark(threaded_verifier.embedder.embed, face)
    assert embedding.shape == (512,)


# Frames 33 ms apart (30 fps camera timestamps); the challenge window is made long enough
# that a still photo never times the session out, and the session never gives up.
FRAME_INTERVAL_MS = 33


def test_bench_session_frame(benchmark, verifier, inputs, stamp, percentiles):
    challenges = dataclasses.replace(verifier.settings.liveness_challenge, step_window_ms=10**9)
    limits = SessionLimits(max_frames=10**9)
    timestamps = itertools.count(1_000, FRAME_INTERVAL_MS)
    with open_session(verifier, inputs.id_photo, limits=limits, challenges=challenges) as session:
        assert not session.done, "the ID photo must be usable"

        def one_frame():
            return session.add_frame(Frame(inputs.live_photo, next(timestamps)))

        stamp(benchmark, verifier)
        result = benchmark(one_frame)
        percentiles(benchmark)
        if benchmark.stats is not None:
            benchmark.extra_info["frames_per_s"] = round(1.0 / benchmark.stats.stats.median, 2)
            benchmark.extra_info["budget_frames_per_s"] = verifier.profile.budgets.session_fps
    assert result.finding is not None and result.finding.face_found
