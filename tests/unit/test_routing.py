"""Why a queued job waits (zmm.views.routing): the reasons `zmm queue`, a waiting
`zmm generate` and the cloud rule give for a job no live backend can run."""

from __future__ import annotations

from zmm.timestamps import iso
from zmm.views.routing import LiveBackend, live_backends, waiting_reason

FLUX = "diffusion_models/flux1-dev.safetensors"
SDXL = "checkpoints/sd_xl_base_1.0.safetensors"
VAE = "vae/ae.safetensors"
NOW, LEASE_S = 1_800_000_000.0, 60.0


def live(**files) -> dict[str, LiveBackend]:
    return {name: LiveBackend(name, frozenset(have) if have is not None else None)
            for name, have in files.items()}


def test_a_job_some_live_backend_can_run_has_no_reason():
    assert waiting_reason([SDXL], None, live(gpu0=[FLUX], gpu1=[SDXL, VAE])) is None
    assert waiting_reason([], None, live(gpu0=[])) is None
    assert waiting_reason(None, None, live(gpu0=[])) is None  # before schema 10


def test_the_first_file_no_backend_has_is_named():
    assert waiting_reason([FLUX, VAE], None, live(gpu0=[SDXL], gpu1=[VAE])) == \
        "no backend has flux1-dev.safetensors"


def test_files_spread_over_backends_are_no_backends_whole_set():
    assert waiting_reason([FLUX, VAE], None, live(gpu0=[FLUX], gpu1=[VAE])) == \
        "no backend has all of flux1-dev.safetensors, ae.safetensors"


def test_a_backend_whose_files_are_not_read_yet_may_run_it():
    assert waiting_reason([FLUX], None, live(gpu0=[SDXL], gpu1=None)) is None


def test_no_live_worker_at_all_has_its_own_message_elsewhere():
    assert waiting_reason([FLUX], None, {}) is None
    assert waiting_reason([FLUX], "gpu1", {}) is None


def test_pinned_jobs_name_their_backend():
    backends = live(gpu0=[FLUX, SDXL])
    assert waiting_reason([SDXL], "gpu1", backends) == \
        "no backend serves it: pinned to gpu1, which has no live worker"
    backends["gpu1"] = LiveBackend("gpu1", frozenset([FLUX]), draining=True)
    assert waiting_reason([SDXL], "gpu1", backends) == \
        "no backend serves it: pinned to gpu1, which is draining"
    backends["gpu1"] = LiveBackend("gpu1", frozenset([FLUX]))
    assert waiting_reason([SDXL], "gpu1", backends) == \
        "no backend serves it: pinned to gpu1, which has no sd_xl_base_1.0.safetensors"
    assert waiting_reason([FLUX], "gpu1", backends) is None


def test_draining_backends_serve_nothing_new():
    backends = {"gpu0": LiveBackend("gpu0", frozenset([SDXL]), draining=True)}
    assert waiting_reason([SDXL], None, backends) == \
        "no backend serves it: every live backend is draining"
    backends["gpu1"] = LiveBackend("gpu1", frozenset([FLUX]))
    assert waiting_reason([SDXL], None, backends) == "no backend has sd_xl_base_1.0.safetensors"


def test_live_backends_are_the_live_workers_backends_with_their_rows():
    rows = [{"name": "gpu0", "files": [SDXL], "draining": False},
            {"name": "gpu1", "files": [FLUX], "draining": True},
            {"name": "gpu2", "files": [VAE], "draining": False}]  # no live worker
    beat = {"heartbeat_at": iso(NOW - 1)}
    workers = [dict(beat, backend="gpu0"), dict(beat, backend="gpu1"), dict(beat, backend=None),
               {"backend": "gpu2", "heartbeat_at": iso(NOW - 3 * LEASE_S - 1)}]  # dead
    found = live_backends(rows, workers, NOW, LEASE_S)
    assert found == {"gpu0": LiveBackend("gpu0", frozenset([SDXL])),
                     "gpu1": LiveBackend("gpu1", frozenset([FLUX]), draining=True),
                     "default": LiveBackend("default", None)}
