"""Keep freed host memory in the process: glibc malloc settings that spare XLA:CPU a page fault per byte.

XLA:CPU gives every call of a compiled program one temporary buffer for all its intermediates (680 MB
for one decoder layer's forward + backward at B=32, T=196; several GB for a train step), allocated with
posix_memalign and freed when the call ends. glibc serves a block that large from a fresh `mmap` and
returns it with `munmap`, so every call page-faults its whole buffer again and the kernel zeroes each page
first: on the 2-core CPU machine a layer's forward + backward took 175k page faults and ~16% of its CPU
time in the kernel per call. With the settings below the same call takes no page fault and runs ~1.4x
faster, the whole train step ~1.5x (numbers: benchmarks/RESULTS.md). Numerics are unaffected: only where
memory comes from changes.

`tune()` sets, through `mallopt`:
- M_ARENA_MAX = 1: every thread allocates from the main heap (a thread's own arena is capped at 64 MB
  and would `mmap` anything larger whatever the other settings say);
- M_MMAP_MAX = 0: no allocation gets its own `mmap`;
- M_TRIM_THRESHOLD = max: freed memory is never handed back to the system.
The price: the process keeps its peak heap until it exits (what a training or sampling process wants),
and that peak is higher, because a freed block is not always reusable for the next call's block of the
same size (a small allocation can take the alignment slack beside it): the full-size CPU train step
(B=32, T=196) settles at 11.8 GB resident from its third call on, against a 7.4 GB peak with glibc's
defaults; one decoder layer's program at 2.3 GB for a 0.7 GB buffer.
Call it before jax starts its threads (before the first jax computation; launch.py, the benchmarks and
the tests do it first thing). It does nothing where the C library is not glibc, where the user's own
GLIBC_TUNABLES already set glibc.malloc.* (theirs win), or with MOTION_DDPM_JAX_MALLOC=default.
Imports nothing heavy: safe to call before jax is imported.
"""

from __future__ import annotations

import ctypes
import os
import platform

OPT_OUT_VARIABLE = "MOTION_DDPM_JAX_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: SIZE_MAX in glibc
_state: str | None = None


def tune() -> str:
    """Apply the settings once per process; returns what is in effect, in words (also `describe()`)."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def describe() -> str:
    """What `tune()` did in this process, or 'glibc defaults' if it was not called."""
    return _state or "glibc defaults (host_malloc.tune() not called)"


def _apply() -> str:
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return f"glibc defaults ({OPT_OUT_VARIABLE}=default)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the C library's defaults (not glibc)"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return f"the user's GLIBC_TUNABLES ({os.environ['GLIBC_TUNABLES']})"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as error:
        return f"glibc defaults (libc.so.6 not loadable: {error})"
    if not all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS):
        return "glibc defaults (mallopt refused a setting)"
    return "tuned: one arena, no mmap, no trim (motion_ddpm_jax.host_malloc)"
