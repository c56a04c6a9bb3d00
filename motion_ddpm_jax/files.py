"""Small file helpers shared by the writers: never overwrite a user's file by accident, and never leave a
half-written one (or its hidden staging copy) behind.

Staged writes: a writer writes its file or folder under a hidden sibling name (`staging_path`:
`.<name>.<tag>-<host>-<pid>-<random>`) and moves it into place when complete, so the final name never
holds half an output. `staged_file` / `staged_folder` remove the staging copy when the write fails or is
interrupted (a full disk, Ctrl-C), and, before writing, the staging copies of the same target left by a
process that was killed (SIGKILL, a crash): those named after this host and a process id that is no
longer running (`remove_stale_staging`). Another host's (a shared file system) and a running process's
are never touched. `writing` rewords an OSError raised meanwhile to name the path being written.
"""

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax.errors import UserError


def write_text_file(path: str | os.PathLike, text: str, overwrite: bool) -> str:
    """Create `path` holding `text`; FileExistsError if it exists, unless `overwrite` (atomic replace).
    Written first under a staging name (`staged_file`) and then linked (or renamed) into place, so `path`
    never holds part of the text, even after a kill; an OSError names `path` (`writing`)."""
    path = os.fspath(path)
    with staged_file(path) as temporary, writing(path, temporary):
        with open(temporary, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                link_new(temporary, path)
            except FileExistsError:
                raise FileExistsError(f"{path} exists; pass overwrite=True to replace it") from None
    return path


def save_json_once(
    path: str | os.PathLike,
    payload: Any,
    holds_it: Callable[[Path], bool],
    what: str,
    overwrite: bool = False,
) -> Path:
    """Write `payload` as JSON to `path` (atomically). An existing file for which `holds_it(path)` is True
    is left as it is; any other existing file raises FileExistsError unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        try:
            same = holds_it(path)
        except (ValueError, OSError):
            same = False
        if same:
            return path
        raise FileExistsError(f"{path} exists and does not hold this {what}; pass overwrite=True to replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_file(path) as temporary, writing(path, temporary):
        temporary.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of the file `path`'s bytes (read in blocks)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float as None and numpy scalars as Python numbers, for
    `json.dumps(..., allow_nan=False)`: JSON has no NaN or Infinity (Python writes them as tokens that
    strict readers, jq or JavaScript, refuse), so a diverged number is written as null."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------ staged writes
def host_id() -> str:
    """Where this process's ids mean something, as it goes into a staging name or a claim: the host's name
    (characters other than letters, digits, '.', '_' and '-' as '_') and a key of this boot and this pid
    namespace (`<name>.<8 hex>`): containers that share a host name and a volume, each numbering its own
    processes, must not take each other's running processes for gone."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"
    parts = []
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: str(os.stat("/proc/self/ns/pid").st_ino)):  # fmt: skip
        try:
            parts.append(read())
        except OSError:  # not Linux: the host's name alone
            parts.append("")
    return f"{name}.{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:8]}"


def _stem_and_suffix(target: Path, keep_suffix: bool) -> tuple[str, str]:
    return (target.stem, target.suffix) if keep_suffix else (target.name, "")


def staging_path(target: str | os.PathLike, tag: str = "tmp", keep_suffix: bool = False) -> Path:
    """A new hidden sibling of `target` to write it under before moving it into place:
    `.<name>.<tag>-<host>-<pid>-<8 hex digits>`, or `.<stem>.<tag>-<host>-<pid>-<hex><suffix>` with
    `keep_suffix` (for writers that choose the format from the suffix). Host and process id tell
    `remove_stale_staging` whose it is; the random part keeps two writes of one process apart."""
    target = Path(target)
    stem, suffix = _stem_and_suffix(target, keep_suffix)
    return target.with_name(f".{stem}.{tag}-{host_id()}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def process_is_gone(pid: int) -> bool:
    """True only where this host certainly runs no process `pid` (os.kill(pid, 0): ProcessLookupError)."""
    if os.name != "posix" or pid <= 0:  # (Windows' os.kill would end the process; 0 is a process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: another user's process, running
        return False
    return False


def remove_stale_staging(
    target: str | os.PathLike, tag: str = "tmp", keep_suffix: bool = False
) -> list[Path]:
    """Remove the staging copies of `target` (named as `staging_path(target, tag, keep_suffix)` names them)
    that a process of this host left when it was killed: those whose process id runs no process now.
    Another host's (its processes cannot be seen from here) and a running process's are left alone, as is
    anything named otherwise. Returns what was removed (a copy that cannot be removed is skipped: the
    write goes on without the space it holds)."""
    target = Path(target)
    stem, suffix = _stem_and_suffix(target, keep_suffix)
    pattern = re.compile(
        re.escape(f".{stem}.{tag}-{host_id()}-") + r"([0-9]{1,10})-[0-9a-f]{8}" + re.escape(suffix)
    )
    try:
        with os.scandir(target.parent) as entries:
            names = [entry.name for entry in entries]
    except OSError:  # no folder yet (nothing was left in it) or one that cannot be listed
        return []
    removed = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or not process_is_gone(int(match.group(1))):
            continue
        stale = target.parent / name
        _remove(stale)
        if not os.path.lexists(stale):
            removed.append(stale)
    return removed


def _remove(path: Path) -> None:
    """Remove the file or folder `path` (a link itself, never what it points to), as far as possible."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def staged_file(target: str | os.PathLike, tag: str = "tmp", keep_suffix: bool = False) -> Iterator[Path]:
    """A `staging_path` for a file that becomes `target`: removes the stale staging copies of `target`
    first (`remove_stale_staging`), yields the path (nothing is created), and removes the file there when
    the block ends, whether it was moved into place, or the block raised (a full disk, Ctrl-C)."""
    remove_stale_staging(target, tag, keep_suffix)
    staging = staging_path(target, tag, keep_suffix)
    try:
        yield staging
    finally:
        _remove(staging)


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """A new empty folder at a `staging_path` of `target` (its parent made as needed) to write `target`'s
    files into, then rename into place: removes the stale staging copies of `target` first
    (`remove_stale_staging`), and the folder with whatever it holds when the block ends while it is still
    there (the block raised: a full disk, Ctrl-C; or it moved the files elsewhere)."""
    target = Path(target)
    remove_stale_staging(target, tag)
    staging = staging_path(target, tag)
    try:
        with writing(target, staging):
            staging.mkdir(parents=True)
        yield staging
    finally:
        _remove(staging)


@contextlib.contextmanager
def writing(target: str | os.PathLike, staging: str | os.PathLike | None = None) -> Iterator[None]:
    """Raise an OSError from the block again naming the path being written: `[Errno 28] writing <path>:
    No space left on device` (same errno, so the same class). <path> is the file of `target` that failed
    where the error names one in `staging` (the staging copy of `target`, or a file in it), else `target`;
    a file elsewhere is named before the reason. numpy's short write, `16896 requested and 7136 written`
    (no errno), comes out as `writing <path>: 16896 requested and 7136 written (a short write: is the disk
    full?)`. A UserError and any other OSError without an errno pass unchanged (their messages are
    complete: FileExistsError("<path> appeared while ...")); an error reworded by an inner `writing` is
    reworded again from what it said, so the outermost one names the file."""
    target = Path(target)
    try:
        yield
    except OSError as error:
        if isinstance(error, UserError):
            raise
        if hasattr(error, "_written"):
            code, failed, reason = error._written
        elif error.errno is not None:
            code, failed, reason = error.errno, error.filename, error.strerror or str(error)
        elif re.fullmatch(r"\d+ requested and \d+ written", str(error)):  # numpy's tofile
            code, failed, reason = None, error.filename, f"{error} (a short write: is the disk full?)"
        else:
            raise
        path, elsewhere = target, None
        if not isinstance(failed, str | bytes | os.PathLike):  # None, or a file descriptor (os.stat(3))
            failed = None
        if failed is not None:
            failed = Path(os.fsdecode(failed))
            if staging is not None and failed.is_relative_to(staging):
                path = target / failed.relative_to(staging)  # (`target` itself for `staging` itself)
            elif failed != target:
                elsewhere = failed
        message = f"writing {path}: {f'{elsewhere}: ' if elsewhere else ''}{reason}"
        if code is None:
            reworded = OSError(message)
            reworded.strerror = message  # (for callers that word `error.strerror` into a message of theirs)
        else:
            reworded = OSError(code, message)  # FileNotFoundError, PermissionError ... as before
        reworded._written = (code, os.fspath(path) if elsewhere is None else elsewhere, reason)
        raise reworded from None


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save(path, array), where an OSError (a full disk, numpy's short write) names `path` (`writing`)."""
    with writing(path):
        np.save(path, array)


def link_new(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the finished file `source` the name `path` as well, never replacing anything: FileExistsError
    where `path` exists. A hard link, so `path` appears complete or not at all; on a file system without
    hard links the bytes are copied into `path` created exclusively, and `path` is removed if that fails
    (only a kill during the copy can then leave part of it)."""
    try:
        os.link(source, path)
        return
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
    with open(source, "rb") as reader, open(path, "xb") as handle:
        try:
            shutil.copyfileobj(reader, handle)
            handle.flush()
        except BaseException:
            os.remove(path)  # the file we just created, never a user's
            raise
