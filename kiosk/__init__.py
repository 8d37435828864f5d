"""kiosk: offline face verification for SIM-registration kiosks, keeping nothing biometric.

Python runs this file before any module of the package, so before any of them imports
ONNX Runtime: its telemetry opt-out is set here. Without it, the first session created
in a process writes a persistent device id and an event queue
(``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``, ``$TMPDIR/.ses``); ONNX Runtime
reads the variable when it initialises, so setting it in-process before the import is
enough (tests/integration/test_light_client.py checks that nothing is written).
"""

import os

__version__ = "0.1.0"

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
