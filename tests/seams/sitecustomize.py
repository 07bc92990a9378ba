"""Test seams for `zmm` subprocesses, installed at interpreter start.

tests/conftest.py puts this folder first on PYTHONPATH, so every Python process
a test starts imports this module. When $ZMM_TEST_NVML names a JSON state file
(tests/fakes/nvml_state.py), the process's NVML is that file instead of the
driver: the seam lives in the tests, and zmm's shipped code knows nothing of it.
Every test sets it (a no-driver file unless the test asks for a fake GPU), so the
seam costs nothing until NVML is read: a process imports no more than without it.
"""

import os

if os.environ.get("ZMM_TEST_NVML"):
    from pathlib import Path

    from zmm.backends import gpu

    class _FileNvmlOnFirstUse:
        """tests.fakes.nvml_state.FileNvml, imported (with pynvml) when first read."""

        def __init__(self, path: Path) -> None:
            self._path, self._nvml = path, None

        def __getattr__(self, name: str):
            if self._nvml is None:
                from tests.fakes.nvml_state import FileNvml

                self._nvml = FileNvml(self._path)
            return getattr(self._nvml, name)

    # Entered for the life of the process, and held here: a collected context
    # manager would run its exit and put the driver back.
    NVML_SEAM = gpu.use_backend(_FileNvmlOnFirstUse(Path(os.environ["ZMM_TEST_NVML"])))
    NVML_SEAM.__enter__()
