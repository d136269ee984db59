"""Routes for uploaded data sets: upload a CSV or NPZ file, list them, delete unused ones."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status

from service.api.deps import MAX_ID, DbDep, ReadScope, SettingsDep, SubmitRate, WriteScope
from service.api.docs import problem_responses
from service.api.heavy import run_upload
from service.datasets import (
    delete_dataset,
    detect_format,
    get_dataset,
    list_datasets,
    store_dataset,
)
from service.errors import InvalidDataset
from service.schemas import DatasetRead, DatasetsPage
from service.spec import text_problem

router = APIRouter(prefix="/api", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file itself, as the body: CSV with a header row, or NPZ "
        "holding arrays X (m, n) and y (m,)",
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "x1,x2,label\n0.1,0.2,a\n0.3,0.1,b\n",
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetRead,
    dependencies=[WriteScope, SubmitRate],
    openapi_extra=UPLOAD_BODY,
    responses={
        200: {
            "model": DatasetRead,
            "description": "These bytes were uploaded before: the existing data set",
        },
        **problem_responses(409, 429),
    },
)
async def post_dataset(
    request: Request,
    response: Response,
    db: DbDep,
    settings: SettingsDep,
    name: Annotated[
        str,
        Query(min_length=1, max_length=200, description="a name to recognize it by"),
    ] = "upload",
    label_column: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="CSV: the column holding y (required); NPZ: y's array if not 'y'",
        ),
    ] = None,
    format: Annotated[
        Literal["csv", "npz"] | None,
        Query(description="default: from the name's suffix, else from the content"),
    ] = None,
) -> dict[str, Any]:
    """Upload a CSV or NPZ file, read within the caps as a worker reads it.

    The same content is stored once."""
    for field, text in (("name", name), ("label_column", label_column)):
        if text is not None and (problem := text_problem(text)):
            raise InvalidDataset(
                f"{field}: {problem}", errors=[{"loc": field, "msg": problem, "input": None}]
            )
    content = await request.body()  # capped by the body-limit middleware while it streams
    fmt = detect_format(content, name, format)
    # Parsed on the upload threads: heartbeats, claims and reads never wait behind it.
    dataset, created = await run_upload(
        request,
        store_dataset,
        db=db,
        content=content,
        name=name,
        label_column=label_column,
        fmt=fmt,
        settings=settings,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return dataset


@router.get("/datasets", response_model=DatasetsPage, dependencies=[ReadScope])
def get_datasets(
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> dict[str, Any]:
    """List uploaded data sets, newest first (their content is not included)."""
    items, total = list_datasets(db=db, limit=limit, offset=offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/datasets/{dataset_id}", response_model=DatasetRead, dependencies=[ReadScope])
def get_one_dataset(dataset_id: str, db: DbDep) -> dict[str, Any]:
    """One uploaded data set's description: format, size, rows, columns, sha256."""
    return get_dataset(db=db, dataset_id=dataset_id)


@router.delete(
    "/datasets/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[WriteScope],
    responses=problem_responses(409),
)
def delete_one_dataset(dataset_id: str, db: DbDep) -> Response:
    """Delete a data set that no study names; 409 lists the studies that do."""
    delete_dataset(db=db, dataset_id=dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
