"""One analysis path per face: decoded image -> subject face -> quality -> liveness -> embedding.

Verify (``Verifier.verify``), the live session (``LiveSession``), the offline tools
(evaluation, calibration, the liveness report) and the board tools all analyse a face
with ``analyse_face``; only what they do with the result differs. Capture problems (no
face, a second person, an unusable face, a presentation attack) are not errors: they
come back as a ``CaptureProblem`` holding the finding and the ``Undecidable`` that says
why, and the caller turns it into RETRY or guidance. Every buffer the analysis creates
is kept in the caller's ``Scratch``; the embedding in ``keep`` (the scratch by default)
so a session can hold it past the frame that produced it.

``conclude`` is the one place a ``Verification`` is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kiosk.errors import ConfigError, LowQuality, Undecidable
from kiosk.pipeline import injection, quality
from kiosk.pipeline.align import align_face
from kiosk.pipeline.compare import chip_sized, matched_degradation
from kiosk.pipeline.decode import ImageLimits, decode_image
from kiosk.pipeline.liveness import PASSIVE_CHECK, PresentationAttackSuspected
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.subject import SubjectRules, find_subject_face
from kiosk.pipeline.tracking import FaceTracker
from kiosk.pipeline.types import (
    AlignedFace,
    BgrImage,
    Decision,
    Embedding,
    FaceDetection,
    FaceFinding,
    ImageRole,
    LivenessOutcome,
    LivenessStatus,
    OperatingPoint,
    QualityFinding,
    Verification,
)
from kiosk.settings import QualityLimits, Settings

if TYPE_CHECKING:
    from kiosk.runtime.models import Models
    from kiosk.runtime.profile import HardwareProfile


@dataclass(frozen=True)
class AnalysisRules:
    """Everything but the models that decides how a face is analysed."""

    subject: SubjectRules
    id_photo: QualityLimits
    live_frame: QualityLimits
    image_limits: ImageLimits
    # P(live) a live face must reach; None when no liveness calibration is loaded.
    liveness_threshold: float | None = None

    @classmethod
    def of(cls, settings: Settings, profile: HardwareProfile, liveness_threshold: float | None) -> "AnalysisRules":
        limits = settings.limits
        return cls(
            subject=SubjectRules.of(settings.quality, profile.detector),
            id_photo=settings.quality.id_photo,
            live_frame=settings.quality.live_frame,
            image_limits=ImageLimits(limits.max_image_bytes, limits.max_image_pixels, limits.max_image_side),
            liveness_threshold=liveness_threshold,
        )

    def quality_limits(self, role: ImageRole) -> QualityLimits:
        return self.id_photo if role is ImageRole.ID_PHOTO else self.live_frame


@dataclass(frozen=True)
class AnalysedFace:
    """One image's usable subject face: its safe finding and its embedding (held in a scratch)."""

    finding: FaceFinding
    embedding: Embedding
    # P(live) from the passive-liveness model, when it was asked for.
    passive_score: float | None = None
    # The challenge measures of the face, when a ``measure`` function was given.
    measures: object | None = None
    # The aligned crop (held in the scratch), for the digital-copy check of live photos.
    aligned: AlignedFace | None = None
    # A chip-sized ID photo: both sides are embedded from a softened crop (compare.matched_degradation).
    chip_sized: bool = False
    # Only from ``analyse_face(..., gate=False)`` (the offline acceptance report): why Verify
    # would have refused this face, which was embedded anyway.
    refusal: Undecidable | None = None


@dataclass(frozen=True)
class CaptureProblem:
    """Why an image gave no usable face: ``NoFace``, ``MultipleFaces``, ``LowQuality`` or a presentation attack."""

    finding: FaceFinding
    error: Undecidable
    measures: object | None = None


Measure = Callable[[BgrImage, FaceDetection], object]


def decode_photo(encoded: bytes, rules: AnalysisRules, scratch: Scratch, timer: StageTimer) -> BgrImage:
    with timer.stage("decode"):
        return scratch.keep(decode_image(encoded, rules.image_limits))


def analyse_face(
    models: Models,
    image: BgrImage,
    role: ImageRole,
    rules: AnalysisRules,
    scratch: Scratch,
    timer: StageTimer,
    *,
    index: int = 0,
    passive_liveness: bool = False,
    measure: Measure | None = None,
    keep: Scratch | None = None,
    tracker: FaceTracker | None = None,
    soften: bool = False,
    gate: bool = True,
) -> AnalysedFace | CaptureProblem:
    """The subject face of a decoded image: found, quality-checked, liveness-checked, embedded.

    With ``passive_liveness`` (live photos and frames) a usable face must also reach the
    liveness threshold. ``measure`` (the session's challenge measures) runs on every face
    found, usable or not, before the liveness check. ``tracker`` (a live session's)
    looks for the face in a window around the last one, with full-frame scans often
    enough to catch a second person (``kiosk.pipeline.tracking``).

    ``gate=False`` is for the offline acceptance report only: a face that fails quality or
    liveness is still scored and embedded, and what Verify would have answered is in
    ``AnalysedFace.refusal``, so the report can say whether the comparison alone would
    have decided correctly. Same stages, same order, same limits.
    """
    with timer.stage("detect"):
        try:
            def find(pixels: BgrImage) -> FaceDetection:
                return find_subject_face(models.detector, pixels, role, rules.subject, scratch)

            face = find(image) if tracker is None else tracker.locate(image, find)
        except Undecidable as e:
            # Without its traceback: the traceback's frames reach back (f_back) to the
            # caller's, which holds this result, a cycle that would keep the whole call
            # (the request message and its encoded photos) alive until the cyclic garbage
            # collector runs (tests/integration/test_retention.py found them after a no-face Verify).
            return CaptureProblem(FaceFinding(role, index, face_found=False), e.with_traceback(None))
    with timer.stage("align"):
        aligned = scratch.keep(align_face(image, face.landmarks, models.embedder.aligned_size))
    with timer.stage("quality"):
        checks = assess_quality(models, image, face, aligned, rules.quality_limits(role))
    finding = FaceFinding(role, index, True, face.box, face.score, checks)
    measures = None
    if measure is not None:
        with timer.stage("landmarks"):
            measures = measure(image, face)
    refusal: Undecidable | None = None
    problems = quality.failed(checks)
    if problems:
        codes = ", ".join(sorted({p.code for p in problems}))
        refusal = LowQuality("low_quality", f"the {role.value.replace('_', ' ')} is not usable: {codes}")
        if gate:
            return CaptureProblem(finding, refusal, measures)
    score = None
    if passive_liveness:
        with timer.stage("liveness"):
            if rules.liveness_threshold is None:
                raise ConfigError("no passive-liveness model or threshold loaded: run kiosk liveness-report --out")
            score = passive_score(models, image, face)
        if score < rules.liveness_threshold and refusal is None:
            refusal = PresentationAttackSuspected(score)
            if gate:
                return CaptureProblem(finding, refusal, measures)
    # A chip-sized ID photo, and with ``soften`` a live face compared with one, are embedded
    # from a softened crop: both sides degraded alike match better (compare.matched_degradation).
    chip = role is ImageRole.ID_PHOTO and chip_sized(quality.inter_eye_distance(face.landmarks))
    with timer.stage("embed"):
        embedded = scratch.keep(matched_degradation(aligned)) if chip or soften else aligned
        embedding = (keep or scratch).keep(models.embedder.embed(embedded))
    return AnalysedFace(finding, embedding, score, measures, aligned, chip, refusal)


def assess_quality(
    models: Models, image: BgrImage, face: FaceDetection, aligned: AlignedFace, limits: QualityLimits
) -> tuple[QualityFinding, ...]:
    """Every quality check of ``face`` in ``image`` with the role's limits, eye model included."""
    # A limit of 0 switches the eye check off (the ID photo): skip the model too.
    eyes = (
        models.eye_state.openness(image, face)
        if models.eye_state is not None and limits.min_eye_open_probability > 0
        else None
    )
    # An infinite limit switches the noise check off (the ID photo: no liveness check to protect).
    noise = quality.image_noise(image, face.box) if math.isfinite(limits.max_noise) else None
    height, width = image.shape[:2]
    return quality.assess(
        face.landmarks, aligned, limits, box=face.box, frame_size=(width, height), eyes=eyes, noise=noise
    )


def passive_score(models: Models, image: BgrImage, face: FaceDetection) -> float:
    """P(live) of a live face; ConfigError when the liveness model is not loaded."""
    if models.liveness is None:
        raise ConfigError("no passive-liveness model or threshold loaded: run kiosk liveness-report --out")
    return models.liveness.score(image, face)


# --------------------------------------------------------------------------- offline, no quality gate


def embed_photo(models: Models, encoded: bytes, rules: AnalysisRules, soften: bool = False) -> Embedding:
    """Embedding of a photo's subject face, for offline evaluation: no quality gate.

    Both sides of an evaluation pair go through the ID-photo path (margin, no
    second-face refusal) so that news photos with bystanders still get scored.
    ``soften``: from the softened crop, as Verify embeds both sides of a comparison
    with a chip-sized ID photo (``kiosk calibrate --chip-id-photos``).
    """
    with Scratch() as scratch:
        image = scratch.keep(decode_image(encoded, rules.image_limits))
        face = find_subject_face(models.detector, image, ImageRole.ID_PHOTO, rules.subject, scratch)
        aligned = scratch.keep(align_face(image, face.landmarks, models.embedder.aligned_size))
        if soften:
            aligned = scratch.keep(matched_degradation(aligned))
        return models.embedder.embed(aligned)


def passive_score_photo(models: Models, encoded: bytes, rules: AnalysisRules) -> float:
    """P(live) of a photo's subject face as a live frame, for offline evaluation: no quality gate."""
    with Scratch() as scratch:
        image = scratch.keep(decode_image(encoded, rules.image_limits))
        face = find_subject_face(models.detector, image, ImageRole.LIVE_FRAME, rules.subject, scratch)
        return passive_score(models, image, face)


# --------------------------------------------------------------------------- the decision


def decide(similarity: float, operating_point: OperatingPoint) -> Decision:
    return Decision.MATCH if similarity >= operating_point.threshold else Decision.NO_MATCH


def refused_liveness(error: Undecidable) -> LivenessOutcome:
    """The liveness outcome of a verification that ended without a comparison."""
    if isinstance(error, PresentationAttackSuspected):
        return LivenessOutcome(LivenessStatus.FAILED, PASSIVE_CHECK, error.score)
    if isinstance(error, injection.LivePhotoIsIdPhoto):
        return LivenessOutcome(LivenessStatus.FAILED, injection.CHECK)
    # Something else stopped it before every live photo was checked.
    return LivenessOutcome(LivenessStatus.NOT_PERFORMED)


def conclude(
    decision: Decision,
    reason: str,
    similarity: float | None,
    operating_point: OperatingPoint,
    findings: list[FaceFinding] | tuple[FaceFinding, ...],
    model_versions: dict[str, str],
    timer: StageTimer,
    message: str = "",
    liveness: LivenessOutcome | None = None,
) -> Verification:
    """The one place a ``Verification`` is built: copies, so later frames cannot change it."""
    return Verification(
        decision=decision,
        reason=reason,
        similarity=similarity,
        operating_point=operating_point,
        findings=tuple(findings),
        model_versions=dict(model_versions),
        timings_ms=timer.as_dict(),
        message=message,
        liveness=liveness or LivenessOutcome(),
    )
