"""A job's params are its request, written once: parsed into one JobParams per
job, never rewritten by a worker, and an older spool's decisions inside params
read the same after migration 0017 moved them into columns."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

from zmm import intake
from zmm.job_params import JobParams
from zmm.store import Store
from zmm.store.db import _statements, migrations
from zmm.vram import gate


def claimed(store, settings, **fields):
    store.enqueue(intake.build(dict({"prompt": "a lighthouse", "quality": "draft"}, **fields),
                               settings))
    return store.claim("worker-1", lease_s=60, aging_s=600)


def test_the_params_a_spec_stores_are_the_ones_a_job_reads(store, settings):
    (spec,) = intake.build({"prompt": "a lighthouse", "seed": "7", "enhance": "on"}, settings)
    job = store.get(store.enqueue([spec])[0].id)
    assert job.request.as_dict() == json.loads(json.dumps(spec.stored_params()))
    assert (job.request.enhance, job.request.model_key, job.request.negative) == (
        "on", spec.model_key, spec.negative_prompt)
    assert job.request is job.request  # parsed once per job


def test_a_worker_s_decisions_leave_the_params_as_queued(store, settings):
    job = claimed(store, settings, model="sdxl")
    queued = store.get(job.id).params
    store.update(job.id, worker_id="worker-1", oom_retried=1, enhance_skipped="Ollama is down",
                 vram_wait_ts=5.0)
    downgraded = gate.downgrade_to_sd15(store, settings, store.get(job.id), "no room")
    assert downgraded.params == queued
    assert (downgraded.oom_retried, downgraded.enhance_skipped, downgraded.vram_wait_ts,
            downgraded.downgraded_from) == (1, "Ollama is down", 5.0, job.model_requested)
    request = downgraded.request  # ...and read as the SD1.5 job the gate made of it
    assert (request.model_key, request.family, request.get("checkpoint"),
            request.get("width"), request.get("height")) == (
        "sd15", "sd15", settings.get("models.sd15"), downgraded.width, downgraded.height)


def test_the_store_refuses_to_rewrite_params(store, settings):
    job = claimed(store, settings)
    with pytest.raises(ValueError, match="params"):
        store.update(job.id, worker_id="worker-1", params="{}")


def test_an_older_spool_s_decisions_in_params_read_the_same(settings):
    settings.spool_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(settings.spool_path)
    for version, _name, script in migrations()[:16]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
    # As an older worker left a downgraded job: the SD1.5 values written over the request.
    before = {"prompt": "p", "model_key": "sd15", "checkpoint": "v1-5.safetensors",
              "width": 512, "height": 512, "enhance": "on", "family": "sd15",
              "loader": "checkpoint", "precision": "fp16"}
    decided = {"oom_retried": True, "enhance_skipped": "Ollama is down",
               "vram_wait_since": 12.5, "downgraded_from": "sd_xl_base_1.0.safetensors"}
    for job_id, params in (("mmg-decided", dict(before, **decided)), ("mmg-plain", before)):
        conn.execute("INSERT INTO jobs (id, status, priority, priority_rank, prompt, requester, "
                     "workflow, params, model_requested, width, height, created_at, queued_at, "
                     "queued_ts, updated_at) VALUES (?, 'queued', 'HIGH', 1, 'p', 'user', "
                     "'sd15-txt2img', ?, 'v1-5.safetensors', 512, 512, "
                     "'2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z', 0, "
                     "'2026-11-01T00:00:00.000000Z')", [job_id, json.dumps(params)])
    conn.commit()
    conn.close()
    with Store(settings.spool_path) as upgraded:
        job, plain = upgraded.get("mmg-decided"), upgraded.get("mmg-plain")
    assert (job.oom_retried, job.enhance_skipped, job.vram_wait_ts, job.downgraded_from) == (
        1, "Ollama is down", 12.5, "sd_xl_base_1.0.safetensors")
    assert json.loads(job.params) == before == job.request.as_dict()
    assert (plain.oom_retried, plain.enhance_skipped, plain.vram_wait_ts,
            plain.downgraded_from) == (0, None, None, None)
    assert plain.request == JobParams.parse(json.dumps(before))


def test_a_spec_s_fields_named_as_columns_are_stored_in_those_columns(store, settings):
    (spec,) = intake.build({"prompt": "a lighthouse", "seed": "7", "quality": "high",
                            "backend": "local", "webhook": "http://127.0.0.1:9/hook"}, settings)
    job = store.get(store.enqueue([spec])[0].id)
    shared = ({item.name for item in dataclasses.fields(spec)}
              & {item.name for item in dataclasses.fields(job)})
    assert {"negative_prompt", "quality_tier", "model_requested", "backend_requested",
            "webhook_url", "on_backend", "cloud_allowed", "enhanced_prompt"} <= shared
    shared.remove("prompt")  # the column keeps what was typed; the spec's is styled
    assert job.prompt == spec.user_prompt
    stored = {name: getattr(job, name) for name in shared}
    stored["needs"] = json.loads(stored["needs"])
    assert stored == {name: getattr(spec, name) for name in shared}
