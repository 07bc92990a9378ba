"""Intake: turn what a user typed (flags, `--from` lines, a PNG's zmm chunk)
into validated, fully resolved `JobSpec`s, before anything touches the spool.

Every field error is an `InvalidInput` naming the field (and the line, for
`--from`). Settings come in as the merged config; nothing here writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from zmm import compose, families, jobs
from zmm.config import Config
from zmm.errors import InvalidInput
from zmm.intake import part_fields, workflow_fields
from zmm.intake.workflow_fields import RecordedDefs

# `--from`: what no batch needs (--count caps one request at jobs.MAX_COUNT).

# The fields a request may carry, in flags and in `--from` lines.
FIELDS = ("prompt", "negative", "quality", "style", "aspect", "size", "seed", "steps", "cfg",
          "model", "family", "workflow", "set", "param", "params", "priority", "requester",
          "webhook", "count", "backend", "allow_cloud", "enhance", "on", "name", "key", "max_run_s",
          *part_fields.FIELDS, *compose.FIELDS)


# The spool's backend rows (Store.backends()), read only when `--on` names a
# backend that is not configured: one a worker reported may be pinned too.
Reported = Callable[[], Iterable[Mapping[str, Any]]]


def build(raw: dict[str, Any], config: Config, reported: Reported | None = None, *,
          node_defs: RecordedDefs | None = None, template: Any = None) -> list[jobs.JobSpec]:
    """One request (possibly `count` > 1) into its job specs. `reported`: the
    backends workers reported (for `--on`); `node_defs`: the node definitions the
    spool records (None when none are), asked only when a workflow needs them;
    `template`: a workflow already read (a ComfyUI PNG's)."""
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "unknown field; allowed: " + ", ".join(FIELDS))
    count = jobs.parse_int("count", raw.get("count") or 1, 1, jobs.MAX_COUNT)
    raw = workflow_fields.merge_params(raw)
    name, key = jobs.parse_name(raw.get("name")), jobs.parse_key(raw.get("key"))
    if name and count > 1:
        raise InvalidInput("name", "names one job; for several, give each --from line its "
                           "own name (or leave it out: the job id names the files)")
    spec = _resolve(raw, config, node_defs or (lambda: None), template, reported)
    spec.name, spec.key = name, key
    spec.needs = needed_files(spec, config)  # the same for every seed of the request
    specs = [spec]
    for offset in range(1, count):
        clone = jobs.JobSpec(**{**spec.__dict__, "seed": (spec.seed + offset) % (jobs.MAX_SEED + 1)})
        workflow_fields.reseed(clone)
        specs.append(clone)
    return specs


def _resolve(raw: dict[str, Any], config: Config, node_defs: RecordedDefs,
             template: Any, reported: Reported | None) -> jobs.JobSpec:
    defaults = config.section("generate")
    # A workflow with named inputs may keep its own prompt.
    custom = template is not None or bool(raw.get("workflow"))
    user_prompt = jobs.parse_text("prompt", raw.get("prompt"), max_len=10000,
                                  required=not custom)
    negative_raw = raw.get("negative")
    negative = jobs.parse_text("negative", defaults["negative"] if negative_raw is None else negative_raw,
                               max_len=10000, required=False)
    quality = jobs.parse_choice("quality", raw.get("quality") or defaults["quality"], jobs.QUALITIES)
    style = jobs.parse_choice("style", raw.get("style") or "none", jobs.STYLES)
    priority = jobs.parse_priority(raw.get("priority") or defaults["priority"])
    requester = jobs.parse_text("requester", raw.get("requester") or defaults["requester"],
                                max_len=64, one_line=True)
    tier = _tier(config, quality)

    resolved = families.resolve(raw.get("model"), raw.get("family"), tier["model"],
                                config.section("models"))
    family = resolved.family
    width, height = _size(raw.get("size"), raw.get("aspect"), family, defaults["aspect"])
    sampling = _sampling(tier, resolved, config)
    seed = (jobs.parse_int("seed", raw["seed"], 0, jobs.MAX_SEED)
            if raw.get("seed") not in (None, "") else random_seed())
    steps = (jobs.parse_int("steps", raw["steps"], 1, 150)
             if raw.get("steps") not in (None, "") else int(sampling["steps"]))
    cfg = (jobs.parse_float("cfg", raw["cfg"], 0.0, 30.0)
           if raw.get("cfg") not in (None, "") else float(sampling["cfg"]))
    style_template = config.section("styles").get(style, "{prompt}")
    spec = jobs.JobSpec(
        prompt=jobs.styled_prompt(style_template, user_prompt), negative_prompt=negative,
        priority=priority, requester=requester, quality_tier=quality, style=style,
        model_key=family.alias, model_requested=resolved.file,
        workflow=_template(resolved, config),
        width=width, height=height, seed=seed, steps=steps, cfg=cfg,
        sampler=str(sampling["sampler"]), scheduler=str(sampling["scheduler"]),
        webhook_url=_webhook(raw.get("webhook"), config), user_prompt=user_prompt,
        model_pinned=raw.get("model") not in (None, ""), extra=resolved.params(),
    )
    sets, params = _as_list(raw.get("set")), _as_list(raw.get("param"))
    if raw.get("workflow") or sets or params or template is not None:
        _attach_custom_graph(spec, raw, sets, params, config, node_defs, template)
    spec.enhance = _enhance_mode(raw.get("enhance"), spec, config)
    has_parts = part_fields.attach(spec, raw, config)
    composition = compose.from_request(raw, config.brands_dir)
    if composition is not None:
        spec.extra["compose"] = composition
    if raw.get("max_run_s") not in (None, ""):
        spec.extra["max_run_s"] = jobs.parse_max_run_s(raw["max_run_s"])
    spec.backend_requested, spec.cloud_allowed = _backend(raw, config, custom=spec.graph is not None,
                                                parts=has_parts)
    spec.on_backend = _on(raw.get("on"), config, spec.backend_requested, reported)
    return spec


def _enhance_mode(requested: Any, spec: jobs.JobSpec, config: Config) -> str:
    """off | on | required: the request's word, else the style's default. A custom
    graph without a $prompt placeholder has nothing the LLM could improve."""
    if requested not in (None, ""):
        mode = jobs.parse_enhance(requested)
    else:
        default = config.section("enhance")["styles"].get(spec.style, "off")
        mode = jobs.parse_enhance(default, f"config enhance.styles.{spec.style}")
    if mode != "off" and spec.graph is not None and not _binds_prompt(spec.graph):
        if requested not in (None, ""):
            raise InvalidInput("enhance", "only for a workflow with a $prompt placeholder")
        return "off"
    return mode


def _binds_prompt(graph: dict[str, Any]) -> bool:
    from zmm import workflows
    from zmm.workflows import inputs

    return "prompt" in workflows.placeholders(graph) or "prompt" in inputs.standard(graph)


def needed_files(spec: jobs.JobSpec, config: Config) -> list[str]:
    """The model files the job's bound graph loads ('folder/name', sorted), read
    from the graph the worker will submit, custom --workflow graphs included."""
    from zmm import workflows
    from zmm.jsontext import compact

    params = json.loads(compact(spec.stored_params()))  # as the worker reads them back
    graph = workflows.bind_job(params, spec.workflow, jobs.placeholder_job_id(),
                               config.workflows_dir)
    return workflows.needed_files(graph, nodes=spec.graph is not None)


def _on(value: Any, config: Config, backend: str, reported: Reported | None) -> str | None:
    """`--on NAME`: the backend the job is pinned to, configured or reported by a
    worker (NotFound lists both)."""
    if value in (None, ""):
        return None
    if backend == "cloud":
        raise InvalidInput("on", "not with --backend cloud: --on names a ComfyUI backend")
    from zmm.config import fleet

    name = str(value).strip()
    if any(item.name == name for item in fleet.backends(config)):
        return name
    return fleet.backend(config, name, reported() if reported is not None else ()).name


def _webhook(value: Any, config: Config) -> str | None:
    if value not in (None, ""):
        return jobs.parse_webhook(value)
    default = config.get("webhooks.url")
    try:
        return jobs.parse_webhook(default)
    except InvalidInput:
        raise InvalidInput("config webhooks.url", "an http:// or https:// URL, or \"\"") from None


def _backend(raw: dict[str, Any], config: Config, *, custom: bool,
             parts: bool = False) -> tuple[str, bool]:
    """(requested backend, may it go to the cloud). Only the user's own words
    send a prompt off the machine: --backend cloud, --allow-cloud, or
    cloud.enabled for jobs that did not ask to stay local."""
    backend = jobs.parse_choice("backend", raw.get("backend") or "auto", jobs.BACKENDS)
    allow = _flag("allow_cloud", raw.get("allow_cloud"))
    if backend == "local" and allow:
        raise InvalidInput("allow-cloud", "not with --backend local")
    if custom and (backend == "cloud" or allow):
        field = "backend" if backend == "cloud" else "allow-cloud"
        raise InvalidInput(field, "a custom --workflow or --set runs only on ComfyUI; cloud "
                           "providers take a prompt")
    if parts and (backend == "cloud" or allow):
        field = "backend" if backend == "cloud" else "allow-cloud"
        raise InvalidInput(field, "--lora, --init-image and --upscale run only on ComfyUI; "
                           "cloud providers take a prompt")
    if backend == "cloud":
        return backend, True
    if backend == "local" or custom or parts:
        return backend, False
    return backend, allow or bool(config.get("cloud.enabled"))


def _flag(field_name: str, value: Any) -> bool:
    if value in (None, "", False):
        return False
    if value is True:
        return True
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise InvalidInput(field_name, "true or false")


def _tier(config: Config, quality: str) -> dict[str, Any]:
    tier = config.section("quality").get(quality)
    if not isinstance(tier, dict) or not tier.get("model"):
        raise InvalidInput(f"config quality.{quality}",
                           "a table with a model (and optionally steps, sampler, scheduler, cfg)")
    return tier


def _sampling(tier: dict[str, Any], resolved: families.Resolved, config: Config) -> dict[str, Any]:
    """Steps, sampler, scheduler and cfg: the tier's where the job runs the
    tier's own family, the family's defaults where they are missing or where
    --model picked another family (a tier tuned for SDXL says nothing about Flux)."""
    family = resolved.family
    tier_family = families.resolve(None, None, tier["model"], config.section("models")).family
    own = tier if tier_family == family else {}
    default_cfg = family.cfg if family.cfg is not None else config.get("generate.cfg")
    return {"steps": own.get("steps") or family.steps, "sampler": own.get("sampler") or family.sampler,
            "scheduler": own.get("scheduler") or family.scheduler,
            "cfg": own.get("cfg") if own.get("cfg") is not None else default_cfg}


def _template(resolved: families.Resolved, config: Config) -> str:
    templates = config.section("templates")
    key = families.template_key(resolved)
    return str(templates.get(resolved.model_key) or templates.get(key) or f"{key}-txt2img")


def _size(size: str | None, aspect: str | None, family: families.Family,
          default_aspect: str) -> tuple[int, int]:
    if size and aspect:
        raise InvalidInput("size", "give --size or --aspect, not both")
    if size:
        width, height = jobs.parse_size(size)
        families.check_size(family, width, height)
        return width, height
    table = families.buckets(family)
    chosen = (aspect or default_aspect).strip()
    if chosen not in table:
        raise InvalidInput("aspect", "one of " + ", ".join(table))
    return table[chosen]


def _attach_custom_graph(spec: jobs.JobSpec, raw: dict[str, Any], sets: list[str],
                         params: list[str], config: Config, node_defs: RecordedDefs,
                         template: Any) -> None:
    from zmm import workflows

    if template is None:
        template = workflows.load(raw.get("workflow") or spec.workflow, config.workflows_dir,
                                  lambda: node_defs() or workflows.server_node_defs())
    workflow_fields.attach(spec, raw, template, sets, params, node_defs())


def _as_list(value: Any) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "big")


def from_image(path: Path, flags: dict[str, Any], config: Config,
               reported: Reported | None = None, *,
               node_defs: RecordedDefs | None = None) -> list[jobs.JobSpec]:
    """`--from-image`: the request recorded in a zmm PNG, with the same seed and
    size; flags given on the command line win. A PNG ComfyUI made (no zmm
    chunk) queues its workflow, the options and `--param` landed on it."""
    from zmm.assets import ZMM_KEY, image_chunks, recorded_request, zmm_metadata

    chunks = image_chunks(path)
    if ZMM_KEY not in chunks and "prompt" in chunks:
        template = workflow_fields.comfy_image(path, chunks)
        given = {key: value for key, value in flags.items() if value not in (None, [], "")}
        return build({**given, "workflow": None}, config, reported, node_defs=node_defs,
                     template=template)
    meta = zmm_metadata(path)
    raw = recorded_request(meta)
    raw.update(part_fields.from_metadata(meta, config))
    # The image was made with the recorded enhanced prompt, or (none recorded) with
    # the prompt as written: either way Ollama is not asked again.
    raw["enhance"] = meta.get("enhance") if meta.get("enhanced_prompt") else "off"
    recorded = meta.get("compose")
    if isinstance(recorded, dict):  # the text and brand drawn onto it
        raw.update({key: recorded.get(key) for key in compose.FIELDS})
    same_model = not flags.get("model") and not flags.get("family")
    if same_model and meta.get("model") and meta.get("family") in families.ALIASES:
        raw["family"] = meta["family"]  # the file's name alone may not say it
    raw.update({key: value for key, value in flags.items() if value not in (None, [], "")})
    if flags.get("aspect") or (raw.get("init_image") and not part_fields.resized(meta)
                               and not flags.get("size")):
        raw.pop("size", None)
    specs = build({key: value for key, value in raw.items() if value is not None}, config,
                  reported)
    for spec in specs:  # the recorded sampler wins over today's tier settings
        spec.sampler = str(meta.get("sampler") or spec.sampler)
        spec.scheduler = str(meta.get("scheduler") or spec.scheduler)
        part_fields.keep_recorded(spec, meta)
        _keep_enhanced(spec, meta)
        if same_model and meta.get("family") == spec.model_key and meta.get("loader"):
            _restore_files(spec, meta)
        spec.needs = needed_files(spec, config)  # the recorded files may differ from today's
    return specs


def _keep_enhanced(spec: jobs.JobSpec, meta: dict[str, Any]) -> None:
    """The recorded enhanced prompt, for a job that still asks for one in the same
    style and kind of prompt (keywords or sentences); another asks Ollama anew."""
    recorded = meta.get("enhanced_prompt")
    if spec.enhance == "off" or not isinstance(recorded, str) or not recorded.strip():
        return
    same_kind = families.prompt_kind(spec.model_key, spec.model_requested) == families.prompt_kind(
        meta.get("family"), meta.get("model"))
    if spec.style == meta.get("style") and same_kind:
        spec.enhanced_prompt = jobs.parse_text("enhanced_prompt", recorded, max_len=10000)


def _restore_files(spec: jobs.JobSpec, meta: dict[str, Any]) -> None:
    """The recorded loader, template, split files and family values win over
    today's [models] settings: the same job, file for file."""
    recorded = {key: value for key, value in (meta.get("files") or {}).items()
                if key in families.FILE_KEYS and isinstance(value, str)}
    loader = str(meta["loader"])
    if loader not in families.LOADERS:
        raise InvalidInput("from-image", f"a zmm PNG; its loader {loader!r} is not one of "
                           + ", ".join(families.LOADERS))
    extra = {key: value for key, value in spec.extra.items() if key not in families.FILE_KEYS}
    extra.update(recorded, loader=loader)
    for key in ("guidance", "shift"):
        if isinstance(meta.get(key), (int, float)):
            extra[key] = meta[key]
    extra["precision"] = families.precision_of(spec.model_requested or "",
                                               recorded.get("weight_dtype"))
    spec.extra = extra
    if isinstance(meta.get("workflow"), str) and meta["workflow"]:
        spec.workflow = meta["workflow"]
