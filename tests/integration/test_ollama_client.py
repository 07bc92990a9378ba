"""The Ollama client against the fake Ollama on 127.0.0.1 (port 0), with the fake
NVML reading the same VRAM ledger: loads take memory, unloads give it back later,
a model stuck in "Stopping..." never does. Timeouts run on an injected clock."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.clocks import FakeClock as FakeTime
from tests.conftest import closed_url, wait_until
from tests.fakes.nvml import fake_nvml
from tests.fakes.ollama import RUNNER_PID, FakeOllama
from tests.fakes.vram import GIB, VramLedger
from zmm.backends import gpu
from zmm.backends.ollama import (
    LoadedModel,
    OllamaClient,
    OllamaError,
    ReleaseResult,
    canonical_name,
    normalize_keep_alive,
)
from zmm.errors import (
    BACKEND_UNAVAILABLE,
    NOT_FOUND,
    USAGE,
    NotFound,
    OllamaUnavailable,
)

HEAVY, SMALL, UNTAGGED = "llama3.1:13b", "qwen2.5:7b", "llama3.2"
MODELS = {HEAVY: 14 * GIB, SMALL: 5 * GIB, "llama3.2:latest": 2 * GIB}


@pytest.fixture
def ledger():
    return VramLedger(total_bytes=24 * GIB)


@pytest.fixture
def ollama(ledger):
    with FakeOllama(models=MODELS, ledger=ledger) as fake:
        yield fake


@pytest.fixture
def client(ollama):
    with OllamaClient(ollama.url, timeout=10) as opened:
        yield opened


@pytest.fixture
def nvml(ledger):
    with gpu.use_backend(fake_nvml(ledger)):
        yield


def generate_bodies(fake: FakeOllama) -> list[dict]:
    return [body for path, _, body in fake.requests if path == "/api/generate"]


# -- reading ---------------------------------------------------------------------


def test_version_tags_and_nothing_loaded(client):
    assert client.version() == "0.12.6"
    tags = {m.name: m for m in client.tags()}
    assert set(tags) == set(MODELS)
    assert tags[HEAVY].size == 14 * GIB
    assert (tags[HEAVY].parameter_size, tags[HEAVY].quantization) == ("3.2B", "Q4_K_M")
    assert tags[HEAVY].modified_at.startswith("2026-10-01T10:00:00.")
    assert client.ps() == []


# -- load / unload ---------------------------------------------------------------


def test_load_takes_vram_and_lists_the_model(client, ollama, ledger, nvml):
    client.load(SMALL, keep_alive="10m")
    (model,) = client.ps()
    assert (model.name, model.size, model.size_vram) == (SMALL, 5 * GIB, 5 * GIB)
    assert 590 <= int(normalize_keep_alive(model.expires_at)[:-1]) <= 600
    assert gpu.free_bytes() == 19 * GIB
    (holder,) = gpu.snapshot().gpus[0].processes
    assert (holder.pid, holder.name, holder.role) == (RUNNER_PID, "ollama_llama_server", "ollama")
    client.load(HEAVY)  # no keep_alive: the field is left out, the server default applies
    assert generate_bodies(ollama) == [{"model": SMALL, "stream": False, "keep_alive": "10m"},
                                       {"model": HEAVY, "stream": False}]
    assert gpu.free_bytes() == 5 * GIB
    assert {m.name for m in client.ps()} == {SMALL, HEAVY}


def test_load_answers_only_once_the_model_is_in(ledger):
    with FakeOllama(models=MODELS, ledger=ledger, load_latency=0.3) as fake, \
            OllamaClient(fake.url, timeout=10) as client:
        started = time.monotonic()
        client.load(SMALL)
        assert time.monotonic() - started >= 0.3
        assert [m.name for m in client.ps()] == [SMALL]  # no waiting after the answer


def test_a_model_that_does_not_fit_is_partly_in_system_ram(client, ledger):
    ledger.allocate("comfyui:sdxl", 16 * GIB, pid=5151, process_name="python3 main.py (ComfyUI)")
    client.load(HEAVY)
    (model,) = client.ps()
    assert model == LoadedModel(HEAVY, 14 * GIB, 8 * GIB, model.expires_at)
    assert ledger.free == 0


def test_unload_returns_at_once_and_wait_released_sees_vram_move(client, ollama, ledger, nvml):
    ollama.evict_delay = 0.5
    client.load(HEAVY, keep_alive=-1)
    assert normalize_keep_alive(client.ps()[0].expires_at) == -1  # "forever"
    readings: list[int | None] = []

    def vram_free() -> int | None:
        readings.append(gpu.free_bytes())
        return readings[-1]

    assert client.unload(HEAVY) is True
    assert generate_bodies(ollama)[-1] == {"model": HEAVY, "keep_alive": 0, "stream": False}
    assert [m.name for m in client.ps()] == [HEAVY]  # answered, not yet evicted
    result = client.wait_released([HEAVY], timeout=10, poll=0.02, vram_free=vram_free,
                                  need_bytes=20 * GIB)
    assert result.released and result.still_loaded == []
    assert result.waited_s > 0.2 and result.free_bytes == 24 * GIB
    assert readings[0] == 10 * GIB and readings[-1] == 24 * GIB
    assert not ledger.holds(f"ollama:{HEAVY}") and gpu.snapshot().gpus[0].processes == []


def test_untagged_names_match_their_latest_tag(client, ollama):
    ollama.evict_delay = 0.3
    client.load(UNTAGGED)
    assert [m.name for m in client.ps()] == ["llama3.2:latest"]
    assert canonical_name(UNTAGGED) == "llama3.2:latest"
    assert canonical_name("registry.local:5000/team/llama3.2") == \
        "registry.local:5000/team/llama3.2:latest"
    assert client.unload(UNTAGGED)
    result = client.wait_released([UNTAGGED], timeout=10, poll=0.02)
    assert result.released and result.waited_s > 0.1  # it did wait for "llama3.2:latest"
    assert client.ps() == []


def test_stuck_stopping_times_out_naming_the_model(client, ollama, ledger, nvml):
    client.load(HEAVY, keep_alive="1h")
    ollama.stuck_stopping(HEAVY)
    assert client.unload(HEAVY) is True  # Ollama answers; the runner hangs in "Stopping..."
    fake = FakeTime(1000.0)
    stuck = OllamaClient(ollama.url, timeout=10, clock=fake.clock, sleep=fake.sleep)
    result = stuck.wait_released([HEAVY], timeout=60, poll=1.0, vram_free=gpu.free_bytes,
                                 need_bytes=20 * GIB)
    assert result == ReleaseResult(False, [HEAVY], 60.0, 10 * GIB)
    assert max(fake.sleeps) <= 1.0 and sum(fake.sleeps) == 60.0
    (listed,) = client.ps()
    assert normalize_keep_alive(listed.expires_at, default="7m") == "7m"  # expired: "Stopping..."
    holders = gpu.snapshot().gpus[0].processes
    assert [(p.pid, p.role, p.used_bytes) for p in holders] == [(RUNNER_PID, "ollama", 14 * GIB)]
    ollama.stuck_stopping(HEAVY, on=False)  # the in-flight request ends: the unload completes
    assert client.wait_released([HEAVY], timeout=10, poll=0.02, vram_free=gpu.free_bytes,
                                need_bytes=20 * GIB).released


def test_models_gone_but_vram_still_short(client, ollama, ledger, nvml):
    client.load(SMALL)
    assert ledger.allocate("other:blender", 15 * GIB, pid=6161, process_name="blender")
    assert client.unload(SMALL)
    wait_until(lambda: client.ps() == [], timeout=5)
    fake = FakeTime(1000.0)
    waiting = OllamaClient(ollama.url, clock=fake.clock, sleep=fake.sleep)
    result = waiting.wait_released([SMALL], timeout=5, vram_free=gpu.free_bytes,
                                   need_bytes=10 * GIB)
    assert result == ReleaseResult(False, [], 5.0, 9 * GIB)


def test_wait_released_without_models_or_vram_check_returns_at_once(client):
    fake = FakeTime(1000.0)
    result = OllamaClient(client.base_url, clock=fake.clock, sleep=fake.sleep).wait_released(
        [], timeout=30)
    assert result == ReleaseResult(True, [], 0.0, None) and fake.sleeps == []


def test_keep_alive_expiry_frees_vram_without_anyone_polling(client, ollama, ledger):
    client.load(SMALL, keep_alive="200ms")
    asked = len(ollama.requests)
    wait_until(lambda: not ledger.holds(f"ollama:{SMALL}"), timeout=5, message="expiry")
    assert len(ollama.requests) == asked  # the fake's own timer, not a /api/ps poll
    assert client.ps() == []


# -- errors ----------------------------------------------------------------------


def test_unknown_model_is_not_found(client, ledger):
    with pytest.raises(NotFound) as caught:
        client.load("nope")
    assert caught.value.message == "model 'nope' not found"
    assert caught.value.exit_code == NOT_FOUND and caught.value.hint
    assert client.unload("nope") is False  # the swap's "404 = already gone"
    assert ledger.used == 0


@pytest.mark.parametrize("keep_alive", ["3600", "10 minutes", "5x"])
def test_bad_keep_alive_is_ollamas_400(client, ledger, keep_alive):
    with pytest.raises(OllamaError) as caught:
        client.load(SMALL, keep_alive=keep_alive)
    error = caught.value
    assert error.status == 400 and error.exit_code == USAGE
    assert error.detail.startswith("time: ") and f'"{keep_alive}"' in error.detail
    assert error.message == f"Ollama answered 400: {error.detail}"
    assert client.ps() == [] and ledger.used == 0


def test_the_400_for_a_unitless_string_is_ollamas_own_text(client):
    with pytest.raises(OllamaError, match=r'^Ollama answered 400: time: missing unit in '
                                          r'duration "3600"$'):
        client.load(SMALL, keep_alive="3600")


@pytest.mark.parametrize(("keep_alive", "left"), [(3600, 3600), ("24h", 86400), ("1h30m", 5400),
                                                  (90.5, 90)])
def test_accepted_keep_alive_forms(client, keep_alive, left):
    client.load(SMALL, keep_alive=keep_alive)
    remaining = int(normalize_keep_alive(client.ps()[0].expires_at)[:-1])
    assert left - 10 <= remaining <= left


def test_keep_alive_zero_string_unloads(client, ledger):
    client.load(SMALL)
    client.load(SMALL, keep_alive="0")  # "0" is the one unit-less string Go accepts
    wait_until(lambda: client.ps() == [] and ledger.used == 0, timeout=5)


def test_busy_server_is_a_503_but_unloads_still_work(client, ollama):
    client.load(SMALL)
    ollama.busy_503(True)
    with pytest.raises(OllamaError) as caught:
        client.load(HEAVY)
    assert caught.value.status == 503 and caught.value.exit_code == BACKEND_UNAVAILABLE
    assert "server busy" in caught.value.message
    assert client.unload(SMALL) is True  # unload skips the scheduler's queue
    ollama.busy_503(False)
    client.load(HEAVY)


def test_closed_port_is_ollama_unavailable():
    url = closed_url()
    client = OllamaClient(url, timeout=2)
    calls = [client.version, client.tags, client.ps, lambda: client.load(SMALL),
             lambda: client.unload(SMALL), lambda: client.wait_released([SMALL], timeout=1)]
    for call in calls:
        with pytest.raises(OllamaUnavailable) as caught:
            call()
        assert caught.value.message == f"Ollama at {url} is unreachable: connection refused"
        assert caught.value.exit_code == BACKEND_UNAVAILABLE
        assert caught.value.__suppress_context__


def test_a_slow_answer_is_ollama_unavailable_with_the_timeout(ledger):
    with FakeOllama(models=MODELS, ledger=ledger, load_latency=1.0) as fake, \
            pytest.raises(OllamaUnavailable, match=r"unreachable: timed out after 0\.2s$"):
        OllamaClient(fake.url, timeout=0.2).load(SMALL)


def test_a_server_that_is_not_ollama(ollama):
    wrong = OllamaClient(f"{ollama.url}/not-here")  # aiohttp's own text 404
    with pytest.raises(OllamaError) as caught:
        wrong.ps()
    assert caught.value.status == 404 and caught.value.exit_code == BACKEND_UNAVAILABLE
    assert "404: Not Found" in caught.value.message and "Ollama server" in caught.value.hint

    html = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hi</html>"))
    with pytest.raises(OllamaError, match="unreadable answer to GET /api/tags: <html>hi</html>"):
        OllamaClient("http://proxy.test", transport=html).tags()


# -- the fake's other endpoints --------------------------------------------------


def test_fake_root_chat_and_show(ollama, ledger):
    with httpx.Client(base_url=ollama.url) as http:
        assert http.get("/").text == "Ollama is running"
        loaded = http.post("/api/chat", json={"model": SMALL, "messages": []}).json()
        assert loaded["done_reason"] == "load"
        assert loaded["message"] == {"role": "assistant", "content": ""}
        assert ledger.holds(f"ollama:{SMALL}")
        gone = http.post("/api/chat", json={"model": SMALL, "messages": [], "keep_alive": 0})
        assert gone.json()["done_reason"] == "unload"
        wait_until(lambda: not ledger.holds(f"ollama:{SMALL}"), timeout=5)
        assert http.post("/api/show", json={"name": UNTAGGED}).status_code == 200  # older clients
        missing = http.post("/api/show", json={"model": "nope"})
        assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
        assert http.post("/api/generate").json() == {"error": "missing request body"}


# -- normalize_keep_alive (pure) -------------------------------------------------

NOW = 1717537111.0  # 2024-06-04T21:38:31Z


@pytest.mark.parametrize(("expires_at", "expected"), [
    ("2024-06-04T14:38:31.83753-07:00", "10m"),  # the doc's example: 0.8 s left -> default
    ("2024-06-04T14:48:11.83753-07:00", "580s"),
    ("2024-06-04T21:48:11.123456789Z", "580s"),  # Go's nanoseconds
    ("2024-06-04T21:48:11Z", "580s"),
    ("2318-03-01T00:00:00.000000001Z", -1),  # keep_alive -1 shows as ~292 years ahead
    ("2024-06-04T20:00:00Z", "10m"),  # past ("Stopping...")
    ("0001-01-01T00:00:00Z", "10m"),
    ("2024-06-04T21:48:11", "10m"),  # no zone: not Ollama's, not guessed
    ("not a time", "10m"),
    (None, "10m"),
])
def test_normalize_keep_alive(expires_at, expected):
    assert normalize_keep_alive(expires_at, now=NOW) == expected


def test_normalize_keep_alive_default_is_made_acceptable():
    assert normalize_keep_alive(None, default="3600") == 3600  # Ollama would refuse "3600"
    assert normalize_keep_alive(None, default="1.5") == 1.5
    assert normalize_keep_alive(None, default=-1) == -1
    assert normalize_keep_alive(None, default="24h") == "24h"
