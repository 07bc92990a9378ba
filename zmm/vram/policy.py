"""VRAM decisions before a job runs (the VRAM table and rules in
docs/gpu-sharing.md): run now, run
on SD1.5 instead, unload Ollama's models first, wait, or (where the job allows
it) send it to a cloud provider.

Pure: the worker gathers the facts (free VRAM, loaded LLMs, how long the job
has waited) and carries out the decision; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3
DOWNGRADABLE_TIERS = ("draft", "standard")


@dataclass(frozen=True)
class LoadedLlm:
    name: str
    size_vram: int
    keep_alive: str | int | float | None = None


@dataclass(frozen=True)
class Facts:
    priority: str  # CRITICAL | HIGH | MEDIUM | LOW
    quality: str | None
    model_key: str  # a family alias (zmm.families) or other
    model_pinned: bool  # the user named the model: never downgrade it
    free_bytes: int | None  # None: NVML unavailable, the check is skipped
    llms: list[LoadedLlm] | None  # None: Ollama not configured or unreachable
    waited_s: float = 0.0
    comfy_holds_bytes: int = 0  # ComfyUI already holds this model's weights
    cloud_allowed: bool = False  # the job may fall back and a provider is configured
    precision: str = "fp16"  # fp8 weights need the family's "-fp8" row of the table


@dataclass(frozen=True)
class Settings:
    need_gb: dict[str, float]  # model key -> GB; "reserve" -> GB kept free
    max_wait_s: dict[str, float]
    after_wait: str = "swap"  # swap | wait | cloud: what a job does once its max wait is over


@dataclass(frozen=True)
class Decision:
    action: str  # run | downgrade | unload | wait | cloud
    reason: str
    model_key: str
    unload: list[LoadedLlm] = field(default_factory=list)
    need_bytes: int = 0

    @property
    def event(self) -> str:
        return {"run": "vram_ok", "downgrade": "downgrade", "unload": "swap",
                "wait": "vram_wait", "cloud": "cloud_fallback"}[self.action]


def need_bytes(settings: Settings, model_key: str, precision: str = "fp16") -> int:
    """The family's row of the VRAM table (its "-fp8" row for fp8 weights, where
    there is one) plus the reserve; SDXL's row for a family the table lacks."""
    table = settings.need_gb
    key = f"{model_key}-fp8" if precision == "fp8" and f"{model_key}-fp8" in table else model_key
    model_gb = table.get(key, table.get("sdxl", 12.0))
    return int((model_gb + table.get("reserve", 2.0)) * GIB)


def gb(nbytes: int) -> str:
    return f"{nbytes / GIB:.1f} GB"


def decide(facts: Facts, settings: Settings) -> Decision:
    need = need_bytes(settings, facts.model_key, facts.precision)
    if facts.free_bytes is None:
        return Decision("run", "VRAM unknown (no NVML): not checked", facts.model_key, need_bytes=need)
    available = facts.free_bytes + facts.comfy_holds_bytes
    if available >= need:
        return Decision("run", f"need {gb(need)}, free {gb(available)}", facts.model_key,
                        need_bytes=need)
    shortfall = f"need {gb(need)}, free {gb(available)}"
    if (facts.model_key == "sdxl" and not facts.model_pinned
            and facts.quality in DOWNGRADABLE_TIERS):
        small = need_bytes(settings, "sd15")
        if available >= small:
            return Decision("downgrade", f"{shortfall}: running on SD1.5 instead", "sd15",
                            need_bytes=small)
    llms = [llm for llm in (facts.llms or []) if llm.size_vram > 0]
    could_free = available + sum(llm.size_vram for llm in llms)
    urgent = facts.priority in ("CRITICAL", "HIGH")
    max_wait = settings.max_wait_s.get(facts.priority, 0.0)
    if not urgent and facts.waited_s < max_wait:
        return Decision("wait", f"waiting for VRAM: {shortfall}", facts.model_key, need_bytes=need)
    why = "priority " + facts.priority if urgent else f"waited {facts.waited_s:.0f}s"
    patient = not urgent and settings.after_wait == "wait"
    unloading_frees_enough = bool(llms) and could_free >= need
    if facts.cloud_allowed and (settings.after_wait == "cloud" or patient
                                or not unloading_frees_enough):
        return Decision("cloud", f"{shortfall}: sending it to the cloud ({why})",
                        facts.model_key, need_bytes=need)
    if patient:
        return Decision("wait", f"waiting for VRAM: {shortfall} (policy: wait)", facts.model_key,
                        need_bytes=need)
    if unloading_frees_enough:
        names = ", ".join(llm.name for llm in llms)
        return Decision("unload", f"{shortfall}: unloading {names} ({why})", facts.model_key,
                        unload=llms, need_bytes=need)
    if llms:
        names = ", ".join(llm.name for llm in llms)
        return Decision("unload", f"{shortfall}: unloading {names} frees only "
                        f"{gb(could_free)}; running anyway", facts.model_key, unload=llms,
                        need_bytes=need)
    return Decision("run", f"{shortfall}: nothing zmm can unload; running anyway",
                    facts.model_key, need_bytes=need)


POLICIES = ("swap", "wait", "cloud")


def settings_from(config) -> Settings:
    from zmm.errors import InvalidInput

    policy = config.get("worker.vram_policy")
    if policy not in POLICIES:
        raise InvalidInput("config worker.vram_policy", "one of " + ", ".join(POLICIES))
    return Settings(need_gb=dict(config.section("vram_gb")),
                    max_wait_s=dict(config.section("max_wait_s")), after_wait=policy)
