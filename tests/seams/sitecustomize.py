"""Test seams for `zmm` subprocesses, installed at interpreter start.

tests/conftest.py puts this folder first on PYTHONPATH, so every Python process
a test starts imports this module. When $ZMM_TEST_NVML names a JSON state file
(tests/fakes/nvml_state.py), the process's NVML is that file instead of the
driver: the seam lives in the tests, and zmm's shipped code knows nothing of it.
"""

import os

if os.environ.get("ZMM_TEST_NVML"):
    from pathlib import Path

    from tests.fakes.nvml_state import FileNvml
    from zmm.backends import gpu

    # Entered for the life of the process, and held here: a collected context
    # manager would run its exit and put the driver back.
    NVML_SEAM = gpu.use_backend(FileNvml(Path(os.environ["ZMM_TEST_NVML"])))
    NVML_SEAM.__enter__()
