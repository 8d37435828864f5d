"""Session tracking: window or full scan per frame, and the bound on an unseen second person."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from kiosk.errors import MultipleFaces, NoFace
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.tracking import FaceTracker, TrackingSettings
from kiosk.pipeline.types import Box, FaceDetection, ImageRole

FRAME = np.zeros((480, 640, 3), dtype=np.uint8)


def at(x, y, side=100):
    return FaceDetection(Box(x, y, side, side), 0.99, np.full((5, 2), [x + side / 2, y + side / 2], dtype=np.float32))


class Finder:
    """A stand-in detector: the face at a fixed frame position, seen only if inside the pixels given."""

    def __init__(self, face):
        self.face = face
        self.shapes = []

    def __call__(self, pixels):
        self.shapes.append(pixels.shape[:2])
        # Offset of the view inside FRAME (views share its memory).
        offset = (pixels.__array_interface__["data"][0] - FRAME.__array_interface__["data"][0]) // 3
        oy, ox = divmod(offset, FRAME.shape[1])
        box = self.face.box
        inside = (
            ox <= box.x
            and oy <= box.y
            and box.x + box.width <= ox + pixels.shape[1]
            and box.y + box.height <= oy + pixels.shape[0]
        )
        if not inside:
            raise NoFace("no_face_in_live_frame", "no face")
        return at(box.x - ox, box.y - oy, box.width)


def test_first_frame_is_a_full_scan_then_windows_then_a_full_scan():
    tracker, finder = FaceTracker(TrackingSettings(window_factor=2.0, full_scan_every=4)), Finder(at(270, 190))
    kinds = []
    for _ in range(9):
        face = tracker.locate(FRAME, finder)
        # Window detections come back in frame pixels, landmarks included.
        assert (face.box.x, face.box.y) == (270, 190) and np.allclose(face.landmarks, [320, 240])
        kinds.append("full" if finder.shapes[-1] == (480, 640) else "window")
    assert kinds == ["full", "window", "window", "window", "full", "window", "window", "window", "full"]
    assert finder.shapes[1] == (200, 200)


def test_face_leaving_the_window_is_found_by_a_full_scan_of_the_same_frame():
    tracker, finder = FaceTracker(), Finder(at(270, 190))
    tracker.locate(FRAME, finder)
    finder.face = at(20, 20)  # jumped out of the window
    face = tracker.locate(FRAME, finder)
    assert (face.box.x, face.box.y) == (20, 20) and finder.shapes[-1] == (480, 640)


def test_refusal_drops_the_track():
    tracker = FaceTracker()
    tracker.locate(FRAME, Finder(at(270, 190)))

    def two_people(pixels):
        raise MultipleFaces("multiple_faces_in_live_photo", "two")

    with pytest.raises(MultipleFaces):
        tracker.locate(FRAME, two_people)
    assert tracker.last_box is None and tracker.region(640, 480) is None


def test_a_face_filling_the_frame_is_scanned_whole():
    tracker = FaceTracker()
    tracker.locate(FRAME, Finder(at(170, 90, 300)))
    assert tracker.region(640, 480) is None


def test_every_frame_full_when_asked():
    tracker = FaceTracker(TrackingSettings(full_scan_every=1))
    tracker.locate(FRAME, Finder(at(270, 190)))
    assert tracker.region(640, 480) is None
    with pytest.raises(ValueError):
        FaceTracker(TrackingSettings(full_scan_every=0))


# --- real images -----------------------------------------------------------------------


def _portrait(path: Path, verifier, side: int) -> np.ndarray:
    image = decode_image(path.read_bytes(), verifier.image_limits)
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def frames(faces, verifier):
    """A 640x480 scene with one real person at the left, and the same with a second person at the right."""
    subject = _portrait(sorted((faces / "lfw__George_W_Bush").iterdir())[0], verifier, 220)
    other = _portrait(sorted((faces / "lfw__Halle_Berry").iterdir())[0], verifier, 220)
    one = np.full((480, 640, 3), 90, dtype=np.uint8)
    one[130:350, 40:260] = subject
    two = one.copy()
    two[130:350, 410:630] = other
    return one, two


def test_second_person_outside_the_window_is_caught_within_the_bound(frames, verifier):
    """The stated bound: a second person is refused within ``full_scan_every`` frames of stepping in."""
    one, two = frames
    settings = TrackingSettings()

    def find(pixels):
        with Scratch() as scratch:
            return verifier.subject_face(scratch, pixels, ImageRole.LIVE_FRAME)

    # The second person steps in at each position of the scan cycle.
    for arrival in range(settings.full_scan_every):
        tracker = FaceTracker(settings)
        for _ in range(1 + arrival):
            tracker.locate(one, find)
        # The second person is outside the subject's window...
        region = tracker.region(640, 480)
        if region is not None:
            assert region.x1 <= 410
        caught_after = None
        for n in range(1, settings.full_scan_every + 1):
            try:
                tracker.locate(two, find)
            except MultipleFaces:
                caught_after = n
                break
        assert caught_after is not None, f"second person unseen for {settings.full_scan_every} frames"
    # ...and windows were used in between: the speed-up is real, not a full scan every frame.
    tracker = FaceTracker(settings)
    for _ in range(settings.full_scan_every):
        face = tracker.locate(one, find)
        assert 40 <= face.box.x + face.box.width / 2 <= 260
    assert tracker.window_scans == settings.full_scan_every - 1 and tracker.full_scans == 1
