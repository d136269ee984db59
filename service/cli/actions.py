"""Commands that act on one study or trial over REST: continue, zoom, retry-failed, pause, resume,
stop, fork.

Each is one request; the answer is shown as one line (or the service's JSON with --json),
and a refusal is the service's own words on stderr with exit code 2.
"""

from __future__ import annotations

from typing import Any

import typer
import yaml

from service.cli.common import (
    API,
    JSON,
    TOKEN,
    api_client,
    app,
    call,
    example,
    expect,
    fail,
    out,
    print_json,
)
from service.cli.display import progress_line


def trial_line(trial: dict[str, Any]) -> str:
    """A trial by its number in its study and its id, and its status:
    `trial #4 of study 3 (id 12): paused` (#: the number; id: what commands take)."""
    return (
        f"trial #{trial['number']} of study {trial['study_id']} (id {trial['id']}): "
        f"{trial['status']}"
    )


def _show(answer: Any, line: str, *, as_json: bool) -> None:
    if as_json:
        print_json(answer)
    else:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def _post(path: str, api: str | None, token: str | None, *ok: int, **kw: Any) -> Any:
    with api_client(api, token) as client:
        return expect(call(client, "POST", path, **kw), *ok)


def _study_line(study: dict[str, Any], what: str) -> str:
    return f"study {study['id']} ({study['name']}) {what}: {progress_line(study)}"


@app.command("continue", epilog=example("caviar continue 3"))
def continue_(
    study: int = typer.Argument(..., help="the id of a panda study waiting for a review"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Review done: a panda study that waits after each trial (await_review) runs its next one."""
    one = _post(f"/api/studies/{study}/continue", api, token)
    _show(one, _study_line(one, "continues"), as_json=as_json)


def _share(value: float | None) -> float | None:
    """A share of trials, as the spec's keep_top takes it: above 0, at most 1."""
    if value is not None and not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value:g}: a share is above 0 and at most 1")
    return value


@app.command(
    epilog=example("caviar zoom 3", "caviar zoom 3 --rounds 3 --trials-per-round 20 --preview")
)
def zoom(
    study: int = typer.Argument(..., help="the id of a study with finished trials"),
    rounds: int | None = typer.Option(None, min=1, max=20, help="rounds of the new study (2)"),
    trials_per_round: int | None = typer.Option(
        None, min=1, max=10_000, help="trials per round (default: the study's own count)"
    ),
    keep_top: float | None = typer.Option(
        None,
        callback=_share,
        help="share of the best trials whose span makes the box, 0 < x <= 1 (at least five trials)",
    ),
    preview: bool = typer.Option(
        False, "--preview", help="print the spec the zoom would run, as YAML, and queue nothing"
    ),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """A new coarse-to-fine study whose first box surrounds this study's best trials."""
    body = {
        key: value
        for key, value in (
            ("rounds", rounds),
            ("trials_per_round", trials_per_round),
            ("keep_top", keep_top),
        )
        if value is not None
    }
    if preview:
        answer = _post(f"/api/studies/{study}/zoom/preview", api, token, json=body)
        if as_json:
            print_json(answer)
        else:
            out.print(yaml.safe_dump(answer["spec"], sort_keys=False), end="", markup=False)
        return
    child = _post(f"/api/studies/{study}/zoom", api, token, 201, json=body)
    _show(child, _study_line(child, f"zooms into study {study}"), as_json=as_json)


@app.command("retry-failed", epilog=example("caviar retry-failed 3"))
def retry_failed(
    study: int = typer.Argument(..., help="the study's id"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Queue a study's failed trials again, as new attempts (not on a cancelled study)."""
    one = _post(f"/api/studies/{study}/retry-failed", api, token)
    n = one["requeued"]
    _show(one, _study_line(one, f"queued {n} trial{'s' * (n != 1)} again"), as_json=as_json)


@app.command(epilog=example("caviar pause 12"))
def pause(
    trial: int = typer.Argument(..., help="the trial's id (as /api/trials/ID; not its number)"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Pause a trial: a waiting one now, a running one after its epoch, with a checkpoint."""
    one = _post(f"/api/trials/{trial}/pause", api, token)
    later = " (pauses after its current epoch)" if one["status"] == "running" else ""
    _show(one, trial_line(one) + later, as_json=as_json)


@app.command(epilog=example("caviar resume 12"))
def resume(
    trial: int = typer.Argument(..., help="the id of a paused trial"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Queue a paused trial again; it goes on from its latest checkpoint."""
    one = _post(f"/api/trials/{trial}/resume", api, token)
    _show(one, trial_line(one), as_json=as_json)


@app.command(epilog=example("caviar stop 12"))
def stop(
    trial: int = typer.Argument(..., help="the trial's id"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Stop a trial: now if it waits, after its current epoch if it runs."""
    one = _post(f"/api/trials/{trial}/stop", api, token)
    later = " (stops after its current epoch)" if one["status"] == "running" else ""
    _show(one, trial_line(one) + later, as_json=as_json)


def parse_changes(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs as a mapping; each value read as YAML (0.001, adam, [20, 7])."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set {item}: expected key=value, e.g. learning_rate=0.001")
        try:
            changes[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            fail(f"--set {item}: the value is not a number, word or list")
    return changes


@app.command(
    epilog=example(
        "caviar fork 12 --from-epoch 20 --set learning_rate=0.001",
        "caviar fork 12 --from-epoch 40 --set l2=0.01 --set lr_decay=exponential",
    )
)
def fork(
    trial: int = typer.Argument(..., help="the id of the trial to fork"),
    from_epoch: int = typer.Option(
        ..., min=1, help="the epoch of one of its checkpoints to start from"
    ),
    changes: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="key=value: a hyperparameter to change (learning rate, L2, decay...; for a "
        "task's function, one of its params); repeatable",
    ),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """A new trial from a trial's checkpoint, with some hyperparameters changed."""
    body = {"from_epoch": from_epoch, "changes": parse_changes(changes)}
    child = _post(f"/api/trials/{trial}/fork", api, token, 201, json=body)
    line = f"{trial_line(child)}, forked from trial id {trial} at epoch {from_epoch}"
    _show(child, line, as_json=as_json)
