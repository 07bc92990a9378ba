"""The transition table and the field validators, exhaustively."""

from __future__ import annotations

import itertools
import re

import pytest

from zmm import jobs
from zmm.errors import Conflict, InvalidInput
from zmm.jobs import JobState

ALLOWED = {
    ("queued", "running"), ("queued", "cancelled"),
    ("running", "succeeded"), ("running", "failed"), ("running", "cancelled"), ("running", "queued"),
    ("failed", "queued"), ("cancelled", "queued"),
}


@pytest.mark.parametrize("current,target", list(itertools.product([s.value for s in JobState], repeat=2)))
def test_every_transition_is_allowed_or_refused_as_the_table_says(current, target):
    if (current, target) in ALLOWED:
        jobs.check_transition("job", current, target)
    else:
        with pytest.raises(Conflict, match=f"is {current}; it cannot become {target}"):
            jobs.check_transition("job", current, target)


def test_finished_states():
    assert {s for s in JobState if s.finished} == {JobState.SUCCEEDED, JobState.FAILED,
                                                    JobState.CANCELLED}


@pytest.mark.parametrize("text,expected", [("1024x768", (1024, 768)), ("64X64", (64, 64)),
                                           (" 4096 x 8 ".replace(" 8", " 64"), (4096, 64))])
def test_parse_size_accepts(text, expected):
    assert jobs.parse_size(text) == expected


@pytest.mark.parametrize("text", ["1000x7", "4104x64", "56x64", "abc", "1024", "0x0", "-64x64"])
def test_parse_size_refuses(text):
    with pytest.raises(InvalidInput) as caught:
        jobs.parse_size(text)
    assert caught.value.field == "size"


@pytest.mark.parametrize("value,ok", [("1", True), ("150", True), ("0", False), ("151", False),
                                      ("x", False), (True, False), ("2.5", False)])
def test_parse_int_bounds(value, ok):
    if ok:
        assert jobs.parse_int("steps", value, 1, 150) == int(value)
    else:
        with pytest.raises(InvalidInput, match="steps: an integer from 1 to 150"):
            jobs.parse_int("steps", value, 1, 150)


@pytest.mark.parametrize("value,ok", [("0", True), ("30", True), ("7.5", True), ("-0.1", False),
                                      ("30.5", False), ("nan", False), ("x", False)])
def test_parse_float_bounds(value, ok):
    if ok:
        assert jobs.parse_float("cfg", value, 0, 30) == float(value)
    else:
        with pytest.raises(InvalidInput, match="cfg: a number from 0 to 30"):
            jobs.parse_float("cfg", value, 0, 30)


def test_priority_is_case_insensitive_and_ranked():
    assert jobs.parse_priority("critical") is jobs.Priority.CRITICAL
    assert [p.rank for p in jobs.Priority] == [0, 1, 2, 3]
    with pytest.raises(InvalidInput, match="priority: one of CRITICAL, HIGH, MEDIUM, LOW"):
        jobs.parse_priority("urgent")


@pytest.mark.parametrize("name", ["../evil.safetensors", "/etc/passwd", "C:\\x.ckpt", "a/../../b"])
def test_checkpoint_names_cannot_escape(name):
    with pytest.raises(InvalidInput):
        jobs.parse_checkpoint(name)


def test_styled_prompt_keeps_braces_literal():
    assert jobs.styled_prompt("{prompt}, flat", "a {x} b") == "a {x} b, flat"


def test_the_job_id_format_lives_in_one_place():
    new = jobs.new_job_id(1_800_000_000.0, random=lambda n: bytes(range(1, n + 1)))
    assert new == "mmg-20270115-080000-01020304"
    assert re.fullmatch(jobs.JOB_ID_PATTERN, new) and len(new) == jobs.JOB_ID_LENGTH
    assert re.fullmatch(jobs.JOB_ID_PATTERN, jobs.placeholder_job_id(5))
    assert re.fullmatch(jobs.JOB_ID_PATTERN, jobs.JOB_ID_EXAMPLE)
    # ComfyUI's prompt id: the job id, with -rN on a retry; anything else is not zmm's
    assert [jobs.job_id_of_prompt(text) for text in (new, f"{new}-r2", f"{new}-x", "abc")] == [
        new, new, None, None]
