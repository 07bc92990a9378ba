"""`--from FILE`: a batch of requests, one per line, in JSON Lines or CSV, read
within bounds (bytes, lines, digits of a number) and turned into job specs by
`zmm.intake.build`, all or nothing: a bad line names its number.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from zmm import jobs
from zmm.config import Config
from zmm.errors import InvalidInput, NotFound
from zmm.fs import MB, read_user_text
from zmm.intake import Reported, build
from zmm.intake.workflow_fields import RecordedDefs

MAX_BATCH_LINES = 10_000
MAX_BATCH_BYTES = 16 * MB


def read_batch(path: Path, flags: dict[str, Any], config: Config,
               reported: Reported | None = None, *,
               node_defs: RecordedDefs | None = None) -> list[jobs.JobSpec]:
    """`--from FILE`: JSON Lines or CSV, one request per line; flags are defaults.
    Every line is validated before any job is returned: all or nothing."""
    text = read_user_text(path, "from", MAX_BATCH_BYTES)
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines > MAX_BATCH_LINES:
        raise InvalidInput("from", f"at most {MAX_BATCH_LINES:,} lines; {path} has {lines:,}")
    rows = _csv_rows(text) if _looks_like_csv(path, text) else _jsonl_rows(text)
    if not rows:
        raise InvalidInput("from", f"{path} holds no requests")
    specs: list[jobs.JobSpec] = []
    if flags.get("name"):
        raise InvalidInput("name", "names one job; with --from, give each line a name field")
    for line_number, row in rows:
        merged = {key: value for key, value in flags.items() if value not in (None, [], "")}
        merged.update({key: value for key, value in row.items() if value not in (None, "")})
        if flags.get("key") and row.get("key") not in (None, ""):
            merged["key"] = f"{flags['key']}/{row['key']}"  # --key scopes the lines' keys
        try:
            specs.extend(build(merged, config, reported, node_defs=node_defs))
        except InvalidInput as exc:
            raise InvalidInput(f"line {line_number}: {exc.field}", exc.allowed) from None
        except NotFound as exc:
            raise NotFound(f"line {line_number}: {exc.message}", hint=exc.hint) from None
    return specs


def _looks_like_csv(path: Path, text: str) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return False  # an empty or blank JSON Lines file is not a CSV without a header
    first = next((line for line in text.splitlines() if line.strip()), "")
    return not first.lstrip().startswith("{")


def _jsonl_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value = _json_line(number, line)
        if not isinstance(value, dict):
            raise InvalidInput(f"line {number}", "a JSON object such as {\"prompt\": \"...\"}")
        rows.append((number, value))
    return rows


def _json_line(number: int, line: str) -> Any:
    """One JSON Lines line; its nesting and its integers' digits are bounded."""
    try:
        return json.loads(line, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"line {number}", f"a JSON object ({exc.msg})") from None
    except RecursionError:
        raise InvalidInput(f"line {number}", "a JSON object, not nested hundreds deep") from None
    except ValueError:  # an integer _bounded_int refused
        raise InvalidInput(f"line {number}", "a JSON object whose integers have at most "
                           f"{MAX_INT_DIGITS} digits") from None


MAX_INT_DIGITS = 40


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(digits)
    return int(digits)


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    import csv  # only for a CSV `--from` file

    # strict: a quote left open is an error, not a cell running to the end of the file
    reader = csv.DictReader(io.StringIO(text), strict=True)
    rows = []
    try:
        if not reader.fieldnames or "prompt" not in [name.strip() for name in reader.fieldnames]:
            raise InvalidInput("line 1", "a CSV header naming a prompt column")
        for row in reader:
            if None in row:
                raise InvalidInput(f"line {reader.line_num}", "no more cells than the header has")
            cleaned = {key.strip(): value for key, value in row.items() if key}
            rows.append((reader.line_num, cleaned))
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}", f"a CSV row ({exc}: a quote left "
                           "open?)") from None
    return rows
