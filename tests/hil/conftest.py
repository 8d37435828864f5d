"""Hardware-in-the-loop tests: opt-in, against a kiosk service running on a real board.

    python -m pytest tests/hil --device HOST:PORT [--device-ssh pi@HOST] [--hil-duration 600]
        [--ca CA --cert CERT --key KEY] [--hil-json DIR]

Without ``--device`` every test marked ``hil`` is skipped with that command as the reason.
``--device-ssh`` lets the harness read the board's temperature, throttling and the
service's memory over ssh (key login); run on the Pi itself, ``--device-pid`` does the same
locally. The device under test should run with ``[service] rate_limit_per_s = 0``: a
closed-loop benchmark client is exactly what the rate limit exists to refuse.
"""

from __future__ import annotations

import pytest

HOW_TO_RUN = (
    "hardware-in-the-loop: needs a kiosk service on a board; run "
    "`python -m pytest tests/hil --device HOST:PORT [--device-ssh pi@HOST]` (see tests/hil/conftest.py)"
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
