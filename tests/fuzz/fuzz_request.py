#!/usr/bin/env python3
"""Coverage-guided fuzzing of request parsing: bytes -> VerifyRequest/SessionRequest -> convert -> domain.

    tests/fuzz/fuzz_request.py -max_total_time=600 NEW_CORPUS_DIR tests/fuzz/corpus/request

libFuzzer flags pass straight through; the first directory receives new inputs. Raw
camera frames found in a message go on through ``decode_raw_frame``. See
tests/fuzz/test_fuzz.py for the bounded CI run.
"""

import sys
from pathlib import Path

import atheris

# The drivers run as scripts: make the checkout importable as it is under pytest.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["kiosk"]):
    from kiosk.settings import Settings
    from tests.fuzz.targets import request_target, service_limits


def main() -> None:
    limits, max_live_photos = service_limits(), Settings().limits.max_live_photos
    atheris.Setup(sys.argv, lambda data: request_target(data, limits, max_live_photos))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
