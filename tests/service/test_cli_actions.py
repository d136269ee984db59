"""The commands that act on a service's studies, trials and data sets, and the help of all.

continue, zoom, retry-failed, pause, resume, stop, fork and datasets against a live
service; --version; usage lines, flags and an example in every command's --help.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import yaml
from typer.testing import CliRunner

from service.cli import app
from service.db import get_database
from service.models import Checkpoint

runner = CliRunner()


def caviar(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def commands() -> list[tuple[str, ...]]:
    """Every command and group of the app as its words: ("run",), ("db",), ("db", "upgrade")..."""
    import typer
    import typer.core

    found: list[tuple[str, ...]] = []
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    for name, command in group.commands.items():
        found.append((name,))
        found += [(name, sub) for sub in getattr(command, "commands", {})]
    return found


def test_version_and_a_clean_help_with_an_example_for_every_command() -> None:
    from importlib.metadata import version

    shown = caviar("--version")
    assert shown.exit_code == 0 and shown.stdout.strip() == f"caviar {version('caviar')}"
    every = commands()
    for wanted in (
        ("datasets", "upload"),
        ("datasets", "list"),
        ("continue",),
        ("pause",),
        ("resume",),
        ("fork",),
        ("zoom",),
        ("retry-failed",),
        ("stop",),
    ):
        assert wanted in every
    for path in every:
        text = caviar(*path, "--help").stdout
        assert "<bool>" not in text, (path, text)
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert "{" not in usage and "}" not in usage, (path, usage)
        if path not in (("db",), ("datasets",)):
            assert "$ caviar " in text, (path, "no example")
    assert "run [OPTIONS] SPEC" in caviar("run", "--help").stdout
    assert "status [OPTIONS] [STUDY]" in caviar("status", "--help").stdout
    assert "submit [OPTIONS] SPECS..." in caviar("submit", "--help").stdout


def test_zoom_refuses_a_share_the_spec_would_refuse_before_asking_the_service() -> None:
    # keep_top is above 0 and at most 1 in the spec; nothing listens on port 9.
    for share in ("0", "-0.5", "1.5"):
        r = caviar("zoom", "1", "--keep-top", share, "--api", "http://127.0.0.1:9")
        said = " ".join(r.output.replace("│", " ").split())  # the error's box wraps lines
        assert r.exit_code == 2, r.output
        assert f"'--keep-top': {share}: a share is above 0 and at most 1" in said, r.output
        assert "cannot reach" not in r.output
    reached = caviar("zoom", "1", "--keep-top", "1", "--api", "http://127.0.0.1:9")
    assert "cannot reach the service" in reached.output  # 1 is a share: it went on


def claim(api: httpx.Client, n: int) -> list[dict[str, Any]]:
    wid = api.post("/api/worker/register", json={"name": "cli-test"}).json()["worker_id"]
    body = {"worker_id": wid, "max_trials": n}
    return list(api.post("/api/worker/claim", json=body).json()["trials"])


def end(api: httpx.Client, trial: dict[str, Any], value: float, epochs: int = 2) -> None:
    rows = [{"epoch": e, "dev_accuracy": value} for e in range(1, 1 + epochs)]
    body = {"lease_token": trial["lease_token"], "outcome": "completed", "epochs": rows}
    r = api.post(f"/api/worker/trials/{trial['trial_id']}/finish", json=body)
    assert r.status_code == 200, r.text


def test_pause_resume_stop_retry_fork_and_zoom_act_on_a_live_service(
    sqlite_url, live_service, spec_factory
) -> None:
    url = live_service(sqlite_url).url
    with httpx.Client(base_url=url) as api:
        study = api.post("/api/studies", json=spec_factory(name="acts")).json()["id"]
        first, running = claim(api, 2)
        with get_database(sqlite_url).session() as s:  # as a worker's upload leaves it
            s.add(
                Checkpoint(
                    trial_id=first["trial_id"],
                    attempt=1,
                    epoch=2,
                    size_bytes=1,
                    content=b"c",
                    created_at=0.0,
                )
            )
        end(api, first, 0.8)
        waiting = [t["id"] for t in api.get(f"/api/studies/{study}/trials").json()["items"]]
        third, fourth = waiting[2:]

        r = caviar("pause", str(third), "--api", url)
        assert r.exit_code == 0 and r.stdout.strip().endswith(": paused"), r.output
        r = caviar("pause", str(running["trial_id"]), "--api", url)
        assert r.exit_code == 0 and "pauses after its current epoch" in r.stdout, r.output
        r = caviar("resume", str(third), "--api", url, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "queued", r.output
        again = caviar("resume", str(third), "--api", url)
        assert again.exit_code == 2 and "not paused" in again.stderr

        r = caviar("stop", str(fourth), "--api", url)
        assert r.exit_code == 0 and "stopped" in r.stdout, r.output
        # Retry-failed re-queues failed trials only: one a person stopped stays stopped.
        r = caviar("retry-failed", str(study), "--api", url)
        assert r.exit_code == 0 and "queued 0 trials again" in r.stdout, r.output
        assert api.get(f"/api/trials/{fourth}").json()["status"] == "stopped"

        r = caviar(
            "fork", str(first["trial_id"]), "--from-epoch", "2", "--set", "learning_rate=0.001",
            "--api", url, "--json",
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        child = json.loads(r.stdout)
        assert child["parent_trial_id"] == first["trial_id"] and child["fork_epoch"] == 2
        assert api.get(f"/api/trials/{child['id']}").json()["config"]["learning_rate"] == 0.001
        r = caviar("fork", str(first["trial_id"]), "--from-epoch", "7", "--api", url)
        assert r.exit_code == 2 and "no checkpoint at epoch 7" in r.stderr, r.output
        r = caviar("fork", str(first["trial_id"]), "--from-epoch", "2", "--set", "lr", "--api", url)
        assert r.exit_code == 2 and "expected key=value" in r.stderr

        preview = caviar("zoom", str(study), "--preview", "--api", url)
        assert preview.exit_code == 0, preview.output
        zoomed_spec = yaml.safe_load(preview.stdout)
        assert zoomed_spec["strategy"]["type"] == "coarse_to_fine"
        assert api.get("/api/studies").json()["total"] == 1  # a preview queues nothing
        r = caviar("zoom", str(study), "--rounds", "2", "--api", url, "--json")
        assert r.exit_code == 0, r.output
        zoomed = json.loads(r.stdout)
        assert zoomed["parent_study_id"] == study and zoomed["strategy"] == "coarse_to_fine"

        r = caviar("continue", str(study), "--api", url)
        assert r.exit_code == 2 and "not waiting for a review" in r.stderr


def test_continue_lets_a_reviewed_panda_study_run_its_next_trial(
    sqlite_url, live_service, spec_factory
) -> None:
    url = live_service(sqlite_url).url
    spec = spec_factory(execution={"mode": "panda", "await_review": True, "seed": 1})
    with httpx.Client(base_url=url) as api:
        study = api.post("/api/studies", json=spec).json()["id"]
        (trial,) = claim(api, 1)
        end(api, trial, 0.9)
        assert api.get(f"/api/studies/{study}").json()["awaiting_review"] is True
        assert claim(api, 1) == []  # it waits for the person, and status tells what to do
        shown = caviar("status", str(study), "--api", url)
        assert "[awaiting review]" in shown.stdout, shown.output
        assert f"`caviar continue {study}` runs it" in shown.stdout
        r = caviar("continue", str(study), "--api", url)
        assert r.exit_code == 0 and f"study {study} (tiny-moons) continues" in r.stdout, r.output
        assert api.get(f"/api/studies/{study}").json()["awaiting_review"] is False
        assert len(claim(api, 1)) == 1


def test_datasets_upload_list_and_delete(sqlite_url, live_service, tmp_path) -> None:
    url = live_service(sqlite_url).url
    rows = ["age,spend,churned"] + [f"{i / 10},{(i * 7) % 5},{i % 2}" for i in range(40)]
    data = tmp_path / "churn.csv"
    data.write_text("\n".join(rows) + "\n")
    r = caviar("datasets", "upload", str(data), "--label-column", "churned", "--api", url)
    assert r.exit_code == 0, r.output
    assert "40 rows, 2 feature columns" in r.stdout
    dataset_id = httpx.get(f"{url}/api/datasets").json()["items"][0]["id"]
    assert f"dataset: {{name: {dataset_id}}}" in r.stdout
    again = caviar("datasets", "upload", str(data), "--label-column", "churned", "--api", url)
    assert again.exit_code == 0 and "uploaded before" in again.stdout
    listed = caviar("datasets", "list", "--api", url)
    assert listed.exit_code == 0 and dataset_id in listed.stdout and "churn.csv" in listed.stdout
    # No label column: asked here, with the file's columns, before anything is sent.
    bad = caviar("datasets", "upload", str(data), "--api", url)
    assert bad.exit_code == 2 and "422" not in bad.stderr
    assert "--label-column is required for a CSV file" in bad.stderr
    assert "Its columns: age, spend, churned" in bad.stderr
    semi = tmp_path / "semi.csv"
    semi.write_text("age;spend;churned\n1;2;0\n")
    r = caviar("datasets", "upload", str(semi), "--label-column", "churned", "--api", url)
    assert r.exit_code == 2 and "422" in r.stderr  # refused by the service, which says why
    assert "this file seems to use semicolons" in r.stderr
    assert httpx.get(f"{url}/api/datasets").json()["total"] == 1
    odd = tmp_path / "data.txt"
    odd.write_text("x")
    assert caviar("datasets", "upload", str(odd), "--api", url).exit_code == 2
    gone = caviar("datasets", "delete", dataset_id, "--api", url)
    assert gone.exit_code == 0 and "deleted" in gone.stdout
    assert httpx.get(f"{url}/api/datasets").json()["total"] == 0
