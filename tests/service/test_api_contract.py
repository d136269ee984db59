"""The REST contract beyond the skeleton: pages, filters, sorting, exports, NaN, the document."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.docs import PUBLIC
from service.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with TestClient(create_app(settings_for(db_url, migrate_on_start=False))) as c:
        yield c


def curve(final: float, n: int = 2, **overrides: Any) -> list[dict[str, Any]]:
    rows = []
    for epoch in range(1, n + 1):
        v = final if epoch == n else final / 2
        rows.append(
            {
                "epoch": epoch,
                "train_cost": 1 - v,
                "train_accuracy": v,
                "dev_cost": 1 - v,
                "dev_accuracy": v,
                "learning_rate": 0.01,
                "seconds": 0.01,
            }
        )
    rows[-1].update(overrides)
    return rows


def finish_all(client: TestClient, finals: list[float | None]) -> list[dict[str, Any]]:
    """Claim every queued trial and finish them in claim order: a value, or None = failed."""
    wid = client.post("/api/worker/register", json={"name": "t"}).json()["worker_id"]
    claimed = client.post("/api/worker/claim", json={"worker_id": wid, "max_trials": 64}).json()
    trials = claimed["trials"]
    for t, final in zip(trials, finals, strict=False):
        body: dict[str, Any] = {"lease_token": t["lease_token"]}
        if final is None:
            body |= {"outcome": "failed", "error": "=HYPERLINK(boom)", "epochs": curve(0.1, 1)}
        else:
            body |= {"outcome": "completed", "epochs": curve(final)}
        r = client.post(f"/api/worker/trials/{t['trial_id']}/finish", json=body)
        assert r.status_code == 200, r.text
    return trials


def test_studies_page_filter_by_status_and_name(client, spec_factory) -> None:
    ids = [
        client.post("/api/studies", json=spec_factory(name=n)).json()["id"]
        for n in ("moons-a", "moons-b", "circles_c")
    ]
    client.post(f"/api/studies/{ids[0]}/cancel")
    page = client.get("/api/studies", params={"limit": 2}).json()
    assert page["total"] == 3 and page["limit"] == 2 and len(page["items"]) == 2
    assert [s["id"] for s in page["items"]] == [ids[2], ids[1]]  # newest first
    rest = client.get("/api/studies", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in rest["items"]] == [ids[0]]
    cancelled = client.get("/api/studies", params={"status": "cancelled"}).json()
    assert [s["id"] for s in cancelled["items"]] == [ids[0]] and cancelled["total"] == 1
    named = client.get("/api/studies", params={"name": "moons"}).json()
    assert {s["id"] for s in named["items"]} == set(ids[:2])
    # LIKE wildcards in the filter are literal characters, not patterns
    assert client.get("/api/studies", params={"name": "_c"}).json()["total"] == 1
    assert client.get("/api/studies", params={"name": "%"}).json()["total"] == 0


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"offset": -1}, {"status": "sleeping"}],
)
def test_studies_page_refuses_bad_parameters_naming_them(client, params) -> None:
    r = client.get("/api/studies", params=params)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["errors"][0]["loc"] == next(iter(params))


def test_trials_filter_by_status_and_round_and_sort_by_objective(client, spec_factory) -> None:
    spec = spec_factory(
        strategy={"type": "random", "trials": 5},
        objective={"metric": "dev_cost", "direction": "minimize", "at": "last"},
    )
    study_id = client.post("/api/studies", json=spec).json()["id"]
    trials = finish_all(client, [0.6, 0.9, None, 0.7])  # the fifth stays running
    url = f"/api/studies/{study_id}/trials"
    by_value = client.get(url, params={"sort": "value"}).json()["items"]
    # minimize dev_cost = 1 - accuracy: 0.9 first; trials without a value last
    assert [t["id"] for t in by_value[:3]] == [trials[i]["trial_id"] for i in (1, 3, 0)]
    assert [t["value"] for t in by_value[3:]] == [None, None]
    failed = client.get(url, params={"status": "failed"}).json()
    assert failed["total"] == 1 and failed["items"][0]["id"] == trials[2]["trial_id"]
    assert client.get(url, params={"round": 0}).json()["total"] == 5
    assert client.get(url, params={"round": 1}).json()["total"] == 0
    page = client.get(url, params={"limit": 2, "offset": 4}).json()
    assert page["total"] == 5 and len(page["items"]) == 1 and page["items"][0]["number"] == 4
    assert client.get(url, params={"sort": "chaos"}).status_code == 422
    assert client.get(url, params={"limit": 1001}).status_code == 422
    assert client.get("/api/studies/999/trials").status_code == 404


def test_exports_have_every_param_and_final_metric_as_a_column(client, spec_factory) -> None:
    spec = spec_factory(
        space={
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
            "hidden_layers": {
                "type": "layers",
                "depth": {"low": 1, "high": 3},
                "units": {"low": 2, "high": 8},
            },
            "activation": {"type": "categorical", "choices": ["relu", "tanh"]},
        },
        strategy={"type": "random", "trials": 3},
    )
    study_id = client.post("/api/studies", json=spec).json()["id"]
    trials = finish_all(client, [0.8, None])  # the third stays running, with no epochs
    exported = client.get(f"/api/studies/{study_id}/trials.json")
    assert exported.status_code == 200, exported.text
    data = exported.json()
    params = [f"param.{p}" for p in ("learning_rate", "hidden_layers", "activation")]
    finals = [
        f"final.{m}"
        for m in ("train_cost", "train_accuracy", "dev_cost", "dev_accuracy", "learning_rate")
    ]
    assert set(params + finals) <= set(data["columns"])
    assert data["columns"].index(params[0]) < data["columns"].index(finals[0])
    rows = {r["trial_id"]: r for r in data["rows"]}
    done = rows[trials[0]["trial_id"]]
    assert done["status"] == "completed" and done["value"] == pytest.approx(0.8)
    assert done["final.dev_accuracy"] == pytest.approx(0.8)
    assert isinstance(done["param.hidden_layers"], list)
    assert rows[trials[1]["trial_id"]]["final.dev_accuracy"] == pytest.approx(0.1)
    waiting = next(r for r in data["rows"] if r["status"] == "running")
    assert waiting["final.dev_accuracy"] is None and waiting["param.activation"] in ("relu", "tanh")

    r = client.get(f"/api/studies/{study_id}/trials.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"study-{study_id}-trials.csv" in r.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert list(table[0]) == data["columns"] and len(table) == 3
    by_id = {int(row["trial_id"]): row for row in table}
    first = by_id[trials[0]["trial_id"]]
    assert float(first["final.dev_accuracy"]) == pytest.approx(0.8)
    assert json.loads(first["param.hidden_layers"]) == done["param.hidden_layers"]
    # a formula in a text cell is neutralized for spreadsheets
    assert by_id[trials[1]["trial_id"]]["error"].startswith("'=")
    assert client.get("/api/studies/999/trials.csv").status_code == 404


def test_nan_and_infinity_never_break_a_response(client, spec_factory) -> None:
    study_id = client.post(
        "/api/studies", json=spec_factory(strategy={"type": "random", "trials": 1})
    ).json()["id"]
    wid = client.post("/api/worker/register", json={"name": "t"}).json()["worker_id"]
    t = client.post("/api/worker/claim", json={"worker_id": wid}).json()["trials"][0]
    # Python's json (the worker's) writes NaN and Infinity literals; the service must cope.
    body = (
        f'{{"lease_token": "{t["lease_token"]}", "epochs": [{{"epoch": 1, "train_cost": NaN, '
        '"dev_cost": Infinity, "dev_accuracy": 0.5, "train_accuracy": -Infinity}]}'
    )
    r = client.post(
        f"/api/worker/trials/{t['trial_id']}/metrics",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    for path in (
        f"/api/trials/{t['trial_id']}/metrics",
        f"/api/studies/{study_id}/trials.json",
        f"/api/studies/{study_id}",
    ):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "NaN" not in r.text and "Infinity" not in r.text
    point = client.get(f"/api/trials/{t['trial_id']}/metrics").json()[0]
    assert point["train_cost"] is None and point["dev_cost"] is None
    assert point["dev_accuracy"] == 0.5
    row = client.get(f"/api/studies/{study_id}/trials.json").json()["rows"][0]
    assert row["final.train_cost"] is None and row["final.train_accuracy"] is None
    assert ",," in client.get(f"/api/studies/{study_id}/trials.csv").text


def test_idempotency_key_returns_the_same_study_or_422_for_another_spec(
    client, spec_factory
) -> None:
    key = {"idempotency-key": "batch-7-file-3"}
    first = client.post("/api/studies", json=spec_factory(), headers=key)
    again = client.post("/api/studies", json=spec_factory(), headers=key)
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/api/studies", json=spec_factory(name="other"), headers=key)
    assert other.status_code == 422 and other.headers["content-type"].startswith(PROBLEM)
    assert other.json()["errors"][0]["loc"] == "Idempotency-Key"
    assert client.get("/api/studies").json()["total"] == 1
    no_key = client.post("/api/studies", json=spec_factory())
    assert no_key.json()["id"] != first.json()["id"]


def test_retry_failed_requeues_and_says_how_many(client, spec_factory) -> None:
    study_id = client.post(
        "/api/studies", json=spec_factory(strategy={"type": "random", "trials": 3})
    ).json()["id"]
    finish_all(client, [0.7, None, None])
    assert client.get(f"/api/studies/{study_id}").json()["counts"]["failed"] == 2
    r = client.post(f"/api/studies/{study_id}/retry-failed")
    assert r.status_code == 200, r.text
    assert r.json()["requeued"] == 2 and r.json()["counts"]["queued"] == 2
    assert r.json()["status"] == "running"
    assert client.post("/api/studies/999/retry-failed").status_code == 404


def test_preview_and_validate_describe_the_plan(client, spec_factory) -> None:
    r = client.post("/api/specs/preview", params={"n": 3}, json=spec_factory())
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["n"] == 3 and preview["total_trials"] == 4
    lr = preview["params"]["learning_rate"]
    assert len(lr["values"]) == 3 and all(0 <= p <= 1 for p in lr["positions"])
    missing = client.post("/api/specs/validate", json=spec_factory(dataset={"name": "ds-nope"}))
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == "dataset.name"


def test_the_openapi_document_is_complete() -> None:
    """Every operation: a one-line summary, a typed 2xx, and problem details for its errors."""
    app = create_app()
    doc = app.openapi()
    contract = [
        ("post", "/api/studies"),
        ("get", "/api/studies"),
        ("get", "/api/studies/{study_id}"),
        ("post", "/api/studies/{study_id}/cancel"),
        ("post", "/api/studies/{study_id}/retry-failed"),
        ("get", "/api/studies/{study_id}/trials"),
        ("get", "/api/studies/{study_id}/trials.csv"),
        ("get", "/api/studies/{study_id}/trials.json"),
        ("post", "/api/specs/validate"),
        ("post", "/api/specs/preview"),
        ("get", "/api/trials/{trial_id}"),
        ("get", "/api/trials/{trial_id}/metrics"),
        ("post", "/api/trials/{trial_id}/stop"),
        ("get", "/api/studies/{study_id}/events"),
        ("post", "/api/datasets"),
        ("get", "/api/datasets"),
        ("delete", "/api/datasets/{dataset_id}"),
        ("get", "/api/workers"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ]
    for method, path in contract:
        assert path in doc["paths"] and method in doc["paths"][path], (method, path)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            # FastAPI takes the description from the docstring: its first line says it all
            first = op.get("description", "").split("\n\n")[0].strip()
            assert first and "\n" not in first and first.endswith("."), f"{where}: {first!r}"
            ok = [c for c in op["responses"] if c.startswith("2") or c == "304"]
            assert ok, f"{where} documents no success"
            for code, response in op["responses"].items():
                if code.startswith("2") and code != "204":
                    content = response.get("content", {})
                    assert content, f"{where} {code} has no content type"
                    if "application/json" in content:
                        assert content["application/json"].get("schema"), f"{where} {code}"
                if code[0] in "45":
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}, f"{where} {code}"
            if path not in PUBLIC:
                assert {"401", "403"} <= set(op["responses"]), where
                assert op["security"] == [{"bearer": []}], where
            if "{" in path:
                assert "404" in op["responses"] and "422" in op["responses"], where
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    post_study = doc["paths"]["/api/studies"]["post"]
    assert "429" in post_study["responses"] and "409" in post_study["responses"]
    example = post_study["requestBody"]["content"]["application/json"]["examples"]
    assert next(iter(example.values()))["value"]["name"] == "moons-adam"
    assert doc["components"]["schemas"]["StudyRead"]["examples"]


def test_responses_render_nan_big_integers_and_naive_times() -> None:
    from datetime import datetime

    from service.api.render import json_bytes

    naive = datetime(2026, 11, 25, 10, 0, 0)  # SQLite's timestamps: UTC without a zone
    fast = json.loads(json_bytes({"x": float("nan"), "y": [float("-inf"), 1.5], "at": naive}))
    # Z, as every time the service writes (it was +00:00 here, Z through pydantic)
    assert fast == {"x": None, "y": [None, 1.5], "at": "2026-11-25T10:00:00Z"}
    # JSON allows any integer; orjson stops at 64 bits, and the slow path takes over
    slow = json.loads(json_bytes({"n": 2**70, "x": float("nan"), "at": naive}))
    assert slow == {"n": 2**70, "x": None, "at": "2026-11-25T10:00:00Z"}
