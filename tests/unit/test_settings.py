"""Settings and hardware profiles: typed, frozen, unknown keys rejected."""

import dataclasses

import pytest

from kiosk.errors import ConfigError
from kiosk.runtime.profile import available_profiles, select_profile
from kiosk.settings import Settings, from_mapping, load_settings


def test_defaults_need_no_file():
    settings = load_settings(None)
    assert settings.service.listen == ("127.0.0.1:50051",)
    assert settings.decision.target_fmr == 1e-3


def test_values_are_loaded_and_coerced(tmp_path):
    path = tmp_path / "kiosk.toml"
    path.write_text('[service]\nlisten = ["unix:/tmp/k.sock"]\ncall_deadline_s = 5\n[decision]\ntarget_fmr = 0.01\n')
    settings = load_settings(path)
    assert settings.service.listen == ("unix:/tmp/k.sock",)
    assert settings.service.call_deadline_s == 5.0
    assert settings.decision.target_fmr == 0.01


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[service]\nlisten_on = []\n", "unknown key(s) listen_on"),
        ("[servce]\n", "unknown key(s) servce"),
        ('[service]\nmax_concurrent_calls = "four"\n', "expected int"),
        ("[service]\nmax_concurrent_calls = true\n", "expected int"),
        ("[service]\nlisten = \"127.0.0.1:1\"\n", "expected a list"),
        ("[quality.live_frame]\nmin_sharpnes = 3\n", "unknown key(s) min_sharpnes"),
        ("not toml = = 1", "invalid TOML"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path, text, fragment):
    path = tmp_path / "kiosk.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().service.listen = ()


def test_every_bundled_profile_loads():
    profiles = available_profiles()
    assert {"x86", "rpi4b", "rpi5"} <= set(profiles)
    for profile in profiles.values():
        assert profile.onnxruntime.intra_op_threads >= 1


@pytest.mark.parametrize(
    "board, expected",
    [
        ("Raspberry Pi 4 Model B Rev 1.5", "rpi4b"),
        ("Raspberry Pi 5 Model B Rev 1.0", "rpi5"),
        ("", "x86"),
    ],
)
def test_auto_profile_follows_the_board(board, expected):
    assert select_profile("auto", board_model=board).name == expected


def test_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="unknown hardware profile 'pi9'"):
        select_profile("pi9")


def test_nested_mapping_builds_dataclasses():
    settings = from_mapping(Settings, {"quality": {"id_photo": {"min_inter_eye_px": 9}}})
    assert settings.quality.id_photo.min_inter_eye_px == 9.0
    assert settings.quality.live_frame.min_inter_eye_px == 20.0


def test_overriding_one_id_photo_limit_keeps_the_other_id_photo_defaults():
    settings = from_mapping(Settings, {"quality": {"id_photo": {"min_inter_eye_px": 9}}})
    assert settings.quality.id_photo.min_sharpness == Settings().quality.id_photo.min_sharpness


def test_missing_required_key_is_named():
    from kiosk.runtime.manifest import InputSpec

    with pytest.raises(ConfigError, match="missing key\\(s\\) colour, layout"):
        from_mapping(InputSpec, {"name": "x", "shape": [1]})
