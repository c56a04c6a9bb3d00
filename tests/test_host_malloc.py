"""host_malloc.tune(): freed big blocks stay mapped (no page faults when reused), and the opt-outs hold.

Each case runs in a fresh interpreter: the settings are process-wide and this test process has them
already (conftest.py).
"""

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK_MB = (256, 192)  # the second, smaller block fits in the first one's freed memory
PAGES = [size * 2**20 // 4096 for size in BLOCK_MB]

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)

# posix_memalign, touch and free a 256 MB block, then a 192 MB one, each from a worker thread (as XLA:CPU
# does with its buffers), and count the page faults of each round. (Not numpy: it asks for huge pages.)
# The second block is smaller so that it fits in the first one's freed memory whatever small allocation
# lands after it (asking for exactly the same size again can miss by the alignment padding).
SCRIPT = textwrap.dedent(
    f"""
    import ctypes, json, resource, sys, threading
    sys.path.insert(0, {str(ROOT)!r})
    from motion_ddpm_jax import host_malloc
    state = host_malloc.tune()
    libc = ctypes.CDLL("libc.so.6")
    libc.free.argtypes = [ctypes.c_void_p]

    def round_trip(size):
        pointer = ctypes.c_void_p()
        assert libc.posix_memalign(ctypes.byref(pointer), 64, ctypes.c_size_t(size)) == 0
        ctypes.memset(pointer, 1, size)  # touch every page
        libc.free(pointer)

    faults = []
    for megabytes in {BLOCK_MB!r}:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        worker = threading.Thread(target=round_trip, args=(megabytes * 2**20,))
        worker.start()
        worker.join()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({{"state": state, "described": host_malloc.describe(), "faults": faults}}))
    """
)


def run(**env_overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MOTION_DDPM_JAX_MALLOC")}
    env.update(env_overrides)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tuned_malloc_reuses_a_freed_block_without_page_faults():
    tuned = run()
    assert tuned["state"].startswith("tuned") and tuned["described"] == tuned["state"]
    assert tuned["faults"][0] >= 0.9 * PAGES[0]  # the first touch maps every page
    assert tuned["faults"][1] < 0.02 * PAGES[1], tuned  # the second block reuses them


def test_glibc_defaults_fault_the_whole_block_again():
    """The reference the fix is measured against: with glibc's defaults the block is unmapped on free."""
    default = run(MOTION_DDPM_JAX_MALLOC="default")
    assert default["state"] == "glibc defaults (MOTION_DDPM_JAX_MALLOC=default)"
    assert default["faults"][1] >= 0.9 * PAGES[1], default


def test_the_users_own_tunables_win():
    own = run(GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
    assert own["state"] == "the user's GLIBC_TUNABLES (glibc.malloc.tcache_count=0)"
    assert own["faults"][1] >= 0.9 * PAGES[1], own  # nothing of ours was applied
