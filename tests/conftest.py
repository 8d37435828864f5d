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
