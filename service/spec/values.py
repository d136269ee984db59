"""Values no spec may hold anywhere: non-finite numbers, NUL characters, lone surrogates.

JSON has no Infinity or NaN (Python's parser takes them anyway, and they would be stored
as null); PostgreSQL's text and JSON cannot hold a NUL character; a lone UTF-16
surrogate (``"\\ud800"`` in JSON) is not a character at all, and cannot be written as
UTF-8. Each is refused up front, naming the field, rather than failing in the database
or the response.
"""

from __future__ import annotations

import math
import re
from typing import Any

from service.spec.messages import error_at

_SURROGATE = re.compile("[\ud800-\udfff]")
# One bad value is usually pasted many times; the first few say enough.
_MAX_ERRORS = 10


def value_errors(data: Any, *, prefix: str = "") -> list[dict[str, Any]]:
    """An error for each value or key in `data` that no spec may hold (the first few)."""
    errors: list[dict[str, Any]] = []
    stack: list[tuple[str, Any]] = [(prefix, data)]
    while stack and len(errors) < _MAX_ERRORS:
        loc, item = stack.pop()
        if isinstance(item, dict):
            for key, value in reversed(list(item.items())):
                where = f"{loc}.{key}" if loc else str(key)
                if isinstance(key, str) and (problem := text_problem(key)):
                    errors.append(error_at(loc or "body", f"a key {problem}", _safe(key)))
                    continue
                stack.append((where, value))
        elif isinstance(item, list):
            stack.extend((f"{loc}.{i}", v) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, str) and (problem := text_problem(item)):
            errors.append(error_at(loc, problem, _safe(item)))
        elif isinstance(item, float) and not math.isfinite(item):
            errors.append(error_at(loc, f"must be a finite number (got {item})", None))
    return errors


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "holds a NUL character (\\u0000), which cannot be stored"
    if _SURROGATE.search(text):
        return "holds a lone UTF-16 surrogate, which is not a character"
    return None


def _safe(text: str) -> str:
    """The text as it can be echoed in a response: the offending characters escaped."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).replace("\x00", "\\u0000")
