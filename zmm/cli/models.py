"""`zmm models`: list, load and unload models of ComfyUI and Ollama."""

from __future__ import annotations

from typing import Any, Optional

import typer

from zmm.cli.common import emit, emit_json, load_config

app = typer.Typer(help="Image checkpoints (ComfyUI) and LLMs (Ollama).", no_args_is_help=True)


def _clients(settings):
    from zmm.backends.comfy import ComfyClient
    from zmm.backends.ollama import OllamaClient

    comfy = ComfyClient(settings.get("comfyui.url"), timeout=10)
    ollama = OllamaClient(settings.get("ollama.url"), timeout=10) if settings.get("ollama.enabled") else None
    return comfy, ollama


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="Print models as JSON.")) -> None:
    """Checkpoints on ComfyUI and LLMs on Ollama, which are loaded, and VRAM needs."""
    from zmm.backends import model_control
    from zmm.cli import render
    from zmm.cli.common import say

    settings = load_config()
    comfy, ollama = _clients(settings)
    data = model_control.listing(settings, comfy, ollama)
    if as_json:
        emit_json(data)
        return
    for error in data["errors"]:
        say(f"warning: {error}")
    rows = [["image", m["name"], "?", f"{m['vram_need_bytes'] / 1024**3:g}"]
            for m in data["image"]]
    rows += [["llm", m["name"], "yes" if m["loaded"] else "no",
              f"{m['size_vram_bytes'] / 1024**3:.1f}" if m["loaded"] else ""] for m in data["llm"]]
    render.table(None, ["kind", "name", "loaded", "VRAM GB"], rows)


@app.command("load")
def load(
    name: str = typer.Argument(..., help="An Ollama model, e.g. llama3.2"),
    keep_alive: Optional[str] = typer.Option(None, "--keep-alive", help="e.g. 10m, 1h, -1 (forever)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the load."),
    as_json: bool = typer.Option(False, "--json", help="Print the loaded model as JSON."),
) -> None:
    """Load an Ollama model into memory (ComfyUI loads checkpoints when a job runs)."""
    from zmm.backends import model_control

    settings = load_config()
    _, ollama = _clients(settings)
    if ollama is None:
        from zmm.errors import InvalidInput

        raise InvalidInput("name", "an Ollama model, but Ollama is disabled in config (ollama.enabled)")
    keep = keep_alive or settings.get("ollama.reload_keep_alive")
    model = model_control.load_llm(ollama, name, keep, timeout)
    if as_json:
        emit_json({"model": model})
        return
    emit(model_control.loaded_line(model))


@app.command("unload")
def unload(
    name: Optional[str] = typer.Argument(None, help="An Ollama model to unload."),
    unload_all: bool = typer.Option(False, "--all", help="Every loaded model."),
    llm: bool = typer.Option(False, "--llm", help="With --all: only Ollama's models."),
    image: bool = typer.Option(False, "--image", help="With --all: only ComfyUI's models."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for memory to be freed."),
    as_json: bool = typer.Option(False, "--json", help="Print what was unloaded as JSON."),
) -> None:
    """Unload models and verify the effect (gone from /api/ps, VRAM freed)."""
    from zmm.backends import gpu, model_control
    from zmm.errors import InvalidInput

    settings = load_config()
    comfy, ollama = _clients(settings)
    if (name is None) == (not unload_all):
        raise InvalidInput("name", "give a model NAME or --all")
    do_llm, do_image = model_control.check_scope(llm, image) if unload_all else (True, False)
    lines: list[str] = []
    data: dict[str, Any] = {"llm": None, "image": None}
    if do_llm and ollama is not None:
        names = [name] if name else [m.name for m in ollama.ps()]
        data["llm"] = model_control.unload_llms(ollama, names, timeout, gpu.free_bytes) \
            if names else {"models": []}
        lines += model_control.unload_lines(data["llm"]) if names else ["no LLM loaded"]
    if do_image:
        data["image"] = model_control.unload_image(comfy, timeout, gpu.free_bytes)
        lines += model_control.image_lines(data["image"])
    if as_json:
        emit_json(data)
        return
    for line in lines:
        emit(line)
