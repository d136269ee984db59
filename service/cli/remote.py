"""Commands that read studies from a service over REST, or submit them: submit, status, trials,
cancel, export."""

from __future__ import annotations

import csv
import enum
import io
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import typer

from service.cli.common import (
    API,
    JSON,
    TERMINAL,
    TOKEN,
    ServiceError,
    api_client,
    app,
    call,
    checked,
    err,
    example,
    expand_spec_paths,
    expect,
    fail,
    out,
    print_json,
    problem_text,
    read_spec_file,
    spec_errors,
)
from service.cli.display import (
    StudyBars,
    awaiting_review,
    best_table,
    progress_line,
    studies_table,
    trials_table,
)
from service.statuses import StudyStatus, TrialStatus

# Event types after which a study's counts change; per-epoch metrics events do not.
PROGRESS_EVENTS = frozenset(
    {
        "trial.started",
        "trial.finished",
        "trial.requeued",
        "trial.released",
        "round.created",
        "study.cancelled",
        "study.requeued",
        "study.finished",
    }
)


@app.command(
    epilog=example(
        "caviar submit examples/moons.yaml --wait",
        "caviar submit 'specs/*.yaml' --api http://gpu-box:8000",
    )
)
def submit(
    specs: list[str] = typer.Argument(..., help="spec files, globs or folders"),
    api: str | None = API,
    token: str | None = TOKEN,
    wait: bool = typer.Option(
        False, help="follow every study to its end with a progress bar; exit 1 if any failed"
    ),
    connect_timeout: float = typer.Option(
        5.0, help="seconds to keep trying to reach a service that is still starting"
    ),
) -> None:
    """Submit a batch of specs over REST: all are validated before any is submitted."""
    paths = expand_spec_paths(specs)
    problems: list[str] = []
    loaded: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        data, problem = read_spec_file(path)
        if data is None:
            problems.append(f"{path}: {problem}")
        else:
            loaded.append((path, data))
    with api_client(api, token) as client:
        for path, data in loaded:
            r = call(client, "POST", "/api/specs/validate", json=data, patience=connect_timeout)
            if r.status_code == 422:
                problems.append(spec_errors(path, r.json().get("errors", [])))
            elif r.status_code != 200:
                fail(f"{path}: {problem_text(r)}")
        if problems:
            fail("nothing was submitted\n" + "\n".join(problems))
        ids: list[int] = []
        for path, data in loaded:
            study = _submit_one(client, path, data, submitted=ids)
            ids.append(study["id"])
            out.print(
                f"{path}: study {study['id']} ({study['name']}) queued with "
                f"{study['total_trials']} trials",
                highlight=False,
                soft_wrap=True,
            )
    if wait:
        studies = wait_for_studies(lambda: api_client(api, token), ids)
        for study in studies:
            out.print(
                f"study {study['id']}: {progress_line(study)}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if any(s["status"] != "completed" for s in studies):
            raise typer.Exit(1)


def _submit_one(
    client: httpx.Client, path: Path, data: dict[str, Any], *, submitted: list[int]
) -> dict[str, Any]:
    """POST one spec; waits out 429s, and retries lost connections under one Idempotency-Key.

    The key makes a retry after a lost answer return the study already created rather than
    a second one.
    """
    headers = {"idempotency-key": f"cli-{uuid.uuid4()}"}
    while True:
        r = call(client, "POST", "/api/studies", json=data, headers=headers, patience=30.0)
        if r.status_code == 429:
            wait = float(r.headers.get("retry-after", "1"))
            err.print(f"rate limited: waiting {wait:g} s before {path}", highlight=False)
            time.sleep(wait)
            continue
        if r.status_code != 201:
            done = f" (already submitted: studies {', '.join(map(str, submitted))})"
            fail(f"{path}: {problem_text(r)}{done if submitted else ''}")
        study: dict[str, Any] = r.json()
        return study


def wait_for_studies(
    make_client: Callable[[], httpx.Client], ids: list[int]
) -> list[dict[str, Any]]:
    """Follow the studies to their ends, one progress bar each; their final states, in order."""
    bars = StudyBars(err)
    final: dict[int, dict[str, Any]] = {}
    errors: list[str] = []

    def follow(study_id: int) -> None:
        try:
            final[study_id] = follow_study(make_client, study_id, on_update=bars.update)
        except (ServiceError, httpx.HTTPError) as exc:  # shown after the bars; others go on
            errors.append(f"study {study_id}: {exc}")

    with make_client() as client:
        for study_id in ids:
            bars.add(expect(call(client, "GET", f"/api/studies/{study_id}")))
    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in ids]
    with bars.progress:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # join in slices, so Ctrl-C reaches the main thread
                t.join(0.2)
    if errors:
        fail("; ".join(errors))
    return [final[i] for i in ids]


def follow_study(
    make_client: Callable[[], httpx.Client],
    study_id: int,
    *,
    on_update: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Follow one study by its event stream until it ends; its final state.

    Each event that changes the counts triggers one read of the study (events say what
    happened; the study says where it stands). A dropped stream resumes from its
    Last-Event-ID; a service without the stream is polled instead. Raises ServiceError
    when the service refuses, so that the caller (a thread) can report it.
    """
    with make_client() as client:

        def refresh() -> dict[str, Any]:
            for attempt in range(30):  # the service may be restarting: ~30 s of patience
                try:
                    r = client.get(f"/api/studies/{study_id}")
                    break
                except httpx.TransportError:
                    if attempt == 29:
                        raise
                    time.sleep(1.0)
            study: dict[str, Any] = checked(r)
            on_update(study)
            return study

        study = refresh()
        last_id: str | None = None
        while study["status"] not in TERMINAL:
            headers = {"accept": "text/event-stream"}
            if last_id is not None:
                headers["last-event-id"] = last_id
            try:
                with client.stream(
                    "GET", f"/api/studies/{study_id}/events", headers=headers
                ) as stream:
                    if stream.status_code == 404:
                        return _poll(refresh)  # an older service without event streams
                    if stream.status_code != 200:
                        stream.read()
                        raise ServiceError(problem_text(stream))
                    kind = ""
                    for line in stream.iter_lines():
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
                        elif line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line == "" and kind:
                            if kind in PROGRESS_EVENTS:
                                study = refresh()
                            kind = ""
            except httpx.TransportError:
                time.sleep(1.0)  # reconnect; Last-Event-ID resumes where the stream broke
            study = refresh()
        return study


def _poll(refresh: Callable[[], dict[str, Any]], interval: float = 1.0) -> dict[str, Any]:
    study = refresh()
    while study["status"] not in TERMINAL:
        time.sleep(interval)
        study = refresh()
    return study


@app.command(
    epilog=example("caviar status", "caviar status 3", "caviar status --status running --json")
)
def status(
    study: int | None = typer.Argument(None, help="a study id; all studies without it"),
    api: str | None = API,
    token: str | None = TOKEN,
    state: StudyStatus | None = typer.Option(None, "--status", help="only studies in this status"),
    name: str | None = typer.Option(None, help="only studies whose name contains this"),
    limit: int = typer.Option(50, min=1, max=200, help="at most this many studies"),
    as_json: bool = JSON,
) -> None:
    """Show one study's progress and best trial, or list the studies."""
    with api_client(api, token) as client:
        if study is not None:
            one = expect(call(client, "GET", f"/api/studies/{study}"))
            if as_json:
                print_json(one)
                return
            out.print(
                f"study {one['id']} ({one['name']}): {progress_line(one)}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            if one.get("error"):
                out.print(one["error"], markup=False)
            if awaiting_review(one):
                out.print(
                    f"its next trial waits for your review: `caviar continue {one['id']}` runs "
                    f"it, `caviar fork TRIAL` tries a variant, `caviar cancel {one['id']}` ends it",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
            if one.get("best_trial"):
                out.print(best_table(one))
            return
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["status"] = state.value
        if name:
            params["name"] = name
        page = expect(call(client, "GET", "/api/studies", params=params))
        if as_json:
            print_json(page)
            return
        if not page["items"]:
            out.print("no studies")
            return
        out.print(studies_table(page["items"]))
        if page["total"] > len(page["items"]):
            out.print(f"{len(page['items'])} of {page['total']} studies", highlight=False)


class TrialSort(enum.StrEnum):
    number = "number"
    value = "value"


@app.command(epilog=example("caviar trials 3 --sort value --limit 10"))
def trials(
    study: int = typer.Argument(..., help="the study's id"),
    api: str | None = API,
    token: str | None = TOKEN,
    state: TrialStatus | None = typer.Option(None, "--status", help="only trials in this status"),
    round_number: int | None = typer.Option(
        None, "--round", min=1, help="only this round, counted from 1 as the tables show it"
    ),
    sort: TrialSort = typer.Option(TrialSort.number, help="number, or value: best first"),
    limit: int = typer.Option(50, min=1, max=1000, help="at most this many trials"),
    offset: int = typer.Option(0, min=0, help="skip this many first"),
    as_json: bool = JSON,
) -> None:
    """List a study's trials with their params and values, filtered and sorted."""
    params: dict[str, Any] = {"limit": limit, "offset": offset, "sort": sort.value}
    if state is not None:
        params["status"] = state.value
    if round_number is not None:
        params["round"] = round_number - 1  # the API counts rounds from 0
    with api_client(api, token) as client:
        page = expect(call(client, "GET", f"/api/studies/{study}/trials", params=params))
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        out.print(f"study {study}: no trials match")
        return
    out.print(trials_table(study, page))


@app.command(epilog=example("caviar cancel 3"))
def cancel(
    study: int = typer.Argument(..., help="the study's id"),
    api: str | None = API,
    token: str | None = TOKEN,
) -> None:
    """Cancel a study: waiting trials stop now, running ones after their current epoch."""
    with api_client(api, token) as client:
        one = expect(call(client, "POST", f"/api/studies/{study}/cancel"))
    out.print(
        f"study {one['id']} ({one['name']}) cancelled: {progress_line(one)}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


class ExportFormat(enum.StrEnum):
    csv = "csv"
    json = "json"


@app.command(epilog=example("caviar export 3 --format csv -o study-3.csv"))
def export(
    study: int = typer.Argument(..., help="the study's id"),
    fmt: ExportFormat = typer.Option(ExportFormat.csv, "--format", help="csv or json"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="write to this file (default: stdout)"
    ),
    api: str | None = API,
    token: str | None = TOKEN,
) -> None:
    """Export every trial of a study, each param and final metric as a column."""
    with api_client(api, token) as client:
        r = call(client, "GET", f"/api/studies/{study}/trials.{fmt.value}")
        if r.status_code != 200:
            fail(problem_text(r))
    text = r.text if fmt is ExportFormat.csv else json.dumps(r.json(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror or exc}")
    if fmt is ExportFormat.json:
        rows = len(r.json()["rows"])
    else:  # cells may hold line breaks (an error message): count records, not lines
        rows = sum(1 for _ in csv.reader(io.StringIO(text))) - 1
    err.print(f"{output}: {rows} trials of study {study}", highlight=False)
