"""kiosk/channel.py: targets, the default service config (round_robin, health checks, retries), overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiosk.channel import DEFAULT_SERVICE_CONFIG, ChannelError, channel_options, check_target, create_channel


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:50051", "unix:/run/kiosk.sock", "unix:///run/kiosk.sock", "ipv4:10.0.0.1:50051,10.0.0.2:50051",
     "ipv6:[::1]:50051,[::1]:50052", "dns:///kiosk.internal:50051"],
)
def test_grpc_targets_are_accepted(target):
    assert check_target(target) == target
    create_channel(target).close()  # channels connect lazily: nothing is dialled here


@pytest.mark.parametrize("target", ["", " 127.0.0.1:1", "ipv4:10.0.0.1:1, 10.0.0.2:1", "ipv4:10.0.0.1:1,,10.0.0.2:1"])
def test_malformed_targets_are_refused_with_the_forms_that_work(target):
    with pytest.raises(ChannelError):
        check_target(target)


def _config(options) -> dict:
    return json.loads(dict(options)["grpc.service_config"])


def test_default_config_balances_checks_health_and_retries_unavailable():
    config = _config(channel_options())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"] == {"serviceName": "kiosk.v1.Kiosk"}
    [method] = config["methodConfig"]
    assert {"service": "kiosk.v1.Kiosk", "method": "Verify"} in method["name"]
    # Sessions are never retried: their frames went to a replica that is gone.
    assert {"service": "kiosk.v1.Kiosk", "method": "VerifySession"} not in method["name"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    # A whole Verify request (up to 8 MiB) must fit the retry buffer, or it would not be retried.
    assert dict(channel_options())["grpc.per_rpc_retry_buffer_size"] >= 8 * 1024 * 1024


def test_config_is_overridable_and_health_channels_do_not_health_check():
    assert "healthCheckConfig" not in _config(channel_options(health_check=False))
    assert "healthCheckConfig" in DEFAULT_SERVICE_CONFIG  # the default itself is untouched
    pick_first = {"loadBalancingConfig": [{"pick_first": {}}]}
    assert _config(channel_options(pick_first)) == pick_first
    assert _config(channel_options(json.dumps(pick_first))) == pick_first
    with pytest.raises(ChannelError, match="not JSON"):
        channel_options("{round_robin")
    assert dict(channel_options(server_name="kiosk.example"))["grpc.ssl_target_name_override"] == "kiosk.example"


def test_tls_options_are_checked(tmp_path):
    with pytest.raises(ChannelError, match="needs its private key"):
        create_channel("127.0.0.1:1", ca=tmp_path / "ca.pem", cert=tmp_path / "c.pem")
    with pytest.raises(ChannelError, match="cannot read CA certificate"):
        create_channel("127.0.0.1:1", ca=tmp_path / "missing.pem")


def test_channel_module_is_light():
    code = "import sys, kiosk.channel; print(sorted(m for m in ('onnxruntime', 'cv2', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
