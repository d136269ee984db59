"""The spec's error messages: pydantic's errors and ours as ``loc: msg`` naming the field.

Every problem is a dict ``{"loc": "space.learning_rate.low", "msg": "must be > 0 for
scale log (got 0)", "input": 0}``: the dotted path of the field, a message that says the
rule and echoes the value, and the value itself (JSON-able, for the API to send as is).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from service.search.distributions import (
    DISTRIBUTION_TYPES,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
    show,
)
from service.spec.schema import (
    DatasetSpec,
    ExecutionSpec,
    ObjectiveSpec,
    PruningSpec,
    StrategySpec,
    StudySpec,
)
from trainer.config import TrainConfig

_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w]*(?:\.[\w]+)*): (.+)$", re.DOTALL)
_COMPARE = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}
_SPEC_FIELDS = sorted(
    {
        f
        for m in (
            StudySpec,
            DatasetSpec,
            StrategySpec,
            ObjectiveSpec,
            ExecutionSpec,
            PruningSpec,
            FloatDistribution,
            IntDistribution,
            CategoricalDistribution,
            LayersDistribution,
        )
        for f in m.model_fields
    }
)


class SpecError(Exception):
    """A spec is invalid: `errors` lists each problem with its field path and input."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__(
            "\n".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
        )


def error_at(loc: str, msg: str, value: Any) -> dict[str, Any]:
    """One problem: at `loc`, saying `msg`, about `value` (kept as is when JSON-able)."""
    return {"loc": loc, "msg": msg, "input": _jsonable(value)}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return repr(value)


def kind_of(value: Any) -> str:
    """What `value` is, in a message's words: "a list", "a string", "nothing", "int"..."""
    return {list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _join(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc)


# The model's fields by the names other tools and papers give them: a name no spelling is
# near (dropout for keep_prob, weight_decay for l2) still finds its field, with what
# differs. Only offered where the field is one of those known at that place.
ALIASES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        ("dropout", "dropout_rate", "drop_rate", "drop_prob"),
        ("keep_prob", "the share of hidden units kept, 1 - dropout; 1.0 is off"),
    ),
    **dict.fromkeys(("lr", "eta", "alpha", "step_size"), ("learning_rate", "")),
    **dict.fromkeys(
        ("weight_decay", "lambda", "lambd", "l2_lambda", "l2_reg", "reg", "regularization"),
        ("l2", "the L2 penalty lambda"),
    ),
    **dict.fromkeys(("momentum", "beta"), ("beta1", "momentum's and Adam's first-moment average")),
    **dict.fromkeys(
        ("hidden_units", "units", "hidden_size", "n_hidden", "width", "neurons"),
        ("hidden_layers", "a list of widths: space path hidden_layers.0 is the first's"),
    ),
    **dict.fromkeys(
        ("layers", "n_layers", "num_layers", "depth"),
        ("hidden_layers", "searched by {type: layers}: the depth and each width"),
    ),
    **dict.fromkeys(("batchnorm", "bn", "use_batch_norm"), ("batch_norm", "")),
    **dict.fromkeys(("mini_batch_size", "minibatch_size", "batch"), ("batch_size", "")),
    **dict.fromkeys(("num_epochs", "n_epochs", "max_epochs", "epoch"), ("epochs", "")),
    **dict.fromkeys(("decay", "lr_schedule", "schedule"), ("lr_decay", "")),
    **dict.fromkeys(("initialization", "initializer", "weight_init"), ("init", "")),
    "eps": ("epsilon", ""),
}


def suggest(word: str, known: Sequence[str]) -> str:
    """ "; did you mean 'x'?" for the one of `known` closest to `word` (or that other tools
    call `word`), else nothing."""
    alias = ALIASES.get(word.lower().replace("-", "_"))
    if alias is not None and alias[0] in known:
        field, note = alias
        return f"; did you mean {field!r}?" + (f" ({note})" if note else "")
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def from_validation(
    exc: ValidationError, *, known: Sequence[str] = _SPEC_FIELDS
) -> list[dict[str, Any]]:
    """Pydantic's errors as ours: dotted locs, messages that say the rule and the value.

    `known` are the field names an unknown field is compared with for a suggestion.
    """
    out = []
    for e in exc.errors(include_url=False):
        loc = list(e["loc"])
        if len(loc) >= 3 and loc[0] == "space" and loc[2] in DISTRIBUTION_TYPES:
            del loc[2]  # the discriminator's tag is not a field the user wrote
        msg, value = _message(
            e, loc, known=list(TrainConfig.model_fields) if loc[:1] == ["model"] else known
        )
        match = _FIELD_PREFIX.match(msg)
        if match and e["type"] in ("value_error", "assertion_error"):
            for part in match.group(1).split("."):
                loc.append(part)
                value = value.get(part) if isinstance(value, Mapping) else value
            msg = match.group(2)
        elif "(got" not in msg and e["type"] not in ("missing", "union_tag_not_found"):
            msg = f"{msg} (got {show(value)})"
        out.append(error_at(_join(loc), msg, value))
    return out


def _message(e: Any, loc: list[Any], *, known: Sequence[str]) -> tuple[str, Any]:
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    if kind == "value_error":
        return str(ctx.get("error", e["msg"])), value
    if kind in _COMPARE:
        op, key = _COMPARE[kind]
        return f"must be {op} {show(ctx[key])}", value
    if kind == "missing":
        return "required", value
    if kind == "extra_forbidden":
        return "unknown field" + suggest(str(loc[-1]), known), value
    if kind == "literal_error":
        return f"must be {ctx['expected']}", value
    if kind == "union_tag_not_found":
        loc.append("type")
        return f"required, one of {', '.join(DISTRIBUTION_TYPES)}", None
    if kind == "union_tag_invalid":
        loc.append("type")
        tag = ctx.get("tag")
        return (
            f"must be one of {', '.join(DISTRIBUTION_TYPES)}"
            f"{suggest(str(tag), DISTRIBUTION_TYPES)} (got {show(tag)})",
            tag,
        )
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return f"must be a mapping (got {kind_of(value)}: {show(value)})", value
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer", value
    if kind in ("float_parsing", "float_type"):
        return "must be a number", value
    if kind == "finite_number":
        return "must be a finite number", value
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false", value
    if kind in ("string_too_short",):
        return "must not be empty", value
    if kind in ("list_type",):
        return "must be a list", value
    return str(e["msg"]), value


def trial_error(
    spec: StudySpec, i: int, params: Mapping[str, Any], field: str, msg: str, value: Any
) -> dict[str, Any]:
    """An error of one sampled trial, at the space path it is about when there is one."""
    name = field.split(".")[0]
    path = field if field in spec.space else name if name in spec.space else None
    loc = f"space.{path}" if path else "space"
    return error_at(loc, f"trial {i} {json.dumps(params)}: {field}: {msg}", value)
