"""Operating a kiosk: install, systemd unit, health command, metrics, structured logs, fleet info.

Real servers and real faces as in test_server.py. The install test builds the project
into a fresh venv (no system site-packages) the way hardware/INSTALL.md does
(non-editable, so the models and profiles must come from ``<venv>/share/kiosk``) and runs it from another directory;
it reads the shared photos in place and copies none of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import kiosk as kiosk_package
from kiosk import cli
from kiosk.client import KioskClient, RemoteError
from kiosk.errors import ConfigError
from kiosk.runtime.profile import read_board_model
from kiosk.server.app import build_server
from kiosk.server.calls import Consent
from kiosk.server.info import core_dumps_disabled, swap_active
from kiosk.settings import LivenessChallengeSettings, MetricsSettings, ServiceSettings, Settings, load_settings
from kiosk.v1 import kiosk_pb2 as pb
from tests.integration.rpc import kiosk_subprocess, sigterm_and_wait

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "hardware" / "systemd" / "kiosk.service"
EXAMPLE_SETTINGS = REPO / "hardware" / "systemd" / "kiosk.toml"
CONSENT_VERSION = Settings().consent.accepted_versions[0]
TIMEOUT = 60
# A user's `pip install` of the project and its dependencies into an empty venv: 104-152 s on
# a 2-core VM at load average 16 (25-28 s of CPU), more where the wheels must be downloaded.
INSTALL_TIMEOUT = 900
# Label names the metrics may carry; anything else (request_id, client, similarity, ...) is a leak.
ALLOWED_LABELS = {
    # kiosk_*
    "rpc", "decision", "code", "reason", "status", "failed_check", "stage", "role", "version",
    "device_id", "hardware_profile", "board_model", "calibration_created", "target_fmr", "le",
    "python", "onnxruntime", "opencv", "numpy", "grpcio", "protobuf",
    # prometheus_client's platform and GC collectors
    "implementation", "major", "minor", "patchlevel", "generation",
}  # fmt: skip


def settings_with(listen: tuple[str, ...] = ("127.0.0.1:0",), metrics: str = "", **service) -> Settings:
    # Liveness challenges off: the sessions here stream still photos (challenges have their own tests).
    return dataclasses.replace(
        Settings(),
        service=dataclasses.replace(ServiceSettings(), listen=listen, **service),
        metrics=MetricsSettings(listen=metrics),
        liveness_challenge=LivenessChallengeSettings(enabled=False),
    )


def verify_request(id_photo: Path, live: bytes, **fields) -> pb.VerifyRequest:
    fields.setdefault("consent", pb.Consent(granted=True, text_version=CONSENT_VERSION))
    return pb.VerifyRequest(id_photo=id_photo.read_bytes(), live_photos=[live], **fields)


def unit_lines(path: Path = UNIT) -> list[tuple[str, str]]:
    """(key, value) of every setting line of a unit file, in order (keys may repeat)."""
    pairs = []
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


# --------------------------------------------------------------------------- systemd


def _systemd_verify(unit: Path, tmp_path: Path) -> str:
    """`systemd-analyze verify` of ``unit`` with the venv's kiosk replaced by a stub; its output.

    verify insists that every Exec*= binary exists, and /opt/kiosk is not installed
    here: the stub is the only change, every other line is verified as written.
    """
    stub = tmp_path / "bin" / "kiosk"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    checked = tmp_path / "kiosk.service"
    checked.write_text(unit.read_text().replace("/opt/kiosk/bin/kiosk", str(stub)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(checked)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr
    # Warnings (unknown keys, unparsable values) leave the exit status at 0.
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines() if "kiosk.service" in line)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not found: install Debian's `systemd` package to check hardware/systemd/kiosk.service",
)
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    assert _systemd_verify(UNIT, tmp_path) == ""
    # The check has teeth: a misspelt directive is reported.
    typo = tmp_path / "typo" / "kiosk.service"
    typo.parent.mkdir()
    typo.write_text(UNIT.read_text().replace("PrivateTmp=yes", "PrivateTmpp=yes"))
    assert "Unknown key 'PrivateTmpp'" in _systemd_verify(typo, typo.parent)


def test_systemd_unit_is_hardened_and_agrees_with_the_example_settings():
    lines = unit_lines()
    values = dict(lines)
    settings = load_settings(EXAMPLE_SETTINGS)

    for key, value in {
        "User": "kiosk",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "LimitCORE": "0",
        "MemorySwapMax": "0",
        "RuntimeDirectory": "kiosk",
    }.items():
        assert values.get(key) == value, key
    assert values["MemoryMax"]
    # One writable place, and it is where the example settings put the audit log.
    assert [v for k, v in lines if k == "ReadWritePaths"] == ["/var/lib/kiosk"]
    assert Path(settings.audit.path).parent == Path("/var/lib/kiosk")
    # The service reads the example's installed path, and readiness asks its socket.
    assert values["ExecStart"] == "/opt/kiosk/bin/kiosk --config /etc/kiosk/kiosk.toml serve"
    socket = next(spec for spec in settings.service.listen if spec.startswith("unix:"))
    assert socket == "unix:/run/kiosk/kiosk.sock"
    assert values["ExecStartPost"].startswith("/opt/kiosk/bin/kiosk health ")
    assert values["ExecStartPost"].endswith(f" {socket}")


# --------------------------------------------------------------------------- install


def _copy_source(destination: Path) -> Path:
    """What a wheel is built from; the source tree itself is not written to (build/, egg-info)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".cache")
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    for name in ("kiosk", "models", "hardware"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    return destination


def test_documented_install_runs_from_a_clean_venv(tmp_path, photos):
    """INSTALL.md's steps as a user takes them: `python3 -m venv`, `pip install SOURCE`, run elsewhere.

    The venv is made the way a user makes one: its own pip and setuptools, no system
    site-packages, nothing borrowed from the interpreter running the tests. pip builds
    the project with the setuptools and wheel that pyproject.toml's build-system asks
    for (build isolation, from the package index or pip's cache, as for any user) and
    fetches the dependencies the same way; the kiosk package must be imported from the
    venv. `--no-compile` only skips writing .pyc files for every dependency (about a
    sixth of pip's CPU time here); Python compiles what it imports anyway.
    """
    source = _copy_source(tmp_path / "source")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    python, kiosk_command = venv / "bin" / "python", venv / "bin" / "kiosk"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        install = run(python, "-m", "pip", "install", "--no-compile", source, timeout=INSTALL_TIMEOUT)
        assert install.returncode == 0, install.stdout + install.stderr
        _check_installed_venv(venv, run, python, kiosk_command, photos)
    finally:
        # ~380 MB (OpenCV, ONNX Runtime, numpy); pytest keeps the last runs' tmp_path.
        shutil.rmtree(venv, ignore_errors=True)


def _check_installed_venv(venv: Path, run, python: Path, kiosk_command: Path, photos) -> None:
    found = run(
        python,
        "-c",
        "import json, kiosk, kiosk.settings as s;"
        "print(json.dumps([kiosk.__file__, str(s.bundled_models_dir()), str(s.bundled_profiles_dir())]))",
    )
    assert found.returncode == 0, found.stderr
    package, models, profiles = (Path(p) for p in json.loads(found.stdout))
    assert package.is_relative_to(venv)
    assert models == venv / "share" / "kiosk" / "models" and (models / "manifest.toml").is_file()
    assert profiles == venv / "share" / "kiosk" / "profiles" and (profiles / "rpi4b.toml").is_file()
    for installed in ("systemd/kiosk.service", "systemd/kiosk.toml", "doc/INSTALL.md", "doc/PRIVACY.md"):
        assert (venv / "share" / "kiosk" / installed).is_file(), installed

    usage = run(kiosk_command, "--help")
    assert usage.returncode == 0 and "health" in usage.stdout

    verified = run(kiosk_command, "verify", "--json", photos.scorsese[0], photos.scorsese[1])
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["decision"] == "match"
    assert {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder"} <= set(result["model_versions"])


# --------------------------------------------------------------------------- health


def test_kiosk_health_exit_codes(start_server, verifier, capsys, tmp_path):
    serving = start_server(unix=True)
    assert cli.main(["health", serving.address]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert cli.main(["health", "--service", "kiosk.v1.Kiosk", serving.address]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert cli.main(["health", "--json", serving.address]) == 0
    assert _strict_json(capsys.readouterr().out) == {"address": serving.address, "service": "", "status": "SERVING"}

    loading = start_server(verifier=None, unix=True)
    assert cli.main(["health", loading.address]) == 1
    assert capsys.readouterr().out == "NOT_SERVING\n"

    missing = f"unix:{tmp_path / 'nobody.sock'}"
    assert cli.main(["health", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kiosk: {missing}: UNAVAILABLE") and err.count("\n") == 1


def test_kiosk_health_wait_returns_once_models_are_loaded(start_server, verifier, capsys):
    loading = start_server(verifier=None, unix=True)
    threading.Timer(1.0, loading.server.ready, args=(verifier,)).start()

    started = time.monotonic()
    assert cli.main(["health", "--wait", str(TIMEOUT), loading.address]) == 0
    assert 1.0 <= time.monotonic() - started < TIMEOUT
    assert capsys.readouterr().out == "SERVING\n"


# --------------------------------------------------------------------------- metrics


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the endpoint as {(name, frozenset(labels.items())): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels`` (0 if none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0


def test_metrics_count_real_calls_and_carry_nothing_personal(start_server, photos, verifier, tls_files):
    running = start_server(
        settings_with(metrics="127.0.0.1:0", tls=tls_files.server_settings(), device_id="kiosk-test-7")
    )
    stub = running.stub(tls_files.client_credentials(tls_files.client_cert, tls_files.client_key))
    id_photo, genuine = photos.scorsese[0], photos.scorsese[1].read_bytes()
    personal_id = "req-personal-0001"

    similarities = []
    for live, request_id in ((genuine, personal_id), (photos.stranger.read_bytes(), "r2"), (photos.no_face, "r3")):
        request = verify_request(id_photo, live, request_id=request_id, device_id="kiosk-A")
        response = stub.Verify(request, timeout=TIMEOUT)
        if response.HasField("similarity"):  # not for the RETRY
            similarities.append(response.similarity)
    for request in (
        verify_request(id_photo, genuine, consent=pb.Consent(granted=False)),
        verify_request(id_photo, b""),
    ):
        with pytest.raises(grpc.RpcError):
            stub.Verify(request, timeout=TIMEOUT)
    session = [pb.SessionRequest(start=pb.SessionStart(
        id_photo=photos.nuaa_id.read_bytes(),
        request_id="s-personal",
        consent=pb.Consent(granted=True, text_version=CONSENT_VERSION),
    ))]  # fmt: skip
    session += [
        pb.SessionRequest(frame=pb.CameraFrame(encoded=p.read_bytes(), timestamp_ms=100 * i))
        for i, p in enumerate(photos.nuaa_frames[:3])
    ]
    events = list(stub.VerifySession(iter(session), timeout=TIMEOUT))
    similarities.append(events[-1].decision.similarity)
    assert len(similarities) == 3
    stub.GetInfo(pb.InfoRequest(), timeout=TIMEOUT)

    samples = scrape(running.server.metrics_port)

    requests = "kiosk_requests_total"
    assert sample(samples, requests, rpc="Verify", decision="match") == 1
    assert sample(samples, requests, rpc="Verify", decision="no_match") == 1
    assert sample(samples, requests, rpc="Verify", decision="retry") == 1
    assert sample(samples, requests, rpc="Verify", decision="none") == 2
    assert sample(samples, requests, rpc="VerifySession", decision="match") == 1
    assert sample(samples, requests, rpc="GetInfo", decision="none") == 1
    assert sample(samples, "kiosk_errors_total", rpc="Verify", code="FAILED_PRECONDITION") == 1
    assert sample(samples, "kiosk_errors_total", rpc="Verify", code="INVALID_ARGUMENT") == 1
    assert sample(samples, "kiosk_retries_total", reason="no_face_in_live_frame") == 1
    # Verify's match and no_match and the session (challenges off) passed the passive
    # check on every usable frame; the no-face retry performed none.
    assert sample(samples, "kiosk_liveness_total", status="passed") == 3
    assert sample(samples, "kiosk_liveness_total", status="not_performed") == 1
    assert sample(samples, "kiosk_request_duration_seconds_count", rpc="Verify") == 5
    assert sample(samples, "kiosk_stage_duration_seconds_count", stage="embed") == 4
    assert sample(samples, "kiosk_stage_duration_seconds_sum", stage="detect") > 0

    assert sample(samples, "kiosk_ready") == 1
    assert sample(samples, "kiosk_swap_active") == float(swap_active())
    assert sample(samples, "kiosk_core_dumps_disabled") == float(core_dumps_disabled())
    for role, version in verifier.model_versions.items():
        assert sample(samples, "kiosk_model_info", role=role, version=version) == 1
    for point in verifier.operating_points:
        assert sample(samples, "kiosk_operating_point_threshold", target_fmr=f"{point.target_fmr:g}") == point.threshold
    assert sample(samples, "kiosk_deployment_info", device_id="kiosk-test-7", hardware_profile=verifier.profile.name) == 1
    assert sample(samples, "kiosk_build_info", version=kiosk_package.__version__) == 1

    label_names = {name for (_, labels) in samples for name, _ in labels}
    assert label_names <= ALLOWED_LABELS, label_names - ALLOWED_LABELS
    label_values = " ".join(value for (_, labels) in samples for _, value in labels)
    for personal in (personal_id, "s-personal", tls_files.client_subject_cn, "kiosk-A"):
        assert personal not in label_values
    for similarity in similarities:
        assert not any(math.isclose(value, similarity, abs_tol=1e-6) for value in samples.values())

    running.server.stop(0).wait()
    with pytest.raises(urllib.error.URLError):
        scrape(running.server.metrics_port)


def test_metrics_are_off_by_default(kiosk):
    assert Settings().metrics.listen == ""
    assert kiosk.server.metrics_port == 0


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "192.0.2.7:9464", "unix:/tmp/metrics.sock", "9464"])
def test_metrics_listen_must_be_loopback_host_port(verifier, listen):
    with pytest.raises(ConfigError, match="metrics"):
        build_server(settings_with(metrics=listen), verifier)


# --------------------------------------------------------------------------- logs


CALL_KEYS = {
    "rpc", "request_id", "client_identity", "status", "details", "decision", "reason", "liveness", "audit_id",
    "duration_ms", "timings_ms",
}  # fmt: skip


def test_server_logs_are_json_lines_without_scores(tmp_path, photos):
    socket = tmp_path / "kiosk.sock"
    key = tmp_path / "audit.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    config = tmp_path / "kiosk.toml"
    config.write_text(
        f'[service]\nlisten = ["unix:{socket}"]\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\nkey_file = "{key}"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    address = f"unix:{socket}"
    consent = Consent(True, CONSENT_VERSION)
    with kiosk_subprocess("--config", str(config), "serve") as process:
        assert cli.main(["health", "--wait", str(TIMEOUT), address]) == 0
        with KioskClient(address, timeout=TIMEOUT) as client:
            verification = client.verify(
                photos.scorsese[0].read_bytes(), [photos.scorsese[1].read_bytes()], consent=consent, request_id="log-1"
            )
            with pytest.raises(RemoteError):
                client.verify(photos.scorsese[0].read_bytes(), [b""], consent=consent, request_id="log-2")
            client.info()
        log = sigterm_and_wait(process)
    assert process.returncode == 0, log

    lines = [json.loads(line) for line in log.splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    calls = {line.get("request_id") or line["rpc"]: line for line in lines if "rpc" in line}
    assert all(set(line) >= CALL_KEYS for line in calls.values())

    assert "face_mesh" in verification.model_versions  # what the audit record and the response carry
    match = calls["log-1"]
    assert (match["rpc"], match["status"], match["decision"], match["client_identity"]) == ("Verify", "OK", "match", "local")
    assert match["audit_id"] and match["liveness"] == "passed"
    assert {"decode", "detect", "embed"} <= set(match["timings_ms"])
    refused = calls["log-2"]
    assert (refused["status"], refused["decision"]) == ("INVALID_ARGUMENT", "")
    assert refused["details"] == "live_photos[0] is empty"
    assert calls["GetInfo"]["status"] == "OK"
    assert any(line["message"].startswith("metrics on http://127.0.0.1:") for line in lines)
    # The audit record holds a rounded similarity; the log holds none at all.
    assert "similarity" not in log
    assert repr(verification.similarity) not in log and f"{verification.similarity:.4f}" not in log


# --------------------------------------------------------------------------- fleet view


def test_get_info_tells_the_back_office_what_runs(kiosk, verifier):
    info = kiosk.stub().GetInfo(pb.InfoRequest(), timeout=TIMEOUT)

    # Every model that decides anything, the live sessions' face mesh included.
    assert {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder", "eye_state", "liveness", "face_mesh"} <= set(
        info.model_versions
    )
    assert dict(info.model_versions) == verifier.model_versions

    assert info.service_version == kiosk_package.__version__
    assert {"python", "onnxruntime", "opencv", "numpy", "grpcio", "protobuf"} == set(info.runtime_versions)
    assert info.runtime_versions["onnxruntime"]
    assert info.calibration_created == verifier.calibration.created
    assert info.board_model == read_board_model()


# --------------------------------------------------------------------------- calibrate / evaluate


def _strict_json(text: str):
    """json.loads that refuses Infinity and NaN, as JavaScript's JSON.parse does."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory, faces) -> Path:
    """A folder like the shared pairs_by_subset/: two small CSVs without a subset column.

    The rows name photos under ``faces`` (read in place); nothing but paths is written.
    """
    folder = tmp_path_factory.mktemp("pairs")
    for subset, rows in (("kpop", 5), ("lfw", 5)):
        lines = (faces / "pairs_by_subset" / f"{subset}.csv").read_text().splitlines()
        genuine = [line for line in lines[1:] if line.endswith(",1")][:rows]
        impostor = [line for line in lines[1:] if line.endswith(",0")][:rows]
        (folder / f"{subset}.csv").write_text("\n".join([lines[0], *genuine, *impostor]) + "\n")
    return folder


def _digest(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest()


def test_calibrate_never_touches_the_live_calibration_unless_asked(pairs_folder, faces, tmp_path, capsys):
    live = Settings().models.resolved_dir() / Settings().models.calibration
    before = _digest(live)
    args = ["calibrate", "--pairs", str(pairs_folder), "--root", str(faces)]

    # No destination: argparse refuses (exit 2) instead of defaulting to the live file.
    with pytest.raises(SystemExit) as refused:
        cli.main([*args, "--fmr", "0.05"])
    assert refused.value.code == 2
    assert "one of the arguments --out --install is required" in capsys.readouterr().err

    # 20 listed impostor pairs cannot measure 1e-3: refused before any image is embedded.
    out = tmp_path / "calibration.toml"
    assert cli.main([*args, "--fmr", "1e-3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FMR 0.001 (needs >= 3000)" in err and "--force" in err
    assert not out.exists()

    # Enough impostors with every cross-person pair: written where asked, as JSON; each
    # file's name became its rows' subset.
    assert cli.main([*args, "--fmr", "0.05", "--all-impostors", "--out", str(out), "--json"]) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["out"] == str(out) and result["installed"] is False
    assert {"all pairs", "kpop", "lfw"} <= set(result["reports"])
    [point] = result["operating_points"]
    assert point["target_fmr"] == 0.05 and point["impostor_pairs"] >= 60
    import tomllib

    shipped = tomllib.loads(out.read_text())
    assert shipped["operating_point"][0]["threshold"] == point["threshold"]
    assert _digest(live) == before

    # --force writes the unmeasurable point, and says in the file that it is extrapolated.
    assert cli.main([*args, "--fmr", "1e-3", "--out", str(out), "--force"]) == 0
    assert "extrapolated, not measured" in out.read_text()
    assert _digest(live) == before


def test_evaluate_prints_figures_progress_json_and_a_plot(pairs_folder, faces, tmp_path, capsys):
    args = ["evaluate", "--pairs", str(pairs_folder), "--root", str(faces)]
    scores, plot = tmp_path / "scores.csv", tmp_path / "roc.png"
    assert cli.main([*args, "--scores-out", str(scores), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    # Not a terminal here: plain progress lines on stderr, figures on stdout.
    assert "embedding: " in captured.err and " images (" in captured.err
    for figure in ("AUC ", "EER ", "FAR 0.01: TAR ", "failure to enrol: "):
        assert figure in captured.out, figure
    assert scores.read_text().startswith("a,b,same,score\n")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert cli.main([*args, "--json"]) == 0
    result = _strict_json(capsys.readouterr().out)
    assert result["pairs"] == 20 and result["pairs_scored"] + result["pairs_without_face"] == 20
    assert 0 < result["report"]["auc"] <= 1 and result["images"] >= 20
    assert result["failure_to_enrol_rate"] == result["images_without_face"] / result["images"]


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such pairs file"),
        ("x,y\n1,2\n", "expected columns a,b,same"),
        ("a,b,same\n", "no pairs"),
        ("a,b,same\nlfw__Martin_Scorsese/none.jpg,lfw__Martin_Scorsese/none2.jpg,1\n", "cannot read "),
        ("a,b,same\nonly-one-column\n", "line 2: expected two image paths"),
    ],
)
def test_operator_commands_give_one_line_and_exit_2_on_bad_input(content, expected, faces, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    if content is not None:
        pairs.write_text(content)
    assert cli.main(["evaluate", "--pairs", str(pairs), "--root", str(faces)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kiosk: ") and err.count("\n") == 1 and expected in err, err


def test_calibrate_refuses_pairs_without_impostors(faces, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    person = "lfw__Martin_Scorsese/Martin_Scorsese"
    pairs.write_text(f"a,b,same\n{person}_0002.jpg,{person}_0003.jpg,1\n")
    args = ["calibrate", "--pairs", str(pairs), "--root", str(faces), "--fmr", "0.01"]
    args += ["--out", str(tmp_path / "c.toml")]
    assert cli.main([*args, "--force"]) == 2
    [err] = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("embedding: ")]
    assert err.startswith("kiosk: ") and "0 impostor pairs with a usable face" in err, err


def test_liveness_report_with_a_wrong_root_is_one_line(tmp_path, capsys):
    assert cli.main(["liveness-report", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spoof/labels.csv" in err, err


# --------------------------------------------------------------------------- start-up refusals


def test_serve_refuses_unusable_settings_before_any_listener_opens(tmp_path):
    """An uncalibrated default FMR, an unknown profile and a busy port: exit 2, one clear line, never "listening"."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = {
        "fmr": ('[decision]\ntarget_fmr = 0.05\n', "decision.target_fmr 0.05 has no calibrated threshold"),
        "profile": ('[hardware]\nprofile = "nope"\n', "unknown hardware profile 'nope'"),
        "busy": (f'[service]\nlisten = ["127.0.0.1:{busy.getsockname()[1]}"]\n', "address already in use"),
    }
    processes = {}
    with contextlib.ExitStack() as stack:
        for name, (toml, _) in cases.items():
            config = tmp_path / f"{name}.toml"
            if name != "busy":
                toml = f'[service]\nlisten = ["unix:{tmp_path / name}.sock"]\n' + toml
            config.write_text(toml)
            processes[name] = stack.enter_context(kiosk_subprocess("--config", str(config), "serve"))
        for name, (_, expected) in cases.items():
            _, err = processes[name].communicate(timeout=TIMEOUT)
            assert processes[name].returncode == 2, (name, err)
            assert expected in err, (name, err)
            assert "listening on" not in err and "GRPC_VERBOSITY" not in err, (name, err)
            assert not (tmp_path / f"{name}.sock").exists()
    busy.close()


# --------------------------------------------------------------------------- CLI odds and ends


def test_health_of_an_unknown_service_says_why(start_server, capsys):
    serving = start_server(unix=True)
    assert cli.main(["health", "--service", "nope", serving.address]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NOT_FOUND: the service has no health status for 'nope'" in err, err
    assert "kiosk.v1.Kiosk" in err


def test_health_wait_is_not_stretched_by_a_host_that_never_answers(capsys):
    # A socket that listens but never speaks: the TCP connection opens, the HTTP/2
    # handshake never completes, so each check would hang for its whole --timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        assert cli.main(["health", "--wait", "1", "--timeout", "60", f"127.0.0.1:{silent.getsockname()[1]}"]) == 2
        elapsed = time.monotonic() - started
    # Bounded by --wait plus one poll interval, not by the 60 s --timeout (generous margin for a busy machine).
    assert elapsed < 15, elapsed
    assert "DEADLINE_EXCEEDED" in capsys.readouterr().err


def test_verify_into_a_closed_pipe_is_one_line_and_exit_2(photos):
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk", "verify", str(photos.scorsese[0]), str(photos.scorsese[1])],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = process.stderr.read()
    assert process.wait(timeout=TIMEOUT) == 2, err
    assert err == "kiosk: output closed before it was all written (broken pipe)\n", err


def test_session_json_is_one_strict_object_per_line_with_frame_results(start_server, photos, capsys, tmp_path):
    running = start_server(settings_with(listen=(f"unix:{tmp_path / 'session.sock'}",)))
    frames = [str(p) for p in photos.nuaa_frames[:3]]
    code = cli.main(["session", "--server", running.address, "--json", "--id-photo", str(photos.nuaa_id), *frames])
    events = [_strict_json(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds[-1] == "decision" and kinds.count("decision") == 1
    assert kinds.count("frame_result") >= 1
    frame = next(event for event in events if event["event"] == "frame_result")
    assert frame["finding"]["role"] == "live_frame" and "quality" in frame["finding"]
    decision = events[-1]
    assert decision["decision"] in ("match", "no_match", "retry") and decision["message"]
    # Challenges off (settings_with): liveness rests on the passive model, as CONFIG.md says.
    assert decision["liveness"]["status"] == "passed" and decision["liveness"]["passive_score"] is not None
    config = (REPO / "hardware" / "CONFIG.md").read_text()
    assert "rests on the passive model alone: PASSED with the lowest passive score" in config
    assert code == {"match": 0, "no_match": 1, "retry": 2}[decision["decision"]]


# --------------------------------------------------------------------------- mutual TLS


@pytest.fixture(scope="module")
def device_named_tls(tmp_path_factory) -> dict[str, Path]:
    """hardware/INSTALL.md's recipe in miniature: a CA, a server certificate whose only SAN
    is the device's name (not the address a back office dials), and a client certificate."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509 import DNSName
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from tests.integration.conftest import _certificate, _name, _write

    directory = tmp_path_factory.mktemp("device-tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fleet CA")
    _write(directory, "ca", _certificate(ca_name, ca_key, ca_name, ca_key, ca=True))
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        _name("kiosk-0042"), server_key, ca_name, ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH, san=[DNSName("kiosk-0042")],
    )
    _write(directory, "server", server, server_key)
    client = _certificate(_name("backoffice-1"), client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(directory, "client", client, client_key)
    return {name: directory / name for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_server_name_override_reaches_a_device_certificate(start_server, device_named_tls, capsys):
    from kiosk.settings import TlsSettings

    files = device_named_tls
    tls = TlsSettings(str(files["server.crt"]), str(files["server.key"]), str(files["ca.crt"]))
    running = start_server(settings_with(tls=tls))
    client = ["--ca", str(files["ca.crt"]), "--cert", str(files["client.crt"]), "--key", str(files["client.key"])]

    # 127.0.0.1 is not in the certificate: refused, as it must be.
    assert cli.main(["health", *client, running.address]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
    # The name the certificate carries: accepted.
    assert cli.main(["health", *client, "--server-name", "kiosk-0042", running.address]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    # Any other name: refused.
    assert cli.main(["health", *client, "--server-name", "kiosk-0043", running.address]) == 2
    capsys.readouterr()
    # Without TLS the option means nothing: a usage error, not a silent plain-text call.
    assert cli.main(["health", "--server-name", "kiosk-0042", running.address]) == 2
    assert "only used with TLS" in capsys.readouterr().err


def test_rejected_handshakes_are_logged_by_the_server(start_server, tls_files, capfd):
    """gRPC Python has no hook for failed handshakes; gRPC's core logs each one to stderr
    (the journal under systemd). This pins that line, which INSTALL.md tells operators to watch."""
    running = start_server(settings_with(tls=tls_files.server_settings()))
    rogue = running.stub(tls_files.client_credentials(tls_files.rogue_cert, tls_files.rogue_key))
    with pytest.raises(grpc.RpcError):
        rogue.GetInfo(pb.InfoRequest(), timeout=TIMEOUT)
    err = ""
    for _ in range(50):  # the core writes from its own thread
        err += capfd.readouterr().err
        if "Handshake failed" in err:
            break
        time.sleep(0.1)
    assert "Handshake failed" in err and "CERTIFICATE_VERIFY_FAILED" in err, err


def _install_md_tls_recipe() -> str:
    text = (REPO / "hardware" / "INSTALL.md").read_text()
    section = text[text.index("## Mutual TLS for remote clients") :]
    return section[section.index("```sh\n") + len("```sh\n") : section.index("```\n", section.index("```sh\n"))]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not found: install Debian's `openssl` package")
def test_install_md_tls_recipe_makes_certificates_the_service_accepts(start_server, photos, tmp_path):
    from kiosk.settings import TlsSettings

    made = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _install_md_tls_recipe()],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    tls = TlsSettings(str(tmp_path / "server.crt"), str(tmp_path / "server.key"), str(tmp_path / "ca.crt"))
    running = start_server(settings_with(tls=tls))
    files = {"ca": tmp_path / "ca.crt", "cert": tmp_path / "client.crt", "key": tmp_path / "client.key"}
    with KioskClient(running.address, **files, timeout=TIMEOUT, server_name="kiosk-0042") as client:
        verification = client.verify(
            photos.scorsese[0].read_bytes(), [photos.scorsese[1].read_bytes()], consent=Consent(True, CONSENT_VERSION)
        )
    assert verification.decision.value == "match"
    # The client identity INSTALL.md describes: the client certificate's subject.
    [record] = running.audit_records()
    assert record["client_identity"] == "CN=backoffice-1,O=Example Telecom"
    # The certificate names kiosk-0042, not 127.0.0.1: without the override the client refuses it.
    with KioskClient(running.address, **files, timeout=TIMEOUT) as client:
        with pytest.raises(RemoteError, match="UNAVAILABLE"):
            client.info()


def test_evaluate_and_verify_differ_only_by_the_live_photo_detection_path(verifier, photos):
    """evaluate scores both photos on the ID-photo path; Verify detects the live photo on
    the live path. Embedding the second photo on the live path reproduces Verify exactly."""
    from kiosk.pipeline.align import align_face
    from kiosk.pipeline.compare import cosine_similarity
    from kiosk.pipeline.decode import decode_image
    from kiosk.pipeline.scratch import Scratch
    from kiosk.pipeline.types import ImageRole

    id_photo, live_photo = photos.scorsese[0], photos.scorsese[1]

    def live_path_embedding(path: Path):
        with Scratch() as scratch:
            image = scratch.keep(decode_image(path.read_bytes(), verifier.image_limits))
            face = verifier.subject_face(scratch, image, ImageRole.LIVE_FRAME)
            return verifier.embedder.embed(scratch.keep(align_face(image, face.landmarks))).copy()

    reference = verifier.embed_file(id_photo)
    evaluated = cosine_similarity(reference, verifier.embed_file(live_photo))
    verified = verifier.verify(id_photo.read_bytes(), [live_photo.read_bytes()]).similarity
    assert verified == pytest.approx(cosine_similarity(reference, live_path_embedding(live_photo)), abs=1e-6)
    # The two paths differ, a little (the module docstring of kiosk.offline.evaluate has the figures).
    assert evaluated != pytest.approx(verified, abs=1e-6)
    assert abs(evaluated - verified) < 0.08


# --------------------------------------------------------------------------- reflection


def _reflection_v1(running, request):
    """One grpc.reflection.v1 exchange; v1's messages are v1alpha's under a new package name."""
    from grpc_reflection.v1alpha import reflection_pb2

    call = running.channel().stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [response] = call(iter([request]), timeout=TIMEOUT)
    return response


def test_reflection_answers_grpc_reflection_v1(kiosk, start_server):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    listed = _reflection_v1(kiosk, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"kiosk.v1.Kiosk", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    described = _reflection_v1(kiosk, reflection_pb2.ServerReflectionRequest(file_containing_symbol="kiosk.v1.Kiosk"))
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in described.file_descriptor_response.file_descriptor_proto
    ]
    assert any(f.package == "kiosk.v1" and "Kiosk" in [s.name for s in f.service] for f in files)

    with pytest.raises(grpc.RpcError) as caught:
        off = start_server(settings_with(reflection=False))
        _reflection_v1(off, reflection_pb2.ServerReflectionRequest(list_services=""))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- HIL harness


def test_hil_harness_runs_from_any_directory(tmp_path):
    """hardware/HIL.md's command, from outside the checkout: every module of the harness
    imports (they load at start-up) and the usage is printed."""
    harness = REPO / "hardware" / "hil"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(harness), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT,
        )

    usage = run("--help")
    assert usage.returncode == 0, usage.stderr
    assert "--device" in usage.stdout
    assert "hardware/hil" in (REPO / "hardware" / "HIL.md").read_text()
