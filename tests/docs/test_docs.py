"""docs/ is current, complete and self-contained: the references match the code they are
written from, every field says what it means, every spec shown is valid, every link
stays in the repository, and /docs and /redoc ask no other host for anything."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel
from typer.testing import CliRunner

from service.cli import app as cli
from service.cli import reference as cli_reference
from service.spec import reference as spec_reference
from service.spec.schema import StudySpec
from tests.conftest import ROOT

DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize(
    ("page", "module"),
    [("spec.md", spec_reference), ("cli.md", cli_reference)],
)
def test_the_generated_references_are_current(page: str, module: Any) -> None:
    written = (DOCS / page).read_text(encoding="utf-8")
    assert written == module.render(), f"docs/{page} is stale: run `{module.COMMAND}`"


def test_every_field_of_every_block_says_what_it_means() -> None:
    models: list[type[BaseModel]] = [StudySpec, *(model for _, model in spec_reference.BLOCKS)]
    models += list(spec_reference.DISTRIBUTION_FIELDS)
    missing = []
    for model in models:
        for name, field in model.model_fields.items():
            try:
                assert spec_reference.meaning(model, name, field).strip()
            except KeyError:
                missing.append(f"{model.__name__}.{name}")
    assert missing == [], f"fields with no description: {missing}"
    for model, words in spec_reference.DISTRIBUTION_FIELDS.items():  # none stale
        assert set(words) == set(model.model_fields), model.__name__
    text = spec_reference.render()
    for name in StudySpec.model_fields:
        assert f"## {name}" in text or name == "name", name


def spec_blocks(page: Path) -> list[str]:
    """The ```yaml blocks of a page that are whole specs (a name and a data set)."""
    blocks = re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if {"name", "dataset"} <= set(yaml.safe_load(b) or {})]


def test_every_spec_in_the_docs_and_the_examples_is_valid(tmp_path: Path) -> None:
    shown = [(page, block) for page in PAGES for block in spec_blocks(page)]
    assert len(shown) >= 1
    for i, (page, block) in enumerate(shown):
        (tmp_path / f"{page.stem}-{i}.yaml").write_text(block, encoding="utf-8")
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert len(examples) >= 6
    result = CliRunner().invoke(cli, ["validate", str(tmp_path), str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": ok (") == len(shown) + len(examples)


def test_the_tutorial_uses_every_example_and_the_examples_say_what_they_show() -> None:
    tutorial = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    for example in EXAMPLES.glob("*.yaml"):
        assert f"examples/{example.name}" in tutorial, example.name
        assert example.read_text(encoding="utf-8").startswith("#"), example.name


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


# The team's design file and folder, which users do not have (spelled in parts so that a
# search of the repository for references to them finds none here).
OUTSIDE = ("DESIGN" + ".md", "../" + "shared")


def test_every_link_of_the_docs_stays_in_the_repository() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert not any(name in text for name in OUTSIDE), page.name
        for target in LINK.findall(text):
            assert not target.startswith(("http:", "https:", "//")) or re.match(
                r"https?://(127\.0\.0\.1|localhost)[:/]", target
            ), f"{page.name} points outside the repository: {target}"
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists() and ROOT in linked.parents, f"{page.name}: {target}"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.name}: {target}"
    for source in (ROOT / "service/spec/schema.py", ROOT / "trainer/config.py"):
        assert OUTSIDE[0] not in source.read_text(encoding="utf-8"), source.name


def test_the_docs_pages_load_their_files_from_the_service(
    sqlite_url: str, settings_for: Any
) -> None:
    from service.app import create_app

    with TestClient(create_app(settings_for(sqlite_url, migrate_on_start=False))) as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page).text
            assert not re.search(r"(src|href)=\"?(https?:)?//", html), (page, html)
            for url in re.findall(r"(?:src|href)=\"([^\"]+)\"", html):
                assert client.get(url).status_code == 200, (page, url)
        redoc = client.get("/static/vendor/docs/redoc.standalone.js").text
        assert "cdn.redoc.ly" not in redoc and "fonts.googleapis" not in redoc
        assert client.get("/static/vendor/docs/other.js").status_code == 404
