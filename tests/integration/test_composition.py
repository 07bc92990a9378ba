"""Text and branding end to end: a job with --title through the worker and the
fake ComfyUI saves the composed image and the plain one, both with metadata
that reproduces the job; `zmm compose` composes it again without ComfyUI; a
cloud job is composed too; cleanup removes both files and counts both."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops

from tests.conftest import closed_url
from tests.integration.test_cloud_fallback import World, clouds  # noqa: F401 (fixture)
from tests.integration.test_parts import run_to_end, settings_for
from zmm import assets, intake
from zmm.compose import brands, render
from zmm.store import Store


def enqueue(settings, **fields) -> str:
    raw = {"prompt": "composition test", "size": "512x288", "steps": "2", "quality": "draft",
           "seed": "11", "style": "report-cover", **fields}
    with Store(settings.spool_path) as store:
        (job,) = store.enqueue(intake.build(raw, settings))
        return job.id


def band_of(settings, style: str, width: int, height: int, texts: dict) -> tuple:
    brand = brands.load("default", settings.brands_dir)
    _, band, *_ = render.plan(brand, style, width, height, texts, None, render.Fonts(brand))
    return band.left, band.top, band.right, band.bottom


def test_a_titled_job_keeps_both_images_with_metadata_and_compose_reuses_the_plain_one(
        home, comfy, cli):
    settings = settings_for(home, comfy)
    texts = {"title": "Harbour report", "subtitle": "Q3 2026", "footer": "internal"}
    job_id = enqueue(settings, **texts)
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "succeeded", job.error_message
    composed_path = job.output_file(settings.assets_dir)
    (plain_name,) = job.plain_list
    plain_path = settings.assets_dir / plain_name
    assert plain_name == job.output_path.replace(".png", ".plain.png")
    assert composed_path.is_file() and plain_path.is_file()
    # The plain image is ComfyUI's, pixel for pixel; the composed one differs in the band only.
    (comfy_file,) = sorted(Path(comfy.output_dir).rglob("*.png"))
    plain, composed = Image.open(plain_path), Image.open(composed_path)
    assert ImageChops.difference(plain.convert("RGB"),
                                 Image.open(comfy_file).convert("RGB")).getbbox() is None
    assert ImageChops.difference(plain.convert("RGB"), composed.convert("RGB")).getbbox() == \
        band_of(settings, "report-cover", 512, 288, texts)
    for path in (composed_path, plain_path):
        meta = assets.zmm_metadata(path)
        assert meta["compose"] == dict(texts, brand="default") and meta["job_id"] == job_id
    assert "prompt" in assets.read_text_chunks(composed_path.read_bytes())  # ComfyUI's graph
    assert job.file_size_bytes == composed_path.stat().st_size
    # --from-image reproduces the job, text and brand included; flags win.
    (again,) = intake.from_image(composed_path, {}, settings)
    assert again.extra["compose"] == dict(texts, brand="default") and again.seed == 11
    (retitled,) = intake.from_image(composed_path, {"title": "Other"}, settings)
    assert retitled.extra["compose"]["title"] == "Other"
    shown = cli.json("history", "show", job_id, "--json")["job"]
    assert shown["plain_path"] == plain_name and shown["plain_file"] == str(plain_path)
    assert shown["plain_files"] == [str(plain_path)] and shown["output_file"] == str(composed_path)
    # zmm compose: a new job from the plain image, ComfyUI not asked again.
    submissions = len(comfy.submissions)
    made = cli.json("compose", job_id, "--title", "Second take", "--json")["job"]
    assert len(comfy.submissions) == submissions
    assert made["source_job_id"] == job_id and made["status"] == "succeeded"
    new_plain = Image.open(made["plain_file"])
    assert ImageChops.difference(new_plain.convert("RGB"), plain.convert("RGB")).getbbox() is None
    assert Path(made["output_file"]).read_bytes() != composed_path.read_bytes()
    assert assets.zmm_metadata(Path(made["output_file"]))["compose"] == {
        "title": "Second take", "brand": "default"}
    # Cleanup removes both files of each job and counts both files' bytes.
    sizes = {path: Path(path).stat().st_size for path in
             (str(composed_path), str(plain_path), made["output_file"], made["plain_file"])}
    report = cli.json("cleanup", "--older-than", "never", "--max-size", "0B", "--yes", "--json")
    removed = {name for item in report["removals"] for name in item["absolute_files"]}
    assert set(sizes) <= removed and not any(Path(path).exists() for path in sizes)
    assert report["totals"]["bytes"] >= sum(sizes.values())


def test_a_job_whose_brand_broke_after_it_was_queued_fails_with_the_brands_line(home, comfy):
    settings = settings_for(home, comfy)
    folder = settings.brands_dir
    folder.mkdir(parents=True)
    (folder / "acme.toml").write_text('[fonts]\ntitle = "builtin"\n[colors]\n'
                                      'band = "#000000"\ntitle = "#ffffff"\n')
    job_id = enqueue(settings, title="T", brand="acme")
    (folder / "acme.toml").write_text('[fonts]\ntitle = "builtin"\n[colors]\ntitle = "#fff"\n')
    job = run_to_end(settings, comfy, job_id)
    assert job.status == "failed"
    assert job.error_message == f"{folder / 'acme.toml'}: colors.band: missing (required)"
    assert not list(settings.assets_dir.rglob(f"{job_id}*"))  # neither image is left


def test_a_cloud_job_is_composed_too(home, clouds):  # noqa: F811
    world = World(home, clouds, closed_url())
    try:
        job_id = world.enqueue(backend="cloud", title="From the cloud", style="infographic")
        world.drive(lambda: world.job(job_id).status in ("succeeded", "failed"))
        job = world.job(job_id)
        assert job.status == "succeeded", job.error_message
        composed = job.output_file(world.settings.assets_dir)
        (plain_name,) = job.plain_list
        plain = world.settings.assets_dir / plain_name
        texts = {"title": "From the cloud"}
        width, height = Image.open(plain).size
        assert ImageChops.difference(Image.open(plain).convert("RGB"),
                                     Image.open(composed).convert("RGB")).getbbox() == \
            band_of(world.settings, "infographic", width, height, texts)
        assert assets.zmm_metadata(composed)["compose"] == dict(texts, brand="default")
    finally:
        world.close()


def test_a_waiting_generate_says_when_the_text_did_not_fit(home, comfy, cli):
    result = cli("generate", "composition test", "--size", "64x64", "--steps", "2",
                 "--quality", "draft", "--title", "A title far too long for so small an image")
    assert result.exit_code == 0, result.stderr
    (job_id,) = [line.rsplit("/", 1)[-1].removesuffix(".png") for line in result.stdout.split()]
    assert f"{job_id}: the image is too small for all of its text: title left out" \
        in result.stderr
