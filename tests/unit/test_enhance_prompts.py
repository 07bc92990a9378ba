"""The pure parts of prompt enhancement: the modes, the system prompt per style
and family, and the cleaning of a model's answer."""

from __future__ import annotations

import pytest

from zmm import enhance, families, intake, jobs
from zmm.config import load
from zmm.errors import InvalidInput


@pytest.mark.parametrize("value,mode", [
    (True, "on"), (False, "off"), ("on", "on"), ("auto", "on"), ("YES", "on"), ("off", "off"),
    ("0", "off"), ("required", "required"), (" Required ", "required"),
])
def test_modes(value, mode):
    assert jobs.parse_enhance(value) == mode


def test_an_unknown_mode_names_the_field():
    with pytest.raises(InvalidInput, match="enhance: one of off, on, required"):
        jobs.parse_enhance("loud")


def test_the_style_default_applies_when_the_request_says_nothing(settings):
    settings.data["enhance"]["styles"] = dict(settings.get("enhance.styles"),
                                              infographic="required")

    def mode(**fields):
        return intake.build({"prompt": "x", **fields}, settings)[0].enhance

    assert mode(style="infographic") == "required"
    assert mode(style="infographic", enhance="off") == "off"
    assert mode() == "off"
    settings.data["enhance"]["styles"]["none"] = "sometimes"
    with pytest.raises(InvalidInput, match="config enhance.styles.none"):
        mode()


def test_keywords_for_clip_families_and_sentences_for_t5_ones():
    assert families.prompt_kind("sd15") == families.prompt_kind("sdxl") == "tags"
    assert families.prompt_kind("sd35-large") == families.prompt_kind("flux-dev") == "sentences"
    assert families.prompt_kind("custom", "my-flux-finetune.safetensors") == "sentences"
    assert families.prompt_kind(None) == "tags"


def test_the_system_prompt_joins_the_styles_text_and_the_familys_format(settings):
    sdxl = enhance.system_prompt(settings, "technical-diagram", "sdxl")
    assert "technical diagram" in sdxl and "comma-separated" in sdxl and "(sdxl)" in sdxl
    flux = enhance.system_prompt(settings, "none", "flux-schnell")
    assert "sentences" in flux and "{format}" not in flux and "technical" not in flux


def test_a_system_prompt_from_config_toml_overrides_one_style(home):
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        '[enhance]\nmodel = "qwen2.5:7b"\n[enhance.system]\n'
        'report-cover = "Cover art only. {format} Braces {stay}."\n')
    settings = load(home)
    assert settings.get("enhance.model") == "qwen2.5:7b"
    text = enhance.system_prompt(settings, "report-cover", "sdxl")
    assert text.startswith("Cover art only. The image model (sdxl) reads comma-separated")
    assert text.endswith("Braces {stay}.")
    assert "technical diagram" in enhance.system_prompt(settings, "technical-diagram", "sdxl")


@pytest.mark.parametrize("answer,prompt", [
    ("a red fox, snow", "a red fox, snow"),
    ('"a red fox, snow"', "a red fox, snow"),
    ("Prompt: a red fox", "a red fox"),
    ('**Enhanced prompt:** "a red fox"', "a red fox"),
    ('"Prompt: a red fox, snow"', "a red fox, snow"),
    ("Sure! Here is the prompt: a red fox", "a red fox"),
    ("Here is an improved prompt for SDXL:\n\na red fox,\nsnow", "a red fox, snow"),
    ("<think>They want a fox.\nIn snow.</think>\n\na red fox in snow", "a red fox in snow"),
    ("a red fox\n\nNegative prompt: blurry, text", "a red fox"),
    ("```\na red fox, a sign reading \"OPEN\"\n```", 'a red fox, a sign reading "OPEN"'),
    ("“a red fox”", "a red fox"),
    ("a prompting robot: big", "a prompting robot: big"),
    ("<think>still thinking when the tokens ran out", ""),
    ('  ""  ', ""),
])
def test_cleaning_an_answer(answer, prompt):
    assert enhance.clean(answer, 1000) == prompt


def test_a_long_answer_is_cut_at_the_last_comma_or_sentence_before_the_cap():
    tags = ", ".join(f"tag{n}" for n in range(200))
    cut = enhance.clean(tags, 100)
    assert len(cut) <= 100 and cut.endswith(tuple("0123456789")) and tags.startswith(cut)
    sentences = "A fox sits in the snow. " * 20
    cut = enhance.clean(sentences, 100)
    assert len(cut) <= 100 and cut.endswith("snow.")
    words = "word " * 100
    assert len(enhance.clean(words, 50)) <= 50 and enhance.clean(words, 50).endswith("word")


def test_intake_refuses_enhance_for_a_graph_without_a_prompt(settings, tmp_path):
    graph = tmp_path / "fixed.json"
    graph.write_text('{"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}}, '
                     '"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], '
                     '"filename_prefix": "$filename_prefix"}}}')
    with pytest.raises(InvalidInput, match="enhance: only for a workflow with a \\$prompt"):
        intake.build({"prompt": "x", "workflow": str(graph), "enhance": "on"}, settings)
    settings.data["enhance"]["styles"] = dict(settings.get("enhance.styles"), none="on")
    (spec,) = intake.build({"prompt": "x", "workflow": str(graph)}, settings)
    assert spec.enhance == "off"  # the style's default does not apply to such a graph
