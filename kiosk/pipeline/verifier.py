"""The verification pipeline: ID photo + live photo(s) -> decision.

decode -> detect -> dominant face -> align -> quality -> passive liveness (live photos
only) -> embed -> compare -> decision, all inside a ``Scratch`` that zeroes every buffer
before the call returns, on success and on error. Capture problems (no face, a second
person, an unusable face) are not errors: they become a RETRY decision with a stable
reason code. So does a live photo that the passive-liveness model judges an attack
(``presentation_attack_suspected``): it is never a MATCH, and the kiosk retries under
supervision rather than telling a possibly genuine person that they do not match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kiosk.calibration import Calibration, load_calibration
from kiosk.liveness_calibration import LivenessCalibration, load_liveness_calibration
from kiosk.errors import ConfigError, InvalidRequest, LowQuality, NoFace, Undecidable
from kiosk.pipeline import quality
from kiosk.pipeline.align import align_face
from kiosk.pipeline.compare import chip_sized, cosine_similarity, fuse_embeddings, matched_degradation
from kiosk.pipeline.decode import ImageLimits, decode_image
from kiosk.pipeline.detect import MtcnnDetector, MtcnnThresholds, dominant_face
from kiosk.pipeline.embed import Embedder
from kiosk.pipeline.eyes import EyeStateModel
from kiosk.pipeline.landmarks import FaceMesh
from kiosk.pipeline.liveness import PASSIVE_CHECK, PassiveLiveness, PresentationAttackSuspected
from kiosk.pipeline.scratch import Scratch, StageTimer
from kiosk.pipeline.types import (
    AlignedFace,
    BgrImage,
    Box,
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
from kiosk.runtime.manifest import load_manifest
from kiosk.runtime.profile import HardwareProfile, select_profile
from kiosk.runtime.sessions import SessionFactory
from kiosk.settings import QualityLimits, Settings

# Chip photos are cropped tight around the head; MTCNN misses faces cut by the border,
# so the ID photo gets a replicated margin of this fraction on every side.
ID_PHOTO_MARGIN = 0.2


@dataclass(frozen=True)
class AnalysedFace:
    """One image's subject face: safe finding plus its embedding (held in the scratch)."""

    finding: FaceFinding
    embedding: Embedding
    # P(live) from the passive-liveness model, when it was asked for (live photos of Verify).
    passive_score: float | None = None
    # A chip-sized ID photo: both sides are embedded from a softened crop (compare.matched_degradation).
    chip_sized: bool = False


def decide(similarity: float, operating_point: OperatingPoint) -> Decision:
    return Decision.MATCH if similarity >= operating_point.threshold else Decision.NO_MATCH


def scaled_for_detection(image: BgrImage, max_side: int) -> tuple[BgrImage, float]:
    """The image shrunk so its long side is at most ``max_side``, and the scale applied."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


class Verifier:
    def __init__(
        self,
        detector: MtcnnDetector,
        embedder: Embedder,
        calibration: Calibration | None,
        settings: Settings,
        profile: HardwareProfile,
        model_versions: dict[str, str],
        face_mesh: FaceMesh | None = None,
        eye_state: EyeStateModel | None = None,
        passive_liveness: PassiveLiveness | None = None,
        liveness_calibration: LivenessCalibration | None = None,
    ):
        self.detector = detector
        # Dense landmarks for the live session's challenges; the Verify path does not use them.
        self.face_mesh = face_mesh
        # Eye openness for the quality check on single photos (fr_eye).
        self.eye_state = eye_state
        # P(live) of a live photo, and the calibrated threshold it is held to.
        self.passive_liveness = passive_liveness
        self.liveness_calibration = liveness_calibration
        self.embedder = embedder
        self.calibration = calibration
        self.settings = settings
        self.profile = profile
        self.model_versions = model_versions
        limits = settings.limits
        self.image_limits = ImageLimits(limits.max_image_bytes, limits.max_image_pixels, limits.max_image_side)

    @classmethod
    def load(cls, settings: Settings, calibrated: bool = True) -> "Verifier":
        """Hash-check and load the bundled models for the configured profile, then warm up.

        ``calibrated=False`` skips the calibration files (match thresholds and the liveness
        threshold): only for `kiosk calibrate` and `kiosk liveness-report` on a new model.
        """
        profile = select_profile(settings.hardware.profile)
        models_dir = settings.models.resolved_dir()
        manifest = load_manifest(models_dir / settings.models.manifest)
        factory = SessionFactory(models_dir, manifest, profile.onnxruntime)
        roles = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder")
        sessions = {role: factory.create(role) for role in roles}
        detector = MtcnnDetector(sessions["mtcnn_pnet"], sessions["mtcnn_rnet"], sessions["mtcnn_onet"])
        embedder = Embedder(*sessions["embedder"])
        versions = {role: entry.version for role, (_, entry) in sessions.items()}
        calibration = (
            load_calibration(Path(models_dir) / settings.models.calibration, versions["embedder"])
            if calibrated
            else None
        )
        face_mesh = FaceMesh(*factory.create("face_mesh"))
        eye_session, liveness_session = factory.create("eye_state"), factory.create("liveness")
        versions["eye_state"] = eye_session[1].version
        versions["liveness"] = liveness_session[1].version
        liveness_calibration = (
            load_liveness_calibration(Path(models_dir) / settings.models.liveness, versions["liveness"])
            if calibrated
            else None
        )
        verifier = cls(
            detector,
            embedder,
            calibration,
            settings,
            profile,
            versions,
            face_mesh,
            eye_state=EyeStateModel(*eye_session),
            passive_liveness=PassiveLiveness(*liveness_session),
            liveness_calibration=liveness_calibration,
        )
        verifier.warm_up()
        return verifier

    @property
    def operating_points(self) -> tuple[OperatingPoint, ...]:
        if self.calibration is None:
            return ()
        return tuple(OperatingPoint(p.target_fmr, p.threshold) for p in self.calibration.operating_point)

    def operating_point(self, target_fmr: float | None) -> OperatingPoint:
        wanted = self.settings.decision.target_fmr if not target_fmr else target_fmr
        if self.calibration is None:
            raise ConfigError("no calibration loaded: run kiosk calibrate")
        return self.calibration.operating_point_for(wanted)

    def warm_up(self) -> None:
        """One inference per model so the first real request does not pay for lazy initialisation."""
        blank = np.full((240, 320, 3), 128, dtype=np.uint8)
        self.detector.detect(blank, self.profile.detector.min_face_px)
        self.embedder.embed(np.zeros((112, 112, 3), dtype=np.uint8))
        if self.face_mesh is not None:
            self.face_mesh.warm_up()
        if self.eye_state is not None:
            self.eye_state.warm_up()
        if self.passive_liveness is not None:
            self.passive_liveness.warm_up()

    def verify(
        self, id_photo: bytes, live_photos: Sequence[bytes], target_fmr: float | None = None
    ) -> Verification:
        operating_point = self.operating_point(target_fmr)
        if not live_photos:
            raise InvalidRequest("at least one live photo is required")
        if len(live_photos) > self.settings.limits.max_live_photos:
            raise InvalidRequest(
                f"{len(live_photos)} live photos given, at most {self.settings.limits.max_live_photos} are accepted"
            )
        timer = StageTimer()
        findings: list[FaceFinding] = []
        with Scratch() as scratch:
            try:
                reference = self.analyse(scratch, id_photo, ImageRole.ID_PHOTO, 0, findings, timer)
                live = analyse_best_frames(
                    lambda i, photo: self.analyse(
                        scratch, photo, ImageRole.LIVE_FRAME, i, findings, timer, passive_liveness=True,
                        soften=reference.chip_sized,
                    ),
                    live_photos,
                )
            except Undecidable as e:
                return Verification(
                    decision=Decision.RETRY,
                    reason=e.reason,
                    similarity=None,
                    operating_point=operating_point,
                    findings=tuple(findings),
                    model_versions=dict(self.model_versions),
                    timings_ms=timer.as_dict(),
                    message=e.message,
                    liveness=refused_liveness(e),
                )
            with timer.stage("compare"):
                probe = scratch.keep(fuse_best_frames(live))
                similarity = cosine_similarity(reference.embedding, probe)
        decision = decide(similarity, operating_point)
        # Lighting never refuses a face that matches; on a non-match it may be why: retry.
        lighting = lighting_retry(decision, findings)
        return Verification(
            decision=decision if not lighting else Decision.RETRY,
            reason="" if not lighting else POOR_LIGHTING,
            message=lighting,
            similarity=similarity,
            operating_point=operating_point,
            findings=tuple(findings),
            model_versions=dict(self.model_versions),
            timings_ms=timer.as_dict(),
            # Every live photo decided on passed the passive check: report the weakest.
            liveness=LivenessOutcome(LivenessStatus.PASSED, passive_score=min(face.passive_score for face in live)),
        )

    def analyse(
        self,
        scratch: Scratch,
        encoded: bytes,
        role: ImageRole,
        index: int,
        findings: list[FaceFinding],
        timer: StageTimer,
        *,
        passive_liveness: bool = False,
        soften: bool = False,
    ) -> AnalysedFace:
        """Decode one image and return its subject face; appends its finding even on failure."""
        with timer.stage("decode"):
            image = scratch.keep(decode_image(encoded, self.image_limits))
        return self.analyse_image(
            scratch, image, role, index, findings, timer, passive_liveness=passive_liveness, soften=soften
        )

    def analyse_image(
        self,
        scratch: Scratch,
        image: BgrImage,
        role: ImageRole,
        index: int,
        findings: list[FaceFinding],
        timer: StageTimer,
        *,
        passive_liveness: bool = False,
        soften: bool = False,
    ) -> AnalysedFace:
        """The subject face of a decoded image, quality-checked and embedded.

        A chip-sized ID photo, and with ``soften`` a live photo compared with one, are
        embedded from a softened crop (``compare.matched_degradation``).

        With ``passive_liveness`` (live photos only) a usable face must also pass the
        passive-liveness threshold, else ``PresentationAttackSuspected`` is raised.
        """
        with timer.stage("detect"):
            try:
                face = self.subject_face(scratch, image, role)
            except Undecidable:
                findings.append(FaceFinding(role, index, face_found=False))
                raise
        with timer.stage("align"):
            aligned = scratch.keep(align_face(image, face.landmarks))
        with timer.stage("quality"):
            checks = self.assess_quality(image, face, aligned, role)
        finding = FaceFinding(role, index, True, face.box, face.score, checks)
        findings.append(finding)
        problems = quality.failed(checks)
        if problems:
            codes = ", ".join(sorted({p.code for p in problems}))
            raise LowQuality("low_quality", f"the {role.value.replace('_', ' ')} is not usable: {codes}")
        passive_score = None
        if passive_liveness:
            with timer.stage("liveness"):
                passive_score = self.check_passive_liveness(image, face)
        chip = role is ImageRole.ID_PHOTO and chip_sized(quality.inter_eye_distance(face.landmarks))
        with timer.stage("embed"):
            if chip or soften:
                aligned = scratch.keep(matched_degradation(aligned))
            embedding = scratch.keep(self.embedder.embed(aligned))
        return AnalysedFace(finding, embedding, passive_score, chip)

    def assess_quality(
        self, image: BgrImage, face: FaceDetection, aligned: AlignedFace, role: ImageRole
    ) -> tuple[QualityFinding, ...]:
        """Every quality check of ``face`` in ``image`` with the role's limits, eye model included."""
        limits = self.quality_limits(role)
        # A limit of 0 switches the eye check off (the ID photo): skip the model too.
        eyes = self.eye_state.openness(image, face) if self.eye_state and limits.min_eye_open_probability > 0 else None
        height, width = image.shape[:2]
        return quality.assess(face.landmarks, aligned, limits, box=face.box, frame_size=(width, height), eyes=eyes)

    def check_passive_liveness(self, image: BgrImage, face: FaceDetection) -> float:
        """P(live) of a live photo's face; raises ``PresentationAttackSuspected`` below the threshold."""
        if self.passive_liveness is None or self.liveness_calibration is None:
            raise ConfigError("no passive-liveness model or threshold loaded: run kiosk liveness-report --out")
        score = self.passive_liveness.score(image, face)
        if score < self.liveness_calibration.threshold:
            raise PresentationAttackSuspected(score)
        return score

    def embed_file(self, path: Path) -> Embedding:
        """Embedding of a photo file's subject face, for offline evaluation: no quality gate.

        Both sides of an evaluation pair go through the ID-photo path (margin, no
        second-face refusal) so that news photos with bystanders still get scored.
        """
        with Scratch() as scratch:
            image = scratch.keep(decode_image(Path(path).read_bytes(), self.image_limits))
            face = self.subject_face(scratch, image, ImageRole.ID_PHOTO)
            aligned = scratch.keep(align_face(image, face.landmarks))
            return self.embedder.embed(aligned)

    def passive_score_file(self, path: Path) -> float:
        """P(live) of a photo file's subject face as a live frame, for offline evaluation: no quality gate."""
        if self.passive_liveness is None:
            raise ConfigError("no passive-liveness model loaded")
        with Scratch() as scratch:
            image = scratch.keep(decode_image(Path(path).read_bytes(), self.image_limits))
            face = self.subject_face(scratch, image, ImageRole.LIVE_FRAME)
            return self.passive_liveness.score(image, face)

    def quality_limits(self, role: ImageRole) -> QualityLimits:
        q = self.settings.quality
        return q.id_photo if role is ImageRole.ID_PHOTO else q.live_frame

    def min_face_px(self, image: BgrImage, floor_px: float) -> float:
        return max(floor_px, self.settings.quality.min_face_fraction * min(image.shape[:2]))

    def subject_face(self, scratch: Scratch, image: BgrImage, role: ImageRole) -> FaceDetection:
        """The dominant face of ``image`` with box and landmarks in ``image``'s pixels."""
        height, width = image.shape[:2]
        if role is ImageRole.ID_PHOTO:
            margin = round(ID_PHOTO_MARGIN * max(height, width))
            padded = scratch.keep(cv2.copyMakeBorder(image, margin, margin, margin, margin, cv2.BORDER_REPLICATE))
            min_face = self.min_face_px(image, self.settings.quality.id_photo_min_face_px)
            faces = self.detector.detect(padded, min_face)
            if not faces:
                relaxed = self.settings.quality.id_photo_retry_threshold
                faces = self.detector.detect(padded, min_face, MtcnnThresholds(relaxed, relaxed, relaxed))
            faces = [shift_detection(f, -margin, 1.0) for f in faces]
        else:
            small, scale = scaled_for_detection(image, self.profile.detector.max_input_side)
            if small is not image:
                scratch.keep(small)
            faces = self.detector.detect(small, self.min_face_px(image, self.profile.detector.min_face_px) * scale)
            faces = [shift_detection(f, 0, scale) for f in faces]
        return dominant_face(faces, width, height, role)


# RETRY reason of a non-match under a lighting signal: counted per reason by the service's
# retry metric (kiosk_retries_total{reason="poor_lighting"}), the operator's cue to fix the lamp.
POOR_LIGHTING = "poor_lighting"

def analyse_best_frames(analyse, live_photos: Sequence[bytes]) -> list[AnalysedFace]:
    """Every live photo analysed; those refused for capture (no face, low quality: mid-blink,
    motion) are left out as long as one is usable, so a bad frame never fails the call.

    A presentation-attack refusal or a second person on any photo still ends the call.
    When no photo is usable, the first capture refusal is raised (its guidance).
    """
    usable, first_refusal = [], None
    for i, photo in enumerate(live_photos):
        try:
            usable.append(analyse(i, photo))
        except (LowQuality, NoFace) as e:
            first_refusal = first_refusal or e
    if not usable:
        raise first_refusal
    return usable


def fuse_best_frames(live: Sequence[AnalysedFace]) -> np.ndarray:
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


def refused_liveness(error: Undecidable) -> LivenessOutcome:
    """The liveness outcome of a verification that ended without a comparison."""
    if isinstance(error, PresentationAttackSuspected):
        return LivenessOutcome(LivenessStatus.FAILED, PASSIVE_CHECK, error.score)
    # Something else stopped it before every live photo was checked.
    return LivenessOutcome(LivenessStatus.NOT_PERFORMED)


def shift_detection(face: FaceDetection, offset: float, scale: float) -> FaceDetection:
    """Map a detection from a padded or scaled copy back to the original image's pixels."""
    box = face.box
    return FaceDetection(
        box=Box((box.x + offset) / scale, (box.y + offset) / scale, box.width / scale, box.height / scale),
        score=face.score,
        landmarks=((face.landmarks + offset) / scale).astype(np.float32),
    )
