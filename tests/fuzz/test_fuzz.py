"""Fuzzing in CI: the regression corpus in-process, then a bounded atheris run of each target.

The bounded runs (``FUZZ_SECONDS`` in all, a minute and a bit) start from seeds
generated here from synthetic pixels plus tests/fuzz/corpus/, and must end without a
crash, an uncaught exception or a hang (libFuzzer's -timeout per input). New inputs go
to a temporary directory, never into the committed corpus. Longer runs, by hand:

    python tests/fuzz/fuzz_decode.py -dict=tests/fuzz/decode.dict -max_total_time=3600 /tmp/new tests/fuzz/corpus/decode

and to fold what a long run found into the committed corpus (coverage-preserving,
small files only):

    python tests/fuzz/fuzz_decode.py -merge=1 tests/fuzz/corpus/decode /tmp/new
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import seeds
from kiosk.settings import Settings
from tests.fuzz.targets import decode_target, request_target, service_limits

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS = HERE / "corpus"
# Seconds of fuzzing per target in CI; the decoder has more to explore.
FUZZ_SECONDS = {"decode": 45, "request": 20}
# Per input: far beyond any legitimate decode (milliseconds), short enough to catch a hang.
HANG_SECONDS = 10
TARGETS = {
    "decode": decode_target,
    "request": lambda data, limits: request_target(data, limits, Settings().limits.max_live_photos),
}


def test_valid_seed_images_decode():
    from kiosk.pipeline.decode import decode_image

    for name, data in seeds.image_seeds().items():
        assert decode_image(data, service_limits()).ndim == 3, name


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_regression_corpus_is_handled(target):
    files = sorted((CORPUS / target).iterdir())
    assert files, f"{CORPUS / target} is empty"
    limits = service_limits()
    for path in files:
        TARGETS[target](path.read_bytes(), limits)


def _stat(output: str, name: str) -> str:
    match = re.search(rf"stat::{name}:\s*(\d+)", output)
    return match.group(1) if match else "?"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_bounded_fuzz_run_finds_nothing(target, tmp_path, record_property):
    pytest.importorskip("atheris", reason="atheris has wheels for x86-64 Linux only: pip install atheris")
    new, seed_dir, artifacts = tmp_path / "new", tmp_path / "seeds", tmp_path / "artifacts"
    new.mkdir()
    artifacts.mkdir()
    seeds.write(seeds.image_seeds() if target == "decode" else seeds.request_seeds(), seed_dir)
    command = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        f"-max_total_time={FUZZ_SECONDS[target]}",
        f"-timeout={HANG_SECONDS}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        *([f"-dict={HERE / 'decode.dict'}"] if target == "decode" else []),
        str(new),
        str(seed_dir),
        str(CORPUS / target),
    ]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=FUZZ_SECONDS[target] + 120,
    )
    output = done.stderr + done.stdout
    # libFuzzer's last line before the stats: "#N DONE cov: C ft: F corp: ...".
    summary = next((line for line in reversed(output.splitlines()) if re.search(r"\sDONE\s", line)), "no DONE line")
    figures = f"{_stat(output, 'number_of_executed_units')} runs; {summary}"
    record_property(f"fuzz_{target}", figures)
    print(f"fuzz_{target}: {figures}")
    found = sorted(p.name for p in artifacts.iterdir())
    assert done.returncode == 0 and not found, f"{found}\n{output[-4000:]}"
