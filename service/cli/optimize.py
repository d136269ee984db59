"""`optimize`: a whole study of a function object in this process, with no server to
start; `caviar run` for a function object (it stands beside the command line's local
mode, whose embedded service it uses)."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from service.cli.local import Embedded, _free_port, no_reviewer
from service.db import get_database
from service.migrate import upgrade
from service.settings import get_settings
from service.spec import SpecError, load_spec_data, parse_spec
from service.spec.messages import error_at
from service.studies import create_study, get_study
from worker.objective import ENTRYPOINT
from worker.runner import Worker


def optimize(
    objective: Callable[..., Any],
    spec: Mapping[str, Any] | str | Path,
    *,
    workers: int = 1,
    db: str | None = None,
) -> dict[str, Any] | None:
    """Run a whole study of `objective` in this process and return its best trial.

    This is `caviar run` for a function object: the same embedded service on a loopback
    port, the same queue, pruning, checkpoints and database, with no server to start;
    but where `caviar run` starts worker processes that import ``task.entrypoint``, here
    `workers` threads of this process call `objective` itself, so it needs no entrypoint
    installed anywhere (a closure or a notebook's function will do). `spec` is a mapping,
    YAML or JSON text, or a file's path; its ``task.entrypoint``, if it has none, is named
    after the function. `db` is a database URL (default: a new SQLite file in a temporary
    folder). Returns the best trial's document (its params, value, status...), or None if
    no trial finished with a value. Raises SpecError listing every problem of the spec.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    data = _spec_data(spec, load_spec_data)
    task = dict(data.get("task") or {})
    name = f"{objective.__module__}:{getattr(objective, '__name__', 'objective')}"
    task.setdefault("entrypoint", name if ENTRYPOINT.fullmatch(name) else "local:objective")
    data["task"] = task
    url = db or f"sqlite:///{Path(tempfile.mkdtemp(prefix='caviar-')) / 'caviar.db'}"
    settings = get_settings().model_copy(update={"database_url": url, "tokens": ""})
    if parse_spec(data, settings=settings).execution.await_review:
        raise SpecError(
            [
                error_at(
                    "execution.await_review",
                    f"{no_reviewer('optimize()')}: set await_review: false, or submit it "
                    "to `caviar serve`",
                    True,
                )
            ]
        )
    upgrade(url)
    database = get_database(url)
    study_id = create_study(db=database, data=data, settings=settings)
    embedded = Embedded(settings, host="127.0.0.1", port=_free_port(), workers=0)
    try:
        threads = []
        for i in range(workers):
            worker = Worker(
                embedded.url,
                embedded.token,
                name=f"optimize-{i}",
                exit_when_idle=True,
                trainer=False,
            )
            worker.objectives = {task["entrypoint"]: objective}
            threads.append(threading.Thread(target=worker.run, name=f"caviar-optimize-{i}"))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        embedded.stop()
    best: dict[str, Any] | None = get_study(db=database, study_id=study_id)["best_trial"]
    return best


def _spec_data(spec: Any, load: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return json.loads(json.dumps(dict(spec)))  # a copy the function may not change
    if isinstance(spec, Path) or (
        isinstance(spec, str) and "\n" not in spec and Path(spec).is_file()
    ):
        return load(Path(spec).read_bytes())
    return load(spec)
