"""The passive-liveness threshold and the ISO/IEC 30107-3 figures behind it (models/liveness.toml).

Terms as in ISO/IEC 30107-3: a *bona fide* presentation is a live person in front of the
camera, an *attack* presentation shows a presentation attack instrument (PAI) of some
*species*. APCER (per species) is the share of attack presentations classified bona
fide; BPCER the share of bona fide presentations classified as attacks. Presentations
where no face is found are not classified at all: they are counted, not scored.

What `kiosk serve` needs: the file's schema and ``load_liveness_calibration``, which
checks it against the loaded liveness model. The figures are measured offline
(`kiosk liveness-report`, ``kiosk.offline.liveness_report``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiosk.errors import ConfigError
from kiosk.settings import load_toml


@dataclass(frozen=True)
class SpeciesRate:
    """APCER of one PAI species at one threshold."""

    species: str
    attacks: int
    # Attack presentations classified bona fide (scored at or above the threshold).
    accepted: int
    apcer: float
    apcer_upper_95: float


@dataclass(frozen=True)
class PadFigures:
    """BPCER and APCER per species at one threshold."""

    threshold: float
    bona_fide: int
    bona_fide_rejected: int
    bpcer: float
    bpcer_upper_95: float
    species: tuple[SpeciesRate, ...] = field(default_factory=tuple)

    def rate(self, species: str) -> SpeciesRate:
        for rate in self.species:
            if rate.species == species:
                return rate
        raise KeyError(species)


@dataclass(frozen=True)
class BpcerPoint:
    """The threshold that keeps BPCER at a target on the calibration set, and the APCER it gives."""

    target_bpcer: float
    figures: PadFigures


@dataclass(frozen=True)
class LivenessCalibration:
    """The shipped passive-liveness threshold and the figures behind it (models/liveness.toml)."""

    # Version of the liveness model (manifest) the scores came from.
    model: str
    # What was scored: the labelled folder and its bona fide / attack sets.
    data: str
    created: str
    # Live when P(live) >= threshold.
    threshold: float
    # Why this threshold: the figures below cannot choose it alone (README).
    rationale: str
    # Attack presentations in which no face was found: never scored, never accepted.
    attacks_without_face: int
    bona_fide_without_face: int
    shipped: PadFigures
    at_bpcer: tuple[BpcerPoint, ...] = field(default_factory=tuple)


def load_liveness_calibration(path: Path, model_version: str) -> LivenessCalibration:
    calibration = load_toml(LivenessCalibration, path)
    if calibration.model != model_version:
        raise ConfigError(
            f"{path} was calibrated for liveness model {calibration.model!r}, "
            f"but the manifest's is {model_version!r}: run kiosk liveness-report --out"
        )
    if not 0.0 < calibration.threshold < 1.0:
        raise ConfigError(f"{path}: threshold must be between 0 and 1 (exclusive)")
    if calibration.shipped.threshold != calibration.threshold:
        raise ConfigError(f"{path}: the figures in [shipped] are not for the threshold in force")
    return calibration
