"""The web page in a real browser: Debian's chromium driven by Playwright signs
in, sees a new job appear and finish, opens it, and cancels another."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.conftest import run_zmm

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no chromium installed")]
sync_api = pytest.importorskip("playwright.sync_api")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def submit(server, prompt: str) -> str:
    made = httpx.post(server.url + "/api/jobs", headers=server.headers,
                      json={"prompt": prompt, "size": "64x64", "steps": 3})
    assert made.status_code == 201, made.text
    return made.json()["jobs"][0]["id"]


def test_queue_gallery_job_page_and_cancel(server, worker):
    assert run_zmm("queue", "pause").returncode == 0
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.url.endswith("/login")
            page.fill("input[name=token]", server.token)
            page.click("button[type=submit]")
            page.wait_for_url(server.url + "/")
            keep = submit(server, "a lighthouse at dusk")
            drop = submit(server, "a job to cancel")
            # the live refresh shows both without a reload
            page.locator(f"tr.queued a:text('{keep}')").wait_for(timeout=15000)
            row = page.locator("tr.queued", has_text=drop)
            row.get_by_role("button", name="Cancel").click()
            page.wait_for_url(f"{server.url}/jobs/{drop}")
            assert "cancelled" in page.locator("table").first.inner_text()
            assert run_zmm("queue", "resume").returncode == 0
            page.goto(server.url + "/")
            finished = page.locator(f"figure.job a[href='/jobs/{keep}'] img")
            finished.wait_for(timeout=30000)
            finished.click()
            page.wait_for_url(f"{server.url}/jobs/{keep}")
            assert "succeeded" in page.locator("table").first.inner_text()
            assert page.locator("img[alt='the image']").evaluate("i => i.naturalWidth") == 64
            assert "a lighthouse at dusk" in page.locator("pre").first.inner_text()
            page.goto(server.url + "/gallery?text=lighthouse")
            assert page.locator("figure.job").count() == 1
            page.goto(server.url + "/gallery?text=nothing-like-this")
            assert page.locator("figure.job").count() == 0
        finally:
            browser.close()
    job = httpx.get(f"{server.url}/api/jobs/{drop}", headers=server.headers).json()["job"]
    assert job["status"] == "cancelled"
