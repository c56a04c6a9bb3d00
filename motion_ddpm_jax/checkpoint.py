"""Orbax checkpoints: save and resume a run, and restore what sampling needs from a checkpoint folder alone.

Layout: `<workdir>/checkpoints/<step>/` with four items, so that each reader restores only its part:
- `params`: the raw parameters;
- `ema_params`: the debiased EMA parameters (what sampling uses by default);
- `train_state`: step, optimizer state, EMA state and RNG key data (what resuming adds);
- `metadata`: JSON with the config, normalisation statistics, skeleton, tokenizer and dataset facts, and
  the sha256 of every array of the three array items (`DIGESTS`).
Arrays are saved unreplicated as host arrays, so a checkpoint restores on any number of devices. Orbax
writes each step under a temporary name and renames it when complete: a run killed while saving leaves
the previous checkpoint usable, and the partial one is removed when a run next opens the folder to write
(readers, `read_only=True`, see past it and leave it).

Orbax checks its own index and manifest files, not the arrays' bytes: a changed byte in a data file (a
bad disk or copy, files of another checkpoint put in its place) restored silently as other values, and a
resume from it trained on without a word. So each restore compares every array with the sha256 saved
with it, and a difference is an error that names the arrays (checkpoints written before the digests are
restored unchecked).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from motion_ddpm_jax.errors import UserError

ITEMS = ("params", "ema_params", "train_state", "metadata")
ARRAY_ITEMS = ("params", "ema_params", "train_state")
# Key of the metadata JSON that holds, per array item, [tree path, sha256] of each array in tree order.
# Added by `save` and taken out again by the readers: callers never see it.
DIGESTS = "array_sha256"


class CheckpointError(UserError):
    """A checkpoint folder is missing, empty, incomplete or from an incompatible run."""


class ChecksumMismatch(ValueError):
    """Arrays restored from a checkpoint differ from the sha256 saved with them. `restore_run` words it as
    a CheckpointError (`damaged`); `restore_params` raises it as it is, for its caller to name the way to
    another checkpoint (sampling's step option), as it does for Orbax's own read errors."""


def _sha256(leaf) -> str:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashlib.sha256(f"{array.dtype.name}{array.shape}".encode())
    digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def array_digests(tree) -> list[list[str]]:
    """[tree path, sha256 hex] of each array of `tree`, in tree order: the hash of its dtype, shape and
    bytes (C order), so that any change of a value, even of one bit, changes it. Hashed on up to 8 threads
    (hashlib releases the GIL): one copy of the base config's 87M float32 parameters took 0.44 s on a
    busy 2-core machine, and a save hashes about five (parameters, EMA, Adam's two moments, EMA state)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(_sha256, [leaf for _, leaf in leaves]))
    return [[jax.tree_util.keystr(path), digest] for (path, _), digest in zip(leaves, digests, strict=True)]


def _check_digests(name: str, tree, saved: Any) -> None:
    """ChecksumMismatch where the arrays of item `name` differ from the digests `saved` with them (None:
    a checkpoint from before digests, not checked)."""
    if saved is None:
        return
    if not isinstance(saved, list) or not all(
        isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        for entry in saved
    ):
        raise ChecksumMismatch(f"{name}: the sha256 list saved with it in the metadata is not readable")
    got = array_digests(tree)
    if len(saved) != len(got):
        raise ChecksumMismatch(f"{name}: {len(got)} arrays restored where {len(saved)} were saved")
    changed = [path for (path, want), (_, have) in zip(saved, got, strict=True) if want != have]
    if changed:
        raise ChecksumMismatch(
            f"{name}: {len(changed)} of {len(got)} arrays differ from the sha256 saved with them "
            f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): their bytes changed on disk "
            "after the save"
        )


def _split_digests(metadata: Any) -> tuple[Any, dict[str, Any]]:
    """(metadata without `DIGESTS`, the digests per item: empty for a checkpoint from before them)."""
    if not isinstance(metadata, dict) or DIGESTS not in metadata:
        return metadata, {}
    metadata = dict(metadata)
    digests = metadata.pop(DIGESTS)
    if not isinstance(digests, dict):
        raise ChecksumMismatch(f"the metadata's {DIGESTS} is {type(digests).__name__}, expected an object")
    return metadata, digests


def _closed_loop_report(unraisable) -> bool:
    return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == (
        "Event loop is closed"
    )


def drop_closed_loop_reports() -> None:
    """When a read or write of a checkpoint fails (a damaged file, a full disk), TensorStore's other
    operations still in flight complete into the event loop Orbax has closed, and each reports
    `RuntimeError: Event loop is closed` through `sys.unraisablehook`: up to a few dozen tracebacks before
    and after the one-line error. Installed when a Checkpointer is made (the reports come from threads,
    before and after the failure reaches Python): those reports alone are dropped, every other goes to the
    hook that was there."""
    if getattr(sys.unraisablehook, "_drops_closed_loop_reports", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not _closed_loop_report(unraisable):
            previous(unraisable)

    hook._drops_closed_loop_reports = True
    sys.unraisablehook = hook


def _out_of_space(error: BaseException) -> bool:
    """Whether `error`, or an error it came from, is a full disk (ENOSPC, or its message in a wrapper)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
    """<workdir>/checkpoints as an absolute path (Orbax requires one)."""
    return Path(workdir).resolve() / "checkpoints"


def _host(tree) -> Any:
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _dtype(leaf) -> np.dtype:
    """A leaf's dtype without copying it: np.asarray of a device array had fetched the whole training state
    to the host on each resume, for its dtypes alone."""
    return leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _abstract(tree) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), _dtype(x)), tree)


class _DropReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


class _DropOutOfSpaceReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not ("No space left on device" in record.getMessage() or _out_of_space(error))


_OUT_OF_SPACE_REPORTS = _DropOutOfSpaceReports()


@contextlib.contextmanager
def _quiet_out_of_space_reports():
    """Orbax's writer threads log each failed write of a full disk as an ERROR with its traceback (about
    100 lines), before the save raises and after; `save` words a full disk as one CheckpointError, so those
    records alone are dropped while it runs, and from a save that ran out of space on. Any other error is
    logged as Orbax logs it."""
    logger = logging.getLogger("absl")
    present = _OUT_OF_SPACE_REPORTS in logger.filters
    logger.addFilter(_OUT_OF_SPACE_REPORTS)
    try:
        yield
    except Exception as error:
        if _out_of_space(error):
            present = True
        raise
    finally:
        if not present:
            logger.removeFilter(_OUT_OF_SPACE_REPORTS)


@contextlib.contextmanager
def _quiet_read_only_notice():
    """Orbax logs 'Given directory is read only=...' as a WARNING for every read-only manager (what
    sampling and eval open): drop that record alone while one is made."""
    drop = _DropReadOnlyNotice()
    logger = logging.getLogger("absl")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _collective_barrier(*, key: str, timeout_ms: int) -> None:
    """Orbax's barrier for its save-in-progress flag, which every save sets at its start and clears at its
    end, as a device collective (Gloo on a CPU) instead of a barrier of the JAX coordination service.

    A process killed just before such a barrier (the test's SIGKILL as a checkpoint appeared, a node lost
    then) was noticed there only by the service's heartbeat timeout (100 s): the others then waited 80-100 s
    and stopped with JAX's heartbeat error. A collective fails as soon as the dead process's connection
    closes (at once on a CPU), as those of the train step do. Orbax keeps the coordination barrier for
    saves finished on a background thread, where two collectives could run at once; these saves are
    synchronous (`enable_async_checkpointing=False`), on the main thread. The timeout is the collective's
    own (none on a CPU): a peer that lives but never comes is ended by JAX's heartbeat check as before.
    """
    from jax.experimental import multihost_utils

    del timeout_ms
    multihost_utils.sync_global_devices(key)


def _joined_async_options() -> ocp.AsyncOptions | None:
    """Orbax's options for a process joined to others (`_collective_barrier`); None (its defaults) for a run
    of one process, whose barriers Orbax skips. Asks jax.distributed first, so that a reader of one process
    does not start a backend here."""
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        return None
    return ocp.AsyncOptions(barrier_sync_fn=_collective_barrier)


def _is_step_folder(folder: Path) -> bool:
    """Whether `folder` looks like one checkpoint's own folder: its metadata item and an array item."""
    return (folder / "metadata").is_dir() and any((folder / item).is_dir() for item in ARRAY_ITEMS)


def _held_step(folder: Path) -> int | None:
    """The step a checkpoint folder's train_state holds (that scalar alone restored), None where it cannot
    be read."""
    try:
        args = ocp.args.PyTreeRestore(item={"step": 0}, partial_restore=True)
    except TypeError:  # an Orbax of pyproject's range before `partial_restore` (0.11): the whole train_state
        args = ocp.args.PyTreeRestore()  # (had been None for every folder: a renamed copy of an earlier
        # step, no matter, refused the resume)
    reader = ocp.PyTreeCheckpointer()
    try:
        value = reader.restore(folder / "train_state", args=args)["step"]
    except Exception:  # noqa: BLE001 -- orbax and tensorstore raise many kinds; unknown is None
        return None
    finally:
        reader.close()
    read = isinstance(value, np.ndarray) and value.shape == () and np.issubdtype(value.dtype, np.integer)
    return int(value) if read else None


def misnamed_checkpoints(directory: str | os.PathLike, steps) -> list[tuple[Path, int | None]]:
    """The folders of `directory` (a run's checkpoints/) that hold a checkpoint under a name Orbax does not
    read as a step (`best`, `0020`, `20.bak`: a folder renamed, or copied in so), each with the step its
    train_state holds (None where unreadable); `steps`: those Orbax lists. Orbax reads checkpoints/<step>
    alone: such a folder is invisible to it, and a run holding no other had been resumed from step 0 (its
    metrics.jsonl rows dropped) and sampled as 'holds no complete checkpoint'. Orbax's own folders of a
    save cut off (`<step>.orbax-checkpoint-tmp-*`, which a writer removes) are not among them."""
    named = {str(step) for step in steps}
    # (a folder named as a step that Orbax does not list, e.g. a copy cut short, is not renamed: what
    # reads the run names it as damaged, or goes back to the earlier steps, as before)

    def holds_one(folder: Path) -> bool:
        try:
            return folder.is_dir() and _is_step_folder(folder)
        except OSError:  # one this user cannot look into (chmod 000, another user's): not known to hold one
            return False  # (Path.is_dir raises PermissionError of what is inside it: a traceback had ended
            # every resume of such a run, and sampling's 'holds no complete checkpoint')

    try:
        folders = sorted(Path(directory).iterdir())
    except OSError:
        return []
    return [
        (p, _held_step(p))
        for p in folders
        if p.name not in named
        and not (p.name.isdigit() and str(int(p.name)) == p.name)
        and ".orbax-checkpoint-tmp" not in p.name
        and holds_one(p)
    ]


def misnamed_note(directory: str | os.PathLike, found: list[tuple[Path, int | None]]) -> str:
    """What `misnamed_checkpoints` found, and the renaming that makes each readable."""
    shown = ", ".join(p.name + (f" (training step {s})" if s is not None else "") for p, s in found[:5])
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    first = {s: p for p, s in reversed(found) if s is not None}  # one folder per step: mv's target is one
    moves = [f"mv {p} {Path(directory) / str(s)}" for s, p in sorted(first.items(), reverse=True)[:3]]
    how = f" (`{'`, `'.join(moves)}`)" if moves else ""
    return (
        f"{directory} holds checkpoint folders under names that are not a step: {shown}{more}; a checkpoint "
        f"is read from checkpoints/<step> alone, its step number as the folder's name: rename it so{how}"
    )


class Checkpointer:
    """Saves and restores the checkpoints of one run folder. In a multi-host run every process makes one
    and calls `save` with the same step, as train.run does: Orbax's save synchronises the processes (a
    `save` on process 0 alone would wait for the others) and decides which of them writes what."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int | None = 3, read_only: bool = False):
        try:
            self._open(workdir, max_to_keep, read_only)
        except PermissionError as error:  # from the folder, its listing for the hints, or Orbax's
            directory = checkpoint_dir(workdir)
            way_on = (
                "give a --workdir you can read, or have its owner grant read access (chmod -R a+rX on it)"
                if read_only
                else "give a --workdir you can write to"
            )
            raise CheckpointError(
                f"{error.filename or directory}: {error.strerror or 'permission denied'}: the checkpoints in "
                f"{directory} cannot be {'read' if read_only else 'read and written'} here; {way_on}"
            ) from None

    def _open(self, workdir: str | os.PathLike, max_to_keep: int | None, read_only: bool) -> None:
        self.directory = checkpoint_dir(workdir)
        if read_only and not self.directory.is_dir():
            given = Path(os.path.abspath(workdir))
            held = next((p for p in (given, given.parent) if p.name == "checkpoints" and p.is_dir()), None)
            steps = held is not None and any(p.name.isdigit() and p.is_dir() for p in held.iterdir())
            # A checkpoint's folder copied on its own (`cp -r runs/demo/checkpoints/2000 ~/model`), or a
            # folder of them, had been told to train a model first.
            loose = [] if steps or not given.is_dir() else [p for p in given.iterdir() if _is_step_folder(p)]
            if steps:
                hint = f"--workdir names the run folder that holds checkpoints/: {held.parent}"
            elif _is_step_folder(given):
                step = given.name if given.name.isdigit() else "<step>"
                hint = (
                    "this is one checkpoint's own folder; sampling, eval and train.init_from read a run "
                    "folder, which holds it as "
                    f"checkpoints/<step>/: copy it to <run>/checkpoints/{step} and give <run>"
                )
            elif loose:
                names = sorted((p.name for p in loose), key=lambda name: (len(name), name))
                hint = (
                    f"it holds checkpoint folders ({', '.join(names[:5])}) directly; a run folder holds them "
                    f"in checkpoints/: move them into {self.directory}"
                )
            elif str(workdir).startswith("~") and checkpoint_dir(os.path.expanduser(workdir)).is_dir():
                # launch.py expands it (as a shell would); a path given from Python is taken as written
                hint = (
                    f"a leading ~ is not your home folder in a path given from Python: pass "
                    f"os.path.expanduser({str(workdir)!r})"
                )
            else:
                hint = "train a model into this workdir first"
            raise CheckpointError(f"{self.directory}: no checkpoint folder ({hint})")
        options = ocp.CheckpointManagerOptions(
            # A reader keeps and saves nothing (Orbax warns where these say otherwise).
            max_to_keep=None if read_only else max_to_keep,
            save_interval_steps=0 if read_only else 1,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=False,
            # A checkpoint killed mid-write stays under a temporary name (Orbax renames it when complete):
            # the next writer removes it. Readers leave it alone.
            cleanup_tmp_directories=not read_only,
            async_options=_joined_async_options(),
        )
        with _quiet_read_only_notice():  # a reader asked for it: not worth a WARNING on the user's console
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        drop_closed_loop_reports()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, ema_params, train_state, metadata: dict[str, Any]) -> None:
        """Write checkpoint `step` (host copies of unreplicated trees) and wait until it is on disk; the
        metadata gets the sha256 of every array (`DIGESTS`), which the readers check."""
        arrays = dict(zip(ARRAY_ITEMS, (_host(params), _host(ema_params), _host(train_state)), strict=True))
        metadata = {**metadata, DIGESTS: {name: array_digests(tree) for name, tree in arrays.items()}}
        args = ocp.args.Composite(
            **{name: ocp.args.StandardSave(tree) for name, tree in arrays.items()},
            metadata=ocp.args.JsonSave(metadata),
        )
        try:
            with _quiet_out_of_space_reports():
                self.manager.save(int(step), args=args, force=True)
                self.manager.wait_until_finished()
        except Exception as error:  # a full disk comes out of Orbax's writers as many kinds of error
            if not _out_of_space(error):
                raise
            raise CheckpointError(
                f"{self.directory}/{step}: cannot be written, no space left on the device "
                f"({type(error).__name__}: {str(error)[:200]}); the checkpoints before it are intact (an "
                "unfinished one is removed on restart): free some space and start the run again to resume"
            ) from None

    def _step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: holds no complete checkpoint")
        if step is None:
            return max(steps)
        if step not in steps:
            raise CheckpointError(
                f"{self.directory}: no checkpoint at step {step}; available: {sorted(steps)}"
            )
        return step

    def damaged(self, step: int, error: Exception, what: str = "cannot be read") -> CheckpointError:
        """The error for checkpoint `step` that fails to restore: what failed, and the way back to an earlier
        checkpoint (nothing is deleted here; the user moves the damaged folder away)."""
        earlier = sorted(s for s in self.all_steps() if s < step)
        way_back = (
            f"the earlier checkpoints {earlier} are untouched: move {self.directory / str(step)} out of "
            f"{self.directory} to resume from step {earlier[-1]}"
            if earlier
            else "there is no earlier checkpoint to go back to: use a new --workdir"
        )
        return CheckpointError(
            f"{self.directory / str(step)}: {what} ({type(error).__name__}: {str(error)[:300]}); it is "
            f"damaged or incomplete (a copy cut short?), or was written by another program; {way_back}"
        )

    def restore_metadata(self, step: int | None = None) -> dict[str, Any]:
        step = self._step(step)
        try:
            args = ocp.args.Composite(metadata=ocp.args.JsonRestore())
            metadata, _ = _split_digests(self.manager.restore(step, args=args).metadata)
        except Exception as error:  # noqa: BLE001 -- orbax and the JSON reader raise many kinds
            raise self.damaged(step, error, "its metadata cannot be read") from None
        if not isinstance(metadata, dict):
            raise self.damaged(
                step, TypeError(f"metadata is {type(metadata).__name__}, expected a JSON object")
            )
        return metadata

    def restore_params(self, step: int | None = None, use_ema: bool = True) -> tuple[Any, dict[str, Any]]:
        """(parameters as host arrays, metadata) for sampling: the EMA parameters unless use_ema=False.
        Orbax's read errors and ChecksumMismatch (arrays that differ from their saved sha256) pass to the
        caller, which names the way to another checkpoint."""
        step = self._step(step)
        item = "ema_params" if use_ema else "params"
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(**{item: ocp.args.StandardRestore(), "metadata": ocp.args.JsonRestore()}),
        )
        metadata, digests = _split_digests(restored.metadata)
        _check_digests(item, restored[item], digests.get(item))
        return restored[item], metadata

    def recorded_step(self, step: int) -> int | None:
        """The step that checkpoint `step`'s train_state holds: the one training had reached when it saved
        it, which Orbax does not compare with the folder's name (a folder copied or renamed to another
        step restores as that step). None where it holds none that can be read (no train_state, or one
        without a step): sampling needs only the parameters, so that is no error here. Restores that one
        scalar alone (milliseconds), not the optimizer's and EMA's states."""
        try:
            # (in the try too: an Orbax of pyproject's range without `partial_restore` raises TypeError here,
            # which load_model would report as a damaged checkpoint)
            args = ocp.args.PyTreeRestore(item={"step": 0}, partial_restore=True)
            restored = self.manager.restore(step, args=ocp.args.Composite(train_state=args))
            value = restored["train_state"]["step"]
        except Exception:  # noqa: BLE001 -- orbax and tensorstore raise many kinds; unknown is None
            return None
        # A train_state without a step comes back with the request's placeholder (the Python 0), not an array
        read = isinstance(value, np.ndarray) and value.shape == () and np.issubdtype(value.dtype, np.integer)
        return int(value) if read else None

    def restore_run(self, step: int | None, like: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(step, {item: tree}) for resuming: every array item restored into the structure of `like`
        (a dict with params, ema_params and train_state trees of the right shapes and dtypes)."""
        step = self._step(step)
        args = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in like.items()}
        try:
            restored = self.manager.restore(
                step, args=ocp.args.Composite(**args, metadata=ocp.args.JsonRestore())
            )
            _, digests = _split_digests(restored.metadata)
        except Exception as error:  # noqa: BLE001 -- orbax and tensorstore raise many kinds
            # The caller has checked the checkpoint's config against this run's (train.check_resumable), so
            # a failure here is a damaged or incomplete checkpoint rather than another model.
            raise self.damaged(step, error, "its arrays cannot be restored into this run's model") from None
        out = {name: restored[name] for name in like}
        for name, tree in like.items():
            mismatched = [
                f"{jax.tree_util.keystr(path)}: saved {np.shape(got)} {_dtype(got)}, "
                f"expected {np.shape(want)} {_dtype(want)}"
                for (path, want), got in zip(
                    jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(out[name]), strict=True
                )
                if np.shape(got) != np.shape(want) or _dtype(got) != _dtype(want)
            ]
            if mismatched:
                raise CheckpointError(
                    f"{self.directory}/{step}: its {name} does not match this run's model or optimizer "
                    f"({'; '.join(mismatched[:3])}); was it written by another config? Use a new --workdir"
                )
        try:
            for name, tree in out.items():
                _check_digests(name, tree, digests.get(name))
        except ChecksumMismatch as error:
            raise self.damaged(step, error, "its arrays are not those saved") from None
        return step, out

    def close(self) -> None:
        self.manager.close()
