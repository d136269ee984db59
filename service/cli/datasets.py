"""`caviar datasets`: upload a CSV or NPZ file to a service, list the uploaded ones, delete one."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from service.cli.common import (
    API,
    JSON,
    TOKEN,
    api_client,
    call,
    datasets_app,
    example,
    expect,
    fail,
    out,
    print_json,
)

# The content type the service reads each format as (POST /api/datasets).
CONTENT_TYPES = {"csv": "text/csv", "npz": "application/octet-stream"}


class DatasetFormat(enum.StrEnum):
    csv = "csv"
    npz = "npz"


def _format_of(path: Path, given: DatasetFormat | None) -> str:
    if given is not None:
        return given.value
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in CONTENT_TYPES:
        fail(f"{path}: cannot tell CSV from NPZ by the name; pass --format csv or --format npz")
    return suffix


def _which_column(file: Path, content: bytes) -> str:
    """The question a CSV uploaded without --label-column asks, with its columns."""
    from service.uploads import UploadRefused, csv_header, separator_hint  # pyarrow: when asked

    try:
        header, _ = csv_header(content, file.name)
    except UploadRefused as exc:
        return f"which column holds y? (and {exc})"
    return f"which column holds y? Its columns: {', '.join(header)}{separator_hint(header)}"


@datasets_app.command(
    epilog=example(
        "caviar datasets upload iris.csv --label-column species",
        "caviar datasets upload features.npz",
    )
)
def upload(
    file: Path = typer.Argument(
        ..., help="a CSV file with a header row, or an NPZ file holding arrays X and y"
    ),
    label_column: str | None = typer.Option(
        None, help="CSV: the column holding y (required); NPZ: y's array if not 'y'"
    ),
    name: str | None = typer.Option(None, help="a name to recognize it by (default: the file's)"),
    fmt: DatasetFormat | None = typer.Option(
        None, "--format", help="csv or npz (default: from the file's suffix)"
    ),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """Upload a data set; a spec then names it by the id printed (dataset: {name: ID})."""
    kind = _format_of(file, fmt)
    try:
        content = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or exc}")
    if kind == "csv" and label_column is None:
        fail(f"{file}: --label-column is required for a CSV file: {_which_column(file, content)}")
    params: dict[str, Any] = {"name": name or file.name, "format": kind}
    if label_column is not None:
        params["label_column"] = label_column
    with api_client(api, token, timeout=300.0) as client:
        r = call(
            client,
            "POST",
            "/api/datasets",
            params=params,
            content=content,
            headers={"content-type": CONTENT_TYPES[kind]},
        )
        dataset = expect(r, 200, 201)
    if as_json:
        print_json(dataset)
        return
    again = " (these bytes were uploaded before)" if r.status_code == 200 else ""
    out.print(
        f"{file}: data set {dataset['id']}{again}: {dataset['n_rows']} rows, "
        f"{dataset['n_columns']} feature columns; use it as dataset: {{name: {dataset['id']}}}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@datasets_app.command("list", epilog=example("caviar datasets list", "caviar datasets list --json"))
def list_(
    limit: int = typer.Option(50, min=1, max=200, help="at most this many data sets"),
    offset: int = typer.Option(0, min=0, help="skip this many first"),
    api: str | None = API,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """List the uploaded data sets, newest first."""
    with api_client(api, token) as client:
        page = expect(
            call(client, "GET", "/api/datasets", params={"limit": limit, "offset": offset})
        )
    if as_json:
        print_json(page)
        return
    if not page["items"]:
        out.print("no uploaded data sets")
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    for column in ("name", "rows", "features", "label", "uploaded"):
        table.add_column(column, justify="right" if column in ("rows", "features") else "left")
    for d in page["items"]:
        table.add_row(
            d["id"],
            d["name"],
            str(d["n_rows"]),
            str(d["n_columns"]),
            d.get("label_column") or "-",
            str(d.get("created_at") or "-")[:10],  # the day; --json has the time
        )
    out.print(table)
    if page["total"] > len(page["items"]):
        out.print(f"{len(page['items'])} of {page['total']} data sets", highlight=False)


@datasets_app.command(epilog=example("caviar datasets delete ds-3f2a9c0b1d4e5a67"))
def delete(
    dataset: str = typer.Argument(..., help="the data set's id"),
    api: str | None = API,
    token: str | None = TOKEN,
) -> None:
    """Delete an uploaded data set that no study names."""
    with api_client(api, token) as client:
        expect(call(client, "DELETE", f"/api/datasets/{dataset}"), 204)
    out.print(f"data set {dataset} deleted", highlight=False)
