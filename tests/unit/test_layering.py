"""The service does not import the offline tools (kiosk/offline/).

Checked in a fresh interpreter (a subprocess): this test process has imported
everything already. `kiosk serve` runs kiosk.cli's cmd_serve, which imports
kiosk.runtime.hardening and then kiosk.server.app.
"""

from __future__ import annotations

import json
import subprocess
import sys

SERVE_IMPORTS = "import kiosk.cli, kiosk.runtime.hardening, kiosk.server.app"


def test_serving_imports_no_offline_module():
    code = (
        f"import json, sys\n{SERVE_IMPORTS}\n"
        "print(json.dumps(sorted(n for n in sys.modules if n == 'kiosk.offline' or n.startswith('kiosk.offline.'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []
