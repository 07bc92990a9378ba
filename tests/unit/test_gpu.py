"""zmm.backends.gpu through its seam: the fake NVML over a VRAM ledger (pynvml's own error
classes), the $ZMM_TEST_NVML file a subprocess reads (tests/seams/sitecustomize.py),
/proc process names, and the real pynvml where this machine has (or lacks) a driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest

from tests.conftest import TEST_NVML_ENV
from tests.fakes.nvml import (
    DRIVER,
    GPU_NAME,
    GPU_UUID,
    LedgerFile,
    LedgerNvml,
    fake_nvml,
    ledger_state,
    no_driver,
    write_no_driver,
)
from tests.fakes.nvml_state import FileNvml
from tests.fakes.vram import GIB, VramLedger
from zmm.backends import gpu
from zmm.errors import BACKEND_UNAVAILABLE, GpuUnavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ledger():
    ledger = VramLedger(total_bytes=24 * GIB, reserved_bytes=GIB // 2)
    ledger.allocate("ollama:llama3.1:8b", 6 * GIB, pid=4242, process_name="ollama_llama_server")
    ledger.allocate("ollama:qwen2.5:7b", 5 * GIB, pid=4242, process_name="ollama_llama_server")
    ledger.allocate("comfyui:sd_xl_base_1.0.safetensors", 7 * GIB, pid=5151,
                    process_name="python3 main.py (ComfyUI)")
    ledger.allocate("other:blender", GIB, pid=6161, process_name="blender")
    return ledger


class CountingNvml(LedgerNvml):
    """Counts init/shutdown; optionally fails with an NVML error after nvmlInit."""

    def __init__(self, ledger: VramLedger, fail_with: int | None = None) -> None:
        super().__init__(lambda: ledger_state(ledger))
        self.fail_with, self.inits, self.shutdowns = fail_with, 0, 0

    def nvmlInit(self) -> None:
        super().nvmlInit()
        self.inits += 1

    def nvmlShutdown(self) -> None:
        super().nvmlShutdown()
        self.shutdowns += 1

    def nvmlDeviceGetName(self, device):
        if self.fail_with is not None:
            raise pynvml.NVMLError(self.fail_with)
        return super().nvmlDeviceGetName(device)


def test_snapshot_shows_the_ledger_as_one_gpu(ledger):
    with gpu.use_backend(fake_nvml(ledger)):
        snap = gpu.snapshot()
    assert snap.driver_version == DRIVER
    (card,) = snap.gpus
    assert (card.index, card.name, card.uuid) == (0, GPU_NAME, GPU_UUID)
    assert card.total_bytes == 24 * GIB
    assert card.used_bytes == GIB // 2 + 19 * GIB
    assert card.free_bytes == card.total_bytes - card.used_bytes == ledger.free
    assert (card.utilization_pct, card.temperature_c, card.power_w) == (37, 51, 215.0)
    by_pid = {p.pid: p for p in card.processes}
    assert by_pid[4242] == gpu.GpuProcess(4242, "ollama_llama_server", 11 * GIB, "ollama")
    assert by_pid[5151].role == "comfyui" and by_pid[5151].used_bytes == 7 * GIB
    assert by_pid[6161].role is None


def test_snapshot_follows_the_ledger(ledger):
    with gpu.use_backend(fake_nvml(ledger)):
        before = gpu.free_bytes()
        ledger.release_prefix("ollama:")
        assert gpu.free_bytes() == before + 11 * GIB
        assert gpu.used_bytes() == ledger.used
        assert gpu.free_bytes(index=1) is None  # no such GPU


def test_unsupported_readings_are_none_not_failures(ledger):
    backend = fake_nvml(ledger, utilization=None, temperature=None, power_mw=None)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # the fake raises what pynvml raises
        backend.nvmlDeviceGetTemperature(ledger_state(ledger, temperature=None)["gpus"][0], 0)
    with gpu.use_backend(backend):
        (card,) = gpu.snapshot().gpus
    assert (card.utilization_pct, card.temperature_c, card.power_w) == (None, None, None)
    assert card.free_bytes == ledger.free


def test_no_driver_is_one_clean_line():
    with gpu.use_backend(no_driver()), pytest.raises(GpuUnavailable) as caught:
        gpu.snapshot()
    error = caught.value
    assert str(error) == "no NVIDIA driver: Driver Not Loaded"
    assert "\n" not in error.message and error.exit_code == BACKEND_UNAVAILABLE
    assert error.hint and "skipped" in error.hint
    assert error.__cause__ is None and error.__suppress_context__  # no chained traceback
    with gpu.use_backend(no_driver()):
        assert gpu.free_bytes() is None and gpu.used_bytes() is None


def test_shutdown_follows_init_even_when_nvml_fails_halfway(ledger):
    backend = CountingNvml(ledger, fail_with=pynvml.NVML_ERROR_GPU_IS_LOST)
    with gpu.use_backend(backend), \
            pytest.raises(GpuUnavailable, match="^NVML failed: GPU is lost$"):
        gpu.snapshot()
    assert (backend.inits, backend.shutdowns) == (1, 1)
    healthy = CountingNvml(ledger)
    with gpu.use_backend(healthy):
        gpu.snapshot()
    assert (healthy.inits, healthy.shutdowns) == (1, 1)


@pytest.mark.parametrize(("name", "cmdline", "cwd", "role"), [
    ("ollama", "/usr/local/bin/ollama serve", "", "ollama"),
    ("ollama_llama_server", "", "", "ollama"),
    ("ollama", "/usr/bin/ollama runner --model /root/.ollama/models/blobs/sha256-x", "", "ollama"),
    ("python3", "python3 /opt/ComfyUI/main.py --port 8188", "", "comfyui"),
    ("python", "python main.py", "/home/me/ComfyUI", "comfyui"),
    ("python", "python main.py --listen 0.0.0.0", "/srv/app", "comfyui"),
    ("comfy", "comfy launch", "", "comfyui"),
    ("python3 main.py (ComfyUI)", "", "", "comfyui"),
    ("python", "python train.py", "/home/me/project", None),
    ("Xorg", "/usr/lib/xorg/Xorg :0", "", None),
    ("?", "", "", None),
])
def test_role_guess(name, cmdline, cwd, role):
    assert gpu.role_of(name, cmdline, cwd) == role


class PidNvml(LedgerNvml):
    """A backend listing real pids, without the state's names: /proc is asked."""

    zmm_process_name = None


@pytest.mark.slow
def test_real_pids_are_named_from_proc(tmp_path):
    comfy_dir = tmp_path / "ComfyUI"
    comfy_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "main.py"],
                               cwd=comfy_dir, stdin=subprocess.PIPE)
    try:
        comm = Path(f"/proc/{sleeper.pid}/comm").read_text().strip()  # e.g. "python3.11"
        ledger = VramLedger()
        ledger.allocate("comfyui:x", 2 * GIB, pid=sleeper.pid, process_name="ignored")
        ledger.allocate("gone", GIB, pid=2**22 + 12345, process_name="ignored")  # above pid_max
        with gpu.use_backend(PidNvml(lambda: ledger_state(ledger))):
            processes = {p.pid: p for p in gpu.snapshot().gpus[0].processes}
    finally:
        sleeper.stdin.close()
        sleeper.wait(10)
    found = processes[sleeper.pid]
    assert (found.name, found.used_bytes) == (comm, 2 * GIB)
    assert found.role == "comfyui"  # from the working directory: argv says only main.py
    assert processes[2**22 + 12345] == gpu.GpuProcess(2**22 + 12345, "?", GIB, None)


def test_file_backend_reads_a_ledger_file_kept_current(ledger, tmp_path):
    path = tmp_path / "nvml.json"
    with LedgerFile(ledger, path) as mirror, gpu.use_backend(FileNvml(path)):
        assert gpu.free_bytes() == ledger.free
        ledger.release("comfyui:sd_xl_base_1.0.safetensors")
        assert gpu.free_bytes() == ledger.free
        snap = gpu.snapshot()
        assert {p.pid: p.role for p in snap.gpus[0].processes} == {4242: "ollama", 6161: None}
        assert mirror.path == path
    ledger.release_prefix("ollama:")  # no longer followed after close()
    assert json.loads(path.read_text())["gpus"][0]["used"] != ledger.used


@pytest.mark.slow
def test_a_zmm_subprocess_sees_the_fake_gpu(ledger, tmp_path):
    path = tmp_path / "nvml.json"
    code = ("from zmm.backends import gpu; s = gpu.snapshot(); "
            "print(s.gpus[0].free_bytes, [(p.pid, p.role) for p in s.gpus[0].processes])")
    with LedgerFile(ledger, path):
        ledger.release("other:blender")
        out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, TEST_NVML_ENV: str(path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1) == [str(ledger.free),
                                        "[(4242, 'ollama'), (5151, 'comfyui')]\n"]
    none = subprocess.run([sys.executable, "-c", "from zmm.backends import gpu; print(gpu.free_bytes())"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, TEST_NVML_ENV: str(write_no_driver(path))})
    assert none.stdout == "None\n" and none.stderr == ""


def test_ledger_file_writes_are_consistent_under_concurrent_changes(tmp_path):
    import threading

    ledger = VramLedger(total_bytes=64 * GIB)
    path = tmp_path / "nvml.json"
    LedgerFile(ledger, path)

    def churn(prefix: str) -> None:
        for n in range(50):
            ledger.allocate(f"{prefix}:{n % 3}", GIB, pid=1, process_name=prefix)
            ledger.release(f"{prefix}:{(n + 1) % 3}")

    threads = [threading.Thread(target=churn, args=(name,)) for name in ("ollama", "comfyui")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    state = json.loads(path.read_text())["gpus"][0]
    assert state["used"] == ledger.used  # the last write shows the final state
    assert not list(tmp_path.glob(".*.tmp"))


def test_driver_absence_is_cached_but_test_seams_are_not(ledger, tmp_path, real_nvml):
    """The real driver's absence is remembered (no probing before every job), but
    switching to a seam takes effect at once."""
    gpu.free_bytes()  # the real pynvml: None here without a driver, a number with one
    with gpu.use_backend(fake_nvml(ledger)):
        assert gpu.free_bytes() == ledger.free
    with gpu.use_backend(FileNvml(write_no_driver(tmp_path / "none.json"))):
        assert gpu.free_bytes() is None
    with LedgerFile(ledger, tmp_path / "live.json") as mirror, \
            gpu.use_backend(FileNvml(mirror.path)):
        assert gpu.free_bytes() == ledger.free  # at once: no 30 s "no driver" memory


def test_shipped_code_has_no_test_seam():
    """The fake GPU of `zmm` subprocesses is installed by tests/seams, not read by zmm."""
    readers = [path.relative_to(ROOT) for path in (ROOT / "zmm").rglob("*.py")
               if "ZMM_TEST_" in path.read_text(encoding="utf-8")]
    assert readers == []


@pytest.mark.slow
def test_importing_gpu_does_not_import_pynvml():
    out = subprocess.run([sys.executable, "-c",
                          "import sys, zmm.backends.gpu; print('pynvml' in sys.modules)"],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout == "False\n", out.stderr


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_driver_present(), reason="this machine has an NVIDIA driver")
def test_real_pynvml_without_a_driver_is_one_line(real_nvml):
    with pytest.raises(GpuUnavailable) as caught:
        gpu.snapshot()
    assert caught.value.message.startswith("no NVIDIA driver: ")
    assert "\n" not in caught.value.message


@pytest.mark.gpu
@pytest.mark.skipif(not _driver_present(), reason="no NVIDIA driver")
def test_real_pynvml_snapshot(real_nvml):
    snap = gpu.snapshot()
    assert snap.gpus and snap.driver_version
    for card in snap.gpus:
        assert card.total_bytes > 0 and 0 <= card.free_bytes <= card.total_bytes
    assert gpu.free_bytes() is not None
