"""The one spec loader: YAML or JSON text to a mapping, and any spec to a checked StudySpec.

The API's body reader, the CLI's file reader and `parse_spec` all read text here, so a
spec gets the same errors wherever it is sent: a syntax error names its line and column,
a key given twice in one mapping is refused (YAML and JSON parsers would keep the last
one silently), and text nested too deep or holding too many values (YAML aliases that
expand a few lines into billions of nodes) is refused before the validator walks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from service.settings import Settings, get_settings
from service.spec.checks import check_spec, errors_past_schema
from service.spec.messages import SpecError, error_at, from_validation, kind_of
from service.spec.schema import StudySpec
from service.spec.values import value_errors

try:  # libyaml parses several times faster; the pure-Python parser is the fallback
    from yaml import CSafeLoader as _FastSafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _FastSafeLoader  # type: ignore[assignment]

# A spec is at most a few levels deep (space.hidden_layers.units.low) and holds at most
# a few thousand values; anything far beyond is an attack on the parser or the validator.
MAX_SPEC_DEPTH = 32
MAX_SPEC_VALUES = 100_000

_MAPPING_TAG = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictFastLoader(_FastSafeLoader):
    """A safe loader that refuses a key given twice instead of keeping the last silently."""


class _StrictLoader(yaml.SafeLoader):
    """The same in pure Python: slower, but its errors point where the text goes wrong."""


def _construct_mapping(
    loader: _StrictFastLoader | _StrictLoader, node: yaml.MappingNode
) -> dict[Any, Any]:
    # A key merged in with `<<` may be given again after it: that is how a merge is
    # overridden. Only the mapping's own keys must each appear once.
    own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)  # merged pairs first, then the mapping's own
    first_own = len(node.value) - own
    out: dict[Any, Any] = {}
    own_keys: set[Any] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, f"a key must be a scalar (got {kind_of(key)})", key_node.start_mark
            )
        if i >= first_own:
            if key in own_keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark
                )
            own_keys.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictFastLoader.add_constructor(_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor(_MAPPING_TAG, _construct_mapping)


class _DuplicateKey(ValueError):
    """A JSON object gives a key twice."""


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"key {key!r} appears twice")
        out[key] = value
    return out


def _refused(msg: str) -> SpecError:
    """An error about the text as a whole, not one field: at loc ""."""
    return SpecError([error_at("", msg, None)])


def _syntax_error(what: str, line: int | None, column: int | None, problem: str) -> SpecError:
    where = f" (line {line}, column {column})" if line is not None else ""
    return _refused(f"not valid {what}{where}: {problem}")


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except json.JSONDecodeError as exc:
        raise _syntax_error("JSON", exc.lineno, exc.colno, exc.msg) from None
    except _DuplicateKey as exc:
        raise _syntax_error("JSON", None, None, str(exc)) from None


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictFastLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as fast_error:
        error = fast_error
    # libyaml marks the end of the text a line past it; the slow parser names the place.
    try:
        yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        error = exc
    what = "YAML or JSON"  # read last, as JSON is YAML too: its errors speak for both
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark, problem = _plain_problem(error)
        raise _syntax_error(what, mark.line + 1, mark.column + 1, problem)
    raise _syntax_error(what, None, None, " ".join(str(error).split()))


_CLOSERS = {"]": "[", "}": "{"}


def _plain_problem(error: yaml.MarkedYAMLError) -> tuple[Any, str]:
    """Where a YAML syntax error is and what it is, in a person's words, not PyYAML's.

    A bracket or quote never closed is placed where it opened (PyYAML names the end of
    the text); problems not known here keep PyYAML's words.
    """
    problem = " ".join(str(error.problem or error.context or "").split())
    mark = error.problem_mark
    assert mark is not None  # the caller reads only errors that have one
    opened = error.context_mark or mark
    flow = re.fullmatch(r"expected ',' or '([\]}])', but got (.+)", problem)
    # At the end of the text, or on a later line than the bracket: most likely never closed.
    if flow and (flow[2] == "'<stream end>'" or opened.line != mark.line):
        return opened, f"this {_CLOSERS[flow[1]]} is never closed by a {flow[1]}"
    if flow:
        return mark, f"a comma or {flow[1]} must come before {flow[2]}"
    if problem == "found unexpected end of stream" and "quoted" in str(error.context):
        return opened, "this quote is never closed"
    if problem.startswith("expected <block end>"):
        return mark, "this line's indentation matches no line above it"
    if problem == "mapping values are not allowed here":
        return mark, (
            "a colon cannot start a value here: a key above may lack its colon, or a "
            "value holding ': ' needs quotes"
        )
    if problem == "could not find expected ':'":
        return mark, "a key must be followed by a colon"
    if problem.startswith("found character '\\t'"):  # PyYAML writes the tab escaped
        return mark, "a tab: YAML is indented with spaces"
    return mark, problem


def _parse(text: str, *, json_only: bool) -> Any:
    if json_only:
        return _parse_json(text)
    try:  # JSON's parser is the faster; text it refuses may still be YAML
        return _parse_json(text)
    except SpecError:
        return _parse_yaml(text)


def _shape_problem(value: Any, *, max_depth: int, max_values: int) -> str | None:
    """Why `value` is too deep or too big to validate, or None.

    Iterative, so no recursion to exhaust; it stops at `max_values`, so YAML aliases that
    expand a few lines into billions of nodes cost no more than `max_values` steps.
    """
    stack = [(value, 1)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_values:
            return f"holds more than {max_values} values"
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"nested deeper than {max_depth} levels"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def load_spec_data(text: str | bytes, *, json_only: bool = False) -> dict[str, Any]:
    """Spec text as a mapping, unchecked; `SpecError` (at loc "") if it is not one.

    The text is JSON or YAML, whichever it is (only JSON if `json_only`). Refused: text
    that is not UTF-8, a syntax error (naming its line and column), a key given twice in
    one mapping, anything but a mapping at the top, more than `MAX_SPEC_DEPTH` levels of
    nesting and more than `MAX_SPEC_VALUES` values.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _refused(f"a spec must be UTF-8 text ({exc})") from None
    try:
        data = _parse(text, json_only=json_only)
    except RecursionError:
        raise _refused(f"nested deeper than {MAX_SPEC_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise _refused(f"a spec must be a mapping (got {kind_of(data)})")
    problem = _shape_problem(data, max_depth=MAX_SPEC_DEPTH, max_values=MAX_SPEC_VALUES)
    if problem:
        raise _refused(problem)
    return data


def parse_spec(
    data: Mapping[str, Any] | StudySpec | str | bytes,
    *,
    settings: Settings | None = None,
    check_trials: bool = True,
) -> StudySpec:
    """Validate a spec completely and return it; raise `SpecError` listing every problem.

    `data` is a dict, or YAML or JSON text (read by `load_spec_data`). Checked: values
    no spec may hold (non-finite numbers, NUL characters, lone surrogates), the schema
    (unknown fields rejected), the caps of `settings`, that every space path exists
    in TrainConfig and its distribution fits the field, that both ends of every range and
    every choice make a valid config, and (`check_trials`) that every trial of the first
    round does. Blocks the schema accepts are checked even when others are refused, so
    every mistake is reported in one pass.
    """
    settings = settings or get_settings()
    if isinstance(data, StudySpec):
        data = data.to_json()
    elif isinstance(data, str | bytes):
        data = load_spec_data(data)
    if not isinstance(data, Mapping):
        raise _refused(f"a spec must be a mapping (got {kind_of(data)})")
    if errors := value_errors(dict(data)):
        raise SpecError(errors)
    try:
        spec = StudySpec.model_validate(dict(data))
    except ValidationError as exc:
        # One pass: the checks past the schema still run on the blocks that did parse.
        errors = from_validation(exc) + errors_past_schema(data, exc, settings=settings)
        raise SpecError(in_spec_order(errors)) from None
    check_spec(spec, settings=settings, check_trials=check_trials)
    return spec


def in_spec_order(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`errors` in the order of the blocks they are about (name, dataset, model, space...)."""
    order = {block: i for i, block in enumerate(StudySpec.model_fields)}
    return sorted(errors, key=lambda e: order.get(str(e["loc"]).split(".")[0], len(order)))
