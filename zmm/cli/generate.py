"""`zmm generate` and `zmm wait`: queue jobs, then follow them to the end.

Parsing only: intake validates, the store writes, follow/render show progress.
`generate --no-wait` must stay light: no rich, httpx or pydantic on that path.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from zmm.cli.common import (
    emit,
    emit_json,
    load_config,
    open_store,
    partial,
    recorded_node_defs,
    say,
)
from zmm.errors import InvalidInput

app = typer.Typer(add_completion=False)
ENHANCE_WORDS = ("on", "off", "auto", "required")
MAX_TIMEOUT_S = 366 * 86400.0


class EnhanceCommand(TyperCommand):
    """`--enhance` alone means `--enhance=on` (click has no option whose value
    may be left out); `--enhance WORD` takes WORD only when it is a mode, so a
    PROMPT after a bare `--enhance` stays the prompt."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        words, index = [], 0
        while index < len(args):
            token = args[index]
            if token == "--":
                words += args[index:]
                break
            if token == "--enhance":
                following = args[index + 1] if index + 1 < len(args) else ""
                taken = following.lower() in ENHANCE_WORDS
                token = f"--enhance={following if taken else 'on'}"
                index += taken
            words.append(token)
            index += 1
        return super().parse_args(ctx, words)


@app.command("generate", cls=EnhanceCommand)
def generate(
    prompt: Optional[str] = typer.Argument(None, help="What to draw."),
    negative: Optional[str] = typer.Option(None, "--negative", "-n", help="What to avoid."),
    quality: Optional[str] = typer.Option(None, "--quality", "-q",
                                          help="draft | standard | high (model, steps, sampler "
                                          "from config)."),
    style: Optional[str] = typer.Option(None, "--style",
                                        help="technical-diagram | report-cover | infographic | "
                                        "dashboard-thumbnail | none"),
    aspect: Optional[str] = typer.Option(None, "--aspect", help="1:1 | 16:9 | 4:3 | 3:2 | 2:3 | 9:16"),
    size: Optional[str] = typer.Option(None, "--size", help="WxH, multiples of 8 up to 4096."),
    seed: Optional[str] = typer.Option(None, "--seed", help="0 or more; random if not given."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Sampler steps, 1-150."),
    cfg: Optional[str] = typer.Option(None, "--cfg", help="Guidance scale, 0-30."),
    model: Optional[str] = typer.Option(None, "--model",
                                        help="sd15 | sdxl | sd35-medium | sd35-large | "
                                        "flux-schnell | flux-dev | a model file name."),
    family: Optional[str] = typer.Option(None, "--family",
                                         help="The family of a --model file whose name says "
                                         "none (an alias as for --model)."),
    workflow: Optional[str] = typer.Option(None, "--workflow",
                                           help="A template name, or a ComfyUI workflow file "
                                           "(as saved, or exported as API)."),
    sets: list[str] = typer.Option([], "--set", help="NODE.INPUT=VALUE for the workflow (repeatable)."),
    params: list[str] = typer.Option([], "--param", help="NAME=VALUE for a named input of the "
                                     "workflow (repeatable; zmm workflow inputs FILE lists them)."),
    priority: Optional[str] = typer.Option(None, "--priority", "-p",
                                           help="CRITICAL | HIGH | MEDIUM | LOW"),
    requester: Optional[str] = typer.Option(None, "--requester",
                                            help="Who asked (default: user, or $ZMM_REQUESTER)."),
    count: Optional[str] = typer.Option(None, "--count", help="N jobs with seeds seed..seed+N-1."),
    from_file: Optional[Path] = typer.Option(None, "--from",
                                             help="JSON Lines or CSV file, one job per line."),
    from_image: Optional[Path] = typer.Option(None, "--from-image",
                                              help="Queue again exactly the job a zmm PNG came from."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="URL to POST the job to when done."),
    backend: Optional[str] = typer.Option(None, "--backend",
                                          help="auto (ComfyUI, cloud fallback if allowed) | "
                                          "local | cloud"),
    on: Optional[str] = typer.Option(None, "--on",
                                     help="Pin the job(s) to this backend (a \\[\\[backends]] name, "
                                     "or one a worker reported)."),
    allow_cloud: bool = typer.Option(False, "--allow-cloud",
                                     help="May fall back to a cloud provider (costs money)."),
    lora: list[str] = typer.Option([], "--lora",
                                   help="NAME[:STRENGTH] from ComfyUI's models/loras "
                                   "(repeatable; strength default 1.0)."),
    init_image: Optional[Path] = typer.Option(None, "--init-image",
                                              help="Image-to-image: start from this PNG, JPEG "
                                              "or WebP."),
    denoise: Optional[str] = typer.Option(None, "--denoise",
                                          help="With --init-image: how much to change it, "
                                          "0-1 (default 0.6)."),
    upscale: Optional[str] = typer.Option(None, "--upscale",
                                          help="Hires second pass: size x F, 1 < F <= 4."),
    upscale_denoise: Optional[str] = typer.Option(None, "--upscale-denoise",
                                                  help="The second pass's denoise, 0-1 "
                                                  "(default 0.5)."),
    title: Optional[str] = typer.Option(None, "--title", help="Text drawn onto the image "
                                        "(exact, in the brand's font; docs/branding.md)."),
    subtitle: Optional[str] = typer.Option(None, "--subtitle", help="A smaller line under "
                                           "the title."),
    footer: Optional[str] = typer.Option(None, "--footer", help="A small line at the end."),
    brand: Optional[str] = typer.Option(None, "--brand", help="$ZMM_HOME/brands/NAME.toml "
                                        "(default: the built-in brand)."),
    max_run_s: Optional[str] = typer.Option(None, "--max-run-s", metavar="SECONDS",
                                            help="The longest each job may run on ComfyUI "
                                            "before it is interrupted and fails (over "
                                            "worker.max_run_s; at most a week)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id(s) and exit."),
    no_inline: bool = typer.Option(False, "--no-inline",
                                   help="Never run jobs in this process; only queue and wait."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop waiting after S seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print jobs as JSON."),
    quiet: bool = typer.Option(False, "--quiet",
                               help="No progress lines: only results (stdout), the jobs that "
                               "fail and the notices that explain a wait (stderr)."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Put the finished images in DIR as NAME.png "
                                       "(NAME-2.png ...): the job's --name or line's name, "
                                       "else its id."),
    name: Optional[str] = typer.Option(None, "--name",
                                       help="The one job's name: its images under --out."),
    key: Optional[str] = typer.Option(None, "--key",
                                      help="Idempotency key: a job the spool holds under it is "
                                      "returned instead of queueing another (docs/scripting.md)."),
    enhance: Optional[str] = typer.Option(None, "--enhance", metavar="[on|required|off]",
                                          help="Let the local LLM (Ollama) improve the prompt "
                                          "for the model family: --enhance alone = on (best "
                                          "effort: the original prompt if Ollama cannot), "
                                          "--enhance=required (the job fails instead). "
                                          "Default: the style's, enhance.styles."),
    no_enhance: bool = typer.Option(False, "--no-enhance",
                                    help="The prompt as written, whatever the style's default."),
    print_workflow: bool = typer.Option(False, "--print-workflow",
                                        help="Print the ComfyUI API graph of each job (JSON; "
                                        "JSON Lines with --from or --count) and queue nothing."),
) -> None:
    """Queue image jobs and (unless --no-wait) follow them until they finish."""
    from zmm import intake
    from zmm.config import fleet
    from zmm.intake import batch, handles, server_files
    from zmm.store import shared_batch
    from zmm.views import routing

    settings = load_config()
    fleet.backends(settings)  # a bad [[backends]] entry is exit 2 before anything is queued
    flags = {"prompt": prompt, "negative": negative, "quality": quality, "style": style,
             "aspect": aspect, "size": size, "seed": seed, "steps": steps, "cfg": cfg,
             "model": model, "family": family, "workflow": workflow, "set": sets, "param": params,
             "priority": priority, "requester": requester, "webhook": webhook, "count": count,
             "backend": backend, "on": on,
             "allow_cloud": allow_cloud or None, "lora": lora,
             "init_image": str(init_image) if init_image is not None else None,
             "denoise": denoise, "upscale": upscale, "upscale_denoise": upscale_denoise,
              "enhance": _enhance_flag(enhance, no_enhance),
              "title": title, "subtitle": subtitle, "footer": footer, "brand": brand,
              "name": name, "key": key, "max_run_s": max_run_s}
    _refuse_empty(flags, timeout)
    recorded = recorded_node_defs(settings)
    reported = functools.cache(lambda: _reported_backends(settings))  # read only for --on
    if out is not None and no_wait:
        raise InvalidInput("out", "not with --no-wait: the images exist once the jobs finish; "
                           "`zmm wait --batch ID --out DIR` places them then")
    if from_file is not None and (prompt is not None or from_image is not None):
        raise InvalidInput("from", "give one of PROMPT, --from FILE or --from-image FILE")
    if from_file is not None:
        specs = batch.read_batch(from_file, {k: v for k, v in flags.items() if k != "prompt"},
                                  settings, reported=reported, node_defs=recorded)
    elif from_image is not None:
        if prompt is not None:
            raise InvalidInput("from-image", "give a PROMPT or --from-image FILE, not both")
        specs = intake.from_image(from_image, {k: v for k, v in flags.items() if k != "prompt"},
                                  settings, reported=reported, node_defs=recorded)
    else:
        specs = intake.build({k: v for k, v in flags.items() if v not in (None, [])}, settings,
                             reported, node_defs=recorded)
    handles.number_handles(specs)
    if print_workflow:
        _print_graphs(specs, settings, lines=from_file is not None or count is not None)
        return
    out_dir = _out_dir(out)
    with open_store(settings) as store:
        server_files.check_server_files(specs, settings, routing.with_nodes(
            store.backends(), store.backend_nodes()) if _custom(specs) else store.backends())
        keep_inputs(specs, settings.assets_dir)
        queued = store.submit(specs)
        jobs = store.get_many(queued.ids)
        partial(batch_id=shared_batch(jobs),
                jobs=[job.public(settings.assets_dir) for job in jobs])
        _tell_existing(queued.existing, len(jobs))
        if no_wait:
            _print_queued(jobs, as_json, settings.assets_dir)
            return
        from zmm.cli import results

        inline = settings.get("generate.inline") and not no_inline
        results.follow(store, queued.ids, settings, timeout,
                       results.Output(as_json, quiet, out_dir), inline=inline)


def _out_dir(out: Path | None) -> Path | None:
    if out is None:
        return None
    from zmm.assets import named

    return named.prepare(out)


def _print_queued(jobs, as_json: bool, assets_root: Path) -> None:
    """`--no-wait`: the job ids one per line, or JSON with the batch id; a person
    at a terminal is told the batch handle on stderr (a script reads `batch_id`
    from --json, and its stderr stays empty)."""
    import sys

    from zmm.store import shared_batch

    batch = shared_batch(jobs)
    if as_json:
        emit_json({"batch_id": batch, "jobs": [job.public(assets_root) for job in jobs]})
        return
    for job in jobs:
        emit(job.id)
    if batch is not None and sys.stderr.isatty():
        say(f"batch {batch}: `zmm wait --batch {batch}` follows its {len(jobs)} jobs")


def _tell_existing(existing: list[str], total: int) -> None:
    if existing:
        say(f"{len(existing)} of {total} job(s) already queued under their --key; not "
            "queued again: " + " ".join(existing[:5]) + (" ..." if len(existing) > 5 else ""))


# Flags whose empty value means something: no negative prompt, no text drawn.
EMPTY_ALLOWED = frozenset({"negative", "title", "subtitle", "footer"})


def _refuse_empty(flags: dict, timeout: float | None) -> None:
    """`--steps ''` is a mistake (an unset shell variable), not "use the default";
    and --timeout is a number of seconds greater than 0."""
    for name, value in flags.items():
        if value == "" and name not in EMPTY_ALLOWED and name != "prompt":
            raise InvalidInput(name.replace("_", "-"), "a value (an empty one was given)")
    check_timeout(timeout)


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (0 < timeout <= MAX_TIMEOUT_S):
        raise InvalidInput("timeout", f"seconds, greater than 0 and at most {MAX_TIMEOUT_S:.0f}")


def _custom(specs) -> bool:
    return any(spec.graph is not None for spec in specs)


def _reported_backends(settings) -> list[dict[str, Any]]:
    """The backends workers reported to the spool (none yet without a spool)."""
    if not settings.spool_path.exists():
        return []
    with open_store(settings, read_only=True) as store:
        return store.backends()


def _enhance_flag(enhance: str | None, no_enhance: bool) -> str | None:
    if no_enhance and enhance is not None:
        raise InvalidInput("enhance", "give --enhance or --no-enhance, not both")
    return "off" if no_enhance else enhance


def keep_inputs(specs, assets_root: Path) -> None:
    """zmm's own copies of the init images, before any job names them."""
    if any(spec.inputs for spec in specs):
        from zmm.assets import inputs

        for image in {image.sha256: image for spec in specs for image in spec.inputs}.values():
            inputs.keep(assets_root, image)


def _print_graphs(specs, settings, *, lines: bool) -> None:
    from zmm import workflows
    from zmm.jsontext import compact

    if any(spec.backend_requested == "cloud" for spec in specs):
        raise InvalidInput("print-workflow", "a job for --backend cloud submits no ComfyUI "
                           "graph; use --backend auto or local")
    if any(spec.enhance != "off" for spec in specs):
        from zmm import enhance

        enhance.enhance_specs(specs, settings, warn=say)
    graphs = workflows.printed_graphs(specs, settings.workflows_dir)
    if lines:
        for graph in graphs:
            emit(compact(graph))
    else:
        import json

        emit(json.dumps(graphs[0], indent=2))


@app.command("wait")
def wait(
    job_ids: list[str] = typer.Argument(None, help="Job ids (or unique prefixes)."),
    batch: Optional[str] = typer.Option(None, "--batch",
                                        help="Every job of this batch (the batch_id of a "
                                        "--from or --count generate)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up after S seconds (exit 8)."),
    as_json: bool = typer.Option(False, "--json", help="Print the finished jobs as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No progress lines: only results and the jobs that fail."),
    out: Optional[Path] = typer.Option(None, "--out",
                                       help="Put the finished images in DIR as NAME.png "
                                       "(the job's name, else its id)."),
) -> None:
    """Wait until jobs finish; exit 0 only if every one succeeded. Follows only:
    a worker (`zmm serve-worker`) runs the jobs."""
    from zmm.cli import results

    check_timeout(timeout)
    if bool(job_ids) == (batch is not None):
        raise InvalidInput("batch", "give job ids or --batch ID, one of the two")
    settings = load_config()
    out_dir = _out_dir(out)
    with open_store(settings) as store:
        ids = store.batch_job_ids(batch) if batch is not None else [
            store.get(job_id).id for job_id in job_ids]
        results.follow(store, ids, settings, timeout, results.Output(as_json, quiet, out_dir))
