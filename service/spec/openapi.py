"""The spec as one JSON Schema, every block typed in full: the body the API documents.

`StudySpec`'s own schema with its definitions inlined (an operation's body cannot point
into the document's components from here), the `model` block as `TrainConfig`'s fields,
the data set's name as a built-in or an upload's id, and space paths as model fields or
``<list field>.<index>``. What JSON Schema cannot say (a range's low under its high, a
distribution that fits its field, the caps) `service.spec.parse_spec` checks, 422.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from service.spec.schema import BUILTIN_DATASETS, FREE_PATH, UPLOAD_ID, StudySpec
from trainer.config import TrainConfig


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every ``#/$defs/`` reference replaced by what it names."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(dict(defs[ref.rsplit("/", 1)[1]]))
            return {k: inline(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


@cache
def spec_json_schema() -> dict[str, Any]:
    """The whole spec as JSON Schema, self-contained (no references)."""
    schema = _inlined(StudySpec.model_json_schema())
    props = schema["properties"]
    model = _inlined(TrainConfig.model_json_schema())
    model.pop("required", None)  # the block names only the fields it changes
    props["model"] = {**model, "description": props["model"]["description"], "default": {}}
    # The data set: required, and the model's fields, unless a task names an entrypoint.
    dataset = next(s for s in props["dataset"]["anyOf"] if s.get("type") == "object")
    dataset["properties"]["name"]["anyOf"] = [
        {"enum": list(BUILTIN_DATASETS)},
        {"pattern": f"^{UPLOAD_ID.pattern}$"},
    ]
    fields = "|".join(sorted(TrainConfig.model_fields))
    props["space"]["propertyNames"] = {
        "anyOf": [{"pattern": rf"^({fields})(\.[0-9]+)?$"}, {"pattern": f"^{FREE_PATH.pattern}$"}]
    }
    # direction is the metric's own when left out or null (a task's own metric needs one).
    props["objective"].pop("required", None)
    props["pruning"] = {"anyOf": [props["pruning"], {"type": "null"}]}  # null: no pruning
    for distribution in props["space"]["additionalProperties"]["oneOf"]:
        distribution["required"] = ["type", *distribution.get("required", [])]  # the tag
    return schema
