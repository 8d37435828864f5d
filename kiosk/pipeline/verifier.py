"""The verification pipeline: ID photo + live photo(s) -> decision.

decode -> detect -> dominant face -> align -> quality -> passive liveness (live photos
only) -> embed -> compare -> decision, all inside a ``Scratch`` that zeroes every buffer
before the call returns, on success and on error. Each face goes through
``kiosk.pipeline.analysis.analyse_face``, the one analysis path the live session and the
offline tools use too; ``Verifier`` holds the loaded models (``kiosk.runtime.models``),
the rules and the calibrations, and turns one request's analyses into a decision.
Capture problems (no face, a second person, an unusable face) are not errors: they
become a RETRY decision with a stable reason code. So does a live photo that the
passive-liveness model judges an attack (``presentation_attack_suspected``): it is never
a MATCH, and the kiosk retries under supervision rather than telling a possibly genuine
person that they do not match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from kiosk.calibration import Calibration, load_calibration
from kiosk.errors import ConfigError, InvalidRequest, LowQuality, NoFace, Undecidable
from kiosk.liveness_calibration import LivenessCalibration, load_liveness_calibration
from kiosk.pipeline.analysis import (  # noqa: F401 (decide, refused_liveness: re-exported for callers)
    AnalysedFace,
    AnalysisRules,
    CaptureProblem,
    analyse_face,
    assess_quality,
    conclude,
    decide,
    decode_photo,
    embed_photo,
    passive_score_photo,
    refused_liveness,
)
from kiosk.pipeline import injection, quality
from kiosk.pipeline.compare import cosine_similarity, fuse_embeddings
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.subject import find_subject_face
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
from kiosk.runtime.models import ALL_ROLES, Models, load_models
from kiosk.runtime.profile import HardwareProfile, select_profile
from kiosk.settings import Settings


class Verifier:
    """The loaded models, the analysis rules and the calibrations: Verify, and a session's source."""

    def __init__(
        self,
        models: Models,
        calibration: Calibration | None,
        settings: Settings,
        profile: HardwareProfile,
        liveness_calibration: LivenessCalibration | None = None,
        chip_calibration: Calibration | None = None,
    ):
        self.models = models
        self.calibration = calibration
        # Thresholds for a chip-sized ID photo (None: the main calibration's serve).
        self.chip_calibration = chip_calibration
        self.liveness_calibration = liveness_calibration
        self.settings = settings
        self.profile = profile
        # Every loaded model, the face mesh included (sessions' challenges run on it):
        # GetInfo, metrics and audit records name the same versions.
        self.model_versions = dict(models.versions)
        threshold = liveness_calibration.threshold if liveness_calibration is not None else None
        self.rules = AnalysisRules.of(settings, profile, threshold)
        self.image_limits = self.rules.image_limits

    @classmethod
    def load(
        cls,
        settings: Settings,
        calibrated: bool = True,
        roles: Iterable[str] = ALL_ROLES,
        threads_per_call: int | None = None,
    ) -> "Verifier":
        """Hash-check and load the models of ``roles`` for the configured profile, then warm up.

        ``calibrated=False`` skips the calibration files (match thresholds and the liveness
        threshold): only for `kiosk calibrate` and `kiosk liveness-report` on a new model.
        A calibration is loaded only with its model's role, and refused unless it was
        measured with that very model file (its SHA-256). ``threads_per_call`` overrides the
        profile's onnxruntime threads, for the offline tools that analyse several images at once
        (``parallel_images``).
        """
        profile = select_profile(settings.hardware.profile)
        if threads_per_call is not None:
            profile = dataclasses.replace(
                profile, onnxruntime=dataclasses.replace(profile.onnxruntime, intra_op_threads=threads_per_call)
            )
        models = load_models(settings, profile, tuple(roles))
        models_dir = settings.models.resolved_dir()
        calibration = liveness_calibration = chip_calibration = None
        if calibrated and models.embedder is not None:
            embedder = models.entries["embedder"]
            calibration = load_calibration(
                Path(models_dir) / settings.models.calibration, embedder.version, embedder.sha256
            )
            if settings.models.chip_calibration:
                chip_calibration = load_calibration(
                    Path(models_dir) / settings.models.chip_calibration, embedder.version, embedder.sha256
                )
                missing = {p.target_fmr for p in calibration.operating_point} - {
                    p.target_fmr for p in chip_calibration.operating_point
                }
                if missing:
                    raise ConfigError(
                        f"{settings.models.chip_calibration} has no threshold for target FMR "
                        f"{', '.join(f'{f:g}' for f in sorted(missing))}, which {settings.models.calibration} has"
                    )
        if calibrated and models.liveness is not None:
            liveness_calibration = load_liveness_calibration(
                Path(models_dir) / settings.models.liveness, models.entries["liveness"].version
            )
        verifier = cls(models, calibration, settings, profile, liveness_calibration, chip_calibration)
        verifier.warm_up()
        return verifier

    # The loaded wrappers, by role (None when not loaded).
    @property
    def detector(self):
        return self.models.detector

    @property
    def embedder(self):
        return self.models.embedder

    @property
    def face_mesh(self):
        return self.models.face_mesh

    @property
    def eye_state(self):
        return self.models.eye_state

    @property
    def passive_liveness(self):
        return self.models.liveness

    def without(self, *roles: str) -> "Verifier":
        """The same verifier with the models of ``roles`` left out (tests: e.g. active liveness alone)."""
        models = dataclasses.replace(self.models, **{role: None for role in roles})
        return type(self)(
            models, self.calibration, self.settings, self.profile, self.liveness_calibration, self.chip_calibration
        )

    @property
    def operating_points(self) -> tuple[OperatingPoint, ...]:
        return _points_of(self.calibration)

    @property
    def chip_operating_points(self) -> tuple[OperatingPoint, ...]:
        return _points_of(self.chip_calibration)

    def operating_point(self, target_fmr: float | None, chip_sized: bool = False) -> OperatingPoint:
        """The threshold of ``target_fmr`` (the settings' default when None); with
        ``chip_sized`` (the ID photo is), the chip calibration's, when one is loaded."""
        wanted = self.settings.decision.target_fmr if not target_fmr else target_fmr
        if self.calibration is None:
            raise ConfigError("no calibration loaded: run kiosk calibrate")
        calibration = self.chip_calibration if chip_sized and self.chip_calibration is not None else self.calibration
        return calibration.operating_point_for(wanted)

    def warm_up(self) -> None:
        """One inference per model so the first real request does not pay for lazy initialisation."""
        self.models.warm_up(self.profile.detector.min_face_px)

    def verify(
        self,
        id_photo: bytes,
        live_photos: Sequence[bytes],
        target_fmr: float | None = None,
        timer: StageTimer | None = None,
    ) -> Verification:
        """``timer`` may carry a cancellation check, run as each stage starts (``StageTimer``)."""
        operating_point = self.operating_point(target_fmr)
        if not live_photos:
            raise InvalidRequest("at least one live photo is required")
        if len(live_photos) > self.settings.limits.max_live_photos:
            raise InvalidRequest(
                f"{len(live_photos)} live photos given, at most {self.settings.limits.max_live_photos} are accepted"
            )
        timer = timer or StageTimer()
        findings: list[FaceFinding] = []
        photos = [(ImageRole.ID_PHOTO, 0, id_photo)] + [(ImageRole.LIVE_FRAME, i, p) for i, p in enumerate(live_photos)]
        with Scratch() as scratch:
            reference: AnalysedFace | None = None
            live_results: list[AnalysedFace | CaptureProblem] = []
            for role, index, encoded in photos:
                image = decode_photo(encoded, self.rules, scratch, timer)
                result = analyse_face(
                    self.models, image, role, self.rules, scratch, timer,
                    index=index, passive_liveness=role is ImageRole.LIVE_FRAME,
                    soften=reference is not None and reference.chip_sized,
                )
                findings.append(result.finding)
                if role is ImageRole.LIVE_FRAME:
                    live_results.append(result)
                elif isinstance(result, CaptureProblem):
                    e = result.error
                    return conclude(
                        Decision.RETRY, e.reason, None, operating_point, findings, self.model_versions, timer,
                        e.message, refused_liveness(e),
                    )
                else:
                    reference = result
                    operating_point = self.operating_point(target_fmr, reference.chip_sized)
            live = usable_live_faces(live_results)
            if isinstance(live, Undecidable):
                return conclude(
                    Decision.RETRY, live.reason, None, operating_point, findings, self.model_versions, timer,
                    live.message, refused_liveness(live),
                )
            copy = copy_of_id_photo(reference, live)
            if copy is not None:
                return conclude(
                    Decision.RETRY, copy.reason, None, operating_point, findings, self.model_versions, timer,
                    copy.message, refused_liveness(copy),
                )
            with timer.stage("compare"):
                probe = scratch.keep(fuse_best_frames(live))
                similarity = cosine_similarity(reference.embedding, probe)
        # Every live photo decided on passed the passive check: report the weakest.
        liveness = LivenessOutcome(LivenessStatus.PASSED, passive_score=min(face.passive_score for face in live))
        decision = decide(similarity, operating_point)
        # Lighting never refuses a face that matches; on a non-match it may be why: retry.
        lighting = lighting_retry(decision, findings)
        if lighting:
            return conclude(
                Decision.RETRY, POOR_LIGHTING, similarity, operating_point, findings, self.model_versions, timer,
                lighting, liveness,
            )
        return conclude(
            decision, "", similarity, operating_point, findings, self.model_versions, timer, liveness=liveness
        )

    def embed_file(self, path: Path) -> Embedding:
        """Embedding of a photo file's subject face, for offline evaluation: no quality gate."""
        return embed_photo(self.models, Path(path).read_bytes(), self.rules)

    def passive_score_file(self, path: Path) -> float:
        """P(live) of a photo file's subject face as a live frame, for offline evaluation: no quality gate."""
        return passive_score_photo(self.models, Path(path).read_bytes(), self.rules)

    # Single stages, for the benchmarks and board tools that time one of them.
    def subject_face(self, scratch: Scratch, image: BgrImage, role: ImageRole) -> FaceDetection:
        """The dominant face of ``image`` with box and landmarks in ``image``'s pixels."""
        return find_subject_face(self.models.detector, image, role, self.rules.subject, scratch)

    def assess_quality(
        self, image: BgrImage, face: FaceDetection, aligned: AlignedFace, role: ImageRole
    ) -> tuple[QualityFinding, ...]:
        return assess_quality(self.models, image, face, aligned, self.rules.quality_limits(role))

    def min_face_px(self, image: BgrImage, floor_px: float) -> float:
        return self.rules.subject.min_face_px(image, floor_px)


def copy_of_id_photo(reference: AnalysedFace, live: Sequence[AnalysedFace]) -> injection.LivePhotoIsIdPhoto | None:
    """Why a live photo reproduces the ID photo (``kiosk.pipeline.injection``), or None when none does."""
    for index, face in enumerate(live):
        similarity = cosine_similarity(reference.embedding, face.embedding)
        if injection.is_copy(similarity, injection.aligned_correlation(reference.aligned, face.aligned)):
            return injection.LivePhotoIsIdPhoto(index)
    return None


# RETRY reason of a non-match under a lighting signal: counted per reason by the service's
# retry metric (kiosk_retries_total{reason="poor_lighting"}), the operator's cue to fix the lamp.
POOR_LIGHTING = "poor_lighting"


def usable_live_faces(results: Sequence[AnalysedFace | CaptureProblem]) -> list[AnalysedFace] | Undecidable:
    """The live photos to decide on, or why there are none.

    Photos refused for capture (no face, low quality: mid-blink, motion) are left out as
    long as one is usable, so a bad frame never fails the call; a presentation-attack
    refusal or a second person on any photo still ends it. With no usable photo, the
    first capture refusal (its guidance).
    """
    usable, first_refusal = [], None
    for result in results:
        if isinstance(result, AnalysedFace):
            usable.append(result)
        elif isinstance(result.error, (LowQuality, NoFace)):
            first_refusal = first_refusal or result.error
        else:
            return result.error
    return usable or first_refusal


def fuse_best_frames(live: Sequence[AnalysedFace]) -> Embedding:
    """One probe from the usable live photos: the plain mean of their embeddings.

    Measured on NUAA genuine pairs with three live frames (one motion-blurred past the
    limit, one clean, one noisy): mean genuine similarity 0.869 for the plain mean of the
    usable frames, 0.825 weighted by ``quality.frame_utility`` (best 3), 0.756 for the best
    single frame, 0.752 for the first usable one; so the mean it is, over every usable frame.
    """
    return fuse_embeddings([face.embedding for face in live])


def lighting_retry(decision: Decision, findings: Sequence[FaceFinding]) -> str:
    """The RETRY message when a non-match came with a lighting signal, else ""."""
    if decision is not Decision.NO_MATCH:
        return ""
    codes = sorted({q.code for f in findings for q in quality.operator_signals(f.quality)})
    return f"no match under poor lighting ({', '.join(codes)}): the operator should check the light" if codes else ""


def _points_of(calibration: Calibration | None) -> tuple[OperatingPoint, ...]:
    if calibration is None:
        return ()
    return tuple(OperatingPoint(p.target_fmr, p.threshold) for p in calibration.operating_point)
