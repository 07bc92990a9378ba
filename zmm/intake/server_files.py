"""The enqueue-time check of the model files jobs need against the backends
that could run them (every configured one, or the one `--on` pins a job to):
the file lists their workers recorded in the spool, or, for a backend whose
list is not known yet, its server asked directly with a short timeout.

A job no candidate backend has the files for is refused (NotFound, exit 3)
before anything is written. An unreachable server is no refusal: the job
waits, and `zmm queue` says why. Jobs that may go to the cloud are not
refused either (the cloud rule may take them). Stdlib only: the enqueue path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from zmm import jobs
from zmm.config import Config, fleet
from zmm.errors import NotFound
from zmm.views.routing import file_name


def check_server_files(specs: list[jobs.JobSpec], config: Config,
                       recorded: Iterable[Mapping[str, Any]] = ()) -> None:
    """Refuse the first spec whose needed files no candidate backend has (every
    configured one, or the one `--on` pins it to: configured or reported by a
    worker). `recorded`: the spool's backend rows (Store.backends(), files decoded)."""
    recorded = list(recorded)
    pinned = {name: fleet.backend(config, name, recorded)
              for name in dict.fromkeys(spec.on_backend for spec in specs
                                        if spec.on_backend is not None)}
    lists = _recorded_lists(recorded)
    servers = _Servers()
    configured = fleet.backends(config)
    seen: set[tuple[str | None, tuple[str, ...]]] = set()
    for spec in specs:
        if spec.backend_requested == "cloud" or spec.cloud_allowed or not spec.needs:
            continue
        key = (spec.on_backend, tuple(spec.needs))
        if key in seen:
            continue
        seen.add(key)
        candidates = [pinned[spec.on_backend]] if spec.on_backend is not None else configured
        _check_one(spec, candidates, lists, servers)


def _check_one(spec: jobs.JobSpec, candidates: list[fleet.Backend],
               lists: Mapping[str, frozenset[str]], servers: _Servers) -> None:
    needs = set(spec.needs)
    if any(needs <= lists[item.name] for item in candidates if item.name in lists):
        return  # a recorded list has them all: no server need be asked
    have: dict[str, frozenset[str]] = {}
    for item, files in _files_of(candidates, spec.needs, lists, servers):
        if files is None or needs <= files:
            return  # unknown and unreachable (the job waits), or it has them
        have[item.name] = files
    raise _refusal(spec, have)


def first_able(needs: list[str], config: Config,
               recorded: Iterable[Mapping[str, Any]] = ()) -> fleet.Backend | None:
    """The first configured backend whose server has every file in `needs`: by
    its recorded list, else by asking the server. A server that cannot be asked
    counts as able (nothing says it is not)."""
    pairs = _files_of(fleet.backends(config), needs, _recorded_lists(recorded), _Servers())
    return next((item for item, files in pairs if files is None or set(needs) <= files), None)


def _recorded_lists(recorded: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    return {row["name"]: frozenset(row["files"]) for row in recorded
            if row.get("files") is not None}


def _files_of(candidates: list[fleet.Backend], needs: list[str],
              lists: Mapping[str, frozenset[str]], servers: _Servers
              ) -> Iterator[tuple[fleet.Backend, frozenset[str] | None]]:
    """Each candidate with its files: the recorded list, else its server's
    (asked only when reached, for the folders of `needs`); None: unknown."""
    for item in candidates:
        files = lists.get(item.name)
        if files is None and any(not need.startswith("nodes/") for need in needs):
            files = servers.files(item, {need.partition("/")[0] for need in needs})
        yield item, files


def _refusal(spec: jobs.JobSpec, have: Mapping[str, frozenset[str]]) -> NotFound:
    from zmm.backends.model_lists import listing
    from zmm.workflows import FOLDER_WORDS

    everywhere = frozenset().union(*have.values())
    absent = [need for need in spec.needs if need not in everywhere]
    first = absent[0] if absent else next(need for need in spec.needs
                                          if any(need not in files for files in have.values()))
    folder = first.partition("/")[0]
    word = FOLDER_WORDS.get(folder, folder)

    def files_there(name: str) -> str:
        return listing([file_name(item) for item in have[name] if item.startswith(folder + "/")])

    def lacks(name: str) -> str:
        return ", ".join(file_name(need) for need in spec.needs
                         if need.startswith("nodes/") and need not in have[name])

    where = "; ".join(f"{name} lacks: {lacks(name)}" if folder == "nodes"
                      else f"{name} has: {files_there(name)}" for name in have)
    if spec.on_backend is not None:
        message = f"{word} {file_name(first)!r} is not on backend {spec.on_backend} (the job is " \
                  f"pinned there with --on); {where}"
    elif absent:
        message = f"{word} {file_name(first)!r} is on no backend; {where}"
    else:
        message = ("no backend has all of " + ", ".join(file_name(n) for n in spec.needs)
                   + f"; {word} {file_name(first)!r} is missing where the others are; {where}")
    if folder == "nodes":
        return NotFound(message, hint="install the custom node that provides it on a "
                        "backend's server (ComfyUI/custom_nodes/)")
    return NotFound(message, hint=f"put the file in ComfyUI/models/{folder}/ on a backend's "
                    "server, or pick a model a backend has (`zmm models list`)")


class _Servers:
    """Servers asked directly (for backends whose list the spool does not hold
    yet), each folder once; a server that does not answer is not asked again."""

    def __init__(self) -> None:
        self._folders: dict[tuple[str, str], list[str]] = {}
        self._silent: set[str] = set()

    def files(self, item: fleet.Backend, folders: set[str]) -> frozenset[str] | None:
        from zmm.backends.model_lists import folder_files

        found: set[str] = set()
        for folder in sorted(folders):
            if item.url in self._silent:
                return None
            names = self._folders.get((item.url, folder))
            if names is None:
                answer = folder_files(item.url, folder)
                if answer is None:
                    self._silent.add(item.url)
                    return None
                names = self._folders[(item.url, folder)] = answer
            found.update(f"{folder}/{name}" for name in names)
        return frozenset(found)
