"""The one duration parser behind --since, --older-than and --compress-older-than."""

import pytest

from zmm import durations
from zmm.errors import InvalidInput


@pytest.mark.parametrize(("text", "seconds"), [
    ("45s", 45), ("30min", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
    ("3mo", 3 * 30 * 86400), ("1y", 365 * 86400), ("1.5h", 5400), (" 7D ", 604800),
])
def test_every_unit_reads_as_documented(text, seconds):
    assert durations.parse("since", text) == seconds


def test_a_bare_m_is_refused_naming_both_readings():
    with pytest.raises(InvalidInput) as caught:
        durations.parse("older-than", "1m")
    assert caught.value.field == "older-than"
    assert "1min for minutes or 1mo for months" in caught.value.allowed


@pytest.mark.parametrize("text", ["", "7", "7x", "-2d", "7 days", "1e3d", "101y", "forever"])
def test_anything_else_is_refused(text):
    with pytest.raises(InvalidInput, match="s, min, h, d, w, mo"):
        durations.parse("since", text)


def test_an_option_s_words_mean_no_limit():
    assert durations.parse("older-than", "Never", words={"never": None}) is None
    with pytest.raises(InvalidInput, match="or never"):
        durations.parse("older-than", "nope", words={"never": None})
