"""End-to-end acceptance figures in ISO/IEC 19795-1 transaction terms: the engine behind `kiosk acceptance-report`.

Every face goes through the same per-face path as ``Verifier.verify`` (decode -> detect ->
align -> quality -> passive liveness on the live side -> embed), and every transaction is
decided as ``Verifier.verify`` decides it (ID photo first, then the live photo; a refused
face ends the transaction with its reason; otherwise cosine against the shipped threshold).
Each distinct (image, role, capture condition) is analysed once and its outcome reused by
every pair that holds it, so all cross-person impostor pairs cost a dot product each.

Figures per subset and capture condition (19795-1 names):
- FTA: share of genuine transactions that end without a comparison for capture reasons
  (no face, low quality) on either side;
- FNMR: share of compared genuine transactions that do not match;
- FRR: share of genuine transactions that do not end in MATCH, for any reason (what the
  customer experiences: capture refusals, passive-liveness refusals and non-matches);
- FMR: share of compared impostor transactions that match;
- checks_refuse_correct: genuine transactions refused by a capture check although the
  comparison alone (no gate) would have matched, over those the comparison alone matches;
- BPCER / APCER per attack species: passive-liveness refusals of bona fide live captures,
  acceptances of attack presentations, with one-sided 95 % upper bounds.

Capture conditions are the cameras of the shared set as captured, and camera variations
generated in code from them (exposure, gamma, colour cast, backlight, sensor noise, blur,
JPEG, down-scaling), applied to the live side; the chip path makes the ID side a simulated
chip photo (card framing, 102x126, JPEG quality 30, colour or grey) of one capture and the
live side another capture of the same person (genuine) or of another person (impostor).
Nothing is written to disk; embeddings are wiped when the report is done.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kiosk.errors import InvalidImage
from kiosk.offline.chip import chip_photo
from kiosk.offline.evaluate import person_of
from kiosk.offline.liveness_report import read_spoof_labels, upper_bound_95
from kiosk.pipeline import analysis, quality
from kiosk.pipeline.analysis import CaptureProblem, decode_photo
from kiosk.pipeline.compare import cosine_similarity
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.types import Box, Embedding, ImageRole, QualityFinding

# The webcam-style subsets of the shared set and the camera each stands for.
CAMERA_SUBSETS = {
    "nuaa_live": "nuaa_webcam",
    "webcam_pigface": "webcam_pigface",
    "phone_selfie_live": "phone_selfie_live",
}

# Subsets whose files are tight face crops (made by the source's own face detector), not
# camera frames: as live photos they are placed on a neutral grey canvas first, as a
# kiosk camera would frame the person (face about half the frame's height). A replicated
# border is not used: it makes the passive-liveness model read 1.000 on any crop.
FACE_CROP_FOLDERS = ("webcam_pigface__",)
CANVAS_GREY = 90



# --- camera variations generated in code -------------------------------------------------

def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))


def exposure(image: np.ndarray, gain: float) -> np.ndarray:
    """Linear exposure change (gain > 1 brighter, saturating)."""
    return _lut(image, np.arange(256) * gain)


def gamma(image: np.ndarray, g: float) -> np.ndarray:
    """Gamma curve: g < 1 lifts the mid-tones, g > 1 darkens them."""
    return _lut(image, 255.0 * (np.arange(256) / 255.0) ** g)


def colour_cast(image: np.ndarray, blue: float, red: float) -> np.ndarray:
    """White-balance error: blue and red channels scaled (BGR order)."""
    out = image.astype(np.float32)
    out[..., 0] *= blue
    out[..., 2] *= red
    return np.clip(out, 0, 255).astype(np.uint8)


def backlight(image: np.ndarray, strength: float) -> np.ndarray:
    """A bright window behind the person: the centre (the face) darkens, the edges burn out."""
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.sqrt(((xs - width / 2) / (width / 2)) ** 2 + ((ys - height / 2) / (height / 2)) ** 2) / np.sqrt(2)
    gain = (1.0 - strength) + 2.2 * strength * r
    return np.clip(image.astype(np.float32) * gain[..., None], 0, 255).astype(np.uint8)


def sensor_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Gaussian sensor noise of ``sigma`` grey levels (seeded: the report is reproducible)."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def blur(image: np.ndarray, share_of_short_side: float) -> np.ndarray:
    """Out of focus / motion: Gaussian blur whose sigma is a share of the short side."""
    sigma = max(0.1, share_of_short_side * min(image.shape[:2]))
    return cv2.GaussianBlur(image, (0, 0), sigma)


def jpeg(image: np.ndarray, q: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise InvalidImage("cannot encode the varied image")
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """A lower-resolution camera: the frame shrunk by ``factor``."""
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# name -> function on a BGR image. Graded strengths, so the report doubles as each
# capture measure's utility curve (the measure moves, the genuine-match rate follows).
VARIATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exposure_x1.4": lambda im: exposure(im, 1.4),
    "exposure_x1.8": lambda im: exposure(im, 1.8),
    "exposure_x2.4": lambda im: exposure(im, 2.4),
    "exposure_x0.5": lambda im: exposure(im, 0.5),
    "exposure_x0.3": lambda im: exposure(im, 0.3),
    "exposure_x0.18": lambda im: exposure(im, 0.18),
    "gamma_0.5": lambda im: gamma(im, 0.5),
    "gamma_2.0": lambda im: gamma(im, 2.0),
    "cast_warm": lambda im: colour_cast(im, 0.7, 1.25),
    "cast_cool": lambda im: colour_cast(im, 1.3, 0.7),
    "backlight_0.5": lambda im: backlight(im, 0.5),
    "backlight_0.8": lambda im: backlight(im, 0.8),
    "noise_sigma8": lambda im: sensor_noise(im, 8.0),
    "noise_sigma20": lambda im: sensor_noise(im, 20.0),
    "blur_0.005": lambda im: blur(im, 0.005),
    "blur_0.012": lambda im: blur(im, 0.012),
    "blur_0.025": lambda im: blur(im, 0.025),
    "jpeg_q20": lambda im: jpeg(im, 20),
    "jpeg_q8": lambda im: jpeg(im, 8),
    "downscale_0.5": lambda im: downscale(im, 0.5),
    "downscale_0.3": lambda im: downscale(im, 0.3),
}


def framed_crop(image: np.ndarray) -> np.ndarray:
    """A tight face crop on a neutral canvas: half its height above and below, its height left and right."""
    height = image.shape[0]
    return cv2.copyMakeBorder(image, height // 2, height // 2, height, height, cv2.BORDER_CONSTANT,
                              value=(CANVAS_GREY,) * 3)


def encode_capture(image: np.ndarray) -> bytes:
    """A varied frame as the camera would deliver it: JPEG quality 95 (PNG of a phone's
    12 MP frame would exceed the request size limit)."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise InvalidImage("cannot encode the varied image")
    return encoded.tobytes()


# --- one face, as Verifier.verify analyses it ---------------------------------------------

@dataclass(frozen=True)
class FaceOutcome:
    """What the per-face path made of one image in one role.

    ``reason`` is "" when the face is usable (Verify would go on to compare it), else the
    refusal Verify would answer with. ``embedding`` is there whenever a face was found,
    refused or not, so the comparison-alone figure can be computed; it is the softened
    crop's where Verify would soften (a chip-sized ID photo, and a live face compared with one).
    """

    reason: str
    checks: tuple[QualityFinding, ...] = ()
    passive_score: float | None = None
    embedding: Embedding | None = None
    box: Box | None = None
    chip_sized: bool = False

    @property
    def refusal_codes(self) -> tuple[str, ...]:
        return tuple(sorted({f.code for f in quality.failed(self.checks)}))

    @property
    def acquired(self) -> bool:
        return self.reason in ("", "presentation_attack_suspected")


def analyse_face(verifier, encoded: bytes, role: ImageRole, soften: bool = False) -> FaceOutcome:
    """One image through the pipeline's own ``analyse_face``, as Verify analyses it.

    The only difference (``gate=False``): a refused face is still embedded (for the
    comparison-alone figure) and its passive score recorded, with the refusal Verify would give.
    """
    with Scratch() as scratch:
        try:
            image = decode_photo(encoded, verifier.rules, scratch, StageTimer())
        except InvalidImage:
            return FaceOutcome("invalid_image")
        result = analysis.analyse_face(
            verifier.models, image, role, verifier.rules, scratch, StageTimer(),
            passive_liveness=role is ImageRole.LIVE_FRAME, soften=soften, gate=False,
        )
        if isinstance(result, CaptureProblem):
            return FaceOutcome(result.error.reason)
        finding = result.finding
        reason = result.refusal.reason if result.refusal is not None else ""
        # Copied out of the scratch, which zeroes its buffers when the face is done.
        embedding = np.array(result.embedding, copy=True)
        return FaceOutcome(
            reason, finding.quality, result.passive_score, embedding, finding.box, result.chip_sized
        )


# --- transactions --------------------------------------------------------------------------

@dataclass(frozen=True)
class Transaction:
    subset: str
    condition: str
    genuine: bool
    decision: str  # "match", "no_match" or the refusal reason
    reason_detail: str  # "low_quality:TOO_BRIGHT", "no_face_in_live_frame", ... ("" for a decision)
    similarity: float | None  # of the decision, when compared
    comparison_alone: float | None  # similarity with no gate at all (both faces found)
    threshold: float  # the match threshold of this comparison (the chip one for a chip-sized ID photo)


def decide_transaction(reference: FaceOutcome, live: FaceOutcome, threshold: float) -> tuple[str, str, float | None]:
    """Decision of one ID photo + one live photo as ``Verifier.verify`` makes it."""
    for side, outcome in (("id_photo", reference), ("live_frame", live)):
        if outcome.reason:
            detail = outcome.reason
            if outcome.reason == "low_quality":
                detail += f"({side}):" + "+".join(outcome.refusal_codes)
            return outcome.reason, detail, None
    similarity = cosine_similarity(reference.embedding, live.embedding)
    if similarity >= threshold:
        return "match", "", similarity
    # As Verify: a non-match with a lighting signal on either side is a lighting retry.
    codes = sorted({f.code for o in (reference, live) for f in quality.operator_signals(o.checks)})
    if codes:
        return "poor_lighting", "poor_lighting:" + "+".join(codes), similarity
    return "no_match", "", similarity


def comparison_alone(reference: FaceOutcome, live: FaceOutcome) -> float | None:
    if reference.embedding is None or live.embedding is None:
        return None
    return cosine_similarity(reference.embedding, live.embedding)


CAPTURE_REASONS = ("no_face", "multiple_faces", "low_quality", "invalid_image", "poor_lighting")


def is_capture_refusal(decision: str) -> bool:
    return decision.startswith(CAPTURE_REASONS)


@dataclass
class Figures:
    """Transaction counts of one group (subset x condition) and the 19795-1 rates from them."""

    genuine: int = 0
    genuine_fta: int = 0
    genuine_compared: int = 0
    genuine_no_match: int = 0
    genuine_match: int = 0
    genuine_pad_refused: int = 0
    alone_correct: int = 0
    checks_refuse_correct: int = 0
    impostor: int = 0
    impostor_compared: int = 0
    impostor_match: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, t: Transaction) -> None:
        if t.genuine:
            self.genuine += 1
            if t.decision == "match":
                self.genuine_match += 1
            elif t.decision == "no_match":
                self.genuine_no_match += 1
            if t.decision in ("match", "no_match"):
                self.genuine_compared += 1
            elif t.decision == "presentation_attack_suspected":
                self.genuine_pad_refused += 1
            elif is_capture_refusal(t.decision):
                self.genuine_fta += 1
            if t.decision != "match":
                key = t.reason_detail or t.decision
                self.reasons[key] = self.reasons.get(key, 0) + 1
            if t.comparison_alone is not None and t.comparison_alone >= t.threshold:
                self.alone_correct += 1
                if is_capture_refusal(t.decision):
                    self.checks_refuse_correct += 1
        else:
            self.impostor += 1
            if t.decision in ("match", "no_match"):
                self.impostor_compared += 1
                self.impostor_match += t.decision == "match"

    def as_dict(self) -> dict:
        def rate(n: int, d: int) -> float | None:
            return n / d if d else None

        return {
            "genuine": self.genuine,
            "impostor": self.impostor,
            "fta": rate(self.genuine_fta, self.genuine),
            "fnmr": rate(self.genuine_no_match, self.genuine_compared),
            "frr": rate(self.genuine - self.genuine_match, self.genuine),
            "frr_upper_95": upper_bound_95(self.genuine - self.genuine_match, self.genuine) if self.genuine else None,
            "fmr": rate(self.impostor_match, self.impostor_compared),
            "fmr_upper_95": upper_bound_95(self.impostor_match, self.impostor_compared) if self.impostor_compared else None,
            "checks_refuse_correct": rate(self.checks_refuse_correct, self.alone_correct),
            "counts": {
                "genuine_match": self.genuine_match,
                "genuine_no_match": self.genuine_no_match,
                "genuine_capture_refused": self.genuine_fta,
                "genuine_pad_refused": self.genuine_pad_refused,
                "genuine_alone_correct": self.alone_correct,
                "genuine_checks_refuse_correct": self.checks_refuse_correct,
                "impostor_compared": self.impostor_compared,
                "impostor_match": self.impostor_match,
            },
            "failure_reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
        }


# --- the shared set's pairs -----------------------------------------------------------------

@dataclass(frozen=True)
class PairSet:
    subset: str
    genuine: tuple[tuple[str, str], ...]
    images: tuple[str, ...]


def read_pair_sets(root: Path, subsets: Iterable[str], max_genuine: int | None = None) -> list[PairSet]:
    """Genuine pairs of each subset (pairs_by_subset/<subset>.csv) and the images they use."""
    sets = []
    for subset in subsets:
        path = root / "pairs_by_subset" / f"{subset}.csv"
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        genuine = [(r["a"], r["b"]) for r in rows if r["same"].strip() == "1"]
        images = sorted({p for r in rows for p in (r["a"], r["b"])})
        if max_genuine is not None and len(genuine) > max_genuine:
            # Evenly spread over the file; the impostor pairs then come from these images only.
            step = len(genuine) / max_genuine
            genuine = [genuine[int(i * step)] for i in range(max_genuine)]
            images = sorted({p for pair in genuine for p in pair} | set(images[:: max(1, len(images) // max_genuine)]))
        sets.append(PairSet(subset, tuple(genuine), tuple(images)))
    return sets


def impostor_pairs(images: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered pair of images of two different people (ID side first)."""
    return [(a, b) for a in images for b in images if person_of(a) != person_of(b)]


def _every(items: Sequence, step: int) -> list:
    return list(items[::step]) if step > 1 else list(items)


@dataclass
class Report:
    threshold: float
    target_fmr: float
    liveness_threshold: float
    # The threshold of a comparison with a chip-sized ID photo (models.chip_calibration).
    chip_threshold: float
    groups: dict[tuple[str, str], Figures] = field(default_factory=dict)
    pad: dict[str, dict] = field(default_factory=dict)
    # The same attack figures with each camera variation applied to every presentation.
    pad_by_condition: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, t: Transaction) -> None:
        for key in ((t.subset, t.condition), ("all_cameras", t.condition)):
            self.groups.setdefault(key, Figures()).add(t)

    def as_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "chip_threshold": self.chip_threshold,
            "target_fmr": self.target_fmr,
            "liveness_threshold": self.liveness_threshold,
            "notes": self.notes,
            "groups": [
                {"subset": subset, "condition": condition, **figures.as_dict()}
                for (subset, condition), figures in sorted(self.groups.items())
            ],
            "presentation_attacks": self.pad,
            "presentation_attacks_by_condition": self.pad_by_condition,
        }


def run_report(
    verifier,
    root: Path,
    *,
    subsets: Sequence[str] = tuple(CAMERA_SUBSETS),
    variations: Sequence[str] = tuple(VARIATIONS),
    variation_every: int = 2,
    impostors_per_condition: int = 2000,
    max_genuine: int | None = None,
    chip: bool = True,
    attacks: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """Run every transaction of the report (bounded: see ``variation_every`` and ``impostors_per_condition``)."""
    point = verifier.operating_point(None)
    chip_threshold = verifier.operating_point(None, chip_sized=True).threshold
    report = Report(point.threshold, point.target_fmr, verifier.liveness_calibration.threshold, chip_threshold)
    cache: dict[tuple[str, str, str, bool], FaceOutcome] = {}
    images_bytes: dict[str, bytes] = {}

    def raw(path: str) -> bytes:
        if path not in images_bytes:
            images_bytes[path] = (root / path).read_bytes()
        return images_bytes[path]

    def outcome(path: str, role: ImageRole, condition: str, soften: bool = False) -> FaceOutcome:
        key = (path, role.value, condition, soften)
        if key not in cache:
            crop = role is ImageRole.LIVE_FRAME and path.startswith(FACE_CROP_FOLDERS)
            if condition == "as_captured" and not crop:
                encoded = raw(path)
            elif condition == "as_captured":
                encoded = encode_capture(framed_crop(decode_image(raw(path), verifier.image_limits)))
            elif condition.startswith("chip_"):
                base = outcome(path, ImageRole.ID_PHOTO, "as_captured")
                if base.box is None:
                    cache[key] = FaceOutcome("no_face_in_source_capture")
                    return cache[key]
                image = decode_image(raw(path), verifier.image_limits)
                encoded = chip_photo(image, base.box, grey=condition == "chip_grey")
            else:
                image = decode_image(raw(path), verifier.image_limits)
                encoded = encode_capture(VARIATIONS[condition](framed_crop(image) if crop else image))
            result = analyse_face(verifier, encoded, role, soften)
            if crop and result.reason == "presentation_attack_suspected":
                # A crop on a made-up canvas is no camera frame: the passive model reads the
                # canvas, not the person (all 120 framed pigface crops score below the
                # threshold). Its passive score is reported, its refusal is not counted.
                result = dataclasses.replace(result, reason="")
            cache[key] = result
        return cache[key]

    def transact(pair_set: PairSet, a: str, b: str, genuine: bool, id_condition: str, live_condition: str, label: str):
        reference = outcome(a, ImageRole.ID_PHOTO, id_condition)
        # As Verify: a live face compared with a chip-sized ID photo is embedded from a softened crop.
        live = outcome(b, ImageRole.LIVE_FRAME, live_condition, soften=reference.chip_sized)
        # As Verify: a chip-sized ID photo is compared at the chip calibration's threshold.
        threshold = report.chip_threshold if reference.chip_sized else report.threshold
        decision, detail, similarity = decide_transaction(reference, live, threshold)
        report.add(Transaction(pair_set.subset, label, genuine, decision, detail, similarity,
                               comparison_alone(reference, live), threshold))

    pair_sets = read_pair_sets(root, subsets, max_genuine)
    rng = np.random.default_rng(12)
    for pair_set in pair_sets:
        impostors = impostor_pairs(pair_set.images)
        progress(f"{pair_set.subset}: as captured ({len(pair_set.genuine)} genuine, {len(impostors)} impostor)")
        for a, b in pair_set.genuine:
            transact(pair_set, a, b, True, "as_captured", "as_captured", "as_captured")
        for a, b in impostors:
            transact(pair_set, a, b, False, "as_captured", "as_captured", "as_captured")
        # Variations: on the live side of every variation_every-th genuine pair; impostors
        # drawn at random among the pairs whose live image was varied.
        genuine = _every(pair_set.genuine, variation_every)
        varied = {b for _, b in genuine}
        impostor_pool = [(a, b) for a, b in impostors if b in varied]
        if len(impostor_pool) > impostors_per_condition:
            chosen = rng.choice(len(impostor_pool), impostors_per_condition, replace=False)
            impostor_pool = [impostor_pool[i] for i in sorted(chosen)]
        for name in variations:
            progress(f"{pair_set.subset}: {name}")
            for a, b in genuine:
                transact(pair_set, a, b, True, "as_captured", name, name)
            for a, b in impostor_pool:
                transact(pair_set, a, b, False, "as_captured", name, name)
        if chip:
            # Chip path: half the pairs get a grey chip, half a colour one, alternating.
            progress(f"{pair_set.subset}: chip path")
            for i, (a, b) in enumerate(pair_set.genuine):
                kind = "chip_grey" if i % 2 else "chip_colour"
                transact(pair_set, a, b, True, kind, "as_captured", "chip_path")
                transact(pair_set, a, b, True, kind, "as_captured", kind)
            for i, (a, b) in enumerate(impostors):
                kind = "chip_grey" if i % 2 else "chip_colour"
                transact(pair_set, a, b, False, kind, "as_captured", "chip_path")
                transact(pair_set, a, b, False, kind, "as_captured", kind)
    if any(folder.startswith(subset) for subset in subsets for folder in FACE_CROP_FOLDERS):
        report.notes.append(
            "webcam_pigface files are face crops: as live photos they are framed on a grey canvas, and the "
            "passive-liveness refusal is not counted for them (the model reads the canvas: all 120 refused)"
        )
    if max_genuine is not None:
        report.notes.append(f"at most {max_genuine} genuine pairs per subset, evenly spread over its pair list")
    if variation_every > 1:
        report.notes.append(
            f"camera variations applied to the live side of one genuine pair in {variation_every}; "
            f"at most {impostors_per_condition} impostor pairs per subset and variation, drawn at random "
            "among those whose live image was varied"
        )
    if attacks:
        progress("presentation attacks")
        report.pad = attack_figures(verifier, root, outcome)
        # Attacks meet the same cameras as customers: a variation that carries prints
        # through the passive check (sensor noise did) must show up here.
        for name in variations:
            progress(f"presentation attacks: {name}")
            report.pad_by_condition[name] = attack_figures(verifier, root, outcome, name)
    for o in cache.values():
        if o.embedding is not None:
            o.embedding.fill(0)
    return report


def attack_figures(
    verifier, root: Path, outcome: Callable[[str, ImageRole, str], FaceOutcome], condition: str = "as_captured"
) -> dict:
    """BPCER of bona fide live captures and APCER per attack species, the live photo as Verify sees it.

    An attack counts as accepted when its live photo passes every capture check and the
    passive check (Verify would go on to compare it): the identity question is separate.
    System level, as Verify answers: a presentation a capture check refuses counts as not
    accepted (attacks) and not refused by liveness (bona fide); how many that was is in
    ``capture_refused``, so a check that stops attacks before liveness is seen as such.
    One without a face is not counted at all (``without_face``).
    """
    bona_fide_refused = bona_fide = 0
    species: dict[str, list[int]] = {}
    no_face: dict[str, int] = {}
    capture_refused: dict[str, int] = {}
    for path, label, attack_species in read_spoof_labels(root):
        o = outcome(path, ImageRole.LIVE_FRAME, condition)
        name = "bona_fide" if label == "real" else attack_species
        if o.passive_score is None:
            no_face[name] = no_face.get(name, 0) + 1
            continue
        if o.reason not in ("", "presentation_attack_suspected"):
            capture_refused[name] = capture_refused.get(name, 0) + 1
        if label == "real":
            bona_fide += 1
            bona_fide_refused += o.reason == "presentation_attack_suspected"
        else:
            counts = species.setdefault(name, [0, 0])
            counts[0] += 1
            counts[1] += o.reason == ""
    return {
        "bpcer": bona_fide_refused / bona_fide if bona_fide else None,
        "bpcer_counts": [bona_fide_refused, bona_fide],
        "bpcer_upper_95": upper_bound_95(bona_fide_refused, bona_fide),
        "apcer": {
            name: {"accepted": acc, "presentations": n, "apcer": acc / n, "upper_95": upper_bound_95(acc, n)}
            for name, (n, acc) in sorted(species.items())
        },
        "without_face": no_face,
        "capture_refused": capture_refused,
    }


def format_report(report: Report) -> str:
    """One line per subset and condition, then the attack figures."""
    lines = [
        f"threshold {report.threshold:.4f}, chip-sized ID photos {report.chip_threshold:.4f} "
        f"(target FMR {report.target_fmr:g}), passive liveness {report.liveness_threshold:.4f}",
        *[f"note: {n}" for n in report.notes],
        f"{'subset':18} {'condition':16} {'gen':>5} {'FTA%':>6} {'FNMR%':>6} {'FRR%':>6} {'imp':>6} {'FMR%':>7} "
        f"{'chk%':>5}  failure reasons",
    ]

    def pct(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value * 100:.{digits}f}"

    for (subset, condition), figures in sorted(report.groups.items()):
        d = figures.as_dict()
        reasons = ", ".join(f"{k} {v}" for k, v in d["failure_reasons"].items())
        lines.append(
            f"{subset:18} {condition:16} {d['genuine']:5d} {pct(d['fta']):>6} {pct(d['fnmr']):>6} {pct(d['frr']):>6} "
            f"{d['impostor']:6d} {pct(d['fmr'], 3):>7} {pct(d['checks_refuse_correct']):>5}  {reasons}"
        )
    if report.pad:
        pad = report.pad
        lines.append(
            f"BPCER {pct(pad['bpcer'])} % ({pad['bpcer_counts'][0]} of {pad['bpcer_counts'][1]} bona fide, "
            f"95 % upper bound {pad['bpcer_upper_95'] * 100:.1f} %)"
        )
        for name, s in pad["apcer"].items():
            lines.append(
                f"APCER {name}: {s['apcer'] * 100:.1f} % ({s['accepted']} of {s['presentations']}, "
                f"95 % upper bound {s['upper_95'] * 100:.1f} %)"
            )
        if pad["without_face"]:
            lines.append("no face found: " + ", ".join(f"{k} {v}" for k, v in pad["without_face"].items()))
    if report.pad_by_condition:
        lines.append("presentation attacks per camera variation (bona fide refused by liveness / accepted "
                     "attacks, as Verify answers; of those, refused by a capture check):")
        for condition, pad in report.pad_by_condition.items():
            refused, bona_fide = pad["bpcer_counts"]
            attacks = "  ".join(f"{name} {s['accepted']}/{s['presentations']}" for name, s in pad["apcer"].items())
            capture = ", ".join(f"{k} {v}" for k, v in pad["capture_refused"].items())
            lines.append(f"  {condition:16} bona_fide {refused}/{bona_fide}  {attacks}  capture-refused: {capture or '-'}")
    return "\n".join(lines)
