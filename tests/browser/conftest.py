"""Fixtures of the kiosk screen tests: real `kiosk serve` processes, a real `kiosk ui`, headless Chromium.

The camera is Chromium's fake device playing a YUV4MPEG2 video written here, in a
temporary folder, from the shared webcam captures read in place (never copied into
the repository). Chromium and chromedriver are Debian's (`apt-get install chromium
chromium-driver`; `.ci/run` installs them in CI): selenium is pointed at them, so
nothing is downloaded. Without them the tests fail, saying how to install them: a
skip would let a CI whose install step broke pass without ever opening the page.

Every wait is bounded: service start-up, the relay's first line, page loads and
scripts (selenium timeouts), and each wait for the page's state (WebDriverWait).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
HOW_TO_INSTALL = (
    "the kiosk screen tests need Debian's headless Chromium and its driver at /usr/bin/chromium and "
    "/usr/bin/chromedriver: run `apt-get update && apt-get install -y chromium chromium-driver` as root "
    "(.ci/run does this in CI)"
)
SERVE_START_S = 120.0
# The service ends a challenge session on any gap over 500 ms between frame timestamps.
# Headless Chromium shares 2 cores with the service and the test run here, and a page
# starved of CPU for longer than that would end the session with frame_timing instead
# of the check under test (measured: 660-1300 ms gaps at a load average of 17-22). The
# gap check itself is tested on the service (tests/integration/test_session_liveness.py);
# the page reports its own gaps (body data-max-gap-ms), which the tests print.
GAP_SETTING = "max_frame_gap_ms = 2500"
UI_START_S = 30.0
# The fake camera's frame rate; the page samples it at its own 10 fps.
VIDEO_FPS = 15
# The webcam captures (640x480) at half size: a camera the service still reads well (the
# faces keep ~30 px between the eyes, the minimum is 20), and a quarter of the pixels to
# draw, encode and detect, so the timing of the session holds on a loaded 2-core runner.
VIDEO_SIZE = (320, 240)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the real service


@dataclass
class Service:
    process: subprocess.Popen
    address: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _serve(directory: Path, *, challenges: bool, extra: str = "") -> Iterator[Service]:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "kiosk.toml"
    config.write_text(
        f"""[service]
listen = ["127.0.0.1:{port}"]
rate_limit_per_s = 0.0

[liveness_challenge]
enabled = {"true" if challenges else "false"}
{GAP_SETTING if challenges else ""}
{extra}"""
    )
    log_path = directory / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "--config", str(config), "serve"],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    service = Service(process, f"127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + SERVE_START_S
        with grpc.insecure_channel(service.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"kiosk serve did not become SERVING: {service.log()[-3000:]}")
                try:
                    if check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        yield service
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="package")
def service_no_challenges(tmp_path_factory) -> Iterator[Service]:
    """`kiosk serve` with `[liveness_challenge] enabled = false`: a session decides on the face match."""
    yield from _serve(tmp_path_factory.mktemp("serve-off"), challenges=False)


@pytest.fixture(scope="package")
def service_challenges(tmp_path_factory) -> Iterator[Service]:
    """`kiosk serve` with the shipped challenge settings."""
    yield from _serve(tmp_path_factory.mktemp("serve-on"), challenges=True)


@pytest.fixture(scope="package")
def service_other_consent(tmp_path_factory) -> Iterator[Service]:
    """`kiosk serve` whose operator accepts only a consent text the page does not have."""
    yield from _serve(
        tmp_path_factory.mktemp("serve-consent"), challenges=False, extra='[consent]\naccepted_versions = ["2099-01"]\n'
    )


# --------------------------------------------------------------------------- `kiosk ui`


@dataclass
class Ui:
    process: subprocess.Popen
    url: str


def start_ui(service: Service, *extra: str) -> Ui:
    """`kiosk ui --listen 127.0.0.1:0 --service ADDR`; its URL from the first line it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk", "ui", "--listen", "127.0.0.1:0", "--service", service.address, *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready, _, _ = select.select([process.stdout], [], [], UI_START_S)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("kiosk ui: http://"):
        _stop(process)
        raise AssertionError(f"kiosk ui did not start: {line!r} {process.stderr.read()[-2000:]}")
    return Ui(process, line.split()[2])


def stop_ui(ui: Ui) -> None:
    _stop(ui.process)
    # Nothing of a frame or a traceback may reach the relay's own output.
    _, err = ui.process.communicate(timeout=20)
    assert "Traceback" not in err, err


@pytest.fixture
def ui_factory() -> Iterator:
    started: list[Ui] = []

    def make(service: Service, *extra: str) -> Ui:
        ui = start_ui(service, *extra)
        started.append(ui)
        return ui

    yield make
    for ui in started:
        stop_ui(ui)


# --------------------------------------------------------------------------- the fake camera


def write_y4m(
    path: Path, photos: list[Path], frames_each: int, size: tuple[int, int] = VIDEO_SIZE, shift: float = 0.0
) -> Path:
    """A YUV4MPEG2 (C420) video of ``photos``, each shown for ``frames_each`` frames.

    ``shift`` moves the picture sideways by that fraction of its width (negative: to
    the left of the sensor's image), filling the uncovered side with black.
    """
    width, height = size
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{VIDEO_FPS}:1 Ip A1:1 C420\n".encode())
        for photo in photos:
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)  # by content: some .jpg files hold PNG data
            assert image is not None, photo
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if shift:
                moved = np.float32([[1, 0, shift * size[0]], [0, 1, 0]])
                image = cv2.warpAffine(image, moved, size, borderMode=cv2.BORDER_CONSTANT)
            planes = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
            for _ in range(frames_each):
                out.write(b"FRAME\n")
                out.write(np.ascontiguousarray(planes).tobytes())
    return path


# --------------------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()) or not shutil.which(str(CHROMEDRIVER)):
        pytest.fail(HOW_TO_INSTALL, pytrace=False)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser_factory(chromium, tmp_path) -> Iterator:
    """``make(video)``: a headless Chromium whose camera plays ``video``; quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    drivers = []

    def make(video: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium[0])
        profile = tmp_path / f"profile-{len(drivers)}"
        for flag in (
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
            "--window-size=1280,1100",
        ):
            options.add_argument(flag)
        # chromedriver gives up on a browser that does not start within its own 60 s.
        service = DriverService(executable_path=str(chromium[1]), log_output=str(tmp_path / "chromedriver.log"))
        driver = webdriver.Chrome(options=options, service=service)
        drivers.append(driver)
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        driver.profile_dir = profile
        return driver

    yield make
    for driver in drivers:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where the runs' screenshots go: a temporary folder, or $KIOSK_SCREENSHOTS (they show real faces: never commit them)."""
    chosen = os.environ.get("KIOSK_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("kiosk-screen")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"kiosk screen screenshots: {folder}")
    return folder
