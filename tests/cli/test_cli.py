"""The command line through CliRunner: exit codes, stdout vs stderr, --json,
and that bad input writes nothing."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT
from zmm.errors import EXIT_CODES
from zmm.store import Store


def job_count(settings) -> int:
    if not settings.spool_path.exists():
        return 0
    with Store(settings.spool_path) as store:
        return store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and re.fullmatch(r"zmm \d+\.\d+\.\d+\n", result.stdout)


def test_generate_no_wait_prints_ids_on_stdout_only(cli, settings):
    result = cli("generate", "a red fox", "--no-wait", "--count", "2", "--seed", "7")
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2 and all(i.startswith("mmg-") for i in ids)
    assert result.stderr == ""
    with Store(settings.spool_path) as store:
        jobs = store.get_many(ids)
    assert [job.seed for job in jobs] == [7, 8]
    assert all(job.status == "queued" for job in jobs)


def test_generate_resolves_quality_aspect_and_style(cli):
    data = cli.json("generate", "a bridge", "--no-wait", "--json", "--quality", "draft",
                    "--aspect", "16:9", "--style", "technical-diagram", "--priority", "low",
                    "--requester", "agent-7")
    job = data["jobs"][0]
    assert (job["width"], job["height"]) == (768, 432)
    assert job["model_requested"] == "v1-5-pruned-emaonly.safetensors"
    assert job["priority"] == "LOW" and job["requester"] == "agent-7"
    assert job["prompt"] == "a bridge" and job["steps"] == 20
    high = cli.json("generate", "a bridge", "--no-wait", "--json", "--quality", "high")["jobs"][0]
    assert high["model_requested"] == "sd_xl_base_1.0.safetensors" and high["steps"] == 40
    assert (high["width"], high["height"]) == (1024, 1024)


def test_requester_from_environment(cli, monkeypatch):
    monkeypatch.setenv("ZMM_REQUESTER", "ci-bot")
    job = cli.json("generate", "x", "--no-wait", "--json")["jobs"][0]
    assert job["requester"] == "ci-bot"


BAD_INPUT = [
    (["generate", "", "--no-wait"], "prompt: must not be empty"),
    (["generate", "   ", "--no-wait"], "prompt: must not be empty"),
    (["generate", "x", "--quality", "ultra", "--no-wait"], "quality: one of draft, standard, high"),
    (["generate", "x", "--style", "baroque", "--no-wait"], "style: one of"),
    (["generate", "x", "--aspect", "5:4", "--no-wait"], "aspect: one of"),
    (["generate", "x", "--priority", "urgent", "--no-wait"], "priority: one of"),
    (["generate", "x", "--size", "1000x7", "--no-wait"], "size: WxH"),
    (["generate", "x", "--size", "8192x8192", "--no-wait"], "size: WxH"),
    (["generate", "x", "--size", "512x512", "--aspect", "1:1", "--no-wait"], "size: give --size or --aspect"),
    (["generate", "x", "--steps", "0", "--no-wait"], "steps: an integer from 1 to 150"),
    (["generate", "x", "--steps", "151", "--no-wait"], "steps: an integer from 1 to 150"),
    (["generate", "x", "--cfg", "31", "--no-wait"], "cfg: a number from 0 to 30"),
    (["generate", "x", "--seed", "-1", "--no-wait"], "seed: an integer from 0"),
    (["generate", "x", "--count", "0", "--no-wait"], "count: an integer from 1 to 1000"),
    (["generate", "x", "--webhook", "ftp://x", "--no-wait"], "webhook: an http:// or https:// URL"),
    (["generate", "x", "--model", "../../etc/passwd", "--no-wait"], "model: a checkpoint name"),
    (["generate", "x", "--backend", "mars", "--no-wait"], "backend: one of auto, local, cloud"),
    (["generate", "x", "--backend", "local", "--allow-cloud", "--no-wait"],
     "allow-cloud: not with --backend local"),
    (["generate", "x", "--workflow", "sdxl-txt2img", "--backend", "cloud", "--no-wait"],
     "backend: a custom --workflow or --set runs only on ComfyUI"),
    (["generate", "x", "--set", "3.steps=4", "--allow-cloud", "--no-wait"],
     "allow-cloud: a custom --workflow or --set runs only on ComfyUI"),
    (["generate", "x", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, settings, args, message):
    before = job_count(settings)
    result = cli(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    if message == "--bogus":
        assert "No such option" in lines[0]
    assert all(line.startswith(("error: ", "hint: ")) for line in lines)
    assert result.stdout == ""
    assert job_count(settings) == before


@pytest.mark.parametrize("args,suggestion", [(["queu"], "'queue'"),
                                             (["queue", "cancle"], "'cancel'"),
                                             (["histroy"], "'history'")])
def test_a_mistyped_command_is_exit_2_with_one_suggestion(cli, args, suggestion):
    result = cli(*args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("Did you mean") == 1 and suggestion in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [[], ["gpu"], ["models"], ["config"]], ids=lambda a: " ".join(a))
def test_a_group_without_a_subcommand_prints_its_help_once(cli, args):
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stdout.count("Usage:") == 1, result.stdout


def test_from_file_is_all_or_nothing_and_names_the_line(cli, settings, tmp_path):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "one"}\n{"prompt": "two", "steps": 999}\n{"prompt": "three"}\n')
    result = cli("generate", "--from", str(batch), "--no-wait")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: line 2: steps: an integer from 1 to 150")
    assert job_count(settings) == 0
    batch.write_text('{"prompt": "one"}\n\n{"prompt": "two", "quality": "draft"}\n')
    result = cli("generate", "--from", str(batch), "--no-wait", "--priority", "LOW")
    assert result.exit_code == 0 and len(result.stdout.split()) == 2
    assert job_count(settings) == 2


def test_from_csv(cli, settings, tmp_path):
    batch = tmp_path / "jobs.csv"
    batch.write_text("prompt,quality,seed\nalpha,draft,1\nbeta,high,2\n")
    data = cli.json("generate", "--from", str(batch), "--no-wait", "--json")
    assert [(j["prompt"], j["quality_tier"], j["seed"]) for j in data["jobs"]] == [
        ("alpha", "draft", 1), ("beta", "high", 2)]
    batch.write_text("prompt,steps\nalpha,2\nbeta,abc\n")
    result = cli("generate", "--from", str(batch), "--no-wait")
    assert result.exit_code == 2 and "line 3: steps" in result.stderr


def test_malformed_jsonl_line(cli, settings, tmp_path):
    batch = tmp_path / "jobs.jsonl"
    batch.write_text('{"prompt": "ok"}\n{not json\n')
    result = cli("generate", "--from", str(batch), "--no-wait")
    assert result.exit_code == 2 and result.stderr.startswith("error: line 2: a JSON object")
    assert job_count(settings) == 0


def test_unknown_job_id_is_exit_3(cli):
    for args in (["wait", "mmg-nope"], ["history", "show", "mmg-nope"], ["queue", "cancel", "mmg-nope"]):
        result = cli(*args)
        assert result.exit_code == 3, args
        assert result.stderr.startswith("error: no job 'mmg-nope'")


def finish(settings, job_id, **fields):
    """Run `job_id` to success as a worker would, with its files (relative names)."""
    from zmm.jobs import JobState

    with Store(settings.spool_path) as store:
        store.claim("w", lease_s=60, aging_s=600, only_ids=[job_id])
        return store.transition(job_id, JobState.SUCCEEDED, expect=JobState.RUNNING, **fields)


def test_cancelling_a_finished_job_is_a_conflict_naming_its_state(cli, settings):
    done, queued = cli("generate", "x", "--no-wait", "--count", "2").stdout.split()
    finish(settings, done)
    result = cli("queue", "cancel", done, queued)
    assert result.exit_code == 5
    assert result.stdout == f"{queued}\tcancelled\n"  # the other job is still cancelled
    assert result.stderr.splitlines()[0] == f"error: {done}: already succeeded"
    as_json = cli("queue", "cancel", done, queued, "--json")
    assert as_json.exit_code == 5
    assert json.loads(as_json.stdout) == {"schema": 2, "ok": False, "results": [
        {"id": done, "result": "already_succeeded", "status": "succeeded"},
        {"id": queued, "result": "already_cancelled", "status": "cancelled"}], "error": {
        "code": "conflict", "exit_code": 5,
        "message": f"{done}: already succeeded; {queued}: already cancelled",
        "hint": "only queued or running jobs can be cancelled"}}
    assert cli("queue", "cancel", "--all-pending").exit_code == 0  # nothing pending: no conflict


def test_json_outputs_carry_absolute_paths_beside_relative_ones(cli, settings):
    (job_id,) = cli("generate", "x", "--no-wait").stdout.split()
    relative = "2026/11/23/x.png"
    finish(settings, job_id, output_path=relative, outputs=json.dumps([relative, "b.png"]),
           thumbnail_path="thumbs/x.jpg")
    assets = settings.assets_dir
    expected = {"output_path": relative, "output_file": str(assets / relative),
                "thumbnail_path": "thumbs/x.jpg", "thumbnail_file": str(assets / "thumbs/x.jpg"),
                "outputs": [relative, "b.png"],
                "output_files": [str(assets / relative), str(assets / "b.png")]}
    shown = [cli.json("history", "--json")["jobs"][0], cli.json("history", "show", job_id,
                                                                "--json")["job"],
             cli.json("queue", "--json", "--all")["finished"][0]]
    for job in shown:
        assert {key: job[key] for key in expected} == expected
    (queued,) = cli("generate", "y", "--no-wait").stdout.split()
    listed = cli.json("queue", "--json")["queued"][0]
    assert (listed["id"], listed["output_file"], listed["output_files"]) == (queued, None, [])


def test_queue_listing_cancel_retry_priority_pause(cli, settings):
    ids = cli("generate", "x", "--no-wait", "--count", "3", "--priority", "LOW").stdout.split()
    data = cli.json("queue", "--json")
    assert [j["id"] for j in data["queued"]] == ids
    assert [j["position"] for j in data["queued"]] == [1, 2, 3]
    assert cli("queue", "priority", ids[2], "CRITICAL").exit_code == 0
    assert [j["id"] for j in cli.json("queue", "--json")["queued"]][0] == ids[2]
    assert cli("queue", "cancel", ids[0]).stdout.strip() == f"{ids[0]}\tcancelled"
    again = cli("queue", "cancel", ids[0])
    assert again.exit_code == 5 and again.stdout == ""
    assert again.stderr.startswith(f"error: {ids[0]}: already cancelled\n")
    assert "only queued or running" in again.stderr  # the hint
    assert cli("queue", "retry", ids[0]).exit_code == 0
    assert cli.json("queue", "pause", "--json") == {"schema": 2, "ok": True, "paused": True,
                                                    "error": None}
    assert cli.json("queue", "--json")["paused"] is True
    assert cli.json("queue", "resume", "--json")["paused"] is False
    cancelled = cli.json("queue", "cancel", "--all-pending", "--json")["results"]
    assert len(cancelled) == 3


def test_history_and_show(cli):
    ids = cli("generate", "a lighthouse", "--no-wait", "--count", "2").stdout.split()
    cli("generate", "a whale", "--no-wait", "--requester", "bot")
    page = cli.json("history", "--json", "--search", "lighthouse")
    assert page["total"] == 2 and {j["id"] for j in page["jobs"]} == set(ids)
    assert cli.json("history", "--json", "--requester", "bot")["total"] == 1
    assert cli.json("history", "--json", "--since", "1h")["total"] == 3
    bad = cli("history", "--since", "yesterday")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: since:")
    shown = cli.json("history", "show", ids[0], "--json")
    assert shown["job"]["id"] == ids[0] and shown["events"][0]["kind"] == "enqueued"
    text = cli("history", "show", ids[0]).stdout
    assert "events:" in text and "enqueued" in text


def test_wait_times_out_with_code_8(cli):
    job_id = cli("generate", "x", "--no-wait").stdout.strip()
    result = cli("wait", job_id, "--timeout", "0.3")
    assert result.exit_code == 8 and "timed out" in result.stderr


def test_config_show_masks_and_layers(cli, home, monkeypatch):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[comfyui]\nurl = "http://gpu-box:8188"\n[worker]\nlease_s = 90\n')
    monkeypatch.delenv("ZMM_COMFYUI_URL")  # the file's URL, not the tests' closed port (only shown)
    monkeypatch.setenv("ZMM_WORKER_LEASE_S", "45")
    monkeypatch.setenv("ZMM_WEBHOOK_SECRET", "s3cret-value")
    data = cli.json("config", "show", "--json")
    assert data["settings"]["comfyui"]["url"] == "http://gpu-box:8188"
    assert data["sources"]["comfyui.url"] == "file"
    assert data["settings"]["worker"]["lease_s"] == 45.0 and data["sources"]["worker.lease_s"] == "env"
    assert "s3cret-value" not in cli("config", "show").stdout
    assert "s3cret-value" not in json.dumps(data)
    assert cli("config", "path").stdout.strip() == str(home / "config.toml")


def test_bad_config_is_a_clear_error(cli, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[worker]\nlease_s = 'soon'\n")
    result = cli("generate", "x", "--no-wait")
    assert result.exit_code == 2 and result.stderr.startswith("error: worker.lease_s: must be a float")


def test_corrupt_spool_is_exit_7_without_traceback(cli, settings):
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.spool_path.write_bytes(b"garbage" * 1000)
    result = cli("queue")
    assert result.exit_code == 7 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the spool at")


def all_commands():
    from typer.main import get_command

    from zmm.cli import app
    from zmm.cli.common import subcommands

    root = get_command(app)
    found = []

    def walk(command, path):
        found.append(path)
        for name, sub in subcommands(command).items():
            walk(sub, path + [name])

    walk(root, [])
    return found


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "zmm")
def test_every_command_has_help_and_is_in_the_readme(cli, path):
    result = cli(*path, "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout
    if path:
        readme = (ROOT / "README.md").read_text()
        assert f"zmm {' '.join(path)}" in readme, f"README does not document `zmm {' '.join(path)}`"


@pytest.mark.parametrize("path", [["generate"], ["queue"], ["history", "show"]],
                         ids=lambda p: " ".join(p))
def test_short_help_option_reaches_lazily_loaded_commands(cli, path):
    result = cli(*path, "-h")
    assert result.exit_code == 0 and f"Usage: zmm {' '.join(path)}" in result.stdout


def test_readme_exit_code_table_matches_the_registry():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE))
    assert {int(code) for code in table} == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert table[str(code)] == meaning


def test_custom_workflow_with_sets_is_validated_before_queuing(cli, settings, tmp_path):
    from zmm import workflows

    graph = workflows.load("sd15-txt2img", None).graph
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(graph))
    job = cli.json("generate", "x", "--workflow", str(path), "--set", "3.denoise=0.7",
                   "--no-wait", "--json")["jobs"][0]
    with Store(settings.spool_path) as store:
        stored = store.get(job["id"]).request.values["graph"]
    assert stored["3"]["inputs"]["denoise"] == 0.7
    before = job_count(settings)
    bad = cli("generate", "x", "--workflow", str(path), "--set", "3.nope=1", "--no-wait")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: set: '3.nope=1'")
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    bad = cli("generate", "x", "--workflow", str(ui), "--no-wait")
    assert bad.exit_code == 2 and "UI-format workflow without nodes" in bad.stderr
    missing = cli("generate", "x", "--workflow", "no-such-template", "--no-wait")
    assert missing.exit_code == 3
    assert job_count(settings) == before


def test_model_free_custom_workflow_records_no_checkpoint(cli, settings, tmp_path):
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64,
                                                          "batch_size": 1, "color": 0}},
             "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "$filename_prefix",
                                                         "images": ["1", 0]}}}
    path = tmp_path / "model-free.json"
    path.write_text(json.dumps(graph))
    job = cli.json("generate", "x", "--workflow", str(path), "--no-wait", "--json")["jobs"][0]
    assert job["model_requested"] is None and job["workflow"] == "model-free"
