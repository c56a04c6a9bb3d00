"""Orbax checkpoints: round trips, sampling's partial restore, relative workdirs, clear errors."""

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


def test_missing_or_empty_checkpoint_folders_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint folder"):
        checkpoint.Checkpointer(tmp_path / "nothing", read_only=True)
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    reader = checkpoint.Checkpointer(tmp_path / "empty", read_only=True)
    with pytest.raises(checkpoint.CheckpointError, match="holds no complete checkpoint"):
        reader.restore_params()


def test_unknown_step_and_mismatched_structure_are_clear_errors(tmp_path):
    params, ema, state = trees(1)
    ckpt = checkpoint.Checkpointer(tmp_path)
    ckpt.save(3, params, ema, state, {})
    with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint at step 5; available: \[3\]"):
        ckpt.restore_params(step=5)
    wrong = {"params": {"dense": {"kernel": np.zeros((4, 2), np.float32), "bias": np.zeros(2, np.float32)}}}
    with pytest.raises(checkpoint.CheckpointError, match="does not match this run"):
        ckpt.restore_run(3, wrong)
