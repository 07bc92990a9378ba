"""Compact JSON text, the one spelling zmm stores and sends (spool columns,
PNG metadata, webhook bodies): no spaces after separators. Stdlib only, so
every layer may import it."""

from __future__ import annotations

import json
from typing import Any


def compact(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys)
