"""The verification pipeline: one module per stage; ``analysis`` runs them per face for ``verifier`` and ``session``.

OpenCV reads its own decoder ceilings (``OPENCV_IO_MAX_IMAGE_*``) from the environment
once, when the cv2 library is loaded, and ignores later changes. Python runs this file
before any module of the package, and so before the first of them imports cv2: the
ceilings are set here. ``decode.check_opencv`` proves at start-up that they are in force.
"""

import os

# A second line of defence behind decode's own header limits (12 MP and 8192 pixels a
# side by default): far enough above them never to refuse what they accept, far below
# what would let a forged header make OpenCV allocate gigabytes.
OPENCV_DECODE_CEILINGS = {
    "OPENCV_IO_MAX_IMAGE_PIXELS": 40_000_000,
    "OPENCV_IO_MAX_IMAGE_WIDTH": 16384,
    "OPENCV_IO_MAX_IMAGE_HEIGHT": 16384,
}


def _lower_opencv_ceilings() -> None:
    # An operator may set a lower ceiling, never a higher one.
    for name, ceiling in OPENCV_DECODE_CEILINGS.items():
        given = os.environ.get(name, "")
        if not (given.isdigit() and 0 < int(given) <= ceiling):
            os.environ[name] = str(ceiling)


_lower_opencv_ceilings()
