"""Text replacements the ComfyUI page makes in a save node's file name (and a
primitive's value when asked): `%Node.widget%` is that widget's value on the
node whose "Node name for S&R" property (else title) is Node, `%date:FORMAT%`
the time now (yyyy, yy, MM, dd, hh, mm, ss). Pure stdlib.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from typing import Any

_PATTERN = re.compile(r"%([^%]+)%")
_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1F\x7F]')
_DATE_PARTS = re.compile(r"yyyy|yy|MM|dd|hh|mm|ss|M|d|h|m|s")


def _date(fmt: str, now: datetime.datetime) -> str:
    parts = {"yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}",
             "MM": f"{now.month:02d}", "M": str(now.month), "dd": f"{now.day:02d}",
             "d": str(now.day), "hh": f"{now.hour:02d}", "h": str(now.hour),
             "mm": f"{now.minute:02d}", "m": str(now.minute), "ss": f"{now.second:02d}",
             "s": str(now.second)}
    return _DATE_PARTS.sub(lambda match: parts[match.group(0)], fmt)


def text_replacements(value: str, nodes: Sequence[Any],
                      now: datetime.datetime | None = None) -> str:
    """`value` with each `%...%` the page knows replaced; others stay as written."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(1)
        split = text.split(".")
        if len(split) != 2:
            if split[0].startswith("date:"):
                return _date(split[0][5:], now or datetime.datetime.now())
            return match.group(0)
        named = [node for node in nodes
                 if node.properties.get("Node name for S&R") == split[0]]
        named = named or [node for node in nodes if node.title == split[0]]
        if not named:
            return match.group(0)
        widget = next((w for w in named[0].widgets if w.name == split[1]), None)
        if widget is None:
            return match.group(0)
        shown = "" if widget.value is None else widget.value
        if isinstance(shown, bool):
            shown = "true" if shown else "false"
        return _UNSAFE.sub("_", str(shown))

    return _PATTERN.sub(replace, value)
