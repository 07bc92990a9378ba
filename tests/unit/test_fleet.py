"""[[backends]] in config.toml: the default backend, the entries' checks, and
the per-backend view of the settings a worker runs with."""

from __future__ import annotations

import pytest

from zmm import config
from zmm.config import fleet
from zmm.errors import InvalidInput, NotFound
from zmm.worker import service


def load(tmp_path, text: str = "", environ: dict[str, str] | None = None):
    if text:
        (tmp_path / "config.toml").write_text(text, encoding="utf-8")
    return config.load(tmp_path, environ=environ or {})


def test_without_entries_one_default_backend_is_todays_settings(tmp_path):
    settings = load(tmp_path, environ={"ZMM_COMFYUI_URL": "http://127.0.0.1:9000"})
    (only,) = fleet.backends(settings)
    assert only == fleet.Backend("default", "http://127.0.0.1:9000", 0,
                                 "http://127.0.0.1:11434", "", "", {})


def test_default_backend_has_no_ollama_when_it_is_disabled(tmp_path):
    settings = load(tmp_path, "[ollama]\nenabled = false\n")
    assert fleet.backends(settings)[0].ollama == ""


def test_entries_in_config_order_gpu_absent_means_remote(tmp_path):
    settings = load(tmp_path, """
[[backends]]
name = "gpu0"
url = "http://127.0.0.1:8188/"
gpu = 0
ollama = "http://127.0.0.1:11434"

[[backends]]
name = "render-box"
url = "http://10.0.0.7:8188"
""")
    first, second = fleet.backends(settings)
    assert (first.name, first.url, first.gpu, first.local) == ("gpu0", "http://127.0.0.1:8188", 0,
                                                               True)
    assert (second.name, second.gpu, second.local, second.ollama) == ("render-box", None, False, "")


@pytest.mark.parametrize("clash, words", [
    ('url = "http://127.0.0.1:8188"\ngpu = 1', "both have url 'http://127.0.0.1:8188'"),
    ('url = "http://127.0.0.1:8189"\ngpu = 0', "both have gpu 0"),
])
def test_two_backends_sharing_a_url_or_a_gpu_name_both_entries(tmp_path, clash, words):
    settings = load(tmp_path, f"""
[[backends]]
name = "a"
url = "http://127.0.0.1:8188"
gpu = 0

[[backends]]
name = "b"
{clash}
""")
    with pytest.raises(InvalidInput) as caught:
        fleet.backends(settings)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("config backends[0] (a) and backends[1] (b): " + words)


def test_two_remote_backends_are_not_a_gpu_clash(tmp_path):
    settings = load(tmp_path, '[[backends]]\nname = "a"\nurl = "http://h1:8188"\n'
                              '[[backends]]\nname = "b"\nurl = "http://h2:8188"\n')
    assert [item.gpu for item in fleet.backends(settings)] == [None, None]


@pytest.mark.parametrize("entry, field", [
    ('name = "A b"\nurl = "http://h:1"', "config backends[0].name"),
    ('name = "a"\nurl = "h:1"', "config backends[0].url"),
    ('name = "a"\nurl = "http://h:1"\ngpu = -1', "config backends[0].gpu"),
    ('name = "a"\nurl = "http://h:1"\ngpu = true', "config backends[0].gpu"),
    ('name = "a"\nurl = "http://h:1"\nollama = "h:2"', "config backends[0].ollama"),
    ('name = "a"\nurl = "http://h:1"\nport = 3', "config backends[0].port"),
])
def test_a_bad_entry_names_its_key(tmp_path, entry, field):
    settings = load(tmp_path, f"[[backends]]\n{entry}\n")
    with pytest.raises(InvalidInput) as caught:
        fleet.backends(settings)
    assert caught.value.field == field


def test_backends_that_is_not_a_list_of_tables_is_refused_on_load(tmp_path):
    with pytest.raises(InvalidInput, match="config backends"):
        load(tmp_path, 'backends = "gpu0"\n')


def test_an_unknown_backend_name_lists_the_configured_ones(tmp_path):
    settings = load(tmp_path, '[[backends]]\nname = "gpu0"\nurl = "http://h:1"\ngpu = 0\n'
                              '[[backends]]\nname = "gpu1"\nurl = "http://h:2"\ngpu = 1\n')
    with pytest.raises(NotFound) as caught:
        fleet.backend(settings, "gpu2")
    assert caught.value.exit_code == 3
    assert str(caught.value) == "backend 'gpu2' is not configured; backends: gpu0, gpu1"
    assert fleet.backend(settings, "gpu1").gpu == 1


def test_a_backend_a_worker_reported_is_found_by_name_and_listed(tmp_path):
    """Rows of the spool's backends table (Store.backends()): one that is not
    configured is a backend too; a configured name keeps its configuration."""
    settings = load(tmp_path, '[[backends]]\nname = "gpu0"\nurl = "http://h:1"\ngpu = 0\n')
    reported = [{"name": "gpu0", "url": "http://elsewhere:1", "gpu": 3},
                {"name": "h-8190", "url": "http://h:8190", "gpu": None}]
    assert fleet.backend(settings, "gpu0", reported) == fleet.backend(settings, "gpu0")
    assert fleet.backend(settings, "h-8190", reported) == fleet.Backend(
        "h-8190", "http://h:8190", None)
    with pytest.raises(NotFound) as caught:
        fleet.backend(settings, "gpu2", reported)
    assert str(caught.value) == "backend 'gpu2' is not configured; backends: gpu0, h-8190"
    job = type("PinnedJob", (), {"on_backend": "h-8190", "needs": None})()
    assert service.inline_backend(settings, job, reported).url == "http://h:8190"


def test_settings_for_a_backend_use_its_urls_and_leave_the_original_alone(tmp_path):
    settings = load(tmp_path, """
[[backends]]
name = "gpu1"
url = "http://127.0.0.1:8189"
gpu = 1
command = "python main.py --port 8189"

[[backends]]
name = "far"
url = "http://10.0.0.7:8188"
""")
    gpu1, far = fleet.backends(settings)
    view = fleet.settings_for(settings, gpu1)
    assert view.backend is gpu1
    assert view.get("comfyui.url") == "http://127.0.0.1:8189"
    assert view.get("comfyui.command") == "python main.py --port 8189"
    assert view.get("ollama.enabled") is False  # no Ollama shares that GPU
    assert settings.get("comfyui.url") == "http://127.0.0.1:8188" and settings.backend is None
    assert fleet.settings_for(settings, far).get("comfyui.command") == ""


def test_settings_for_keep_ollama_disabled_when_config_disables_it(tmp_path):
    settings = load(tmp_path, '[ollama]\nenabled = false\n[[backends]]\nname = "a"\n'
                              'url = "http://h:1"\ngpu = 0\nollama = "http://h:11434"\n')
    view = fleet.settings_for(settings, fleet.backends(settings)[0])
    assert view.get("ollama.enabled") is False
    assert view.get("ollama.url") == "http://h:11434"


@pytest.mark.parametrize(("url", "name"), [
    ("http://127.0.0.1:8189", "127-0-0-1-8189"),
    ("http://Render-Box.lan:8188", "render-box-lan-8188"),
    ("https://comfy.example.com", "comfy-example-com-443"),
    ("http://[::1]:8190", "1-8190"),
])
def test_a_bare_comfyui_url_is_a_backend_named_after_its_host_and_port(url, name):
    chosen = fleet.named_for_url(fleet.Backend(fleet.DEFAULT_NAME, url, 0))
    assert (chosen.name, chosen.url, chosen.gpu) == (name, url, 0)
