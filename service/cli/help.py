"""How `--help` reads: usage lines as SPEC, [STUDY] or SPECS..., and no type after a flag.

Typer's own rendering wraps a required argument in braces (``caviar run {spec}``) and
prints a type after every option, so a flag reads ``--json <bool>`` as if it took a
value. The command and group classes here keep Typer's panels and fix those two things;
`CaviarTyper` makes every command of an app use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup


def usage_name(param: Any) -> str:
    """An argument as a usage line shows it: SPEC, [STUDY], SPECS..."""
    name = str(param.metavar or param.name or "").upper()
    if param.nargs != 1:
        name += "..."
    return name if param.required else f"[{name}]"


def _clean(params: list[Any]) -> list[Any]:
    for param in params:
        # A flag takes no value: an empty metavar leaves its type column blank.
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            pieces.append(usage_name(param))
        else:
            pieces.extend(param.get_usage_pieces(ctx))
    return pieces


class CaviarCommand(TyperCommand):
    """A command whose help has clean usage lines and no type after its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _clean(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class CaviarGroup(TyperGroup):
    """A group of commands (caviar, caviar db...) with the same clean help."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _clean(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*_usage_pieces(self, ctx), self.subcommand_metavar]


class CaviarTyper(typer.Typer):
    """A Typer app whose groups and commands all use the clean help above."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", CaviarGroup)
        super().__init__(**kwargs)

    def command(  # type: ignore[override]
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or CaviarCommand, **kwargs)
