"""Settings: defaults < `$ZMM_HOME/config.toml` < `ZMM_*` environment < flags.

Owns the default values, where `$ZMM_HOME` is, and the merge of the layers.
Values are plain dicts checked against the defaults' types, so loading stays
cheap on the enqueue path. Secrets are never stored here: config names the
environment variables that hold them, and `masked()` hides their values.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zmm import secrets
from zmm.config import bounds
from zmm.errors import InvalidInput, SpoolUnusable

_ENHANCE_BASE = (
    "You write prompts for an image generation model. Rewrite the user's request as one "
    "prompt that describes the picture: subject, composition, setting, lighting, colours "
    "and style. Keep everything the user asked for and add nothing that contradicts it; "
    "text the user wants in the picture stays word for word, in quotes. {format} Answer "
    "with the prompt only: no title, no quotes around it, no explanation.")

DEFAULTS: dict[str, dict[str, Any]] = {
    "comfyui": {
        "url": "http://127.0.0.1:8188",
        "timeout_s": 30.0,
        "silence_timeout_s": 120.0,
        "retry_max_s": 30.0,
        # Managed mode (docs/managed-comfyui.md): the worker starts this command when
        # nothing answers on `url`, and stops it when the worker stops ("" = never).
        "command": "",
        "cwd": "",  # where the command runs ("" = the worker's directory)
        "env": {},  # extra environment variables for it
        "start_timeout_s": 120.0,  # until /system_stats answers
        "stop_grace_s": 10.0,  # after SIGTERM, before SIGKILL
        "log_max_bytes": 10_000_000,  # $ZMM_HOME/logs/comfyui-<port>.log rotates past this
        "crash_limit": 2,  # a job running during this many crashes in a row fails
        "max_quick_exits": 5,  # exits in a row within 60 s of starting: no more restarts
        "hang_s": 120.0,  # a job runs, no event this long, /system_stats silent: a hang
        "health_s": 30.0,  # idle: /system_stats this often; three failures in a row: a hang
        "alert_after_s": 300.0,  # unreachable this long: one backend.down alert
    },
    "ollama": {
        "url": "http://127.0.0.1:11434",
        "enabled": True,
        "unload_timeout_s": 60.0,
        "reload_keep_alive": "10m",
        "queue_end_delay_s": 1.0,
    },
    # Prompt enhancement (docs/enhance.md): before a job runs, the local LLM rewrites
    # the request as a prompt for the job's model family, in the style's words.
    "enhance": {
        "model": "llama3.2",
        "url": "",  # "" = ollama.url
        "timeout_s": 30.0,  # the whole request, loading the model included
        "endpoint": "chat",  # chat (/api/chat) | generate (/api/generate)
        "temperature": 0.7,
        "max_chars": 1000,  # a longer answer is cut at the last comma or sentence before it
        # per style, when neither --enhance nor --no-enhance is given: off | on | required
        "styles": {"technical-diagram": "off", "report-cover": "off", "infographic": "off",
                   "dashboard-thumbnail": "off", "none": "off"},
        # per style, the system prompt; {format} becomes the family's [enhance.format] text
        "system": {
            "none": _ENHANCE_BASE,
            "technical-diagram": _ENHANCE_BASE + " The picture is a clean technical diagram: "
            "flat vector style, white background, precise thin lines, labelled boxes.",
            "report-cover": _ENHANCE_BASE + " The picture is a professional report cover: "
            "modern minimal design, bold composition, soft gradient background.",
            "infographic": _ENHANCE_BASE + " The picture is an infographic: clear icons, "
            "flat colours, an organised layout, high contrast.",
            "dashboard-thumbnail": _ENHANCE_BASE + " The picture is a dashboard thumbnail: "
            "simple shapes, flat design, readable at a small size.",
        },
        # how each kind of model family reads a prompt; {family} is the job's family
        "format": {
            "tags": "The image model ({family}) reads comma-separated keywords: write 15 to "
            "40 short descriptive phrases separated by commas, the most important first, "
            "no full sentences.",
            "sentences": "The image model ({family}) reads natural language: write two to "
            "four plain descriptive sentences, at most 120 words.",
        },
    },
    "worker": {
        "lease_s": 60.0,
        "max_attempts": 3,
        "poll_s": 0.5,
        "aging_s": 600.0,
        "progress_interval_s": 0.5,
        "backoff_s": 5.0,
        "model_group_window": 4,
        "files_refresh_s": 60.0,  # how often a worker re-reads its server's model files
        "max_run_s": 3600.0,  # a job running on ComfyUI longer is interrupted and fails (0: never)
        "max_run_s_by_style": {},  # style -> its own max_run_s
        "vram_policy": "swap",
    },
    "spool": {"busy_timeout_ms": 15000},
    "alerts": {"webhook_url": ""},  # backend.down / backend.up POSTs ("" = stderr line only)
    "generate": {
        "requester": "user",
        "negative": "blurry, watermark, low quality, jpeg artifacts",
        "quality": "standard",
        "priority": "HIGH",
        "aspect": "1:1",
        "cfg": 7.0,
        "inline": True,
    },
    # Model file per family alias (docs/models.md). SD3.5 and Flux load split files
    # (diffusion_models/ + text_encoders/ + vae/) unless <group>-loader = "checkpoint".
    "models": {
        "sdxl": "sd_xl_base_1.0.safetensors",
        "sd15": "v1-5-pruned-emaonly.safetensors",
        "sd35-medium": "sd3.5_medium.safetensors",
        "sd35-large": "sd3.5_large.safetensors",
        "flux-schnell": "flux1-schnell.safetensors",
        "flux-dev": "flux1-dev.safetensors",
        "sd35-loader": "split",
        "sd35-clip-l": "clip_l.safetensors",
        "sd35-clip-g": "clip_g.safetensors",
        "sd35-t5xxl": "t5xxl_fp16.safetensors",
        "sd35-vae": "sd3.5_vae.safetensors",
        "sd35-weight-dtype": "default",
        "flux-loader": "split",
        "flux-clip-l": "clip_l.safetensors",
        "flux-t5xxl": "t5xxl_fp16.safetensors",
        "flux-vae": "ae.safetensors",
        "flux-weight-dtype": "default",
    },
    "templates": {"sdxl": "sdxl-txt2img", "sd15": "sd15-txt2img", "sd35": "sd35-txt2img",
                  "sd35-checkpoint": "sd35-checkpoint-txt2img", "flux": "flux-txt2img",
                  "flux-checkpoint": "flux-checkpoint-txt2img"},
    # Hires second pass (--upscale): LatentUpscaleBy's method, or an upscale model file
    # (ComfyUI/models/upscale_models) run through ImageUpscaleWithModel, then resized
    # with image_method (also the init image's --size resize).
    "upscale": {"method": "nearest-exact", "model": "", "image_method": "lanczos",
                "denoise": 0.5},
    # GB of VRAM per family (fp16; "-fp8" rows for fp8 weights); sources in docs/gpu-sharing.md
    "vram_gb": {"sdxl": 12.0, "sd15": 6.0, "sd35-medium": 10.0, "sd35-medium-fp8": 6.0,
                "sd35-large": 18.0, "sd35-large-fp8": 11.0, "flux-schnell": 24.0,
                "flux-schnell-fp8": 12.0, "flux-dev": 24.0, "flux-dev-fp8": 12.0,
                "reserve": 2.0},
    # tier -> model alias (a [models] key), steps, sampler and scheduler (and optionally cfg);
    # a tier given another model in config.toml takes that family's defaults for what it omits
    "quality": {
        "draft": {"model": "sd15", "steps": 20, "sampler": "euler_ancestral", "scheduler": "normal"},
        "standard": {"model": "sdxl", "steps": 25, "sampler": "dpmpp_2m", "scheduler": "karras"},
        "high": {"model": "sdxl", "steps": 40, "sampler": "dpmpp_2m_sde", "scheduler": "karras"},
    },
    "styles": {
        "technical-diagram": "{prompt}, clean technical diagram, flat vector style, "
        "white background, precise thin lines, labelled boxes",
        "report-cover": "{prompt}, professional report cover, modern minimal design, "
        "bold composition, soft gradient background",
        "infographic": "{prompt}, infographic, clear icons, flat colours, "
        "organised layout, high contrast",
        "dashboard-thumbnail": "{prompt}, dashboard thumbnail, simple shapes, "
        "readable at small size, flat design",
        "none": "{prompt}",
    },
    "max_wait_s": {"CRITICAL": 0.0, "HIGH": 30.0, "MEDIUM": 120.0, "LOW": 600.0},
    "retention": {"days": 30, "max_size": ""},
    "secrets": {"webhook_secret_env": "ZMM_WEBHOOK_SECRET"},
    "webhooks": {
        "url": "",  # a default for jobs queued without --webhook ("" = none)
        "timeout_s": 10.0,
        "tries": 3,
        "backoff_s": 2.0,  # before the second try; each later wait is 4x the last
    },
    # Cloud fallback: nothing is sent unless `enabled`, --allow-cloud or --backend cloud.
    "cloud": {
        "enabled": False,
        "providers": ["stability", "openai"],  # the order they are tried in
        "timeout_s": 120.0,
        "max_retries": 2,  # per provider, on 408, 409, 429, 5xx and network errors
        "retry_after_max_s": 120.0,  # the longest Retry-After honoured
        "concurrency": 2,  # cloud jobs a worker runs at once
    },
    "stability": {
        "url": "https://api.stability.ai",
        "key_env": "STABILITY_API_KEY",
        "path": "/v2beta/stable-image/generate/{endpoint}",
        "endpoint": {"draft": "core", "standard": "core", "high": "ultra"},
        "sd3_model": "sd3.5-large",  # when a tier's endpoint is "sd3"
        # credits per successful image; 1 credit = usd_per_credit
        "credits": {"core": 3.0, "ultra": 8.0, "sd3.5-large": 6.5, "sd3.5-large-turbo": 4.0,
                    "sd3.5-medium": 3.5},
        "usd_per_credit": 0.01,
    },
    "openai": {
        "url": "https://api.openai.com",
        "key_env": "OPENAI_API_KEY",
        "path": "/v1/images/generations",
        "model": "gpt-image-1-mini",
        "quality": {"draft": "low", "standard": "medium", "high": "high"},
        # USD per million tokens, by model (as reported; check your own price list)
        "prices": {
            "gpt-image-1-mini": {"text_input": 2.0, "image_input": 2.5, "image_output": 8.0},
            "gpt-image-1.5": {"text_input": 5.0, "image_input": 8.0, "image_output": 32.0},
        },
    },
}

# Keys whose values are names of environment variables holding secrets.
SECRET_ENV_SUFFIX = "_env"


def zmm_home() -> Path:
    """`$ZMM_HOME`, else the platform's per-user data directory."""
    explicit = os.environ.get("ZMM_HOME")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "zmm"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "zmm"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "zmm"


def config_path(home: Path | None = None) -> Path:
    return (home or zmm_home()) / "config.toml"


class Config:
    """Merged settings. `get("comfyui.url")` reads one value."""

    def __init__(self, data: dict[str, dict[str, Any]], home: Path, sources: dict[str, str],
                 *, backend_entries: list[Any] | None = None):
        self.data = data
        self.home = home
        self.sources = sources  # dotted key -> "default" | "file" | "env" | "flag"
        # The raw [[backends]] tables (checked by zmm.config.fleet), and the one backend
        # a worker's view of the settings is for (zmm.config.fleet.settings_for).
        self.backend_entries: list[Any] = backend_entries or []
        self.backend: Any = None

    def get(self, dotted: str) -> Any:
        section, _, key = dotted.partition(".")
        try:
            return self.data[section][key]
        except KeyError:
            raise KeyError(dotted) from None

    def section(self, name: str) -> dict[str, Any]:
        return self.data[name]

    def override(self, dotted: str, value: Any) -> None:
        """Apply a command-line flag (the highest layer)."""
        section, _, key = dotted.partition(".")
        self.data[section][key] = _coerce(dotted, value, DEFAULTS[section].get(key, value))
        bounds.check(dotted, self.data[section][key], field=dotted)
        self.sources[dotted] = "flag"

    @property
    def spool_path(self) -> Path:
        return self.home / "spool.db"

    @property
    def assets_dir(self) -> Path:
        return self.home / "assets"

    @property
    def workflows_dir(self) -> Path:
        return self.home / "workflows"

    @property
    def brands_dir(self) -> Path:
        return self.home / "brands"

    def masked(self) -> dict[str, dict[str, Any]]:
        """The settings for display: values of secret-bearing env vars are never
        shown, nor a URL's user and password."""
        shown = copy.deepcopy(self.data)
        for values in shown.values():
            for key, value in list(values.items()):
                if key.endswith(SECRET_ENV_SUFFIX) and isinstance(value, str):
                    values[key] = f"{value} ({'set' if os.environ.get(value) else 'not set'})"
                elif isinstance(value, str) and "://" in value:
                    values[key] = secrets.mask_url(value)
        return shown


def load(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    home = home or zmm_home()
    if environ is None:
        environ = os.environ
    data = copy.deepcopy(DEFAULTS)
    sources = {f"{s}.{k}": "default" for s, values in DEFAULTS.items() for k in values}
    path = config_path(home)
    entries: list[Any] = []
    if _present(path, home):
        table = _read_toml(path)
        entries = table.pop("backends", [])
        if not isinstance(entries, list):
            raise InvalidInput("config backends", "must be [[backends]] tables (docs/backends.md)")
        for dotted, value in _flatten(table).items():
            _set(data, dotted, value, origin=str(path))
            sources[dotted] = "file"
    for dotted, value in _from_environ(environ).items():
        _set(data, dotted, value, origin="environment")
        sources[dotted] = "env"
    bounds.check_all(data)
    secrets.remember(value for values in data.values() for key, value in values.items()
                     if key.endswith(SECRET_ENV_SUFFIX) and isinstance(value, str))
    return Config(data, home, sources, backend_entries=entries)


def _present(path: Path, home: Path) -> bool:
    """Is there a config file? An unreadable $ZMM_HOME is an error, not "no"."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise SpoolUnusable(f"$ZMM_HOME {home} cannot be read ({exc.strerror})",
                            hint="make it a folder you own: chmod 700 it, or set "
                            "ZMM_HOME to another one") from None
    return True


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when a config file exists

    from zmm.fs import MB, read_user_text

    text = read_user_text(path, "config", MB)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput("config", f"{path} is not valid TOML ({exc})") from None
    except RecursionError:
        raise InvalidInput("config", f"{path}: TOML tables, not arrays nested hundreds "
                           "deep") from None


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in table.items():
        if not isinstance(values, dict):
            raise InvalidInput(f"config {section}", "must be a [section] table")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`ZMM_COMFYUI_URL=...` -> {"comfyui.url": "..."}; longest section name wins."""
    found: dict[str, str] = {}
    sections = sorted(DEFAULTS, key=len, reverse=True)
    for name, value in environ.items():
        if not name.startswith("ZMM_") or name == "ZMM_HOME":
            continue
        rest = name[4:].lower()
        if rest == "requester":
            found["generate.requester"] = value
            continue
        for section in sections:
            prefix = section + "_"
            if rest.startswith(prefix) and rest[len(prefix):] in DEFAULTS[section]:
                found[f"{section}.{rest[len(prefix):]}"] = value
                break
    return found


def _set(data: dict[str, dict[str, Any]], dotted: str, value: Any, *, origin: str) -> None:
    section, _, key = dotted.partition(".")
    if section not in DEFAULTS:
        allowed = ", ".join(sorted(DEFAULTS))
        raise InvalidInput(f"config {dotted}", f"unknown section (in {origin}); sections: {allowed}")
    open_sections = {"styles", "models", "templates", "vram_gb", "quality"}
    if key not in DEFAULTS[section] and section not in open_sections:
        allowed = ", ".join(sorted(DEFAULTS[section]))
        raise InvalidInput(f"config {dotted}", f"unknown key (in {origin}); {section} has: {allowed}")
    default = DEFAULTS[section].get(key, value)
    if isinstance(default, dict) and isinstance(value, dict) and not _other_model(section,
                                                                                  default, value):
        value = {**default, **value}  # a table in config.toml adds to the defaults' keys
    data[section][key] = _coerce(dotted, value, default)


def _other_model(section: str, default: dict, value: dict) -> bool:
    """A quality tier moved to another model: the default tier's steps and
    sampler were chosen for its own model, so they are not merged in."""
    return section == "quality" and value.get("model", default.get("model")) != default.get("model")


def _coerce(dotted: str, value: Any, default: Any) -> Any:
    """Bring a file or environment value to the type of its default."""
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in ("1", "true", "yes", "on"):
                    return True
                if text.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise InvalidInput(dotted, f"must be a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, str):  # ZMM_CLOUD_PROVIDERS=openai,stability
        return [item.strip() for item in value.split(",") if item.strip()]
    raise InvalidInput(dotted, f"must be a {kind.__name__}, got {value!r}")
