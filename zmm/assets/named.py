"""A finished job's images under names a script chose (`--out DIR`): NAME.png,
NAME-2.png for its further images, the job id where it has no name. Each file
appears whole or not at all: written (a hard link when DIR is on the assets'
file system, else a copy) under a temporary name in DIR, then renamed over
whatever held the name before.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from zmm.errors import InvalidInput, JobFailed


def prepare(out_dir: Path) -> Path:
    """DIR made (with its parents) before any job is queued; InvalidInput when it
    cannot be a directory zmm writes into."""
    path = Path(out_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InvalidInput("out", f"a directory; {path} is a file") from None
    except OSError as exc:
        raise InvalidInput("out", f"a directory zmm can create ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInput("out", f"a directory zmm can write; {path} is not writable")
    return path.resolve()


def file_names(name: str, sources: list[Path]) -> list[str]:
    """NAME.ext for the first image, NAME-2.ext, NAME-3.ext ... for the others;
    the extension is the stored file's (.png, or .jpg once compressed)."""
    return [f"{name}{'' if index == 1 else f'-{index}'}{source.suffix.lower()}"
            for index, source in enumerate(sources, start=1)]


def place(out_dir: Path, name: str, sources: list[Path]) -> list[Path]:
    """Put `sources` into `out_dir` under `name` (file_names); returns the absolute
    paths written. JobFailed names the file that could not be written."""
    written = []
    for source, target_name in zip(sources, file_names(name, sources), strict=True):
        target = out_dir / target_name
        temporary = out_dir / f".{target_name}.{os.getpid()}.tmp"
        try:
            if target.exists() and os.path.samefile(source, target):
                written.append(target)  # placed by an earlier run (rename would keep both)
                continue
            temporary.unlink(missing_ok=True)
            try:
                os.link(source, temporary)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise JobFailed(f"out: could not write {target}: {exc.strerror or exc}") from None
        written.append(target)
    return written
