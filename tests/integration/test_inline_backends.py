"""An inline `zmm generate` (no worker running) with several backends runs its
job on a backend whose server has the job's model: the pinned one, else the
first that has it, asked directly when no worker has recorded its files yet."""

from __future__ import annotations

import pytest

from tests.conftest import run_zmm
from tests.fakes.comfyui import FakeComfyUI
from zmm.store import Store
from zmm.store.history import HistoryFilter

SDXL = "sd_xl_base_1.0.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"


@pytest.fixture
def two(tmp_path, home):
    first = FakeComfyUI(checkpoints=[SDXL], output_dir=tmp_path / "a").start()
    second = FakeComfyUI(checkpoints=[SD15], output_dir=tmp_path / "b").start()
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[ollama]\nenabled = false\n\n[[backends]]\nname = "a"\nurl = "{first.url}"\ngpu = 0\n\n'
        f'[[backends]]\nname = "b"\nurl = "{second.url}"\ngpu = 1\n')
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.mark.slow
@pytest.mark.parametrize("model, ran_on", [("sd15", 1), ("sdxl", 0)])
def test_inline_generate_runs_where_the_model_is(two, settings, model, ran_on):
    result = run_zmm("generate", "x", "--model", model, "--size", "64x64", "--steps", "2",
                     "--timeout", "30", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    with Store(settings.spool_path) as store:
        (job,) = store.history_page(HistoryFilter(limit=5))[0]
    assert job.status == "succeeded" and job.comfy_url == two[ran_on].url
    assert [len(fake.submissions) for fake in two] == [1 - ran_on, ran_on]


@pytest.mark.slow
def test_inline_generate_of_a_pinned_job_runs_on_its_backend(two, settings):
    result = run_zmm("generate", "x", "--model", "sd15", "--on", "b", "--size", "64x64",
                     "--steps", "2", "--timeout", "30", timeout=60)
    assert result.returncode == 0, result.stderr
    assert [len(fake.submissions) for fake in two] == [0, 1]
