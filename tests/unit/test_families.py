"""Model families: --model aliases and files, --family, each family's defaults
and buckets, tiers mapped to any family, the VRAM table, and every family's
graph validated the way ComfyUI validates it (the fake's node specs, copied
from a real ComfyUI 0.3.64)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.fakes import comfyui_graph
from tests.fakes.comfyui import FakeComfyUI
from zmm import assets, config, families, intake, workflows
from zmm.assets import metadata_for
from zmm.errors import InvalidInput, WorkflowRejected
from zmm.vram import policy

FAKE = FakeComfyUI.__new__(FakeComfyUI)  # only its default file lists, no server
FakeComfyUI.__init__(FAKE)
SERVER_FILES = {"checkpoints": FAKE.checkpoints, **FAKE.model_files}


def one(raw, settings):
    (spec,) = intake.build(raw, settings)
    return spec


def refused(raw, settings) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        intake.build(raw, settings)
    return caught.value


def graph_of(spec) -> dict:
    (graph,) = workflows.printed_graphs([spec], None)
    return graph


def classes(graph: dict) -> dict[str, dict]:
    """class_type -> inputs (each class appears once, except CLIPTextEncode)."""
    return {node["class_type"]: node["inputs"] for node in graph.values()}


def comfy_validates(graph: dict, files: dict | None = None) -> None:
    """What ComfyUI's POST /prompt checks: node types exist, an output node,
    required inputs present, links typed right, values in choice lists and ranges."""
    files = files or SERVER_FILES
    types = comfyui_graph.node_types(list(files["checkpoints"]), files)
    assert comfyui_graph.top_level_error(graph, types) is None
    outputs, errors = comfyui_graph.validate(json.loads(json.dumps(graph)), types)
    assert errors == {} and outputs == ["9"]


def with_config(home, text: str):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)
    return config.load(home)


# -- every family's graph -----------------------------------------------------------

@pytest.mark.parametrize("alias", families.ALIASES)
def test_every_family_builds_a_graph_comfyui_accepts(settings, alias):
    spec = one({"prompt": "a lighthouse", "model": alias, "seed": 3}, settings)
    graph = graph_of(spec)
    assert workflows.placeholders(graph) == set()
    comfy_validates(graph)
    family = families.FAMILIES[alias]
    sampler = classes(graph)["KSampler"]
    assert (sampler["steps"], sampler["sampler_name"], sampler["scheduler"]) == (
        family.steps, family.sampler, family.scheduler)
    assert spec.model_key == alias and workflows.graph_model(graph) == spec.model_requested


def test_split_families_load_their_own_files(settings):
    flux = classes(graph_of(one({"prompt": "x", "model": "flux-dev"}, settings)))
    assert flux["UNETLoader"] == {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}
    assert flux["DualCLIPLoader"] == {"clip_name1": "clip_l.safetensors",
                                      "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}
    assert flux["VAELoader"] == {"vae_name": "ae.safetensors"}
    assert flux["FluxGuidance"]["guidance"] == 3.5 and flux["KSampler"]["cfg"] == 1.0
    assert "EmptySD3LatentImage" in flux and "CheckpointLoaderSimple" not in flux
    sd35 = classes(graph_of(one({"prompt": "x", "model": "sd35-large"}, settings)))
    assert sd35["TripleCLIPLoader"] == {"clip_name1": "clip_l.safetensors",
                                        "clip_name2": "clip_g.safetensors",
                                        "clip_name3": "t5xxl_fp16.safetensors"}
    assert sd35["ModelSamplingSD3"]["shift"] == 3.0 and sd35["KSampler"]["cfg"] == 3.5
    assert sd35["VAELoader"] == {"vae_name": "sd3.5_vae.safetensors"}


@pytest.mark.parametrize("group,model,node", [
    ("flux", "flux1-dev-fp8.safetensors", "FluxGuidance"),
    ("sd35", "sd3.5_large_fp8_scaled.safetensors", "ModelSamplingSD3")])
def test_an_all_in_one_checkpoint_loads_through_checkpoint_loader_simple(home, group, model,
                                                                         node):
    settings = with_config(home, f'[models]\n{group}-loader = "checkpoint"\n')
    spec = one({"prompt": "x", "model": model}, settings)
    graph = graph_of(spec)
    nodes = classes(graph)
    assert nodes["CheckpointLoaderSimple"] == {"ckpt_name": model} and node in nodes
    assert not {"UNETLoader", "VAELoader", "DualCLIPLoader", "TripleCLIPLoader"} & set(nodes)
    comfy_validates(graph, dict(SERVER_FILES, checkpoints=[model]))
    assert spec.extra["precision"] == "fp8"


def test_the_fake_refuses_what_comfyui_refuses_in_a_family_graph(settings):
    graph = graph_of(one({"prompt": "x", "model": "flux-schnell"}, settings))
    types = comfyui_graph.node_types(list(SERVER_FILES["checkpoints"]), SERVER_FILES)
    bad = json.loads(json.dumps(graph))
    for node in bad.values():
        if node["class_type"] == "DualCLIPLoader":
            node["inputs"]["type"] = "sd9"
        if node["class_type"] == "FluxGuidance":
            node["inputs"]["guidance"] = 101
        if node["class_type"] == "UNETLoader":
            del node["inputs"]["weight_dtype"]
    _, errors = comfyui_graph.validate(bad, types)
    kinds = sorted(error["type"] for info in errors.values() for error in info["errors"])
    assert kinds == ["required_input_missing", "value_bigger_than_max", "value_not_in_list"]


# -- resolving --model and --family ----------------------------------------------------

@pytest.mark.parametrize("name,family,precision", [
    ("flux1-schnell-fp8.safetensors", "flux-schnell", "fp8"),
    ("my_flux_finetune.safetensors", "flux-dev", "fp16"),
    ("sd3.5_large_turbo.safetensors", "sd35-large", "fp16"),
    ("sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors", "sd35-medium", "fp8"),
    ("juggernautXL_v9.safetensors", "sdxl", "fp16"),
    ("dreamshaper_8.safetensors", "sd15", "fp16"),  # says nothing: SD1.5, as always
])
def test_a_model_file_s_family_comes_from_its_name(settings, name, family, precision):
    spec = one({"prompt": "x", "model": name}, settings)
    assert (spec.model_key, spec.model_requested, spec.extra["precision"]) == (family, name,
                                                                          precision)


def test_family_names_the_family_of_a_file_whose_name_says_none(settings):
    spec = one({"prompt": "x", "model": "mystery.safetensors", "family": "sd35-large"}, settings)
    assert (spec.model_key, spec.steps, spec.width) == ("sd35-large", 28, 1024)
    assert classes(graph_of(spec))["UNETLoader"]["unet_name"] == "mystery.safetensors"


@pytest.mark.parametrize("raw,field,words", [
    ({"model": "sdxxl"}, "model", "unknown alias 'sdxxl'; allowed: sd15, sdxl, sd35-medium, "
                                  "sd35-large, flux-schnell, flux-dev, or a model file name"),
    ({"model": "a.safetensors", "family": "flux"}, "family", "one of sd15, sdxl"),
    ({"family": "flux-dev"}, "family", "only with --model FILE"),
    ({"model": "sdxl", "family": "flux-dev"}, "family", "only with --model FILE"),
    ({"model": "flux-dev", "size": "1000x1000"}, "size", "multiple of 16"),
])
def test_bad_model_input_names_the_field(settings, raw, field, words):
    error = refused({"prompt": "x", **raw}, settings)
    assert error.field == field and words in error.allowed


def test_a_broken_models_setting_names_the_config_key(home):
    settings = with_config(home, '[models]\nflux-loader = "both"\n')
    assert refused({"prompt": "x", "model": "flux-dev"}, settings).field == \
        "config models.flux-loader"
    settings = with_config(home, '[models]\nsd35-vae = "../vae.safetensors"\n')
    assert refused({"prompt": "x", "model": "sd35-medium"}, settings).field == \
        "config models.sd35-vae"


# -- buckets, tiers ------------------------------------------------------------------

@pytest.mark.parametrize("alias,aspect,size", [
    ("sd15", "16:9", (768, 432)), ("sd15", "1:1", (512, 512)), ("sdxl", "16:9", (1344, 768)),
    ("sd35-medium", "2:3", (832, 1216)), ("flux-schnell", "16:9", (1344, 768)),
    ("flux-dev", "1:1", (1024, 1024))])
def test_resolution_buckets_per_family(settings, alias, aspect, size):
    spec = one({"prompt": "x", "model": alias, "aspect": aspect}, settings)
    assert (spec.width, spec.height) == size


def test_quality_tiers_map_to_any_family_through_config(home):
    settings = with_config(home, '[quality.draft]\nmodel = "flux-schnell"\n\n'
                                 '[quality.high]\nmodel = "flux-dev"\nsteps = 30\ncfg = 1.5\n')
    draft = one({"prompt": "x", "quality": "draft"}, settings)
    assert (draft.model_key, draft.steps, draft.sampler, draft.cfg) == (
        "flux-schnell", 4, "euler", 1.0)  # the family's defaults, not SD1.5's tier values
    high = one({"prompt": "x", "quality": "high"}, settings)
    assert (high.model_key, high.steps, high.scheduler, high.cfg) == ("flux-dev", 30, "simple",
                                                                      1.5)
    standard = one({"prompt": "x"}, settings)  # untouched tiers keep their defaults
    assert (standard.model_key, standard.steps, standard.sampler) == ("sdxl", 25, "dpmpp_2m")


def test_a_tier_s_sampling_applies_to_its_own_family_only(settings):
    high = one({"prompt": "x", "quality": "high"}, settings)
    assert (high.steps, high.sampler) == (40, "dpmpp_2m_sde")
    flux = one({"prompt": "x", "quality": "high", "model": "flux-dev"}, settings)
    assert (flux.steps, flux.sampler, flux.cfg) == (20, "euler", 1.0)


# -- the VRAM table ---------------------------------------------------------------------

@pytest.mark.parametrize("alias,precision,gb", [
    ("sdxl", "fp16", 12), ("sd15", "fp16", 6), ("sd35-medium", "fp16", 10),
    ("sd35-medium", "fp8", 6), ("sd35-large", "fp16", 18), ("sd35-large", "fp8", 11),
    ("flux-schnell", "fp16", 24), ("flux-schnell", "fp8", 12), ("flux-dev", "fp16", 24),
    ("flux-dev", "fp8", 12), ("sdxl", "fp8", 12)])  # no fp8 row: the family's own
def test_the_vram_table_covers_every_family(settings, alias, precision, gb):
    rules = policy.settings_from(settings)
    assert policy.need_bytes(rules, alias, precision) == (gb + 2) * policy.GIB


def test_an_fp8_flux_job_runs_where_an_fp16_one_would_wait(settings):
    rules = policy.settings_from(settings)
    facts = dict(priority="LOW", quality="standard", model_key="flux-dev", model_pinned=True,
                 free_bytes=16 * policy.GIB, llms=[])
    assert policy.decide(policy.Facts(**facts), rules).action == "wait"
    assert policy.decide(policy.Facts(**facts, precision="fp8"), rules).action == "run"


# -- what the server must have ----------------------------------------------------------

def test_a_missing_split_file_is_named_with_its_folder(settings):
    graph = graph_of(one({"prompt": "x", "model": "flux-dev"}, settings))
    info = comfyui_graph.node_types(list(SERVER_FILES["checkpoints"]), SERVER_FILES)
    workflows.check_against_server(graph, info, SERVER_FILES)
    with pytest.raises(WorkflowRejected, match="^text encoder 't5xxl_fp16.safetensors' is not on "
                       "the ComfyUI server; it has: clip_l.safetensors$") as caught:
        workflows.check_against_server(graph, info, dict(SERVER_FILES,
                                                         text_encoders=["clip_l.safetensors"]))
    assert "ComfyUI/models/text_encoders/" in caught.value.hint


def test_a_model_in_the_other_folder_says_which_loader_setting_fits(settings):
    graph = graph_of(one({"prompt": "x", "model": "flux1-dev-fp8.safetensors"}, settings))
    info = comfyui_graph.node_types([], SERVER_FILES)
    files = dict(SERVER_FILES, checkpoints=["flux1-dev-fp8.safetensors"])
    with pytest.raises(WorkflowRejected, match="^diffusion model 'flux1-dev-fp8") as caught:
        workflows.check_against_server(graph, info, files)
    assert 'flux-loader = "checkpoint"' in caught.value.hint.replace("<family>-loader",
                                                                      "flux-loader")


# -- reproducing a job -------------------------------------------------------------------

def test_the_png_metadata_reproduces_a_family_job_file_for_file(home, spool, tmp_path):
    settings = with_config(home, '[models]\nflux-t5xxl = "t5xxl_fp8_e4m3fn.safetensors"\n'
                                 'flux-weight-dtype = "fp8_e4m3fn"\n')
    (job,) = spool.enqueue(intake.build({"prompt": "a fox", "model": "my_model.safetensors",
                                         "family": "flux-schnell", "seed": 5}, settings))
    metadata = metadata_for(job)
    assert (metadata["family"], metadata["loader"]) == ("flux-schnell", "split")
    assert metadata["files"]["t5xxl"] == "t5xxl_fp8_e4m3fn.safetensors"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "PNG")
    png = assets.save_output(tmp_path, "x.png", buffer.getvalue(), metadata).path
    today = config.load(home.parent / "elsewhere")  # other [models] settings than the job's
    (again,) = intake.from_image(png, {}, today)
    original = workflows.printed_graphs([intake.build({"prompt": "a fox",
                                                       "model": "my_model.safetensors",
                                                       "family": "flux-schnell", "seed": 5},
                                                      settings)[0]], None)
    assert workflows.printed_graphs([again], None) == original
    assert again.model_key == "flux-schnell" and again.extra["precision"] == "fp8"


@pytest.mark.parametrize("alias", families.ALIASES)
def test_every_family_takes_a_lora_chain_and_a_hires_pass(settings, alias):
    """The parts find their places by following links, whatever the family's loaders."""
    spec = one({"prompt": "a lighthouse", "model": alias, "seed": 3, "size": "512x512",
                "lora": ["detail.safetensors:0.7", "style.safetensors"], "upscale": "2"},
               settings)
    graph = graph_of(spec)
    types = {**comfyui_graph.node_types(list(SERVER_FILES["checkpoints"]), SERVER_FILES),
             **comfyui_graph.part_node_types(["detail.safetensors", "style.safetensors"], [], [])}
    assert comfyui_graph.top_level_error(graph, types) is None
    outputs, errors = comfyui_graph.validate(json.loads(json.dumps(graph)), types)
    assert errors == {} and len(outputs) == 1
    loras = [node for node in graph.values() if node["class_type"] == "LoraLoader"]
    assert [node["inputs"]["lora_name"] for node in loras] == ["detail.safetensors",
                                                               "style.safetensors"]
    assert sum(node["class_type"] == "KSampler" for node in graph.values()) == 2
    assert any(node["class_type"] == "LatentUpscaleBy" for node in graph.values())
