"""Orbax checkpoints: round trips, sampling's partial restore, relative workdirs, clear errors."""

import errno
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from motion_ddpm_jax import checkpoint


def trees(seed):
    rng = np.random.default_rng(seed)
    params = {
        "dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32), "bias": np.zeros(2, np.float32)}
    }
    ema = {"dense": {"kernel": rng.normal(size=(3, 2)).astype(np.float32), "bias": np.ones(2, np.float32)}}
    state = {
        "step": np.int32(7),
        "rng": np.array([1, 2], np.uint32),
        "mu": rng.normal(size=(3,)).astype(np.float32),
    }
    return params, ema, state


def assert_tree_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_tree_equal(a[key], b[key])
        else:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_save_then_restore_every_item_with_a_relative_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params, ema, state = trees(0)
    ckpt = checkpoint.Checkpointer("runs/rel", max_to_keep=2)
    for step in (2, 4, 6):
        ckpt.save(step, params, ema, state, {"config": {"seed": 0}, "step": step})
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6  # max_to_keep
    ckpt.close()

    reader = checkpoint.Checkpointer("runs/rel", read_only=True)
    sampled, metadata = reader.restore_params()
    assert_tree_equal(sampled, ema)
    assert metadata == {"config": {"seed": 0}, "step": 6}
    raw, _ = reader.restore_params(step=4, use_ema=False)
    assert_tree_equal(raw, params)
    step, restored = reader.restore_run(None, {"params": params, "train_state": state})
    assert step == 6
    assert_tree_equal(restored["params"], params)
    assert_tree_equal(restored["train_state"], state)


def test_a_reader_puts_no_warnings_on_the_console_and_keeps_every_checkpoint(tmp_path, caplog):
    """Sampling from Python (`sampling.load_model`) opens a read-only checkpointer: Orbax's three
    WARNINGs about read-only options are not the user's problem; a reader deletes nothing."""
    params, ema, state = trees(1)
    writer = checkpoint.Checkpointer(tmp_path, max_to_keep=5)
    for step in (1, 2, 3):
        writer.save(step, params, ema, state, {"step": step})
    writer.close()
    with caplog.at_level("WARNING"):
        reader = checkpoint.Checkpointer(tmp_path, read_only=True)
        reader.restore_params()
    assert not [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert reader.all_steps() == [1, 2, 3]


def test_missing_or_empty_checkpoint_folders_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint folder"):
        checkpoint.Checkpointer(tmp_path / "nothing", read_only=True)
    (tmp_path / "mine" / "checkpoints").mkdir(parents=True)  # a folder of that name holding no steps
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint folder \(train a model into"):
        checkpoint.Checkpointer(tmp_path / "mine" / "checkpoints", read_only=True)
    (tmp_path / "empty" / "checkpoints" / "300").mkdir(parents=True)
    for given in ("empty/checkpoints/300", "empty/checkpoints"):  # a step's folder, not the run's
        with pytest.raises(
            checkpoint.CheckpointError, match=rf"names the run folder .*: {tmp_path / 'empty'}\)"
        ):
            checkpoint.Checkpointer(tmp_path / given, read_only=True)
    (tmp_path / "empty" / "checkpoints" / "300").rmdir()
    reader = checkpoint.Checkpointer(tmp_path / "empty", read_only=True)
    with pytest.raises(checkpoint.CheckpointError, match="holds no complete checkpoint"):
        reader.restore_params()


def _renamed_to_best(tmp_path):
    """A run's checkpoint of step 60 (its train_state holding trees' step 7) renamed checkpoints/best:
    (the checkpoints folder, the saved trees)."""
    params, ema, state = trees(2)
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(60, params, ema, state, {"step": 60})
    writer.close()
    folder = tmp_path / "run" / "checkpoints"
    (folder / "60").rename(folder / "best")
    return folder, (params, ema, state)


def test_a_renamed_checkpoint_folders_step_is_read_by_an_orbax_without_partial_restore(tmp_path, monkeypatch):
    """pyproject admits Orbax 0.11, whose PyTreeRestore has no `partial_restore` (a TypeError): the step a
    renamed checkpoint folder holds had been None there for every folder, and a resume beside a renamed
    copy of an earlier step, no matter, was refused. It restores the whole train_state there."""
    import orbax.checkpoint as ocp

    folder, _ = _renamed_to_best(tmp_path)
    current = ocp.args.PyTreeRestore

    def orbax_0_11(*args, **kwargs):  # PyTreeRestoreArgs of orbax-checkpoint 0.11.0: no such field
        if "partial_restore" in kwargs:
            raise TypeError("__init__() got an unexpected keyword argument 'partial_restore'")
        return current(*args, **kwargs)

    monkeypatch.setattr(ocp.args, "PyTreeRestore", orbax_0_11)
    assert checkpoint.misnamed_checkpoints(folder, []) == [(folder / "best", 7)]  # trees' step 7


def test_a_checkpoint_folder_renamed_in_its_run_is_named_with_its_step(tmp_path):
    """A run's checkpoint folder renamed (`checkpoints/best`, zero-padded `0020`) is invisible to Orbax,
    which reads checkpoints/<step> alone: sampling had said "holds no complete checkpoint" of a folder
    holding one. Now it names the folder, the training step its train_state holds (the 7 saved here, not
    the folder's 60) and the renaming; Orbax's own leftover of a save cut off is not named. Renamed as
    said, it restores the parameters saved."""
    from motion_ddpm_jax import sampling

    folder, (params, _, _) = _renamed_to_best(tmp_path)
    shutil.copytree(folder / "best", folder / "70.orbax-checkpoint-tmp-1234")  # a save cut off: not named
    with pytest.raises(checkpoint.CheckpointError) as caught:
        sampling.load_model(tmp_path / "run")
    message = str(caught.value)
    assert "holds no complete checkpoint" in message and "best (training step 7)" in message
    assert f"`mv {folder / 'best'} {folder / '7'}`" in message and "orbax-checkpoint-tmp" not in message
    assert checkpoint.misnamed_checkpoints(folder, [60]) == [(folder / "best", 7)]
    (folder / "best").rename(folder / "0007")
    assert [(p.name, s) for p, s in checkpoint.misnamed_checkpoints(folder, [])] == [("0007", 7)]
    (folder / "0007").rename(folder / "7")
    assert checkpoint.misnamed_checkpoints(folder, [7]) == []
    reader = checkpoint.Checkpointer(tmp_path / "run", read_only=True)
    assert reader.latest_step() == 7
    restored, _ = reader.restore_params(use_ema=False)
    reader.close()
    assert_tree_equal(restored, params)


def test_a_folder_it_cannot_look_into_beside_the_checkpoints_is_passed_over(tmp_path, monkeypatch):
    """A folder of checkpoints/ this user cannot look into (chmod 000, another user's) is not known to hold
    a checkpoint: the search for renamed checkpoint folders had raised PermissionError of what is inside
    it (Path.is_dir raises it), a traceback ending every resume of the run and sampling's 'holds no
    complete checkpoint'. It is passed over; a renamed checkpoint beside it is still named."""
    from motion_ddpm_jax import sampling

    folder, _ = _renamed_to_best(tmp_path)
    locked = folder / "locked"
    (locked / "metadata").mkdir(parents=True)
    locked.chmod(0)
    if os.geteuid() == 0:  # root looks into any folder: the kernel's refusal as another user gets it
        real_stat = os.stat

        def stat(path, *args, **kwargs):
            if locked in Path(os.fspath(path)).parents:
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)
    try:
        with pytest.raises(PermissionError):  # what the folder does to a look inside it
            (locked / "metadata").is_dir()
        assert checkpoint.misnamed_checkpoints(folder, []) == [(folder / "best", 7)]  # trees' step 7
        expected = r"holds no complete checkpoint; .*: best \(training step 7\); "  # locked: not named
        with pytest.raises(checkpoint.CheckpointError, match=expected):
            sampling.load_model(tmp_path / "run")
    finally:
        monkeypatch.undo()
        locked.chmod(0o755)


def test_a_checkpoint_folder_copied_out_of_its_run_is_named_as_such(tmp_path, monkeypatch):
    """`cp -r runs/demo/checkpoints/60 ~/model` (or a folder of such step folders) then sampling from it:
    the error had said "train a model into this workdir first" of a folder holding a whole checkpoint, and
    of "~/run" from Python (not expanded there, unlike launch.py's --workdir)."""
    params, ema, state = trees(1)
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(60, params, ema, state, {"step": 60})
    writer.close()
    shutil.copytree(tmp_path / "run" / "checkpoints" / "60", tmp_path / "model")
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"one checkpoint's own folder; sampling, eval and train\.init_from read a run folder"
        r".*<run>/checkpoints/<step>",
    ):
        checkpoint.Checkpointer(tmp_path / "model", read_only=True)
    shutil.copytree(tmp_path / "run" / "checkpoints" / "60", tmp_path / "steps" / "60")
    with pytest.raises(
        checkpoint.CheckpointError,
        match=rf"holds checkpoint folders \(60\) directly.*into {tmp_path / 'steps' / 'checkpoints'}\)",
    ):
        checkpoint.Checkpointer(tmp_path / "steps", read_only=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "steps")
    with pytest.raises(checkpoint.CheckpointError, match=r"pass os.path.expanduser\('~/run'\)"):
        checkpoint.Checkpointer("~/run", read_only=True)
    (tmp_path / "steps" / "checkpoints").mkdir()  # as the message says: then it reads
    (tmp_path / "steps" / "60").rename(tmp_path / "steps" / "checkpoints" / "60")
    reader = checkpoint.Checkpointer(tmp_path / "steps", read_only=True)
    assert_tree_equal(reader.restore_params(60, use_ema=False)[0], params)
    reader.close()


def test_a_folder_that_cannot_be_read_is_a_checkpoint_error_naming_it(tmp_path, monkeypatch):
    """A run folder another user keeps unreadable (chmod 700): the hints that list a folder without
    checkpoints/ (and the check before them) raised PermissionError, not the CheckpointError naming the
    folder that sampling and eval say in one line. Denied here by the listing (root reads any folder)."""
    (tmp_path / "shut").mkdir()  # no checkpoints/: the hints list it
    params, ema, state = trees(2)
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(3, params, ema, state, {"step": 3})
    writer.close()
    denied = {tmp_path / "shut", tmp_path / "run" / "checkpoints"}
    real_iterdir, real_is_dir = Path.iterdir, Path.is_dir

    def guarded(real):
        def method(self):
            if self in denied:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self)

        return method

    monkeypatch.setattr(Path, "iterdir", guarded(real_iterdir))
    monkeypatch.setattr(Path, "is_dir", guarded(real_is_dir))
    for given, named in (
        (tmp_path / "shut", tmp_path / "shut"),
        (tmp_path / "run", tmp_path / "run" / "checkpoints"),
    ):
        with pytest.raises(checkpoint.CheckpointError) as caught:
            checkpoint.Checkpointer(given, read_only=True)
        assert str(caught.value).startswith(
            f"{named}: {os.strerror(errno.EACCES)}: the checkpoints in {given / 'checkpoints'} cannot be "
            "read here; give a --workdir you can read"
        ), caught.value


def test_a_folder_without_read_permission_is_a_checkpoint_error_naming_it(tmp_path):
    """As above, with the folders' permissions (where they hold: not for root): a run folder, and a
    checkpoints/ folder that Orbax lists."""
    params, ema, state = trees(3)
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(3, params, ema, state, {"step": 3})
    writer.close()
    (tmp_path / "shut").mkdir()
    shut = [tmp_path / "shut", tmp_path / "run" / "checkpoints"]
    for folder in shut:
        folder.chmod(0)
    try:
        if os.access(shut[0], os.R_OK):
            pytest.skip("this user reads a folder of mode 000 (root)")
        for given, named in ((shut[0], shut[0] / "checkpoints"), (tmp_path / "run", shut[1])):
            with pytest.raises(
                checkpoint.CheckpointError, match=rf"^{re.escape(str(named))}: .*cannot be read"
            ):
                checkpoint.Checkpointer(given, read_only=True)
    finally:
        for folder in shut:
            folder.chmod(0o755)


def test_unknown_step_and_mismatched_structure_are_clear_errors(tmp_path):
    params, ema, state = trees(1)
    ckpt = checkpoint.Checkpointer(tmp_path)
    ckpt.save(3, params, ema, state, {})
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint at step 5; available: \[3\]"):
        ckpt.restore_params(step=5)
    wrong = {"params": {"dense": {"kernel": np.zeros((4, 2), np.float32), "bias": np.zeros(2, np.float32)}}}
    with pytest.raises(checkpoint.CheckpointError, match="does not match this run"):
        ckpt.restore_run(3, wrong)


def _damage(folder, how):
    if how == "broken metadata JSON":
        (folder / "metadata" / "metadata").write_text('{"config": ')
    elif how == "metadata removed":
        shutil.rmtree(folder / "metadata")
    elif how == "an empty step folder":  # what an interrupted `cp -r` of a later step leaves
        folder.mkdir()
    elif how == "train_state removed":
        shutil.rmtree(folder / "train_state")
    else:  # every data file of the parameters cut to half its size
        for path in (folder / "params").rglob("*"):
            if path.is_file() and path.stat().st_size > 64 and "json" not in path.name:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "how",
    ["broken metadata JSON", "metadata removed", "an empty step folder", "train_state removed", "params cut"],
)
def test_a_damaged_latest_checkpoint_is_named_with_the_way_back_to_an_earlier_one(tmp_path, how):
    """Resuming from a damaged checkpoint: an error naming the step folder as damaged or incomplete and the
    earlier checkpoints to go back to (moving the damaged one away), not a traceback nor a config
    mismatch; nothing is deleted."""
    params, ema, state = trees(2)
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None)
    for step in (10, 20):
        ckpt.save(step, params, ema, state, {"step": step})
    ckpt.close()
    damaged = 30 if how == "an empty step folder" else 20
    _damage(tmp_path / "checkpoints" / str(damaged), how)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None)
    assert ckpt.latest_step() == damaged
    earlier = "[10]" if damaged == 20 else "[10, 20]"
    expected = rf"checkpoints/{damaged}: .*damaged or incomplete.*earlier checkpoints {re.escape(earlier)}"
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        metadata = ckpt.restore_metadata(damaged)
        ckpt.restore_run(damaged, {"params": params, "ema_params": ema, "train_state": state})
        raise AssertionError(f"restored {metadata}")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    assert ckpt.restore_metadata(10) == {"step": 10}  # the way back works


def test_a_damaged_only_checkpoint_says_there_is_no_earlier_one(tmp_path):
    params, ema, state = trees(3)
    ckpt = checkpoint.Checkpointer(tmp_path)
    ckpt.save(5, params, ema, state, {"step": 5})
    _damage(tmp_path / "checkpoints" / "5", "broken metadata JSON")
    with pytest.raises(checkpoint.CheckpointError, match="no earlier checkpoint to go back to"):
        ckpt.restore_metadata()


def test_sampling_from_a_damaged_checkpoint_names_the_intact_ones(tmp_path):
    """Parameters a resumed training never reads (sampling's EMA ones) or a copy cut short are found when
    sampling: the error had said 'is the checkpoint complete?' alone; now it names the intact steps and
    sample.checkpoint_step to pick one (here the raw parameters, cut)."""
    from motion_ddpm_jax import sampling

    params, ema, state = trees(4)
    ckpt = checkpoint.Checkpointer(tmp_path, max_to_keep=None)
    for step in (10, 20):
        ckpt.save(step, params, ema, state, {"step": step})
    ckpt.close()
    _damage(tmp_path / "checkpoints" / "20", "params cut")
    expected = (
        r"checkpoints/20: cannot be restored .*damaged or incomplete.*checkpoints \[10\] are "
        r"untouched.*--config\.sample\.checkpoint_step=10"
    )
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        sampling.load_model(tmp_path, use_ema=False)
    # bench_solvers.py picks a step with its own flag: the message names that one
    with pytest.raises(checkpoint.CheckpointError) as caught:
        sampling.load_model(tmp_path, use_ema=False, step_option="--checkpoint-step")
    assert "(--checkpoint-step=10)" in str(caught.value) and "config.sample" not in str(caught.value)


def test_a_full_disk_while_saving_is_one_error_that_says_the_earlier_checkpoints_are_intact(
    tmp_path, monkeypatch
):
    """A full disk came out of Orbax's writers as a 600-line traceback ending in another error; now a
    CheckpointError names the step and what to do, whatever error wraps the ENOSPC. Other errors pass."""
    import errno

    params, ema, state = trees(0)
    ckpt = checkpoint.Checkpointer(tmp_path / "run")
    ckpt.save(2, params, ema, state, {"step": 2})

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as disk:
            raise RuntimeError("Failed to write 22920 bytes to a tensorstore array") from disk

    monkeypatch.setattr(ckpt.manager, "save", full)
    with pytest.raises(checkpoint.CheckpointError, match=r"/4: cannot be written, no space left on the devi"):
        ckpt.save(4, params, ema, state, {"step": 4})

    def other(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(ckpt.manager, "save", other)
    with pytest.raises(RuntimeError, match="something else"):
        ckpt.save(4, params, ema, state, {"step": 4})
    ckpt.close()
    assert checkpoint.Checkpointer(tmp_path / "run", read_only=True).all_steps() == [2]


def _swap_item(source_step, target_step, item):
    """Put `item`'s folder of checkpoint `source_step` (another run's, same shapes) in place of the one of
    `target_step`: the arrays' bytes change on disk while every file Orbax checks stays consistent."""
    shutil.rmtree(target_step / item)
    shutil.copytree(source_step / item, target_step / item)


def _raw_restore(folder):
    """What Orbax itself reads from an item folder, bypassing the Checkpointer (and its digests)."""
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(folder.resolve())


def _mine_and_another_runs(tmp_path, mine: int, another: int):
    """Checkpoints 10 and 20 of trees(mine) in tmp_path/mine, 20 of trees(another) in tmp_path/other;
    returns trees(mine)."""
    params, ema, state = trees(mine)
    ckpt = checkpoint.Checkpointer(tmp_path / "mine", max_to_keep=None)
    for step in (10, 20):
        ckpt.save(step, params, ema, state, {"step": step})
    ckpt.close()
    other = checkpoint.Checkpointer(tmp_path / "other")
    other.save(20, *trees(another), {"step": 20})
    other.close()
    return params, ema, state


@pytest.mark.parametrize("item", ["params", "train_state"])
def test_arrays_changed_on_disk_are_refused_on_resume_not_restored_silently(tmp_path, item):
    """Orbax checks its index files, not the arrays' bytes: an item's data replaced by other bytes of the
    same shapes (here another run's; a flipped bit in a data file did the same) restored as other values,
    and a resume from them went on without a word. Now the sha256 saved with each array is compared."""
    params, ema, state = _mine_and_another_runs(tmp_path, 5, 6)
    damaged = tmp_path / "mine" / "checkpoints" / "20"
    _swap_item(tmp_path / "other" / "checkpoints" / "20", damaged, item)
    # The damage is real: Orbax alone reads the other run's values from this checkpoint without an error.
    raw = _raw_restore(damaged / item)
    if item == "train_state":
        assert not np.array_equal(raw["mu"], state["mu"])
    else:
        assert not np.array_equal(raw["dense"]["kernel"], params["dense"]["kernel"])
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    reader = checkpoint.Checkpointer(tmp_path / "mine", max_to_keep=None)
    expected = (
        rf"checkpoints/20: its arrays are not those saved .*{item}: \d+ of \d+ arrays differ from the "
        r"sha256 saved with them .*earlier checkpoints \[10\] are untouched"
    )
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        reader.restore_run(20, {"params": params, "train_state": state})
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing deleted
    step, restored = reader.restore_run(10, {"params": params, "train_state": state})  # the way back
    assert step == 10
    assert_tree_equal(restored["params"], params)
    assert_tree_equal(restored["train_state"], state)


def test_sampling_refuses_parameters_changed_on_disk_and_names_the_intact_step(tmp_path):
    from motion_ddpm_jax import sampling

    params, _, _ = _mine_and_another_runs(tmp_path, 7, 8)
    mine, theirs = tmp_path / "mine" / "checkpoints" / "20", tmp_path / "other" / "checkpoints" / "20"
    _swap_item(theirs, mine, "ema_params")
    expected = (
        r"checkpoints/20: cannot be restored \(ChecksumMismatch: ema_params: \d+ of 2 arrays "
        r"differ from the sha256 saved .*--config\.sample\.checkpoint_step=10"
    )
    with pytest.raises(checkpoint.CheckpointError, match=expected):
        sampling.load_model(tmp_path / "mine")
    reader = checkpoint.Checkpointer(tmp_path / "mine", read_only=True)
    raw, metadata = reader.restore_params(step=20, use_ema=False)  # the raw parameters are intact
    assert_tree_equal(raw, params)
    assert metadata == {"step": 20}  # the digests stay inside the checkpoint


def test_the_digest_of_an_array_changes_with_any_bit_dtype_or_shape():
    """Independent of Orbax: one flipped bit of any element, a reinterpreted dtype or a reshape each change
    the digest, the same values in another tree object do not."""
    rng = np.random.default_rng(9)
    base = rng.normal(size=(4, 3)).astype(np.float32)
    digest = checkpoint.array_digests({"a": base})[0][1]
    assert checkpoint.array_digests({"a": base.copy()}) == [["['a']", digest]]
    for index in range(base.size):
        flipped = base.copy().reshape(-1)
        flipped.view(np.uint32)[index] ^= np.uint32(1)  # the lowest mantissa bit
        assert checkpoint.array_digests({"a": flipped.reshape(4, 3)})[0][1] != digest
    assert checkpoint.array_digests({"a": base.view(np.int32)})[0][1] != digest
    assert checkpoint.array_digests({"a": base.reshape(3, 4)})[0][1] != digest
    assert checkpoint.array_digests({"a": base.T})[0][1] != digest  # (C order)


def test_a_checkpoint_written_before_digests_is_restored_unchecked(tmp_path, monkeypatch):
    params, ema, state = trees(10)
    ckpt = checkpoint.Checkpointer(tmp_path)
    monkeypatch.setattr(checkpoint, "array_digests", lambda tree: None)  # as the save before digests
    ckpt.save(4, params, ema, state, {"step": 4})
    monkeypatch.undo()
    metadata_file = tmp_path / "checkpoints" / "4" / "metadata" / "metadata"
    import json

    saved = json.loads(metadata_file.read_text())
    saved.pop(checkpoint.DIGESTS)
    metadata_file.write_text(json.dumps(saved))
    step, restored = ckpt.restore_run(None, {"params": params, "train_state": state})
    assert step == 4
    assert_tree_equal(restored["params"], params)
    assert ckpt.restore_params(4)[1] == {"step": 4}


def test_reports_of_tensorstore_into_a_closed_event_loop_are_dropped_and_no_other(tmp_path, monkeypatch):
    """A damaged file (or a full disk) made TensorStore's operations still in flight report `RuntimeError:
    Event loop is closed` through sys.unraisablehook, from threads, before and after the failure reached
    Python: 1 to 13 tracebacks around launch.py's one-line error (its run with a damaged checkpoint printed
    79 lines). Once a Checkpointer exists those reports go; any other still reaches the hook."""
    import sys
    import types

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_value))
    checkpoint.Checkpointer(tmp_path).close()
    closed, other = RuntimeError("Event loop is closed"), RuntimeError("something else")
    for error in (closed, other, closed):
        report = dict(exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None, object=None)
        sys.unraisablehook(types.SimpleNamespace(**report))
    assert seen == [other]


def test_orbax_logs_of_a_full_disk_are_left_to_the_one_error(tmp_path, monkeypatch, caplog):
    """Orbax's writer threads logged each write that found the disk full as an ERROR with its traceback,
    about 100 lines before and after launch.py's one-line error; those go, and any other record stays."""
    import errno
    import logging

    from absl import logging as absl_logging

    params, ema, state = trees(12)
    ckpt = checkpoint.Checkpointer(tmp_path / "run")

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as disk:
            absl_logging.exception("_SignalingThread.run() raised an exception: %s", disk)
            absl_logging.error("writing the index: RESOURCE_EXHAUSTED: No space left on device")
            absl_logging.error("something else went wrong")
            raise ValueError("RESOURCE_EXHAUSTED: Failed to write 12467 bytes") from disk

    monkeypatch.setattr(ckpt.manager, "save", full)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(checkpoint.CheckpointError, match="no space left"):
            ckpt.save(4, params, ema, state, {"step": 4})
        absl_logging.error("a writer thread, late: No space left on device")  # after the save raised
        absl_logging.error("a later, other error")
    finally:
        logging.getLogger("absl").removeFilter(checkpoint._OUT_OF_SPACE_REPORTS)
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong", "a later, other error"]


def test_the_renaming_advice_gives_one_mv_per_step_the_latest_first(tmp_path):
    """Two renamed folders holding the same step (best, copy_of_best): a second `mv` to checkpoints/4 would
    put the folder inside the first one moved there; the advice names one per step, the latest step first."""
    found = [
        (tmp_path / "best", 4),
        (tmp_path / "copy_of_best", 4),
        (tmp_path / "old", 2),
        (tmp_path / "x", None),
    ]
    note = checkpoint.misnamed_note(tmp_path, found)
    assert note.count("`mv ") == 2 and f"mv {tmp_path}/copy_of_best" not in note
    assert note.index(f"mv {tmp_path}/best {tmp_path}/4") < note.index(f"mv {tmp_path}/old {tmp_path}/2")
    assert note.count("(training step 4)") == 2


def test_a_folder_named_as_a_step_is_not_taken_for_a_renamed_one(tmp_path):
    """A folder whose name is a step that Orbax does not list (a copy cut short: what reads the run names
    it as damaged) is not a renamed checkpoint, whose advice would be `mv checkpoints/60 checkpoints/60`;
    the zero-padded 0060 is one."""
    folder, _ = _renamed_to_best(tmp_path)
    (folder / "best").rename(folder / "60")
    assert checkpoint.misnamed_checkpoints(folder, []) == []
    (folder / "60").rename(folder / "0060")
    assert checkpoint.misnamed_checkpoints(folder, []) == [(folder / "0060", 7)]  # trees' step 7
