"""Claims by capability on a real spool: a worker takes only jobs pinned to its
backend or to none, whose every needed model file its server has; jobs from
before schema 10 (no needs) run anywhere; the loaded-model preference works
among the jobs each backend can run; and the cloud rule for jobs no live
backend can run."""

from __future__ import annotations

import json

import pytest

from zmm import intake
from zmm.store import Route, queries

SDXL = "checkpoints/sd_xl_base_1.0.safetensors"
SD15 = "checkpoints/v1-5-pruned-emaonly.safetensors"


def enqueue(spool, settings, **fields) -> str:
    (job,) = spool.enqueue(intake.build({"prompt": "route", "size": "64x64", **fields}, settings))
    return job.id


def claim(spool, route, **kwargs):
    job = spool.claim("w", lease_s=60, aging_s=600, route=route, **kwargs)
    return job.id if job is not None else None


def test_needs_are_the_bound_graphs_model_files(spool, settings, tmp_path):
    sdxl = spool.get(enqueue(spool, settings))
    assert json.loads(sdxl.needs) == [SDXL] and sdxl.on_backend is None
    flux = spool.get(enqueue(spool, settings, model="flux-dev", size=None))
    assert json.loads(flux.needs) == [
        "diffusion_models/flux1-dev.safetensors", "text_encoders/clip_l.safetensors",
        "text_encoders/t5xxl_fp16.safetensors", "vae/ae.safetensors"]
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "own.ckpt"}},
             "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "x.safetensors",
                                                          "model": ["1", 0], "clip": ["1", 1]}},
             "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}}}
    path = tmp_path / "own.json"
    path.write_text(json.dumps(graph))
    # A workflow without a sampler has no place for a prompt: none is given.
    custom = spool.get(enqueue(spool, settings, workflow=str(path), size=None, prompt=None))
    assert json.loads(custom.needs) == ["checkpoints/own.ckpt", "loras/x.safetensors",
                                        "nodes/CheckpointLoaderSimple", "nodes/LoraLoader",
                                        "nodes/SaveImage"]  # and its node classes


def test_a_job_is_claimed_only_where_every_needed_file_is(spool, settings):
    flux = enqueue(spool, settings, model="flux-dev", size=None)
    sdxl = enqueue(spool, settings)
    only_the_unet = Route.of("gpu0", ["diffusion_models/flux1-dev.safetensors", SDXL])
    assert claim(spool, only_the_unet) == sdxl  # flux, first in line, is stepped over
    assert claim(spool, only_the_unet) is None
    assert spool.get(flux).status == "queued"
    everything = Route.of("gpu1", json.loads(spool.get(flux).needs) + [SDXL, "loras/y.pt"])
    assert claim(spool, everything) == flux  # a superset of the needs is enough


def test_a_pinned_job_goes_only_to_its_backend(spool, settings):
    settings.backend_entries = [{"name": "gpu0", "url": "http://127.0.0.1:1"},
                                {"name": "gpu1", "url": "http://127.0.0.1:2"}]
    pinned = enqueue(spool, settings, on="gpu1")
    assert spool.get(pinned).on_backend == "gpu1"
    free = enqueue(spool, settings)
    assert claim(spool, Route.of("gpu0", [SDXL])) == free
    assert claim(spool, Route.of("gpu0", [SDXL])) is None
    assert claim(spool, Route.of("gpu1", [SDXL])) == pinned


def test_jobs_from_before_schema_10_have_no_needs_and_run_anywhere(spool, settings):
    old = enqueue(spool, settings)
    spool.conn.execute("UPDATE jobs SET needs = NULL WHERE id = ?", [old])
    spool.conn.commit()
    assert claim(spool, Route.of("gpu0", [])) == old


def test_without_a_route_any_job_is_claimed(spool, settings):
    job_id = enqueue(spool, settings, model="flux-dev", size=None)
    assert claim(spool, None) == job_id


def test_next_runnable_follows_the_route(spool, settings):
    flux = enqueue(spool, settings, model="flux-dev", size=None)
    sdxl = enqueue(spool, settings)
    assert spool.next_runnable(600) == flux
    assert spool.next_runnable(600, route=Route.of("gpu0", [SDXL])) == sdxl
    assert spool.next_runnable(600, route=Route.of("gpu0", [])) is None


@pytest.mark.parametrize("grouped", [False, True], ids=["head", "grouped"])
def test_the_routed_claim_reads_the_open_index(spool, settings, grouped):
    enqueue(spool, settings)
    sql, params = queries.candidates_query(0.0, 600, limit=5 if grouped else 1,
                                           route=Route.of("gpu0", [SDXL]))
    plan = " ".join(row[3] for row in spool.conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "USING INDEX jobs_open" in plan and "SCAN jobs" not in plan


def test_a_file_name_is_matched_whole_not_as_part_of_another(spool, settings):
    job_id = enqueue(spool, settings)
    assert claim(spool, Route.of("gpu0", [SDXL + ".bak", "x" + SDXL])) is None
    assert claim(spool, Route.of("gpu0", ["é/ü.safetensors", SDXL])) == job_id


def test_the_loaded_model_preference_counts_only_jobs_the_backend_can_run(spool, settings):
    a = enqueue(spool, settings)  # sdxl
    b = enqueue(spool, settings, model="sd15")
    c = enqueue(spool, settings)  # sdxl
    both = Route.of("gpu1", [SDXL, SD15])
    sd15_only = Route.of("gpu0", [SD15])
    # gpu0 cannot run a or c: its window holds b alone, and a is not passed over by it.
    assert claim(spool, sd15_only, prefer_model="sd_xl_base_1.0.safetensors",
                 group_window=4) == b
    assert spool.get(a).passed_over == 0
    # gpu1 runs everything and has sdxl loaded: it takes a, then c, in order.
    assert claim(spool, both, prefer_model="sd_xl_base_1.0.safetensors", group_window=4) == a
    assert claim(spool, both, prefer_model="sd_xl_base_1.0.safetensors", group_window=4) == c


def test_grouping_passes_over_only_jobs_the_backend_could_have_run(spool, settings):
    a = enqueue(spool, settings)  # sdxl
    b = enqueue(spool, settings, model="sd15")
    both = Route.of("gpu1", [SDXL, SD15])
    assert claim(spool, both, prefer_model="v1-5-pruned-emaonly.safetensors",
                 group_window=4) == b
    assert spool.get(a).passed_over == 1


def test_the_cloud_takes_a_stranded_job_after_its_max_wait_only(spool, settings, clock):
    stranded = spool.get(enqueue(spool, settings, model="flux-dev", size=None,
                                 allow_cloud=True, priority="HIGH"))
    runnable = enqueue(spool, settings, allow_cloud=True, priority="HIGH")
    routes = spool.fallback_routes()
    assert sorted(routes, key=str) == sorted([(stranded.needs, None),
                                              (spool.get(runnable).needs, None)], key=str)
    waits = {"HIGH": 30.0}
    take = dict(lease_s=60, down_since=None, max_wait_s=waits,
                stranded=[(stranded.needs, None)])
    clock.advance(29)
    assert spool.claim_for_cloud("w", **take) is None
    clock.advance(2)
    assert spool.claim_for_cloud("w", **take).id == stranded.id
    assert spool.claim_for_cloud("w", **take) is None  # the runnable one stays for ComfyUI
    assert spool.get(runnable).status == "queued"


@pytest.mark.parametrize("window", [0, 4])  # the one-statement claim and the grouped one
def test_a_drained_backend_claims_nothing_until_resumed(spool, settings, window):
    loaded = "v1-5-pruned-emaonly.safetensors" if window else None
    job_id = enqueue(spool, settings)
    spool.set_draining("gpu0", "http://gpu0", True)
    assert claim(spool, Route.of("gpu0", [SDXL]), prefer_model=loaded, group_window=window) is None
    assert claim(spool, Route.of("gpu1", [SDXL]), prefer_model=loaded, group_window=window) \
        == job_id  # another backend is not drained
    other = enqueue(spool, settings)
    spool.set_draining("gpu0", "http://gpu0", False)
    assert claim(spool, Route.of("gpu0", [SDXL]), prefer_model=loaded, group_window=window) \
        == other
