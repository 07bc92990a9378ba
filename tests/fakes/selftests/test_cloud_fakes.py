"""The fake Stability AI and OpenAI Images servers against docs/cloud-protocol.md,
spoken to with plain httpx (no zmm code): success shapes, validation, credits and
token usage, auth, and every scripted fault's status, body and headers."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from PIL import Image

from tests.fakes.stability import NO_CREDITS

STABILITY_AUTH = {"authorization": "Bearer sk-test-stability"}
OPENAI_AUTH = {"authorization": "Bearer sk-test-openai"}
DUMMY = {"none": ""}  # Stability needs multipart even without a file


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=5.0) as client:  # one client: each new one loads TLS roots (~0.1 s)
        yield client


def generate(http, fake, endpoint="core", accept="image/*", headers=STABILITY_AUTH, files=DUMMY,
             timeout=5.0, **fields):
    fields.setdefault("prompt", "a lighthouse on a cliff")
    return http.post(f"{fake.url}/v2beta/stable-image/generate/{endpoint}", data=fields,
                     files=files, headers={**headers, "accept": accept}, timeout=timeout)


def images(http, fake, headers=OPENAI_AUTH, timeout=5.0, **body):
    body.setdefault("prompt", "a lighthouse on a cliff")
    body.setdefault("model", "gpt-image-1.5")
    return http.post(f"{fake.url}/v1/images/generations", json=body, headers=headers,
                     timeout=timeout)


def assert_stability_error(response, status, name):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"id", "name", "errors"} and re.fullmatch("[0-9a-f]{32}", body["id"])
    assert body["name"] == name and body["errors"] and response.headers["x-request-id"]
    return body["errors"]


def assert_openai_error(response, status, kind, code):
    assert response.status_code == status
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    assert (error["type"], error["code"]) == (kind, code)
    return error


# -- Stability ------------------------------------------------------------------------------

@pytest.mark.parametrize(("ratio", "size"), [("16:9", (1344, 768)), ("9:21", (640, 1536))])
def test_stability_raw_image(http, stability, ratio, size):
    response = generate(http, stability, aspect_ratio=ratio, seed="42")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["finish-reason"] == "SUCCESS" and response.headers["seed"] == "42"
    assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", size)


def test_stability_json_and_formats(http, stability):
    response = generate(http, stability, accept="application/json", output_format="jpeg")
    assert response.headers["content-type"] == "application/json; type=image/jpeg"
    body = response.json()
    assert set(body) == {"image", "finish_reason", "seed"} and body["finish_reason"] == "SUCCESS"
    assert 1 <= body["seed"] <= 4_294_967_294  # seed omitted: a random one
    assert Image.open(io.BytesIO(base64.b64decode(body["image"]))).size == (1024, 1024)
    webp = generate(http, stability, "ultra", output_format="webp")
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"


def test_stability_logs_what_was_sent(http, stability):
    generate(http, stability, "sd3", model="sd3.5-medium", cfg_scale="5")
    sent = stability.requests[-1]
    assert sent["path"] == "/v2beta/stable-image/generate/sd3" and sent["method"] == "POST"
    assert sent["fields"] == {"prompt": "a lighthouse on a cliff", "model": "sd3.5-medium",
                              "cfg_scale": "5"}
    assert sent["files"] == ["none"] and sent["headers"]["accept"] == "image/*"


def test_stability_refuses_json_and_urlencoded_bodies(http, stability):
    url = f"{stability.url}/v2beta/stable-image/generate/core"
    for sent in ({"json": {"prompt": "x"}}, {"data": {"prompt": "x"}}):
        response = http.post(url, headers={**STABILITY_AUTH, "accept": "image/*"}, **sent)
        assert_stability_error(response, 400, "bad_request")


def test_stability_validation_names_the_field(http, stability):
    bad = generate(http, stability, aspect_ratio="4:3", seed="-1", style_preset="vaporwave")
    errors = assert_stability_error(bad, 400, "bad_request")
    assert {e.split(":")[0] for e in errors} == {"aspect_ratio", "seed", "style_preset"}
    assert assert_stability_error(generate(http, stability, prompt=""), 400, "bad_request") == [
        "prompt: must be between 1 and 10000 characters"]
    missing = http.post(f"{stability.url}/v2beta/stable-image/generate/core", files=DUMMY,
                        headers={**STABILITY_AUTH, "accept": "image/*"})
    assert assert_stability_error(missing, 400, "bad_request") == ["prompt: is required"]
    sd3 = generate(http, stability, "sd3", output_format="webp", model="sd3-large", cfg_scale="11")
    assert {e.split(":")[0] for e in assert_stability_error(sd3, 400, "bad_request")} == {
        "output_format", "model", "cfg_scale"}
    assert_stability_error(generate(http, stability, accept="*/*"), 400, "bad_request")
    assert_stability_error(generate(http, stability, "sd3", mode="image-to-image"), 400, "bad_request")
    assert_stability_error(http.get(f"{stability.url}/v2beta/nope"), 404, "not_found")


def test_stability_credits(http, stability):
    stability.credits = 20.0
    for endpoint, extra in (("ultra", {}), ("core", {}), ("sd3", {"model": "sd3.5-large"})):
        assert generate(http, stability, endpoint, **extra).status_code == 200
    assert (stability.credits_used, stability.credits) == (17.5, 2.5)
    assert assert_stability_error(generate(http, stability), 402, "payment_required") == [NO_CREDITS]
    assert stability.credits_used == 17.5  # a refusal is not charged


def test_stability_auth(http, stability):
    for headers in ({}, {"authorization": "Bearer sk-wrong"}):
        response = generate(http, stability, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"message": "Incorrect API key provided"}


@pytest.mark.parametrize(("kind", "status", "name"), [
    ("bad_request", 400, "bad_request"), ("payment_required", 402, "payment_required"),
    ("content_moderation", 403, "content_moderation"), ("too_large", 413, "payload_too_large"),
    ("rejected", 422, "invalid_language"), ("rate_limited", 429, "rate_limit_exceeded"),
    ("server_error", 500, "internal_error")])
def test_stability_faults(http, stability, kind, status, name):
    stability.fail_next(kind, times=2, retry_after=60 if kind == "rate_limited" else None)
    for _ in range(2):
        response = generate(http, stability)
        errors = assert_stability_error(response, status, name)
        assert ("retry-after" in response.headers) == (kind == "rate_limited")
    if kind == "content_moderation":
        assert "flagged" in errors[0] and "You were not charged for this request" in errors[0]
    assert generate(http, stability).status_code == 200
    assert stability.credits_used == 3


def test_stability_unauthorized_filtered_hang_and_drop(http, stability):
    for kind in ("unauthorized", "content_filtered", "hang", "drop"):
        stability.fail_next(kind)
    assert generate(http, stability).status_code == 401
    filtered = generate(http, stability)
    assert filtered.status_code == 200 and filtered.headers["finish-reason"] == "CONTENT_FILTERED"
    assert stability.credits_used == 3
    with pytest.raises(httpx.ReadTimeout):
        generate(http, stability, timeout=0.2)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        generate(http, stability)
    assert len(stability.requests) == 4 and generate(http, stability).status_code == 200


# -- OpenAI ---------------------------------------------------------------------------------

def test_openai_success(http, openai):
    response = images(http, openai, n=2, quality="low", size="1536x1024", prompt="one two three")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert set(body) == {"created", "data", "background", "output_format", "quality", "size", "usage"}
    assert [set(item) for item in body["data"]] == [{"b64_json"}] * 2
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert (image.format, image.size) == ("PNG", (1536, 1024))
    assert (body["background"], body["output_format"], body["quality"], body["size"]) == (
        "opaque", "png", "low", "1536x1024")
    assert body["usage"] == {  # 2 low 1536x1024 images: 2 * 408; "one two three": ceil(3 * 1.3)
        "input_tokens": 4, "input_tokens_details": {"image_tokens": 0, "text_tokens": 4},
        "output_tokens": 816, "output_tokens_details": {"image_tokens": 816, "text_tokens": 0},
        "total_tokens": 820}
    assert openai.images_made == 2 and openai.requests[-1]["json"]["n"] == 2


@pytest.mark.parametrize(("size", "quality", "tokens", "reported"), [
    ("1024x1024", "high", 4160, "high"), ("1024x1536", "medium", 1584, "medium"),
    ("auto", "auto", 1056, "medium")])
def test_openai_usage_table(http, openai, size, quality, tokens, reported):
    body = images(http, openai, size=size, quality=quality).json()
    usage = body["usage"]
    assert usage["output_tokens"] == usage["output_tokens_details"]["image_tokens"] == tokens
    assert body["quality"] == reported and body["size"] in (size, "1024x1024")


def test_openai_arbitrary_sizes_only_on_2x(http, openai):
    image = images(http, openai, model="gpt-image-2", size="2048x1152", output_format="webp").json()
    assert Image.open(io.BytesIO(base64.b64decode(image["data"][0]["b64_json"]))).size == (2048, 1152)
    for model, size in (("gpt-image-1.5", "2048x1152"), ("gpt-image-2", "1000x1000"),
                        ("gpt-image-2", "3840x960"), ("gpt-image-2", "1792x1024x")):
        assert assert_openai_error(images(http, openai, model=model, size=size), 400,
                                   "invalid_request_error", "invalid_value")["param"] == "size"


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"quality": "hd"}, "quality", "invalid_value"), ({"n": 11}, "n", "integer_above_max_value"),
    ({"n": "2"}, "n", "invalid_type"),
    ({"response_format": "b64_json"}, "response_format", "unknown_parameter"),
    ({"style": "vivid"}, "style", "unknown_parameter"), ({"seed": 1}, "seed", "unknown_parameter"),
    ({"prompt": "x" * 32_001}, "prompt", "string_above_max_length"),
    ({"output_format": "png", "output_compression": 50}, "output_compression", "invalid_value"),
    ({"quality": "xhigh"}, "quality", "invalid_value")])
def test_openai_validation_names_the_param(http, openai, body, param, code):
    error = assert_openai_error(images(http, openai, **body), 400, "invalid_request_error", code)
    assert error["param"] == param


def test_openai_models(http, openai):
    assert images(http, openai, model="gpt-image-2.5-flare-2026-09-08", quality="xhigh").status_code == 200
    for model in ("gpt-image-1", "dall-e-3", "gpt-image-9"):
        assert_openai_error(images(http, openai, model=model), 404, "invalid_request_error",
                            "model_not_found")
    missing = http.post(f"{openai.url}/v1/images/generations", json={"prompt": "x"}, headers=OPENAI_AUTH)
    assert missing.status_code == 404  # the default, dall-e-2, is retired
    no_prompt = http.post(f"{openai.url}/v1/images/generations", json={"model": "gpt-image-1.5"},
                          headers=OPENAI_AUTH)
    assert_openai_error(no_prompt, 400, "invalid_request_error", "missing_required_parameter")
    form = http.post(f"{openai.url}/v1/images/generations", data={"prompt": "x"}, headers=OPENAI_AUTH)
    assert_openai_error(form, 400, "invalid_request_error", None)
    assert http.post(f"{openai.url}/v1/images/edits", headers=OPENAI_AUTH).status_code == 404


def test_openai_auth(http, openai):
    for headers in ({}, {"authorization": "Bearer sk-wrong-key"}):
        assert_openai_error(images(http, openai, headers=headers), 401, "invalid_request_error",
                            "invalid_api_key")


@pytest.mark.parametrize(("kind", "status", "kind_", "code"), [
    ("invalid_request", 400, "invalid_request_error", "invalid_value"),
    ("moderation_blocked", 400, "image_generation_user_error", "moderation_blocked"),
    ("content_policy_violation", 400, "invalid_request_error", "content_policy_violation"),
    ("unauthorized", 401, "invalid_request_error", "invalid_api_key"),
    ("org_not_verified", 403, "invalid_request_error", None),
    ("rate_limited", 429, "requests", "rate_limit_exceeded"),
    ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
    ("server_error", 500, "server_error", None), ("overloaded", 503, "server_error", None)])
def test_openai_faults(http, openai, kind, status, kind_, code):
    openai.fail_next(kind, retry_after=3 if kind == "rate_limited" else None,
                     should_retry=False if kind == "insufficient_quota" else None)
    response = images(http, openai)
    error = assert_openai_error(response, status, kind_, code)
    assert response.headers.get("retry-after") == ("3" if kind == "rate_limited" else None)
    assert response.headers.get("x-should-retry") == ("false" if kind == "insufficient_quota" else None)
    if kind == "moderation_blocked":
        assert set(error["moderation_details"]) == {"moderation_stage", "categories"}
    if kind == "org_not_verified":
        assert "must be verified to use the model `gpt-image-1.5`" in error["message"]
    assert images(http, openai).status_code == 200 and openai.images_made == 1


def test_openai_hang_and_drop(http, openai):
    openai.fail_next("hang")
    openai.fail_next("drop")
    with pytest.raises(httpx.ReadTimeout):
        images(http, openai, timeout=0.2)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        images(http, openai)
    assert images(http, openai).status_code == 200 and len(openai.requests) == 3
