"""How the command line shows studies: one-line progress, tables, live views for terminals."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from service.cli.common import TERMINAL, print_json


def done_count(study: dict[str, Any]) -> int:
    return int(study["finished_trials"])


def expected_trials(study: dict[str, Any]) -> int:
    """All the trials the study will run: coarse-to-fine creates later rounds as it goes."""
    return int(study["planned_trials"])


def awaiting_review(study: dict[str, Any]) -> bool:
    """Whether a panda study waits for someone to continue it (and has not ended)."""
    return bool(study.get("awaiting_review")) and study["status"] not in TERMINAL


def shown_status(study: dict[str, Any]) -> str:
    """The study's status as a person reads it: a panda study waiting for someone to
    continue it is "awaiting review", not "running"."""
    if awaiting_review(study):
        return "awaiting review"
    if study.get("waiting_for"):  # a task's function no live worker offers
        return f"{study['status']}, {study['waiting_for']}"
    return str(study["status"])


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def trial_name(trial: dict[str, Any]) -> str:
    """ "trial #5, id 123": its number in its study, then its id (what commands take)."""
    return f"trial #{trial['number']}, id {trial['id']}"


def shown_round(index: int) -> int:
    """A round as people count it, from 1 (the API's `round` and `index` count from 0)."""
    return index + 1


def best_text(study: dict[str, Any]) -> str:
    best = study.get("best_trial")
    return f"best {best['value']:.4f} ({trial_name(best)})" if best else "best -"


def progress_line(study: dict[str, Any]) -> str:
    c = study["counts"]
    rounds = study["rounds"]
    current = shown_round(rounds["current"])
    round_text = f" round {current}/{rounds['total']}" if rounds["total"] > 1 else ""
    return (
        f"[{shown_status(study)}]{round_text} {done_count(study)}/{expected_trials(study)} done, "
        f"{c['running']} running, {c['queued']} queued, {c['failed']} failed; "
        f"{best_text(study)}"
    )


def study_table(study: dict[str, Any]) -> Table:
    """The live view of one study: progress by status, the round, the best trial so far."""
    c = study["counts"]
    rounds = study["rounds"]
    title = f"study {study['id']} ({study['name']}): {shown_status(study)}"
    table = Table(title=title, title_justify="left")
    for col in ("done", "running", "queued", "failed", "round", "best"):
        table.add_column(col, justify="right" if col != "best" else "left")
    best = study.get("best_trial")
    obj = study["objective"]
    best_cell = (
        f"{obj['metric']} {best['value']:.4f} ({trial_name(best)}) "
        + ", ".join(f"{k}={fmt_value(v)}" for k, v in best["params"].items())
        if best
        else "-"
    )
    table.add_row(
        f"{done_count(study)}/{expected_trials(study)}",
        str(c["running"]),
        str(c["queued"]),
        str(c["failed"]),
        f"{shown_round(rounds['current'])}/{rounds['total']}",
        best_cell,
    )
    return table


def best_table(study: dict[str, Any]) -> Table:
    best = study["best_trial"]
    obj = study["objective"]
    table = Table(title=f"best trial of study {study['id']} ({study['name']})")
    table.add_column("hyperparameter")
    table.add_column("value", justify="right")
    for key, value in best["params"].items():
        table.add_row(key, fmt_value(value))
    table.add_row(f"[bold]{obj['metric']} ({obj['at']})", f"[bold]{best['value']:.4f}")
    return table


def print_result(study: dict[str, Any], *, as_json: bool, console: Console) -> None:
    best = study.get("best_trial")
    if as_json:
        payload = {
            "study_id": study["id"],
            "name": study["name"],
            "status": study["status"],
            "objective": study["objective"],
            "counts": study["counts"],
            "best_trial": best,
        }
        print_json(payload, indent=None)
        return
    if best is None:
        console.print(f"study {study['id']} {study['status']}: no trial produced a value")
        if study.get("error"):
            console.print(study["error"], markup=False)
        return
    console.print(best_table(study))


def studies_table(items: list[dict[str, Any]]) -> Table:
    table = Table()
    for col in ("id", "name", "status", "strategy", "done", "best"):
        table.add_column(col, justify="right" if col in ("id", "done", "best") else "left")
    for s in items:
        best = s["best_trial"]
        table.add_row(
            str(s["id"]),
            s["name"],
            shown_status(s),
            s["strategy"],
            f"{done_count(s)}/{expected_trials(s)}",
            f"{best['value']:.4f}" if best else "-",
        )
    return table


def trials_table(study_id: int, page: dict[str, Any]) -> Table:
    items = page["items"]
    paths = list(dict.fromkeys(p for t in items for p in t["params"]))
    table = Table(
        title=f"study {study_id}: trials {page['offset'] + 1}-{page['offset'] + len(items)} "
        f"of {page['total']}",
        title_justify="left",
    )
    for col in ("#", "id", "round", "status", "value", "epochs", *paths):
        table.add_column(col, justify="left" if col == "status" else "right")
    for t in items:
        table.add_row(
            str(t["number"]),
            str(t["id"]),
            str(shown_round(t["round"])),
            t["status"],
            fmt_value(t["value"]),
            str(t["epochs_done"]),
            *(fmt_value(t["params"].get(p)) for p in paths),
        )
    return table


class StudyBars:
    """One rich progress bar per study, for `submit --wait`."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            console=console,
        )
        self.tasks: dict[int, TaskID] = {}

    def add(self, study: dict[str, Any]) -> None:
        self.tasks[study["id"]] = self.progress.add_task(
            f"study {study['id']} {study['name']}",
            total=expected_trials(study),
            state=shown_status(study),
        )

    def update(self, study: dict[str, Any]) -> None:
        ended = study["status"] in TERMINAL
        self.progress.update(
            self.tasks[study["id"]],
            total=expected_trials(study),
            completed=done_count(study),
            state=f"{shown_status(study)} {best_text(study)}",
            visible=True,
        )
        if ended:
            self.progress.stop_task(self.tasks[study["id"]])


def watch_local(
    database: Any, study_id: int, *, console: Console | None, interval: float = 0.5
) -> dict[str, Any]:
    """Follow a study until it ends: a live table on a terminal, a line per change otherwise.

    `console=None` is silent (`--json` keeps stdout and stderr clean for a program).
    """
    from service.studies import get_study

    def fetch() -> dict[str, Any]:
        return get_study(db=database, study_id=study_id)

    study = fetch()
    if console is not None and console.is_terminal:
        with Live(study_table(study), console=console, auto_refresh=False) as live:
            while study["status"] not in TERMINAL:
                time.sleep(interval)
                study = fetch()
                live.update(study_table(study), refresh=True)
        return study
    last = ""
    while True:
        line = progress_line(study)
        if console is not None and line != last:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
            last = line
        if study["status"] in TERMINAL:
            return study
        time.sleep(interval)
        study = fetch()
