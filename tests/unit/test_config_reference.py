"""hardware/CONFIG.md is exactly what `python -m kiosk.settings_doc` generates, and documents every setting.

Fails after a settings change without regeneration, or a hand edit of CONFIG.md: run
`python -m kiosk.settings_doc > hardware/CONFIG.md` and commit the result.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kiosk import settings_doc
from kiosk.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def leaf_names(value, prefix: str = "") -> set[str]:
    names = set()
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner):
            names |= leaf_names(inner, f"{prefix}{f.name}.")
        else:
            names.add(f"{prefix}{f.name}")
    return names


def test_config_reference_is_fresh():
    committed = (REPO / "hardware" / "CONFIG.md").read_text()
    assert committed == settings_doc.render(), "run `python -m kiosk.settings_doc > hardware/CONFIG.md`"


def test_every_setting_has_a_row_with_type_default_and_meaning():
    rows = {e.name: e for e in settings_doc.entries() if not e.is_table}

    assert set(rows) == leaf_names(Settings())
    assert all(e.type_name and e.default and e.meaning for e in rows.values())
    assert rows["service.listen"].default == '["127.0.0.1:50051"]'
    # Defaults come from the instance: the ID-photo table has its own, laxer limits.
    assert rows["quality.id_photo.min_sharpness"].default == "3.0"
    assert rows["quality.live_frame.min_sharpness"].default == "15.0"
    assert rows["metrics.listen"].default == '""'


def test_a_setting_without_a_comment_is_refused():
    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        # Documented.
        documented: int = 1
        bare: int = 2

    with pytest.raises(ValueError, match="Undocumented.bare"):
        settings_doc.entries(Undocumented())


def test_the_example_deployment_settings_load():
    settings = load_settings(REPO / "hardware" / "systemd" / "kiosk.toml")

    assert settings.service.listen[0] == "unix:/run/kiosk/kiosk.sock"
    assert settings.audit.path.startswith("/var/lib/kiosk/")
    assert settings.metrics.listen == "127.0.0.1:9464"
