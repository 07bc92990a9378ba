"""The VRAM decision table: free VRAM x tier x priority x Ollama loaded x reachable."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from zmm.vram.policy import GIB, Facts, LoadedLlm, Settings, decide

SETTINGS = Settings(need_gb={"sdxl": 12.0, "sd15": 6.0, "reserve": 2.0},
                    max_wait_s={"CRITICAL": 0, "HIGH": 30, "MEDIUM": 120, "LOW": 600})
LLAMA = LoadedLlm("llama3.2", 10 * GIB, "10m")


def facts(free_gb, *, priority="HIGH", quality="standard", model="sdxl", pinned=False,
          llms=(LLAMA,), waited=0.0):
    return Facts(priority=priority, quality=quality, model_key=model, model_pinned=pinned,
                 free_bytes=None if free_gb is None else int(free_gb * GIB),
                 llms=None if llms is None else list(llms), waited_s=waited)


FREE = {"plenty": 20, "sd15-only": 9, "none": 3}
TIERS = ("draft", "standard", "high")
PRIORITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")
OLLAMA = {"loaded": (LLAMA,), "idle": (), "unreachable": None}


def expected(free, tier, priority, ollama):
    model = "sd15" if tier == "draft" else "sdxl"
    fits = {"plenty": True, "sd15-only": model == "sd15", "none": False}[free]
    if fits:
        return "run", model
    if model == "sdxl" and tier == "standard" and free == "sd15-only":
        return "downgrade", "sd15"
    if priority in ("MEDIUM", "LOW"):
        return "wait", model
    if ollama == "loaded":
        return "unload", model
    return "run", model


@pytest.mark.parametrize("free,tier,priority,ollama",
                         list(itertools.product(FREE, TIERS, PRIORITIES, OLLAMA)))
def test_decision_table(free, tier, priority, ollama):
    model = "sd15" if tier == "draft" else "sdxl"
    decision = decide(facts(FREE[free], priority=priority, quality=tier, model=model,
                            llms=OLLAMA[ollama]), SETTINGS)
    assert (decision.action, decision.model_key) == expected(free, tier, priority, ollama)
    if decision.action == "unload":
        assert [llm.name for llm in decision.unload] == ["llama3.2"]
    if decision.action == "wait":
        assert decision.reason.startswith("waiting for VRAM: need ")


def test_no_nvml_skips_the_check():
    decision = decide(facts(None, priority="LOW", quality="high"), SETTINGS)
    assert decision.action == "run" and "no NVML" in decision.reason


def test_named_model_is_never_downgraded():
    decision = decide(facts(9, quality="standard", pinned=True), SETTINGS)
    assert decision.action == "unload"


def test_low_job_waits_until_its_max_wait_then_swaps():
    assert decide(facts(3, priority="LOW", quality="high", waited=599), SETTINGS).action == "wait"
    late = decide(facts(4, priority="LOW", quality="high", waited=600), SETTINGS)
    assert late.action == "unload" and "waited 600s" in late.reason
    patient = Settings(SETTINGS.need_gb, SETTINGS.max_wait_s, after_wait="wait")
    assert decide(facts(3, priority="LOW", quality="high", waited=9999), patient).action == "wait"


def test_wait_message_names_need_and_free():
    decision = decide(facts(3.5, priority="MEDIUM", quality="high"), SETTINGS)
    assert decision.reason == "waiting for VRAM: need 14.0 GB, free 3.5 GB"


def test_model_comfy_already_holds_counts_as_available():
    held = Facts("LOW", "high", "sdxl", False, 4 * GIB, [LLAMA], 0.0, comfy_holds_bytes=12 * GIB)
    assert decide(held, SETTINGS).action == "run"


def allowed(free_gb, **kwargs):
    return dataclasses.replace(facts(free_gb, **kwargs), cloud_allowed=True)


@pytest.mark.parametrize("free,tier,priority,ollama",
                         list(itertools.product(FREE, TIERS, PRIORITIES, OLLAMA)))
def test_cloud_allowed_decision_table(free, tier, priority, ollama):
    """With the cloud allowed, local still comes first: what fits, a downgrade, the
    wait and an unload that frees enough; the cloud replaces only 'running anyway'."""
    model = "sd15" if tier == "draft" else "sdxl"
    kwargs = dict(priority=priority, quality=tier, model=model, llms=OLLAMA[ollama])
    local = decide(facts(FREE[free], **kwargs), SETTINGS)
    decision = decide(allowed(FREE[free], **kwargs), SETTINGS)
    if local.reason.endswith("running anyway"):  # an OOM waiting to happen: the cloud instead
        assert decision.action == "cloud"
    else:
        assert (decision.action, decision.reason) == (local.action, local.reason)


def test_unloading_too_little_goes_to_the_cloud_instead_of_running_anyway():
    small = LoadedLlm("tiny", 1 * GIB, "5m")
    assert decide(facts(3, priority="HIGH", quality="high", llms=[small]), SETTINGS).action == \
        "unload"
    decision = decide(allowed(3, priority="HIGH", quality="high", llms=[small]), SETTINGS)
    assert decision.action == "cloud" and decision.event == "cloud_fallback"
    assert decision.reason == "need 14.0 GB, free 3.0 GB: sending it to the cloud (priority HIGH)"


def test_policies_after_the_max_wait_with_the_cloud_allowed():
    late = dict(priority="LOW", quality="high", waited=600)
    swap = SETTINGS
    wait = dataclasses.replace(SETTINGS, after_wait="wait")
    cloud = dataclasses.replace(SETTINGS, after_wait="cloud")
    assert decide(allowed(4, **late), swap).action == "unload"  # unloading frees enough
    assert decide(allowed(4, **late), wait).action == "cloud"
    assert decide(allowed(4, **late), cloud).action == "cloud"
    assert decide(allowed(4, priority="HIGH", quality="high"), cloud).action == "cloud"
    assert decide(facts(4, **late), cloud).action == "unload"  # not allowed: swap as before
    assert decide(allowed(3, priority="LOW", quality="high", waited=599), cloud).action == "wait"


def test_unknown_vram_policy_is_a_config_error(settings):
    from zmm.errors import InvalidInput
    from zmm.vram.policy import settings_from

    settings.override("worker.vram_policy", "yolo")
    with pytest.raises(InvalidInput, match="worker.vram_policy: one of swap, wait, cloud"):
        settings_from(settings)
