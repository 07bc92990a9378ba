"""`zmm gpu status`: NVML's view of the GPU(s), with ComfyUI's as a second source."""

from __future__ import annotations

import time

import typer

from zmm.cli.common import emit_json, emit_json_now, load_config, report

app = typer.Typer(help="GPU memory, load and the processes holding it.", no_args_is_help=True)
GIB = 1024**3


@app.command("status")
def status(
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes."),
) -> None:
    """Per GPU: memory total/used/free, utilisation, temperature, power, and the
    processes holding memory (ComfyUI and Ollama marked). Exit 4 without NVML."""
    from zmm.backends import gpu
    from zmm.cli import render
    from zmm.errors import GpuUnavailable

    settings = load_config()
    while True:
        try:
            snap, problem = gpu.snapshot(), None
        except GpuUnavailable as exc:
            snap, problem = None, exc
        comfy = _comfy_devices(settings)
        if as_json:  # --watch: one document per refresh, each printed as it comes
            (emit_json_now if watch else emit_json)(
                {"nvml": _snapshot_json(snap), "nvml_error": problem.message if problem else None,
                 "comfyui": comfy})
        else:
            if problem:
                report(problem)
            if snap:
                render.table(None, ["gpu", "name", "used GB", "free GB", "total GB", "util", "temp",
                                    "power"], [_gpu_row(g) for g in snap.gpus])
                render.table(None, ["gpu", "pid", "process", "role", "GB"],
                             [[g.index, p.pid, p.name, p.role or "",
                               f"{p.used_bytes / GIB:.1f}" if p.used_bytes is not None else "?"]
                              for g in snap.gpus for p in g.processes])
            if comfy and comfy.get("devices"):
                render.table("ComfyUI /system_stats", ["device", "type", "free GB", "total GB"],
                             [[d.get("name"), d.get("type"), f"{d.get('vram_free', 0) / GIB:.1f}",
                               f"{d.get('vram_total', 0) / GIB:.1f}"] for d in comfy["devices"]])
        if not watch:
            break
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            break
    if problem:
        raise typer.Exit(problem.exit_code)


def _gpu_row(g) -> list:
    return [g.index, g.name, f"{g.used_bytes / GIB:.1f}", f"{g.free_bytes / GIB:.1f}",
            f"{g.total_bytes / GIB:.1f}", f"{g.utilization_pct}%" if g.utilization_pct is not None else "?",
            f"{g.temperature_c}C" if g.temperature_c is not None else "?",
            f"{g.power_w:.0f}W" if g.power_w is not None else "?"]


def _snapshot_json(snap):
    if snap is None:
        return None
    import dataclasses

    return dataclasses.asdict(snap)


def _comfy_devices(settings):
    """ComfyUI's /system_stats, if it answers quickly; None otherwise."""
    from zmm.backends.comfy import ComfyClient
    from zmm.errors import ZmmError

    client = ComfyClient(settings.get("comfyui.url"), timeout=2.0)
    try:
        stats = client.system_stats()
        return {"url": client.base_url, "devices": stats.get("devices", [])}
    except ZmmError:
        return None
    finally:
        client.close()
