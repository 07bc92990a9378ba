"""Node types and prompt validation of the fake ComfyUI, shaped like the real
server's `/object_info` and its 400 / partial-200 `node_errors` answers
(see docs/comfyui-protocol.md, "Submitting: POST /prompt")."""

from __future__ import annotations

from typing import Any

# KSampler's lists as ComfyUI 0.3.64 reports them.
SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun",
            "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive",
            "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
            "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
            "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu",
            "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
            "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
            "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
            "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]
INT_MAX = 0xFFFFFFFFFFFFFFFF
WEIGHT_DTYPES = ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]
CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]
# The model folders the fake lists (GET /models/<folder>), besides checkpoints.
MODEL_FOLDERS = ("diffusion_models", "text_encoders", "vae", "loras", "upscale_models",
                 "embeddings")


def node_types(checkpoints: list[str],
               files: dict[str, list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """class -> {"required": {input: spec}, "output": [...], "output_node": bool, ...}.
    `files`: model folder -> names, the choices of the loaders of split files."""
    files = files or {}
    unets, encoders = list(files.get("diffusion_models", [])), list(files.get("text_encoders", []))

    def spec(required, output, output_node=False, category="", display=None, optional=None,
             module="nodes"):
        return {"required": required, "output": output, "output_node": output_node,
                "category": category, "display": display, "optional": optional or {},
                "module": module}

    return {
        # Split-file loaders and the SD3/Flux nodes, field for field as ComfyUI 0.3.64
        # reports them. TripleCLIPLoader is a v3 node: its choices come in the "COMBO"
        # shape, which the real server does not check at validation (a wrong name
        # fails only when the node runs); the fake does the same.
        "UNETLoader": spec({"unet_name": [unets], "weight_dtype": [list(WEIGHT_DTYPES)]},
                           ["MODEL"], category="advanced/loaders", display="Load Diffusion Model"),
        "DualCLIPLoader": spec({"clip_name1": [encoders], "clip_name2": [encoders],
                                "type": [list(CLIP_TYPES)]}, ["CLIP"],
                               category="advanced/loaders", display="DualCLIPLoader",
                               optional={"device": [["default", "cpu"], {"advanced": True}]}),
        "TripleCLIPLoader": spec({f"clip_name{i}": ["COMBO", {"multiselect": False,
                                                              "options": encoders}]
                                  for i in (1, 2, 3)}, ["CLIP"], category="advanced/loaders",
                                 module="comfy_extras.nodes_sd3"),
        "VAELoader": spec({"vae_name": [list(files.get("vae", [])) + ["pixel_space"]]}, ["VAE"],
                          category="loaders", display="Load VAE"),
        "ModelSamplingSD3": spec({"model": ["MODEL"], "shift": ["FLOAT", {
            "default": 3.0, "min": 0.0, "max": 100.0, "step": 0.01}]}, ["MODEL"],
            category="advanced/model", display="ModelSamplingSD3",
            module="comfy_extras.nodes_model_advanced"),
        "FluxGuidance": spec({"conditioning": ["CONDITIONING", {}], "guidance": ["FLOAT", {
            "default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}]}, ["CONDITIONING"],
            category="advanced/conditioning/flux", module="comfy_extras.nodes_flux"),
        "EmptySD3LatentImage": spec({
            "width": ["INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}],
            "height": ["INT", {"default": 1024, "min": 16, "max": 16384, "step": 16}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}, ["LATENT"],
            category="latent/sd3", module="comfy_extras.nodes_sd3"),
        "CheckpointLoaderSimple": spec({"ckpt_name": [list(checkpoints), {
            "tooltip": "The name of the checkpoint (model) to load."}]},
            ["MODEL", "CLIP", "VAE"], category="loaders", display="Load Checkpoint"),
        "CLIPTextEncode": spec({"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]},
                               ["CONDITIONING"], category="conditioning"),
        "EmptyLatentImage": spec({
            "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
            "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}, ["LATENT"],
            category="latent"),
        "KSampler": spec({
            "model": ["MODEL", {}],
            "seed": ["INT", {"default": 0, "min": 0, "max": INT_MAX}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}],
            "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
            "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
            "latent_image": ["LATENT", {}],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}]}, ["LATENT"],
            category="sampling"),
        "VAEDecode": spec({"samples": ["LATENT", {}], "vae": ["VAE", {}]}, ["IMAGE"],
                          category="latent"),
        "SaveImage": spec({"images": ["IMAGE", {}], "filename_prefix": ["STRING", {
            "default": "ComfyUI"}]}, [], output_node=True, category="image"),
        "PreviewImage": spec({"images": ["IMAGE", {}]}, [], output_node=True, category="image"),
        "EmptyImage": spec({
            "width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
            "color": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF}]}, ["IMAGE"],
            category="image"),
        "ImageInvert": spec({"image": ["IMAGE", {}]}, ["IMAGE"], category="image"),
        "ImageBlur": spec({"image": ["IMAGE", {}],
                           "blur_radius": ["INT", {"default": 1, "min": 1, "max": 31}],
                           "sigma": ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0}]},
                          ["IMAGE"], category="image"),
    }


LATENT_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
IMAGE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def part_node_types(loras: list[str], upscale_models: list[str],
                    inputs: list[str]) -> dict[str, dict[str, Any]]:
    """LoRA, image-input and upscale nodes, as ComfyUI v0.3.64's /object_info shows
    them. LoadImage's `image` is checked like the real VALIDATE_INPUTS: the file must
    be in the input folder (any name there, also in a subfolder), not in the list."""
    def spec(required, output, category, display, custom=None):
        return {"required": required, "output": output, "output_node": False,
                "category": category, "display": display, "custom": custom or {}}

    def image_exists(value: Any) -> str | None:
        return None if value in inputs else f"Invalid image file: {value}"

    return {
        "LoraLoader": spec({
            "model": ["MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}],
            "clip": ["CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}],
            "lora_name": [list(loras), {"tooltip": "The name of the LoRA."}],
            "strength_model": ["FLOAT", dict(_STRENGTH)],
            "strength_clip": ["FLOAT", dict(_STRENGTH)]}, ["MODEL", "CLIP"], "loaders",
            "Load LoRA"),
        "LoadImage": spec({"image": [sorted(name for name in inputs if "/" not in name),
                                     {"image_upload": True}]}, ["IMAGE", "MASK"], "image",
                          "Load Image", custom={"image": image_exists}),
        "VAEEncode": spec({"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"], "latent",
                          "VAE Encode"),
        "LatentUpscaleBy": spec({"samples": ["LATENT"], "upscale_method": [LATENT_METHODS],
                                 "scale_by": ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0,
                                                        "step": 0.01}]}, ["LATENT"], "latent",
                                "Upscale Latent By"),
        "ImageScale": spec({"image": ["IMAGE"], "upscale_method": [IMAGE_METHODS],
                            "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
                            "height": ["INT", {"default": 512, "min": 0, "max": 16384,
                                               "step": 1}],
                            "crop": [["disabled", "center"]]}, ["IMAGE"], "image/upscaling",
                           "Upscale Image"),
        "UpscaleModelLoader": spec({"model_name": ["COMBO", {"multiselect": False,
                                                             "options": list(upscale_models)}]},
                                   ["UPSCALE_MODEL"], "loaders", "Load Upscale Model"),
        "ImageUpscaleWithModel": spec({"upscale_model": ["UPSCALE_MODEL", {}],
                                       "image": ["IMAGE", {}]}, ["IMAGE"], "image/upscaling",
                                      "Upscale Image (using Model)"),
    }


def object_info_entry(name: str, node: dict[str, Any]) -> dict[str, Any]:
    outputs = node["output"]
    inputs, order = {"required": node["required"]}, {"required": list(node["required"])}
    if node.get("optional"):
        inputs["optional"], order["optional"] = node["optional"], list(node["optional"])
    return {
        "input": inputs, "input_order": order,
        "output": outputs, "output_is_list": [False] * len(outputs), "output_name": outputs,
        "name": name, "display_name": node["display"] or name,
        "description": "", "python_module": node.get("module", "nodes"),
        "category": node["category"],
        "output_node": node["output_node"], "output_tooltips": [""] * len(outputs),
    }


def _error(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def top_level_error(prompt: Any, types: dict[str, dict]) -> dict[str, Any] | None:
    """The errors that reject the whole prompt before per-node validation."""
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _error("invalid_prompt", "Cannot execute because a node is missing the "
                          "class_type property.", f"Node ID '#{node_id}'")
        if node["class_type"] not in types:
            return _error("invalid_prompt", f"Cannot execute because node {node['class_type']} "
                          "does not exist.", f"Node ID '#{node_id}'")
    if not any(types[node["class_type"]]["output_node"] for node in prompt.values()):
        return _error("prompt_no_outputs", "Prompt has no outputs", "")
    return None


def _coerce(kind: Any, value: Any, name: str, config: dict, spec: list) -> tuple[Any, dict | None]:
    # The newer combo shape, ["COMBO", {"options": [...]}], is not checked at
    # validation by ComfyUI 0.3.64 (a wrong name fails only when the node runs):
    # it falls through as a literal below.
    if isinstance(kind, list):
        if value not in kind:
            # Like the real server: a list of more than 20 choices is not sent back.
            long = len(kind) > 20
            listed = f"(list of length {len(kind)})" if long else str(kind)
            return None, _error("value_not_in_list", "Value not in list",
                                f"{name}: '{value}' not in {listed}", input_name=name,
                                input_config=None if long else spec, received_value=value)
        return value, None
    converters = {"INT": int, "FLOAT": float, "STRING": str}
    if kind not in converters:
        return value, None
    try:
        converted = converters[kind](value)
    except (TypeError, ValueError) as exc:
        return None, _error("invalid_input_type", f"Failed to convert an input value to a {kind} "
                            "value", f"{name}, {value}, {exc}", input_name=name,
                            input_config=spec, received_value=value, exception_message=str(exc))
    if "min" in config and converted < config["min"]:
        return None, _error("value_smaller_than_min", f"Value {converted} smaller than min of "
                            f"{config['min']}", f"{name}", input_name=name, input_config=spec,
                            received_value=converted)
    if "max" in config and converted > config["max"]:
        return None, _error("value_bigger_than_max", f"Value {converted} bigger than max of "
                            f"{config['max']}", f"{name}", input_name=name, input_config=spec,
                            received_value=converted)
    return converted, None


def validate(prompt: dict[str, Any], types: dict[str, dict]) -> tuple[list[str], dict[str, Any]]:
    """(valid output node ids, node_errors) after checking every output's subgraph."""
    node_errors: dict[str, Any] = {}
    valid_outputs = []
    memo: dict[str, bool] = {}

    def check(node_id: str, output_id: str, via: tuple[str, list] | None = None) -> bool:
        if node_id in memo:
            if not memo[node_id] and node_id in node_errors:
                node_errors[node_id]["dependent_outputs"].append(output_id)
            return memo[node_id]
        node = prompt[node_id]
        node_type = types[node["class_type"]]
        errors = []
        ok_upstream = True
        for name, spec in node_type["required"].items():
            kind, config = spec[0], spec[1] if len(spec) > 1 else {}
            if name not in node.get("inputs", {}):
                errors.append(_error("required_input_missing", "Required input is missing", name,
                                     input_name=name))
                continue
            value = node["inputs"][name]
            # A literal where a link belongs; a "COMBO" (v3 choice list) takes a literal.
            is_type = isinstance(kind, str) and kind not in ("INT", "FLOAT", "STRING", "COMBO")
            if isinstance(value, list):
                if len(value) != 2 or not isinstance(value[1], int):
                    errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 "
                                         "list of [node_id, slot_index]", name, input_name=name))
                    continue
                source = str(value[0])
                if source not in prompt:
                    # Seen on a real server: the KeyError surfaces while validating the
                    # node that links here, so extra_info names *that* input.
                    if via is None:
                        errors.append(_error("exception_during_validation", "Exception when "
                                             "validating node", f"'{source}'"))
                    else:
                        errors.append(_error(
                            "exception_during_inner_validation", "Exception when validating "
                            "inner node", f"'{source}'", input_name=via[0], input_config=via[1],
                            exception_message=f"'{source}'", exception_type="KeyError",
                            traceback=["  File \"execution.py\", line 808, in validate_inputs\n"]))
                    continue
                source_type = types[prompt[source]["class_type"]]["output"]
                received = source_type[value[1]] if value[1] < len(source_type) else None
                if received != kind:
                    errors.append(_error("return_type_mismatch", "Return type mismatch between "
                                         "linked nodes", f"{name}, received_type({received}) "
                                         f"mismatch input_type({kind})", input_name=name,
                                         input_config=spec, received_type=received,
                                         linked_node=value))
                    continue
                ok_upstream = check(source, output_id, (name, spec)) and ok_upstream
            elif is_type:
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list "
                                     "of [node_id, slot_index]", name, input_name=name))
            elif name in node_type.get("custom", {}):
                # A node's VALIDATE_INPUTS replaces the choice-list check for that input.
                problem = node_type["custom"][name](value)
                if problem:
                    errors.append(_error("custom_validation_failed", "Custom validation "
                                         "failed for node", f"{name} - {problem}",
                                         input_name=name))
            else:
                _, error = _coerce(kind, value, name, config, spec)
                if error:
                    errors.append(error)
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [output_id],
                                    "class_type": node["class_type"]}
        memo[node_id] = not errors and ok_upstream
        return memo[node_id]

    for node_id, node in prompt.items():
        if types[node["class_type"]]["output_node"] and check(node_id, node_id):
            valid_outputs.append(node_id)
    return valid_outputs, node_errors


def coerced_inputs(node: dict[str, Any], types: dict[str, dict]) -> dict[str, Any]:
    """A node's literal inputs converted the way validation accepted them ("64" -> 64)."""
    result = {}
    for name, value in node.get("inputs", {}).items():
        spec = types[node["class_type"]]["required"].get(name)
        if spec and not isinstance(value, list) \
                and name not in types[node["class_type"]].get("custom", {}):
            converted, error = _coerce(spec[0], value, name, spec[1] if len(spec) > 1 else {}, spec)
            result[name] = value if error else converted
        else:
            result[name] = value
    return result


def execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    """Nodes the outputs depend on, upstream first (depth-first, like the real executor)."""
    order: list[str] = []

    def visit(node_id: str) -> None:
        if node_id in order:
            return
        for value in prompt[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                visit(str(value[0]))
        order.append(node_id)

    for output in outputs:
        visit(output)
    return order
