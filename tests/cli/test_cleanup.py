"""`zmm cleanup` and pinning through the command line: the dry run is the real
plan, nothing active, pinned or outside the assets folder is touched, one run
at a time (real processes), size caps, orphans, purging, JPEG compression with
metadata, thumbnails, and the exit codes cron and Task Scheduler rely on."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.cleanup_support import age_file, all_files, job_files, make_job, make_queued, png_bytes
from tests.conftest import LiveProcess, run_zmm, wait_until, zmm_process
from zmm import assets
from zmm.assets import thumbnails
from zmm.errors import NotFound
from zmm.locks import FileLock
from zmm.store import Store


def removed_files(report: dict) -> list[str]:
    return [name for item in report["removals"] for name in item["files"]]


def get(settings, job_id):
    with Store(settings.spool_path) as store:
        return store.get(job_id)


def test_dry_run_lists_exactly_what_the_real_run_deletes(cli, settings):
    old = [make_job(settings, age_days=40 + n, outputs=2) for n in range(3)]
    failed = make_job(settings, age_days=45, status="failed")
    young = make_job(settings, age_days=3)
    pinned = make_job(settings, age_days=90)
    running = make_job(settings, age_days=90, status="running")
    queued = make_queued(settings)
    assert cli("history", "pin", pinned.id).stdout.strip() == f"{pinned.id}\tpinned"
    before = all_files(settings.assets_dir)

    dry = cli.json("cleanup", "--dry-run", "--json")
    assert all_files(settings.assets_dir) == before  # a dry run changes nothing
    assert {item["id"] for item in dry["removals"]} == {job.id for job in old}
    assert [item["id"] for item in dry["removals"]] == [job.id for job in reversed(old)]
    assert all(item["reason"] == "age" and len(item["files"]) == 3 for item in dry["removals"])
    assert all(item["absolute_files"] == [str(settings.assets_dir / name) for name in item["files"]]
               for item in dry["removals"])

    real = cli.json("cleanup", "--json")  # no terminal under the runner: never prompts
    assert real["removals"] == dry["removals"] and real["totals"] == dry["totals"]
    assert real["ok"] and not real["dry_run"] and real["totals"]["rows_marked"] == 3
    assert all_files(settings.assets_dir) == before - set(removed_files(dry))
    for job in old:
        assert get(settings, job.id).asset_deleted_at is not None
        assert not any(path.exists() for path in job_files(settings, job))
    for job in (young, pinned):
        assert get(settings, job.id).asset_deleted_at is None
        assert all(path.exists() for path in job_files(settings, job))
    assert get(settings, running.id).status == "running"
    assert get(settings, queued.id).status == "queued"
    assert get(settings, failed.id).asset_deleted_at is None  # it had nothing to delete
    again = cli("cleanup")
    assert again.exit_code == 0 and again.stdout.strip() == "nothing to clean"


def test_text_output_and_pinning(cli, settings):
    job = make_job(settings)
    assert cli.json("history", "pin", job.id, "--json") == {
        "schema": 2, "ok": True, "id": job.id, "pinned": True, "changed": True, "error": None}
    assert "already pinned" in cli("history", "pin", job.id).stdout
    assert cli.json("history", "show", job.id, "--json")["job"]["pinned"] is True
    assert cli("cleanup", "--yes").stdout.strip() == "nothing to clean"
    assert cli("history", "unpin", job.id).stdout.strip() == f"{job.id}\tunpinned"
    dry = cli("cleanup", "--dry-run")
    assert dry.exit_code == 0 and f"age\t{job.id}\t{job.output_path}" in dry.stdout
    assert "would remove 2 files" in dry.stdout
    real = cli("cleanup", "--yes")
    assert real.stdout.startswith("removed 2 files") and real.stderr == ""
    assert cli("history", "pin", "mmg-nope").exit_code == 3


def test_symlink_out_of_the_assets_folder_is_refused(cli, settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "precious.png"
    secret.write_bytes(png_bytes())
    job = make_job(settings)
    image = settings.assets_dir / job.output_path
    image.unlink()
    image.symlink_to(secret)  # the job's image now points outside
    (settings.assets_dir / "images" / "escape").symlink_to(outside, target_is_directory=True)
    stray = settings.assets_dir / "images" / "stray.png"
    stray.symlink_to(secret)
    through = make_job(settings, thumbnail=False, stored_path="images/escape/precious.png")

    result = cli("cleanup", "--orphans", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    refused = {item["path"]: item["reason"] for item in report["refused"]}
    assert job.output_path in refused and "symlink" in refused[job.output_path]
    assert "symlink" in refused["images/escape/precious.png"]
    assert {"images/escape", "images/stray.png"} <= set(refused)
    assert secret.read_bytes() == png_bytes() and sorted(os.listdir(outside)) == ["precious.png"]
    assert image.is_symlink() and stray.is_symlink()
    assert get(settings, job.id).asset_deleted_at is None
    assert get(settings, through.id).asset_deleted_at is None
    assert "error: cleanup: 4 paths refused" in result.stderr


@pytest.mark.parametrize("stored", ["absolute", "../../outside.png", "images/../../outside.png"])
def test_row_with_a_path_outside_is_refused_and_reported(cli, settings, tmp_path, stored):
    victim = tmp_path / "outside.png"
    victim.write_bytes(b"keep me")
    path = str(victim) if stored == "absolute" else stored
    job = make_job(settings, thumbnail=False, stored_path=path)
    result = cli("cleanup", "--yes")
    assert result.exit_code == 1
    assert f"{job.id}\t{path}\trefused:" in result.stderr
    assert victim.read_bytes() == b"keep me"
    assert get(settings, job.id).asset_deleted_at is None


def test_a_file_that_cannot_be_deleted_is_exit_1_with_the_list(cli, settings, monkeypatch):
    stuck, fine = make_job(settings), make_job(settings)
    stuck_path = settings.assets_dir / stuck.output_path
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # root ignores permissions, so fail one file by hand
        if os.fspath(path) == str(stuck_path):
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    result = cli("cleanup", "--yes", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == [{"id": stuck.id, "path": stuck.output_path,
                                 "absolute_path": str(stuck_path),
                                 "reason": "not removed: Permission denied"}]
    assert get(settings, stuck.id).asset_deleted_at is None  # kept: a later run tries again
    assert get(settings, fine.id).asset_deleted_at is not None
    assert stuck_path.exists() and not (settings.assets_dir / fine.output_path).exists()
    assert "could not be removed" in result.stderr


@pytest.mark.slow
def test_a_held_lock_is_exit_5_or_waited_for(settings, home):
    job = make_job(settings)
    env = {"ZMM_HOME": str(home)}
    lock = FileLock(home / "locks" / "cleanup.lock", {"role": "cleanup"})
    assert lock.try_acquire()
    try:
        refused = run_zmm("cleanup", "--yes", env=env)
        assert refused.returncode == 5
        assert refused.stderr.startswith(f"error: cleanup: another zmm cleanup is running "
                                         f"(pid {os.getpid()})")
        assert (settings.assets_dir / job.output_path).exists()
        waiting = LiveProcess("cleanup", "--yes", "--wait", "--json", env=env)
        waiting.wait_for_line("waiting for another zmm cleanup")
        assert waiting.process.poll() is None
    finally:
        lock.release()
    assert waiting.wait() == 0
    assert removed_files(json.loads("".join(waiting.stdout))) == [job.output_path,
                                                                  job.thumbnail_path]


@pytest.mark.slow
def test_two_concurrent_cleanups_never_delete_twice(settings, home):
    jobs = [make_job(settings, age_days=40 + n % 7) for n in range(60)]
    expected = {name for job in jobs for name in (job.output_path, job.thumbnail_path)}
    env = {"ZMM_HOME": str(home)}
    for args in (("--yes", "--json"), ("--yes", "--json", "--wait")):
        processes = [zmm_process("cleanup", *args, env=env) for _ in range(2)]
        outputs = [process.communicate(timeout=60) for process in processes]
        codes = [process.returncode for process in processes]
        reports = [json.loads(out) for (out, _), code in zip(outputs, codes, strict=True) if code == 0]
        assert set(codes) <= {0, 5} and 0 in codes, outputs
        if "--wait" in args:
            assert codes == [0, 0]
        for (_, err), code in zip(outputs, codes, strict=True):
            assert code == 0 or "another zmm cleanup is running" in err
        deleted = [name for report in reports for name in removed_files(report)]
        assert len(deleted) == len(set(deleted))  # nothing deleted (or reported) twice
        assert set(deleted) == expected
        expected = set()
        with Store(settings.spool_path) as store:
            marks = [[e["kind"] for e in store.events(job.id)].count("assets_deleted")
                     for job in jobs]
        assert marks == [1] * len(jobs)


def test_max_size_deletes_oldest_first_until_under_the_cap(cli, settings):
    jobs = [make_job(settings, age_days=10 - n, thumbnail=False) for n in range(6)]  # oldest first
    pinned = make_job(settings, age_days=20, thumbnail=False)
    cli("history", "pin", pinned.id)
    sizes = [job.file_size_bytes for job in jobs]
    total = sum(path.stat().st_size for path in settings.assets_dir.rglob("*") if path.is_file())
    cap = total - sum(sizes[:3]) + sizes[2] // 2  # two removals are not enough, three are
    report = cli.json("cleanup", "--older-than", "never", "--max-size", f"{cap}B", "--json")
    assert [item["id"] for item in report["removals"]] == [job.id for job in jobs[:3]]
    assert {item["reason"] for item in report["removals"]} == {"size"}
    total = sum(path.stat().st_size for path in settings.assets_dir.rglob("*") if path.is_file())
    assert total <= cap
    assert (settings.assets_dir / pinned.output_path).exists()
    tiny = cli.json("cleanup", "--older-than", "never", "--max-size", "0.1KB", "--json")
    assert len(tiny["removals"]) == 3 and "over --max-size" in tiny["notes"][0]


def test_max_size_from_config_and_bad_sizes(cli, settings, home):
    job = make_job(settings, age_days=1)
    home.joinpath("config.toml").write_text('[retention]\nmax_size = "1B"\n')
    for bad in ("10XB", "ten", "-1GB", "5iB"):
        result = cli("cleanup", "--max-size", bad)
        assert result.exit_code == 2 and result.stderr.startswith("error: max-size: a size")
    assert cli.json("cleanup", "--dry-run", "--json")["removals"][0]["id"] == job.id
    assert cli.json("cleanup", "--max-size", "none", "--dry-run", "--json")["removals"] == []
    home.joinpath("config.toml").write_text('[retention]\nmax_size = "lots"\n')
    result = cli("cleanup", "--dry-run")
    assert result.exit_code == 2 and result.stderr.startswith("error: retention.max_size:")


def test_orphans(cli, settings):
    job = make_job(settings, age_days=1)
    running = make_job(settings, status="running")
    folder = settings.assets_dir / "images" / "2026-01"
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / "mmg-20260101-000000-deadbeef.png"
    orphan_thumb = folder / "mmg-20260101-000000-deadbeef.thumb.webp"
    fresh = folder / "just-saved.png"  # a worker may not have recorded it yet
    in_flight = settings.assets_dir / assets.relative_name(running.id, running.created_at, 0)
    derived = settings.assets_dir / thumbnails.thumbnail_name(job.output_path)
    for path in (orphan, orphan_thumb, fresh, in_flight):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    for path in (orphan, orphan_thumb, in_flight, derived, settings.assets_dir / job.output_path):
        age_file(path)
    report = cli.json("cleanup", "--orphans", "--json")
    assert report["removals"] == [
        {"id": None, "reason": "orphan", "files": [str(path.relative_to(settings.assets_dir))],
         "absolute_files": [str(path)], "bytes": 100} for path in (orphan, orphan_thumb)]
    assert not orphan.exists() and not orphan_thumb.exists()
    assert fresh.exists() and in_flight.exists() and derived.exists()
    assert all(path.exists() for path in job_files(settings, job))


def test_purge_rows(cli, settings):
    old = make_job(settings, prompt="an ancient kraken")
    failed = make_job(settings, age_days=50, status="failed", prompt="a failed kraken")
    young = make_job(settings, age_days=1, prompt="a young kraken")
    cli("cleanup", "--yes")  # first the assets; the rows stay
    assert cli.json("history", "--json", "--search", "kraken")["total"] == 3
    report = cli.json("cleanup", "--purge-rows", "--json")
    assert {item["id"] for item in report["removals"]} == {old.id, failed.id}
    assert report["totals"]["rows_purged"] == 2 and report["totals"]["files"] == 0
    page = cli.json("history", "--json", "--search", "kraken")
    assert [job["id"] for job in page["jobs"]] == [young.id]
    assert cli("history", "show", old.id).exit_code == 3
    with Store(settings.spool_path) as store, pytest.raises(NotFound):
        store.get(failed.id)


def test_purge_rows_in_one_go_removes_files_and_rows(cli, settings):
    job = make_job(settings)
    report = cli.json("cleanup", "--purge-rows", "--json", "--status", "succeeded")
    assert removed_files(report) == [job.output_path, job.thumbnail_path]
    assert report["totals"]["rows_purged"] == 1 and report["totals"]["rows_marked"] == 0
    assert all_files(settings.assets_dir) == set()


def test_compress_older_than_keeps_the_zmm_metadata(cli, settings, tmp_path):
    job = make_job(settings, age_days=10, outputs=2, size=(96, 64))
    young = make_job(settings, age_days=1)
    before = assets.zmm_metadata(settings.assets_dir / job.output_path)
    dry = cli.json("cleanup", "--compress-older-than", "7d", "--dry-run", "--json")
    assert [item["id"] for item in dry["compressions"]] == [job.id]
    report = cli.json("cleanup", "--compress-older-than", "7d", "--json")
    assert report["removals"] == [] and len(report["compressions"]) == 1
    assert report["compressions"][0]["to"] == [name[:-4] + ".jpg" for name in job.output_list]
    assert report["compressions"][0]["absolute_to"] == [
        str(settings.assets_dir / name[:-4]) + ".jpg" for name in job.output_list]
    after = get(settings, job.id)
    assert after.output_path.endswith(".jpg") and len(after.output_list) == 2
    jpeg = settings.assets_dir / after.output_path
    data = jpeg.read_bytes()
    assert data.startswith(b"\xff\xd8") and after.file_size_bytes == len(data)
    import hashlib

    from PIL import Image

    assert after.sha256 == hashlib.sha256(data).hexdigest()
    assert assets.zmm_metadata(jpeg) == before and before["job_id"] == job.id
    again = cli.json("generate", "--from-image", str(jpeg), "--no-wait", "--json")["jobs"][0]
    assert (again["prompt"], again["seed"]) == (job.prompt, job.seed)
    with Image.open(jpeg) as image:
        assert image.format == "JPEG" and image.size == (96, 64)
    assert not (settings.assets_dir / job.output_path).exists()
    assert (settings.assets_dir / after.thumbnail_path).exists()
    assert get(settings, young.id).output_path.endswith(".png")
    # the compressed job is deleted with its JPEGs and thumbnail later on
    gone = cli.json("cleanup", "--older-than", "5d", "--json")
    assert set(removed_files(gone)) == {*after.output_list, after.thumbnail_path}
    assert cli("cleanup", "--compress-older-than", "soon").exit_code == 2


def test_thumbnails_are_256px_webp_next_to_the_image(settings):
    from PIL import Image

    root = settings.assets_dir
    saved = assets.save_output(root, "images/2026-01/mmg-x.png", png_bytes(512, 384), {"a": 1})
    relative = thumbnails.make_thumbnail(saved.path, root)
    assert relative == "images/2026-01/mmg-x.thumb.webp"
    with Image.open(root / relative) as image:
        assert image.format == "WEBP" and image.size == (256, 192)
    tall = assets.save_output(root, "images/2026-01/tall.png", png_bytes(300, 1200), {})
    with Image.open(root / thumbnails.make_thumbnail(tall.path, root)) as image:
        assert image.size == (64, 256)
    with pytest.raises(Exception, match="not inside the assets folder"):
        thumbnails.make_thumbnail(settings.home / "elsewhere.png", root)


@pytest.mark.parametrize("args,message", [
    (["--status", "queued"], "error: status:"),
    (["--status", "running,failed"], "error: status:"),
    (["--older-than", "yesterday"], "error: older-than:"),
    (["--compress-older-than", "1yr"], "error: compress-older-than:"),
    (["--older-than", "1m"], "error: older-than: 1m is ambiguous: write 1min for minutes or "
                             "1mo for months"),
])
def test_bad_input_is_exit_2_and_deletes_nothing(cli, settings, args, message):
    make_job(settings)
    before = all_files(settings.assets_dir)
    result = cli("cleanup", "--yes", *args)
    assert result.exit_code == 2 and result.stderr.startswith(message)
    assert all_files(settings.assets_dir) == before


def test_corrupt_spool_is_exit_7(cli, settings):
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.spool_path.write_bytes(b"garbage" * 1000)
    result = cli("cleanup", "--yes")
    assert result.exit_code == 7 and result.stderr.startswith("error: the spool at")


def test_retention_days_from_config(cli, settings, home):
    job = make_job(settings, age_days=10)
    assert cli.json("cleanup", "--dry-run", "--json")["removals"] == []
    home.joinpath("config.toml").write_text("[retention]\ndays = 7\n")
    assert cli.json("cleanup", "--dry-run", "--json")["removals"][0]["id"] == job.id
    home.joinpath("config.toml").write_text("[retention]\ndays = 0\n")  # 0: no age limit
    assert cli.json("cleanup", "--dry-run", "--json")["removals"] == []


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize("answer,removed", [("n", False), ("y", True)])
def test_asks_once_on_a_terminal(settings, home, answer, removed):
    import pty
    import subprocess

    job = make_job(settings)
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "zmm", "cleanup"], stdin=follower,
                               stdout=subprocess.PIPE, stderr=follower, text=True,
                               env={**os.environ, "ZMM_HOME": str(home)})
    os.close(follower)
    seen = b""

    def prompted():
        nonlocal seen
        seen += os.read(leader, 1024)
        return b"[y/N]" in seen

    wait_until(prompted, timeout=20)
    assert b"Remove 2 files" in seen
    os.write(leader, answer.encode() + b"\n")
    out, _ = process.communicate(timeout=20)
    os.close(leader)
    assert process.returncode == 0
    assert (settings.assets_dir / job.output_path).exists() is not removed
    assert out.startswith("removed 2 files") if removed else out == "", out


def test_interrupted_run_leaves_no_row_claiming_files_it_did_not_remove(settings, monkeypatch):
    from zmm.retention import cleanup

    jobs = [make_job(settings, thumbnail=False) for _ in range(3)]
    second = str(settings.assets_dir / jobs[1].output_path)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path) == second:
            raise KeyboardInterrupt
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with Store(settings.spool_path) as store:
        paths = cleanup.SafePaths(settings.assets_dir)
        plan = cleanup.make_plan(store, paths, cleanup.Criteria(), store.clock())
        assert [item.job_id for item in plan.removals] == [job.id for job in jobs]
        with pytest.raises(KeyboardInterrupt):
            cleanup.apply(store, paths, plan)
        states = [store.get(job.id).asset_deleted_at is not None for job in jobs]
    assert states == [True, False, False]  # the next run picks up the other two
    assert (settings.assets_dir / jobs[1].output_path).exists()


def pty_cleanup(*args: str, stderr_on_pty: bool = True) -> tuple[int, str]:
    """`zmm cleanup` with stdin (and stderr) on a pseudo-terminal, as an agent
    driving a pty runs it; nothing is typed. (exit code, what stderr said)."""
    import pty
    import subprocess

    from tests.conftest import ROOT

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "zmm", "cleanup", *args], cwd=ROOT,
                              stdin=follower, stdout=subprocess.PIPE,
                              stderr=follower if stderr_on_pty else subprocess.PIPE,
                              timeout=30, env=os.environ.copy())
        os.set_blocking(leader, False)
        try:
            said = os.read(leader, 65536).decode(errors="replace")
        except BlockingIOError:
            said = ""
        return done.returncode, said if stderr_on_pty else done.stderr.decode()
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize(("args", "on_pty", "said"), [
    (("--json",), True, "error: yes: --json never asks: pass --yes to clean, or --dry-run"),
    ((), False, "error: yes: stderr is not a terminal to ask on: pass --yes"),
])
def test_a_terminal_no_person_can_answer_is_refused_not_left_hanging(settings, args, on_pty,
                                                                      said):
    job = make_job(settings, age_days=40)
    before = all_files(settings.assets_dir)
    code, stderr = pty_cleanup(*args, stderr_on_pty=on_pty)
    assert code == 2 and said in stderr
    assert all_files(settings.assets_dir) == before and get(settings, job.id).asset_deleted_at is None
    code, _ = pty_cleanup("--json", "--yes")
    assert code == 0 and get(settings, job.id).asset_deleted_at is not None
