"""The command line against a live service: submit, status, trials, cancel, export, validate;
run and serve --submit, which must leave nothing behind that they refused or were not bound to."""

from __future__ import annotations

import csv
import io
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from service.cli import app
from service.cli.display import watch_local
from service.db import get_database
from service.studies import cancel_study, create_study
from worker.pool import Pool, PoolOptions

CAVIAR = [sys.executable, "-m", "service.cli"]
runner = CliRunner()


def caviar(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def finish(api: httpx.Client, finals: list[float | None]) -> None:
    """Play a worker: claim trials in order and finish each with a value (None = failed)."""
    wid = api.post("/api/worker/register", json={"name": "cli-test"}).json()["worker_id"]
    claimed = api.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 16}).json()
    for t, final in zip(claimed["trials"], finals, strict=False):
        epoch = {"epoch": 1, "dev_accuracy": final, "train_accuracy": final}
        body = {
            "lease_token": t["lease_token"],
            "outcome": "failed" if final is None else "completed",
            "error": "boom" if final is None else None,
            "epochs": [epoch],
        }
        assert api.post(f"/api/worker/trials/{t['trial_id']}/finish", json=body).status_code == 200


@pytest.fixture
def service(db_url, live_service) -> Any:
    return live_service(db_url)


def test_status_trials_cancel_and_export(service, spec_factory, tmp_path) -> None:
    url = service.url
    with httpx.Client(base_url=url) as api:
        first = api.post("/api/studies", json=spec_factory(name="alpha")).json()["id"]
        finish(api, [0.7, 0.9, None])  # three end, the fourth keeps running
        second = api.post("/api/studies", json=spec_factory(name="beta")).json()["id"]

    listed = caviar("status", "--api", url)
    assert listed.exit_code == 0, listed.output
    assert "alpha" in listed.stdout and "beta" in listed.stdout
    as_json = json.loads(caviar("status", "--api", url, "--json", "--status", "running").stdout)
    assert [s["id"] for s in as_json["items"]] == [first]

    one = caviar("status", str(first), "--api", url)
    assert one.exit_code == 0, one.output
    assert "3/4 done" in one.stdout and "best 0.9000" in one.stdout
    assert "learning_rate" in one.stdout  # the best trial's params

    trials = caviar("trials", str(first), "--api", url, "--sort", "value", "--json")
    values = [t["value"] for t in json.loads(trials.stdout)["items"]]
    assert values[:2] == [pytest.approx(0.9), pytest.approx(0.7)] and values[2:] == [None, None]
    failed = json.loads(
        caviar("trials", str(first), "--api", url, "--status", "failed", "--json").stdout
    )
    assert failed["total"] == 1
    table = caviar("trials", str(first), "--api", url, "--limit", "2")
    assert table.exit_code == 0 and "trials 1-2 of 4" in table.stdout

    exported = caviar("export", str(first), "--api", url, "--format", "csv")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 4 and "param.learning_rate" in rows[0]
    assert sorted(r["final.dev_accuracy"] for r in rows)[-2:] == ["0.7", "0.9"]
    target = tmp_path / "out" / "beta.json"
    target.parent.mkdir()
    saved = caviar("export", str(second), "--api", url, "--format", "json", "-o", str(target))
    assert saved.exit_code == 0 and "4 trials" in saved.stderr
    assert len(json.loads(target.read_text())["rows"]) == 4

    cancelled = caviar("cancel", str(second), "--api", url)
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    again = caviar("cancel", str(second), "--api", url)
    assert again.exit_code == 2 and "already ended" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    for args in (("status", "999"), ("trials", "999"), ("export", "999"), ("cancel", "999")):
        missing = caviar(*args, "--api", url)
        assert missing.exit_code == 2, (args, missing.output)
        assert "study 999 does not exist" in missing.stderr


def test_errors_from_tokens_and_unreachable_services_are_one_line(sqlite_url, live_service) -> None:
    svc = live_service(sqlite_url, tokens="me:read:reader-secret-0123456789")
    refused = caviar("status", "--api", svc.url, "--token", "wrong-token-0123456789")
    assert refused.exit_code == 2 and "401" in refused.stderr
    assert "wrong-token" not in refused.output  # the secret is never echoed
    ok = caviar("status", "--api", svc.url, "--token", "reader-secret-0123456789")
    assert ok.exit_code == 0, ok.output
    forbidden = caviar("cancel", "1", "--api", svc.url, "--token", "reader-secret-0123456789")
    assert forbidden.exit_code == 2 and "403" in forbidden.stderr and "write" in forbidden.stderr
    down = caviar("status", "--api", "http://127.0.0.1:9")
    assert down.exit_code == 2 and "cannot reach the service" in down.stderr
    assert "is `caviar serve` running there? --api or CAVIAR_API_URL" in down.stderr


def write_specs(folder: Path, specs: dict[str, Any]) -> None:
    folder.mkdir(exist_ok=True)
    for name, spec in specs.items():
        text = spec if isinstance(spec, str) else yaml.safe_dump(spec)
        (folder / name).write_text(text)


def test_submit_validates_the_whole_folder_and_names_each_bad_file_and_field(
    sqlite_url, live_service, spec_factory, tmp_path
) -> None:
    svc = live_service(sqlite_url)
    folder = tmp_path / "batch"
    specs: dict[str, Any] = {f"s{i}.yaml": spec_factory(name=f"s{i}") for i in range(4)}
    specs["s4.json"] = json.dumps(
        spec_factory(
            space={"learning_rate": {"type": "float", "low": 0, "high": 1, "scale": "log"}}
        )
    )
    write_specs(folder, specs)
    (folder / "notes.txt").write_text("not a spec: ignored, only yaml/yml/json are specs")
    bad = caviar("submit", str(folder), "--api", svc.url)
    assert bad.exit_code == 2
    assert "nothing was submitted" in bad.stderr
    assert f"{folder / 's4.json'}: space.learning_rate.low:" in bad.stderr
    assert "s0.yaml" not in bad.stderr
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 0

    (folder / "s4.json").write_text("name: [unclosed")  # now a YAML error, plus a bad field
    write_specs(folder, {"s5.yml": spec_factory(strategy={"type": "grdi"})})
    bad = caviar("submit", str(folder / "*.y*ml"), str(folder / "s4.json"), "--api", svc.url)
    assert bad.exit_code == 2
    assert "s4.json: not valid YAML or JSON (line 1" in bad.stderr
    assert f"{folder / 's5.yml'}: strategy.type:" in bad.stderr
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 0

    (folder / "s4.json").unlink()
    (folder / "s5.yml").unlink()
    good = caviar("submit", str(folder), str(folder / "s0.yaml"), "--api", svc.url)
    assert good.exit_code == 0, good.output
    assert good.stdout.count("queued with 4 trials") == 4  # s0 named twice counts once
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 4

    nothing = caviar("submit", str(tmp_path / "nope-*.yaml"), "--api", svc.url)
    assert nothing.exit_code == 2 and "no file matches" in nothing.stderr


def test_submit_waits_through_a_rate_limit_instead_of_failing_half_a_batch(
    sqlite_url, live_service, spec_factory, tmp_path
) -> None:
    svc = live_service(sqlite_url, submit_burst=2, submit_rate_per_minute=60)
    write_specs(tmp_path / "b", {f"s{i}.yaml": spec_factory(name=f"s{i}") for i in range(3)})
    began = time.monotonic()
    r = caviar("submit", str(tmp_path / "b"), "--api", svc.url)
    assert r.exit_code == 0, r.output
    assert "rate limited: waiting 1 s" in r.stderr and time.monotonic() - began >= 1
    assert httpx.get(f"{svc.url}/api/studies").json()["total"] == 3


def test_validate_names_every_wrong_field_with_its_file(spec_factory, tmp_path) -> None:
    write_specs(
        tmp_path,
        {
            "good.yaml": spec_factory(),
            "bad.yaml": spec_factory(strategy={"type": "random", "trials": 0}, surprise=1),
        },
    )
    r = caviar("validate", str(tmp_path))
    assert r.exit_code == 2
    assert f"{tmp_path / 'good.yaml'}: ok (tiny-moons" in r.stdout
    lines = [line for line in r.stderr.splitlines() if "bad.yaml" in line]
    assert any("strategy.trials" in line for line in lines), r.stderr
    assert any("surprise" in line for line in lines), r.stderr


def test_submit_wait_shows_each_study_and_exits_1_when_one_did_not_complete(
    sqlite_url, live_service, spec_factory, tmp_path
) -> None:
    svc = live_service(sqlite_url)
    write_specs(
        tmp_path,
        {
            "a.yaml": spec_factory(name="a"),
            "b.yaml": spec_factory(name="b", strategy={"type": "random", "trials": 2}),
        },
    )
    specs = [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
    proc = subprocess.Popen(
        [*CAVIAR, "submit", *specs, "--wait", "--api", svc.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pool = None
    try:
        deadline = time.monotonic() + 60
        while httpx.get(f"{svc.url}/api/studies").json()["total"] < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert httpx.post(f"{svc.url}/api/studies/2/cancel").status_code == 200
        pool = Pool(PoolOptions(api_url=svc.url, processes=2, exit_when_idle=True))
        pool.start()
        out, err = proc.communicate(timeout=120)
    finally:
        if pool is not None:
            pool.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "study 1: [completed] 4/4 done" in out and "best " in out
    assert "study 2: [cancelled]" in out


def test_submit_wait_exits_0_once_every_study_completed(
    sqlite_url, live_service, spec_factory, tmp_path
) -> None:
    svc = live_service(sqlite_url)
    write_specs(
        tmp_path, {"a.yaml": spec_factory(name="a", strategy={"type": "grid", "grid_points": 3})}
    )
    pool = Pool(PoolOptions(api_url=svc.url, processes=1))
    pool.start()
    try:
        proc = subprocess.run(
            [*CAVIAR, "submit", str(tmp_path / "a.yaml"), "--wait", "--api", svc.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        pool.stop()
    assert proc.returncode == 0, proc.stderr
    assert "study 1: [completed] 3/3 done" in proc.stdout


@pytest.mark.parametrize("terminal", [True, False])
def test_run_shows_a_live_table_on_a_terminal_and_plain_lines_otherwise(
    sqlite_url, settings_for, spec_factory, terminal
) -> None:
    db = get_database(sqlite_url)
    spec = spec_factory(
        strategy={"type": "coarse_to_fine", "rounds": 2, "trials_per_round": 3, "keep_top": 0.5}
    )
    study_id = create_study(db=db, data=spec, settings=settings_for(sqlite_url))
    cancel_study(db=db, study_id=study_id)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=terminal, width=120, color_system=None)
    study = watch_local(db, study_id, console=console)
    assert study["status"] == "cancelled"
    text = screen.getvalue()
    if terminal:
        assert "┃" in text or "│" in text  # a table, redrawn in place
        for column in ("done", "running", "queued", "round", "best"):
            assert column in text
        # round 1's three trials were stopped before they ran: none done of both rounds'
        # six (they counted as done before, a full-looking bar for a cancel); round 1 of 2
        assert "0/6" in text and "1/2" in text
    else:
        assert (
            text.strip() == "[cancelled] round 1/2 0/6 done, 0 running, 0 queued, 0 failed; best -"
        )


def test_run_leaves_no_database_behind_for_a_spec_it_refuses(
    spec_factory, tmp_path, monkeypatch
) -> None:
    from service.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAVIAR_DATABASE_URL", raising=False)
    get_settings.cache_clear()  # the default database is ./caviar.db of this folder
    try:
        write_specs(
            tmp_path,
            {
                "bad.yaml": spec_factory(strategy={"type": "random", "trials": 0}),
                "unknown.yaml": spec_factory(dataset={"name": "ds-0000000000000000"}),
            },
        )
        bad = caviar("run", "bad.yaml")
        assert bad.exit_code == 2 and "bad.yaml: strategy.trials" in bad.stderr, bad.output
        assert list(tmp_path.glob("caviar.db*")) == []
        unknown = caviar("run", "unknown.yaml")  # refused by the database it would create
        assert unknown.exit_code == 2 and "ds-0000000000000000" in unknown.stderr, unknown.output
        assert list(tmp_path.glob("caviar.db*")) == []
    finally:
        get_settings.cache_clear()


def serve(port: int, db: Path, *args: str) -> subprocess.Popen[str]:
    """`caviar serve` on `port` with the SQLite database `db`, as a process of its own."""
    return subprocess.Popen(
        [*CAVIAR, "serve", "--port", str(port), "--db", f"sqlite:///{db}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_serve_submits_only_to_the_service_it_started(
    sqlite_url, live_service, spec_factory, tmp_path
) -> None:
    first = live_service(sqlite_url)  # `make run` already running on this port
    write_specs(tmp_path, {"a.yaml": spec_factory(name="a")})
    spec = str(tmp_path / "a.yaml")
    second = serve(first.port, tmp_path / "b.db", "--submit", spec)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and "could not start" in err, err
    assert httpx.get(f"{first.url}/api/studies").json()["total"] == 0  # no stray study

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    own = serve(port, tmp_path / "c.db", "--submit", spec)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert own.poll() is None and time.monotonic() < deadline
            try:
                studies = httpx.get(f"http://127.0.0.1:{port}/api/studies").json()
            except httpx.TransportError:
                studies = {"total": 0}
            if studies["total"]:
                break
            time.sleep(0.2)
        assert [s["name"] for s in studies["items"]] == ["a"]
    finally:
        own.send_signal(signal.SIGTERM)
        _, err = own.communicate(timeout=30)
    assert "a.yaml: study 1 (a) queued with 4 trials" in err, err

    bad = serve(port, tmp_path / "d.db", "--submit", str(tmp_path / "nope.yaml"))
    _, err = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "nope.yaml" in err and not (tmp_path / "d.db").exists()
