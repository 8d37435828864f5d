"""The board under test meets its profile's budgets over a sustained run (opt-in: ``--device``).

Each test drives the device with ``hardware.hil`` for ``--hil-duration`` seconds, prints
the harness's table and, with ``--hil-json DIR``, writes its full JSON report. The
budget is the one of the hardware profile the device itself reports in GetInfo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hardware.hil import corpus
from hardware.hil.probes import LocalProbe, SshProbe
from hardware.hil.report import format_table, summarise
from hardware.hil.runner import RunConfig, run
from kiosk.client import KioskClient
from kiosk.runtime.profile import select_profile

pytestmark = pytest.mark.hil

MAX_RSS_GROWTH_PCT = 1.0


@pytest.fixture(scope="module")
def pairs(faces: Path) -> list[corpus.Pair]:
    return corpus.generated(faces)


def _run(request: pytest.FixtureRequest, pairs, mode: str) -> dict:
    option = request.config.getoption
    probe = SshProbe(option("--device-ssh")) if option("--device-ssh") else LocalProbe(option("--device-pid"))
    config = RunConfig(
        address=option("--device"), mode=mode, duration_s=option("--hil-duration"),
        ca=option("--ca"), cert=option("--cert"), key=option("--key"),
    )
    result = run(config, pairs, probe)
    summary = summarise(result, select_profile(result.info.hardware_profile))
    print(format_table(summary))
    if option("--hil-json"):
        Path(option("--hil-json"), f"hil-{mode}.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def test_device_runs_its_board_profile(request):
    option = request.config.getoption
    with KioskClient(option("--device"), ca=option("--ca"), cert=option("--cert"), key=option("--key")) as client:
        info = client.info()
    profile = select_profile(info.hardware_profile)
    assert profile.board_match and profile.board_match in info.board_model, (info.board_model, info.hardware_profile)


def test_verify_meets_budget(request, pairs):
    summary = _run(request, pairs, "verify")
    assert summary["budget"]["errors"] == 0, summary["outcomes"]
    assert summary["budget"]["met"], summary["budget"]
    growth = summary["memory"].get("growth_pct")
    assert growth is None or growth < MAX_RSS_GROWTH_PCT, summary["memory"]


def test_session_meets_budget(request, pairs):
    summary = _run(request, pairs, "session")
    assert summary["budget"]["errors"] == 0, summary["outcomes"]
    assert summary["budget"]["met"], summary["budget"]
