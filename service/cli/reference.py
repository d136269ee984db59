"""The command-line reference, docs/cli.md, written from the commands themselves:
`python -m service.cli.reference > docs/cli.md`.

Each command's usage line, arguments, options (with their defaults and ranges) and
examples are what its own ``--help`` prints, read from the typer app; `tests/docs`
fails when docs/cli.md is stale.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from service.cli import app

COMMAND = "python -m service.cli.reference > docs/cli.md"

INTRO = """\
`caviar` runs searches on this machine (`run`), serves the API, the dashboard and
workers (`serve`, `worker`), and drives a service over REST: everything the API does has
a command. `caviar COMMAND --help` prints what is below for one command.

Commands that talk to a service take `--api URL` (default: `CAVIAR_API_URL`, else
`http://127.0.0.1:8000`) and `--token SECRET` (default: `CAVIAR_TOKEN`; needed once the
service has tokens, see [api.md](api.md#tokens-and-scopes)). `--json` prints the
service's own JSON answer, for programs. Commands that open a database take `--db URL`
(default: `CAVIAR_DATABASE_URL`, else `./caviar.db`).

Exit codes: 0 when all went well; 1 when a study followed to its end did not complete
(`run`, `submit --wait`); 2 for a mistake the message names (a bad spec, an unknown
study, a refused token, a service out of reach). Errors are one line each on stderr,
never a traceback.
"""


def _walk(group: Any, words: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    """(words, command, context) of every command below `group`, in --help's order."""
    found = []
    parent = group.context_class(group, info_name=" ".join(("caviar", *words)))
    for name, command in group.commands.items():
        ctx = command.context_class(command, info_name=name, parent=parent)
        if hasattr(command, "commands"):
            found += _walk(command, (*words, name))
        else:
            found.append(((*words, name), command, ctx))
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def command_section(words: tuple[str, ...], command: Any, ctx: Any) -> str:
    """One command: what it does, its usage, a table of its parameters, its examples."""
    usage = command.get_usage(ctx).removeprefix("Usage: ")
    lines = [f"## caviar {' '.join(words)}", "", command.help or "", "", "```", usage, "```", ""]
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or "--help" in param.opts:
            continue
        names, text = record
        if param.param_type_name == "argument":
            names = names.split(" ", 1)
            names = " ".join([names[0].upper(), *names[1:]])
        rows.append(f"| `{_cell(names)}` | {_cell(text)} |")
    if rows:
        lines += ["| argument or option | meaning |", "| --- | --- |", *rows, ""]
    if command.epilog:
        label, *examples = command.epilog.splitlines()
        lines += [label, "", "```sh", *examples, "```", ""]
    return "\n".join(lines)


def render() -> str:
    """docs/cli.md, whole."""
    root = typer.main.get_command(app)
    commands = _walk(root)
    parts = [
        "# The command line",
        "",
        f"<!-- Written by `{COMMAND}` from service/cli; edit the commands' help, not this "
        "file (tests/docs/test_docs.py fails when it is stale). -->",
        "",
        INTRO,
        "| command | what it does |",
        "| --- | --- |",
    ]
    for words, command, _ in commands:
        anchor = "caviar-" + "-".join(words)
        summary = (command.help or "").split("\n\n")[0].replace("\n", " ")
        parts.append(f"| [`caviar {' '.join(words)}`](#{anchor}) | {_cell(summary)} |")
    parts.append("")
    parts += [command_section(words, command, ctx) for words, command, ctx in commands]
    return "\n".join(parts)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
