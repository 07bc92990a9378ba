"""Model families (SD1.5, SDXL, SD3.5 medium/large, Flux.1 schnell/dev): their
sampling defaults, resolution buckets, how their files load (one checkpoint, or
split files) and which files, from the `[models]` settings.

Pure: resolving `--model`/`--family` reads only the settings it is given; the
server's file lists are checked later, by the worker (zmm.workflows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from zmm import job_params, jobs
from zmm.errors import InvalidInput


@dataclass(frozen=True)
class Family:
    alias: str
    group: str  # sd15 | sdxl | sd35 | flux: the graph's shape and its text encoders
    base: int  # the side of the 1:1 bucket: 512 or 1024
    steps: int
    sampler: str
    scheduler: str
    cfg: float | None  # None: generate.cfg (the SD1.5/SDXL default)
    guidance: float | None = None  # Flux: FluxGuidance (schnell ignores it)
    shift: float | None = None  # SD3: ModelSamplingSD3
    side_step: int = 8  # width and height are multiples of this


# Defaults from the model cards and ComfyUI's example workflows (docs/models.md).
FAMILIES: dict[str, Family] = {
    "sd15": Family("sd15", "sd15", 512, 20, "euler_ancestral", "normal", None),
    "sdxl": Family("sdxl", "sdxl", 1024, 25, "dpmpp_2m", "karras", None),
    "sd35-medium": Family("sd35-medium", "sd35", 1024, 40, "euler", "sgm_uniform", 4.5,
                          shift=3.0, side_step=16),
    "sd35-large": Family("sd35-large", "sd35", 1024, 28, "euler", "sgm_uniform", 3.5,
                         shift=3.0, side_step=16),
    "flux-schnell": Family("flux-schnell", "flux", 1024, 4, "euler", "simple", 1.0,
                           guidance=3.5, side_step=16),
    "flux-dev": Family("flux-dev", "flux", 1024, 20, "euler", "simple", 1.0, guidance=3.5,
                       side_step=16),
}
ALIASES = tuple(FAMILIES)
LOADERS = ("split", "checkpoint")
# The text encoders each split family loads, by its [models] key suffix.
ENCODERS = {"sd35": ("clip-l", "clip-g", "t5xxl"), "flux": ("clip-l", "t5xxl")}
FILE_KEYS = job_params.FILE_KEYS  # a split job's other files
WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
# [models] keys that are not model aliases: loaders, encoders, VAEs, dtype.
_SETTING = re.compile(r"^(sd35|flux)-(loader|clip-l|clip-g|t5xxl|vae|weight-dtype)$")


@dataclass
class Resolved:
    """What `--model` (and `--family`) came to: the family, the model file and
    how it loads, with every other file a split family needs."""

    family: Family
    model_key: str  # the family alias, or a [models] key of the user's
    file: str
    loader: str  # split | checkpoint
    files: dict[str, Any] = field(default_factory=dict)  # clip_l, clip_g, t5xxl, vae, weight_dtype

    @property
    def precision(self) -> str:
        return precision_of(self.file, self.files.get("weight_dtype"))

    def params(self) -> dict[str, Any]:
        """The family's part of a job's params (bound into its template)."""
        return {"family": self.family.alias, "loader": self.loader, "precision": self.precision,
                "guidance": self.family.guidance, "shift": self.family.shift, **self.files}


def precision_of(file: str, weight_dtype: str | None) -> str:
    """fp8 or fp16: which row of the VRAM table a model needs (fp8 weights, or
    weights cast to fp8 on loading)."""
    dtype = str(weight_dtype or "default")
    return "fp8" if "fp8" in file.lower() or dtype.startswith("fp8") else "fp16"


def model_family(name: str) -> str:
    """The family a model file's name says, SD1.5 if none."""
    return guess(name) or "sd15"


def guess(name: str) -> str | None:
    """The family a model file's name says, or None."""
    lowered = name.lower().replace("\\", "/").rsplit("/", 1)[-1]
    if "flux" in lowered:
        return "flux-schnell" if "schnell" in lowered else "flux-dev"
    if re.search(r"sd_?3(\.?5)?[_-]?", lowered) or "stable-diffusion-3" in lowered:
        return "sd35-large" if "large" in lowered else "sd35-medium"
    if "xl" in lowered:
        return "sdxl"
    if re.search(r"(v1-5|sd_?1\.?5|sd-?v1|1\.5)", lowered):
        return "sd15"
    return None


def prompt_kind(family: str | None, checkpoint: str | None = None) -> str:
    """"tags" for families reading comma-separated keywords (SD1.5, SDXL: CLIP),
    "sentences" for those reading natural language (SD3.5, Flux: T5)."""
    alias = family if family in FAMILIES else guess(checkpoint or "")
    group = FAMILIES[alias].group if alias else "sdxl"
    return "sentences" if group in ("sd35", "flux") else "tags"


def is_setting_key(key: str) -> bool:
    return bool(_SETTING.match(key))


def model_aliases(models: dict[str, Any]) -> list[str]:
    """The names `--model` and a tier's `model` take: the families, then the
    user's own [models] keys (a checkpoint file each)."""
    extra = [key for key in models if key not in FAMILIES and not is_setting_key(key)]
    return [*ALIASES, *extra]


def resolve(requested: str | None, family_flag: str | None, tier_model: str,
            models: dict[str, Any]) -> Resolved:
    """`--model` (an alias or a file name), `--family` (for a file whose name
    says no family), or the quality tier's model."""
    family_name = None
    if family_flag not in (None, ""):
        family_name = jobs.parse_choice("family", str(family_flag), ALIASES)
    if requested in (None, ""):
        if family_name is not None:
            raise InvalidInput("family", "only with --model FILE (a model file name)")
        if tier_model not in model_aliases(models) or not models.get(tier_model):
            raise InvalidInput(f"config quality model {tier_model!r}",
                               "a model alias: " + ", ".join(model_aliases(models)))
        return _from_alias(tier_model, models)
    text = str(requested).strip()
    if text in model_aliases(models) and models.get(text):
        if family_name is not None:
            raise InvalidInput("family", f"only with --model FILE; {text} is an alias")
        return _from_alias(text, models)
    looks_like_path = "/" in text or "\\" in text or ".." in text or re.match(r"^[A-Za-z]:", text)
    if not looks_like_path and not text.lower().endswith(MODEL_SUFFIXES):
        raise InvalidInput("model", f"unknown alias {text!r}; allowed: "
                           + ", ".join(model_aliases(models))
                           + ", or a model file name (" + ", ".join(MODEL_SUFFIXES) + ")")
    name = jobs.parse_checkpoint(text)
    # A name that says no family is taken for SD1.5, as zmm always has; --family says otherwise.
    family = FAMILIES[family_name or guess(name) or "sd15"]
    return _with_files(family, family.alias, name, models)


def _from_alias(alias: str, models: dict[str, Any]) -> Resolved:
    name = jobs.parse_checkpoint(str(models[alias]))
    family = FAMILIES.get(alias) or FAMILIES[guess(name) or "sd15"]
    return _with_files(family, alias, name, models)


def _with_files(family: Family, model_key: str, name: str, models: dict[str, Any]) -> Resolved:
    group = family.group
    if group not in ENCODERS:
        return Resolved(family, model_key, name, "checkpoint")
    loader = str(models.get(f"{group}-loader") or "split").strip().lower()
    if loader not in LOADERS:
        raise InvalidInput(f"config models.{group}-loader", "one of " + ", ".join(LOADERS))
    if loader == "checkpoint":
        return Resolved(family, model_key, name, loader)
    files: dict[str, Any] = {}
    for part in (*ENCODERS[group], "vae"):
        key = f"config models.{group}-{part}"
        try:
            files[part.replace("-", "_")] = jobs.parse_checkpoint(str(models.get(f"{group}-{part}") or ""))
        except InvalidInput:
            raise InvalidInput(key, "a file name inside ComfyUI's models folder "
                               "(split loading)") from None
    dtype = str(models.get(f"{group}-weight-dtype") or "default")
    if dtype not in WEIGHT_DTYPES:
        raise InvalidInput(f"config models.{group}-weight-dtype",
                           "one of " + ", ".join(WEIGHT_DTYPES))
    files["weight_dtype"] = dtype
    return Resolved(family, model_key, name, loader, files)


def template_key(resolved: Resolved) -> str:
    """The [templates] key of the family's graph: sd15, sdxl, sd35, sd35-checkpoint, ..."""
    group = resolved.family.group
    return group if resolved.loader == "split" or group not in ENCODERS else f"{group}-checkpoint"


def buckets(family: Family) -> dict[str, tuple[int, int]]:
    """Sizes per aspect ratio at the family's native pixel count."""
    return jobs.ASPECTS["sd15" if family.base == 512 else "sdxl"]


def check_size(family: Family, width: int, height: int) -> None:
    step = family.side_step
    if width % step or height % step:
        raise InvalidInput("size", f"for {family.alias} each side a multiple of {step} "
                           "(e.g. 1024x768)")
