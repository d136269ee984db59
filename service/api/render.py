"""JSON bytes for responses: fast (orjson), never failing on NaN or infinities (null)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import orjson

from service.schemas import utc_iso

# Naive datetimes are UTC (SQLite returns them so), written with Z as every time the
# service writes (service.schemas.utc_iso); dict keys need not be strings.
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def finite(value: Any) -> Any:
    """Replace NaN and infinities by None, deep: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_iso(value)
    return str(value)


def json_bytes(content: Any) -> bytes:
    """`content` as compact UTF-8 JSON, NaN and infinities as null.

    orjson is several times faster than json and writes non-finite floats as null by
    itself; what it refuses (an integer past 64 bits, which a spec may hold) goes the
    slow, general way.
    """
    try:
        return orjson.dumps(content, option=_OPTIONS)
    except TypeError:
        text = json.dumps(
            finite(content),
            ensure_ascii=False,
            allow_nan=False,
            separators=(",", ":"),
            default=_default,
        )
        return text.encode("utf-8")
