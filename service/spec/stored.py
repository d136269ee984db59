"""A study's stored spec read back once into the typed StudySpec, and kept for reuse.

The queue, the rounds planner, the reads and the dashboard all need parts of a study's
spec. Each read it as untyped dicts with defaults of its own; now each asks here. The
schema alone is applied, not the caps and checks of a submission: a spec stored under
other caps stays readable, and it was checked when it was submitted. A stored spec never
changes, so its fingerprint (the study's `spec_sha256`, or the JSON text) keys a cache.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from service.spec.schema import StudySpec

CACHED_SPECS = 1024  # studies whose typed spec is kept; a spec is a few kilobytes

_cache: OrderedDict[str, StudySpec] = OrderedDict()
_lock = threading.Lock()


def stored_spec(spec: Mapping[str, Any], *, fingerprint: str | None = None) -> StudySpec:
    """The typed spec of a stored spec dict; pydantic's ValidationError if the schema no
    longer reads it. `fingerprint`: the study's `spec_sha256`, saving a JSON dump."""
    key = fingerprint or json.dumps(spec, sort_keys=True, default=str)
    with _lock:
        typed = _cache.get(key)
        if typed is not None:
            _cache.move_to_end(key)
            return typed
    typed = StudySpec.model_validate(dict(spec))
    with _lock:
        _cache[key] = typed
        while len(_cache) > CACHED_SPECS:
            _cache.popitem(last=False)
    return typed
