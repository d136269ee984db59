"""The one spec loader: every form of input, and text refused the same way everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli import app
from service.spec import MAX_SPEC_DEPTH, MAX_SPEC_VALUES, SpecError, load_spec_data
from tests.service.spec.examples import REFERENCE_EXAMPLE, assert_refused_at, base, parse


@pytest.mark.parametrize("form", ["yaml", "json", "bytes", "dict", "spec"])
def test_every_form_of_input_gives_the_same_spec(form: str) -> None:
    expected = parse(REFERENCE_EXAMPLE)
    data: Any = {
        "yaml": REFERENCE_EXAMPLE,
        "json": json.dumps(base()),
        "bytes": REFERENCE_EXAMPLE.encode(),
        "dict": base(),
        "spec": expected,
    }[form]
    assert parse(data) == expected


INVALID_TEXT: list[tuple[str, dict[str, Any] | str, str, str]] = [
    # (id, spec, loc that must be named, text the message must contain)
    ("a list", "[1, 2, 3]", "", "mapping"),
    ("not YAML", "name: [unclosed", "", "YAML"),
    ("a key twice", "name: a\nname: b\ndataset: {name: moons}\n", "", "twice"),
    ("not UTF-8", "name: caf\xe9".encode("latin-1"), "", "UTF-8"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(
    ("spec", "loc", "text"), [c[1:] for c in INVALID_TEXT], ids=[c[0] for c in INVALID_TEXT]
)
def test_invalid_text_raises_spec_error(spec: Any, loc: str, text: str) -> None:
    assert_refused_at(spec, loc, text)


# --- the text itself -------------------------------------------------------------------


def refusal(text: str | bytes, **kw: Any) -> str:
    """The one message `load_spec_data` refuses `text` with."""
    with pytest.raises(SpecError) as info:
        load_spec_data(text, **kw)
    (error,) = info.value.errors
    assert error["loc"] == "" and error["input"] is None
    return str(error["msg"])


def test_a_key_given_twice_is_refused_naming_its_line_at_any_depth() -> None:
    top = "name: a\ndataset: {name: moons}\nname: b\n"
    assert refusal(top) == "not valid YAML or JSON (line 3, column 1): key 'name' appears twice"
    nested = "name: a\nspace:\n  lr: {type: float, low: 0.1, high: 1, low: 0.2}\n"
    assert "(line 3, column 40): key 'low' appears twice" in refusal(nested)


def test_a_key_given_twice_in_json_is_refused_too() -> None:
    text = '{"name": "a", "dataset": {"name": "moons", "name": "circles"}}'
    assert refusal(text, json_only=True) == "not valid JSON: key 'name' appears twice"
    # Read as either, the YAML parser (JSON is YAML) names the line of the second key.
    assert "(line 1, column 44): key 'name' appears twice" in refusal(text)


def test_a_merged_key_given_again_overrides_the_merge() -> None:
    text = "defaults: &d {low: 0.1, high: 1}\nrange:\n  <<: *d\n  high: 2\n"
    assert load_spec_data(text) == {
        "defaults": {"low": 0.1, "high": 1},
        "range": {"low": 0.1, "high": 2},
    }


def test_a_syntax_error_names_its_line_and_column() -> None:
    assert refusal("name: x\nspace: {lr: [1, 2}\n").startswith(
        "not valid YAML or JSON (line 2, column 18): "
    )
    assert refusal('{"name": }', json_only=True) == (
        "not valid JSON (line 1, column 10): Expecting value"
    )
    # A bracket never closed: where it opened, in words (it was "(line 1, column 16):
    # expected ',' or ']', but got '<stream end>'", PyYAML's, at the end of the text).
    assert refusal("name: [unclosed") == (
        "not valid YAML or JSON (line 1, column 7): this [ is never closed by a ]"
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("name: x\ndataset: {name: moons\n", "(line 2, column 10): this { is never closed by a }"),
        ("name: 'x\n", "(line 1, column 7): this quote is never closed"),
        ("name: x\ndataset:\n  name: moons\n bad: 1\n", "(line 4, column 2): this line's inden"),
        ("name x\nfoo: 1\n", "(line 2, column 4): a colon cannot start a value here"),
        ("\tname: x\n", "(line 1, column 1): a tab: YAML is indented with spaces"),
    ],
)
def test_a_yaml_syntax_error_is_said_in_words_where_it_is(text: str, said: str) -> None:
    """PyYAML's own words ("mapping values are not allowed here") reached the user."""
    assert refusal(text).startswith(f"not valid YAML or JSON {said}")


def test_yaml_is_read_unless_only_json_is() -> None:
    assert load_spec_data("name: x\n") == {"name": "x"}
    assert refusal("name: x\n", json_only=True).startswith("not valid JSON (line 1, column 1)")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("? [1, 2]\n: x\n", "a key must be a scalar"),
        ("- 1\n- 2\n", "a spec must be a mapping (got a list)"),
        ('"just a string"', "a spec must be a mapping (got a string)"),
        ("", "a spec must be a mapping (got nothing)"),
        ("[" * 50_000 + "]" * 50_000, f"nested deeper than {MAX_SPEC_DEPTH} levels"),
        ('{"a": ' * 40 + "1" + "}" * 40, f"nested deeper than {MAX_SPEC_DEPTH} levels"),
        ('{"pad": [' + ",".join(["8"] * 150_000) + "]}", f"more than {MAX_SPEC_VALUES} values"),
        (b"name: caf\xe9", "a spec must be UTF-8 text"),
    ],
    ids=["list key", "list", "string", "empty", "deep", "deep object", "huge", "latin-1"],
)
def test_text_that_is_no_spec_is_refused_with_why(text: str | bytes, words: str) -> None:
    assert words in refusal(text)


# --- the same loader behind the CLI and the API ------------------------------------------

TWICE = "name: a\ndataset: {name: moons}\nname: b\n"


@pytest.fixture
def client(sqlite_url: str, settings_for: Any) -> Any:
    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as c:
        yield c


@pytest.mark.parametrize(
    ("suffix", "text"),
    [("yaml", TWICE), ("json", '{"name": "a", "dataset": {"name": "moons"}, "name": "b"}')],
)
def test_the_cli_and_the_api_refuse_a_key_given_twice_alike(
    client: Any, tmp_path: Path, suffix: str, text: str
) -> None:
    path = tmp_path / f"twice.{suffix}"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = refusal(text)
    assert f"{path}: {message}" in result.stderr
    r = client.post(
        "/api/specs/validate", content=text, headers={"content-type": "application/yaml"}
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"loc": "body", "msg": message, "input": None}]
