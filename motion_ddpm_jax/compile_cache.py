"""jax's persistent compilation cache for launch.py: a program compiled once is loaded from disk by every
later run that compiles the same program (resuming a run, sampling from it, evaluating it).

Why: compiling the full-size train step took XLA:GPU 104.6 s on an H100 (benchmarks/RESULTS.md,
2026-11-28), 85 s at B=32 and 174 s at B=256 on an H200 (2026-12-04; 14 s with the program in a cache),
and XLA:CPU 16.7 s on a 2-core AMD EPYC (bf16 or float32), and every launch compiled it again.
A cached program is the same executable: a run that loads it computes the same bits as one that
compiles it (tested).

`--compile_cache` picks the folder:
- `auto` (the default): the user's own JAX_COMPILATION_CACHE_DIR where set, else
  `$XDG_CACHE_HOME/motion_ddpm_jax/jax` (XDG_CACHE_HOME defaults to ~/.cache). Where that folder cannot be
  made (a read-only home), the run goes on without a cache and says so.
- `off`: no persistent cache.
- a path: that folder, made if missing. A path that is a file, or a folder that cannot be made, is an
  error that names the flag. A remote address (`gs://bucket/jax-cache`, here or in
  JAX_COMPILATION_CACHE_DIR) is passed to jax as written.
`auto` and `off` are read in any case (OFF is off, not a folder named OFF); a folder of that name is `./off`.
In our own folder (`auto` without JAX_COMPILATION_CACHE_DIR) the cache keeps at most MAX_BYTES, unless
JAX_COMPILATION_CACHE_MAX_SIZE says otherwise: jax evicts the least recently used programs beyond that,
under a file lock (filelock), so that several processes can share the folder. A folder of the user's
keeps jax's own setting (unbounded by default): eviction there could delete what others stored.
Only programs that took at least `jax_persistent_cache_min_compile_time_secs` (jax's default, 1 s) to
compile are stored. On a GPU, jax also keeps XLA's per-fusion autotuning results there, which new
programs with the same fusions reuse.

A run of several processes on the CPU (jax.distributed with gloo collectives; the multi-host tests) keeps
no persistent cache, whatever the flag says, and says so. jax gives each process of such a run its own cache
key for the same program and only process 0 writes, so only process 0 could ever load a program, while the
others compile it and the run waits for them at its first collective: nothing to gain. And with jax 0.12.1
a program process 0 loads from the cache hangs in its first collective (gloo times out after 30 min;
a two-process `pmap(psum)` alone shows it, jax 0.10.2 does not: session 46). Runs on GPUs keep the cache.
"""

from __future__ import annotations

import collections
import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from motion_ddpm_jax.errors import UserError

FLAG = "--compile_cache"
MAX_BYTES = 4 * 2**30
_HIT = "/jax/compilation_cache/cache_hits"
_STORED = "/jax/compilation_cache/cache_misses"  # jax records it when it writes a new entry
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"
_COMPILED = "/jax/core/compile/backend_compile_duration"


def default_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """$XDG_CACHE_HOME/motion_ddpm_jax/jax, XDG_CACHE_HOME defaulting to ~/.cache (also where it is
    relative: the XDG specification says to ignore such a value, which would put the cache in the cwd)."""
    base = environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = str(Path("~").expanduser() / ".cache")
    return Path(base) / "motion_ddpm_jax" / "jax"


def is_remote(location: str | Path) -> bool:
    """A cache address that is not a local path (gs://bucket/..., which jax opens through etils): kept as
    written (a Path would turn `gs://b` into a local folder `gs:/b`) and never made here."""
    return isinstance(location, str) and "://" in location


def resolve(value: str, environ: Mapping[str, str] = os.environ) -> tuple[Path | str | None, str]:
    """(the folder to use, a remote address as written, or None; where it comes from in words) for a
    `--compile_cache` value."""
    value = value.strip()
    if not value:
        raise UserError(f"{FLAG} is empty: expected auto, off or a folder")
    if value.lower() == "off":  # OFF or Off is not a folder's name the user meant (./OFF is)
        return None, f"{FLAG}=off"
    if value.lower() == "auto":
        if location := environ.get("JAX_COMPILATION_CACHE_DIR", "").strip():
            return location if is_remote(location) else Path(location), "JAX_COMPILATION_CACHE_DIR"
        return default_dir(environ), f"{FLAG}=auto"
    return value if is_remote(value) else Path(value).expanduser(), FLAG


class Counts:
    """What the cache did in this process, from jax's monitoring events (listeners stay registered for the
    process's life; `enable` registers them once)."""

    def __init__(self):
        self.events = collections.Counter()
        self.seconds = collections.Counter()

    def on_event(self, event: str, **_) -> None:
        if event in (_HIT, _STORED):
            self.events[event] += 1

    def on_duration(self, event: str, duration: float, **_) -> None:
        if event in (_SAVED, _COMPILED):
            self.seconds[event] += duration
            self.events[event] += 1


_counts: Counts | None = None
_folder: Path | str | None = None
_source = ""


def enable(value: str, environ: Mapping[str, str] = os.environ, note=None) -> str:
    """Point jax's persistent cache at the folder `value` resolves to (before the first compilation) and
    start counting hits; returns what is in effect, in words. Where a multi-process CPU run keeps no cache,
    process 0 also says so through `note`."""
    global _counts, _folder, _source
    import jax

    folder, source = resolve(value, environ)
    processes = 1 if folder is None else _cpu_processes()
    if processes > 1:
        folder = None
        source = (
            f"{source} is not used by a run of {processes} processes on the CPU, where only process 0 "
            "could load a program (motion_ddpm_jax/compile_cache.py says why)"
        )
    if folder is not None and not is_remote(folder):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            if source == FLAG:
                raise UserError(
                    f"{FLAG}={value}: cannot use {folder} as the cache folder: {error}"
                ) from error
            folder, source = None, f"none: {folder} cannot be made ({error.strerror or error})"
    jax.config.update("jax_compilation_cache_dir", None if folder is None else str(folder))
    if folder is not None and source == f"{FLAG}=auto" and "JAX_COMPILATION_CACHE_MAX_SIZE" not in environ:
        if importlib.util.find_spec("filelock") is not None:  # jax needs it to evict
            jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
        else:
            source += "; unbounded: filelock is not installed"
    if _counts is None:
        _counts = Counts()
        jax.monitoring.register_event_listener(_counts.on_event)
        jax.monitoring.register_event_duration_secs_listener(_counts.on_duration)
    _folder, _source = folder, source
    if note is not None and processes > 1 and jax.process_index() == 0:
        note(describe())
    return describe()


def _cpu_processes() -> int:
    """How many processes this run joined (jax.distributed) where its devices are CPUs; else 1."""
    import jax

    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        return 1
    return jax.process_count() if jax.default_backend() == "cpu" else 1


def describe() -> str:
    if _folder is None:
        return f"compilation cache: none ({_source or 'not enabled'})"
    return f"compilation cache: {_folder} ({_source})"


def summary() -> str | None:
    """One line: the folder, programs loaded from it and stored in it, and compile time spent and saved;
    None where this process compiled and loaded nothing (or `enable` was not called)."""
    if _counts is None:
        return None
    events, seconds = _counts.events, _counts.seconds
    if not (events[_HIT] or events[_COMPILED]):
        return None
    return (
        f"{describe()}: {events[_HIT]} program(s) loaded ({seconds[_SAVED]:.1f} s of compiling saved), "
        f"{events[_STORED]} stored; {seconds[_COMPILED]:.1f} s spent compiling"
    )
