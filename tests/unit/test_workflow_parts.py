"""Graph parts (zmm.workflows.graph_parts): LoRA chains, the init image and the hires
pass on the shipped templates and on split-loader graphs, each checked the way
ComfyUI validates a prompt (the fake's validator: node types exist, required
inputs present, link types match, values in their lists and ranges)."""

from __future__ import annotations

import copy

import pytest

from tests.fakes import comfyui_graph as fake_graph
from zmm import workflows
from zmm.errors import InvalidInput
from zmm.workflows import graph_parts
from zmm.workflows.graph_parts import Hires, InitImage, Lora, Parts

LORAS = ["detail.safetensors", "style.safetensors"]
IMAGE = InitImage("inputs/" + "ab" * 32 + ".png", "ab" * 32, 100, 77, "photo.png")


def bound(template: str = "sd15-txt2img", width: int = 64, height: int = 64) -> dict:
    values = {"prompt": "a cat", "negative": "", "seed": 1, "steps": 2, "cfg": 7.0,
              "sampler": "euler", "scheduler": "normal", "width": width, "height": height,
              "checkpoint": "v1-5-pruned-emaonly.safetensors", "batch_size": 1,
              "filename_prefix": "zmm/test"}
    return workflows.bind(workflows.load(template, None), values)


def split_loader_graph() -> dict:
    """A Flux-shaped graph: UNETLoader + DualCLIPLoader + VAELoader, FluxGuidance
    between the encoder and the sampler (ids deliberately not the templates')."""
    graph = bound()
    graph["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                          "weight_dtype": "default"}}
    graph["20"] = {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_l.safetensors",
        "type": "flux"}}
    graph["21"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    graph["22"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["6", 0],
                                                            "guidance": 3.5}}
    graph["6"]["inputs"]["clip"] = ["20", 0]
    graph["7"]["inputs"]["clip"] = ["20", 0]
    graph["3"]["inputs"]["positive"] = ["22", 0]
    graph["8"]["inputs"]["vae"] = ["21", 0]
    return graph


def split_types() -> dict:
    """The fake's node types plus the split loaders, as /object_info shows them."""
    def node(required, output, category="advanced/loaders"):
        return {"required": required, "output": output, "output_node": False,
                "category": category, "display": None}

    return {"UNETLoader": node({"unet_name": [["flux1-dev.safetensors"]],
                                "weight_dtype": [["default", "fp8_e4m3fn"]]}, ["MODEL"]),
            "DualCLIPLoader": node({"clip_name1": [["t5xxl_fp16.safetensors"]],
                                    "clip_name2": [["clip_l.safetensors"]],
                                    "type": [["sdxl", "sd3", "flux"]]}, ["CLIP"]),
            "VAELoader": node({"vae_name": [["ae.safetensors"]]}, ["VAE"], "loaders"),
            "FluxGuidance": node({"conditioning": ["CONDITIONING"], "guidance": [
                "FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0}]}, ["CONDITIONING"])}


def accepted(graph: dict, *, inputs=(IMAGE.reference,), upscale_models=("4x.pth",),
             extra_types=None) -> None:
    types = {**fake_graph.node_types(["v1-5-pruned-emaonly.safetensors",
                                      "sd_xl_base_1.0.safetensors"]),
             **fake_graph.part_node_types(LORAS, list(upscale_models), list(inputs)),
             **(extra_types or {})}
    assert fake_graph.top_level_error(graph, types) is None
    outputs, errors = fake_graph.validate(graph, types)
    assert errors == {} and outputs


def of_class(graph: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in graph.items() if node["class_type"] == class_type]


@pytest.mark.parametrize("template", ["sd15-txt2img", "sdxl-txt2img"])
def test_a_lora_chain_sits_between_the_checkpoint_and_everything_that_used_it(template):
    graph = graph_parts.apply(bound(template), Parts(loras=(
        Lora("detail.safetensors", 0.8), Lora("style.safetensors", -0.5))), width=64, height=64)
    first, second = of_class(graph, "LoraLoader")
    ckpt = of_class(graph, "CheckpointLoaderSimple")[0]
    assert graph[first]["inputs"] == {"model": [ckpt, 0], "clip": [ckpt, 1],
                                      "lora_name": "detail.safetensors",
                                      "strength_model": 0.8, "strength_clip": 0.8}
    assert graph[second]["inputs"]["model"] == [first, 0]
    assert graph[second]["inputs"]["strength_clip"] == -0.5
    for sampler in of_class(graph, "KSampler"):
        assert graph[sampler]["inputs"]["model"] == [second, 0]
    for encoder in of_class(graph, "CLIPTextEncode"):
        assert graph[encoder]["inputs"]["clip"] == [second, 1]
    assert not any(value == [ckpt, 0] or value == [ckpt, 1]
                   for node_id, node in graph.items() if node_id not in (first,)
                   for value in node["inputs"].values())
    accepted(graph)


def test_a_lora_the_server_lacks_fails_validation_like_comfyui():
    graph = graph_parts.apply(bound(), Parts(loras=(Lora("nope.safetensors"),)),
                                 width=64, height=64)
    types = {**fake_graph.node_types(["v1-5-pruned-emaonly.safetensors"]),
             **fake_graph.part_node_types(LORAS, [], [])}
    _, errors = fake_graph.validate(graph, types)
    (node_errors,) = errors.values()
    assert node_errors["class_type"] == "LoraLoader"
    assert node_errors["errors"][0]["type"] == "value_not_in_list"


def test_loras_on_a_split_loader_graph_follow_the_links_not_the_ids():
    graph = graph_parts.apply(split_loader_graph(), Parts(loras=(Lora("detail.safetensors"),)),
                                 width=64, height=64)
    (lora,) = of_class(graph, "LoraLoader")
    assert graph[lora]["inputs"]["model"] == ["4", 0]
    assert graph[lora]["inputs"]["clip"] == ["20", 0]
    assert graph["3"]["inputs"]["model"] == [lora, 0]
    assert graph["6"]["inputs"]["clip"] == [lora, 1]
    accepted(graph, extra_types=split_types())


def test_img2img_replaces_the_empty_latent_with_the_encoded_image():
    graph = graph_parts.apply(bound(), Parts(init_image=IMAGE, denoise=0.4), width=96,
                                 height=72)
    assert of_class(graph, "EmptyLatentImage") == []
    (load,) = of_class(graph, "LoadImage")
    (encode,) = of_class(graph, "VAEEncode")
    assert graph[load]["inputs"] == {"image": "zmm/" + "ab" * 32 + ".png"}
    assert graph[encode]["inputs"] == {"pixels": [load, 0], "vae": ["4", 2]}
    assert graph["3"]["inputs"]["latent_image"] == [encode, 0]
    assert graph["3"]["inputs"]["denoise"] == 0.4
    assert of_class(graph, "ImageScale") == []
    accepted(graph)


def test_img2img_with_a_size_resizes_before_encoding_and_uses_the_split_vae():
    image = InitImage(IMAGE.file, IMAGE.sha256, 100, 77, "photo.png", resize=True)
    graph = graph_parts.apply(split_loader_graph(), Parts(init_image=image, denoise=1.0),
                                 width=128, height=96)
    (scale,) = of_class(graph, "ImageScale")
    assert graph[scale]["inputs"]["width"] == 128 and graph[scale]["inputs"]["height"] == 96
    (encode,) = of_class(graph, "VAEEncode")
    assert graph[encode]["inputs"] == {"pixels": [scale, 0], "vae": ["21", 0]}
    accepted(graph, extra_types=split_types())


def test_an_init_image_not_yet_uploaded_is_refused_like_comfyui_does():
    graph = graph_parts.apply(bound(), Parts(init_image=IMAGE, denoise=0.5), width=64,
                                 height=64)
    types = {**fake_graph.node_types(["v1-5-pruned-emaonly.safetensors"]),
             **fake_graph.part_node_types([], [], ["example.png"])}
    _, errors = fake_graph.validate(graph, types)
    (error,) = [e for info in errors.values() for e in info["errors"]]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == f"image - Invalid image file: {IMAGE.reference}"


def test_the_hires_pass_upscales_the_latent_and_samples_again():
    graph = graph_parts.apply(bound(width=512, height=384),
                                 Parts(hires=Hires(1.5, 0.45, "bislerp")), width=512, height=384)
    (upscale,) = of_class(graph, "LatentUpscaleBy")
    first, second = sorted(of_class(graph, "KSampler"), key=int)
    assert graph[upscale]["inputs"] == {"samples": [first, 0], "upscale_method": "bislerp",
                                        "scale_by": 1.5}
    assert graph[second]["inputs"]["latent_image"] == [upscale, 0]
    assert graph[second]["inputs"]["denoise"] == 0.45
    assert graph[second]["inputs"]["model"] == graph[first]["inputs"]["model"]
    assert graph["8"]["inputs"]["samples"] == [second, 0]
    assert graph_parts.pass_of(graph[first]) == "1/2"
    assert graph_parts.pass_of(graph[second]) == "2/2"
    accepted(graph)


def test_the_hires_pass_with_a_model_decodes_upscales_resizes_and_encodes():
    graph = graph_parts.apply(bound(), Parts(
        loras=(Lora("detail.safetensors"),),
        hires=Hires(2.0, 0.5, "nearest-exact", "4x.pth", "lanczos")), width=64, height=64)
    (loader,) = of_class(graph, "UpscaleModelLoader")
    (upscaled,) = of_class(graph, "ImageUpscaleWithModel")
    (scale,) = of_class(graph, "ImageScale")
    first_decode, final_decode = sorted(of_class(graph, "VAEDecode"), key=int)
    assert graph[upscaled]["inputs"] == {"upscale_model": [loader, 0], "image": [first_decode, 0]}
    assert (graph[scale]["inputs"]["width"], graph[scale]["inputs"]["height"]) == (128, 128)
    (save,) = of_class(graph, "SaveImage")
    assert graph[save]["inputs"]["images"] == [final_decode, 0]
    accepted(graph)


@pytest.mark.parametrize(("size", "factor", "expected"), [
    ((512, 384), 1.5, (768, 576)), ((64, 64), 4.0, (256, 256)), ((1000, 776), 1.25, (1248, 968)),
    ((72, 72), 1.1, (80, 80))])
def test_the_output_size_is_what_latent_upscale_by_gives(size, factor, expected):
    assert graph_parts.upscaled_size(*size, factor) == expected


def test_everything_together_on_one_graph():
    graph = graph_parts.apply(bound(), Parts(
        loras=(Lora("detail.safetensors"), Lora("style.safetensors", 0.3)), init_image=IMAGE,
        denoise=0.6, hires=Hires(2.0)), width=96, height=72)
    assert len(of_class(graph, "KSampler")) == 2
    assert len(of_class(graph, "LoraLoader")) == 2
    accepted(graph)


def test_a_graph_with_two_checkpoints_is_refused_for_loras():
    graph = bound()
    graph["30"] = copy.deepcopy(graph["4"])
    graph["7"]["inputs"]["clip"] = ["30", 1]
    with pytest.raises(InvalidInput) as caught:
        graph_parts.apply(graph, Parts(loras=(Lora("detail.safetensors"),)), width=64,
                             height=64)
    assert caught.value.field == "lora"
    assert "2 text encoders" in caught.value.allowed


def test_a_graph_without_a_sampler_is_refused_for_the_upscale_and_the_init_image():
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                          "batch_size": 1, "color": 0}},
             "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                         "filename_prefix": "x"}}}
    for parts, field in ((Parts(hires=Hires(2.0)), "upscale"),
                         (Parts(init_image=IMAGE, denoise=0.5), "init-image")):
        with pytest.raises(InvalidInput) as caught:
            graph_parts.apply(graph, parts, width=64, height=64)
        assert caught.value.field == field
        assert "no VAEDecode" in caught.value.allowed


def test_params_round_trip():
    parts = Parts((Lora("a.safetensors", 0.5),), IMAGE, 0.3, Hires(2.0, 0.4, "area", "4x.pth"),
                  "bicubic")
    assert Parts.from_params(parts.to_params()) == parts
    assert Parts().to_params() == {}
