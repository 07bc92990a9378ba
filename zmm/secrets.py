"""The secrets zmm knows of, and keeping them out of what it stores and prints.

A secret is the value of an environment variable that holds a key: the ones
the settings name (`*_env` keys: `stability.key_env`, `openai.key_env`,
`secrets.webhook_secret_env`), the shipped defaults of those, and any `ZMM_*`
variable whose name says it is one (KEY, SECRET, TOKEN, PASSWORD). `scrub()`
replaces their values, and the user:password of any URL, in text that came
from outside (a provider's error, a server's answer, a URL a user typed)
before zmm stores it in the spool, sends it in a webhook or prints it.
`child_environment()` is the environment a process zmm starts gets: without
any of them. Pure functions over the environment; nothing here does I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

# The variables the default settings name; the settings may name others (`remember`).
DEFAULT_NAMES = frozenset({"STABILITY_API_KEY", "OPENAI_API_KEY", "ZMM_WEBHOOK_SECRET"})
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD")
MASK = "***"
# A value this short is no key; replacing it would mangle ordinary text.
_MIN_SECRET_CHARS = 6
# scheme://user[:password]@ in any text
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")

_named: set[str] = set()  # the names the loaded settings gave


def remember(names: Iterable[str]) -> None:
    """The variable names the settings say hold secrets (called as they load)."""
    _named.update(name for name in names if name)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    if name in DEFAULT_NAMES or name in _named:
        return True
    return upper.startswith("ZMM_") and any(word in upper for word in _SECRET_WORDS)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of every secret variable set, longest first."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items()
              if is_secret_name(name) and len(value) >= _MIN_SECRET_CHARS}
    return sorted(values, key=len, reverse=True)


def mask_url(url: str) -> str:
    """`url` with its user:password (if any) shown as ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{MASK}@{host}", parts.path, parts.query, parts.fragment))


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` without any secret's value and without URL credentials."""
    if not text:
        return text
    for value in secret_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    return _USERINFO.sub(lambda m: m["scheme"] + MASK + "@", text)


def scrub_optional(text: str | None) -> str | None:
    return None if text is None else scrub(text)


def child_environment(environ: Mapping[str, str] | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process zmm starts: `environ` (zmm's own) without
    the secret variables, plus `extra` (what the settings give the child on
    purpose, which may name a variable of its own)."""
    environ = os.environ if environ is None else environ
    kept = {name: value for name, value in environ.items() if not is_secret_name(name)}
    return {**kept, **(extra or {})}
