"""The worker's data sets: built once per spec and kept in memory; uploaded files cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trainer import Dataset, load_dataset
from worker.client import Client

DATASET_CACHE_SIZE = 8  # data sets kept in memory, keyed by their spec
UPLOADED_PREFIX = "ds-"  # ids of uploaded data sets (the service's service/datasets.py)
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "caviar"


class DatasetCache:
    """The data sets of one worker process, by spec; the oldest goes first when full.

    Uploaded data sets are fetched through `client` into `cache_dir`/datasets.
    """

    def __init__(self, client: Client, cache_dir: Path | None = None) -> None:
        self.client = client
        self.directory = (cache_dir or DEFAULT_CACHE_DIR) / "datasets"
        self._datasets: dict[str, Dataset] = {}

    def get(self, spec: dict[str, Any]) -> Dataset:
        """The data set a trial's `dataset` block describes."""
        key = json.dumps(spec, sort_keys=True)
        ds = self._datasets.get(key)
        if ds is None:
            name = str(spec.get("name", ""))
            if name.startswith(UPLOADED_PREFIX):
                path = self._uploaded_file(name)
                ds = load_dataset({**{k: v for k, v in spec.items() if k != "name"}, "path": path})
            else:
                ds = load_dataset(spec)
            if len(self._datasets) >= DATASET_CACHE_SIZE:
                self._datasets.pop(next(iter(self._datasets)))
            self._datasets[key] = ds
        return ds

    def _uploaded_file(self, dataset_id: str) -> str:
        """The file of an uploaded data set, fetched once and cached on disk by sha256.

        Ids are `ds-` and the first 16 hex digits of the content's sha256, so a cached
        file is found by its name and checked against its own hash before use.
        """
        prefix = dataset_id[len(UPLOADED_PREFIX) :].lower()
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.glob(f"{prefix}*.*"):
            if hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0]:
                return str(path)
            path.unlink(missing_ok=True)  # damaged: fetch again
        response = self.client.request("GET", f"/api/worker/datasets/{dataset_id}")
        sha = hashlib.sha256(response.content).hexdigest()
        if sha != response.headers.get("x-caviar-sha256") or not sha.startswith(prefix):
            raise ValueError(f"data set {dataset_id}: the content did not match its sha256")
        fmt = response.headers.get("x-caviar-format", "csv")
        final = self.directory / f"{sha}.{fmt}"
        partial = final.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(response.content)
        os.replace(partial, final)  # atomic: another process never reads half a file
        return str(final)
