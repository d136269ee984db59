"""The `caviar` command line: run, serve, worker and validate here; submit, status, trials,
cancel and export a service's studies; continue, zoom, retry-failed, pause, resume, stop
and fork over REST; upload and list data sets; db upgrade.

`common` holds the app and what every command shares, `help` how --help reads; `local`
the commands that run here (with no server, or as one); `remote` those that submit and
read studies over REST; `actions` those that act on one study or trial; `datasets` the
uploads; `display` how studies are shown; `reference` writes docs/cli.md.
"""

from __future__ import annotations

# Importing the command modules registers their commands, in the order --help lists them.
# isort: off
from service.cli import local, remote  # noqa: F401
from service.cli import actions, datasets  # noqa: F401
from service.cli import lessons  # noqa: F401
from service.cli.common import app

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
