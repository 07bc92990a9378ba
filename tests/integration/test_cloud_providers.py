"""zmm's cloud provider clients against the fake Stability and OpenAI servers:
what they send, how each answer is classified, what it costs, and the ladder
that retries and falls through from one provider to the next."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from tests.clocks import FakeClock as FakeTime
from zmm.cloud import providers
from zmm.cloud.providers import CloudRequest, ProviderError
from zmm.cloud.providers.openai import OpenAIImages
from zmm.cloud.providers.stability import Stability, aspect_ratio
from zmm.config import load

WIDE = CloudRequest(prompt="a lighthouse at dusk", negative="text, watermark", width=1344,
                    height=768, seed=42, quality="standard")


@pytest.fixture
def cloud_settings(home, stability, openai):
    settings = load(home)
    settings.override("stability.url", stability.url)
    settings.override("openai.url", openai.url)
    settings.override("cloud.timeout_s", 5.0)
    return settings


@pytest.fixture
def environ(stability, openai):
    return {"STABILITY_API_KEY": stability.key, "OPENAI_API_KEY": openai.key}


def chain(settings, environ, **kwargs):
    time = FakeTime(100.0)
    made = providers.build(settings, environ=environ)
    result = providers.generate(made, WIDE, max_retries=2, retry_after_max_s=120.0,
                                sleep=time.sleep, clock=time.clock, **kwargs)
    return result, time


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_stability_request_and_image(cloud_settings, environ, stability):
    image = Stability(cloud_settings, environ=environ).generate(WIDE)
    (sent,) = stability.requests
    assert sent["path"] == "/v2beta/stable-image/generate/core"  # the standard tier's endpoint
    assert sent["headers"]["authorization"] == f"Bearer {stability.key}"
    assert sent["headers"]["accept"] == "image/*"
    assert sent["headers"]["content-type"].startswith("multipart/form-data")
    assert sent["fields"].pop("none") == ""  # the empty part that makes the body multipart
    assert sent["fields"] == {"prompt": WIDE.prompt, "negative_prompt": WIDE.negative,
                              "aspect_ratio": "16:9", "seed": "42", "output_format": "png"}
    assert png_size(image.data) == (1344, 768)
    assert (image.provider, image.model, image.seed, image.cost_usd) == (
        "stability", "stable-image-core", 42, 0.03)
    assert stability.credits_used == 3


def test_stability_high_tier_is_ultra_and_costs_eight_credits(cloud_settings, environ, stability):
    request = CloudRequest("a tower", "", 1024, 1024, None, "high")
    image = Stability(cloud_settings, environ=environ).generate(request)
    assert stability.requests[0]["path"].endswith("/ultra")
    assert "seed" not in stability.requests[0]["fields"]  # no seed asked: Stability picks one
    assert "negative_prompt" not in stability.requests[0]["fields"]
    assert image.cost_usd == 0.08 and isinstance(image.seed, int)


@pytest.mark.parametrize("width,height,ratio", [(1024, 1024, "1:1"), (832, 1216, "2:3"),
                                                (768, 1344, "9:16"), (1536, 640, "21:9"),
                                                (1000, 800, "5:4")])
def test_aspect_ratio_is_the_nearest_allowed(width, height, ratio):
    assert aspect_ratio(width, height) == ratio


@pytest.mark.parametrize("kind,retry,status", [
    ("payment_required", False, 402), ("content_moderation", False, 403),
    ("bad_request", False, 400), ("unauthorized", False, 401), ("rejected", False, 422),
    ("server_error", True, 500), ("rate_limited", True, 429)])
def test_stability_errors_are_classified(cloud_settings, environ, stability, kind, retry, status):
    stability.fail_next(kind)
    with pytest.raises(ProviderError) as caught:
        Stability(cloud_settings, environ=environ).generate(WIDE)
    assert (caught.value.retry, caught.value.status) == (retry, status)
    assert caught.value.message.startswith(str(status))
    assert stability.key not in str(caught.value)


def test_stability_402_message_is_the_providers(cloud_settings, environ, stability):
    stability.fail_next("payment_required")
    with pytest.raises(ProviderError, match="402 payment_required: You lack sufficient credits"):
        Stability(cloud_settings, environ=environ).generate(WIDE)


def test_stability_429_waits_60s_unless_told_otherwise(cloud_settings, environ, stability):
    client = Stability(cloud_settings, environ=environ)
    stability.fail_next("rate_limited")
    with pytest.raises(ProviderError) as plain:
        client.generate(WIDE)
    stability.fail_next("rate_limited", retry_after=7)
    with pytest.raises(ProviderError) as told:
        client.generate(WIDE)
    assert (plain.value.retry_after, told.value.retry_after) == (60.0, 7.0)


def test_content_filtered_is_refused_and_still_costs(cloud_settings, environ, stability):
    stability.fail_next("content_filtered")
    with pytest.raises(ProviderError, match="CONTENT_FILTERED") as caught:
        Stability(cloud_settings, environ=environ).generate(WIDE)
    assert not caught.value.retry and caught.value.cost_usd == 0.03


def test_openai_request_cost_and_no_seed(cloud_settings, environ, openai):
    image = OpenAIImages(cloud_settings, environ=environ).generate(WIDE)
    (sent,) = openai.requests
    assert sent["headers"]["authorization"] == f"Bearer {openai.key}"
    assert sent["json"] == {"model": "gpt-image-1-mini", "n": 1, "size": "1536x1024",
                            "quality": "medium", "output_format": "png",
                            "prompt": "a lighthouse at dusk\n\nAvoid: text, watermark"}
    assert png_size(image.data) == (1536, 1024)
    assert image.seed is None and image.model == "gpt-image-1-mini"
    # gpt-image-1-mini at $2 / M text tokens in and $8 / M image tokens out: 1584 image
    # tokens for a medium 1536x1024 image, and the fake counts ceil(words x 1.3) text tokens.
    text_tokens = math.ceil(len(sent["json"]["prompt"].split()) * 1.3)
    assert image.cost_usd == round((text_tokens * 2.0 + 1584 * 8.0) / 1e6, 6)


def test_openai_model_without_a_price_has_an_unknown_cost(cloud_settings, environ):
    cloud_settings.override("openai.model", "gpt-image-2")
    image = OpenAIImages(cloud_settings, environ=environ).generate(WIDE)
    assert image.cost_usd is None


@pytest.mark.parametrize("kind,retry", [
    ("insufficient_quota", False), ("moderation_blocked", False), ("invalid_request", False),
    ("unauthorized", False), ("org_not_verified", False), ("rate_limited", True),
    ("server_error", True), ("overloaded", True)])
def test_openai_errors_are_classified(cloud_settings, environ, openai, kind, retry):
    openai.fail_next(kind)
    with pytest.raises(ProviderError) as caught:
        OpenAIImages(cloud_settings, environ=environ).generate(WIDE)
    assert caught.value.retry is retry
    assert openai.key not in str(caught.value)


def test_x_should_retry_overrides_the_status(cloud_settings, environ, openai):
    client = OpenAIImages(cloud_settings, environ=environ)
    openai.fail_next("server_error", should_retry=False)
    with pytest.raises(ProviderError) as refused:
        client.generate(WIDE)
    openai.fail_next("invalid_request", should_retry=True)
    with pytest.raises(ProviderError) as retried:
        client.generate(WIDE)
    assert (refused.value.retry, retried.value.retry) == (False, True)


def test_a_hanging_provider_is_a_retryable_timeout(cloud_settings, environ, stability):
    cloud_settings.override("cloud.timeout_s", 0.3)
    stability.fail_next("hang")
    with pytest.raises(ProviderError, match="timed out after 0.3s") as caught:
        Stability(cloud_settings, environ=environ).generate(WIDE)
    assert caught.value.retry


def test_402_on_stability_then_openai_is_used(cloud_settings, environ, stability, openai):
    stability.fail_next("payment_required")
    result, time = chain(cloud_settings, environ)
    assert result.image.provider == "openai" and time.sleeps == []
    assert [(a.provider, a.ok) for a in result.attempts] == [("stability", False),
                                                             ("openai", True)]
    assert len(stability.requests) == 1 and len(openai.requests) == 1


def test_content_filtered_goes_to_the_next_provider_and_counts_its_cost(cloud_settings, environ,
                                                                        stability):
    stability.fail_next("content_filtered")
    result, _ = chain(cloud_settings, environ)
    assert result.image.provider == "openai"
    assert result.cost_usd == round(0.03 + result.image.cost_usd, 6)


def test_5xx_is_retried_with_backoff_then_succeeds(cloud_settings, environ, stability, openai):
    stability.fail_next("server_error", times=2)
    result, time = chain(cloud_settings, environ)
    assert result.image.provider == "stability" and time.sleeps == [0.5, 1.0]
    assert len(stability.requests) == 3 and openai.requests == []


def test_retries_are_bounded_then_the_next_provider(cloud_settings, environ, stability, openai):
    stability.fail_next("server_error", times=3)
    result, time = chain(cloud_settings, environ)
    assert result.image.provider == "openai" and len(stability.requests) == 3
    assert "gave up after 3 tries" in result.attempts[2].message


def test_retry_after_is_honoured_up_to_the_cap(cloud_settings, environ, stability, openai):
    stability.fail_next("rate_limited", retry_after=30)
    result, time = chain(cloud_settings, environ)
    assert time.sleeps == [30.0] and result.image.provider == "stability"
    stability.fail_next("rate_limited", retry_after=600)  # longer than retry_after_max_s
    result, time = chain(cloud_settings, environ)
    assert time.sleeps == [] and result.image.provider == "openai"


def test_quota_429_is_not_retried(cloud_settings, environ, stability, openai):
    cloud_settings.override("cloud.providers", ["openai", "stability"])
    openai.fail_next("insufficient_quota")
    result, time = chain(cloud_settings, environ)
    assert result.image.provider == "stability" and time.sleeps == []
    assert len(openai.requests) == 1


def test_every_provider_refusing_is_not_transient(cloud_settings, environ, stability, openai):
    stability.fail_next("content_moderation")
    openai.fail_next("moderation_blocked")
    result, _ = chain(cloud_settings, environ)
    assert result.image is None and not result.transient
    assert result.summary.startswith("stability: 403 content_moderation")
    assert "openai: 400 moderation_blocked" in result.summary


def test_a_provider_without_a_key_is_skipped_without_a_request(cloud_settings, stability, openai):
    result, _ = chain(cloud_settings, {"OPENAI_API_KEY": openai.key})
    assert result.image.provider == "openai" and stability.requests == []
    assert result.attempts[0].message == "$STABILITY_API_KEY is not set"


def test_stop_before_a_try(cloud_settings, environ, stability):
    result, _ = chain(cloud_settings, environ, should_stop=lambda: True)
    assert result.stopped and result.image is None and stability.requests == []


def test_unknown_provider_name_is_a_config_error(cloud_settings):
    from zmm.errors import InvalidInput

    cloud_settings.override("cloud.providers", ["stability", "dalle"])
    with pytest.raises(InvalidInput, match="cloud.providers: names from stability, openai"):
        providers.build(cloud_settings)
