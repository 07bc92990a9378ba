"""`zmm doctor`: one check per line for what zmm depends on: the spool's
integrity, schema and permissions, config, every backend's ComfyUI (and its
GPU index) and Ollama, with reachability and versions, NVML, the templates
against the first server that answers, and the cloud providers' configuration
(keys set or not; no request is sent).

Each check returns a `Check`; the exit code is that of the most serious failure.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from typing import Any

from zmm import errors
from zmm.config import Config, fleet
from zmm.secrets import scrub

# Which failure decides the exit code when several fail, most serious first.
SEVERITY = (errors.SPOOL_UNUSABLE, errors.USAGE, errors.WORKFLOW_REJECTED,
            errors.BACKEND_UNAVAILABLE)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    code: int = 0  # the exit code a failure maps to

    def __post_init__(self) -> None:  # a URL's user:password, a key's value: never shown
        object.__setattr__(self, "detail", scrub(self.detail))

    def public(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def exit_code(checks: list[Check]) -> int:
    failing = {check.code for check in checks if check.status == "fail"}
    return next((code for code in SEVERITY if code in failing), 0)


def run_all(settings: Config) -> list[Check]:
    checks = [check_permissions(settings), check_spool(settings), check_schema(settings)]
    try:
        every = fleet.backends(settings)
    except errors.InvalidInput as exc:
        checks.append(Check("backends", "fail", exc.message, errors.USAGE))
        every = []
    several = len(every) > 1
    gpus = _nvml_gpus()
    templates: list[Check] = []
    ollamas = []
    for backend in every:
        view = fleet.settings_for(settings, backend)
        suffix = f" {backend.name}" if several else ""
        comfy_check, server = check_comfyui(view, "comfyui" + suffix)
        checks.append(comfy_check)
        placed = check_gpu_index(backend, gpus, "gpu" + suffix, always=several)
        checks.extend([placed] if placed is not None else [])
        supervision = check_supervision(view)
        checks.extend([supervision] if supervision is not None else [])
        if server is not None and not templates:  # the first server that answers
            templates = check_templates(view, *server)
        ollamas.append(check_ollama(view, "ollama" + suffix))
    checks += templates + ollamas
    checks.append(check_nvml())
    checks.append(check_cloud(settings))
    return checks


def _nvml_gpus() -> list[Any] | None:
    from zmm.backends import gpu

    try:
        return gpu.snapshot().gpus
    except errors.GpuUnavailable:
        return None


def check_gpu_index(backend: fleet.Backend, gpus: list[Any] | None, name: str, *,
                    always: bool) -> Check | None:
    """A local backend's GPU index against what NVML sees. None (no line) when it
    is there and only one backend is configured: the nvml line says it all."""
    if backend.gpu is None:
        return Check(name, "ok", f"{backend.name} is remote: VRAM from its /system_stats") \
            if always else None
    if gpus is None:
        return Check(name, "warn", f"GPU {backend.gpu}: NVML not available (VRAM checks are "
                     "skipped)") if always else None
    found = next((card for card in gpus if card.index == backend.gpu), None)
    if found is None:
        return Check(name, "fail", f"{backend.name}: gpu {backend.gpu} is not among NVML's "
                     f"{len(gpus)} GPU(s) (indexes 0-{len(gpus) - 1})" if gpus else
                     f"{backend.name}: gpu {backend.gpu}, but NVML sees no GPU", errors.USAGE)
    if not always:
        return None
    return Check(name, "ok", f"GPU {found.index}: {found.name}, "
                 f"{found.free_bytes / 1024**3:.1f}/{found.total_bytes / 1024**3:.1f} GB free")


def check_permissions(settings: Config) -> Check:
    home = settings.home
    if not home.exists():
        return Check("home", "ok", f"{home} does not exist yet; created user-only on first use")
    loose = [str(path) for path in (home, settings.spool_path, settings.assets_dir)
             if path.exists() and os.name != "nt" and stat.S_IMODE(path.stat().st_mode) & 0o077]
    if loose:
        return Check("home", "warn", "readable by others: " + ", ".join(loose)
                     + " (chmod go-rwx)")
    if not os.access(home, os.W_OK):
        return Check("home", "fail", f"{home} is not writable", errors.SPOOL_UNUSABLE)
    return Check("home", "ok", f"{home} (user-only)")


def check_spool(settings: Config) -> Check:
    from zmm.store.db import migrations, open_for_reading

    path = settings.spool_path
    if not path.exists():
        return Check("spool", "ok", f"{path} not created yet")
    try:
        conn = open_for_reading(path, timeout_s=5)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] if version else 0
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("spool", "fail", f"{path}: {exc}", errors.SPOOL_UNUSABLE)
    known = len(migrations())
    if verdict != "ok":
        return Check("spool", "fail", f"integrity_check: {verdict}", errors.SPOOL_UNUSABLE)
    if version > known:
        return Check("spool", "fail", f"schema {version} is newer than this zmm ({known})",
                     errors.SPOOL_UNUSABLE)
    return Check("spool", "ok", f"{path}: integrity ok, schema {version}/{known}, {jobs} jobs")


def check_schema(settings: Config) -> Check:
    """The spool's tables, columns, indexes and triggers against what its schema
    version's migrations create (zmm.store.schema, through sqlite-utils)."""
    from zmm.store import schema
    from zmm.store.db import open_for_reading

    path = settings.spool_path
    if not path.exists():
        return Check("schema", "ok", "no spool yet")
    try:
        conn = open_for_reading(path, timeout_s=5)
        try:
            found = schema.compare(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("schema", "fail", f"{path}: {exc}", errors.SPOOL_UNUSABLE)
    if found.missing:
        return Check("schema", "fail", f"not what schema {found.version} creates: "
                     + "; ".join(found.missing), errors.SPOOL_UNUSABLE)
    extra = f"; not zmm's (ignored): {', '.join(found.extra)}" if found.extra else ""
    return Check("schema", "warn" if extra else "ok",
                 f"tables, columns, indexes and triggers of schema {found.version}{extra}")


def check_supervision(settings: Config) -> Check | None:
    """What the last managed-mode worker recorded about its ComfyUI child (the
    spool_state key comfyui:<url>): restarts and the last exit. None when no
    worker ever managed a server for this URL."""
    url = settings.get("comfyui.url")
    if not settings.spool_path.exists():
        return None
    from zmm.store import Store

    with Store(settings.spool_path, read_only=True) as store:
        record = store.get_state(f"comfyui:{url}")
    if not isinstance(record, dict):
        return None
    restarts = record.get("restarts", 0)
    detail = (f"{url} managed by zmm: {restarts} restart{'s' if restarts != 1 else ''}, "
              f"last exit: {record.get('last_exit') or 'none'}; last event: "
              f"{record.get('event', '?')} at {record.get('at', '?')}; log: {record.get('log')}")
    return Check("comfyui-managed", "warn" if record.get("down") else "ok",
                 ("down: " if record.get("down") else "") + detail)


DOCTOR_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "vae")


def check_comfyui(settings: Config, name: str = "comfyui"
                  ) -> tuple[Check, tuple[dict, dict[str, list[str]]] | None]:
    from zmm.worker.service import make_client

    url = settings.get("comfyui.url")
    client = make_client(settings)
    try:
        stats = client.ping()
        version = stats.get("system", {}).get("comfyui_version", "unknown")
        devices = ", ".join(d.get("name", "?") for d in stats.get("devices", []))
        server = (client.object_info(), {folder: client.model_files(folder)
                                          for folder in DOCTOR_FOLDERS})
        return Check(name, "ok", f"{url}: ComfyUI {version} on {devices or 'no device'}"), server
    except errors.ZmmError as exc:
        return Check(name, "fail", exc.message, errors.BACKEND_UNAVAILABLE), None
    finally:
        client.close()


def check_templates(settings: Config, object_info: dict,
                    files: dict[str, list[str]]) -> list[Check]:
    """Each family's graph, bound with its [models] files, against the server.
    A family no quality tier uses and whose files are missing is a warning (most
    servers carry only some families); one a tier uses fails, and says how to
    map that tier to a family the server has."""
    from zmm import families, intake, workflows

    tiers: dict[str, list[str]] = {}
    for tier, values in settings.section("quality").items():
        if isinstance(values, dict):
            tiers.setdefault(str(values.get("model")), []).append(tier)
    results: list[tuple[str, Check]] = []
    for alias in families.ALIASES:
        classic = families.FAMILIES[alias].group not in families.ENCODERS
        name = f"template {settings.section('templates').get(alias, alias)}" if classic \
            else f"family {alias}"
        try:
            specs = intake.build({"prompt": "doctor", "model": alias, "size": "64x64",
                                  "steps": 1, "seed": 0}, settings)
            name = f"template {specs[0].workflow}" if classic else name
            (graph,) = workflows.printed_graphs(specs, settings.workflows_dir)
            workflows.check_against_server(graph, object_info, files)
            wanted = sorted(n for names in workflows.model_files(graph).values() for n in names)
            results.append((alias, Check(name, "ok", "nodes and " + ", ".join(wanted)
                                         + " present")))
        except errors.ZmmError as exc:
            results.append((alias, Check(name, "fail", exc.message)))
    present = [alias for alias, check in results if check.status == "ok"]
    return [check if check.status == "ok" else _missing_family(check, tiers.get(alias, []),
                                                              present)
            for alias, check in results]


def _missing_family(check: Check, tiers: list[str], present: list[str]) -> Check:
    """A family the server cannot run: a failure naming the fix when a quality tier
    uses it, else a warning (only a `--model` naming it would fail)."""
    if not tiers:
        return Check(check.name, "warn", check.detail + "; no quality tier uses it")
    fix = (f"; quality tier {', '.join(tiers)} uses it: put the file on the server, or map "
           "the tier to a family the server has in config.toml, under [quality]: "
           + "; ".join(f'{tier} = {{ model = "{present[0]}" }}' for tier in tiers)
           ) if present else "; quality tier " + ", ".join(tiers) + " uses it"
    return Check(check.name, "fail", check.detail + fix, errors.WORKFLOW_REJECTED)


def check_ollama(settings: Config, name: str = "ollama") -> Check:
    if not settings.get("ollama.enabled"):
        return Check(name, "ok", "disabled in config (no VRAM swap)")
    from zmm.backends.ollama import OllamaClient

    url = settings.get("ollama.url")
    try:
        client = OllamaClient(url, timeout=5)
        version = client.version()
        loaded = client.ps()
        names = ", ".join(model.name for model in loaded) or "none loaded"
        return Check(name, "ok", f"{url}: Ollama {version}; {names}")
    except errors.ZmmError as exc:
        # Ollama is optional: without it the swap is skipped, images still run.
        return Check(name, "warn", f"{exc.message} (the VRAM swap is skipped)")


def check_nvml() -> Check:
    from zmm.backends import gpu

    try:
        snap = gpu.snapshot()
    except errors.GpuUnavailable as exc:
        return Check("nvml", "warn", f"{exc.message} (VRAM checks are skipped)")
    names = ", ".join(f"{g.name} {g.free_bytes / 1024**3:.1f}/{g.total_bytes / 1024**3:.1f} GB free"
                      for g in snap.gpus)
    return Check("nvml", "ok", f"driver {snap.driver_version}: {names or 'no GPU'}")


def check_cloud(settings: Config) -> Check:
    """Which providers could take a job; never a request (each one costs money)."""
    from zmm.cloud import providers

    try:
        made = providers.build(settings)
    except errors.InvalidInput as exc:
        return Check("cloud", "fail", exc.message, errors.USAGE)
    states = [f"{p.name} {'ready' if p.usable() is None else p.usable()}" for p in made]
    ready = [p for p in made if p.usable() is None]
    scope = ("every job may fall back (cloud.enabled)" if settings.get("cloud.enabled")
             else "only jobs queued with --allow-cloud or --backend cloud")
    if settings.get("cloud.enabled") and not ready:
        return Check("cloud", "warn", f"cloud.enabled, but no provider key is set: "
                     f"{'; '.join(states)}")
    return Check("cloud", "ok", f"{'; '.join(states) or 'no providers'}; {scope}")
