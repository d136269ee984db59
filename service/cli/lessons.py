"""Commands that put the course's lessons to work: gradcheck (is backpropagation right?) and
importance (which hyperparameters mattered in a study?)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

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
    load_spec_file,
    out,
    print_json,
    settings_with,
    spec_errors,
)

THRESHOLDS = "below 1e-7 correct, below 1e-5 fine, above 1e-3 wrong"
WRONG_EXIT = 1  # a gradient check that finds a bug: scripts and CI see it


def _spec_model_and_data(path: Path) -> tuple[Any, Any, str]:
    """The model block's TrainConfig and the spec's data set, or a clear error."""
    from service.errors import InvalidSpec
    from service.studies import validate_spec
    from trainer import load_dataset

    try:
        spec = validate_spec(load_spec_file(path), settings=settings_with(), check_trials=False)
    except InvalidSpec as exc:
        fail(spec_errors(path, exc.extra.get("errors", [])))
    ds = spec.dataset
    if ds is None:
        fail(f"{path}: task.entrypoint: gradcheck checks the built-in trainer's network only")
    if not ds.is_builtin:
        fail(
            f"{path}: dataset.name: {ds.name!r} is an uploaded data set; gradcheck "
            "loads built-in ones only (the check is about the network: try it on moons)"
        )
    return spec.base_config(), load_dataset(ds.loader_args()), ds.name


def _report_table(report: Any) -> Table:
    table = Table(title_justify="left")
    for column in ("parameter", "shape", "relative difference", "verdict"):
        table.add_column(column, justify="right" if column == "relative difference" else "left")
    from trainer.gradcheck import verdict

    for name, difference in report.parameters.items():
        shape = " x ".join(str(n) for n in report.shapes[name])
        table.add_row(name, shape, f"{difference:.3g}", verdict(difference))
    return table


@app.command(
    epilog=example(
        "caviar gradcheck examples/moons.yaml", "caviar gradcheck examples/moons.yaml --json"
    )
)
def gradcheck(
    spec: Path = typer.Argument(..., help="a spec file (YAML or JSON)"),
    examples: int = typer.Option(16, min=1, max=10_000, help="training examples in the batch"),
    epsilon: float = typer.Option(1e-7, min=1e-12, max=1e-2, help="half the two-sided step"),
    as_json: bool = typer.Option(False, "--json", help="print the numbers as JSON instead"),
) -> None:
    """Check backpropagation: the spec's model block on its data set against two-sided
    differences in float64, per parameter and overall; the relative difference reads below
    1e-7 correct, below 1e-5 fine, above 1e-3 wrong (exit code 1)."""
    from trainer.gradcheck import check_network

    config, dataset, name = _spec_model_and_data(spec)
    report = check_network(config, dataset, examples=examples, epsilon=epsilon)
    if as_json:
        print_json(report.to_json())
    else:
        out.print(
            f"{spec}: the model block {config.hidden_layers} on {name}, "
            f"{report.examples} training examples, float64, epsilon {epsilon:g}",
            highlight=False,
        )
        out.print(_report_table(report))
        out.print(
            f"relative difference {report.difference:.3g}: {report.verdict} ({THRESHOLDS})",
            highlight=False,
        )
    if not report.passed:
        raise typer.Exit(WRONG_EXIT)


TIER_WORDS = {1: "first", 2: "second", 3: "third"}  # the course's ranking; "-": not in it


def _importance_table(answer: dict[str, Any]) -> Table:
    table = Table(title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("hyperparameter", no_wrap=True)
    table.add_column("importance", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, max_width=10)
    table.add_column("course", no_wrap=True)
    table.add_column("scale")
    for item in answer["importances"]:
        share = float(item["importance"])
        table.add_row(
            str(item["rank"]),
            item["name"],
            f"{100 * share:.1f}%",
            "█" * round(10 * share) or "▏",
            TIER_WORDS.get(item["course_tier"], "-"),
            item["scale"],
        )
    return table


@app.command(epilog=example("caviar importance 3", "caviar importance 3 --json"))
def importance(
    study: int = typer.Argument(..., help="the id of a study with completed trials"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Which hyperparameters mattered in a study: each one's share of the objective's variance
    (fANOVA over a random forest), beside the course's ranking."""
    with api_client(api, token) as client:
        answer = expect(call(client, "GET", f"/api/studies/{study}/importance"))
    if as_json:
        print_json(answer)
        return
    used = f"{answer['trials_used']:,} of {answer['completed_trials']:,} completed trials"
    out.print(f"study {study}: {answer['metric']}, fANOVA on {used}", highlight=False)
    if answer["note"]:
        out.print(f"no importances yet: {answer['note']}", highlight=False)
        return
    out.print(_importance_table(answer))
    course = "; ".join(f"{TIER_WORDS[t['tier']]} {t['what']}" for t in answer["course"])
    out.print(f"the course: {course}", highlight=False, markup=False)
