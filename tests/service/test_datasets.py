"""Uploaded data sets: checked by the trainer's loader, stored by sha256, named by studies."""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import get_database
from service.models import Dataset

PROBLEM = "application/problem+json"


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


@pytest.fixture
def sqlite_client(sqlite_url: str, settings_for) -> Any:
    settings = settings_for(sqlite_url, migrate_on_start=False, max_dataset_bytes=64 * 1024)
    with TestClient(create_app(settings)) as c:
        yield c


def churn_csv(rows: int = 60) -> bytes:
    rng = np.random.default_rng(0)
    lines = ["age,spend,churned"]
    for _ in range(rows):
        age, spend = rng.normal(size=2)
        lines.append(f"{age:.4f},{spend:.4f},{int(age + spend > 0)}")
    return ("\n".join(lines) + "\n").encode()


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def upload(client: TestClient, content: bytes, **params: Any) -> Any:
    return client.post(
        "/api/datasets",
        content=content,
        params=params,
        headers={"content-type": "application/octet-stream"},
    )


def stored(db_url: str) -> int:
    with get_database(db_url).session(write=False) as s:
        return s.query(Dataset).count()


def test_a_csv_upload_is_checked_stored_and_deduplicated(client, db_url) -> None:
    content = churn_csv()
    r = upload(client, content, name="churn.csv", label_column="churned")
    assert r.status_code == 201, r.text
    ds = r.json()
    sha = hashlib.sha256(content).hexdigest()
    assert ds["sha256"] == sha and ds["id"] == f"ds-{sha[:16]}"
    assert ds["format"] == "csv" and ds["n_rows"] == 60 and ds["n_columns"] == 2
    assert ds["size_bytes"] == len(content) and ds["label_column"] == "churned"
    again = upload(client, content, name="copy.csv", label_column="churned")
    assert again.status_code == 200 and again.json()["id"] == ds["id"]
    assert stored(db_url) == 1
    clash = upload(client, content, name="churn.csv", label_column="age")
    assert clash.status_code == 409 and ds["id"] in clash.json()["detail"]
    page = client.get("/api/datasets").json()
    assert page["total"] == 1 and page["items"][0]["id"] == ds["id"]
    assert "content" not in page["items"][0]
    assert client.get(f"/api/datasets/{ds['id']}").json()["sha256"] == sha


def test_an_npz_upload_is_recognized_by_its_content(client) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    content = npz_bytes(X=X, y=(X[:, 0] > 0).astype(int))
    r = upload(client, content)  # no name, no format: the zip magic says npz
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "npz" and r.json()["n_columns"] == 3


@pytest.mark.parametrize(
    ("content", "params", "words"),
    [
        (b"", {"label_column": "y"}, "empty"),
        (b"a,b,y\n1,2,0\n3,oops,1\n", {"label_column": "y"}, "'oops' is not a number"),
        (b"a,b,y\n1,2,0\n", {"label_column": "target"}, "label column 'target' not found"),
        (b"a,b,y\n1,2,0\n", {}, "label_column is required"),
        (b"PK\x03\x04 not really a zip", {}, "not a readable NPZ"),
        (npz_bytes(X=np.zeros((3, 2))), {}, "needs arrays 'X' and 'y'"),
        (npz_bytes(X=np.zeros((3, 2)), y=np.array([1.0, np.nan, 0.0])), {}, "NaN"),
    ],
)
def test_a_bad_file_is_422_with_the_loaders_reason_and_nothing_stored(
    sqlite_client, sqlite_url, content, params, words
) -> None:
    r = upload(sqlite_client, content, **params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert words in r.json()["detail"], r.json()
    assert stored(sqlite_url) == 0


def test_an_npz_that_would_inflate_past_the_cap_is_refused_unread(sqlite_client) -> None:
    # 400 MB of zeros compress to a few hundred kilobytes; the header alone gives it away.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f8", "fortran_order": False, "shape": (50_000_000, 1)}
        )
        archive.writestr("X.npy", header.getvalue() + b"\0" * 1024)
        archive.writestr("y.npy", header.getvalue())
    r = upload(sqlite_client, buffer.getvalue(), format="npz")
    assert r.status_code == 422 and "once loaded" in r.json()["detail"]


def test_an_upload_over_the_dataset_cap_is_413(sqlite_client, sqlite_url) -> None:
    big = churn_csv(4000)  # ~100 KB against a 64 KB cap
    r = upload(sqlite_client, big, label_column="churned")
    assert r.status_code == 413 and r.headers["content-type"].startswith(PROBLEM)

    def chunks() -> Any:  # no Content-Length: counted as it streams
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = sqlite_client.post("/api/datasets", content=chunks(), params={"label_column": "churned"})
    assert r.status_code == 413, r.text
    assert stored(sqlite_url) == 0


def test_a_study_trains_on_an_uploaded_data_set_and_it_cannot_be_deleted(
    client, spec_factory
) -> None:
    ds = upload(client, churn_csv(), name="churn.csv", label_column="churned").json()
    spare = upload(client, npz_bytes(X=np.eye(20), y=np.arange(20) % 2)).json()
    spec = spec_factory(dataset={"name": ds["id"], "dev_fraction": 0.25})
    assert client.post("/api/specs/validate", json=spec).status_code == 200
    created = client.post("/api/studies", json=spec)
    assert created.status_code == 201, created.text
    study = created.json()
    assert study["spec"]["dataset"]["label_column"] == "churned"
    # the worker's copy of the data set block says how to read the file it fetches
    wid = client.post("/api/worker/register", json={"name": "t"}).json()["worker_id"]
    claimed = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    assert claimed["dataset"]["name"] == ds["id"]
    assert claimed["dataset"]["label_column"] == "churned"

    r = client.delete(f"/api/datasets/{ds['id']}")
    assert r.status_code == 409 and r.json()["studies"] == [study["id"]]
    assert client.delete(f"/api/datasets/{spare['id']}").status_code == 204
    assert client.get(f"/api/datasets/{spare['id']}").status_code == 404
    assert client.delete(f"/api/datasets/{spare['id']}").status_code == 404
    assert client.get("/api/datasets").json()["total"] == 1


def test_a_spec_may_train_on_another_column_of_an_upload_if_it_loads(client, spec_factory) -> None:
    ds = upload(client, churn_csv(), label_column="churned").json()
    other = spec_factory(dataset={"name": ds["id"], "label_column": "age"})
    r = client.post("/api/studies", json=other)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["dataset"]["label_column"] == "age"
    wrong = spec_factory(dataset={"name": ds["id"], "label_column": "nope"})
    r = client.post("/api/studies", json=wrong)
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == "dataset.label_column"
    assert "not found" in r.json()["errors"][0]["msg"]


def test_workers_fetch_the_bytes_with_an_etag(db_url, settings_for) -> None:
    tokens = "me:read,write:rw-secret-0123456789ab;w:worker:worker-secret-0123456789"
    app = create_app(settings_for(db_url, tokens=tokens, migrate_on_start=False))
    rw = {"authorization": "Bearer rw-secret-0123456789ab"}
    worker = {"authorization": "Bearer worker-secret-0123456789"}
    content = churn_csv()
    with TestClient(app) as c:
        ds = c.post(
            "/api/datasets", content=content, params={"label_column": "churned"}, headers=rw
        ).json()
        url = f"/api/worker/datasets/{ds['id']}"
        assert c.get(url, headers=rw).status_code == 403
        r = c.get(url, headers=worker)
        assert r.status_code == 200 and r.content == content
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-caviar-sha256"] == ds["sha256"]
        assert r.headers["x-caviar-format"] == "csv"
        assert r.headers["etag"] == f'"{ds["sha256"]}"'
        cached = c.get(url, headers={**worker, "if-none-match": r.headers["etag"]})
        assert cached.status_code == 304 and cached.content == b""
        assert c.get("/api/worker/datasets/ds-nope", headers=worker).status_code == 404


def test_worker_processes_train_a_study_on_an_uploaded_csv(
    sqlite_url, live_service, spec_factory, tmp_path, monkeypatch
) -> None:
    """End to end: upload, a study naming the id, real workers fetch the file and train."""
    import time

    import httpx

    from worker.pool import Pool, PoolOptions

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the workers' cache stays in here
    svc = live_service(sqlite_url)
    with httpx.Client(base_url=svc.url, timeout=30) as api:
        ds = api.post(
            "/api/datasets", content=churn_csv(200), params={"label_column": "churned"}
        ).json()
        spec = spec_factory(dataset={"name": ds["id"]}, strategy={"type": "random", "trials": 2})
        study_id = api.post("/api/studies", json=spec).json()["id"]
        pool = Pool(PoolOptions(api_url=svc.url, processes=1, exit_when_idle=True))
        pool.start()
        try:
            deadline = time.monotonic() + 90
            while (study := api.get(f"/api/studies/{study_id}").json())["status"] not in (
                "completed",
                "failed",
            ):
                assert time.monotonic() < deadline, study
                time.sleep(0.2)
        finally:
            pool.stop()
    assert study["status"] == "completed", study
    assert 0.5 <= study["best_trial"]["value"] <= 1.0


@pytest.mark.parametrize("param", ["name", "label_column"])
def test_a_nul_in_an_upload_s_names_is_422_naming_it(client, db_url, param) -> None:
    # PostgreSQL cannot store a NUL: it was a database error, rendered as "out of range".
    params = {"name": "churn.csv", "label_column": "churned", param: "a\x00b"}
    r = upload(client, churn_csv(), **params)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == param and "NUL" in r.json()["errors"][0]["msg"]
    assert stored(db_url) == 0
