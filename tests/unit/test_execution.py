"""One job's life on ComfyUI (zmm.worker.execution): judge() for every verdict,
submit()'s ambiguous failures, locate() and prompt_id_for(), against the fake
ComfyUI on 127.0.0.1 or an httpx.MockTransport shaped like the real server."""

from __future__ import annotations

import dataclasses
import io
import json
import time

import httpx
import pytest
from PIL import Image

from tests.fakes.comfy_routes import client_for
from zmm import assets, intake
from zmm.assets import metadata_for
from zmm.backends.comfy import ComfyClient
from zmm.errors import ComfyServerError, NotFound, WorkflowRejected
from zmm.outcome import OutcomeKind
from zmm.worker.capability import Capability
from zmm.worker.execution import GraphBuilder, Inflight, judge, locate, prompt_id_for, submit
from zmm.worker.observer import QuietObserver


@pytest.fixture
def client(comfy):
    opened = ComfyClient(comfy.url, timeout=5)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def job(store, settings):
    store.enqueue(intake.build({"prompt": "a red square", "size": "64x64", "steps": "1",
                                "quality": "draft", "seed": "7"}, settings))
    return store.claim("worker-1", lease_s=60, aging_s=600)


def eventually(probe, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met before the deadline")


@pytest.fixture
def builder(client, store, settings) -> GraphBuilder:
    """A builder asking the worker's one list of the server's files, as a worker's does."""
    files = Capability(store, client, name="default", refresh_s=60, notice=lambda text: None,
                       monotonic=time.monotonic)
    return GraphBuilder(client, settings.workflows_dir, files=files)


def start(client, builder, job) -> Inflight:
    graph = builder.build(job)
    prompt_id = prompt_id_for(job)
    submit(client, graph, prompt_id, "client-1", metadata_for(job))
    return Inflight(job=job, prompt_id=prompt_id, graph=graph, submitted=10.0, started=11.0)


def finished(client, builder, job):
    inflight = start(client, builder, job)
    return inflight, eventually(lambda: client.history(inflight.prompt_id))


def interrupted(comfy, client, builder, job):
    comfy.hang(True)
    inflight = start(client, builder, job)
    eventually(lambda: comfy.queue_ids()[0] == [inflight.prompt_id])
    client.interrupt(inflight.prompt_id)
    inflight.interrupted = True
    entry = eventually(lambda: client.history(inflight.prompt_id))
    comfy.hang(False)
    return inflight, entry




def png(width=8, height=8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, "PNG")
    return buffer.getvalue()


def success_entry(prompt_id: str, outputs: dict) -> dict:
    return {prompt_id: {
        "prompt": [0, prompt_id, {}, {"client_id": "c"}, list(outputs)], "outputs": outputs,
        "status": {"status_str": "success", "completed": True, "messages": [
            ["execution_start", {"prompt_id": prompt_id, "timestamp": 1}],
            ["execution_success", {"prompt_id": prompt_id, "timestamp": 2}]]},
        "meta": {}}}


QUEUE_EMPTY = httpx.Response(200, json={"queue_running": [], "queue_pending": []})
CRASH = httpx.Response(500, text="500 Internal Server Error\n\nServer got itself in trouble")


# -- judge -----------------------------------------------------------------------------


def test_success_saves_the_image_with_its_metadata_and_reports_the_fields(
        comfy, client, settings, job, builder):
    inflight, entry = finished(client, builder, job)
    outcome = judge(inflight, entry, client, settings.assets_dir, clock=lambda: 13.5)
    assert outcome.kind == "succeeded"
    fields = outcome.fields
    path = settings.assets_dir / fields["output_path"]
    assert outcome.message == fields["output_path"] and path.is_file()
    assert assets.zmm_metadata(path)["job_id"] == job.id
    assert (fields["width"], fields["height"]) == (64, 64)
    assert fields["file_size_bytes"] == path.stat().st_size
    assert fields["generation_time_s"] == 2.5  # from execution start, on the given clock
    assert fields["model_used"] == job.model_requested and fields["backend"] == "local"
    assert json.loads(fields["outputs"]) == [fields["output_path"]]
    assert fields["thumbnail_path"] and (settings.assets_dir / fields["thumbnail_path"]).is_file()


def test_no_record_of_the_prompt_is_queued_again_using_an_attempt(client, settings, job):
    inflight = Inflight(job=job, prompt_id=job.id, graph={}, submitted=0.0)
    outcome = judge(inflight, None, client, settings.assets_dir)
    assert (outcome.kind, outcome.consume_attempt) == ("requeue", True)
    assert "no record" in outcome.message


@pytest.mark.parametrize(("reason", "kind", "consume", "backoff"), [
    ("cancel", "cancelled", False, False),
    ("signal", "requeue", False, False),
    ("preempt", "requeue", False, False),
    ("silence", "requeue", True, True),
    (None, "requeue", True, False),  # interrupted on the server, not by zmm
])
def test_an_interrupted_prompt_by_who_stopped_it(comfy, client, settings, job, reason, kind,
                                                 consume, backoff, builder):
    inflight, entry = interrupted(comfy, client, builder, job)
    assert entry.interrupted
    inflight.stop_reason = reason
    outcome = judge(inflight, entry, client, settings.assets_dir)
    assert (outcome.kind, outcome.consume_attempt, outcome.backoff) == (kind, consume, backoff)
    assert list(settings.assets_dir.rglob("*.png")) == []


def test_out_of_memory_is_queued_again_marked_for_freeing_vram(comfy, client, settings, job, builder):
    comfy.oom_next_execution()
    inflight, entry = finished(client, builder, job)
    outcome = judge(inflight, entry, client, settings.assets_dir)
    assert (outcome.kind, outcome.consume_attempt, outcome.oom, outcome.fields) == (
        OutcomeKind.REQUEUE, True, True, {})


def test_a_node_error_fails_with_comfyui_s_own_first_line(comfy, client, settings, job, builder):
    comfy.fail_next_execution(node_type="KSampler", exception_type="RuntimeError",
                              message="mat1 and mat2 shapes cannot be multiplied\nTraceback...")
    inflight, entry = finished(client, builder, job)
    outcome = judge(inflight, entry, client, settings.assets_dir)
    assert outcome.kind == "failed" and outcome.consume_attempt is False
    assert outcome.message == ("ComfyUI node 3 (KSampler) raised RuntimeError: "
                               "mat1 and mat2 shapes cannot be multiplied")
    assert outcome.fields == {"error_message": outcome.message}


def test_the_websocket_s_error_wins_over_the_history_s(comfy, client, settings, job, builder):
    comfy.fail_next_execution(message="from history")
    inflight, entry = finished(client, builder, job)
    inflight.error = {"node_id": "8", "node_type": "VAEDecode", "exception_type": "ValueError",
                      "exception_message": "from the websocket"}
    outcome = judge(inflight, entry, client, settings.assets_dir)
    assert outcome.message == "ComfyUI node 8 (VAEDecode) raised ValueError: from the websocket"


def test_a_finished_workflow_without_an_image_fails(settings, job):
    client = client_for({f"GET /history/{job.id}": httpx.Response(200, json=success_entry(
        job.id, {"12": {"text": ["only text"]}}))})
    inflight = Inflight(job=job, prompt_id=job.id, graph={}, submitted=0.0)
    outcome = judge(inflight, client.history(job.id), client, settings.assets_dir)
    assert outcome.kind == "failed" and "without saving an image" in outcome.message


def test_a_job_keeps_all_of_its_files_or_none(settings, job):
    images = [{"filename": f"zmm_{n}.png", "subfolder": "zmm", "type": "output"} for n in (1, 2)]
    client = client_for({
        f"GET /history/{job.id}": httpx.Response(200, json=success_entry(
            job.id, {"9": {"images": images}})),
        "GET /view": lambda r: (httpx.Response(200, content=png())
                                if r.url.params["filename"] == "zmm_1.png" else
                                httpx.Response(404)),
    })
    inflight = Inflight(job=job, prompt_id=job.id, graph={}, submitted=0.0)
    with pytest.raises(NotFound):
        judge(inflight, client.history(job.id), client, settings.assets_dir)
    assert [p for p in settings.assets_dir.rglob("*") if p.is_file()] == []


# -- submit ----------------------------------------------------------------------------


def test_a_500_after_queueing_is_found_in_the_queue_and_not_sent_again(comfy, client,
                                                                       settings, job, builder):
    comfy.hang(True)
    comfy.fail_next_submits(accept_then_500=True)
    inflight = start(client, builder, job)  # raises if the prompt was not found
    assert comfy.queue_ids()[0] + comfy.queue_ids()[1] == [inflight.prompt_id]
    assert len(comfy.submissions) == 1
    comfy.hang(False)


def test_a_500_before_queueing_is_raised(comfy, client, settings, job, builder):
    comfy.fail_next_submits()
    with pytest.raises(ComfyServerError):
        start(client, builder, job)
    assert comfy.queue_ids() == ([], []) and comfy.history_ids() == []
    assert len(comfy.submissions) == 1


def test_a_500_for_a_prompt_already_in_the_history_is_taken_as_submitted(job):
    seen: list[httpx.Request] = []
    client = client_for({"POST /prompt": CRASH, "GET /queue": QUEUE_EMPTY,
                          f"GET /history/{job.id}": httpx.Response(200, json=success_entry(
                              job.id, {}))}, seen)
    submit(client, {"9": {}}, job.id, "c", {})
    assert [f"{r.method} {r.url.path}" for r in seen] == [
        "POST /prompt", "GET /queue", f"GET /history/{job.id}"]


def test_a_500_and_then_no_answer_to_the_lookup_is_the_500(job):
    def down(_request):
        raise httpx.ConnectError("connection refused")

    client = client_for({"POST /prompt": CRASH, "GET /queue": down})
    with pytest.raises(ComfyServerError):
        submit(client, {"9": {}}, job.id, "c", {})


def test_a_partly_accepted_graph_is_taken_off_comfyui_and_rejected(job):
    seen: list[httpx.Request] = []
    node_errors = {"5": {"errors": [{"type": "value_smaller_than_min", "message": "too small",
                                     "details": "width 0", "extra_info": {}}],
                         "dependent_outputs": ["9"], "class_type": "EmptyLatentImage"}}
    client = client_for({"POST /prompt": httpx.Response(200, json={
        "prompt_id": job.id, "number": 3, "node_errors": node_errors}),
        "POST /queue": httpx.Response(200), "POST /interrupt": httpx.Response(200)}, seen)
    with pytest.raises(WorkflowRejected, match="accepted only part of the workflow"):
        submit(client, {"9": {}}, job.id, "c", {})
    calls = [(r.method, r.url.path, json.loads(r.content) if r.content else None) for r in seen]
    assert calls[1:] == [("POST", "/queue", {"delete": [job.id]}),
                         ("POST", "/interrupt", {"prompt_id": job.id})]


def test_the_metadata_rides_along_in_extra_pnginfo(comfy, client, settings, job, builder):
    start(client, builder, job)
    extra = comfy.submissions[0]["extra_data"]["extra_pnginfo"]["zmm"]
    assert extra["job_id"] == job.id and extra["seed"] == 7 and extra["prompt"] == "a red square"


# -- locate and prompt_id_for ------------------------------------------------------------


def test_locate_queued_done_and_lost(comfy, client, settings, job, builder):
    assert locate(client, "never-sent") == "lost"
    comfy.hang(True)
    inflight = start(client, builder, job)
    eventually(lambda: comfy.queue_ids()[0])
    assert locate(client, inflight.prompt_id) == "queued"
    comfy.hang(False)
    eventually(lambda: client.history(inflight.prompt_id))
    assert locate(client, inflight.prompt_id) == "done"
    comfy.forget_history()  # a restarted ComfyUI: done is now lost, never done again
    assert locate(client, inflight.prompt_id) == "lost"


def test_a_pending_prompt_is_queued(job):
    pending = [[1, job.id, {}, {}, ["9"]]]
    client = client_for({"GET /queue": httpx.Response(200, json={
        "queue_running": [], "queue_pending": pending})})
    assert locate(client, job.id) == "queued"


def test_prompt_id_is_the_job_id_first_and_suffixed_on_retries(job):
    assert prompt_id_for(job) == job.id
    assert prompt_id_for(dataclasses.replace(job, attempts=2)) == f"{job.id}-r2"


# -- model families on the server ---------------------------------------------------------

@pytest.mark.parametrize("alias", ["sd35-medium", "flux-schnell"])
def test_a_split_family_job_runs_and_saves_its_image(comfy, client, store, settings, tmp_path,
                                                     alias, builder):
    store.enqueue(intake.build({"prompt": "a red square", "model": alias, "size": "64x64",
                                "steps": "2", "seed": "7"}, settings))
    job = store.claim("worker-1", lease_s=60, aging_s=600)
    inflight, entry = finished(client, builder, job)
    outcome = judge(inflight, entry, client, tmp_path / "assets")
    assert outcome.kind == "succeeded", outcome.message
    assert outcome.fields["model_used"] == settings.get(f"models.{alias}")
    (submitted,) = comfy.submissions
    loaders = {node["class_type"] for node in submitted["prompt"].values()}
    assert {"UNETLoader", "VAELoader"} <= loaders
    saved = assets.zmm_metadata(tmp_path / "assets" / outcome.fields["output_path"])
    assert (saved["family"], saved["loader"], saved["files"]["vae"]) == (
        alias, "split", settings.get(f"models.{alias.split('-')[0]}-vae"))


def test_a_split_file_added_after_the_first_look_is_found_on_the_refresh(comfy, store, settings,
                                                                        builder):
    comfy.set_model_files("vae", [])
    store.enqueue(intake.build({"prompt": "x", "model": "flux-dev", "size": "64x64"}, settings))
    job = store.claim("worker-1", lease_s=60, aging_s=600)
    with pytest.raises(WorkflowRejected, match="^VAE 'ae.safetensors' is not on the ComfyUI "
                       "server; it has: none at all"):
        builder.build(job)
    comfy.set_model_files("vae", ["ae.safetensors"])
    builder.build(job)  # the cached lists miss it; the one refresh finds it
    # ...in the worker's one list of the server's files, the one its claims use too
    assert "vae/ae.safetensors" in builder.files.files
    assert [row["files"] for row in store.backends()] == [builder.files.files]
    comfy.set_model_files("vae", [])
    builder.build(job)  # checked once per (template, files): the server is not asked again


def test_a_new_node_does_not_show_the_last_nodes_steps(job, store):
    """A hires job's second sampler starts at its own step 0, not at the first
    sampler's 3/3 (which read as pass 2 being done, then going back to 1/3)."""
    from zmm.backends.comfy_events import Event
    from zmm.worker import progress

    graph = {"3": {"class_type": "KSampler", "inputs": {}, "_meta": {"zmm_pass": "1/2"}},
             "10": {"class_type": "KSampler", "inputs": {}, "_meta": {"zmm_pass": "2/2"}}}
    inflight = Inflight(job=job, prompt_id=job.id, graph=graph, submitted=0.0, started=1.0)
    writer = progress.ProgressWriter(store, "worker-1", interval_s=0.0, observer=QuietObserver(),
                                     monotonic=time.monotonic)
    for event in (Event("executing", {"node": "3"}, job.id),
                  Event("progress", {"value": 3, "max": 3, "node": "3"}, job.id)):
        progress.apply_event(inflight, event, 2.0)
        writer.flush(inflight)
    assert (inflight.phase, inflight.progress) == ("pass 1/2 sampling", (3, 3, "3"))
    progress.apply_event(inflight, Event("executing", {"node": "10"}, job.id), 3.0)
    writer.flush(inflight)
    assert (inflight.phase, inflight.progress) == ("pass 2/2 sampling", None)
    row = store.get(job.id)
    assert (row.phase, row.progress_value, row.progress_max) == ("pass 2/2 sampling", None, None)
