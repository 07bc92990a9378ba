"""The worker's log lines keep secrets out: zmm's secret variables' values and
passwords in URLs."""

from __future__ import annotations

import io
import json

from zmm.worker import logs


def test_secret_values_and_url_passwords_never_reach_a_line(monkeypatch):
    monkeypatch.setenv("ZMM_WEBHOOK_SECRET", "whsec-0123456789")
    monkeypatch.setenv("STABILITY_API_KEY", "sk-stability-abcdef")
    stream = io.StringIO()
    observer = logs.LogObserver(logs.configure(fmt="json", stream=stream))
    observer.notice("provider said: bad key sk-stability-abcdef (signed whsec-0123456789)")
    observer.waiting("http://me:pw@127.0.0.1:9", "refused", 2.0)
    text = stream.getvalue()
    assert "sk-stability-abcdef" not in text and "whsec-0123456789" not in text
    assert ":pw@" not in text
    first, second = (json.loads(line) for line in text.splitlines())
    assert first["message"] == "provider said: bad key *** (signed ***)"
    assert second["url"] == "http://***@127.0.0.1:9" and second["level"] == "warning"
