"""The spec reference, docs/spec.md, written from the schema: `python -m service.spec.reference`.

Every block's table comes from its pydantic model (`service.spec.schema`, `TrainConfig`
for the model block, the distributions of `service.search.distributions`): each field's
type, default and range from its annotation and constraints, its meaning from its
``description``. The built-in data sets are loaded to say what they hold, and the caps
come from `Settings`. What the models cannot say - the distributions' fields have no
descriptions, the caps' meanings - is in the tables below, checked against the models
so that a new field without words fails `tests/docs`.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from service.search.distributions import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    LayersDistribution,
)
from service.settings import Settings
from service.spec import schema
from service.spec.schema import (
    BUILTIN_DATASETS,
    GENERATED_DATASETS,
    DatasetSpec,
    ExecutionSpec,
    ObjectiveSpec,
    PruningSpec,
    StrategySpec,
    StudySpec,
    TaskSpec,
)
from trainer.config import TrainConfig

COMMAND = "python -m service.spec.reference > docs/spec.md"

# The distributions' fields carry no descriptions (service/search stays lean): their words.
DISTRIBUTION_FIELDS: dict[type[BaseModel], dict[str, str]] = {
    FloatDistribution: {
        "type": "`float`",
        "low": "the smallest value; > 0 for scale log",
        "high": "the largest value, >= low; < 1 for scale one_minus_log",
        "scale": "where samples fall uniformly: linear in x, log in log10(x), one_minus_log "
        "in log10(1 - x)",
        "step": "linear only: values low, low + step, ..., high (high - low a whole number "
        "of steps); not set: any value",
    },
    IntDistribution: {
        "type": "`int` (may be left out inside `layers`)",
        "low": "the smallest value; >= 1 for scale log",
        "high": "the largest value, >= low",
        "scale": "linear, or log: each decade of values gets the same share of samples",
        "step": "linear only: values low, low + step, ..., high",
    },
    CategoricalDistribution: {
        "type": "`categorical`",
        "choices": "the values to choose from: any JSON values (numbers, strings, "
        "booleans, lists such as [20, 7, 5]), none twice",
    },
    LayersDistribution: {
        "type": "`layers` (only for `hidden_layers`)",
        "depth": "an int distribution of the number of hidden layers (low >= 1)",
        "units": "an int distribution of each layer's width (low >= 1), drawn per layer",
    },
}

# The settings that bound a spec: the service refuses a spec past one (CAVIAR_<NAME>).
CAPS = {
    "max_trials_per_study": "trials of one study, over all its rounds",
    "max_grid_size": "trials of a grid (grid_points per dimension, multiplied out)",
    "max_layers": "hidden layers of the model (hidden_layers, a layers depth)",
    "max_units": "units of one hidden layer",
    "max_epochs": "epochs of one trial",
    "max_samples": "n_samples of a generated data set",
    "max_spec_bytes": "size of the spec's text",
    "max_checkpoints_per_trial": "checkpoints one trial keeps: epochs / checkpoint_every",
}

BLOCKS: list[tuple[str, type[BaseModel]]] = [
    ("task", TaskSpec),
    ("dataset", DatasetSpec),
    ("model", TrainConfig),
    ("strategy", StrategySpec),
    ("objective", ObjectiveSpec),
    ("execution", ExecutionSpec),
    ("pruning", PruningSpec),
]
# Defaults a validator fills in rather than the field itself.
DERIVED_DEFAULTS: dict[tuple[type[BaseModel], str], str] = {
    (ObjectiveSpec, "direction"): "from `metric`"
}


# -- one field --------------------------------------------------------------------------


_FLIPPED = {"≥": "≤", ">": "<"}


def _bounds(metadata: list[Any]) -> str:
    """`0 < x ≤ 1`, `≥ 4`, `1 to 200 characters`: what the constraints allow."""
    lower: tuple[str, Any] | None = None
    upper: tuple[str, Any] | None = None
    lengths: list[int | None] = [None, None]
    for m in metadata:
        if isinstance(m, at.Ge):
            lower = ("≥", m.ge)
        elif isinstance(m, at.Gt):
            lower = (">", m.gt)
        elif isinstance(m, at.Le):
            upper = ("≤", m.le)
        elif isinstance(m, at.Lt):
            upper = ("<", m.lt)
        elif isinstance(m, at.MinLen):
            lengths[0] = m.min_length
        elif isinstance(m, at.MaxLen):
            lengths[1] = m.max_length
    if lengths[0] and lengths[1]:
        return f"{lengths[0]} to {lengths[1]} characters"
    if lengths[1]:
        return f"at most {lengths[1]} characters"
    if lengths[0]:
        return f"at least {lengths[0]} character{'s' * (lengths[0] > 1)}"
    if lower and upper:
        return f"{_number(lower[1])} {_FLIPPED[lower[0]]} x {upper[0]} {_number(upper[1])}"
    bound = lower or upper
    return f"{bound[0]} {_number(bound[1])}" if bound else ""


def _number(x: Any) -> str:
    if x == 2**63:
        return "2^63"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _inner(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Optional and Annotated, and Annotated's constraints."""
    metadata: list[Any] = []
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = get_args(annotation)
            for e in extra:
                metadata += e.metadata if isinstance(e, FieldInfo) else [e]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def type_text(annotation: Any) -> str:
    """A field's type in words: integer, number, one of `a`, `b`, list of integers..."""
    annotation, _ = _inner(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}s"
    if origin is dict:
        value = get_args(annotation)[1]
        return "mapping of path to distribution" if value is not Any else "mapping"
    if annotation is Any:
        return "JSON value"
    if inspect.isclass(annotation) and issubclass(annotation, Distribution):
        return f"{annotation.model_fields['type'].default} distribution"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return "block"
    return _NAMES.get(annotation, str(annotation))


def range_text(field: FieldInfo) -> str:
    text = _bounds(field.metadata)
    annotation, inner = _inner(field.annotation)
    if get_origin(annotation) is list:
        _, item = _inner(get_args(annotation)[0])
        if _bounds(item):
            text = f"each {_bounds(item)}"
    elif inner and not text:
        text = _bounds(inner)
    return text


def default_text(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if (model, name) in DERIVED_DEFAULTS:
        return DERIVED_DEFAULTS[(model, name)]
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "every default"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def meaning(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The field's description (or its words from DISTRIBUTION_FIELDS); KeyError if none."""
    text = field.description or DISTRIBUTION_FIELDS.get(model, {}).get(name)
    if not text:
        raise KeyError(f"{model.__name__}.{name} has no description")
    return text


def field_table(model: type[BaseModel]) -> str:
    rows = ["| field | type | default | range | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        kind = type_text(field.annotation)
        if model is StudySpec and name != "name":  # each block has a section of its own
            kind = f"[{kind}](#{name})"
        cells = (
            f"`{name}`",
            kind,
            default_text(model, name, field),
            range_text(field),
            meaning(model, name, field),
        )
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


# -- sections -----------------------------------------------------------------------------


def rst_to_markdown(text: str) -> str:
    """A docstring as Markdown: ``code`` becomes `code`, a ``::`` paragraph's block fenced."""
    out: list[str] = []
    pending = block = False
    for line in inspect.cleandoc(text).splitlines():
        if block:
            if line.startswith("    ") or not line.strip():
                out.append(line[4:])
                continue
            while out and not out[-1]:
                out.pop()
            out += ["```", ""]
            block = False
        if pending and line.startswith("    "):
            out += ["```yaml", line[4:]]
            pending, block = False, True
            continue
        if line.endswith("::"):
            line, pending = line[:-1], True
        out.append(re.sub(r"``([^`]+)``", r"`\1`", line))
    if block:
        while out and not out[-1]:
            out.pop()
        out.append("```")
    return "\n".join(out)


def _first_paragraph(model: type[Any]) -> str:
    return inspect.cleandoc(model.__doc__ or "").split("\n\n")[0].replace("\n", " ")


def datasets_table() -> str:
    """What each built-in data set holds, read from the data sets themselves."""
    from trainer.datasets import load_dataset

    rows = [
        "| name | kind | features | classes | examples |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in BUILTIN_DATASETS:
        generated = name in GENERATED_DATASETS
        data = load_dataset({"name": name, "n_samples": 100} if generated else {"name": name})
        examples = "n_samples" if generated else str(len(data.y_train) + len(data.y_dev))
        classes = str(data.n_classes)
        if name in ("spirals", "blobs"):
            classes += " (n_classes)"
        kind = "generated (n_samples, noise)" if generated else "shipped (trainer/data)"
        rows.append(f"| `{name}` | {kind} | {data.n_features} | {classes} | {examples} |")
    return "\n".join(rows)


def caps_table() -> str:
    rows = ["| setting | default | what it bounds |", "| --- | --- | --- |"]
    for name, text in CAPS.items():
        default = Settings.model_fields[name].default
        rows.append(f"| `CAVIAR_{name.upper()}` | {_number(default)} | {text} |")
    return "\n".join(rows)


def _space_section() -> str:
    doc = schema.__doc__ or ""
    paths = rst_to_markdown(doc[doc.index("Space paths and distributions") :])
    parts = ["## space", "", paths, ""]
    for model in DISTRIBUTION_FIELDS:
        kind = model.model_fields["type"].default
        parts += [f"### {kind}", "", rst_to_markdown(model.__doc__ or ""), ""]
        parts += [field_table(model), ""]
    return "\n".join(parts)


def render() -> str:
    """docs/spec.md, whole."""
    parts = [
        "# The search spec",
        "",
        f"<!-- Written by `{COMMAND}` from service/spec/schema.py, trainer/config.py and "
        "service/search/distributions.py; edit those, not this file "
        "(tests/docs/test_docs.py fails when it is stale). -->",
        "",
        "A spec is one YAML or JSON document: the body of `POST /api/studies`, the file "
        "`caviar run`, `caviar submit` and `caviar validate` read. It names a data set, a "
        "base model, a space of hyperparameters to search, a strategy, an objective, how "
        "to execute and how to prune. Only `name` and `dataset.name` are required; every "
        "other field has the default below. An unknown field is refused, with the name it "
        "probably meant. A spec may instead tune a function of your own: a `task` block "
        "names it, and takes the place of `dataset` and `model` (see [task](#task)).",
        "",
        "```yaml",
        "name: moons-adam",
        "dataset: {name: moons, n_samples: 1000, noise: 0.2}",
        "model: {hidden_layers: [20, 7, 5], optimizer: adam, epochs: 100}",
        "space:",
        "  learning_rate: {type: float, low: 1.0e-4, high: 1.0, scale: log}",
        "  beta1: {type: float, low: 0.8, high: 0.999, scale: one_minus_log}",
        "strategy: {type: random, trials: 24}",
        "objective: {metric: dev_accuracy, at: best}",
        "```",
        "",
        "## The top level",
        "",
        field_table(StudySpec),
        "",
    ]
    for title, model in BLOCKS:
        parts += [f"## {title}", "", _first_paragraph(model), "", field_table(model), ""]
        if model is TaskSpec:  # how the function is called: the rest of its docstring
            rest = inspect.cleandoc(TaskSpec.__doc__ or "").split("\n\n", 1)[1]
            parts += [rst_to_markdown(rest), ""]
        if model is DatasetSpec:
            parts += ["The built-in data sets:", "", datasets_table(), ""]
        if model is TrainConfig:
            parts += [_space_section()]
    parts += [
        "## Caps",
        "",
        "The service refuses a spec past one of its caps, naming the field; each is a "
        "setting (an environment variable) of the service:",
        "",
        caps_table(),
        "",
    ]
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
