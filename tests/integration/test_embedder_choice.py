"""Models by role: the shipped fallback embedder (expo MobileFaceNet) chosen in settings, end to end.

``[models] embedder`` names a manifest entry by its file; its calibration
(models/calibration_mobilefacenet_192.toml, written by `kiosk calibrate`) is bound to that
file's SHA-256 and refused for any other. The service loaded with it answers Verify
through a real gRPC server on 127.0.0.1 and reports its version in GetInfo.
"""

from __future__ import annotations

import dataclasses

import pytest

from kiosk.calibration import load_calibration
from kiosk.client import KioskClient
from kiosk.domain import Decision
from kiosk.errors import ConfigError
from kiosk.offline.scores import calibration_toml
from kiosk.pipeline.verifier import Verifier
from kiosk.runtime.manifest import load_manifest
from kiosk.runtime.models import ROLES
from kiosk.server.calls import Consent
from kiosk.settings import ModelSettings, ServiceSettings, Settings

EXPO_FILE = "mobilefacenet_192.onnx"
EXPO_CALIBRATION = "calibration_mobilefacenet_192.toml"
CONSENT = Consent(True, "2026-01")


def expo_settings() -> Settings:
    return Settings(
        # No chip calibration of its own: chip-sized ID photos use its main thresholds.
        models=ModelSettings(embedder=EXPO_FILE, calibration=EXPO_CALIBRATION, chip_calibration=""),
        service=ServiceSettings(listen=("127.0.0.1:0",)),
    )


@pytest.fixture(scope="module")
def expo_verifier() -> Verifier:
    return Verifier.load(expo_settings())


@pytest.fixture(scope="module")
def manifest():
    models = Settings().models
    return load_manifest(models.resolved_dir() / models.manifest)


def test_the_role_table_names_every_model_the_pipeline_uses():
    assert set(ROLES) == {"detector", "embedder", "liveness", "eye_state", "face_mesh"}
    assert {name for name, role in ROLES.items() if role.required} == {"detector", "embedder", "liveness"}
    assert ROLES["detector"].nets == ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")


def test_the_settings_choose_the_embedder_and_its_calibration(expo_verifier, verifier, manifest):
    expo = next(entry for entry in manifest.model if entry.file == EXPO_FILE)
    assert expo_verifier.model_versions["embedder"] == expo.version != verifier.model_versions["embedder"]
    assert expo_verifier.calibration.embedder_sha256 == expo.sha256
    # Aligned size from the manifest: 112 for both; the embedding size is the model's own.
    assert expo_verifier.embedder.aligned_size == verifier.embedder.aligned_size == 112
    # Its own thresholds: a 192-d embedding's cosines are not fr_feature's.
    assert expo_verifier.operating_points != verifier.operating_points


def test_a_calibration_is_refused_for_another_embedder(tmp_path, verifier):
    # The default calibration names fr_feature: refused for the expo embedder at start-up.
    with pytest.raises(ConfigError, match="run kiosk calibrate"):
        Verifier.load(Settings(models=ModelSettings(embedder=EXPO_FILE)), roles=("detector", "embedder"))
    # Same version string, other weights (another SHA-256): refused too, naming both hashes.
    forged = dataclasses.replace(verifier.calibration, embedder_sha256="0" * 64)
    path = tmp_path / "forged.toml"
    path.write_text(calibration_toml(forged))
    with pytest.raises(ConfigError, match=f"SHA-256 {'0' * 64}.*{verifier.calibration.embedder_sha256}"):
        load_calibration(path, forged.embedder, verifier.calibration.embedder_sha256)
    with pytest.raises(ConfigError, match="no model file of that name"):
        Verifier.load(Settings(models=ModelSettings(embedder="missing.onnx")), roles=("embedder",))


def test_offline_commands_load_only_the_models_they_need():
    scoring = Verifier.load(Settings(), calibrated=False, roles=("detector", "embedder"))
    assert scoring.detector is not None and scoring.embedder is not None
    assert scoring.passive_liveness is None and scoring.eye_state is None and scoring.face_mesh is None
    assert set(scoring.model_versions) == {"mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "embedder"}


def test_the_expo_embedder_through_a_real_server(start_server, expo_verifier, photos):
    running = start_server(settings=expo_settings(), verifier=expo_verifier)
    genuine = (photos.scorsese[0].read_bytes(), [photos.scorsese[1].read_bytes()])
    impostor = (photos.scorsese[0].read_bytes(), [photos.stranger.read_bytes()])
    with KioskClient(running.address) as client:
        match = client.verify(*genuine, consent=CONSENT, request_id="expo-1")
        no_match = client.verify(*impostor, consent=CONSENT, request_id="expo-2")
        info = client.info()
    assert match.decision is Decision.MATCH, match
    assert no_match.decision is Decision.NO_MATCH, no_match
    expo_version = expo_verifier.model_versions["embedder"]
    assert match.model_versions["embedder"] == info.model_versions["embedder"] == expo_version
    assert match.operating_point in expo_verifier.operating_points
    assert set(info.operating_points) == set(expo_verifier.operating_points)
    assert info.chip_operating_points == ()  # chip_calibration = "": chip photos use operating_points


def test_a_mismatched_calibration_stops_the_cli_with_one_line(tmp_path, photos, capsys):
    from kiosk.cli import main

    config = tmp_path / "kiosk.toml"
    config.write_text(f'[models]\nembedder = "{EXPO_FILE}"\n')  # the default calibration is fr_feature's
    code = main(["--config", str(config), "verify", str(photos.scorsese[0]), str(photos.scorsese[1])])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("kiosk: ") and err.count("\n") == 1
    assert "calibrated for embedder 'fr-feature" in err and "mobilefacenet-192" in err
