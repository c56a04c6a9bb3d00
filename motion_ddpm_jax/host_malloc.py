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
and that peak is higher: the second call does not get the first call's freed buffer back, faults in a
second one and keeps both (glibc 2.36's posix_memalign does not reuse a freed block of exactly the size
asked for once a small allocation lands beside it): the full-size CPU train step (B=32, T=196) settles
at 9.9-11.8 GB resident from its second or third call on, against a 6.5-7.4 GB peak with glibc's
defaults; one decoder layer's program at 2.3 GB for a 0.7 GB buffer. Other allocators that keep freed
memory do the same (jemalloc without decay and tcmalloc, preloaded: 10.4 GB where these settings hold
9.9 GB in the same runs; benchmarks/RESULTS.md, session 27); jemalloc with its defaults gives the memory
back and faults it in again every call, as glibc's defaults do.
Call it before jax starts its threads (before the first jax computation; launch.py, the benchmarks and
the tests do it first thing). It does nothing where the C library is not glibc, where the process's malloc
is not glibc's (an allocator preloaded with LD_PRELOAD, e.g. jemalloc or tcmalloc: the settings would
reach an allocator nobody uses), where the user's own GLIBC_TUNABLES already set glibc.malloc.* (theirs
win), with MOTION_DDPM_JAX_MALLOC=default (or off, 0, false, no, none), or where jax
will run on an accelerator (`accelerator_in_use`). There the big buffers live on the device, and the
host's heap serves XLA's compiler, which runs on many threads: one arena serialises them. On an H100
machine with 16 cores our bf16 train step had not finished compiling after 156 s with these settings, and
compiled in 104.6 s with glibc's defaults (benchmarks/RESULTS.md, 2026-11-28).
Imports nothing heavy: safe to call before jax is imported.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
import platform
import re
from collections.abc import Callable, Iterable, Mapping

OPT_OUT_VARIABLE = "MOTION_DDPM_JAX_MALLOC"
OPT_OUT_VALUES = ("default", "off", "0", "false", "no", "none")  # any case; anything else leaves it on
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: SIZE_MAX in glibc
_state: str | None = None
# Device nodes of the accelerators jax has plugins for: NVIDIA, AMD (ROCm), TPU (v4 and later VMs).
ACCELERATOR_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/accel0", "/dev/vfio/0")
_PLUGIN_WORDS = ("cuda", "rocm", "tpu")


def tune() -> str:
    """Apply the settings once per process; returns what is in effect, in words (also `describe()`)."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def describe() -> str:
    """What `tune()` did in this process, or 'glibc defaults' if it was not called."""
    return _state or "glibc defaults (host_malloc.tune() not called)"


def installed_plugins() -> list[str]:
    """jax's accelerator plugins that are installed, found without importing jax or them: the PJRT plugins
    (`jax_plugins.*` with cuda, rocm or tpu in the name, e.g. jax-cuda13-pjrt's `jax_plugins.xla_cuda13`),
    their kernel packages (`jax_cuda13_plugin`, `jax_rocm7_plugin`, ...) and `libtpu`."""
    found = []
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        for module in pkgutil.iter_modules(spec.submodule_search_locations):
            if any(word in module.name.lower() for word in _PLUGIN_WORDS):
                found.append(f"jax_plugins.{module.name}")
    for module in pkgutil.iter_modules():
        if module.name == "libtpu" or re.fullmatch(r"jax_(cuda|rocm)\d*_plugin", module.name):
            found.append(module.name)
    return sorted(set(found))


def accelerator_in_use(
    environ: Mapping[str, str] = os.environ,
    exists: Callable[[str], bool] = os.path.exists,
    plugins: Iterable[str] | None = None,
) -> str | None:
    """Why jax will run on an accelerator in this process, in words, or None where it will run on the CPU.

    JAX_PLATFORMS decides where it is set: its first platform is the one jax uses (`cpu`: the CPU; any
    other: an accelerator). Otherwise jax takes an accelerator when one of its plugins is installed and
    the machine has the device (`ACCELERATOR_NODES`); without a plugin it runs on the CPU even there."""
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return None if platforms[0] == "cpu" else f"JAX_PLATFORMS={environ['JAX_PLATFORMS']}"
    nodes = [node for node in ACCELERATOR_NODES if exists(node)]
    plugins = installed_plugins() if plugins is None else list(plugins)
    if nodes and plugins:
        return f"{', '.join(nodes)} with {', '.join(plugins)}"
    return None


def malloc_is_glibcs(libc: ctypes.CDLL) -> bool:
    """Whether `malloc` as the process resolves it is glibc's own (not an interposed allocator's)."""
    address = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
    return address == ctypes.cast(libc.malloc, ctypes.c_void_p).value


def _apply() -> str:
    asked = os.environ.get(OPT_OUT_VARIABLE, "").strip()
    if asked.lower() in OPT_OUT_VALUES:
        return f"glibc defaults ({OPT_OUT_VARIABLE}={asked})"
    if asked:  # a value that opts out of nothing: said in what `describe` returns
        choices = ", ".join(OPT_OUT_VALUES)
        return f"{_try_settings()} ({OPT_OUT_VARIABLE}={asked!r} is none of {choices}: left on)"
    return _try_settings()


def _try_settings() -> str:
    accelerator = accelerator_in_use()
    if accelerator is not None:
        return f"glibc defaults (jax runs on an accelerator: {accelerator})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "the C library's defaults (not glibc)"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return f"the user's GLIBC_TUNABLES ({os.environ['GLIBC_TUNABLES']})"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as error:
        return f"glibc defaults (libc.so.6 not loadable: {error})"
    if not malloc_is_glibcs(libc):
        preload = os.environ.get("LD_PRELOAD", "")
        return "the process's own malloc, not glibc's" + (f" (LD_PRELOAD={preload})" if preload else "")
    if not all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS):
        return "glibc defaults (mallopt refused a setting)"
    return "tuned: one arena, no mmap, no trim (motion_ddpm_jax.host_malloc)"
