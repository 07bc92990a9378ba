"""Graph parts: a LoRA chain, an image-to-image input and a hires second pass,
added to a bound API-format graph of any model family. Each part finds what it
needs by following links (KSampler.model back to its loader, the text encoders'
clip, VAEDecode.vae, the sampler's latent_image), never by node id or text; a
graph where that is ambiguous is refused with an InvalidInput naming the part.
Pure: no I/O. `Parts` is also how a job's params carry these settings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zmm.errors import InvalidInput

OUTPUT_NODES = ("SaveImage", "PreviewImage")
LORA_LOADER = "LoraLoader"
PASS_KEY = "zmm_pass"  # in a sampler's _meta: "1/2" or "2/2" (read by the progress phase)
INPUT_SUBFOLDER = "zmm"  # where the worker uploads init images in ComfyUI's input folder
# ComfyUI v0.3.64's choice lists (GET /object_info/LatentUpscaleBy and ImageScale).
LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
LORA_STRENGTH = (-100.0, 100.0)  # LoraLoader's strength_model / strength_clip range
MAX_OUTPUT_SIDE = 16384  # ImageScale's and EmptyLatentImage's max


@dataclass(frozen=True)
class Lora:
    name: str
    strength: float = 1.0


@dataclass(frozen=True)
class InitImage:
    file: str  # the zmm copy, relative to the assets root (inputs/<sha256>.<ext>)
    sha256: str
    width: int  # of the image as given
    height: int
    name: str = ""  # the file name the user gave, for display
    resize: bool = False  # True: --size asked for an ImageScale before VAEEncode

    @property
    def upload_name(self) -> str:
        """The content-hashed name the worker uploads it under."""
        return f"{self.sha256}.{self.file.rsplit('.', 1)[-1]}"

    @property
    def reference(self) -> str:
        """What LoadImage's `image` input names: subfolder/name."""
        return f"{INPUT_SUBFOLDER}/{self.upload_name}"


@dataclass(frozen=True)
class Hires:
    factor: float
    denoise: float = 0.5
    method: str = "nearest-exact"  # LatentUpscaleBy's upscale_method
    model: str | None = None  # an upscale model file: ImageUpscaleWithModel instead
    image_method: str = "lanczos"  # ImageScale's, after the model upscale


@dataclass(frozen=True)
class Parts:
    loras: tuple[Lora, ...] = ()
    init_image: InitImage | None = None
    denoise: float | None = None  # the first pass's, with an init image
    hires: Hires | None = None
    image_method: str = "lanczos"  # the init image's resize (ImageScale)

    @property
    def empty(self) -> bool:
        return not self.loras and self.init_image is None and self.hires is None

    def to_params(self) -> dict[str, Any]:
        """The job params keys (only those in use, so plain jobs stay as they were)."""
        params: dict[str, Any] = {}
        if self.loras:
            params["loras"] = [{"name": lora.name, "strength": lora.strength}
                               for lora in self.loras]
        if self.init_image is not None:
            image = self.init_image
            params["init_image"] = {"file": image.file, "sha256": image.sha256,
                                    "width": image.width, "height": image.height,
                                    "name": image.name, "resize": image.resize,
                                    "image_method": self.image_method}
            params["denoise"] = self.denoise
        if self.hires is not None:
            hires = self.hires
            params["upscale"] = {"factor": hires.factor, "denoise": hires.denoise,
                                 "method": hires.method, "model": hires.model,
                                 "image_method": hires.image_method}
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Parts:
        loras = tuple(Lora(str(item["name"]), float(item["strength"]))
                      for item in params.get("loras") or [])
        raw_image = params.get("init_image")
        image = None
        method = "lanczos"
        if isinstance(raw_image, dict):
            method = str(raw_image.get("image_method") or method)
            image = InitImage(str(raw_image["file"]), str(raw_image["sha256"]),
                              int(raw_image["width"]), int(raw_image["height"]),
                              str(raw_image.get("name") or ""), bool(raw_image.get("resize")))
        raw_hires = params.get("upscale")
        hires = None
        if isinstance(raw_hires, dict):
            hires = Hires(float(raw_hires["factor"]), float(raw_hires["denoise"]),
                          str(raw_hires["method"]), raw_hires.get("model") or None,
                          str(raw_hires.get("image_method") or "lanczos"))
        denoise = params.get("denoise")
        return cls(loras, image, float(denoise) if denoise is not None else None, hires, method)


def upscaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """The size LatentUpscaleBy gives: each latent side (pixels / 8) times the
    factor, rounded the way ComfyUI rounds it, back in pixels."""
    return round(width // 8 * factor) * 8, round(height // 8 * factor) * 8


def apply(graph: dict[str, Any], parts: Parts, *, width: int, height: int) -> dict[str, Any]:
    """A copy of the bound graph with the parts added: LoRAs after the loaders,
    the init image in place of the empty latent, the second pass after the sampler.
    `width` x `height` is the first pass's size."""
    result = copy.deepcopy(graph)
    if parts.loras:
        add_loras(result, parts.loras)
    if parts.init_image is not None:
        add_init_image(result, parts.init_image, parts.denoise if parts.denoise is not None
                       else 0.6, width=width, height=height, method=parts.image_method)
    if parts.hires is not None:
        add_hires(result, parts.hires, width=width, height=height)
    return result


# -- finding things by following links ---------------------------------------------------


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
        and isinstance(value[1], int)


def _link(graph: dict[str, Any], node_id: str, name: str) -> list[Any] | None:
    value = graph[node_id].get("inputs", {}).get(name)
    return value if _is_link(value) and value[0] in graph else None


def _consumers(graph: dict[str, Any], target: list[Any]) -> list[tuple[str, str]]:
    """(node id, input name) of every input linked to `target` ([node id, slot])."""
    return [(node_id, name) for node_id, node in graph.items()
            for name, value in node.get("inputs", {}).items()
            if _is_link(value) and value[0] == target[0] and value[1] == target[1]]


def _rewire(graph: dict[str, Any], old: list[Any], new: list[Any], *, skip: set[str]) -> None:
    for node_id, name in _consumers(graph, old):
        if node_id not in skip:
            graph[node_id]["inputs"][name] = list(new)


def _new_id(graph: dict[str, Any]) -> str:
    numbers = [int(node_id) for node_id in graph if node_id.isdigit()]
    candidate = max(numbers, default=0) + 1
    while str(candidate) in graph:
        candidate += 1
    return str(candidate)


def _add(graph: dict[str, Any], class_type: str, inputs: dict[str, Any], title: str) -> str:
    node_id = _new_id(graph)
    graph[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
    return node_id


def _decoders(graph: dict[str, Any], part: str) -> list[str]:
    """The VAEDecode nodes whose images reach an output node (through image nodes)."""
    found: list[str] = []
    for node_id, node in graph.items():
        if node.get("class_type") not in OUTPUT_NODES:
            continue
        current, seen = _link(graph, node_id, "images"), set()
        while current is not None and current[0] not in seen:
            seen.add(current[0])
            if graph[current[0]].get("class_type") == "VAEDecode":
                if current[0] not in found:
                    found.append(current[0])
                break
            current = _link(graph, current[0], "image") or _link(graph, current[0], "images")
    if not found:
        raise InvalidInput(part, "the workflow has no VAEDecode feeding its output; zmm cannot "
                           "tell where to add this")
    return found


def final_sampler(graph: dict[str, Any], part: str) -> str:
    """The one KSampler whose latent is decoded into the saved image."""
    samplers = {link[0] for dec in _decoders(graph, part)
                if (link := _link(graph, dec, "samples")) is not None}
    if len(samplers) != 1:
        raise InvalidInput(part, f"the workflow's outputs come from {len(samplers)} samplers; "
                           "zmm adds this only where one KSampler makes the image")
    sampler = samplers.pop()
    if graph[sampler].get("class_type") != "KSampler":
        raise InvalidInput(part, f"the image comes from a {graph[sampler].get('class_type')}; "
                           "zmm adds this only after a KSampler")
    return sampler


def _root(graph: dict[str, Any], start: list[Any], name: str) -> list[Any]:
    """Follow input `name` upstream while the linked node has one: the loader's output."""
    current, seen = start, set()
    while current[0] not in seen:
        seen.add(current[0])
        upstream = _link(graph, current[0], name)
        if upstream is None:
            return current
        current = upstream
    return current


def _single_root(graph: dict[str, Any], name: str, part: str) -> list[Any]:
    roots = []
    for node_id in graph:
        start = _link(graph, node_id, name)
        if start is not None:
            root = _root(graph, start, name)
            if root not in roots:
                roots.append(root)
    if len(roots) != 1:
        what = "model" if name == "model" else "text encoder"
        raise InvalidInput(part, f"the workflow loads {len(roots)} {what}s; zmm adds LoRAs only "
                           f"where one {what} feeds the samplers")
    return roots[0]


# -- the parts -------------------------------------------------------------------------------


def add_loras(graph: dict[str, Any], loras: tuple[Lora, ...]) -> None:
    """A chain of LoraLoader nodes right after the model and text-encoder loaders;
    everything that used the loaders' MODEL and CLIP uses the chain's end instead."""
    model = _single_root(graph, "model", "lora")
    clip = _single_root(graph, "clip", "lora")
    chain: set[str] = set()
    current_model, current_clip = list(model), list(clip)
    for index, lora in enumerate(loras, start=1):
        node_id = _add(graph, LORA_LOADER, {
            "model": current_model, "clip": current_clip, "lora_name": lora.name,
            "strength_model": lora.strength, "strength_clip": lora.strength},
            f"LoRA {index}")
        chain.add(node_id)
        current_model, current_clip = [node_id, 0], [node_id, 1]
    _rewire(graph, model, current_model, skip=chain)
    _rewire(graph, clip, current_clip, skip=chain)


def add_init_image(graph: dict[str, Any], image: InitImage, denoise: float, *, width: int,
                   height: int, method: str) -> None:
    """LoadImage (-> ImageScale to width x height when asked) -> VAEEncode in place of
    the first sampler's empty latent; that sampler denoises `denoise` of it."""
    sampler = final_sampler(graph, "init-image")
    first, seen = sampler, set()
    latent = _link(graph, first, "latent_image")
    while latent is not None and graph[latent[0]].get("class_type") == "KSampler" \
            and latent[0] not in seen:  # a custom graph's earlier pass
        seen.add(latent[0])
        first, latent = latent[0], _link(graph, latent[0], "latent_image")
    kind = str(graph[latent[0]].get("class_type")) if latent is not None else ""
    if latent is None or not (kind.startswith("Empty") and "Latent" in kind):
        raise InvalidInput("init-image", "the workflow's first sampler does not start from an "
                           "empty latent image; zmm cannot tell where the image goes")
    vae = _link(graph, _decoders(graph, "init-image")[0], "vae")
    load = _add(graph, "LoadImage", {"image": image.reference}, "Init image")
    pixels: list[Any] = [load, 0]
    if image.resize:
        scale = _add(graph, "ImageScale", {"image": pixels, "upscale_method": method,
                                           "width": width, "height": height,
                                           "crop": "center"}, "Resize init image")
        pixels = [scale, 0]
    encode = _add(graph, "VAEEncode", {"pixels": pixels, "vae": vae}, "Encode init image")
    _rewire(graph, latent, [encode, 0], skip={encode})
    if not _consumers(graph, [latent[0], 0]) and not _consumers(graph, [latent[0], 1]):
        del graph[latent[0]]
    graph[first]["inputs"]["denoise"] = denoise


def add_hires(graph: dict[str, Any], hires: Hires, *, width: int, height: int) -> None:
    """A second KSampler pass at `hires.denoise` on the upscaled first pass: a
    latent upscale, or (with an upscale model) decode -> model upscale -> resize
    to size x factor -> encode, as in ComfyUI's own hires-fix examples."""
    sampler = final_sampler(graph, "upscale")
    decoders = _decoders(graph, "upscale")
    vae = _link(graph, decoders[0], "vae")
    target_w, target_h = upscaled_size(width, height, hires.factor)
    if max(target_w, target_h) > MAX_OUTPUT_SIDE:
        raise InvalidInput("upscale", f"{width}x{height} x {hires.factor:g} is "
                           f"{target_w}x{target_h}; each side at most {MAX_OUTPUT_SIDE}")
    second = copy.deepcopy(graph[sampler])
    second["_meta"] = {"title": "Hires pass", PASS_KEY: "2/2"}
    second["inputs"]["denoise"] = hires.denoise
    graph[sampler].setdefault("_meta", {})[PASS_KEY] = "1/2"
    if hires.model is None:
        upscale = _add(graph, "LatentUpscaleBy", {"samples": [sampler, 0],
                                                  "upscale_method": hires.method,
                                                  "scale_by": hires.factor}, "Hires upscale")
        second["inputs"]["latent_image"] = [upscale, 0]
        second_id = _new_id(graph)
        graph[second_id] = second
        _rewire(graph, [sampler, 0], [second_id, 0], skip={upscale})
        return
    decoded = decoders[0]
    loader = _add(graph, "UpscaleModelLoader", {"model_name": hires.model}, "Upscale model")
    upscaled = _add(graph, "ImageUpscaleWithModel", {"upscale_model": [loader, 0],
                                                     "image": [decoded, 0]}, "Model upscale")
    scaled = _add(graph, "ImageScale", {"image": [upscaled, 0], "upscale_method":
                                        hires.image_method, "width": target_w,
                                        "height": target_h, "crop": "disabled"}, "Hires size")
    encoded = _add(graph, "VAEEncode", {"pixels": [scaled, 0], "vae": vae}, "Hires encode")
    second["inputs"]["latent_image"] = [encoded, 0]
    second_id = _new_id(graph)
    graph[second_id] = second
    final = _add(graph, "VAEDecode", {"samples": [second_id, 0], "vae": vae}, "Hires decode")
    _rewire(graph, [decoded, 0], [final, 0], skip={upscaled})


def file_needs(graph: dict[str, Any]) -> dict[str, set[str]]:
    """Model folder -> the file names the parts' loader nodes name (LoRAs, upscale models)."""
    needs: dict[str, set[str]] = {"loras": set(), "upscale_models": set()}
    for node in graph.values():
        inputs = node.get("inputs", {})
        if node.get("class_type") == LORA_LOADER and isinstance(inputs.get("lora_name"), str):
            needs["loras"].add(inputs["lora_name"])
        if node.get("class_type") == "UpscaleModelLoader" \
                and isinstance(inputs.get("model_name"), str):
            needs["upscale_models"].add(inputs["model_name"])
    return {folder: names for folder, names in needs.items() if names}


def pass_of(node: dict[str, Any]) -> str | None:
    """"2/2" for the hires pass's sampler (from its _meta), else None."""
    meta = node.get("_meta")
    value = meta.get(PASS_KEY) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None
