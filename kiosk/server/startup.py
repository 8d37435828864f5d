"""Start-up refusals that must come before any listener opens.

`kiosk serve` opens its listeners first and loads the models afterwards (health says
NOT_SERVING meanwhile). A setting that can never work must stop the service before
that, with a message naming it: otherwise the service would start, listen, and then
either die after the listener opened (an unknown hardware profile) or go SERVING and
refuse every call (an uncalibrated ``decision.target_fmr``). These checks read only
small TOML files, no model.
"""

from __future__ import annotations

import errno
import socket

from kiosk.calibration import Calibration
from kiosk.errors import ConfigError, UnknownOperatingPoint
from kiosk.runtime.profile import select_profile
from kiosk.settings import Settings, load_toml


def check_startup(settings: Settings) -> None:
    """Raise ConfigError for a hardware profile or default target FMR the service cannot use."""
    select_profile(settings.hardware.profile)
    path = settings.models.resolved_dir() / settings.models.calibration
    calibration = load_toml(Calibration, path)
    try:
        calibration.operating_point_for(settings.decision.target_fmr)
    except UnknownOperatingPoint:
        known = ", ".join(f"{p.target_fmr:g}" for p in calibration.operating_point) or "none"
        raise ConfigError(
            f"decision.target_fmr {settings.decision.target_fmr:g} has no calibrated threshold in {path} "
            f"(calibrated: {known}): set one of those, or calibrate it with `kiosk calibrate`"
        ) from None


def bind_failure(host: str, port: int) -> str:
    """Why gRPC could not bind ``host:port``, as the OS says it ("address already in use").

    gRPC Python reports only "Failed to bind ...; set GRPC_VERBOSITY=debug": binding a
    plain socket to the same address recovers the operating system's reason.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve {host!r}: {e.strerror}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return "address already in use (another kiosk serve, or another program, listens there)"
                return e.strerror or str(e)
    return "gRPC could not bind it"
