"""Zooming: the preview's spec states exactly the box the service's zoom samples first."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.app import create_app
from service.db import get_database
from service.models import Trial, TrialStatus
from service.search.distributions import distribution_from_json
from service.search.strategies import Box, SearchSpace
from service.search.zoom import narrowed_space

SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1.0, "scale": "log"},
    "beta1": {"type": "float", "low": 0.8, "high": 0.999, "scale": "one_minus_log"},
    "keep_prob": {"type": "float", "low": 0.5, "high": 1.0, "step": 0.05},
    "epochs": {"type": "int", "low": 2, "high": 12},
    "init": {"type": "categorical", "choices": ["he", "xavier", "random"]},
    "hidden_layers": {
        "type": "layers",
        "depth": {"low": 1, "high": 3},
        "units": {"low": 2, "high": 64, "scale": "log"},
    },
}


def within(d: dict[str, Any], value: Any) -> bool:
    if d["type"] == "categorical":
        return value in d["choices"]
    if d["type"] == "layers":
        return within({"type": "int", **d["depth"]}, len(value)) and all(
            within({"type": "int", **d["units"]}, w) for w in value
        )
    return bool(d["low"] <= value <= d["high"])


def test_a_narrowed_space_holds_every_point_of_its_box_and_little_else() -> None:
    space = SearchSpace({p: distribution_from_json(d) for p, d in SPACE.items()})
    rng = np.random.default_rng(0)
    for _ in range(20):
        intervals = []
        for axis in space.axes:
            if axis.distribution.ordered:
                a, b = sorted(rng.uniform(0, 1, 2))
                intervals.append([(float(a), float(b))])
            else:
                intervals.append([(0.0, 1 / 3)])  # the first choice only
        box = Box(intervals)
        narrowed = narrowed_space(space, box)
        for u in box.map(rng.uniform(0, 1, (200, space.dims))):
            for path, value in space.decode(u).items():
                assert within(narrowed[path].to_json(), value), (path, value, narrowed[path])
        assert narrowed["init"].to_json()["choices"] == ["he"]
        for path in ("learning_rate", "beta1"):
            d, whole = narrowed[path].to_json(), SPACE[path]
            # Rounded outwards to 4 significant digits, never past the original range.
            assert whole["low"] <= d["low"] < d["high"] <= whole["high"]


@pytest.fixture
def client(db_url: str, settings_for) -> Any:
    with TestClient(create_app(settings_for(db_url))) as c:
        yield c


def _finish_all(db_url: str, study_id: int) -> None:
    """Every trial completed, best where the learning rate is 1e-2."""
    with get_database(db_url).session() as s:
        rows = s.execute(select(Trial.id, Trial.params).where(Trial.study_id == study_id)).all()
        for trial_id, params in rows:
            value = 1 - abs(math.log10(params["learning_rate"]) + 2) / 4
            s.execute(
                update(Trial)
                .where(Trial.id == trial_id)
                .values(status=TrialStatus.completed, value=value)
            )


def test_the_preview_states_the_box_the_zoom_samples(client, db_url, spec_factory) -> None:
    spec = spec_factory(
        space={k: SPACE[k] for k in ("learning_rate", "beta1", "init")},
        strategy={"type": "random", "trials": 24},
    )
    parent = client.post("/api/studies", json=spec).json()["id"]
    assert client.post(f"/api/studies/{parent}/zoom/preview").status_code == 409
    _finish_all(db_url, parent)

    body = {"rounds": 2, "trials_per_round": 6, "keep_top": 0.25}
    r = client.post(f"/api/studies/{parent}/zoom/preview", json=body)
    assert r.status_code == 200, r.text
    preview = r.json()
    assert preview["kept"] == 6  # the best quarter of 24
    child = client.post(f"/api/studies/{parent}/zoom", json=body).json()
    box = client.get(f"/api/studies/{child['id']}/rounds").json()[0]["box"]
    assert preview["box"] == box  # one box, whichever way the zoom is taken

    space = preview["spec"]["space"]
    for path in ("learning_rate", "beta1"):
        low, high = box["axes"][path]["low"], box["axes"][path]["high"]
        assert space[path]["low"] <= low < high <= space[path]["high"]
        assert space[path]["scale"] == SPACE[path]["scale"]
    assert space["init"]["choices"] == box["axes"]["init"]["choices"]
    lr = space["learning_rate"]
    assert lr["low"] < 1e-2 < lr["high"] and lr["high"] / lr["low"] < 1e4  # it did narrow
    assert preview["spec"]["strategy"]["type"] == "coarse_to_fine"

    # What the person gets is a spec they can submit as it is.
    check = client.post("/api/specs/validate", json=preview["spec"])
    assert check.status_code == 200 and check.json()["valid"], check.text
    assert client.post("/api/studies/999/zoom/preview").status_code == 404
