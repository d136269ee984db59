"""`caviar validate`, the API and the dashboard's editor say the same of every spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app

FOUR_MISTAKES = {
    "name": "four",
    "dataset": {"name": "moons"},
    "model": {"hidden_layer": [5]},
    "space": {"learnig_rate2": {"type": "float", "low": 1.0e-4, "high": 1.0, "scale": "log"}},
    "strategy": {"type": "random", "trails": 5},
    "objective": {"metric": "dev_acc"},
}
LR = {"learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0, "scale": "log"}}
SPECS: dict[str, dict[str, Any]] = {
    "four-mistakes": FOUR_MISTAKES,
    "mnist": {"name": "m", "dataset": {"name": "mnist"}, "space": LR},
    "empty-space": {"name": "e", "dataset": {"name": "moons"}},
}


@pytest.fixture
def api(sqlite_url: str, settings_for: Any) -> Any:
    # The dashboard's editor checks a spec with this same request (static/js/editor.js).
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


@pytest.mark.parametrize("name", list(SPECS))
def test_validate_reports_what_the_api_reports(api: Any, name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    r = api.post("/api/specs/validate", json=spec)
    assert r.status_code == 422, r.text
    said = [f"{path}: {e['loc']}: {e['msg']}" for e in r.json()["errors"]]
    cli = CliRunner().invoke(app, ["validate", str(path)])
    assert cli.exit_code == 2, cli.output
    assert cli.stderr.replace("error: ", "", 1).splitlines() == said
    if name == "four-mistakes":
        assert len(said) == 4


def test_validate_says_an_uploads_id_is_left_to_the_service(tmp_path: Path) -> None:
    path = tmp_path / "upload.yaml"
    spec = {"name": "u", "dataset": {"name": "ds-0123456789abcdef"}, "space": LR}
    path.write_text(yaml.safe_dump(spec))
    cli = CliRunner().invoke(app, ["validate", str(path)])
    assert cli.exit_code == 0, cli.output
    assert "upload ds-0123456789abcdef not checked" in cli.stdout
