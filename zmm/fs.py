"""File-system helpers every layer may use (stdlib only, cheap to import)."""

from __future__ import annotations

from pathlib import Path


def private_dirs(path: Path) -> None:
    """Create `path` and any missing parents user-only (mkdir's mode only applies
    to the last folder it creates)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
