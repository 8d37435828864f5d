"""Per-request ownership of every biometric buffer, wiped on exit (success or error)."""

from __future__ import annotations

import ctypes
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from collections.abc import Callable, Iterator

import numpy as np

from kiosk.errors import Cancelled


# Offset of the character data inside a CPython bytes object (header size of b"").
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1


def wipe_bytes(data: bytes) -> None:
    """Overwrite an immutable ``bytes`` object's contents with zeros, in place.

    Request payloads arrive as ``bytes`` that Python frees without clearing; this is
    the only way to make an encoded photo disappear from memory when the request ends.
    Only for objects the request owns alone (never interned or shared constants), so
    objects shorter than two bytes, which CPython may share, are left alone.
    """
    if type(data) is not bytes or len(data) < 2:
        return
    ctypes.memset(id(data) + _BYTES_DATA_OFFSET, 0, len(data))


class Scratch:
    """Holds the arrays a request creates; ``with Scratch() as s`` zeroes them all on exit.

    Python frees memory without clearing it, so a decoded photo or an embedding would
    linger in the heap until reused. Zeroing on the way out is what makes "nothing
    biometric survives a request" hold for the buffers we own.
    """

    def __init__(self) -> None:
        self._arrays: list[np.ndarray] = []
        self._payloads: list[bytes] = []

    def keep(self, array: np.ndarray) -> np.ndarray:
        self._arrays.append(array)
        return array

    def keep_payload(self, data: bytes) -> bytes:
        """Own a request payload: it is zeroed in place when the scratch is wiped."""
        self._payloads.append(data)
        return data

    def wipe(self) -> None:
        for array in self._arrays:
            if array.flags.writeable:
                array.fill(0)
        for data in self._payloads:
            wipe_bytes(data)
        self._arrays.clear()
        self._payloads.clear()

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wipe()


class StageTimer:
    """Milliseconds spent per stage, summed over the images of one request.

    Every stage of a request is entered here, so this is where a cancelled call is
    abandoned: with ``cancelled`` (e.g. "the gRPC call is no longer active") a stage
    that is about to start raises ``Cancelled`` instead, and no later stage runs.
    """

    def __init__(self, cancelled: Callable[[], bool] | None = None) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self._cancelled = cancelled

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._cancelled is not None and self._cancelled():
            raise Cancelled(f"the client cancelled the call before stage {name}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1000.0

    def as_dict(self) -> dict[str, float]:
        return {name: round(ms, 3) for name, ms in self.ms.items()}
