"""The wheel: built from this checkout, installed into a fresh venv, it runs
`zmm --version` and finds the shipped templates and migrations inside itself."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(ROOT)], check=True, timeout=300)
    (built,) = out.glob("zmm-*.whl")
    return built


def test_wheel_ships_workflows_and_spool(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "zmm/_data/spool/migrations/0001_initial.sql" in names
    assert any(name.startswith("zmm/_data/workflows/") and name.endswith(".json") for name in names)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    target = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    # Install the wheel alone into the fresh venv; its dependencies come from this
    # test run's environment through a .pth file (no network in tests).
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                    target, str(wheel)], check=True, timeout=300)
    deps = [p for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
                        *site.getsitepackages()} if os.path.isdir(p)]
    (tmp_path / "venv-deps.pth").write_text("\n".join(deps) + "\n")
    os.replace(tmp_path / "venv-deps.pth", os.path.join(target, "zz-test-deps.pth"))
    env = {**os.environ, "ZMM_HOME": str(tmp_path / "home"), "PYTHONPATH": ""}
    version = subprocess.run([str(python), "-m", "zmm", "--version"], capture_output=True,
                             text=True, env=env, cwd=tmp_path, check=True)
    assert version.stdout.startswith("zmm ")
    probe = ("import zmm, zmm.workflows as w, zmm.store.db as d; "
             "print(zmm.__file__); print(d.data_dir('workflows')); "
             "print(sorted(w.available(None))); print(len(d.migrations()))")
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout.splitlines()
    assert out[0].startswith(target), "zmm was not imported from the installed wheel"
    assert out[1].startswith(target) and out[1].endswith(os.path.join("_data", "workflows"))
    assert "sdxl-txt2img" in out[2] and "sd15-txt2img" in out[2]
    assert int(out[3]) >= 1
