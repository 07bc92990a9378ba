"""Models on both tenants of the GPU: ComfyUI checkpoints and Ollama LLMs.
Listing, loading (Ollama) and unloading (Ollama keep_alive 0, ComfyUI /free),
each unload verified against /api/ps and free VRAM (NVML, else ComfyUI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zmm import families
from zmm.config import Config
from zmm.errors import BackendUnavailable, InvalidInput, ZmmError

GIB = 1024**3


def vram_need_gb(settings: Config, checkpoint: str) -> float:
    """The VRAM table's row for a model file: its [models] alias, else the
    family its name says; the "-fp8" row for an fp8 file where there is one."""
    table = settings.section("vram_gb")
    family = next((key for key, name in settings.section("models").items()
                   if name == checkpoint and key in table), None) or families.model_family(checkpoint)
    fp8 = f"{family}-fp8"
    return float(table.get(fp8 if "fp8" in checkpoint.lower() and fp8 in table else family, 0.0))


def listing(settings: Config, comfy: Any, ollama: Any | None) -> dict[str, Any]:
    result: dict[str, Any] = {"image": [], "llm": [], "errors": []}
    try:
        for name in comfy.checkpoints():
            result["image"].append({"name": name, "backend": "comfyui", "loaded": None,
                                    "vram_need_bytes": int(vram_need_gb(settings, name) * GIB)})
    except ZmmError as exc:
        result["errors"].append(exc.message)
    if ollama is not None:
        try:
            loaded = {m.name: m for m in ollama.ps()}
            for model in ollama.tags():
                live = loaded.get(model.name)
                result["llm"].append({
                    "name": model.name, "backend": "ollama", "size_bytes": model.size,
                    "loaded": live is not None,
                    "size_vram_bytes": live.size_vram if live else 0,
                    "expires_at": live.expires_at if live else None,
                    "parameter_size": model.parameter_size})
        except ZmmError as exc:
            result["errors"].append(exc.message)
    if not result["image"] and not result["llm"] and result["errors"]:
        raise BackendUnavailable("; ".join(result["errors"]))
    return result


def load_llm(ollama: Any, name: str, keep_alive: str, timeout: float) -> dict[str, Any]:
    """Load and confirm in /api/ps: the model as loaded (`loaded_line` words it)."""
    ollama.load(name, keep_alive=keep_alive)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {m.name: m for m in ollama.ps()}
        model = live.get(name) or live.get(f"{name}:latest")
        if model:
            return {"name": model.name, "size_bytes": model.size,
                    "size_vram_bytes": model.size_vram, "expires_at": model.expires_at}
        time.sleep(0.1)
    raise ZmmError(f"Ollama said {name} loaded, but /api/ps does not list it after {timeout:g}s")


def loaded_line(model: dict[str, Any]) -> str:
    return (f"{model['name']} loaded: {model['size_vram_bytes'] / GIB:.1f} GB in VRAM of "
            f"{model['size_bytes'] / GIB:.1f} GB, until {model['expires_at']}")


def unload_llms(ollama: Any, names: list[str], timeout: float,
                free_bytes: Callable[[], int | None]) -> dict[str, Any]:
    """Unload and wait for /api/ps: each model's `result` (unloaded, still_loaded,
    unknown) and free VRAM before and after (`unload_lines` words it). Raises
    when a model stays listed."""
    before = free_bytes()
    asked = [name for name in names if ollama.unload(name)]
    result = ollama.wait_released(asked, timeout=timeout)
    after = free_bytes()
    report = {"models": [{"name": name, "result": "unloaded"} for name in asked
                         if name not in result.still_loaded]
              + [{"name": name, "result": "still_loaded"} for name in result.still_loaded]
              + [{"name": name, "result": "unknown"} for name in names if name not in asked],
              "waited_s": round(result.waited_s, 3), "vram_free_before_bytes": before,
              "vram_free_after_bytes": after}
    if result.still_loaded:
        raise ZmmError("; ".join(unload_lines(report)))
    return report


def unload_lines(report: dict[str, Any]) -> list[str]:
    words = {"unloaded": "unloaded", "unknown": "not known to Ollama",
             "still_loaded": f"still listed by Ollama after {report['waited_s']:.0f}s (stuck in "
             "\"Stopping...\"?)"}
    order = {"unloaded": 0, "still_loaded": 1, "unknown": 2}
    lines = [f"{m['name']}: {words[m['result']]}"
             for m in sorted(report["models"], key=lambda m: order[m["result"]])]
    before, after = report["vram_free_before_bytes"], report["vram_free_after_bytes"]
    if before is not None and after is not None:
        lines.append(f"VRAM free: {before / GIB:.1f} GB -> {after / GIB:.1f} GB")
    return lines


def unload_image(comfy: Any, timeout: float,
                 free_bytes: Callable[[], int | None]) -> dict[str, Any]:
    """POST /free answers 200 whatever happens: watch free VRAM to see the effect
    (free VRAM before and after, None without a reading; `image_lines` words it)."""
    def free_now() -> int | None:
        value = free_bytes()
        if value is not None:
            return value
        devices = comfy.system_stats().get("devices", [])
        return devices[0].get("vram_free") if devices else None

    before = free_now()
    comfy.free(unload_models=True, free_memory=True)
    deadline = time.monotonic() + timeout
    after = free_now()
    while before is not None and after is not None and after <= before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = free_now()
    return {"vram_free_before_bytes": before, "vram_free_after_bytes": after}


def image_lines(report: dict[str, Any]) -> list[str]:
    before, after = report["vram_free_before_bytes"], report["vram_free_after_bytes"]
    if before is None or after is None:
        return ["ComfyUI asked to unload its models (no VRAM reading to verify it)"]
    change = (after - before) / GIB
    return [f"ComfyUI: VRAM free {before / GIB:.1f} GB -> {after / GIB:.1f} GB ({change:+.1f} GB)"]


def check_scope(llm: bool, image: bool) -> tuple[bool, bool]:
    if llm and image:
        raise InvalidInput("scope", "give --llm or --image, not both (neither means both)")
    return (llm or not image, image or not llm)
