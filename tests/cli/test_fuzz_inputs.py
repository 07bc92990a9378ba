"""Hypothesis over `zmm generate`'s inputs: never a traceback; invalid input
exits 2 and writes nothing; valid input writes exactly the jobs asked for."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from zmm.cli import app
from zmm.store import Store

texts = st.text(min_size=0, max_size=30)
numbers = st.one_of(st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(str), texts)
OPTIONS = {
    "--quality": st.one_of(st.sampled_from(["draft", "standard", "high", "HIGH"]), texts),
    "--style": st.one_of(st.sampled_from(["technical-diagram", "none", "infographic"]), texts),
    "--aspect": st.one_of(st.sampled_from(["1:1", "16:9", "9:16"]), texts),
    "--size": st.one_of(st.sampled_from(["512x512", "1024x768", "7x7", "4096x4096"]), texts),
    "--seed": numbers, "--steps": numbers, "--cfg": numbers,
    "--count": st.one_of(st.integers(-2, 4).map(str), texts),
    "--priority": st.one_of(st.sampled_from(["LOW", "critical"]), texts),
    "--requester": texts, "--negative": texts, "--webhook": st.one_of(st.just("https://x.test/h"), texts),
    "--model": st.one_of(st.sampled_from(["sdxl", "sd15", "a.safetensors", "../x"]), texts),
}


def count_jobs(path) -> int:
    if not os.path.exists(path):
        return 0
    with Store(path) as store:
        return store.conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=texts, chosen=st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), max_size=5),
       data=st.data())
def test_generate_never_tracebacks_and_bad_input_writes_nothing(prompt, chosen, data):
    with tempfile.TemporaryDirectory() as home:
        args = ["generate", "--no-wait"]
        for option in chosen:
            value = data.draw(OPTIONS[option], label=option)
            args += [option, value]
        args += ["--", prompt]  # a prompt such as "--from" is still the prompt
        env = {"ZMM_HOME": home, "NO_COLOR": "1"}  # ComfyUI: the tests' closed port
        result = CliRunner().invoke(app, args, env=env)
        spool = os.path.join(home, "spool.db")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 2), (args, result.exit_code, result.stderr)
        if result.exit_code == 2:
            assert result.stderr.startswith("error: ") and count_jobs(spool) == 0
        else:
            assert count_jobs(spool) == len(result.stdout.split()) >= 1
