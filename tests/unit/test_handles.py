"""The handles scripts hold on jobs: names (checked, one per job), idempotency
keys (scoped by --key, numbered when shared, honoured by the store), batches,
and the files `--out` places."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zmm import intake
from zmm.assets import named
from zmm.errors import InvalidInput, NotFound
from zmm.intake import batch, handles


def specs_of(tmp_path: Path, settings, lines: list[str], **flags):
    path = tmp_path / "lines.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return handles.number_handles(batch.read_batch(path, flags, settings))


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "-x", "a\\b", "c:d", "two\nlines",
                                  "x" * 121])
def test_a_name_is_one_file_name(settings, name):
    with pytest.raises(InvalidInput) as caught:
        intake.build({"prompt": "p", "name": name}, settings)
    assert caught.value.field == "name"


def test_a_name_names_one_job(tmp_path, settings):
    with pytest.raises(InvalidInput, match="names one job"):
        intake.build({"prompt": "p", "name": "cover", "count": 2}, settings)
    with pytest.raises(InvalidInput, match="'cover' names two jobs"):
        specs_of(tmp_path, settings, ['{"prompt": "a", "name": "cover"}',
                                      '{"prompt": "b", "name": "cover"}'])
    with pytest.raises(InvalidInput, match="each line a name"):
        specs_of(tmp_path, settings, ['{"prompt": "a"}'], name="cover")


def test_keys_are_scoped_by_the_flag_and_numbered_when_shared(tmp_path, settings):
    specs = specs_of(tmp_path, settings, ['{"prompt": "a", "key": "one"}', '{"prompt": "b"}',
                                          '{"prompt": "c"}', '{"prompt": "d", "key": 7}'],
                     key="run-9")
    assert [spec.key for spec in specs] == ["run-9/one", "run-9#1", "run-9#2", "run-9/7"]
    counted = handles.number_handles(intake.build({"prompt": "p", "key": "k", "count": 2},
                                                 settings))
    assert [spec.key for spec in counted] == ["k#1", "k#2"]


def test_the_store_returns_the_job_it_holds_under_a_key(settings, spool):
    first = spool.submit(handles.number_handles(intake.build(
        {"prompt": "p", "key": "k", "count": 2}, settings)))
    assert first.existing == [] and first.batch_id is not None
    again = spool.submit(handles.number_handles(intake.build(
        {"prompt": "p", "key": "k", "count": 3}, settings)))
    assert again.ids[:2] == first.ids and again.existing == first.ids
    assert again.batch_id is None  # one new job is no batch
    assert spool.batch_job_ids(first.batch_id) == first.ids
    assert [job.idempotency_key for job in spool.get_many(again.ids)] == ["k#1", "k#2", "k#3"]
    with pytest.raises(NotFound, match="no batch"):
        spool.batch_job_ids("nope")


def test_out_places_named_files_whole_and_again_without_leftovers(tmp_path):
    sources = []
    for index in range(2):
        source = tmp_path / "assets" / f"img{index}.png"
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(b"png %d" % index)
        sources.append(source)
    out = named.prepare(tmp_path / "made" / "here")
    placed = named.place(out, "cover", sources)
    assert [path.name for path in placed] == ["cover.png", "cover-2.png"]
    assert placed[1].read_bytes() == b"png 1"
    (out / "cover.png").unlink()
    (out / "cover.png").write_bytes(b"stale")
    assert named.place(out, "cover", sources) == placed  # replaced, and a link kept as is
    assert sorted(os.listdir(out)) == ["cover-2.png", "cover.png"]
    assert (out / "cover.png").read_bytes() == b"png 0"


def test_out_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        named.prepare(tmp_path / "file")
