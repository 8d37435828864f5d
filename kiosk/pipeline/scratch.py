"""Per-request ownership of every biometric buffer, wiped on exit (success or error)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from collections.abc import Iterator

import numpy as np


class Scratch:
    """Holds the arrays a request creates; ``with Scratch() as s`` zeroes them all on exit.

    Python frees memory without clearing it, so a decoded photo or an embedding would
    linger in the heap until reused. Zeroing on the way out is what makes "nothing
    biometric survives a request" hold for the buffers we own.
    """

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []

    def keep(self, array: np.ndarray) -> np.ndarray:
        self._arrays.append(array)
        return array

    def wipe(self) -> None:
        for array in self._arrays:
            if array.flags.writeable:
                array.fill(0)
        self._arrays.clear()

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()


class StageTimer:
    """Milliseconds spent per stage, summed over the images of one request."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1000.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(ms, 3) for name, ms in self.ms.items()}
