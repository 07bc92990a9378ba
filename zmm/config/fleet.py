"""The configured ComfyUI backends: `[[backends]]` entries in config.toml, or
one `default` backend made of today's [comfyui] and [ollama] settings.

Owns reading and checking the entries (names, URLs, GPUs, the Ollama that
shares each GPU, managed-mode commands) and the per-backend view of the
settings a worker runs with (`settings_for`). No I/O beyond the Config.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zmm.config import Config
from zmm.errors import InvalidInput, NotFound

DEFAULT_NAME = "default"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_KEYS = {"name", "url", "gpu", "ollama", "command", "cwd", "env"}


@dataclass(frozen=True)
class Backend:
    """One ComfyUI server zmm feeds. `gpu` is the NVML index of a local server
    (None: remote, its VRAM comes from its /system_stats); `ollama` is the URL
    of the Ollama server sharing that GPU ("" = none to swap)."""

    name: str
    url: str
    gpu: int | None = 0
    ollama: str = ""
    command: str = ""  # managed mode: how to start this ComfyUI ("" = never)
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.gpu is not None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "gpu": self.gpu, "ollama": self.ollama or None,
                "managed": bool(self.command)}


def backends(settings: Config) -> list[Backend]:
    """Every configured backend, in config order; raises InvalidInput (exit 2)
    naming the entries when two share a name, a URL or a local GPU."""
    entries = settings.backend_entries
    if not entries:
        return [_default(settings)]
    found = [_entry(settings, index, raw) for index, raw in enumerate(entries)]
    _no_duplicates(found)
    return found


def backend(settings: Config, name: str, reported: Iterable[Mapping[str, Any]] = ()) -> Backend:
    """The backend called `name`: a configured one, else one a worker reported
    that is not configured (`reported`: the spool's backend rows, such as a
    `serve-worker --comfyui URL` one's). NotFound (exit 3) lists both."""
    every = backends(settings)
    for candidate in every:
        if candidate.name == name:
            return candidate
    others = [row for row in reported if row["name"] not in {item.name for item in every}]
    for row in others:
        if row["name"] == name:
            return Backend(str(row["name"]), str(row["url"]), row.get("gpu"))
    raise NotFound(f"backend {name!r} is not configured; backends: "
                   + ", ".join([item.name for item in every] + [row["name"] for row in others]),
                   hint="see [[backends]] in config.toml (docs/backends.md)")


def settings_for(settings: Config, chosen: Backend) -> Config:
    """A copy of `settings` as a worker for `chosen` sees them: its ComfyUI URL
    and managed-mode command, its Ollama, and `settings.backend` set."""
    data = copy.deepcopy(settings.data)
    data["comfyui"].update(url=chosen.url, command=chosen.command, cwd=chosen.cwd,
                           env=dict(chosen.env))
    data["ollama"]["enabled"] = bool(chosen.ollama) and bool(settings.get("ollama.enabled"))
    if chosen.ollama:
        data["ollama"]["url"] = chosen.ollama
    view = Config(data, settings.home, dict(settings.sources),
                  backend_entries=settings.backend_entries)
    view.backend = chosen
    return view


def serving(settings: Config) -> Backend:
    """The backend a worker with these settings serves: the one `settings_for`
    set, else the configured one with their ComfyUI URL, else the default
    backend made of [comfyui] and [ollama]."""
    chosen = settings.backend
    if isinstance(chosen, Backend):
        return chosen
    url = str(settings.get("comfyui.url")).rstrip("/")
    return next((item for item in backends(settings) if item.url == url), _default(settings))


def named_for_url(chosen: Backend) -> Backend:
    """`chosen` (the default backend) renamed after its URL's host and port, for
    a worker started with `serve-worker --comfyui URL` other than comfyui.url:
    several such workers on one spool are several backends, never one `default`
    row. http://127.0.0.1:8189 -> `127-0-0-1-8189` (lower case; any character
    but a letter or digit becomes '-'; the port is the scheme's when not given)."""
    from urllib.parse import urlsplit

    parts = urlsplit(chosen.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = re.sub(r"[^a-z0-9]+", "-", (parts.hostname or "").lower()).strip("-")
    return dataclasses.replace(chosen, name=f"{host}-{port}" if host else str(port))


def _default(settings: Config) -> Backend:
    ollama = str(settings.get("ollama.url")) if settings.get("ollama.enabled") else ""
    return Backend(DEFAULT_NAME, str(settings.get("comfyui.url")), 0, ollama,
                   str(settings.get("comfyui.command")), str(settings.get("comfyui.cwd")),
                   dict(settings.get("comfyui.env")))


def _entry(settings: Config, index: int, raw: Any) -> Backend:
    where = f"config backends[{index}]"
    if not isinstance(raw, dict):
        raise InvalidInput(where, "must be a [[backends]] table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown key; a backend has: "
                           + ", ".join(sorted(_KEYS)))
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(f"{where}.name", "a name of lower-case letters, digits, '-' or '_' "
                           "(up to 32, starting with a letter or digit)")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}.url", "an http:// or https:// URL of a ComfyUI server")
    gpu = raw.get("gpu")
    if gpu is not None and (isinstance(gpu, bool) or not isinstance(gpu, int) or gpu < 0):
        raise InvalidInput(f"{where}.gpu", "the NVML index of the server's GPU (0, 1, ...); "
                           "leave it out for a remote server")
    texts = {}
    for key in ("ollama", "command", "cwd"):
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise InvalidInput(f"{where}.{key}", "must be a string")
        texts[key] = value
    if texts["ollama"] and not texts["ollama"].startswith(("http://", "https://")):
        raise InvalidInput(f"{where}.ollama", "an http:// or https:// URL of an Ollama server")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise InvalidInput(f"{where}.env", "a table of environment variables (strings)")
    return Backend(name, url.rstrip("/"), gpu, texts["ollama"].rstrip("/"), texts["command"],
                   texts["cwd"], {str(k): v for k, v in env.items()})


def _no_duplicates(found: list[Backend]) -> None:
    for key, label in ((lambda b: b.name, "name"), (lambda b: b.url, "url"),
                       (lambda b: b.gpu, "gpu")):
        seen: dict[Any, int] = {}
        for index, item in enumerate(found):
            value = key(item)
            if value is None:
                continue
            if value in seen:
                first = seen[value]
                raise InvalidInput(
                    f"config backends[{first}] ({found[first].name}) and backends[{index}] "
                    f"({item.name})", f"both have {label} {value!r}; each backend needs its own")
            seen[value] = index
