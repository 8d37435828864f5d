"""Reading a secret key file: the audit HMAC key and the receipt signing key.

Its own module, below both ``kiosk.audit`` and ``kiosk.receipts``, which each read one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kiosk.errors import ConfigError


def read_private_file(path: str | Path, what: str, missing_hint: str = "") -> bytes:
    """The bytes of a key file that only its owner may read; ``ConfigError`` naming ``what`` otherwise."""
    path = Path(path)
    try:
        # fstat of the opened file, not stat of the name: no swap between check and read.
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{what} {path} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"{what} {path} has mode {mode:04o}; group and others must have no access "
                    f"(0600 or stricter: chmod 600 {path})"
                )
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file{missing_hint}") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None
