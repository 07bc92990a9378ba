"""Text generation on the fake Ollama as the real server answers it (streamed by
default, whole with "stream": false, errors as {"error": ...}), and zmm's
OllamaClient.generate / chat against it."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import closed_url, wait_until
from tests.fakes.ollama import FakeOllama
from tests.fakes.vram import GIB
from zmm.backends.ollama import OllamaClient
from zmm.errors import NotFound, OllamaError, OllamaUnavailable

MODEL = "llama3.2:latest"
STATS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
         "eval_count", "eval_duration")


@pytest.fixture
def ollama():
    with FakeOllama(models={MODEL: 2 * GIB, "qwen3:8b": 5 * GIB}) as fake:
        fake.thinking_models = {"qwen3:8b"}
        yield fake


def post(fake, path, body):
    return httpx.post(f"{fake.url}{path}", json=body, timeout=5)


def lines(response):
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_generate_streams_ndjson_fragments_by_default(ollama):
    ollama.reply = "a red fox in the snow"
    response = post(ollama, "/api/generate", {"model": "llama3.2", "prompt": "fox"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(response)
    assert [c["response"] for c in chunks[:-1]] == ["a", " red", " fox", " in", " the", " snow"]
    assert all(c["done"] is False and c["model"] == MODEL and c["created_at"].endswith("Z")
               for c in chunks[:-1])
    last = chunks[-1]
    assert last["done"] is True and last["done_reason"] == "stop" and last["response"] == ""
    assert all(isinstance(last[key], int) for key in STATS) and last["eval_count"] == 6
    assert isinstance(last["context"], list)
    assert MODEL in ollama.loaded  # a generation loads the model, like a preload


def test_generate_with_stream_false_is_one_object(ollama):
    ollama.reply = "a red fox"
    response = post(ollama, "/api/generate", {"model": MODEL, "prompt": "fox", "stream": False})
    body = response.json()
    assert body["response"] == "a red fox" and body["done"] is True
    assert body["done_reason"] == "stop" and "context" in body
    assert set(STATS) <= set(body)


def test_chat_streams_message_fragments_and_answers_whole(ollama):
    ollama.reply = lambda body: "echo " + body["messages"][-1]["content"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "cat"}]
    streamed = lines(post(ollama, "/api/chat", {"model": MODEL, "messages": messages}))
    assert [c["message"] for c in streamed[:-1]] == [
        {"role": "assistant", "content": "echo"}, {"role": "assistant", "content": " cat"}]
    assert streamed[-1]["done"] is True and streamed[-1]["message"]["content"] == ""
    assert "context" not in streamed[-1]  # /api/chat keeps no context
    whole = post(ollama, "/api/chat", {"model": MODEL, "messages": messages,
                                        "stream": False}).json()
    assert whole["message"] == {"role": "assistant", "content": "echo cat"}
    assert whole["done_reason"] == "stop" and set(STATS) <= set(whole)


def test_num_predict_cuts_the_answer_with_done_reason_length(ollama):
    ollama.reply = "one two three four"
    body = post(ollama, "/api/generate", {"model": MODEL, "prompt": "x", "stream": False,
                                          "options": {"num_predict": 2}}).json()
    assert body["response"] == "one two" and body["done_reason"] == "length"


def test_errors_are_json_with_the_servers_status(ollama):
    missing = post(ollama, "/api/generate", {"model": "nope", "prompt": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    bad = post(ollama, "/api/generate", {"model": MODEL, "prompt": "x", "options": "hot"})
    assert bad.status_code == 400 and "GenerateRequest.options" in bad.json()["error"]
    bad_chat = post(ollama, "/api/chat", {"model": MODEL, "messages": "hi"})
    assert bad_chat.status_code == 400 and "ChatRequest.messages" in bad_chat.json()["error"]
    no_think = post(ollama, "/api/chat", {"model": MODEL, "think": True,
                                          "messages": [{"role": "user", "content": "x"}]})
    assert no_think.status_code == 400 and "does not support thinking" in no_think.json()["error"]
    ollama.busy_503()
    busy = post(ollama, "/api/chat", {"model": MODEL, "messages": [{"role": "user",
                                                                    "content": "x"}]})
    assert busy.status_code == 503 and "maximum pending requests" in busy.json()["error"]
    ollama.busy_503(False)
    ollama.runner_crash()
    crashed = post(ollama, "/api/generate", {"model": MODEL, "prompt": "x", "stream": False})
    assert crashed.status_code == 500 and "runner process has terminated" in crashed.json()["error"]


def test_thinking_comes_apart_with_think_true_and_inline_without(ollama):
    ollama.reply = "<think>they want a fox</think>a fox at dawn"
    asked = {"model": "qwen3:8b", "prompt": "fox", "stream": False}
    apart = post(ollama, "/api/generate", {**asked, "think": True}).json()
    assert apart["thinking"] == "they want a fox" and apart["response"] == "a fox at dawn"
    dropped = post(ollama, "/api/generate", {**asked, "think": False}).json()
    assert "thinking" not in dropped and dropped["response"] == "a fox at dawn"
    inline = post(ollama, "/api/generate", asked).json()
    assert inline["response"] == "<think>they want a fox</think>a fox at dawn"


def test_a_generation_with_keep_alive_0_unloads_after_answering(ollama):
    body = post(ollama, "/api/generate", {"model": MODEL, "prompt": "x", "stream": False,
                                          "keep_alive": 0}).json()
    assert body["done_reason"] == "stop" and body["response"]
    wait_until(lambda: MODEL not in ollama.loaded, timeout=5)


def test_client_generate_and_chat_send_stream_false_and_read_the_answer(ollama):
    ollama.reply = "a fox, snow"
    with OllamaClient(ollama.url, timeout=5) as client:
        generated = client.generate("llama3.2", "fox", system="tags only",
                                    options={"temperature": 0.2})
        chatted = client.chat("llama3.2", [{"role": "user", "content": "fox"}])
    assert generated.text == chatted.text == "a fox, snow"
    assert generated.model == MODEL and generated.done_reason == "stop"
    assert generated.seconds is not None and generated.seconds > 0
    sent = [body for path, _, body in ollama.requests if path in ("/api/generate", "/api/chat")]
    assert all(body["stream"] is False for body in sent)
    assert sent[0]["system"] == "tags only" and sent[0]["options"] == {"temperature": 0.2}


def test_client_maps_errors_and_its_own_timeout(ollama):
    with OllamaClient(ollama.url, timeout=5) as client:
        with pytest.raises(NotFound, match="model 'nope' not found"):
            client.chat("nope", [{"role": "user", "content": "x"}])
        ollama.busy_503()
        with pytest.raises(OllamaError) as busy:
            client.generate(MODEL, "x")
        assert busy.value.status == 503
        ollama.busy_503(False)
        ollama.text_latency = 2.0
        with pytest.raises(OllamaUnavailable, match="timed out after 0.2s"):
            client.generate(MODEL, "x", timeout=0.2)


def test_client_reports_a_refused_connection():
    with OllamaClient(closed_url(), timeout=2) as client, \
            pytest.raises(OllamaUnavailable, match="connection refused"):
        client.chat(MODEL, [{"role": "user", "content": "x"}])
