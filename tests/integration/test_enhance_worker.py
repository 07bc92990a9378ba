"""Prompt enhancement in the worker, against the fake Ollama and fake ComfyUI (and,
for the GPU order, the fake NVML on one VRAM ledger): the enhanced prompt reaches
the submitted graph, the LLM answers before the swap unloads it and is reloaded
after, failures fall back (or fail, when required) with the cause in an event,
and a decision once made is never asked for again."""

from __future__ import annotations

import json

import pytest

from tests.conftest import closed_url, drive, run_zmm
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.nvml import fake_nvml
from tests.fakes.ollama import FakeOllama
from tests.fakes.vram import GIB, VramLedger
from tests.workers import make_worker as build_test_worker
from zmm import intake
from zmm.assets import zmm_metadata
from zmm.backends import gpu
from zmm.backends.comfy import ComfyClient
from zmm.backends.ollama import OllamaClient
from zmm.config import load
from zmm.store import Store
from zmm.vram.gate import SWAP_KEY, VramGate

LLM = "llama3.1:13b"
ANSWER = "a lighthouse at dusk, crashing waves, warm window light, watercolour texture"


@pytest.fixture
def ollama(monkeypatch):
    """The fake Ollama, and $ZMM_OLLAMA_URL (of this test and its processes) on it."""
    with FakeOllama(models={LLM: 14 * GIB, "llama3.2:latest": 2 * GIB}) as fake:
        fake.reply = ANSWER
        monkeypatch.setenv("ZMM_OLLAMA_URL", fake.url)
        yield fake


def make_worker(home, comfy, ollama_url, *, gate_ollama=None, **overrides):
    settings = load(home)
    for key, value in {"comfyui.url": comfy.url, "ollama.url": ollama_url,
                       "worker.poll_s": 0.05, "enhance.model": LLM, "enhance.timeout_s": 5.0,
                       "ollama.queue_end_delay_s": 0.2, "ollama.unload_timeout_s": 2.0,
                       **overrides}.items():
        settings.override(key, value)
    store = Store(settings.spool_path)
    gate = None
    if gate_ollama is not None:
        gate = VramGate(store, settings, ollama=OllamaClient(gate_ollama, timeout=5),
                        free_bytes=gpu.free_bytes, notice=lambda _text: None)
    worker = build_test_worker(store, ComfyClient(comfy.url, timeout=5), settings, gate=gate,
                    vram_used=gpu.used_bytes)
    return worker, store, settings


def enqueue(store, settings, **fields):
    raw = {"prompt": "a lighthouse", "steps": "2", "size": "64x64", **fields}
    return [job.id for job in store.enqueue(intake.build(raw, settings))]


def prompt_texts(submission):
    """The CLIPTextEncode texts of a submitted graph: the prompt, then the negative."""
    return [node["inputs"]["text"] for node in submission["prompt"].values()
            if node["class_type"] == "CLIPTextEncode"]


def text_requests(fake):
    return [body for path, _, body in fake.requests
            if path in ("/api/chat", "/api/generate") and (body.get("messages")
                                                           or body.get("prompt"))]


def test_the_enhanced_prompt_reaches_the_graph_the_spool_and_the_png(home, comfy, ollama):
    worker, store, settings = make_worker(home, comfy, ollama.url)
    (job_id,) = enqueue(store, settings, enhance="on", style="report-cover")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    job = store.get(job_id)
    assert job.prompt == "a lighthouse" and job.enhanced_prompt == ANSWER
    assert prompt_texts(comfy.submissions[0])[0] == ANSWER
    (asked,) = text_requests(ollama)
    assert asked["model"] == LLM and asked["stream"] is False
    system, user = asked["messages"]
    assert user == {"role": "user", "content": "a lighthouse"}
    assert "report cover" in system["content"] and "comma-separated" in system["content"]
    enhanced = [e for e in store.events(job_id) if e["kind"] == "enhanced"]
    assert len(enhanced) == 1 and enhanced[0]["data"]["model"] == LLM
    kinds = [e["kind"] for e in store.events(job_id)]
    assert kinds.index("enhanced") < kinds.index("submitted")
    meta = zmm_metadata(job.output_file(settings.assets_dir))
    assert meta["prompt"] == "a lighthouse" and meta["enhanced_prompt"] == ANSWER
    assert meta["enhance"] == "on"
    worker.client.close()
    store.close()


def test_a_flux_job_asks_for_sentences(home, comfy, ollama):
    comfy.set_model_files("diffusion_models", ["flux1-schnell.safetensors"])
    worker, store, settings = make_worker(home, comfy, ollama.url,
                                          **{"enhance.endpoint": "generate"})
    (job_id,) = enqueue(store, settings, enhance="on", model="flux-schnell")
    drive(worker, lambda: store.get(job_id).status != "running"
          and store.get(job_id).enhanced_prompt is not None)
    (asked,) = text_requests(ollama)
    assert asked["prompt"] == "a lighthouse" and "sentences" in asked["system"]
    assert "flux-schnell" in asked["system"]
    store.close()
    worker.client.close()


@pytest.mark.parametrize("trouble,cause", [
    ("down", "unreachable: connection refused"),
    ("slow", "unreachable: timed out after 0.3s"),
    ("missing", "has no model 'nope'"),
    ("empty", "gave an empty answer"),
    ("busy", "Ollama answered 503"),
])
def test_ollama_trouble_runs_the_original_prompt_and_says_why(home, comfy, ollama, trouble,
                                                               cause):
    url, overrides = ollama.url, {}
    if trouble == "down":
        url = closed_url()
    elif trouble == "slow":
        ollama.text_latency = 3.0
        overrides["enhance.timeout_s"] = 0.3
    elif trouble == "missing":
        overrides["enhance.model"] = "nope"
    elif trouble == "empty":
        ollama.reply = '<think>what do they want?</think> "" '
    else:
        ollama.busy_503()
    worker, store, settings = make_worker(home, comfy, url, **overrides)
    (job_id,) = enqueue(store, settings, enhance="on")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    job = store.get(job_id)
    assert job.enhanced_prompt is None and prompt_texts(comfy.submissions[0])[0] == "a lighthouse"
    (skipped,) = [e for e in store.events(job_id) if e["kind"] == "enhance_skipped"]
    assert cause in skipped["message"] and "original prompt" in skipped["message"]
    assert skipped["data"]["cause"] in skipped["message"]
    assert job.enhance_skipped == skipped["data"]["cause"]
    store.close()
    worker.client.close()


def test_required_enhancement_fails_the_job_with_the_reason(home, comfy, ollama):
    worker, store, settings = make_worker(home, comfy, ollama.url,
                                          **{"enhance.model": "nope"})
    (job_id,) = enqueue(store, settings, enhance="required")
    drive(worker, lambda: store.get(job_id).status == "failed")
    job = store.get(job_id)
    assert "has no model 'nope'" in job.error_message and "required" in job.error_message
    assert comfy.submissions == []  # nothing reached ComfyUI
    store.close()
    worker.client.close()


def test_a_retry_binds_the_same_prompt_without_asking_again(home, comfy, ollama):
    comfy.oom_next_execution()  # the first attempt fails; the job goes back to the queue
    worker, store, settings = make_worker(home, comfy, ollama.url)
    (job_id,) = enqueue(store, settings, enhance="required")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    assert store.get(job_id).attempts == 1 and len(comfy.submissions) == 2
    assert [prompt_texts(s)[0] for s in comfy.submissions] == [ANSWER, ANSWER]
    assert len(text_requests(ollama)) == 1
    # a new worker (a restart) on the finished job's siblings asks only for new jobs
    worker.client.close()
    store.close()


def test_a_fallback_once_made_is_kept_by_a_restarted_worker(home, comfy, ollama):
    worker, store, settings = make_worker(home, comfy, closed_url())
    comfy.oom_next_execution()
    (job_id,) = enqueue(store, settings, enhance="on")
    drive(worker, lambda: store.get(job_id).attempts == 1)
    worker.client.close()
    again, store2, _ = make_worker(home, comfy, ollama.url)  # Ollama is back
    drive(again, lambda: store2.get(job_id).status == "succeeded")
    assert text_requests(ollama) == []
    assert [prompt_texts(s)[0] for s in comfy.submissions] == ["a lighthouse"] * 2
    again.client.close()
    store.close()
    store2.close()


def test_off_by_default_and_per_style_defaults_from_config(home, comfy, ollama):
    worker, store, settings = make_worker(home, comfy, ollama.url,
                                          **{"enhance.styles": {"infographic": "on"}})
    plain, styled, refused = (enqueue(store, settings)[0],
                              enqueue(store, settings, style="infographic")[0],
                              enqueue(store, settings, style="infographic", enhance="off")[0])
    drive(worker, lambda: all(store.get(i).status == "succeeded"
                              for i in (plain, styled, refused)))
    assert [store.get(i).enhanced_prompt for i in (plain, styled, refused)] == [
        None, ANSWER, None]
    assert len(text_requests(ollama)) == 1
    store.close()
    worker.client.close()


@pytest.fixture
def gpu_world(tmp_path):
    ledger = VramLedger(total_bytes=24 * GIB)
    fake = FakeOllama(models={LLM: 14 * GIB}, ledger=ledger).start()
    fake.reply = ANSWER
    comfy = FakeComfyUI(ledger=ledger, output_dir=tmp_path / "out").start()
    try:
        with gpu.use_backend(fake_nvml(ledger)):
            yield ledger, fake, comfy
    finally:
        comfy.stop()
        fake.stop()


def test_on_the_gpu_the_llm_answers_then_is_swapped_out_then_reloaded(home, gpu_world):
    ledger, ollama, comfy = gpu_world
    ollama.preload(LLM, keep_alive=3600)  # the LLM already shares the GPU
    worker, store, settings = make_worker(home, comfy, ollama.url, gate_ollama=ollama.url)
    (job_id,) = enqueue(store, settings, enhance="on", quality="high", priority="HIGH")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    drive(worker, lambda: store.get_state(SWAP_KEY) is None and LLM in ollama.loaded)
    order = []
    for path, _, body in ollama.requests:
        if path == "/api/chat" and body.get("messages"):
            order.append("enhance")
        elif path == "/api/generate" and body.get("keep_alive") == 0:
            order.append("unload")
        elif path == "/api/generate" and body.get("keep_alive") not in (0, None):
            order.append("reload")
    assert order == ["enhance", "unload", "reload"]
    kinds = [e["kind"] for e in store.events(job_id)]
    assert kinds.index("enhanced") < kinds.index("swap") < kinds.index("submitted")
    assert prompt_texts(comfy.submissions[0])[0] == ANSWER
    assert store.get(job_id).vram_used_gb >= 12  # the image ran with the LLM out of VRAM
    store.close()
    worker.client.close()


# -- the command line: --print-workflow, history show, --from, --from-image ------------


@pytest.fixture
def cli_ollama(ollama, monkeypatch, home):
    monkeypatch.setenv("ZMM_ENHANCE_MODEL", LLM)
    return ollama


def printed_prompt(result):
    assert result.exit_code == 0, result.stderr
    graph = json.loads(result.stdout)
    return [node["inputs"]["text"] for node in graph.values()
            if node["class_type"] == "CLIPTextEncode"][0]


def test_print_workflow_with_enhance_asks_ollama_from_the_cli(cli, cli_ollama, settings):
    assert printed_prompt(cli("generate", "a lighthouse", "--enhance",
                              "--print-workflow")) == ANSWER
    # a bare --enhance before the prompt leaves the prompt a prompt
    assert printed_prompt(cli("generate", "--enhance", "a lighthouse",
                              "--print-workflow")) == ANSWER
    assert printed_prompt(cli("generate", "--enhance", "required", "a lighthouse",
                              "--print-workflow")) == ANSWER
    assert printed_prompt(cli("generate", "a lighthouse", "--print-workflow")) == "a lighthouse"
    assert len(text_requests(cli_ollama)) == 3
    assert not settings.spool_path.exists()  # nothing queued


def test_print_workflow_when_ollama_cannot(cli, home, settings):
    best_effort = cli("generate", "a lighthouse", "--enhance", "--print-workflow")
    assert printed_prompt(best_effort) == "a lighthouse"
    assert "warning: prompt enhancement failed: Ollama at" in best_effort.stderr
    assert "connection refused" in best_effort.stderr
    required = cli("generate", "a lighthouse", "--enhance=required", "--print-workflow")
    assert required.exit_code == 4 and required.stdout == ""
    assert required.stderr.startswith("error: prompt enhancement failed: Ollama at")


@pytest.mark.parametrize("args,message", [
    (["--enhance", "--no-enhance"], "enhance: give --enhance or --no-enhance, not both"),
    (["--enhance=maybe"], "enhance: one of off, on, required"),
])
def test_bad_enhance_flags_are_usage_errors(cli, home, settings, args, message):
    result = cli("generate", "a lighthouse", *args, "--no-wait")
    assert result.exit_code == 2 and message in result.stderr
    assert not settings.spool_path.exists()


def test_from_file_lines_carry_an_enhance_field(cli, home, settings, tmp_path):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "one", "enhance": true}\n{"prompt": "two", "enhance": '
                     '"required"}\n{"prompt": "three"}\n{"prompt": "four", "enhance": false}\n')
    ids = cli("generate", "--from", str(batch), "--no-wait").stdout.split()
    with Store(settings.spool_path) as store:
        modes = [store.get(i).request.get("enhance") for i in ids]
    assert modes == ["on", "required", None, None]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "one", "enhance": "loud"}\n')
    result = cli("generate", "--from", str(bad), "--no-wait")
    assert result.exit_code == 2 and "line 1: enhance: one of off, on, required" in result.stderr


def test_history_show_and_from_image_after_an_enhanced_job(cli, home, comfy, ollama,
                                                           monkeypatch):
    worker, store, settings = make_worker(home, comfy, ollama.url)
    (job_id,) = enqueue(store, settings, enhance="on")
    drive(worker, lambda: store.get(job_id).status == "succeeded")
    png = store.get(job_id).output_file(settings.assets_dir)
    worker.client.close()
    store.close()
    shown = " ".join(cli("history", "show", job_id).stdout.split())
    assert f"prompt a lighthouse enhanced_prompt {ANSWER} negative_prompt" in shown
    assert "enhance on" in shown and f"enhanced prompt enhanced by {LLM}" in shown
    data = cli.json("history", "show", job_id, "--json")
    assert data["job"]["prompt"] == "a lighthouse" and data["job"]["enhanced_prompt"] == ANSWER
    monkeypatch.setenv("ZMM_OLLAMA_URL", closed_url())  # Ollama is not asked again
    again = cli("generate", "--from-image", str(png), "--print-workflow")
    assert printed_prompt(again) == ANSWER and again.stderr == ""
    plain = cli("generate", "--from-image", str(png), "--no-enhance", "--print-workflow")
    assert printed_prompt(plain) == "a lighthouse"


@pytest.mark.slow
def test_a_real_generate_enhances_inline_and_prints_both_prompts(worker_env, ollama, home):
    result = run_zmm("generate", "--enhance", "a lighthouse", "--size", "64x64", "--steps",
                     "2", "--json", env={"ZMM_ENHANCE_MODEL": LLM}, timeout=60)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    assert job["prompt"] == "a lighthouse" and job["enhanced_prompt"] == ANSWER
    assert job["status"] == "succeeded" and len(text_requests(ollama)) == 1


def test_the_llms_timeout_stays_inside_the_jobs_lease(home, comfy, ollama):
    ollama.text_latency = 3.0
    worker, store, settings = make_worker(home, comfy, ollama.url, **{
        "enhance.timeout_s": 30.0, "worker.lease_s": 0.4})
    (job_id,) = enqueue(store, settings, enhance="on")
    drive(worker, lambda: any(e["kind"] == "enhance_skipped" for e in store.events(job_id)))
    (skipped,) = [e for e in store.events(job_id) if e["kind"] == "enhance_skipped"]
    assert "timed out after 0.3s" in skipped["message"]  # 3/4 of the 0.4 s lease
    assert store.get(job_id).worker_id == worker.id  # still this worker's job
    store.close()
    worker.client.close()
