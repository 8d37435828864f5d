"""What the service runs and how it is hardened, as reported by ``GetInfo`` and the metrics.

``swap_active`` and ``core_dumps_disabled`` are read from the live process and system
on every call, not from settings, so an operator sees the state the images actually
live in; ``core_dumps_disabled`` needs both of ``kiosk.runtime.hardening``'s measures
(a zero core limit and a non-dumpable process). ``memory_locked`` likewise: the
process's locked memory (VmLck) now.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import kiosk
from kiosk.domain import OperatingPoint
from kiosk.runtime.hardening import core_dumps_disabled, locked_kib, swap_active
from kiosk.runtime.profile import read_board_model
from kiosk.settings import Settings

if TYPE_CHECKING:
    # Only a type here: the client reads ServiceInfo without loading the pipeline.
    from kiosk.pipeline.verifier import Verifier

# Distributions whose versions GetInfo reports, by the name it reports them under.
RUNTIME_DISTRIBUTIONS = {
    "onnxruntime": "onnxruntime",
    "opencv": "opencv-python-headless",
    "numpy": "numpy",
    "grpcio": "grpcio",
    "protobuf": "protobuf",
}


@dataclass(frozen=True)
class ServiceLimits:
    max_message_bytes: int
    max_image_bytes: int
    max_image_pixels: int
    max_image_side: int
    max_live_photos: int
    max_concurrent_calls: int
    call_deadline_s: float
    session_deadline_s: float


@dataclass(frozen=True)
class ServiceInfo:
    service_version: str
    model_versions: dict[str, str]
    operating_points: tuple[OperatingPoint, ...]
    default_target_fmr: float
    hardware_profile: str
    limits: ServiceLimits
    device_id: str
    accepted_consent_versions: tuple[str, ...]
    swap_active: bool
    core_dumps_disabled: bool
    runtime_versions: dict[str, str]
    calibration_created: str
    board_model: str
    # PEM of the Ed25519 key signing receipts and audit checkpoints (kiosk.receipts).
    receipt_public_key: str = ""
    receipt_key_ephemeral: bool = False
    # Read from the live process like swap_active (VmLck > 0): locked against swap.
    memory_locked: bool = False
    # The thresholds of comparisons with a chip-sized ID photo (models.chip_calibration).
    chip_operating_points: tuple[OperatingPoint, ...] = ()


def service_version() -> str:
    return kiosk.__version__


def runtime_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries the pipeline runs on ("" if missing)."""
    return dict(_runtime_versions())


# Read once per process: each lookup scans sys.path for the distribution's metadata, and
# the libraries this process has loaded do not change while it runs (a later upgrade on
# disk is not what it runs until it restarts).
@functools.cache
def _runtime_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name, distribution in RUNTIME_DISTRIBUTIONS.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def collect_info(settings: Settings, verifier: Verifier, signer=None) -> ServiceInfo:
    """``signer`` (a ``kiosk.receipts.DeviceSigner``) adds the receipt key's public half."""
    service, limits = settings.service, settings.limits
    return ServiceInfo(
        service_version=service_version(),
        model_versions=dict(verifier.model_versions),
        operating_points=verifier.operating_points,
        default_target_fmr=settings.decision.target_fmr,
        hardware_profile=verifier.profile.name,
        limits=ServiceLimits(
            max_message_bytes=service.max_message_bytes,
            max_image_bytes=limits.max_image_bytes,
            max_image_pixels=limits.max_image_pixels,
            max_image_side=limits.max_image_side,
            max_live_photos=limits.max_live_photos,
            max_concurrent_calls=service.max_concurrent_calls,
            call_deadline_s=service.call_deadline_s,
            session_deadline_s=service.session_deadline_s,
        ),
        device_id=service.device_id,
        accepted_consent_versions=settings.consent.accepted_versions,
        swap_active=swap_active(),
        core_dumps_disabled=core_dumps_disabled(),
        runtime_versions=runtime_versions(),
        calibration_created=verifier.calibration.created if verifier.calibration is not None else "",
        board_model=read_board_model(),
        receipt_public_key=signer.public_pem if signer is not None else "",
        receipt_key_ephemeral=signer.ephemeral if signer is not None else False,
        memory_locked=locked_kib() > 0,
        chip_operating_points=verifier.chip_operating_points,
    )
