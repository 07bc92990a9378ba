"""`zmm backends`: every configured ComfyUI backend, its worker's state, GPU
memory, loaded model, jobs and last error; `drain` and `resume` one."""

from __future__ import annotations

from typing import Any

import typer

from zmm.cli.common import emit, emit_json, load_config, open_store, say, word

app = typer.Typer(help="Show and steer the ComfyUI backends (docs/backends.md).",
                  invoke_without_command=True)


@app.callback()
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the backends as JSON."),
) -> None:
    """Per backend: URL, state (up, down, starting, draining, no worker; managed and
    its restarts), GPU and free/total VRAM, loaded model, jobs running there and
    done in the last hour, last error."""
    if ctx.invoked_subcommand is not None:
        return
    from zmm.cli import render
    from zmm.views import roster

    settings = load_config()
    with open_store(settings) as store:
        entries = roster.overview(settings, store)
    if as_json:
        emit_json({"backends": [_public(entry) for entry in entries]})
        return
    render.table(None, ["name", "url", "state", "gpu", "vram free/total", "model", "running",
                        "done 1h", "failed 1h"], [_row(entry) for entry in entries])
    for entry in entries:
        if entry["last_error"]:
            say(f"{entry['name']}: last error at {entry['last_error_at']}: {entry['last_error']}")


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    """A backend in JSON: its state a word (`no_worker`)."""
    return dict(entry, state=word(entry["state"]))


def _row(entry: dict[str, Any]) -> list[Any]:
    state = entry["state"]
    if entry["draining"] and state != "draining":
        state += ", draining"
    if entry["managed"]:
        restarts = entry["restarts"]
        state += f" (managed, {restarts} restart{'' if restarts == 1 else 's'})"
    total, free = entry["vram_total_bytes"], entry["vram_free_bytes"]
    vram = f"{free / 1024**3:.1f}/{total / 1024**3:.1f} GB" if total is not None \
        and free is not None else ""
    return [entry["name"], entry["url"], state,
            "remote" if entry["gpu"] is None else entry["gpu"], vram, entry["loaded_model"],
            entry["jobs_running"], entry["jobs_succeeded_last_hour"],
            entry["jobs_failed_last_hour"]]


@app.command("drain")
def drain(name: str = typer.Argument(..., help="A backend's name: configured, or reported by a worker."),
          as_json: bool = typer.Option(False, "--json", help="Print the backend as JSON.")
          ) -> None:
    """Finish what runs on the backend and claim no more there until `resume`."""
    from zmm.views import roster

    settings = load_config()
    with open_store(settings) as store:
        entry = roster.set_draining(settings, store, name, True)
    if as_json:
        emit_json({"backend": _public(entry)})
        return
    running = entry["jobs_running"]
    emit(f"{entry['name']}: draining; {running} running job(s) finish there, nothing more is "
         f"claimed until `zmm backends resume {entry['name']}`")
    if entry["state"] == "no worker":
        say(f"note: no worker serves {entry['name']} now; the switch holds for the next one")


@app.command("resume")
def resume(name: str = typer.Argument(..., help="A backend's name: configured, or reported by a worker."),
           as_json: bool = typer.Option(False, "--json", help="Print the backend as JSON.")
           ) -> None:
    """Let the backend's worker claim jobs again after `drain`."""
    from zmm.views import roster

    settings = load_config()
    with open_store(settings) as store:
        entry = roster.set_draining(settings, store, name, False)
    if as_json:
        emit_json({"backend": _public(entry)})
        return
    emit(f"{entry['name']}: resumed; its worker claims jobs again")
