"""The shipped operating points (models/calibration.toml): loading them, the threshold at a target FMR.

What `kiosk serve` needs of a calibration: the file's schema, the check that it was
measured with the loaded embedder, and the threshold of a calibrated target FMR. The
thresholds are measured offline (`kiosk calibrate`, ``kiosk.offline.scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.errors import ConfigError, UnknownOperatingPoint
from kiosk.pipeline.types import OperatingPoint
from kiosk.settings import load_toml


@dataclass(frozen=True)
class CalibratedPoint:
    target_fmr: float
    threshold: float
    measured_fmr: float
    tar: float
    impostor_pairs: int
    genuine_pairs: int
    note: str = ""


@dataclass(frozen=True)
class Calibration:
    """The shipped operating points and the figures behind them (models/calibration.toml)."""

    embedder: str
    pairs: str
    created: str
    auc: float
    eer: float
    operating_point: tuple[CalibratedPoint, ...] = field(default_factory=tuple)
    # SHA-256 of the embedder's model file: thresholds hold only for the exact weights
    # they were measured with, whatever its version string says.
    embedder_sha256: str = ""

    def operating_point_for(self, target_fmr: float) -> OperatingPoint:
        for point in self.operating_point:
            if math.isclose(point.target_fmr, target_fmr, rel_tol=1e-6):
                return OperatingPoint(point.target_fmr, point.threshold)
        known = ", ".join(f"{p.target_fmr:g}" for p in self.operating_point)
        raise UnknownOperatingPoint(f"target FMR {target_fmr:g} is not calibrated; calibrated: {known}")


def load_calibration(path: Path, embedder_version: str, embedder_sha256: str | None = None) -> Calibration:
    """The calibration at ``path``, refused unless it was measured with this embedder.

    ``embedder_sha256`` (the loaded model file's hash) binds it to the exact weights; a
    file without a hash is refused when one is given.
    """
    calibration = load_toml(Calibration, path)
    if calibration.embedder != embedder_version:
        raise ConfigError(
            f"{path} was calibrated for embedder {calibration.embedder!r}, "
            f"but the manifest's embedder is {embedder_version!r}: run kiosk calibrate"
        )
    if embedder_sha256 is not None and calibration.embedder_sha256 != embedder_sha256:
        raise ConfigError(
            f"{path} was calibrated for the embedder file with SHA-256 "
            f"{calibration.embedder_sha256 or '(none given)'}, "
            f"but the selected embedder's file has SHA-256 {embedder_sha256}: "
            "set models.calibration to that embedder's calibration, or run kiosk calibrate"
        )
    if not calibration.operating_point:
        raise ConfigError(f"{path} has no operating points")
    return calibration
