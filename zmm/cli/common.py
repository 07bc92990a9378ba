"""What every command shares: the error boundary (one `error:` line and the
registry's exit code), loading settings, opening the spool, and writing data.

Data goes to stdout (JSON with `--json`); messages and errors go to stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from click import exceptions as click_errors  # typer < 0.26 (pyproject.toml) runs on click
from typer.core import TyperGroup

from zmm.errors import USAGE, ZmmError


class ZmmGroup(TyperGroup):
    """Runs the app non-standalone so that every failure, click's usage errors
    included, is reported as one line with its documented exit code.

    Subcommands named in `lazy` (name -> (module under zmm.cli, command name or
    None for the module's whole app)) are imported the first time they are
    looked up, so a command pays only for its own module."""

    lazy: dict[str, tuple[str, str | None]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(name for name in self.lazy if name not in self.commands)]

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.commands and name in self.lazy:
            module, command = self.lazy[name]
            group = typer.main.get_group(importlib.import_module(f"zmm.cli.{module}").app)
            loaded = group.commands[command] if command else group
            loaded.name = name
            self.add_command(loaded, name)
        return self.commands.get(name)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.lazy:  # a typo: "did you mean" needs every name
            for name in self.lazy:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name or "zmm",
                                complete_var=complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except ZmmError as exc:
            report(exc)
            code = exc.exit_code
        except click_errors.NoArgsIsHelpError as exc:
            # Building the error rendered the help: rich help is already printed
            # (to stdout), plain help is the message.
            if exc.format_message().strip():
                typer.echo(exc.format_message())
            code = USAGE
        except click_errors.UsageError as exc:
            if getattr(exc, "possibilities", None):
                # typer words a suggestion into the message and click >= 8.4 adds its
                # own through format_message(): keep one.
                exc.message = exc.message.partition(" Did you mean")[0]  # type: ignore[misc]
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            typer.echo(f"error: {exc.format_message()}{where}", err=True)
            code = USAGE
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except click_errors.Abort:
            typer.echo("interrupted", err=True)
            code = 130
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def subcommands(command: Any) -> dict[str, Any]:
    """A click command's subcommands by name, lazy ones loaded; {} for a leaf."""
    if not hasattr(command, "list_commands"):
        return {}
    ctx = typer.Context(command)
    return {name: command.get_command(ctx, name) for name in command.list_commands(ctx)}


def report(exc: ZmmError) -> None:
    from zmm.secrets import scrub

    typer.echo(f"error: {scrub(exc.message)}", err=True)
    if exc.hint:
        typer.echo(f"hint: {scrub(exc.hint)}", err=True)


def load_config(**flags: Any):
    """Settings with command-line flags as the top layer (`None` = not given)."""
    from zmm import config

    settings = config.load()
    for dotted, value in flags.items():
        if value is not None:
            settings.override(dotted.replace("__", "."), value)
    return settings


@contextlib.contextmanager
def open_store(settings, *, read_only: bool = False) -> Iterator[Any]:
    """The spool; `read_only` for commands that only read it (they then work on a
    full disk and on a spool they may not write)."""
    from zmm.store import Store

    store = Store(settings.spool_path, busy_timeout_ms=settings.get("spool.busy_timeout_ms"),
                  assets_root=settings.assets_dir, read_only=read_only)
    try:
        yield store
    finally:
        store.close()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(line: str) -> None:
    """A message for the person at the terminal (stderr)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
