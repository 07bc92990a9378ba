"""Intake: flags, `--from` lines and a PNG's zmm chunk into resolved job specs,
with one InvalidInput naming the field for anything not allowed."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from zmm import assets, intake, jobs
from zmm.errors import InvalidInput, NotFound
from zmm.intake import batch

SDXL, SD15 = "sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"


def one(raw, settings):
    (spec,) = intake.build(raw, settings)
    return spec


def refused(raw, settings) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        intake.build(raw, settings)
    return caught.value


def test_defaults_come_from_the_config(settings):
    spec = one({"prompt": "a lighthouse"}, settings)
    assert (spec.quality_tier, spec.priority, spec.requester) == ("standard", jobs.Priority.HIGH, "user")
    assert (spec.model_key, spec.model_requested, spec.workflow) == ("sdxl", SDXL, "sdxl-txt2img")
    assert (spec.width, spec.height, spec.steps, spec.cfg) == (1024, 1024, 25, 7.0)
    assert (spec.sampler, spec.scheduler) == ("dpmpp_2m", "karras")
    assert spec.negative_prompt == settings.get("generate.negative")
    assert spec.backend_requested == "auto" and spec.cloud_allowed is False
    assert 0 <= spec.seed <= jobs.MAX_SEED and spec.graph is None


def test_a_changed_config_default_changes_the_spec(settings):
    settings.override("generate.quality", "draft")
    settings.override("generate.priority", "LOW")
    spec = one({"prompt": "a lighthouse"}, settings)
    assert (spec.quality_tier, spec.priority, spec.model_requested) == ("draft", jobs.Priority.LOW, SD15)
    assert (spec.width, spec.height, spec.steps) == (512, 512, 20)


def test_count_makes_consecutive_seeds(settings):
    specs = intake.build({"prompt": "a lighthouse", "count": "3", "seed": "41"}, settings)
    assert [spec.seed for spec in specs] == [41, 42, 43]
    assert len({spec.prompt for spec in specs}) == 1


def test_seeds_wrap_past_the_largest(settings):
    specs = intake.build({"prompt": "x", "count": 2, "seed": str(jobs.MAX_SEED)}, settings)
    assert [spec.seed for spec in specs] == [jobs.MAX_SEED, 0]


@pytest.mark.parametrize("count", ["0", str(jobs.MAX_COUNT + 1), "two"])
def test_a_count_out_of_range_is_refused(settings, count):
    assert refused({"prompt": "x", "count": count}, settings).field == "count"


def test_an_unknown_field_is_named_with_the_allowed_ones(settings):
    error = refused({"prompt": "x", "colour": "red"}, settings)
    assert error.field == "colour" and "prompt" in error.allowed


def test_a_missing_prompt_is_refused(settings):
    assert refused({}, settings).field == "prompt"


def test_size_sets_the_pixels_and_aspect_picks_the_family_s_size(settings):
    assert (one({"prompt": "x", "size": "640x384"}, settings).width,
            one({"prompt": "x", "size": "640x384"}, settings).height) == (640, 384)
    wide = one({"prompt": "x", "aspect": "16:9"}, settings)
    assert (wide.width, wide.height) == (1344, 768)
    draft = one({"prompt": "x", "aspect": "16:9", "quality": "draft"}, settings)
    assert (draft.width, draft.height) == (768, 432)


def test_size_and_aspect_together_are_refused(settings):
    assert refused({"prompt": "x", "size": "512x512", "aspect": "1:1"}, settings).field == "size"


def test_an_unknown_aspect_lists_the_allowed_ones(settings):
    error = refused({"prompt": "x", "aspect": "5:4"}, settings)
    assert error.field == "aspect" and "16:9" in error.allowed


def test_a_model_alias_resolves_to_its_checkpoint(settings):
    spec = one({"prompt": "x", "model": "sd15"}, settings)
    assert (spec.model_key, spec.model_requested, spec.workflow) == ("sd15", SD15, "sd15-txt2img")
    assert spec.model_pinned is True


def test_a_checkpoint_file_name_is_used_as_given_with_its_family_guessed(settings):
    xl = one({"prompt": "x", "model": "juggernautXL_v9.safetensors"}, settings)
    assert (xl.model_key, xl.model_requested) == ("sdxl", "juggernautXL_v9.safetensors")
    plain = one({"prompt": "x", "model": "dreamshaper_8.safetensors"}, settings)
    assert (plain.model_key, plain.width) == ("sd15", 512)


@pytest.mark.parametrize("name", ["../evil.safetensors", "/etc/passwd", "C:/models/x.ckpt"])
def test_a_checkpoint_outside_comfyui_s_folder_is_refused(settings, name):
    assert refused({"prompt": "x", "model": name}, settings).field == "model"


def test_a_custom_workflow_with_sets_carries_its_graph(settings):
    spec = one({"prompt": "x", "workflow": "sd15-txt2img", "set": ["KSampler.denoise=0.5"]},
               settings)
    assert spec.workflow == "sd15-txt2img"
    assert spec.graph["3"]["inputs"]["denoise"] == 0.5
    assert spec.cloud_allowed is False


def test_a_set_naming_no_input_is_refused(settings):
    error = refused({"prompt": "x", "set": "KSampler.nonsense=1"}, settings)
    assert error.field == "set" and "nonsense" in error.allowed


def test_a_custom_graph_naming_its_own_checkpoint_records_it(settings):
    spec = one({"prompt": "x", "workflow": "sd15-txt2img",
                "set": [f"4.ckpt_name=\"{SDXL}\""]}, settings)
    assert spec.model_requested == SDXL and spec.model_key == "sdxl"


def test_an_unknown_workflow_is_refused(settings):
    with pytest.raises((InvalidInput, NotFound)):
        intake.build({"prompt": "x", "workflow": "no-such-template"}, settings)


def test_backend_local_with_allow_cloud_is_refused(settings):
    error = refused({"prompt": "x", "backend": "local", "allow_cloud": True}, settings)
    assert error.field == "allow-cloud"


@pytest.mark.parametrize(("extra", "field"), [({"backend": "cloud"}, "backend"),
                                              ({"allow_cloud": "true"}, "allow-cloud")])
def test_a_custom_graph_may_not_go_to_the_cloud(settings, extra, field):
    error = refused({"prompt": "x", "set": "KSampler.denoise=0.5", **extra}, settings)
    assert error.field == field and "custom" in error.allowed


def test_who_may_send_a_prompt_to_the_cloud(settings):
    assert one({"prompt": "x", "backend": "cloud"}, settings).cloud_allowed is True
    assert one({"prompt": "x", "allow_cloud": "yes"}, settings).cloud_allowed is True
    assert one({"prompt": "x"}, settings).cloud_allowed is False
    settings.override("cloud.enabled", True)
    assert one({"prompt": "x"}, settings).cloud_allowed is True
    assert one({"prompt": "x", "backend": "local"}, settings).cloud_allowed is False


def test_allow_cloud_must_be_a_yes_or_no(settings):
    assert refused({"prompt": "x", "allow_cloud": "maybe"}, settings).field == "allow_cloud"


# -- --from -----------------------------------------------------------------------


def test_a_jsonl_batch_with_flags_as_defaults(settings, tmp_path):
    path = tmp_path / "batch.jsonl"
    path.write_text('{"prompt": "one"}\n\n{"prompt": "two", "priority": "LOW", "count": 2}\n')
    specs = batch.read_batch(path, {"priority": "CRITICAL", "quality": "draft"}, settings)
    assert [spec.user_prompt for spec in specs] == ["one", "two", "two"]
    assert [spec.priority for spec in specs] == [jobs.Priority.CRITICAL] + [jobs.Priority.LOW] * 2
    assert {spec.quality_tier for spec in specs} == {"draft"}


def test_a_csv_batch(settings, tmp_path):
    path = tmp_path / "batch.csv"
    path.write_text("prompt,steps\nfirst,10\n\"second, with a comma\",\n")
    specs = batch.read_batch(path, {}, settings)
    assert [(spec.user_prompt, spec.steps) for spec in specs] == [("first", 10),
                                                                  ("second, with a comma", 25)]


@pytest.mark.parametrize(("name", "text", "field"), [
    ("b.jsonl", '{"prompt": "ok"}\n{"prompt": "bad", "steps": 999}\n', "line 2: steps"),
    ("b.jsonl", '{"prompt": "ok"}\n\nnot json\n', "line 3"),
    ("b.jsonl", '{"prompt": "ok"}\n["a list"]\n', "line 2"),
    ("b.csv", "prompt,steps\nok,10\nbad,zero\n", "line 3: steps"),
    ("b.csv", "prompt\nok\ntoo,many\n", "line 3"),
    ("b.csv", "text,steps\nok,10\n", "line 1"),
])
def test_a_bad_line_is_named_and_nothing_is_returned(settings, tmp_path, name, text, field):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        batch.read_batch(path, {}, settings)
    assert caught.value.field == field


def test_an_empty_or_missing_batch_file(settings, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InvalidInput) as caught:
        batch.read_batch(empty, {}, settings)
    assert caught.value.field == "from"
    with pytest.raises(NotFound):
        batch.read_batch(tmp_path / "absent.jsonl", {}, settings)


# -- --from-image ---------------------------------------------------------------------


def saved_image(tmp_path, metadata) -> object:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, "PNG")
    return assets.save_output(tmp_path, "images/x.png", buffer.getvalue(), metadata).path


def test_from_image_repeats_the_recorded_request(settings, tmp_path):
    path = saved_image(tmp_path, {"prompt": "a red square", "negative": "blue", "seed": 42,
                                  "width": 640, "height": 384, "steps": 12, "cfg": 5.5,
                                  "model": SD15, "quality": "draft", "style": "none",
                                  "priority": "LOW", "requester": "ci", "sampler": "lms",
                                  "scheduler": "simple"})
    (spec,) = intake.from_image(path, {}, settings)
    assert (spec.user_prompt, spec.negative_prompt, spec.seed) == ("a red square", "blue", 42)
    assert (spec.width, spec.height, spec.steps, spec.cfg) == (640, 384, 12, 5.5)
    assert (spec.model_requested, spec.priority, spec.requester) == (SD15, jobs.Priority.LOW, "ci")
    assert (spec.sampler, spec.scheduler) == ("lms", "simple")


def test_from_image_flags_win_and_an_aspect_replaces_the_size(settings, tmp_path):
    path = saved_image(tmp_path, {"prompt": "a red square", "seed": 42, "width": 640,
                                  "height": 384, "model": SD15})
    (spec,) = intake.from_image(path, {"seed": "7", "aspect": "1:1", "prompt": None}, settings)
    assert (spec.user_prompt, spec.seed, spec.width, spec.height) == ("a red square", 7, 512, 512)



def test_a_job_s_own_max_run_s_is_stored_in_its_params(settings):
    spec = one({"prompt": "a lighthouse", "max_run_s": "90"}, settings)
    assert spec.stored_params()["max_run_s"] == 90.0
    assert "max_run_s" not in one({"prompt": "a lighthouse"}, settings).stored_params()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "604801", "soon", True])
def test_a_max_run_s_out_of_range_is_refused_naming_it(settings, value):
    error = refused({"prompt": "a lighthouse", "max_run_s": value}, settings)
    assert error.field == "max-run-s"
    assert "greater than 0 and at most 604800" in str(error)
