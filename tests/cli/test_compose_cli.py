"""Text and brand input at the command line: `zmm generate --title ...` and
`zmm compose`. Every bad input is exit 2 (3 for a job that is not there, 5 for
one in the wrong state) with one `error:` line naming the file and key or the
field and character, and no job row written."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.test_cli import job_count
from zmm import assets
from zmm.store import Store

GOOD = """
[fonts]
title = "builtin"
[colors]
band = "#102030"
title = "#ffffff"
"""


@pytest.fixture
def brands_dir(home):
    folder = home / "brands"
    folder.mkdir(parents=True)
    (folder / "acme.toml").write_text(GOOD)
    (folder / "notes.txt").write_text("not a font")
    Image.new("RGB", (20, 10)).save(folder / "logo.png")
    return folder


def brand_file(folder, name: str, text: str) -> str:
    path = folder / f"{name}.toml"
    path.write_text(text)
    return str(path)


BAD = [
    ("nope", None, ["--title", "T"], "brand: no brand 'nope'; brands: acme, default (files in "),
    ("nokey", "[fonts]\ntitle = 'builtin'\n[colors]\ntitle = '#ffffff'\n", ["--title", "T"],
     "{file}: colors.band: missing (required)"),
    ("nofonts", "[colors]\nband = '#000000'\ntitle = '#ffffff'\n", ["--title", "T"],
     "{file}: fonts: missing; a [fonts] table with title"),
    ("colour", GOOD.replace('"#ffffff"', '"white"'), ["--title", "T"],
     "{file}: colors.title: a colour #rrggbb or #rrggbbaa, not 'white'"),
    ("shortcolour", GOOD.replace('"#102030"', '"#12"'), ["--title", "T"],
     "{file}: colors.band: a colour #rrggbb or #rrggbbaa, not '#12'"),
    ("font", GOOD.replace('"builtin"', '"notes.txt"'), ["--title", "T"],
     "{file}: fonts.title: the font 'notes.txt' does not load:"),
    ("nofont", GOOD.replace('"builtin"', '"gone.ttf"'), ["--title", "T"],
     "{file}: fonts.title: the font 'gone.ttf' does not load: cannot read"),
    ("logo", GOOD + "[logo]\nfile = 'notes.txt'\n", ["--title", "T"],
     "{file}: logo.file: the image 'notes.txt' does not load"),
    ("typo", GOOD + "[layout]\nopacty = 0.5\n", ["--title", "T"],
     "{file}: layout.opacty: unknown key; allowed: kind, position"),
    ("style", GOOD + "[layout.poster]\nheight = 0.5\n", ["--title", "T"],
     "{file}: layout.poster: unknown style; one of technical-diagram"),
    ("range", GOOD + "[layout.report-cover]\nopacity = 2\n", ["--title", "T"],
     "{file}: layout.report-cover.opacity: a number from 0 to 1"),
    ("bandpos", GOOD + "[layout]\nposition = 'top-left'\n", ["--title", "T"],
     "{file}: layout: position: a band is at one of top, bottom"),
    ("toml", "[fonts\n", ["--title", "T"], "{file}: not valid TOML"),
    (None, None, ["--title", "Café"],
     "title: the title font of brand 'default' (Pillow's built-in Aileron Regular) has no "
     "glyph for 'é' (U+00E9 LATIN SMALL LETTER E WITH ACUTE)"),
    (None, None, ["--title", "ok", "--subtitle", "naïve"],
     "subtitle: the text font of brand 'default' (Pillow's built-in Aileron Regular) has no "
     "glyph for 'ï' (U+00EF"),
    ("acme", None, [], "brand: only with --title, --subtitle or --footer"),
    ("../acme", None, ["--title", "T"], "brand: a name of letters, digits"),
]


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0][len("error: "):]


@pytest.mark.parametrize("name,text,args,message", BAD,
                         ids=[f"{n}-{' '.join(a)}" for n, _, a, _ in BAD])
def test_bad_text_or_brand_is_exit_2_one_line_and_no_job(cli, settings, brands_dir, name, text,
                                                         args, message):
    file = brand_file(brands_dir, name, text) if text is not None else ""
    brand = ["--brand", name] if name else []
    result = cli("generate", "a prompt", "--no-wait", *args, *brand)
    assert result.exit_code == 2, result.stderr
    assert one_error_line(result).startswith(message.format(file=file))
    assert job_count(settings) == 0


def test_a_bad_line_in_from_names_the_line_and_the_field(cli, settings, brands_dir, tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "a", "title": "fine"}) + "\n"
                     + json.dumps({"prompt": "b", "title": "Crème", "brand": "acme"}) + "\n")
    result = cli("generate", "--from", str(batch), "--no-wait")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("line 2: title: the title font of brand 'acme'")
    assert job_count(settings) == 0


def test_text_and_brand_are_queued_in_the_job_from_flags_and_from_files(cli, settings,
                                                                      brands_dir, tmp_path):
    queued = cli.json("generate", "a prompt", "--no-wait", "--json", "--title", "Q3 report",
                      "--footer", "internal", "--brand", "acme", "--style", "report-cover")
    job_id = queued["jobs"][0]["id"]
    shown = cli.json("history", "show", job_id, "--json")
    assert shown["params"]["compose"] == {"title": "Q3 report", "footer": "internal",
                                          "brand": "acme"}
    assert shown["job"]["plain_path"] is None and shown["job"]["source_job_id"] is None
    batch = tmp_path / "batch.csv"
    batch.write_text("prompt,title,subtitle\nx,Hello,World\n")
    from_file = cli.json("generate", "--from", str(batch), "--no-wait", "--json")["jobs"][0]
    params = cli.json("history", "show", from_file["id"], "--json")["params"]
    assert params["compose"] == {"title": "Hello", "subtitle": "World", "brand": "default"}
    text = cli("history", "show", job_id).stdout
    assert "text title" in text and "Q3 report" in text and "acme" in text


# -- zmm compose ----------------------------------------------------------------------


def finished_job(settings, status: str = "succeeded", *, with_file: bool = True) -> str:
    """A job as a worker leaves it, with a saved PNG (no server needed)."""
    from zmm import intake
    from zmm.jobs import JobState

    with Store(settings.spool_path) as store:
        spec = intake.build({"prompt": "p", "size": "256x256", "seed": "1"}, settings)[0]
        job = store.enqueue([spec])[0]
        claimed = store.claim("w", lease_s=60, aging_s=600)
        assert claimed is not None and claimed.id == job.id
        fields: dict = {}
        if status == "succeeded":
            relative = assets.relative_name(job.id, job.created_at, 0)
            out = BytesIO()
            Image.new("RGB", (256, 256), (30, 120, 200)).save(out, "PNG")
            if with_file:
                assets.save_output(settings.assets_dir, relative, out.getvalue(), {"job_id": job.id})
            fields = {"output_path": relative, "outputs": json.dumps([relative]),
                      "backend": "local", "generation_time_s": 4.0}
        store.transition(job.id, JobState(status), expect=JobState.RUNNING, worker_id="w",
                         **fields)
        return job.id


def test_compose_makes_a_new_succeeded_job_pointing_at_its_source(cli, settings, brands_dir):
    source = finished_job(settings)
    made = cli.json("compose", source, "--title", "Again", "--brand", "acme", "--json")["job"]
    assert made["status"] == "succeeded" and made["source_job_id"] == source
    assert made["backend"] == "compose" and made["id"] != source
    assert made["plain_path"].endswith(".plain.png") and made["output_path"].endswith(".png")
    for key in ("output_file", "plain_file", "thumbnail_file"):
        assert made[key] and Path(made[key]).is_file(), key
    meta = assets.zmm_metadata(Path(made["output_file"]))
    assert meta["compose"] == {"title": "Again", "brand": "acme"} and meta["job_id"] == made["id"]
    plain = Image.open(made["plain_file"])
    assert plain.getpixel((5, 5)) == (30, 120, 200)  # the source's image, untouched
    again = cli("compose", made["id"], "--title", "Third")
    assert again.exit_code == 0 and again.stdout.strip().endswith(".png")
    assert job_count(settings) == 3
    # Composing generates nothing: no cloud job, no generation time, no dent in the local rate.
    stats = cli.json("stats", "--json")
    assert stats["by_backend"]["compose"]["succeeded"] == 2
    assert stats["cost_usd"]["cloud_jobs"] == 0 and stats["local_success_rate"] == 1.0
    (timing,) = stats["generation_time_s"].values()
    assert timing["count"] == 1 and timing["median_s"] == 4.0  # the source's generation only


@pytest.mark.parametrize("case,code,message", [
    ("unknown", 3, "no job 'mmg-20990101-000000-00000000' in the spool"),
    ("failed", 5, "job {id} is failed; only a succeeded job has an image to compose onto"),
    ("gone", 3, "job {id}'s image images/"),
    ("brand", 2, "brand: no brand 'nope'; brands: acme, default"),
    ("glyph", 2, "title: the title font of brand 'default'"),
    ("notext", 2, "title: give --title, --subtitle or --footer"),
])
def test_compose_refuses_with_one_line_and_writes_nothing(cli, settings, brands_dir, case, code,
                                                          message):
    job_id = {"unknown": lambda: "mmg-20990101-000000-00000000",
              "failed": lambda: finished_job(settings, "failed"),
              "gone": lambda: finished_job(settings, with_file=False)}.get(
        case, lambda: finished_job(settings))()
    args = {"brand": ["--title", "T", "--brand", "nope"], "glyph": ["--title", "Ça"],
            "notext": []}.get(case, ["--title", "T"])
    before = job_count(settings)
    files_before = sorted(settings.assets_dir.rglob("*")) if settings.assets_dir.exists() else []
    result = cli("compose", job_id, *args)
    assert result.exit_code == code, result.stderr
    line = [text for text in result.stderr.splitlines() if text.startswith("error: ")]
    assert len(line) == 1 and line[0][len("error: "):].startswith(message.format(id=job_id))
    assert job_count(settings) == before
    files_after = sorted(settings.assets_dir.rglob("*")) if settings.assets_dir.exists() else []
    assert files_after == files_before
