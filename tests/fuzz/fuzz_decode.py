#!/usr/bin/env python3
"""Coverage-guided fuzzing of the image decoder (atheris/libFuzzer) with the service's limits.

    tests/fuzz/fuzz_decode.py -dict=tests/fuzz/decode.dict -max_total_time=600 NEW_CORPUS_DIR tests/fuzz/corpus/decode

libFuzzer flags pass straight through; the first directory receives new inputs (the
script must stay executable: -merge=1 runs it as a program). The
kiosk modules are instrumented, so coverage of the Python header walkers guides the
search; OpenCV's C++ decoders are not instrumented but run on every input, so a crash
there ends the run too. tests/fuzz/test_fuzz.py runs a bounded session in CI.
"""

import sys
from pathlib import Path

import atheris

# The drivers run as scripts: make the checkout importable as it is under pytest.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["kiosk"]):
    from tests.fuzz.targets import decode_target, service_limits


def main() -> None:
    limits = service_limits()
    atheris.Setup(sys.argv, lambda data: decode_target(data, limits))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
