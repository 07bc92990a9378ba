"""Intake of a request's graph parts: `--lora NAME[:STRENGTH]` (repeatable; in
`--from` files a JSON list or a `;`-separated string), `--init-image FILE
--denoise X` and `--upscale F --upscale-denoise D`, into the job's params and
size. Also checks, when ComfyUI answers, that the server has the LoRAs and the
upscale model, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zmm import jobs
from zmm.config import Config
from zmm.errors import InvalidInput, NotFound
from zmm.workflows import graph_parts
from zmm.workflows.graph_parts import Hires, InitImage, Lora, Parts

FIELDS = ("lora", "init_image", "denoise", "upscale", "upscale_denoise")
_LORA_ALLOWED = ("NAME[:STRENGTH], NAME a file in ComfyUI's models/loras, STRENGTH a number "
                 "from -100 to 100 (default 1.0)")


def attach(spec: jobs.JobSpec, raw: dict[str, Any], config: Config) -> bool:
    """Add the request's parts to `spec` (params, size); True if it has any."""
    loras = parse_loras(raw.get("lora"))
    image, denoise = _init_image(raw, config, spec)
    hires = _hires(raw, config)
    parts = Parts(loras, image, denoise, hires, _choice(config, "image_method",
                                                        graph_parts.IMAGE_METHODS))
    if parts.empty:
        return False
    if image is not None and not image.resize:
        spec.width, spec.height = image.width // 8 * 8, image.height // 8 * 8
    if loras:
        spec.model_pinned = True  # a LoRA fits one family: never swap the model under it
    # Refuse now what the worker could not build: a custom graph where a part has no
    # unambiguous place.
    from zmm import workflows

    graph = spec.graph if spec.graph is not None else \
        workflows.load(spec.workflow, config.workflows_dir).graph
    graph_parts.apply(graph, parts, width=spec.width, height=spec.height)
    spec.extra.update(parts.to_params())
    return True


def parse_loras(value: Any) -> tuple[Lora, ...]:
    if value in (None, "", []):
        return ()
    items = value.split(";") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise InvalidInput("lora", _LORA_ALLOWED)
    loras = []
    for item in items:
        if isinstance(item, dict):
            name, strength = item.get("name"), item.get("strength", 1.0)
        elif isinstance(item, str):
            if not item.strip():
                continue
            name, sep, text = item.strip().rpartition(":")
            name, strength = (name, text) if sep else (text, 1.0)
        else:
            raise InvalidInput("lora", _LORA_ALLOWED)
        loras.append(Lora(_lora_name(name), _strength(strength)))
    return tuple(loras)


def _lora_name(value: Any) -> str:
    name = jobs.parse_text("lora", value, max_len=255) if isinstance(value, str) else ""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or ".." in parts:
        raise InvalidInput("lora", _LORA_ALLOWED)
    return name


def _strength(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidInput("lora", _LORA_ALLOWED)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("lora", f"strength {value!r} is not a number; {_LORA_ALLOWED}") \
            from None
    low, high = graph_parts.LORA_STRENGTH
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidInput("lora", _LORA_ALLOWED)
    return number


def _open_interval(field_name: str, value: Any, low: float, high: float) -> float:
    """A number in (low, high]."""
    allowed = f"a number greater than {low:g} and at most {high:g}"
    number = jobs.parse_float(field_name, value, low, high) if not isinstance(value, bool) \
        else math.nan
    if not number > low:
        raise InvalidInput(field_name, allowed)
    return number


def _given(raw: dict[str, Any], key: str) -> bool:
    return raw.get(key) not in (None, "")


def _init_image(raw: dict[str, Any], config: Config,
                spec: jobs.JobSpec) -> tuple[InitImage | None, float | None]:
    if not _given(raw, "init_image"):
        if _given(raw, "denoise"):
            raise InvalidInput("denoise", "only with --init-image (text-to-image always "
                               "denoises fully)")
        return None, None
    try:
        denoise = (_open_interval("denoise", raw["denoise"], 0.0, 1.0)
                   if _given(raw, "denoise") else 0.6)
    except InvalidInput:
        raise InvalidInput("denoise", "a number greater than 0 and at most 1") from None
    if _given(raw, "aspect"):
        raise InvalidInput("aspect", "not with --init-image: the size comes from the image "
                           "(use --size WxH to resize it)")
    from zmm.assets import inputs

    image = inputs.read(Path(str(raw["init_image"])).expanduser())
    spec.inputs.append(image)
    return InitImage(image.relative, image.sha256, image.width, image.height, image.name,
                     resize=_given(raw, "size")), denoise


def _hires(raw: dict[str, Any], config: Config) -> Hires | None:
    if not _given(raw, "upscale"):
        if _given(raw, "upscale_denoise"):
            raise InvalidInput("upscale-denoise", "only with --upscale")
        return None
    try:
        factor = _open_interval("upscale", raw["upscale"], 1.0, 4.0)
    except InvalidInput:
        raise InvalidInput("upscale", "a number greater than 1 and at most 4") from None
    denoise_raw = raw["upscale_denoise"] if _given(raw, "upscale_denoise") \
        else config.get("upscale.denoise")
    try:
        denoise = _open_interval("upscale-denoise", denoise_raw, 0.0, 1.0)
    except InvalidInput:
        raise InvalidInput("upscale-denoise", "a number greater than 0 and at most 1") from None
    model = str(config.get("upscale.model") or "").strip() or None
    if model is not None:
        _lora_name(model)  # the same relative-name rule
    return Hires(factor, denoise, _choice(config, "method", graph_parts.LATENT_METHODS),
                 model, _choice(config, "image_method", graph_parts.IMAGE_METHODS))


def _choice(config: Config, key: str, allowed: tuple[str, ...]) -> str:
    value = str(config.get(f"upscale.{key}"))
    if value not in allowed:
        raise InvalidInput(f"config upscale.{key}", "one of " + ", ".join(allowed))
    return value


def from_metadata(meta: dict[str, Any], config: Config) -> dict[str, Any]:
    """The request fields a zmm PNG's metadata records for the parts; the init
    image is zmm's own copy, which must still be there."""
    raw: dict[str, Any] = {}
    loras = meta.get("loras")
    if isinstance(loras, list) and loras:
        raw["lora"] = loras
    image = meta.get("init_image")
    if isinstance(image, dict) and image.get("file"):
        from zmm.assets import safe_path

        copy = safe_path(config.assets_dir, str(image["file"]))
        if not copy.is_file():
            raise NotFound(f"from-image: the init image it was made from ({image['file']}) is "
                           "no longer in the assets folder",
                           hint="pass the image again with --init-image FILE")
        raw["init_image"] = str(copy)
        raw["denoise"] = meta.get("denoise")
    upscale = meta.get("upscale")
    if isinstance(upscale, dict) and upscale.get("factor"):
        raw["upscale"] = upscale["factor"]
        raw["upscale_denoise"] = upscale.get("denoise")
    return raw


def resized(meta: dict[str, Any]) -> bool:
    image = meta.get("init_image")
    return isinstance(image, dict) and bool(image.get("resize"))


def keep_recorded(spec: jobs.JobSpec, meta: dict[str, Any]) -> None:
    """The recorded upscale method and model win over today's config."""
    recorded, current = meta.get("upscale"), spec.extra.get("upscale")
    if isinstance(recorded, dict) and isinstance(current, dict):
        for key in ("method", "model", "image_method"):
            if key in recorded:
                current[key] = recorded[key]
