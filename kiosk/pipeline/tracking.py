"""Session frames: detect in a window around the tracked face, with a full-frame scan often enough.

Between consecutive camera frames a customer's face moves little, so detecting in a
window of ``window_factor`` times the last face box (centred on it) finds the same face
for a fraction of the work. What a window cannot see is a second person stepping in
outside it; the session's second-person check depends on that. So at least every
``full_scan_every``-th frame is detected on the whole frame: a second comparable face
present in the frames is caught within ``full_scan_every`` frames of appearing (at once if
it enters the window). A window that loses the face falls back to a full scan of the
same frame, and any frame without a tracked face is scanned whole.

``FaceTracker`` only chooses the region and maps its detection back to the frame; the
caller's ``find`` (the live-frame subject-face rule) does the detecting and the refusing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kiosk.errors import NoFace
from kiosk.pipeline.types import BgrImage, Box, FaceDetection


@dataclass(frozen=True)
class TrackingSettings:
    # Window width and height as multiples of the tracked box's (centred on the box).
    window_factor: float = 2.0
    # A full-frame scan at least every this many frames: the bound on how many frames a
    # second person outside the window can go unseen.
    full_scan_every: int = 4
    # Windows covering more than this share of the frame save too little: scan whole.
    max_window_share: float = 0.75


@dataclass(frozen=True)
class Region:
    """A window of the frame: columns ``x0:x1``, rows ``y0:y1``."""

    x0: int
    y0: int
    x1: int
    y1: int


class FaceTracker:
    """Per session: ``face = tracker.locate(image, find)`` for each frame, in order."""

    def __init__(self, settings: TrackingSettings = TrackingSettings()):
        if settings.full_scan_every < 1:
            raise ValueError("full_scan_every must be at least 1")
        self.settings = settings
        self.last_box: Box | None = None
        # Frames since the last full-frame scan (0: the last frame was one).
        self.since_full_scan = 0
        self.full_scans = 0
        self.window_scans = 0

    def region(self, width: int, height: int) -> Region | None:
        """Where to detect in the next ``width`` x ``height`` frame; None for the whole frame."""
        box = self.last_box
        if box is None or self.since_full_scan + 1 >= self.settings.full_scan_every:
            return None
        half_w, half_h = self.settings.window_factor * box.width / 2, self.settings.window_factor * box.height / 2
        cx, cy = box.x + box.width / 2, box.y + box.height / 2
        x0, y0 = max(0, int(np.floor(cx - half_w))), max(0, int(np.floor(cy - half_h)))
        x1, y1 = min(width, int(np.ceil(cx + half_w))), min(height, int(np.ceil(cy + half_h)))
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > self.settings.max_window_share * width * height:
            return None
        return Region(x0, y0, x1, y1)

    def locate(self, image: BgrImage, find: Callable[[BgrImage], FaceDetection]) -> FaceDetection:
        """The frame's subject face, by ``find`` on a window or on the whole frame (frame pixels).

        ``find(pixels)`` returns the subject face in ``pixels``' coordinates or raises (no
        face, a second person, ...). A window is a view of ``image``: no copy to wipe.
        """
        height, width = image.shape[:2]
        region = self.region(width, height)
        if region is not None:
            try:
                face = find(image[region.y0 : region.y1, region.x0 : region.x1])
            except NoFace:
                face = None  # The face left the window: look at the whole frame now.
            except Exception:
                self.last_box = None
                raise
            if face is not None:
                self.window_scans += 1
                self.since_full_scan += 1
                face = _shifted(face, region.x0, region.y0)
                self.last_box = face.box
                return face
        self.full_scans += 1
        self.since_full_scan = 0
        try:
            face = find(image)
        except Exception:
            self.last_box = None
            raise
        self.last_box = face.box
        return face


def _shifted(face: FaceDetection, dx: float, dy: float) -> FaceDetection:
    box = face.box
    return FaceDetection(
        box=Box(box.x + dx, box.y + dy, box.width, box.height),
        score=face.score,
        landmarks=(face.landmarks + np.array([dx, dy], dtype=np.float32)).astype(np.float32),
    )
