"""The outcome of an attempt: its kinds, and saving a job's images all or none."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from zmm import intake
from zmm.assets import metadata_for
from zmm.errors import ComfyUnavailable, JobFailed
from zmm.jobs import JobState
from zmm.outcome import OutcomeKind, save_images


def png(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def job(store, settings):
    store.enqueue(intake.build({"prompt": "a red square", "size": "64x64", "quality": "draft"},
                               settings))
    return store.claim("worker-1", lease_s=60, aging_s=600)


def files_under(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_every_kind_names_the_state_it_leaves_the_job_in():
    assert {kind: kind.state for kind in OutcomeKind} == {
        OutcomeKind.SUCCEEDED: JobState.SUCCEEDED, OutcomeKind.FAILED: JobState.FAILED,
        OutcomeKind.CANCELLED: JobState.CANCELLED, OutcomeKind.REQUEUE: JobState.QUEUED}


def test_save_images_writes_every_image_and_its_thumbnail(settings, job):
    saved = save_images(settings.assets_dir, job, [png(), png("blue")], metadata_for(job))
    assert [item.path.exists() for item in saved.outputs] == [True, True]
    assert saved.fields["output_path"] == saved.outputs[0].relative
    assert (settings.assets_dir / saved.fields["thumbnail_path"]).exists()
    assert len(files_under(settings.assets_dir)) == 3  # two images and one thumbnail


def test_a_failure_in_the_middle_leaves_no_file_behind(settings, job):
    def images():
        yield png()
        yield png("blue")
        raise ComfyUnavailable("http://127.0.0.1:9", "connection refused")

    with pytest.raises(ComfyUnavailable):
        save_images(settings.assets_dir, job, images(), metadata_for(job))
    assert files_under(settings.assets_dir) == []


def test_a_damaged_image_after_good_ones_leaves_no_file_behind(settings, job):
    with pytest.raises(JobFailed, match="not a PNG"):
        save_images(settings.assets_dir, job, [png(), b"not a png"], metadata_for(job))
    assert files_under(settings.assets_dir) == []


def test_discard_removes_the_thumbnail_too(settings, job):
    saved = save_images(settings.assets_dir, job, [png()], metadata_for(job))
    saved.discard()
    assert files_under(settings.assets_dir) == []
