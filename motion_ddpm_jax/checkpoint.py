"""Orbax checkpoints: save and resume a run, and restore what sampling needs from a checkpoint folder alone.

Layout: `<workdir>/checkpoints/<step>/` with four items, so that each reader restores only its part:
- `params`: the raw parameters;
- `ema_params`: the debiased EMA parameters (what sampling uses by default);
- `train_state`: step, optimizer state, EMA state and RNG key data (what resuming adds);
- `metadata`: JSON with the config, normalisation statistics, skeleton, tokenizer and dataset facts.
Arrays are saved unreplicated as host arrays, so a checkpoint restores on any number of devices. Orbax
writes each step under a temporary name and renames it when complete: a run killed while saving leaves
the previous checkpoint usable, and the partial one is removed when the folder is next opened.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from motion_ddpm_jax.errors import UserError

ITEMS = ("params", "ema_params", "train_state", "metadata")


class CheckpointError(UserError):
    """A checkpoint folder is missing, empty, incomplete or from an incompatible run."""


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


def _abstract(tree) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


class _DropReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Given directory is read only")


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


class Checkpointer:
    """Saves and restores the checkpoints of one run folder (only process 0 should call `save` logic that
    writes files; Orbax coordinates the processes of a multi-host run itself)."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int | None = 3, read_only: bool = False):
        self.directory = checkpoint_dir(workdir)
        if read_only and not self.directory.is_dir():
            given = Path(os.path.abspath(workdir))
            held = next((p for p in (given, given.parent) if p.name == "checkpoints" and p.is_dir()), None)
            steps = held is not None and any(p.name.isdigit() and p.is_dir() for p in held.iterdir())
            hint = (
                f"--workdir names the run folder that holds checkpoints/: {held.parent}"
                if steps
                else "train a model into this workdir first"
            )
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
        )
        with _quiet_read_only_notice():  # a reader asked for it: not worth a WARNING on the user's console
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, ema_params, train_state, metadata: dict[str, Any]) -> None:
        """Write checkpoint `step` (host copies of unreplicated trees) and wait until it is on disk."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(_host(params)),
            ema_params=ocp.args.StandardSave(_host(ema_params)),
            train_state=ocp.args.StandardSave(_host(train_state)),
            metadata=ocp.args.JsonSave(metadata),
        )
        try:
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
            metadata = self.manager.restore(step, args=args).metadata
        except Exception as error:  # noqa: BLE001 -- orbax and the JSON reader raise many kinds
            raise self.damaged(step, error, "its metadata cannot be read") from None
        if not isinstance(metadata, dict):
            raise self.damaged(
                step, TypeError(f"metadata is {type(metadata).__name__}, expected a JSON object")
            )
        return metadata

    def restore_params(self, step: int | None = None, use_ema: bool = True) -> tuple[Any, dict[str, Any]]:
        """(parameters as host arrays, metadata) for sampling: the EMA parameters unless use_ema=False."""
        step = self._step(step)
        item = "ema_params" if use_ema else "params"
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(**{item: ocp.args.StandardRestore(), "metadata": ocp.args.JsonRestore()}),
        )
        return restored[item], restored.metadata

    def restore_run(self, step: int | None, like: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(step, {item: tree}) for resuming: every array item restored into the structure of `like`
        (a dict with params, ema_params and train_state trees of the right shapes and dtypes)."""
        step = self._step(step)
        args = {name: ocp.args.StandardRestore(_abstract(tree)) for name, tree in like.items()}
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as error:  # noqa: BLE001 -- orbax and tensorstore raise many kinds
            # The caller has checked the checkpoint's config against this run's (train.check_resumable), so
            # a failure here is a damaged or incomplete checkpoint rather than another model.
            raise self.damaged(step, error, "its arrays cannot be restored into this run's model") from None
        out = {name: restored[name] for name in like}
        for name, tree in like.items():
            mismatched = [
                f"{jax.tree_util.keystr(path)}: saved {np.shape(got)} {np.asarray(got).dtype}, "
                f"expected {np.shape(want)} {np.asarray(want).dtype}"
                for (path, want), got in zip(
                    jax.tree_util.tree_flatten_with_path(tree)[0], jax.tree.leaves(out[name]), strict=True
                )
                if np.shape(got) != np.shape(want) or np.asarray(got).dtype != np.asarray(want).dtype
            ]
            if mismatched:
                raise CheckpointError(
                    f"{self.directory}/{step}: its {name} does not match this run's model or optimizer "
                    f"({'; '.join(mismatched[:3])}); was it written by another config? Use a new --workdir"
                )
        return step, out

    def close(self) -> None:
        self.manager.close()
