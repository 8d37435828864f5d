"""Hardware profiles: per-board inference settings and latency budgets.

A profile is data (``hardware/profiles/<name>.toml``); the service picks one by name,
by path, or by reading the board model from the device tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kiosk.errors import ConfigError
from kiosk.settings import bundled_profiles_dir, load_toml


@dataclass(frozen=True)
class OrtSettings:
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    execution_mode: str = "sequential"  # sequential | parallel
    enable_cpu_mem_arena: bool = True
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


@dataclass(frozen=True)
class DetectorSettings:
    max_input_side: int = 640
    min_face_px: int = 40


@dataclass(frozen=True)
class Budgets:
    verify_p95_ms: float = 150.0
    session_fps: float = 15.0


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str = ""
    # Substring of /proc/device-tree/model that selects this profile under "auto".
    board_match: str = ""
    onnxruntime: OrtSettings = field(default_factory=OrtSettings)
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    budgets: Budgets = field(default_factory=Budgets)


DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
FALLBACK_PROFILE = "x86"


def read_board_model(path: Path = DEVICE_TREE_MODEL) -> str:
    try:
        return path.read_bytes().rstrip(b"\0").decode("ascii", "replace")
    except OSError:
        return ""


def available_profiles(directory: Path | None = None) -> dict[str, HardwareProfile]:
    directory = directory or bundled_profiles_dir()
    return {p.stem: load_toml(HardwareProfile, p) for p in sorted(directory.glob("*.toml"))}


def select_profile(wanted: str, board_model: str | None = None) -> HardwareProfile:
    """The profile named ``wanted``, the TOML file at that path, or the board's under "auto"."""
    if wanted.endswith(".toml"):
        return load_toml(HardwareProfile, wanted)
    profiles = available_profiles()
    if wanted != "auto":
        if wanted not in profiles:
            raise ConfigError(f"unknown hardware profile {wanted!r}; known: {', '.join(sorted(profiles))}")
        return profiles[wanted]
    board = read_board_model() if board_model is None else board_model
    for profile in profiles.values():
        if profile.board_match and profile.board_match in board:
            return profile
    return profiles[FALLBACK_PROFILE]
