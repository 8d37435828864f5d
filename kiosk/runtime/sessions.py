"""ONNX Runtime session factory: one place turns a hardware profile into session options."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from kiosk.errors import ConfigError, ModelIntegrityError
from kiosk.runtime.manifest import Manifest, ModelEntry, verified_model_path
from kiosk.runtime.profile import OrtSettings

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXEC_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


def session_options(settings: OrtSettings) -> ort.SessionOptions:
    if settings.graph_optimization not in _OPT_LEVELS:
        raise ConfigError(f"graph_optimization must be one of {', '.join(_OPT_LEVELS)}")
    if settings.execution_mode not in _EXEC_MODES:
        raise ConfigError(f"execution_mode must be one of {', '.join(_EXEC_MODES)}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
    options.execution_mode = _EXEC_MODES[settings.execution_mode]
    options.enable_cpu_mem_arena = settings.enable_cpu_mem_arena
    # Off: onnxruntime keeps a memory plan per distinct input shape, and p-net sees a new
    # shape at every pyramid level of every new image size (r-net and o-net at every
    # candidate count). With it on, the service's RSS grew 3 % over 150 Verify calls of
    # varied ID photo sizes, and p-net alone by 230 MB over 800 runs of 400 sizes; off,
    # neither grows, and no stage got measurably slower (python -m hardware.tune mem-pattern).
    options.enable_mem_pattern = False
    # Worker threads sleep between runs instead of spinning: a request alternates many small
    # runs (the MTCNN cascade) with Python work, and a kiosk shares its cores with the UI and
    # the camera. Spinning workers held the cores during the Python parts: a whole Verify took
    # 0.36x the time without spinning (interleaved, 60 rounds, x86 profile on a 2-core VM;
    # models/README.md "Speed"), and detection and embedding alone 0.66-0.88x.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Nothing of a request may be written anywhere: no optimised-model dumps, no profiling files.
    options.enable_profiling = False
    options.log_severity_level = 3
    return options


class SessionFactory:
    """Builds hash-checked sessions for manifest roles with the profile's options."""

    def __init__(self, models_dir: Path, manifest: Manifest, settings: OrtSettings):
        self.models_dir = models_dir
        self.manifest = manifest
        self.settings = settings
        self._options = session_options(settings)

    def create(self, role: str) -> tuple[ort.InferenceSession, ModelEntry]:
        return self.session_for(self.manifest.entry(role))

    def session_for(self, entry: ModelEntry) -> tuple[ort.InferenceSession, ModelEntry]:
        """A session of ``entry``'s file, after its hash check."""
        role = entry.role
        path = verified_model_path(self.models_dir, entry)
        try:
            session = ort.InferenceSession(
                str(path), sess_options=self._options, providers=list(self.settings.providers)
            )
        except Exception as e:  # ORT raises its own exception types, not a common base
            raise ModelIntegrityError(f"model file {path} (role {role}) cannot be loaded: {e}") from None
        return session, entry
