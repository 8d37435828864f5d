"""The aarch64 onnxruntime wheel loads our models and agrees with x86 on Pi 4 and Pi 5 CPUs (qemu-user).

Opt-in, because emulation takes a minute or more: ``KIOSK_ARM_CHECK=1``. It also needs
qemu-user (``apt-get install qemu-user-static``), the arm64 Python sysroot and the aarch64
wheels (``python hardware/arm_check.py --setup``), and root for the mount namespace in
which the guest sees the board's /proc/cpuinfo; it skips saying which is missing.
"""

from __future__ import annotations

import os

import pytest

from hardware import arm_check


def test_aarch64_wheel_agrees_with_x86():
    if os.environ.get("KIOSK_ARM_CHECK") != "1":
        pytest.skip("emulated ARM check is opt-in (slow): KIOSK_ARM_CHECK=1 python -m pytest tests/hil/test_arm_emulated.py")
    if os.geteuid() != 0:
        pytest.skip("the emulated ARM check needs root (unshare --mount) for the board's /proc/cpuinfo")
    cache = arm_check.cache_dir()
    try:
        arm_check.find_qemu()
        arm_check.sysroot_python(cache)
        arm_check.site_dir(cache, arm_check.host_onnxruntime_version())
    except arm_check.CheckUnavailable as e:
        pytest.skip(str(e))
    report = arm_check.run_check(arm_check.CPU_MODELS, cache)
    assert report["ok"], arm_check.format_report(report)
