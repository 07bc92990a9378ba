"""`zmm generate --print-workflow`: the bound graph on stdout, nothing queued,
no server needed, and the very graph the worker would submit."""

from __future__ import annotations

import json

import pytest

from zmm import intake, workflows
from zmm.worker.execution import GraphBuilder


def nodes_of(graph: dict, class_type: str) -> list[dict]:
    return [node for node in graph.values() if node["class_type"] == class_type]


def test_one_job_prints_one_bound_graph_and_writes_nothing(cli, settings):
    result = cli("generate", "a red fox", "--seed", "7", "--steps", "12", "--print-workflow")
    assert result.exit_code == 0, result.stderr
    graph = json.loads(result.stdout)
    assert workflows.placeholders(graph) == set()
    (sampler,) = nodes_of(graph, "KSampler")
    assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"]) == (7, 12)
    (save,) = nodes_of(graph, "SaveImage")
    assert save["inputs"]["filename_prefix"] == "zmm/mmg-00000000-000000-00000000"
    assert "a red fox" in [node["inputs"]["text"] for node in nodes_of(graph, "CLIPTextEncode")]
    assert not settings.home.exists()  # no spool, no assets: nothing at all was written


def test_count_prints_json_lines_one_graph_per_job(cli, settings):
    result = cli("generate", "a red fox", "--seed", "7", "--count", "3", "--print-workflow")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    graphs = [json.loads(line) for line in lines]
    assert len(graphs) == 3
    assert [nodes_of(g, "KSampler")[0]["inputs"]["seed"] for g in graphs] == [7, 8, 9]
    prefixes = [nodes_of(g, "SaveImage")[0]["inputs"]["filename_prefix"] for g in graphs]
    assert len(set(prefixes)) == 3
    assert not settings.spool_path.exists()


def test_a_from_file_prints_a_line_per_request(cli, settings, tmp_path):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "one", "quality": "draft"}\n{"prompt": "two", "count": 2}\n')
    result = cli("generate", "--from", str(batch), "--print-workflow", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    graphs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(graphs) == 3
    loaders = [nodes_of(g, "CheckpointLoaderSimple")[0]["inputs"]["ckpt_name"] for g in graphs]
    assert loaders == [settings.get("models.sd15"), settings.get("models.sdxl"),
                       settings.get("models.sdxl")]
    assert not settings.spool_path.exists()


def test_a_custom_workflow_prints_with_its_sets(cli):
    result = cli("generate", "x", "--workflow", "sd15-txt2img", "--set", "KSampler.denoise=0.5",
                 "--print-workflow")
    assert result.exit_code == 0, result.stderr
    assert nodes_of(json.loads(result.stdout), "KSampler")[0]["inputs"]["denoise"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["x", "--steps", "0"], "error: steps: an integer from 1 to 150"),
    (["x", "--backend", "cloud"], "error: print-workflow: a job for --backend cloud"),
])
def test_bad_input_prints_no_graph_and_writes_nothing(cli, settings, args, message):
    result = cli("generate", *args, "--print-workflow")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(message)
    assert not settings.spool_path.exists()


def test_the_printed_graph_is_what_the_worker_binds(cli, settings, spool):
    request = {"prompt": "a lighthouse", "seed": 11, "quality": "high", "aspect": "16:9"}
    result = cli("generate", "a lighthouse", "--seed", "11", "--quality", "high", "--aspect",
                 "16:9", "--print-workflow")
    printed = json.loads(result.stdout)
    (job,) = spool.enqueue(intake.build(request, settings))
    submitted = GraphBuilder(None, settings.workflows_dir).bind(job)  # type: ignore[arg-type]
    (save,) = nodes_of(submitted, "SaveImage")
    assert save["inputs"]["filename_prefix"] == workflows.filename_prefix(job.id)
    nodes_of(printed, "SaveImage")[0]["inputs"]["filename_prefix"] = save["inputs"][
        "filename_prefix"]
    assert printed == submitted


def test_the_printed_graph_carries_the_parts_and_still_writes_nothing(cli, settings):
    """LoRAs and the hires pass are part of what the job submits, so they print too;
    a LoRA is not looked up on a server that does not answer."""
    result = cli("generate", "a red fox", "--lora", "detail.safetensors:0.5", "--upscale", "2",
                 "--size", "512x512", "--print-workflow")
    assert result.exit_code == 0, result.stderr
    graph = json.loads(result.stdout)
    (lora,) = nodes_of(graph, "LoraLoader")
    assert (lora["inputs"]["lora_name"], lora["inputs"]["strength_model"]) == (
        "detail.safetensors", 0.5)
    assert len(nodes_of(graph, "KSampler")) == 2 and nodes_of(graph, "LatentUpscaleBy")
    assert not settings.home.exists()
