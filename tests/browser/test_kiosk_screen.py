"""The reference kiosk screen in headless Chromium, through `kiosk ui` and a real `kiosk serve`.

The camera is a fake device playing webcam captures of one NUAA volunteer (nuaa__s01),
read in place from the shared data and written to a temporary video. With challenges
off the session decides on the face match: MATCH against the volunteer's own photo,
NO_MATCH against someone else's. With challenges on, a still photo gets the first
prompt and then fails its timing (it never blinks, turns, opens its mouth or nods).
Screenshots of each step go to a temporary folder printed at the start of the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import write_y4m

PAGE_WAIT_S = 30
# The service's own session deadline is 30 s; the relay's is longer.
SESSION_WAIT_S = 90
VIDEO_FRAMES_STILL = 15
CHALLENGES = {"BLINK", "TURN_LEFT", "TURN_RIGHT", "OPEN_MOUTH", "NOD"}


@pytest.fixture(scope="module")
def nuaa(faces: Path) -> list[Path]:
    photos = sorted((faces / "nuaa__s01").glob("*.jpg"))
    assert len(photos) >= 12
    return photos


@pytest.fixture(scope="module")
def stranger(faces: Path) -> Path:
    return faces / "lfw__Aaron_Tippin" / "Aaron_Tippin_0001.jpg"


@pytest.fixture(scope="module")
def moving_video(nuaa, tmp_path_factory) -> Path:
    """Ten different captures of the card holder, a third of a second each: a person in front of the kiosk."""
    return write_y4m(tmp_path_factory.mktemp("video") / "holder.y4m", nuaa[1:11], frames_each=5)


@pytest.fixture(scope="module")
def still_video(nuaa, tmp_path_factory) -> Path:
    """One capture, unchanged in every frame: a photo held to the camera."""
    return write_y4m(tmp_path_factory.mktemp("video") / "still.y4m", [nuaa[1]], frames_each=VIDEO_FRAMES_STILL)


@pytest.fixture(scope="module")
def left_video(nuaa, tmp_path_factory) -> Path:
    """A still capture moved a quarter of the width to the left of the sensor's image."""
    return write_y4m(tmp_path_factory.mktemp("video") / "left.y4m", [nuaa[1]], frames_each=VIDEO_FRAMES_STILL, shift=-0.25)


def state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def wait_for(driver, condition, seconds: float, what: str):
    return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition, f"timed out waiting for {what}")


def error_text(driver) -> str:
    return driver.execute_script("const e = document.getElementById('error'); return e.hidden ? '' : e.textContent")


def begin(driver, url: str, shots: Path, name: str, *, id_photo: Path | None = None, card: bool = False) -> None:
    """Open the page, accept the consent, give the ID photo, start the camera."""
    driver.get(url)
    wait_for(
        driver,
        lambda d: state(d) == "consent" and d.find_element(By.ID, "consent-accept").is_enabled(),
        PAGE_WAIT_S,
        "the consent step",
    )
    assert driver.find_element(By.ID, "consent-version").text == "2026-01"
    assert "SIM" in driver.find_element(By.ID, "consent-text").text or "身份证" in driver.find_element(By.ID, "consent-text").text
    driver.save_screenshot(str(shots / f"{name}-1-consent.png"))
    driver.find_element(By.ID, "consent-accept").click()
    wait_for(driver, lambda d: state(d) == "id", PAGE_WAIT_S, "the ID photo step")
    if card:
        driver.find_element(By.ID, "id-card").click()
    else:
        driver.find_element(By.ID, "id-file").send_keys(str(id_photo))
        wait_for(driver, lambda d: d.find_element(By.ID, "id-preview").is_displayed(), PAGE_WAIT_S, "the ID preview")
    driver.save_screenshot(str(shots / f"{name}-2-id.png"))
    driver.find_element(By.ID, "start").click()
    wait_for(driver, lambda d: state(d) in ("camera", "decision") or error_text(d), PAGE_WAIT_S, "the camera step")


def wait_for_decision(driver, shots: Path, name: str) -> dict:
    wait_for(driver, lambda d: state(d) == "decision" or error_text(d), SESSION_WAIT_S, "the decision")
    driver.save_screenshot(str(shots / f"{name}-4-decision.png"))
    assert not error_text(driver), error_text(driver)
    result = driver.execute_script(
        """const d = document.getElementById('decision'), r = document.getElementById('decision-reason');
        return {decision: d.dataset.decision, text: d.textContent, reason: r.dataset.reason,
                check: r.dataset.check, reason_text: r.textContent,
                detail: document.getElementById('decision-detail').textContent, stats: {...document.body.dataset}};"""
    )
    stats = result["stats"]
    print(f"{name}: {stats.get('framesSent')} frames sent, gaps {stats.get('minGapMs')}-{stats.get('maxGapMs')} ms, "
          f"at most {stats.get('maxInFlight')} unanswered")
    # The protocol's floor: frames closer than 20 ms end a session.
    assert int(stats["minGapMs"]) >= 20, stats
    return result


STORAGE = """
const done = arguments[arguments.length - 1];
(async () => {
  const databases = indexedDB.databases ? await indexedDB.databases() : [];
  const cacheNames = self.caches ? await caches.keys() : [];
  const workers = navigator.serviceWorker ? await navigator.serviceWorker.getRegistrations() : [];
  done({local: localStorage.length, session: sessionStorage.length, indexeddb: databases.length,
        caches: cacheNames.length, workers: workers.length});
})().catch((e) => done({failed: String(e)}));
"""

CANVASES = """
return Array.from(document.querySelectorAll('canvas')).map((c) => {
  const lit = c.width && c.height ? c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0) : false;
  return {id: c.id, width: c.width, height: c.height, lit};
});
"""


def test_card_holder_matches_then_nothing_is_kept(
    service_no_challenges, ui_factory, browser_factory, moving_video, nuaa, screenshots
):
    ui = ui_factory(service_no_challenges)
    driver = browser_factory(moving_video)
    begin(driver, ui.url, screenshots, "match", id_photo=nuaa[0])
    # The overlay shows where the service found the face while frames flow.
    wait_for(
        driver,
        lambda d: state(d) == "decision" or any(c["lit"] for c in d.execute_script(CANVASES) if c["id"] == "overlay"),
        SESSION_WAIT_S,
        "the face overlay",
    )
    driver.save_screenshot(str(screenshots / "match-3-camera.png"))
    result = wait_for_decision(driver, screenshots, "match")
    assert result["decision"] == "MATCH", result
    assert result["text"] == "身份核验通过"

    driver.find_element(By.ID, "lang").click()
    assert driver.find_element(By.ID, "decision").text == "Identity confirmed"
    assert driver.execute_script("return document.documentElement.lang") == "en"
    driver.save_screenshot(str(screenshots / "match-5-decision-en.png"))

    # Nothing stored by the page; the session's end stopped the camera and emptied the canvases.
    assert driver.execute_async_script(STORAGE) == {"local": 0, "session": 0, "indexeddb": 0, "caches": 0, "workers": 0}
    assert [c for c in driver.execute_script(CANVASES) if c["width"] or c["lit"]] == []
    assert driver.execute_script("return document.getElementById('video').srcObject") is None

    driver.find_element(By.ID, "done").click()
    wait_for(driver, lambda d: state(d) == "consent", PAGE_WAIT_S, "the reset")
    assert driver.execute_script(
        """return [document.getElementById('id-file').value, document.getElementById('id-preview').hasAttribute('src'),
                   document.getElementById('decision').textContent, document.documentElement.lang]"""
    ) == ["", False, "", "zh-CN"]


def test_someone_else_does_not_match(
    service_no_challenges, ui_factory, browser_factory, moving_video, stranger, screenshots
):
    # The ID photo comes from the card reader's file, read by the relay in place.
    ui = ui_factory(service_no_challenges, "--card-reader", str(stranger))
    driver = browser_factory(moving_video)
    begin(driver, ui.url, screenshots, "nomatch", card=True)
    result = wait_for_decision(driver, screenshots, "nomatch")
    assert result["decision"] == "NO_MATCH", result
    assert result["text"] == "与证件持有人不符"


def test_still_photo_gets_the_prompt_and_fails_it(
    service_challenges, ui_factory, browser_factory, still_video, nuaa, screenshots
):
    ui = ui_factory(service_challenges)
    driver = browser_factory(still_video)
    begin(driver, ui.url, screenshots, "still", id_photo=nuaa[0])
    # Read in one script: the decision may follow the prompt within a few frames.
    shown = wait_for(
        driver,
        lambda d: d.execute_script(
            """const p = document.getElementById('prompt');
            return p.dataset.challenge ? {challenge: p.dataset.challenge, text: p.textContent,
                                          countdown: !document.getElementById('deadline').hidden} : null;"""
        )
        or state(d) == "decision",
        SESSION_WAIT_S,
        "the challenge prompt",
    )
    driver.save_screenshot(str(screenshots / "still-3-prompt.png"))
    assert shown is not True, "no prompt shown before the decision"
    assert shown["challenge"] in CHALLENGES and shown["text"].startswith("第 1 步"), shown
    # The countdown runs on the frames' clock: deadline_ms - performance.now().
    assert shown["countdown"], shown

    result = wait_for_decision(driver, screenshots, "still")
    assert result["decision"] == "RETRY", result
    assert result["reason"] == "liveness_failed", result
    assert result["check"] == "challenge_timeout", (result["detail"], result["stats"])
    assert "未在规定时间内完成动作" in result["reason_text"], result
    driver.find_element(By.ID, "lang").click()
    assert "The action was not done in time" in driver.find_element(By.ID, "decision-reason").text
    driver.save_screenshot(str(screenshots / "still-5-decision-en.png"))


# Mean column of the overlay's face box (its coloured pixels; the target oval is white),
# as a share of the overlay's width; null when no box is drawn.
BOX_COLUMN = """
const c = document.getElementById('overlay');
if (!c.width) return null;
const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let sum = 0, n = 0;
for (let i = 0; i < data.length; i += 4) {
  const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
  if (a > 200 && Math.min(r, g, b) < 120) { sum += (i / 4) % c.width; n += 1; }
}
return n ? sum / n / c.width : null;
"""


def test_frames_are_unmirrored_and_reset_mid_session_clears_everything(
    service_challenges, ui_factory, browser_factory, left_video, nuaa, screenshots
):
    ui = ui_factory(service_challenges)
    driver = browser_factory(left_video)
    begin(driver, ui.url, screenshots, "reset", id_photo=nuaa[0])
    column = wait_for(driver, lambda d: d.execute_script(BOX_COLUMN), SESSION_WAIT_S, "the face box")
    driver.save_screenshot(str(screenshots / "reset-before.png"))
    # The face is in the left part of the sensor's image, and the service found it there:
    # the page sent the frames as the sensor saw them (the preview shows it on the right).
    assert column < 0.45, column
    driver.find_element(By.ID, "reset").click()
    wait_for(driver, lambda d: state(d) == "consent", PAGE_WAIT_S, "the reset")
    assert [c for c in driver.execute_script(CANVASES) if c["width"] or c["lit"]] == []
    assert driver.execute_script(
        """return [document.getElementById('video').srcObject, document.getElementById('prompt').textContent,
                   document.getElementById('id-file').value]"""
    ) == [None, "", ""]
    assert driver.execute_async_script(STORAGE) == {"local": 0, "session": 0, "indexeddb": 0, "caches": 0, "workers": 0}
    driver.save_screenshot(str(screenshots / "reset-after.png"))


def test_no_session_without_a_consent_text_the_service_accepts_or_without_the_service(
    service_other_consent, ui_factory, browser_factory, still_video, screenshots
):
    driver = browser_factory(still_video)
    driver.get(ui_factory(service_other_consent).url)
    wait_for(driver, lambda d: error_text(d), PAGE_WAIT_S, "the consent error")
    driver.save_screenshot(str(screenshots / "consent-refused.png"))
    assert "没有服务接受的同意书" in error_text(driver)
    assert state(driver) == "loading" and not driver.find_element(By.ID, "consent-accept").is_enabled()
    driver.find_element(By.ID, "lang").click()
    assert error_text(driver).startswith("This screen has no consent text the service accepts")

    nothing = type(service_other_consent)(process=None, address="127.0.0.1:1", log_path=service_other_consent.log_path)
    driver.get(ui_factory(nothing).url)
    wait_for(driver, lambda d: error_text(d), PAGE_WAIT_S, "the service error")
    assert driver.execute_script("return document.getElementById('error').dataset.code") == "service_down"
    assert "核验服务不可用" in error_text(driver) and state(driver) == "loading"
