"""The HIL harness end to end against a local ``kiosk serve``, briefly: what CI can do without a Pi.

The same command an operator points at a board (``python -m hardware.hil``), with
``--local`` and a handful of calls. Only the report's shape and the absence of failed
calls are checked: the budget verdict depends on the machine and its load, and is
reported, not asserted.
"""

from __future__ import annotations

import json

import pytest

from hardware.hil.__main__ import main

EXIT_BUDGET_MET, EXIT_BUDGET_NOT_MET = 0, 1


@pytest.mark.parametrize(
    "mode, extra",
    [("verify", ["--requests", "6"]), ("session", ["--requests", "1", "--session-frames", "12"])],
)
def test_harness_against_local_service(tmp_path, faces, mode, extra, capsys):
    out = tmp_path / "hil.json"
    status = main(
        ["--local", "--mode", mode, "--duration", "600", "--sample-interval", "1", "--faces", str(faces),
         "--json", str(out), *extra]
    )
    assert status in (EXIT_BUDGET_MET, EXIT_BUDGET_NOT_MET), capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["budget"]["errors"] == 0, report["outcomes"]
    assert report["latency_ms"]["p95"] > 0
    assert report["memory"]["rss_mb_last"] > 0  # local: read from /proc
    assert "budget" in capsys.readouterr().out
    if mode == "session":
        assert report["session_fps"]["p50"] > 0
