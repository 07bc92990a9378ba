"""What every command shares: the error boundary (one `error:` line and the
registry's exit code), loading settings, opening the spool, and writing data.

Data goes to stdout (JSON with `--json`); messages and errors go to stderr.
Under `--json` stdout carries exactly one document whatever the exit code
(docs/json-output.md): a command hands its data to `emit_json`, and what it has
done so far to `partial`; the boundary prints the envelope once, at the end,
with the `error` object of whatever ended the command.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import typer
from click import exceptions as click_errors  # typer < 0.26 (pyproject.toml) runs on click
from typer.core import TyperGroup

from zmm.errors import CODE_WORDS, EXIT_CODES, INTERRUPTED, USAGE, ZmmError

SCHEMA = 2  # the version of the JSON contract (docs/json-output.md)


class Document:
    """The one JSON document of the running command: its data, registered as
    the command goes (`partial`) or at its end (`emit_json`). `active` only
    inside the boundary; outside it (a command called as a function),
    `emit_json` prints at once."""

    def __init__(self) -> None:
        self.active = self.emitted = False
        self.data: dict[str, Any] = {}

    def envelope(self, error: dict[str, Any] | None) -> dict[str, Any]:
        return envelope(self.data, error)


document = Document()


def envelope(data: dict[str, Any], error: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every JSON document zmm prints: the contract's version, `ok`, the
    command's data, and `error` (null, or what ended the command)."""
    own = {key: value for key, value in data.items() if key not in ("schema", "ok", "error")}
    return {"schema": SCHEMA, "ok": error is None, **own, "error": error}


def wants_json(args: Sequence[str]) -> bool:
    """`--json` among the arguments before a `--` (read from the words, so a
    usage error, which stops parsing, still answers in JSON); not with `--help`
    or `--version`, which print text and stop."""
    wanted = False
    for arg in args:
        if arg == "--":
            break
        if arg in ("--help", "-h", "--version"):
            return False
        wanted = wanted or arg == "--json"
    return wanted


def error_object(exit_code: int, message: str | None = None,
                 hint: str | None = None) -> dict[str, Any]:
    return {"code": CODE_WORDS.get(exit_code, "job_failed"), "exit_code": exit_code,
            "message": message or EXIT_CODES.get(exit_code, "failed"), "hint": hint}


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
        words = list(sys.argv[1:] if args is None else args)
        document.active, document.emitted, document.data = True, False, {}
        error: dict[str, Any] | None = None
        try:
            code, error = self._run(words, prog_name, complete_var, windows_expand_args, extra)
        finally:
            document.active = False
        if error is None and code:
            error = error_object(code)
        if wants_json(words) or document.emitted:
            sys.stdout.write(json.dumps(document.envelope(error), indent=2, default=str) + "\n")
            sys.stdout.flush()
        document.data = {}
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, words: list[str], prog_name: str | None, complete_var: str | None,
             windows_expand_args: bool, extra: dict[str, Any]
             ) -> tuple[int, dict[str, Any] | None]:
        """Run the command; (exit code, the JSON error object or None)."""
        try:
            code = super().main(args=words, prog_name=prog_name or "zmm",
                                complete_var=complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except ZmmError as exc:
            report(exc)
            return exc.exit_code, error_object(exc.exit_code, exc.message, exc.hint)
        except click_errors.NoArgsIsHelpError as exc:
            # Building the error rendered the help: rich help is already printed
            # (to stdout), plain help is the message.
            if exc.format_message().strip():
                typer.echo(exc.format_message())
            return USAGE, error_object(USAGE, "a command is needed")
        except click_errors.UsageError as exc:
            if getattr(exc, "possibilities", None):
                # typer words a suggestion into the message and click >= 8.4 adds its
                # own through format_message(): keep one.
                exc.message = exc.message.partition(" Did you mean")[0]  # type: ignore[misc]
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            typer.echo(f"error: {exc.format_message()}{where}", err=True)
            return USAGE, error_object(USAGE, exc.format_message(),
                                       f"see `{exc.ctx.command_path} --help`" if exc.ctx else None)
        except click_errors.ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            return exc.exit_code, error_object(exc.exit_code, exc.format_message())
        except click_errors.Abort:
            typer.echo("interrupted", err=True)
            return INTERRUPTED, error_object(INTERRUPTED, "interrupted")
        return (code if isinstance(code, int) else 0), None


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


def emit_json(data: dict[str, Any]) -> None:
    """The command's JSON data; the boundary prints it in the envelope (see
    `Document`), with the error of whatever ends the command after this."""
    if document.active:
        document.data.update(data)
        document.emitted = True
        return
    emit_json_now(data)


def emit_json_now(data: dict[str, Any]) -> None:
    """One document printed at once, for commands that print one per refresh
    (`zmm gpu status --watch --json`)."""
    sys.stdout.write(json.dumps(envelope(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def partial(**data: Any) -> None:
    """What the command has done so far (e.g. the jobs it queued), included in
    its JSON document should it end with an error."""
    document.data.update(data)


def word(value: str) -> str:
    """An enum value as JSON spells it: no spaces (`no worker` -> `no_worker`)."""
    return value.replace(" ", "_")


def emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def say(line: str) -> None:
    """A message for the person at the terminal (stderr)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def recorded_node_defs(settings: Any) -> Any:
    """A reader of the node definitions the spool records, merged over the
    backends (read once, when a workflow needs them; None when none are)."""
    return functools.cache(lambda: _recorded_node_defs(settings))


def _recorded_node_defs(settings: Any) -> dict[str, Any] | None:
    if not settings.spool_path.exists():
        return None
    with open_store(settings, read_only=True) as store:
        per_backend = store.backend_nodes(defs=True)
    merged: dict[str, Any] = {}
    for defs in per_backend.values():
        merged.update(defs)
    return merged or None
