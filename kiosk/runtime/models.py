"""The models by role: one table says which wrapper serves each role and whether it is required.

A role is what the pipeline needs (a detector, an embedder, ...); a manifest entry is a
hash-checked model file that can fill it. ``[models]`` settings choose the entry of a
role by its file name (the embedder above all: an operator who licenses a stronger one
adds its manifest entry, calibrates it and names it there); "" means the manifest entry
whose ``role`` is the role's name. ``load_models`` builds only the roles a command needs:
`kiosk calibrate` and `kiosk evaluate` load the detector and the embedder, `kiosk
liveness-report` the detector and the liveness model, the service all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kiosk.errors import ConfigError
from kiosk.pipeline.detect import MtcnnDetector
from kiosk.pipeline.embed import Embedder
from kiosk.pipeline.eyes import EyeStateModel
from kiosk.pipeline.landmarks import FaceMesh
from kiosk.pipeline.liveness import PassiveLiveness
from kiosk.runtime.manifest import Manifest, ModelEntry, load_verified_manifest
from kiosk.runtime.profile import HardwareProfile
from kiosk.runtime.sessions import SessionFactory
from kiosk.settings import ModelSettings, Settings


@dataclass(frozen=True)
class Role:
    """One thing the pipeline needs a model for."""

    name: str
    # The wrapper class: built from (session, entry), or from one such pair per net.
    wrapper: Callable[..., Any]
    # Without a required role the service cannot verify at all: its absence from the
    # manifest refuses to start. An optional one just switches its check off.
    required: bool
    # The manifest roles it is built from; the detector is the three MTCNN nets.
    nets: tuple[str, ...]
    # The ``[models]`` setting that names its manifest entry ("" = none: fixed by the manifest).
    setting: str = ""


ROLES: dict[str, Role] = {
    role.name: role
    for role in (
        Role("detector", MtcnnDetector, True, ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")),
        Role("embedder", Embedder, True, ("embedder",), setting="embedder"),
        Role("liveness", PassiveLiveness, True, ("liveness",), setting="liveness_model"),
        Role("eye_state", EyeStateModel, False, ("eye_state",), setting="eye_state"),
        Role("face_mesh", FaceMesh, False, ("face_mesh",), setting="face_mesh"),
    )
}
ALL_ROLES = tuple(ROLES)


@dataclass(frozen=True)
class Models:
    """The loaded wrappers (None: not loaded, or an optional role the manifest lacks)."""

    detector: MtcnnDetector | None = None
    embedder: Embedder | None = None
    liveness: PassiveLiveness | None = None
    eye_state: EyeStateModel | None = None
    face_mesh: FaceMesh | None = None
    # Manifest role name -> the loaded entry (model_versions and the calibration checks use them).
    entries: dict[str, ModelEntry] = field(default_factory=dict)

    @property
    def versions(self) -> dict[str, str]:
        """Model version per manifest role, as Verification.model_versions reports them."""
        return {net: entry.version for net, entry in self.entries.items()}

    def warm_up(self, min_face_px: float) -> None:
        """One inference per model so the first real request does not pay for lazy initialisation."""
        import numpy as np

        if self.detector is not None:
            self.detector.detect(np.full((240, 320, 3), 128, dtype=np.uint8), min_face_px)
        for model in (self.embedder, self.face_mesh, self.eye_state, self.liveness):
            if model is not None:
                model.warm_up()


def selected_entry(manifest: Manifest, net: str, chosen: str) -> ModelEntry:
    """The manifest entry filling ``net``: the one whose file is ``chosen``, else the one of that role."""
    if not chosen:
        return manifest.entry(net)
    for entry in manifest.model:
        if entry.file == chosen:
            return entry
    files = ", ".join(entry.file for entry in manifest.model)
    raise ConfigError(f"models.{net} = {chosen!r}: the manifest has no model file of that name (it has {files})")


def load_models(settings: Settings, profile: HardwareProfile, roles: Iterable[str] = ALL_ROLES) -> Models:
    """Hash-check and load the models of ``roles`` with the profile's ONNX Runtime options."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ConfigError(f"unknown model role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    chosen = settings.models
    models_dir = chosen.resolved_dir()
    # Signature first: a model changed together with its manifest hash is refused here.
    manifest = load_verified_manifest(models_dir / chosen.manifest, chosen.manifest_public_key)
    factory = SessionFactory(models_dir, manifest, profile.onnxruntime)
    wrappers: dict[str, Any] = {}
    entries: dict[str, ModelEntry] = {}
    for name in roles:
        role = ROLES[name]
        selection = [_entry_of(manifest, net, role, chosen) for net in role.nets]
        if None in selection:
            continue  # an optional role the manifest does not have
        pairs = [factory.session_for(entry) for entry in selection]
        # A one-net wrapper takes (session, entry); the detector one such pair per net.
        wrappers[name] = role.wrapper(*pairs[0]) if len(pairs) == 1 else role.wrapper(*pairs)
        entries.update(zip(role.nets, selection))
    return Models(**wrappers, entries=entries)


def _entry_of(manifest: Manifest, net: str, role: Role, chosen: ModelSettings) -> ModelEntry | None:
    name = getattr(chosen, role.setting) if role.setting else ""
    if not name and not role.required and not any(entry.role == net for entry in manifest.model):
        return None
    return selected_entry(manifest, net, name)

