"""The `caviar` command line: run, serve, worker, submit, validate, status, trials, cancel,
export and db upgrade.

`common` holds the app and what every command shares; `local` the commands that run here
(with no server, or as one); `remote` those that talk to a service over REST; `display`
how studies are shown.
"""

from __future__ import annotations

from service.cli import local, remote  # noqa: F401  (importing them registers the commands)
from service.cli.common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
