"""files.py's staged writes: what a failed, interrupted or killed write leaves (nothing), whose leftovers a
later write removes (a killed process of this host only), and errors that name the path being written.

The helpers at the top (`full_disk`, `dead_pid`, `leftover_names`) serve the writers' own tests too."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motion_ddpm_jax import files
from motion_ddpm_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# The host part of a staging name, as files.py documents it (other characters than these become "_").
HOST = files.host_id()
ENOSPC_TEXT = os.strerror(errno.ENOSPC)  # "No space left on device"


# ------------------------------------------------------------------------------------------- helpers
class _FillingFile:
    """A file object whose writes fail as on a full disk once the shared room is used up: the bytes that
    fit are written, then OSError(ENOSPC) without a file name (as write(2) reports it to Python)."""

    def __init__(self, handle, room: list[int]):
        self._handle, self._room = handle, room

    def write(self, data):
        size = len(data)
        if size > self._room[0]:
            fits = self._room[0]
            self._room[0] = 0
            if fits:
                self._handle.write(data[:fits])
            raise OSError(errno.ENOSPC, ENOSPC_TEXT)
        self._room[0] -= size
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def full_disk(monkeypatch, folder: Path, room: int = 0) -> None:
    """Make the disk under `folder` full after `room` more bytes: files opened for writing there (by open,
    io.open, pathlib, numpy, zipfile) raise OSError(ENOSPC) from the write that does not fit.
    `monkeypatch.undo()` frees it again."""
    folder = Path(os.path.abspath(folder))
    real_open, left = builtins.open, [room]

    def opening(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writes = any(flag in mode for flag in "wxa+")
        if isinstance(file, int) or not writes or not Path(os.path.abspath(file)).is_relative_to(folder):
            return handle
        return _FillingFile(handle, left)

    monkeypatch.setattr(builtins, "open", opening)
    monkeypatch.setattr(io, "open", opening)


def dead_pid() -> int:
    """The id of a process of this host that has ended (a child run and reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def leftover_names(name: str, tag: str, suffix: str = "") -> dict[str, str]:
    """Hidden staging names beside a target `name`, by whose they are: a killed process of this host's
    ("dead": a later write of the target removes it), this running process's, another host's (or another
    pid namespace's) with the same (dead) process id, another target's, and one in the naming used before
    host names were added."""
    pid = dead_pid()
    return {
        "dead": f".{name}.{tag}-{HOST}-{pid}-0123abcd{suffix}",
        "running": f".{name}.{tag}-{HOST}-{os.getpid()}-0123abcd{suffix}",
        "other host": f".{name}.{tag}-{HOST}x.cluster-{pid}-0123abcd{suffix}",
        # the same host name, another boot or pid namespace (a container numbering its own processes)
        "other namespace": f".{name}.{tag}-{HOST.rsplit('.', 1)[0]}.0000beef-{pid}-0123abcd{suffix}",
        "other target": f".{name}x.{tag}-{HOST}-{pid}-0123abcd{suffix}",
        "old naming": f".{name}.{tag}-{pid}{suffix}",
    }


def make_leftovers(folder: Path, names: dict[str, str], as_folders: bool) -> None:
    for name in names.values():
        if as_folders:
            (folder / name).mkdir()
            (folder / name / "half.npy").write_bytes(b"\x93NUMPY" + bytes(100))
        else:
            (folder / name).write_bytes(b"half a file")


def assert_only_the_dead_ones_removed(folder: Path, names: dict[str, str]) -> None:
    present = {p.name for p in folder.iterdir()}
    assert names["dead"] not in present, "a killed process's staging copy was left"
    kept = {key for key, name in names.items() if name in present}
    assert kept == set(names) - {"dead"}, f"removed what is not ours to remove: {set(names) - kept}"


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------- staging
@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, ENOSPC_TEXT), KeyboardInterrupt(), RuntimeError("a bug")]
)
def test_a_staged_folder_is_removed_when_its_write_fails_and_the_error_goes_on(tmp_path, failure):
    with pytest.raises(type(failure)):
        with files.staged_folder(tmp_path / "out") as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "a.npy").write_bytes(bytes(1000))
            raise failure
    assert list(tmp_path.iterdir()) == []


def test_a_staged_file_is_removed_when_its_write_fails(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with files.staged_file(tmp_path / "out.json") as temporary:
            temporary.write_text("{")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_staging_names_carry_host_and_process_and_keep_a_suffix_where_asked(tmp_path):
    pattern = rf"\.out\.partial-{re.escape(HOST)}-{os.getpid()}-[0-9a-f]{{8}}"
    assert re.fullmatch(pattern, files.staging_path(tmp_path / "out", "partial").name)
    first, second = (files.staging_path(tmp_path / "a.gif", "tmp", keep_suffix=True) for _ in range(2))
    assert re.fullmatch(rf"\.a\.tmp-{re.escape(HOST)}-{os.getpid()}-[0-9a-f]{{8}}\.gif", first.name)
    assert first != second  # two writes of one process (threads) never share one


def test_only_a_killed_process_of_this_host_has_its_leftovers_removed(tmp_path):
    names = leftover_names("out", "partial")
    make_leftovers(tmp_path, names, as_folders=True)
    (tmp_path / "out.partial-x").mkdir()  # a user's folder, not hidden
    with files.staged_folder(tmp_path / "out") as staging:
        staging.rename(tmp_path / "out")
    assert_only_the_dead_ones_removed(tmp_path, names)
    assert (tmp_path / "out.partial-x").is_dir() and (tmp_path / "out").is_dir()


def test_a_leftover_that_links_elsewhere_is_unlinked_not_followed(tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "keep.txt").write_text("mine")
    stale = tmp_path / "work" / f".out.partial-{HOST}-{dead_pid()}-0123abcd"
    stale.parent.mkdir()
    stale.symlink_to(tmp_path / "precious")
    assert files.remove_stale_staging(tmp_path / "work" / "out", "partial") == [stale]
    assert (tmp_path / "precious" / "keep.txt").read_text() == "mine"


KILLED_WRITER = """
import os, signal, sys
from motion_ddpm_jax import files
with files.staged_folder(sys.argv[1]) as staging:
    (staging / "half.npy").write_bytes(bytes(4096))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_folder_of_a_writer_killed_by_sigkill_is_removed_by_the_next_write(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path / "out")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    (left,) = tmp_path.iterdir()
    assert re.fullmatch(rf"\.out\.partial-{re.escape(HOST)}-\d+-[0-9a-f]{{8}}", left.name)
    with files.staged_folder(tmp_path / "out") as staging:
        staging.rename(tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ------------------------------------------------------------------------------------------- errors
def test_a_full_disk_names_the_file_of_the_target_that_failed(tmp_path):
    target = tmp_path / "ds"
    with pytest.raises(OSError) as caught:
        with files.staged_folder(target) as staging, files.writing(target, staging):
            (staging / "motions").mkdir()
            raise OSError(errno.ENOSPC, ENOSPC_TEXT)  # as write(2) reports it: no file name
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno {errno.ENOSPC}] writing {target}: {ENOSPC_TEXT}"
    assert caught.value.strerror == f"writing {target}: {ENOSPC_TEXT}"
    with pytest.raises(FileNotFoundError) as caught:  # one naming a file in the staging folder: the same
        with files.staged_folder(target) as staging, files.writing(target, staging):
            open(staging / "motions" / "a.npy", "wb")
    assert f"writing {target / 'motions' / 'a.npy'}: " in str(caught.value) and "partial" not in str(
        caught.value
    )


def test_numpys_short_write_names_the_file(tmp_path):
    path = tmp_path / "a.npy"
    with pytest.raises(OSError) as caught:
        with files.writing(path):
            raise OSError("16896 requested and 7136 written")  # numpy's tofile on a full disk
    assert str(caught.value).startswith(f"writing {path}: 16896 requested and 7136 written")
    assert "disk" in str(caught.value) and str(path) in caught.value.strerror


def test_errors_with_a_message_of_their_own_pass_unchanged(tmp_path):
    class Refused(UserError, FileExistsError):
        pass

    for error in (FileExistsError(f"{tmp_path} appeared meanwhile"), Refused("what to do")):
        with pytest.raises(type(error)) as caught:
            with files.writing(tmp_path / "x"):
                raise error
        assert caught.value is error


def test_a_real_short_write_names_the_file(tmp_path):
    """numpy on a disk that takes part of a write (RLIMIT_FSIZE: write(2) writes what fits, then EFBIG)."""
    script = """
import resource, signal, sys
import numpy as np
from motion_ddpm_jax import files
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    files.save_npy(sys.argv[1], np.zeros((1000, 64), np.float32))
except OSError as error:
    print(error)
"""
    path = tmp_path / "big.npy"
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.match(rf"writing {re.escape(str(path))}: \d+ requested and \d+ written", out), out


def test_save_json_once_on_a_full_disk_leaves_nothing_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "skeleton.json"
    full_disk(monkeypatch, tmp_path)
    with pytest.raises(OSError, match=re.escape(f"writing {path}: {ENOSPC_TEXT}")):
        files.save_json_once(path, {"a": 1}, lambda p: False, "skeleton")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    files.save_json_once(path, {"a": 1}, lambda p: False, "skeleton")
    assert json.loads(path.read_text()) == {"a": 1}


# ------------------------------------------------------------------------------------------- link_new
def test_link_new_never_replaces_a_file(tmp_path):
    (tmp_path / "new").write_text("finished")
    (tmp_path / "taken").write_text("a user's")
    with pytest.raises(FileExistsError):
        files.link_new(tmp_path / "new", tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "a user's"
    files.link_new(tmp_path / "new", tmp_path / "free")
    assert (tmp_path / "free").read_text() == "finished"


def test_link_new_without_hard_links_copies_and_leaves_no_part_on_a_full_disk(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(source), str(destination))

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "new").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "taken").write_text("a user's")
    with pytest.raises(FileExistsError):
        files.link_new(tmp_path / "new", tmp_path / "taken")
    assert (tmp_path / "taken").read_text() == "a user's"
    files.link_new(tmp_path / "new", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == (tmp_path / "new").read_bytes()
    full_disk(monkeypatch, tmp_path, room=1000)
    with pytest.raises(OSError) as caught:
        files.link_new(tmp_path / "new", tmp_path / "partial")
    assert caught.value.errno == errno.ENOSPC and not (tmp_path / "partial").exists()


def test_the_full_disk_helper_fails_numpy_and_text_writes(tmp_path, monkeypatch):
    """(The fault this file's tests inject: a write that does not fit raises ENOSPC.)"""
    full_disk(monkeypatch, tmp_path / "full", room=100)
    (tmp_path / "full").mkdir()
    with pytest.raises(OSError, match="No space"):
        np.save(tmp_path / "full" / "a.npy", np.zeros(1000))
    with pytest.raises(OSError, match="No space"):
        (tmp_path / "full" / "b.txt").write_text("x" * 1000)
    (tmp_path / "elsewhere.txt").write_text("x" * 1000)  # other folders have room


def test_writing_names_the_target_where_the_error_gives_a_descriptor_not_a_path(tmp_path):
    """An OSError whose filename is a file descriptor (os.stat(999)) came out as a TypeError from the
    rewording; it keeps its class and names the target."""
    with pytest.raises(OSError, match=rf"writing {re.escape(str(tmp_path / 'x'))}: Bad file descriptor"):
        with files.writing(tmp_path / "x"):
            os.stat(999)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_text_file_is_whole_under_its_name_or_absent(tmp_path, monkeypatch, overwrite):
    """write_text_file (the BVH and TextGrid writers) created its final name first and wrote into it: a
    kill mid-write could leave part of a file there. It now writes a staging copy and links it into
    place; on a full disk neither the name nor the copy is left, and the error names the file. An
    existing file is still refused unless overwrite, and replaced whole with it."""
    path = tmp_path / "take1.bvh"
    if overwrite:
        path.write_text("the earlier file\n")
    full_disk(monkeypatch, tmp_path, room=10)
    with pytest.raises(OSError, match=rf"writing {re.escape(str(path))}: No space left on device"):
        files.write_text_file(path, "HIERARCHY\n" + "x" * 1000, overwrite=overwrite)
    monkeypatch.undo()
    assert hidden(tmp_path) == []
    assert (path.read_text() == "the earlier file\n") if overwrite else not path.exists()
    files.write_text_file(path, "HIERARCHY\n", overwrite=overwrite)
    assert path.read_text() == "HIERARCHY\n" and hidden(tmp_path) == []
    if not overwrite:
        with pytest.raises(FileExistsError, match=r"take1\.bvh exists; pass overwrite=True"):
            files.write_text_file(path, "other\n", overwrite=False)
        assert path.read_text() == "HIERARCHY\n"
