"""The paths `zmm cleanup` may touch: each one checked to lie inside the assets
root (folders resolved once per run), and files told apart from what is not a
regular file (a link, a folder, a device), which cleanup never removes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zmm import assets
from zmm.errors import InvalidInput


class SafePaths:
    """`zmm.assets.safe_path` with each folder's check done once per run: 100,000
    jobs share a few dozen month folders, and resolving every file's whole chain
    dominated planning. The file itself is then only lstat'ed by the caller, which
    refuses anything but a regular file (so a symlinked file is never followed)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[str, str | InvalidInput] = {}

    def __call__(self, relative: str) -> str:
        text = relative.replace("\\", "/")
        parts = [part for part in text.split("/") if part not in ("", ".")]
        if text.startswith("/") or text[1:2] == ":" or ".." in parts or not parts:
            return str(assets.safe_path(self.root, relative))  # raises, naming the path
        folder = "/".join(parts[:-1])
        checked = self._folders.get(folder)
        if checked is None:
            try:
                checked = str(assets.safe_path(self.root, folder) if folder else self.root)
            except InvalidInput as exc:
                checked = exc
            self._folders[folder] = checked
        if isinstance(checked, InvalidInput):
            return str(assets.safe_path(self.root, relative))  # raises, naming this path
        return os.path.join(checked, parts[-1])


def not_a_file(info: os.stat_result) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "refused: a symlink; never followed"
    return None if stat.S_ISREG(info.st_mode) else "refused: not a regular file"
