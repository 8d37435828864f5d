"""What each tuning step buys: interleaved A/B timings of inference settings and model variants.

    python -m hardware.tune EXPERIMENT [EXPERIMENT ...] [--rounds 30] [--profile x86] [--json out.json]

Experiments (the first variant of each is the baseline its ratios are taken against):

  models        detection and embedding with the models of --baseline-dir vs --candidate-dir
                (e.g. the decomposed-PReLU graphs of an older build vs the fused ones)
  threads       intra-op threads 1, 2, 3, 4
  spinning      the profile's intra-op threads spinning between runs (onnxruntime's default) vs sleeping
  optimisation  graph optimisation level all / extended / basic
  execution     sequential vs parallel execution mode (2 inter-op threads)
  arena         CPU memory arena off (zero retention) vs on
  mem-pattern   memory pattern planning on vs off: steady state, and p-net's first run at a new size
  io-binding    embedder via session.run vs IOBinding onto a preallocated output
  int8          static INT8 (QDQ, per channel, calibrated on real faces) vs float32, per model
  detector-size live-frame detector input side and smallest face (profile [detector])
  downscale     a 1280x960 frame: detect on the full frame vs on a 640 px copy
  roi           a live frame: full-frame detection vs detection in a window around the last box
  floor         GFLOP of one Verify by model, its floor at the float32 matmul peak, and the Verify's time
  pyramid       30 shared photos per path: whole pyramid vs coarse to fine with the subject rule
  tracking      session frames: full-frame detection of every frame vs the FaceTracker's windows

Variants are built once, then timed round-robin (A, B, C, A, B, C, ...; the order rotates
each round) so that load from other processes falls on all of them alike. Each row gives
the median and best wall-clock time per call, the median process CPU time per call, and
the median of the per-round ratios to the baseline with their interquartile range (the
noise). Inputs are real photos from the shared faces (``KIOSK_FACES_DIR``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kiosk.pipeline  # noqa: F401  (sets OpenCV's decoder ceilings before cv2 loads)

import cv2
import numpy as np
import onnxruntime as ort

from kiosk.pipeline.align import align_face
from kiosk.pipeline.decode import ImageLimits, decode_image
from kiosk.pipeline.detect import MtcnnDetector, crop_batch, pyramid_scales
from kiosk.pipeline.embed import Embedder
from kiosk.pipeline.tensors import to_input_tensor
from kiosk.pipeline.types import BgrImage, FaceDetection
from kiosk.pipeline.subject import ID_PHOTO_MARGIN, scaled_for_detection
from kiosk.runtime.manifest import Manifest, load_manifest
from kiosk.runtime.profile import HardwareProfile, OrtSettings, select_profile
from kiosk.runtime.sessions import session_options
from kiosk.settings import LimitSettings, QualitySettings

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
DETECTOR_ROLES = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
# The service's default image limits and face-size rules (kiosk/settings.py).
_LIMITS = LimitSettings()
LIMITS = ImageLimits(_LIMITS.max_image_bytes, _LIMITS.max_image_pixels, _LIMITS.max_image_side)
QUALITY = QualitySettings()


def min_face_px(image: BgrImage, floor_px: float, scale: float = 1.0) -> float:
    """Smallest face searched for in ``image`` (as SubjectRules.min_face_px), times the detection scale."""
    return max(floor_px, QUALITY.min_face_fraction * min(image.shape[:2])) * scale


def faces_dir() -> Path:
    return Path(os.environ.get("KIOSK_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))


@dataclass(frozen=True)
class Row:
    experiment: str
    variant: str
    median_ms: float
    best_ms: float
    cpu_ms: float
    ratio: float  # median of per-round wall-clock ratios to the baseline
    ratio_q1: float
    ratio_q3: float


def interleaved(experiment: str, variants: dict[str, Callable[[], object]], rounds: int) -> list[Row]:
    """Time ``variants`` round-robin; the first is the baseline."""
    names = list(variants)
    for fn in variants.values():
        fn()  # first-run costs (allocation, planning) are not what is compared here
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    base = wall[names[0]]
    rows = []
    for name in names:
        ratios = sorted(w / b for w, b in zip(wall[name], base))
        q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        rows.append(
            Row(
                experiment,
                name,
                round(statistics.median(wall[name]) * 1000, 2),
                round(min(wall[name]) * 1000, 2),
                round(statistics.median(cpu[name]) * 1000, 2),
                round(statistics.median(ratios), 3),
                round(q1, 3),
                round(q3, 3),
            )
        )
    return rows


# --- building blocks ---------------------------------------------------------------------


@dataclass
class Bench:
    """Prepared inputs and session builders shared by the experiments."""

    profile: HardwareProfile
    manifest: Manifest
    live: BgrImage  # 640x480 webcam frame
    id_padded: BgrImage  # an ID-like portrait with the verifier's replicated margin
    id_min_face: float
    aligned: np.ndarray  # (112, 112, 3) aligned face of the live frame
    live_face: FaceDetection

    def settings(self, **changes) -> OrtSettings:
        return dataclasses.replace(self.profile.onnxruntime, **changes)

    def session(self, role: str, settings: OrtSettings, models_dir: Path = MODELS_DIR, path: Path | None = None,
                **extra) -> ort.InferenceSession:
        options = session_options(settings)
        for name, value in extra.items():
            if name == "config":
                for key, entry in value.items():
                    options.add_session_config_entry(key, entry)
            else:
                setattr(options, name, value)
        file = path or models_dir / self.manifest.entry(role).file
        return ort.InferenceSession(str(file), sess_options=options, providers=list(settings.providers))

    def detector(self, settings: OrtSettings, models_dir: Path = MODELS_DIR, paths: dict[str, Path] | None = None,
                 **extra) -> MtcnnDetector:
        paths = paths or {}
        nets = [
            (self.session(role, settings, models_dir, paths.get(role), **extra), self.manifest.entry(role))
            for role in DETECTOR_ROLES
        ]
        return MtcnnDetector(*nets)

    def embedder(self, settings: OrtSettings, models_dir: Path = MODELS_DIR, path: Path | None = None,
                 **extra) -> Embedder:
        return Embedder(self.session("embedder", settings, models_dir, path, **extra), self.manifest.entry("embedder"))

    def live_min_face(self, image: BgrImage, scale: float = 1.0) -> float:
        return min_face_px(image, self.profile.detector.min_face_px, scale)

    def pipeline_variants(self, detector: MtcnnDetector, embedder: Embedder | None = None) -> dict[str, Callable]:
        small, scale = scaled_for_detection(self.live, self.profile.detector.max_input_side)
        out = {
            "detect_live": lambda: detector.detect(small, self.live_min_face(self.live, scale)),
            "detect_id": lambda: detector.detect(self.id_padded, self.id_min_face),
        }
        if embedder is not None:
            out["embed"] = lambda: embedder.embed(self.aligned)
        return out


def prepare(profile_name: str) -> Bench:
    faces = faces_dir()
    photos = sorted((faces / "nuaa__s01").iterdir())
    live = decode_image(photos[-1].read_bytes(), LIMITS)
    portrait = decode_image(photos[0].read_bytes(), LIMITS)
    # A card-like portrait: the first photo's face and shoulders at 250 px, as LFW and chip photos are.
    portrait = cv2.resize(portrait[40:440, 120:520], (250, 250), interpolation=cv2.INTER_AREA)
    margin = round(ID_PHOTO_MARGIN * 250)
    id_padded = cv2.copyMakeBorder(portrait, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
    profile = select_profile(profile_name)
    manifest = load_manifest(MODELS_DIR / "manifest.toml")
    id_min_face = min_face_px(portrait, QUALITY.id_photo_min_face_px)
    bench = Bench(profile, manifest, live, id_padded, id_min_face, np.empty(0), None)  # type: ignore[arg-type]
    detector = bench.detector(profile.onnxruntime)
    (face,) = detector.detect(live, bench.live_min_face(live))[:1]
    bench.live_face = face
    bench.aligned = align_face(live, face.landmarks)
    return bench


def _paired(experiment: str, bench: Bench, builders: dict[str, tuple[MtcnnDetector, Embedder]], rounds: int) -> list[Row]:
    """For each workload (detect live, detect ID, embed), the builders' variants interleaved."""
    rows = []
    per_variant = {name: bench.pipeline_variants(det, emb) for name, (det, emb) in builders.items()}
    for workload in next(iter(per_variant.values())):
        rows += interleaved(f"{experiment}:{workload}", {v: fns[workload] for v, fns in per_variant.items()}, rounds)
    return rows


# --- experiments ----------------------------------------------------------------------------


def exp_models(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for label, folder in (("baseline", args.baseline_dir), ("candidate", args.candidate_dir)):
        settings = bench.settings()
        builders[label] = (bench.detector(settings, folder), bench.embedder(settings, folder))
    rows = _paired("models", bench, builders, rounds)
    # p-net alone on the first (largest) level of the live pyramid: where detection spends its time.
    level = cv2.resize(bench.live, (160, 120), interpolation=cv2.INTER_AREA)
    tensor = to_input_tensor(level[np.newaxis], bench.manifest.entry("mtcnn_pnet").input)
    pnets = {label: det.pnet.session for label, (det, _) in builders.items()}
    name = bench.manifest.entry("mtcnn_pnet").input.name
    rows += interleaved("models:pnet_160x120", {k: (lambda s=s: s.run(None, {name: tensor})) for k, s in pnets.items()}, rounds)
    return rows


def exp_threads(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for n in (1, 2, 3, 4):
        settings = bench.settings(intra_op_threads=n)
        builders[f"{n} threads"] = (bench.detector(settings), bench.embedder(settings))
    return _paired("threads", bench, builders, rounds)


def exp_spinning(bench: Bench, rounds: int, args) -> list[Row]:
    """Intra-op worker threads that spin between runs vs ones that sleep, and one thread."""
    threads = max(2, bench.profile.onnxruntime.intra_op_threads)
    builders = {}
    for label, n, spin in ((f"{threads} threads, spinning", threads, "1"),
                           (f"{threads} threads, no spinning", threads, "0"), ("1 thread", 1, "1")):
        settings = bench.settings(intra_op_threads=n)
        config = {"config": {"session.intra_op.allow_spinning": spin}}
        builders[label] = (bench.detector(settings, **config), bench.embedder(settings, **config))
    return _paired("spinning", bench, builders, rounds)


def exp_optimisation(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for level in ("all", "extended", "basic"):
        settings = bench.settings(graph_optimization=level)
        builders[level] = (bench.detector(settings), bench.embedder(settings))
    return _paired("optimisation", bench, builders, rounds)


def exp_execution(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for mode, inter in (("sequential", 1), ("parallel", 2)):
        settings = bench.settings(execution_mode=mode, inter_op_threads=inter)
        builders[mode] = (bench.detector(settings), bench.embedder(settings))
    return _paired("execution", bench, builders, rounds)


def exp_arena(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for label, on in (("arena off", False), ("arena on", True)):
        settings = bench.settings(enable_cpu_mem_arena=on)
        builders[label] = (bench.detector(settings), bench.embedder(settings))
    return _paired("arena", bench, builders, rounds)


def exp_mem_pattern(bench: Bench, rounds: int, args) -> list[Row]:
    builders = {}
    for label, on in (("mem pattern on", True), ("mem pattern off", False)):
        settings = bench.settings()
        builders[label] = (bench.detector(settings, enable_mem_pattern=on), bench.embedder(settings, enable_mem_pattern=on))
    rows = _paired("mem-pattern", bench, builders, rounds)
    # First run at a never-seen size (a new ID photo's pyramid): fresh shapes every call.
    entry = bench.manifest.entry("mtcnn_pnet")
    sessions = {label: det.pnet.session for label, (det, _) in builders.items()}
    sizes = iter(range(10_000))

    def first_run(session: ort.InferenceSession) -> None:
        k = next(sizes)
        w, h = 200 + k % 97, 150 + k // 97
        level = np.full((1, w, h, 3), 0.1, dtype=np.float32)
        session.run(None, {entry.input.name: level})

    rows += interleaved("mem-pattern:pnet_new_size", {k: (lambda s=s: first_run(s)) for k, s in sessions.items()}, rounds)
    return rows


def exp_io_binding(bench: Bench, rounds: int, args) -> list[Row]:
    entry = bench.manifest.entry("embedder")
    session = bench.session("embedder", bench.settings())
    tensor = to_input_tensor(bench.aligned[np.newaxis], entry.input)
    out_name = entry.outputs[0]
    output = np.empty((1, 512), dtype=np.float32)
    binding = session.io_binding()
    binding.bind_cpu_input(entry.input.name, tensor)
    binding.bind_output(out_name, "cpu", 0, np.float32, list(output.shape), output.ctypes.data)

    def plain():
        return session.run([out_name], {entry.input.name: tensor})

    def bound():
        session.run_with_iobinding(binding)
        return output

    if not np.allclose(plain()[0], bound(), atol=1e-6):
        raise SystemExit("IOBinding output differs from session.run")
    return interleaved("io-binding:embed", {"session.run": plain, "IOBinding": bound}, rounds)


def quantise(bench: Bench, role: str, out_dir: Path) -> Path:
    """A static INT8 QDQ copy of ``role``'s model, calibrated on what it sees in the pipeline.

    Calibration inputs come from 40 LFW photos run through the float32 cascade: every
    pyramid level for p-net, every p-net candidate crop for r-net, every r-net survivor
    for o-net (faces and non-faces alike, as in service), the aligned faces for the embedder.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    entry = bench.manifest.entry(role)
    faces = faces_dir()
    photos = sorted(p for d in sorted(faces.glob("lfw__*"))[:40] for p in sorted(d.glob("*.jpg"))[:1])
    detector = bench.detector(bench.settings())
    thresholds = detector.thresholds
    samples: list[np.ndarray] = []
    for photo in photos:
        image = decode_image(photo.read_bytes(), LIMITS)
        proposals = detector._proposals(image, 40, thresholds)
        refined = detector._refine(image, proposals, thresholds) if len(proposals) else proposals
        if role == "mtcnn_pnet":
            height, width = image.shape[:2]
            for scale in pyramid_scales(height, width, 40, thresholds.pyramid_factor):
                level = cv2.resize(image, (math.ceil(width * scale), math.ceil(height * scale)), interpolation=cv2.INTER_AREA)
                samples.append(to_input_tensor(level[np.newaxis], entry.input))
        elif role == "mtcnn_rnet" and len(proposals):
            samples.append(to_input_tensor(crop_batch(image, proposals, 24), entry.input))
        elif role == "mtcnn_onet" and len(refined):
            samples.append(to_input_tensor(crop_batch(image, refined, 48), entry.input))
        elif role == "embedder":
            found = detector.detect(image, 40)
            if found:
                samples.append(to_input_tensor(align_face(image, found[0].landmarks)[np.newaxis], entry.input))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {entry.input.name: item}

    model = onnx.load(str(MODELS_DIR / entry.file))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    # Per-channel QDQ needs DequantizeLinear's axis (opset 13); the PyTorch exports are opset 9.
    if opset < 13:
        model = version_converter.convert_version(model, 13)
    source = out_dir / f"{role}.fp32.onnx"
    onnx.save(model, str(source))
    target = out_dir / f"{role}.int8.onnx"
    quantize_static(
        str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    return target


def exp_int8(bench: Bench, rounds: int, args) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        quantised = {role: quantise(bench, role, Path(tmp)) for role in (*DETECTOR_ROLES, "embedder")}
        settings = bench.settings()
        detectors = {
            "float32": bench.detector(settings),
            "int8 p-net": bench.detector(settings, paths={"mtcnn_pnet": quantised["mtcnn_pnet"]}),
            "int8 p/r/o-net": bench.detector(settings, paths=quantised),
        }
        small, scale = scaled_for_detection(bench.live, bench.profile.detector.max_input_side)
        min_face = bench.live_min_face(bench.live, scale)
        rows += interleaved("int8:detect_live", {k: (lambda d=d: d.detect(small, min_face)) for k, d in detectors.items()}, rounds)
        rows += interleaved("int8:detect_id", {k: (lambda d=d: d.detect(bench.id_padded, bench.id_min_face)) for k, d in detectors.items()}, rounds)
        embedders = {"float32": bench.embedder(settings), "int8": bench.embedder(settings, path=quantised["embedder"])}
        rows += interleaved("int8:embed", {k: (lambda e=e: e.embed(bench.aligned)) for k, e in embedders.items()}, rounds)
        _int8_agreement(detectors, embedders)
    return rows


def _int8_agreement(detectors: dict[str, MtcnnDetector], embedders: dict[str, Embedder]) -> None:
    """How far the INT8 variants move what matters downstream, on 100 LFW photos (stderr)."""
    faces = faces_dir()
    photos = sorted(p for d in sorted(faces.glob("lfw__*"))[100:200] for p in sorted(d.glob("*.jpg"))[:1])
    reference = detectors["float32"]
    shifts: dict[str, list[float]] = {k: [] for k in detectors if k != "float32"}
    missed = dict.fromkeys(shifts, 0)
    cosines = []
    for photo in photos:
        image = decode_image(photo.read_bytes(), LIMITS)
        ref = reference.detect(image, 40)
        if not ref:
            continue
        eyes = float(np.linalg.norm(ref[0].landmarks[1] - ref[0].landmarks[0]))
        for label in shifts:
            found = detectors[label].detect(image, 40)
            if not found:
                missed[label] += 1
                continue
            nearest = min(found, key=lambda f: float(np.abs(f.landmarks - ref[0].landmarks).max()))
            shifts[label].append(float(np.abs(nearest.landmarks - ref[0].landmarks).max()) / eyes)
        aligned = align_face(image, ref[0].landmarks)
        cosines.append(float(embedders["float32"].embed(aligned) @ embedders["int8"].embed(aligned)))
    for label, values in shifts.items():
        print(f"int8 {label}: landmark shift / inter-eye distance median {statistics.median(values):.3f}, "
              f"95th pct {statistics.quantiles(values, n=20)[-1]:.3f}; faces lost {missed[label]} of {len(cosines)}",
              file=sys.stderr)
    print(f"int8 embedder: cosine to float32 on {len(cosines)} aligned faces: median {statistics.median(cosines):.4f}, "
          f"min {min(cosines):.4f}", file=sys.stderr)


def exp_detector_size(bench: Bench, rounds: int, args) -> list[Row]:
    detector = bench.detector(bench.settings())
    variants = {}
    for side, floor_px in ((640, 40), (640, 48), (480, 48), (480, 64), (320, 48), (320, 64)):
        small, scale = scaled_for_detection(bench.live, side)
        floor = min_face_px(bench.live, floor_px, scale)
        variants[f"side {side}, min face {floor_px}"] = lambda s=small, f=floor: detector.detect(s, f)
    return interleaved("detector-size:detect_live", variants, rounds)


def exp_downscale(bench: Bench, rounds: int, args) -> list[Row]:
    detector = bench.detector(bench.settings())
    frame = cv2.resize(bench.live, (1280, 960), interpolation=cv2.INTER_CUBIC)
    min_face = bench.live_min_face(frame)

    def full():
        return detector.detect(frame, min_face)

    def downscaled():
        small, scale = scaled_for_detection(frame, 640)
        return detector.detect(small, min_face * scale)

    return interleaved("downscale:detect_1280x960", {"full frame": full, "640 px copy": downscaled}, rounds)


def exp_roi(bench: Bench, rounds: int, args) -> list[Row]:
    detector = bench.detector(bench.settings())
    small, scale = scaled_for_detection(bench.live, bench.profile.detector.max_input_side)
    min_face = bench.live_min_face(bench.live, scale)
    box = bench.live_face.box
    # A window of twice the last box, as a tracker would search.
    x1, y1 = max(0, int((box.x - box.width / 2) * scale)), max(0, int((box.y - box.height / 2) * scale))
    x2 = min(small.shape[1], int((box.x + 1.5 * box.width) * scale))
    y2 = min(small.shape[0], int((box.y + 1.5 * box.height) * scale))
    window = np.ascontiguousarray(small[y1:y2, x1:x2])
    return interleaved(
        "roi:detect_live",
        {"full frame": lambda: detector.detect(small, min_face), "2x box window": lambda: detector.detect(window, min_face)},
        rounds,
    )


def exp_floor(bench: Bench, rounds: int, args) -> list[Row]:
    """Arithmetic of one Verify (card-like ID photo + the webcam frame), model by model, and its floor.

    Every session.run of a real Verify is recorded with its input shape; FLOPs are counted
    at those shapes (hardware/flops.py). The floor is that work at the float32 matmul peak.
    The one timed row is the whole Verify, for the distance to the floor.
    """
    from hardware.flops import measure_peak_gflops, model_flops
    from kiosk.pipeline.verifier import Verifier
    from kiosk.settings import HardwareSettings, Settings

    verifier = Verifier.load(Settings(hardware=HardwareSettings(profile=bench.profile.name)))
    seen: list[tuple[str, tuple[int, ...]]] = []
    nets = [verifier.detector.pnet, verifier.detector.rnet, verifier.detector.onet, verifier.embedder,
            verifier.passive_liveness, verifier.eye_state]
    for net in nets:
        session, entry = net.session, net.entry

        class Recording:
            def __init__(self, inner, file):
                self.inner, self.file = inner, file

            def run(self, outputs, feeds):
                seen.append((self.file, next(iter(feeds.values())).shape))
                return self.inner.run(outputs, feeds)

        net.session = Recording(session, entry.file)
    id_photo = cv2.imencode(".jpg", bench.id_padded[50:-50, 50:-50])[1].tobytes()
    live = cv2.imencode(".jpg", bench.live, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    verification = verifier.verify(id_photo, [live])
    by_model: dict[str, float] = {}
    for file, shape in seen:
        by_model[file] = by_model.get(file, 0.0) + model_flops(MODELS_DIR / file, shape).gflop
    total = sum(by_model.values())
    threads = bench.profile.onnxruntime.intra_op_threads
    peak = max(measure_peak_gflops(n) for n in sorted({1, threads}))
    for file, gflop in sorted(by_model.items(), key=lambda kv: -kv[1]):
        print(f"floor: {file}: {gflop:.3f} GFLOP", file=sys.stderr)
    print(f"floor: one Verify ({verification.decision.value}) = {total:.3f} GFLOP in {len(seen)} runs; "
          f"float32 matmul peak {peak:.1f} GFLOP/s -> floor {1000 * total / peak:.1f} ms", file=sys.stderr)
    for net in nets:
        net.session = net.session.inner
    return interleaved("floor:verify", {"verify": lambda: verifier.verify(id_photo, [live])}, rounds)


def _shared_photos(count: int, seed: int = 5) -> list[BgrImage]:
    """Decodable shared photos of every subset, in a fixed random order."""
    import csv
    import random

    rows = list(csv.DictReader(open(faces_dir() / "manifest.csv")))
    paths = sorted(r["path"] for r in rows if r["path"].lower().endswith((".jpg", ".jpeg", ".png")))
    random.Random(seed).shuffle(paths)
    images = []
    for relative in paths:
        try:
            images.append(decode_image((faces_dir() / relative).read_bytes(), LIMITS))
        except Exception:  # noqa: BLE001 - a photo the service would refuse is simply not timed
            continue
        if len(images) == count:
            break
    return images


def exp_pyramid(bench: Bench, rounds: int, args) -> list[Row]:
    """Whole pyramid vs coarse to fine with the subject rule: 30 shared photos per path, as the verifier runs them."""
    from kiosk.pipeline.detect import SubjectRule
    from kiosk.pipeline.types import ImageRole

    detector = bench.detector(bench.settings())
    id_inputs, live_inputs = [], []
    for image in _shared_photos(120):
        height, width = image.shape[:2]
        if len(id_inputs) < 30:
            margin = round(ID_PHOTO_MARGIN * max(height, width))
            padded = cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
            id_inputs.append((padded, min_face_px(image, QUALITY.id_photo_min_face_px),
                              SubjectRule(ImageRole.ID_PHOTO, width, height, -margin, 1.0)))
        if min(height, width) >= 400 and len(live_inputs) < 30:  # camera-sized frames only
            small, scale = scaled_for_detection(image, bench.profile.detector.max_input_side)
            live_inputs.append((small, bench.live_min_face(image, scale),
                                SubjectRule(ImageRole.LIVE_FRAME, width, height, 0.0, scale)))
    rows = []
    for name, inputs in (("id", id_inputs), ("live", live_inputs)):
        rows += interleaved(f"pyramid:detect_{name} x{len(inputs)}", {
            "whole pyramid": lambda inputs=inputs: [detector.detect(i, m) for i, m, _ in inputs],
            "coarse to fine, subject rule": lambda inputs=inputs: [detector.detect(i, m, subject_rule=r) for i, m, r in inputs],
        }, rounds)
    return rows


def exp_tracking(bench: Bench, rounds: int, args) -> list[Row]:
    """Session frames (the bench's webcam frame, 8 per call): full scan of every frame vs the FaceTracker."""
    import dataclasses as dc
    import itertools

    from kiosk.pipeline.session import Frame, SessionLimits, open_session
    from kiosk.pipeline.tracking import FaceTracker, TrackingSettings
    from kiosk.pipeline.verifier import Verifier
    from kiosk.settings import HardwareSettings, Settings

    verifier = Verifier.load(Settings(hardware=HardwareSettings(profile=bench.profile.name)))
    # As tests/bench/test_bench_pipeline.py's session frame: one webcam sitting's frames.
    photos = sorted((faces_dir() / "nuaa__s01").iterdir())
    id_photo, live = photos[0].read_bytes(), photos[-1].read_bytes()
    challenges = dc.replace(verifier.settings.liveness_challenge, step_window_ms=10**9)
    sessions = {}
    for name, tracking in (("full scan every frame", TrackingSettings(full_scan_every=1)), ("tracker", TrackingSettings())):
        session = open_session(verifier, id_photo, limits=SessionLimits(max_frames=10**9), challenges=challenges)
        session.tracker = FaceTracker(tracking)
        # Each session its own 30 fps clock (a shared one would open gaps the session refuses).
        sessions[name] = (session, itertools.count(1_000, 33))

    def frames(session, stamps):
        for _ in range(8):
            result = session.add_frame(Frame(live, next(stamps)))
            if result.finding is None or not result.finding.face_found:
                raise RuntimeError(f"session frame not analysed: {result.verification and result.verification.message}")

    return interleaved("tracking:session_frame x8", {name: (lambda s=s: frames(*s)) for name, s in sessions.items()}, rounds)


EXPERIMENTS: dict[str, Callable[[Bench, int, argparse.Namespace], list[Row]]] = {
    "models": exp_models,
    "threads": exp_threads,
    "spinning": exp_spinning,
    "optimisation": exp_optimisation,
    "execution": exp_execution,
    "arena": exp_arena,
    "mem-pattern": exp_mem_pattern,
    "io-binding": exp_io_binding,
    "int8": exp_int8,
    "detector-size": exp_detector_size,
    "downscale": exp_downscale,
    "roi": exp_roi,
    "floor": exp_floor,
    "pyramid": exp_pyramid,
    "tracking": exp_tracking,
}


def format_rows(rows: list[Row]) -> str:
    lines = [
        "| experiment | variant | median ms | best ms | CPU ms | ratio to baseline | ratio IQR |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.experiment} | {r.variant} | {r.median_ms:.2f} | {r.best_ms:.2f} | {r.cpu_ms:.2f} | "
            f"{r.ratio:.3f} | {r.ratio_q1:.3f}-{r.ratio_q3:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", choices=sorted(EXPERIMENTS))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", default="auto", help="hardware profile whose settings are the baseline")
    parser.add_argument("--baseline-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--candidate-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    bench = prepare(args.profile)
    rows: list[Row] = []
    for name in args.experiments:
        new = EXPERIMENTS[name](bench, args.rounds, args)
        print(format_rows(new), flush=True)
        rows += new
        if args.json:
            _write_json(args.json, bench, rows)
    return 0


def _write_json(path: Path, bench: Bench, rows: list[Row]) -> None:
    meta = {"profile": bench.profile.name, "onnxruntime": ort.__version__, "cpu_count": os.cpu_count()}
    path.write_text(json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
