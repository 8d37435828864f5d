"""Shared fixtures: the real face data beside the repository and one loaded verifier per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports cv2: kiosk.pipeline sets OpenCV's decoder ceilings, which
# OpenCV reads only when it is loaded (see kiosk/pipeline/__init__.py).
import kiosk.pipeline  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def faces_root() -> Path:
    """../shared/data/faces beside the checkout (override with KIOSK_FACES_DIR)."""
    return Path(os.environ.get("KIOSK_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))


@pytest.fixture(scope="session")
def faces() -> Path:
    root = faces_root()
    if not (root / "pairs.csv").is_file():
        pytest.fail(f"face data not found at {root}: CI and developers have ../shared beside the repo")
    return root


@pytest.fixture(scope="session")
def verifier():
    from kiosk.pipeline.verifier import Verifier
    from kiosk.settings import Settings

    return Verifier.load(Settings())


# Hardware-in-the-loop options live here, in the root conftest, because pytest only
# registers command-line options from conftest files it loads at start-up.
HOW_TO_RUN = (
    "hardware-in-the-loop: needs a kiosk service on a board; run "
    "`python -m pytest tests/hil --device HOST:PORT [--device-ssh pi@HOST]`"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption("--device", help="address of the kiosk service under test (host:port or unix:PATH)")
    group.addoption("--device-ssh", help="ssh destination of the board, for temperature, throttling and RSS")
    group.addoption("--device-pid", type=int, help="the service's PID, when the tests run on the board")
    group.addoption("--hil-duration", type=float, default=300.0, help="seconds of sustained load per test")
    group.addoption("--hil-json", help="directory to write each run's full JSON report into")
    group.addoption("--ca", help="CA certificate of the device's TLS listener")
    group.addoption("--cert", help="client certificate (mutual TLS)")
    group.addoption("--key", help="client key (mutual TLS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--device"):
        return
    skip = pytest.mark.skip(reason=HOW_TO_RUN)
    for item in items:
        if item.get_closest_marker("hil") is not None:
            item.add_marker(skip)
