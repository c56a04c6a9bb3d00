"""sampling: checkpoint -> motion. Each result is checked against a reference computed another way:
numpy DDIM over separate model calls, the analytic answer of a model that outputs 0, scipy's Euler angles,
the BVH reader, and a 1-device run against a 2-device one in a fresh process."""

import dataclasses
import functools
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_walk import equations
from scipy.spatial.transform import Rotation
from tiny_run import with_fast_compile

from motion_ddpm_jax import checkpoint, files, provenance, representation, sampling, text
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax import render as render_lib
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import bvh
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # diffusion steps of the tiny models
MAX_FRAMES = 16
CAPTIONS = ["wave hello", "point left"]

# Depth-first, end sites last and named <parent>_Nub, as a BVH file lists them; a non-zero root offset.
SKELETON = Skeleton(
    names=("Hips", "Spine", "Head", "Head_Nub", "Arm", "Arm_Nub"),
    parents=np.array([-1, 0, 1, 2, 1, 4]),
    offsets=np.array([[1, 2, 3], [0, 10, 0], [0, 8, 1], [0, 5, 0], [6, 1, 0], [9, 0, 0]], np.float32),
    end_sites=np.array([False, False, False, True, False, True]),
)
FEATURES = {
    "positions": 3 * SKELETON.num_joints,
    "axis_angle": 3 + 3 * len(SKELETON.rotation_joints),
    "humanml3d": 263,
}


def tiny_config(prediction="epsilon"):
    config = base_config()
    config.data.max_motion_length = MAX_FRAMES
    m = config.model
    m.latent_dim, m.num_layers, m.ff_size, m.num_heads = 16, 1, 32, 2
    m.text_max_length, m.text_latent_dim, m.text_num_layers, m.text_num_heads, m.text_ff_size = (
        8,
        16,
        1,
        2,
        32,
    )
    m.compute_dtype = "float32"
    config.diffusion.steps, config.diffusion.schedule, config.diffusion.prediction = (
        STEPS,
        "cosine",
        prediction,
    )
    config.sample.render = False
    return config


def write_checkpoint(
    workdir,
    representation="positions",
    zero_output=False,
    step=3,
    prediction="epsilon",
    latent_dim=16,
    diverged=False,
):
    """A checkpoint as train.run writes it, of an untrained tiny model (no training: fast)."""
    config = tiny_config(prediction)
    config.model.latent_dim = latent_dim
    tokenizer = text.Tokenizer.build(CAPTIONS)
    size = FEATURES[representation]
    model = model_lib.model_from_config(config, input_feats=size, text_vocab_size=tokenizer.vocab_size)
    raw = model_lib.init_params(model, jax.random.key(1))
    ema = model_lib.init_params(model, jax.random.key(2))
    if not zero_output:
        # A fresh network outputs exactly 0, and its blocks' output layers start at 0 too, so that with
        # only the last layer given weights the output ignored caption and step, and guidance tests could
        # not tell the conditional row from the unconditional one: every weight is perturbed.
        rng = np.random.default_rng(3)
        ema = jax.tree.map(
            lambda a: a + jnp.asarray(rng.normal(0, 0.2, a.shape), a.dtype) if a.ndim else a, ema
        )
    if diverged:  # what a run whose loss went to NaN leaves
        ema["out"]["bias"] = jnp.full_like(ema["out"]["bias"], jnp.nan)
    rng = np.random.default_rng(4)
    metadata = {
        "config": config.to_dict(),
        "total_steps": step,
        "steps_per_epoch": 1,
        "tokenizer": tokenizer.to_dict(),
        "mean": rng.normal(0, 2, size).tolist(),
        "std": rng.uniform(0.5, 3, size).tolist(),
        "skeleton": None if representation == "humanml3d" else SKELETON.to_dict(),
        "dataset": {},
        "representation": representation,
        "feature_size": size,
        "fps": 30.0,
    }
    ckpt = checkpoint.Checkpointer(workdir)
    ckpt.save(step, raw, ema, {"step": np.int32(step)}, metadata)
    ckpt.close()
    return raw, ema, metadata


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    out = {
        "positions": root / "positions",
        "axis_angle": root / "axis_angle",
        "zero": root / "zero",
    }
    write_checkpoint(out["positions"])
    write_checkpoint(out["axis_angle"], "axis_angle")
    write_checkpoint(out["zero"], zero_output=True)
    return out


@pytest.fixture(scope="module")
def loaded(workdirs):
    return sampling.load_model(workdirs["positions"])


def decode_positions_np(features, skeleton):
    """Reference decoder of the positions layout: root slot = translation delta, others root-relative."""
    per_joint = features.reshape(*features.shape[:-1], skeleton.num_joints, 3).astype(np.float64)
    root = np.cumsum(per_joint[..., 0, :], axis=-2)
    positions = per_joint + root[..., None, :]
    positions[..., 0, :] = root
    return positions


# ------------------------------------------------------------------------------------------ load_model
def test_load_model_restores_ema_or_raw_parameters_and_everything_sampling_needs(tmp_path):
    raw, ema, metadata = write_checkpoint(tmp_path / "run", step=7)
    loaded = sampling.load_model(tmp_path / "run")
    assert loaded.step == 7 and loaded.representation == "positions" and loaded.fps == 30.0
    np.testing.assert_array_equal(loaded.params["out"]["kernel"], ema["out"]["kernel"])
    np.testing.assert_array_equal(loaded.mean, np.float32(metadata["mean"]))
    np.testing.assert_array_equal(loaded.std, np.float32(metadata["std"]))
    assert loaded.skeleton == SKELETON and loaded.tokenizer == text.Tokenizer.build(CAPTIONS)
    assert loaded.model.input_feats == 18 and loaded.model.latent_dim == 16 and loaded.max_motion_length == 16
    assert loaded.schedule.num_steps == STEPS and loaded.prediction == "epsilon" and loaded.clip_x0 is None
    raw_loaded = sampling.load_model(tmp_path / "run", step=7, use_ema=False)
    np.testing.assert_array_equal(raw_loaded.params["text_proj"]["kernel"], raw["text_proj"]["kernel"])
    assert not np.array_equal(raw_loaded.params["text_proj"]["kernel"], ema["text_proj"]["kernel"])


def test_missing_empty_or_incomplete_checkpoints_are_checkpoint_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="nowhere"):
        sampling.load_model(tmp_path / "nowhere")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(checkpoint.CheckpointError, match="no complete checkpoint"):
        sampling.load_model(tmp_path / "empty")

    write_checkpoint(tmp_path / "run", step=5)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at step 4"):
        sampling.load_model(tmp_path / "run", step=4)
    assert sampling.load_model(tmp_path / "run", step=np.int64(5)).step == 5
    # step 5.7 had been read as checkpoint 5, and -1 as a step to look for (the config's -1 is the latest)
    for step in (5.7, 5.0, -1, True, "5"):
        with pytest.raises(
            checkpoint.CheckpointError, match=r"must be an integer >= 0, or None for the latest"
        ):
            sampling.load_model(tmp_path / "run", step=step)

    _, ema, metadata = write_checkpoint(tmp_path / "old", step=5)
    ckpt = checkpoint.Checkpointer(tmp_path / "old")
    partial = {k: v for k, v in metadata.items() if k != "tokenizer"}
    ckpt.save(6, ema, ema, {"step": np.int32(6)}, partial)
    ckpt.close()
    with pytest.raises(checkpoint.CheckpointError, match="lacks tokenizer"):
        sampling.load_model(tmp_path / "old")

    other = dict(
        metadata, config={**metadata["config"], "model": {**metadata["config"]["model"], "ff_size": 8}}
    )
    ckpt = checkpoint.Checkpointer(tmp_path / "old")
    ckpt.save(7, ema, ema, {"step": np.int32(7)}, other)
    ckpt.close()
    with pytest.raises(checkpoint.CheckpointError, match="do not match"):
        sampling.load_model(tmp_path / "old")

    broken = checkpoint.checkpoint_dir(tmp_path / "run") / "5"
    for item in (broken / "ema_params").iterdir():
        if item.is_file():
            item.unlink()
    with pytest.raises(checkpoint.CheckpointError, match=str(broken.parent)):
        sampling.load_model(tmp_path / "run")


def test_a_checkpoint_copied_to_another_steps_folder_is_reported_as_the_step_it_holds(tmp_path):
    """checkpoints/3 copied as checkpoints/9: Orbax reads the step from the folder's name, and its samples,
    index.json and eval metrics had been named step 9 without a word. The train_state's step (written as
    3 here) names it, and a warning names both. A checkpoint whose train_state holds no step, or that has
    no train_state, keeps its folder's step without a warning."""
    _, ema, _ = write_checkpoint(tmp_path / "run", step=3)
    folders = checkpoint.checkpoint_dir(tmp_path / "run")
    shutil.copytree(folders / "3", folders / "9")
    with pytest.warns(sampling.ProjectWarning) as said:
        loaded = sampling.load_model(tmp_path / "run", step=9)
    assert loaded.step == 3
    np.testing.assert_array_equal(loaded.params["out"]["kernel"], ema["out"]["kernel"])
    assert [str(w.message) for w in said] == [
        f"{folders}/9 holds the checkpoint of training step 3 (its train_state's step), not 9: a copy or "
        "renaming of checkpoint 3? Its outputs are named step 3"
    ]
    with pytest.warns(sampling.ProjectWarning, match="training step 3"):
        assert sampling.load_model(tmp_path / "run").step == 3  # the latest folder, 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sampling.load_model(tmp_path / "run", step=3).step == 3

    _, _, metadata = write_checkpoint(tmp_path / "stepless", step=4)
    ckpt = checkpoint.Checkpointer(tmp_path / "stepless")
    ckpt.save(5, ema, ema, {"rng": np.zeros(2, np.uint32)}, metadata)
    ckpt.close()
    shutil.rmtree(checkpoint.checkpoint_dir(tmp_path / "stepless") / "4" / "train_state")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sampling.load_model(tmp_path / "stepless", step=5).step == 5
        assert sampling.load_model(tmp_path / "stepless", step=4).step == 4


def test_a_checkpoint_loads_under_its_folders_step_where_orbax_cannot_restore_its_step_alone(
    tmp_path, monkeypatch
):
    """pyproject allows orbax-checkpoint >= 0.11; one whose PyTreeRestore lacks `partial_restore` raised
    TypeError from `recorded_step` before its try, which load_model reported as a damaged checkpoint: the
    step is a check, the parameters are what sampling needs. Stood in for by a PyTreeRestore that refuses
    the keyword."""
    import orbax.checkpoint as ocp

    _, ema, _ = write_checkpoint(tmp_path / "run", step=3)
    real = ocp.args.PyTreeRestore

    def older(*args, partial_restore=None, **kwargs):
        if partial_restore is not None:
            raise TypeError("__init__() got an unexpected keyword argument 'partial_restore'")
        return real(*args, **kwargs)

    monkeypatch.setattr(ocp.args, "PyTreeRestore", older)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = sampling.load_model(tmp_path / "run", step=3)
    assert loaded.step == 3
    np.testing.assert_array_equal(loaded.params["out"]["kernel"], ema["out"]["kernel"])


def test_metadata_a_model_cannot_be_sampled_from_is_a_checkpoint_error_naming_the_checkpoint(tmp_path):
    """Metadata that train.run would not write (a config without diffusion.clip_x0, a frame rate that is
    no number, a skeleton whose joints do not fit the features) had come out of load_model as a bare
    AttributeError, ValueError or TypeError (a traceback from launch.py), the skeleton's only after the
    whole sampler had run."""
    _, ema, metadata = write_checkpoint(tmp_path / "run")
    two_joints = Skeleton(
        names=("Hips", "Head"),
        parents=np.array([-1, 0]),
        offsets=np.array([[0, 0, 0], [0, 10, 0]], np.float32),
        end_sites=np.array([False, False]),
    )
    edits = {
        "diffusion.clip_x0": lambda m: m["config"]["diffusion"].pop("clip_x0"),
        "fps": lambda m: m.update(fps="thirty"),
        "fps None": lambda m: m.update(fps=None),
        "fps 0": lambda m: m.update(fps=0.0),
        "skeleton": lambda m: m.update(skeleton=two_joints.to_dict()),
    }
    for edit in edits.values():
        broken = json.loads(json.dumps(metadata))
        edit(broken)
        with pytest.raises(checkpoint.CheckpointError, match=r"^the folder/3: cannot rebuild its model"):
            sampling.loaded_from_params(ema, broken, 3, "the folder/3")
    loaded = sampling.loaded_from_params(ema, metadata, 3, "the folder/3")  # the metadata as written
    assert loaded.fps == 30.0 and loaded.clip_x0 is None and loaded.representation == "positions"


def zero_model_ddim(loaded, seed: int, index: int, length: int, steps: int) -> np.ndarray:
    """The analytic DDIM (eta 0, leading steps) sample of a zero-output epsilon model, de-standardized
    (float64 [length, D]): every step scales x_t by sqrt(abar_prev / abar_t), so the sample is x_T /
    sqrt(abar at the first step); x_T of sample `index` is normal(fold_in(fold_in(key(seed), index), 0))
    in float32, drawn at the sample's own length (partitionable threefry: a prefix of a longer draw)."""
    first_t = (steps - 1) * STEPS // steps
    abar = np.cumprod(1 - np.asarray(loaded.schedule.betas, np.float64))[first_t]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), index), 0)
    with jax.threefry_partitionable(True):
        x_T = np.asarray(jax.random.normal(key, (length, loaded.model.input_feats), jnp.float32), np.float64)
    mean, std = np.asarray(loaded.metadata["mean"]), np.asarray(loaded.metadata["std"])
    return x_T / np.sqrt(abar) * std + mean


# ------------------------------------------------------------------------------------------ generate
def test_zero_output_model_gives_the_analytic_ddim_sample_destandardized_and_masked(workdirs):
    """Epsilon prediction 0: every DDIM (eta 0) step scales x_t by sqrt(abar_prev / abar_t), so the sample
    is x_T / sqrt(abar at the first step); x_T of sample i is normal(fold_in(fold_in(key(seed), i), 0))."""
    loaded = sampling.load_model(workdirs["zero"])
    steps, seed = 3, 11  # frames and steps as in the guidance tests: the compiled sampler is shared
    out = sampling.generate(loaded, CAPTIONS, [6, 10], steps=steps, seed=seed)

    assert out["captions"] == CAPTIONS
    np.testing.assert_array_equal(out["lengths"], [6, 10])
    assert out["motion"].shape == (2, 10, 18) and out["motion"].dtype == np.float32
    assert out["positions"].shape == (2, 10, 6, 3)
    for i, length in enumerate(out["lengths"]):
        expected = zero_model_ddim(loaded, seed, i, int(length), steps)
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-5, atol=1e-4)
        assert not out["motion"][i, length:].any() and not out["positions"][i, length:].any()
        np.testing.assert_allclose(
            out["positions"][i, :length], decode_positions_np(expected, SKELETON), rtol=1e-5, atol=1e-3
        )


def test_zero_output_model_gives_the_numpy_ddpm_chain_with_each_samples_own_step_noise(workdirs):
    """Epsilon prediction 0 through every DDPM step, against a float64 numpy chain of the posterior
    (mean coefficients and fixed-small variance from the betas; no noise at t = 0): sample i starts at
    normal(fold_in(key_i, 0)) and its step j adds normal(fold_in(fold_in(key_i, 1), j)), key_i =
    fold_in(key(seed), i). Two samples of one caption: each must get its own step noises."""
    loaded = sampling.load_model(workdirs["zero"])
    seed, captions = 5, [CAPTIONS[0], CAPTIONS[0]]
    out = sampling.generate(loaded, captions, [6, 10], sampler="ddpm", seed=seed)
    betas = np.asarray(loaded.schedule.betas, np.float64)
    abar = np.cumprod(1 - betas)
    mean, std = np.asarray(loaded.metadata["mean"]), np.asarray(loaded.metadata["std"])
    for i, length in enumerate(out["lengths"]):
        key_i = jax.random.fold_in(jax.random.key(seed), i)
        x = np.asarray(jax.random.normal(jax.random.fold_in(key_i, 0), (10, 18)), np.float64)
        loop_key = jax.random.fold_in(key_i, 1)
        for j, t in enumerate(range(STEPS - 1, -1, -1)):
            abar_prev = abar[t - 1] if t > 0 else 1.0
            x0 = x / np.sqrt(abar[t])
            x = (
                betas[t] * np.sqrt(abar_prev) / (1 - abar[t]) * x0
                + (1 - abar_prev) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * x
            )
            if t > 0:
                variance = betas[t] * (1 - abar_prev) / (1 - abar[t])
                noise = np.asarray(jax.random.normal(jax.random.fold_in(loop_key, j), (10, 18)), np.float64)
                x = x + np.sqrt(variance) * noise
        expected = x[:length] * std + mean
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=1e-3)


def test_a_samples_noise_is_its_own_whatever_jaxs_threefry_mode(workdirs):
    """A sample's starting and step noises are drawn at the longest length of its call; in JAX's
    partitionable threefry (the default) their first n rows are a draw of n rows, so a sample does not
    depend on the captions beside it. With jax_threefry_partitionable=False (the default before jax 0.5,
    a flag a user may set) they were other numbers for every longest length: a 5-frame sample beside a
    9-frame one moved by ~0.1 std on the demo. Against the numpy DDPM chain of a zero-output model with
    each sample's noises drawn at its own length."""
    loaded = sampling.load_model(workdirs["zero"])
    seed, lengths = 6, [5, 9]  # (a length no other test compiles: a fresh trace under the flag)
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        out = sampling.generate(loaded, CAPTIONS, lengths, sampler="ddpm", seed=seed)
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
    betas = np.asarray(loaded.schedule.betas, np.float64)
    abar = np.cumprod(1 - betas)
    mean, std = np.asarray(loaded.metadata["mean"]), np.asarray(loaded.metadata["std"])
    with jax.threefry_partitionable(True):
        for i, length in enumerate(lengths):
            key_i = jax.random.fold_in(jax.random.key(seed), i)
            x = np.asarray(jax.random.normal(jax.random.fold_in(key_i, 0), (length, 18)), np.float64)
            loop_key = jax.random.fold_in(key_i, 1)
            for j, t in enumerate(range(STEPS - 1, -1, -1)):
                abar_prev = abar[t - 1] if t > 0 else 1.0
                x = (
                    betas[t] * np.sqrt(abar_prev) / (1 - abar[t]) * x / np.sqrt(abar[t])
                    + (1 - abar_prev) * np.sqrt(1 - betas[t]) / (1 - abar[t]) * x
                )
                if t > 0:
                    noise = jax.random.normal(jax.random.fold_in(loop_key, j), (length, 18))
                    x = x + np.sqrt(betas[t] * (1 - abar_prev) / (1 - abar[t])) * np.asarray(
                        noise, np.float64
                    )
            np.testing.assert_allclose(out["motion"][i, :length], x * std + mean, rtol=1e-4, atol=1e-3)


def test_a_samples_noise_is_the_documented_float32_draw_with_jax_enable_x64(workdirs):
    """A notebook that turned on jax_enable_x64 (for float64 references, say) drew the starting noise
    x_T in float64 (jax.random.normal's default dtype there): other numbers for the same key, so the same
    seed gave another sample (5.8 on the demo's 88-cm figures). Against the analytic DDIM sample of a
    zero-output model (x_T / sqrt(abar at the first step)), x_T drawn in float32 as documented."""
    loaded = sampling.load_model(workdirs["zero"])
    steps, seed, lengths = 3, 13, [7, 10]
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        out = sampling.generate(loaded, CAPTIONS, lengths, steps=steps, seed=seed)
    finally:
        jax.config.update("jax_enable_x64", previous)
    for i, length in enumerate(lengths):
        expected = zero_model_ddim(loaded, seed, i, length, steps)
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-5, atol=1e-4)


def test_a_jax_without_the_threefry_switch_samples_as_ever(workdirs, monkeypatch):
    """Where a later JAX drops `jax.threefry_partitionable` (partitionable threefry being its only way),
    generate draws without the switch rather than failing: the same samples as with it."""
    loaded = sampling.load_model(workdirs["zero"])
    want = sampling.generate(loaded, CAPTIONS, [5, 9], sampler="ddpm", seed=6)["motion"]
    monkeypatch.delattr(jax, "threefry_partitionable")
    got = sampling.generate(loaded, CAPTIONS, [5, 9], sampler="ddpm", seed=6)["motion"]
    np.testing.assert_array_equal(got, want)


@functools.cache
def jitted_apply(model):
    return jax.jit(model.apply)


def reference_ddim(
    loaded, caption, length, frames, seed, index, steps, scale, spacing="leading", solver="ddim"
):
    """Deterministic DDIM in numpy from separate conditional / unconditional model calls (tokens in,
    no encode_text), guidance u + s (c - u) by hand. -> de-standardized features [length, D].
    solver='dpmpp_2m': DPM-Solver++(2M) instead (Lu et al. 2022, Algorithm 2, in lambda = log(alpha /
    sigma); the steps into t = 0 and to the clean data first order)."""
    tokens, token_mask = loaded.tokenizer.encode([caption, ""], loaded.text_max_length)
    mask = (np.arange(frames) < length)[None]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), index), 0)
    x = np.asarray(jax.random.normal(key, (frames, loaded.model.input_feats)), np.float64)[None]
    abar = np.cumprod(1 - np.asarray(loaded.schedule.betas, np.float64))
    times = [int(np.floor(i * STEPS / steps)) for i in reversed(range(steps))]
    if spacing == "trailing":  # (written out for STEPS = 12: Lin et al.'s round(12 - 12 i / steps) - 1)
        assert STEPS == 12 and steps in (3, 4)
        times = [11, 7, 3] if steps == 3 else [11, 8, 5, 2]
    apply = jitted_apply(loaded.model)
    lam = 0.5 * np.log(abar / (1 - abar))
    previous_x0 = None
    for i, (t, t_prev) in enumerate(zip(times, times[1:] + [-1], strict=True)):

        def output(row, x=x, t=t):
            return np.asarray(
                apply(
                    {"params": loaded.params},
                    jnp.asarray(x, jnp.float32),
                    jnp.array([t]),
                    tokens[row : row + 1],
                    token_mask[row : row + 1],
                    mask,
                ),
                np.float64,
            )

        eps = output(0) if scale == 1 else output(1) + scale * (output(0) - output(1))
        x0 = (x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
        a_prev = abar[t_prev] if t_prev >= 0 else 1.0
        if solver == "ddim" or t_prev <= 0:
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
        else:
            h = lam[t_prev] - lam[t]
            d = x0
            if previous_x0 is not None:
                r = (lam[t] - lam[times[i - 1]]) / h
                d = (1 + 1 / (2 * r)) * x0 - previous_x0 / (2 * r)
            x = np.sqrt((1 - a_prev) / (1 - abar[t])) * x - np.sqrt(a_prev) * (np.exp(-h) - 1) * d
        previous_x0 = x0
    return x[0, :length] * loaded.std + loaded.mean


@pytest.mark.parametrize("scale", [1.0, 2.5, 0.0])
def test_guided_ddim_matches_numpy_ddim_over_separate_conditional_and_unconditional_passes(loaded, scale):
    out = sampling.generate(loaded, CAPTIONS, [6, 10], steps=3, guidance_scale=scale, seed=5)
    for i, (caption, length) in enumerate(zip(out["captions"], out["lengths"], strict=True)):
        expected = reference_ddim(loaded, caption, length, 10, 5, i, 3, scale)
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=1e-4)


def test_trailing_ddim_matches_numpy_ddim_from_the_last_step(loaded):
    out = sampling.generate(
        loaded, CAPTIONS, [6, 10], steps=3, spacing="trailing", guidance_scale=2.5, seed=5
    )
    for i, (caption, length) in enumerate(zip(out["captions"], out["lengths"], strict=True)):
        expected = reference_ddim(loaded, caption, length, 10, 5, i, 3, 2.5, spacing="trailing")
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=1e-4)
    leading = sampling.generate(loaded, CAPTIONS, [6, 10], steps=3, guidance_scale=2.5, seed=5)
    assert np.abs(leading["motion"] - out["motion"]).max() > 1e-2  # (the spacing reached the sampler)


@pytest.mark.parametrize(("steps", "spacing"), [(4, "trailing"), (5, "leading")])
def test_guided_dpmpp_2m_matches_numpy_dpm_solver_over_separate_passes(loaded, steps, spacing):
    """4 trailing steps (11, 8, 5, 2) and 5 leading ones (9, 7, 4, 2, 0: the step into 0 first order),
    guided."""
    out = sampling.generate(
        loaded, CAPTIONS, [6, 10], sampler="dpmpp_2m", steps=steps, spacing=spacing, guidance_scale=2.5
    )
    for i, (caption, length) in enumerate(zip(out["captions"], out["lengths"], strict=True)):
        expected = reference_ddim(loaded, caption, length, 10, 0, i, steps, 2.5, spacing, solver="dpmpp_2m")
        # float32 rounding relative to the largest feature (the second-order steps extrapolate: 5e-4 of
        # 2790 measured where DDIM's 1e-4 holds)
        tolerance = 1e-6 * np.abs(expected).max()
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=tolerance)
    ddim = sampling.generate(loaded, CAPTIONS, [6, 10], steps=steps, spacing=spacing, guidance_scale=2.5)
    assert np.abs(ddim["motion"] - out["motion"]).max() > 1e-2  # (a second-order step was taken)
    with pytest.raises(UserError, match=r"sample\.eta is 0\.5 but sample\.sampler=dpmpp_2m is deterministic"):
        sampling.generate(loaded, CAPTIONS, 4, sampler="dpmpp_2m", steps=steps, eta=0.5)
    with pytest.raises(UserError, match=r"sample\.steps=1 with sample\.ddim_spacing=leading .* t=0"):
        sampling.generate(loaded, CAPTIONS, 4, sampler="dpmpp_2m", steps=1, spacing="leading")


def test_one_leading_ddim_step_is_refused_and_few_steps_are_noted(loaded):
    """One leading step is t = 0: the starting noise came back de-standardized as 'the sample'."""
    with pytest.raises(UserError, match=r"sample\.steps=1 with sample\.ddim_spacing=leading .* t=0"):
        sampling.generate(loaded, CAPTIONS[:1], 4, steps=1)
    with pytest.raises(UserError, match=r"sample\.ddim_spacing must be one of"):
        sampling.generate(loaded, CAPTIONS[:1], 4, steps=2, spacing="middle")
    abar = np.cumprod(1 - np.asarray(loaded.schedule.betas, np.float64))  # (cosine, STEPS steps)
    for steps in range(1, STEPS + 1):
        first = (steps - 1) * STEPS // steps
        settings = {"sampler": "ddim", "steps": steps, "spacing": "leading"}
        note = sampling.spacing_note(loaded, settings)
        # (one leading step is refused: no note before the refusal)
        assert (note is not None) == (steps > 1 and np.sqrt(abar[first]) > 0.1), (steps, note)
        if note:
            assert f"start at t={first}, which takes the starting noise for" in note
        assert sampling.spacing_note(loaded, {**settings, "spacing": "trailing"}) is None
    assert sampling.spacing_note(loaded, {"sampler": "ddpm", "steps": 1, "spacing": "leading"}) is None
    dpm = sampling.spacing_note(loaded, {"sampler": "dpmpp_2m", "steps": 2, "spacing": "leading"})
    assert dpm.startswith("note: 2 DPM-Solver++(2M) steps with sample.ddim_spacing=leading start at t=6")


def test_ddpm_given_ddims_settings_says_they_are_not_used_and_the_log_names_every_setting(loaded):
    """sample.sampler=ddpm with sample.steps / eta / ddim_spacing other than their defaults had sampled
    the same motion without a word (a sweep over them repeats one sample): a note names them. The log
    line names every setting the sampler reads (eta and spacing too), and none it does not."""
    from motion_ddpm_jax.config import base_config

    default = base_config().sample
    plain = {"sampler": "ddpm", "steps": default.steps, "eta": default.eta, "spacing": default.ddim_spacing}
    assert sampling.unread_settings_note(plain, loaded) is None
    note = sampling.unread_settings_note({**plain, "steps": 10, "spacing": "trailing"}, loaded)
    assert note == (
        f"note: sample.sampler=ddpm takes all {STEPS} diffusion steps, drawing the posterior's noise at "
        "each: sample.steps=10, sample.ddim_spacing='trailing' are not used (ddim's and dpmpp_2m's settings)"
    )
    assert "sample.eta=0.5 is not used" in sampling.unread_settings_note({**plain, "eta": 0.5}, loaded)
    for sampler in ("ddim", "dpmpp_2m"):
        assert sampling.unread_settings_note({**plain, "sampler": sampler, "steps": 10}, loaded) is None
    settings = {"steps": 5, "eta": 0.5, "spacing": "trailing", "guidance_scale": 2.0, "seed": 3}
    used = {s: sampling.settings_used({**settings, "sampler": s}, loaded, False) for s in sampling.SAMPLERS}
    said = {sampler: sampling.settings_text(settings) for sampler, settings in used.items()}
    assert said == {
        "ddpm": f"ddpm, {STEPS} steps, guidance 2, seed 3, raw parameters",
        "ddim": "ddim, 5 steps, eta 0.5, trailing spacing, guidance 2, seed 3, raw parameters",
        "dpmpp_2m": "dpmpp_2m, 5 steps, trailing spacing, guidance 2, seed 3, raw parameters",
    }


def test_the_settings_used_are_those_each_sampler_reads(loaded):
    """index.json and eval's report record what a sampler read: DDIM's eta and spacing, DPM-Solver++'s
    spacing (it reads no eta), and neither for DDPM, which takes every diffusion step."""
    settings = {"steps": 5, "eta": 0.5, "spacing": "trailing", "guidance_scale": 2.0, "seed": 3}
    expected = {
        "ddim": (5, 0.5, "trailing"),
        "dpmpp_2m": (5, None, "trailing"),
        "ddpm": (STEPS, None, None),
    }
    for sampler, (steps, eta, spacing) in expected.items():
        used = sampling.settings_used({**settings, "sampler": sampler}, loaded, use_ema=True)
        assert (used["steps"], used["eta"], used["ddim_spacing"]) == (steps, eta, spacing), sampler
        assert used["sampler"] == sampler and used["guidance_scale"] == 2.0 and used["seed"] == 3


def test_step_modulations_computed_in_padded_chunks_give_the_same_samples(loaded, monkeypatch):
    """5 DDIM steps with modulations prepared 2 at a time: 3 chunks, the last one padded with a step
    that must be skipped; guided, against the numpy DDIM over plain model calls."""
    monkeypatch.setattr(sampling, "MODULATION_CHUNK", 2)
    sampling._sample_function.cache_clear()  # compiled with the default chunk otherwise
    try:
        out = sampling.generate(loaded, CAPTIONS, [7, 9], steps=5, guidance_scale=2.0, seed=8)
    finally:
        sampling._sample_function.cache_clear()
    for i, (caption, length) in enumerate(zip(out["captions"], out["lengths"], strict=True)):
        expected = reference_ddim(loaded, caption, length, 9, 8, i, 5, 2.0)
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=1e-4)


class Traced(Exception):
    """Raised by RecordingModel once it has seen the first model call: tracing stops, nothing compiles."""


class RecordingModel:
    """The model, recording the batch size of the first traced denoising pass (`method=denoise`)."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def apply(self, variables, x, *args, **kwargs):
        if kwargs.get("method") is not model_lib.MotionTransformer.denoise:
            return self.model.apply(variables, x, *args, **kwargs)
        self.batches.append(x.shape[0])
        raise Traced


def test_guidance_scale_one_is_the_conditional_model_alone(loaded, monkeypatch):
    model = RecordingModel(loaded.model)
    encoder = sampling._encoder(loaded.model)  # compiled already: the text encoder is not under test here
    monkeypatch.setattr(sampling, "_encoder", lambda _: encoder)
    fresh = dataclasses.replace(loaded, model=model)
    with pytest.raises(Traced):
        sampling.generate(fresh, CAPTIONS[:1], 4, steps=2, guidance_scale=1.0)
    assert model.batches == [1]  # one example per (vmapped) sample: no unconditional half
    with pytest.raises(Traced):
        sampling.generate(fresh, CAPTIONS[:1], 4, steps=2, guidance_scale=3.0)
    assert model.batches == [1, 2]  # guided: [conditional; unconditional] in one call


def test_the_pallas_kernels_sample_what_xla_samples(tmp_path, monkeypatch):
    """The same checkpoint with model.kernels "pallas" (heads of 16, the kernels' smallest; here run in
    Pallas's interpreter: "cpu" added to the backends that take them): the guided DDIM sampler, vmapped
    over samples and scanned over steps, calls the read's and the context's kernels and samples what
    XLA's spelling samples."""
    from motion_ddpm_jax import kernels

    monkeypatch.setattr(model_lib, "PALLAS_BACKENDS", ("gpu", "cpu"))
    calls = []

    def counted(name, function):
        def call(*args, **kwargs):
            calls.append(name)
            return function(*args, **kwargs)

        return call

    for name in ("stylized_read", "key_value_context"):
        monkeypatch.setattr(kernels, name, counted(name, getattr(kernels, name)))
    write_checkpoint(tmp_path / "run", latent_dim=32)
    xla = sampling.load_model(tmp_path / "run")
    assert xla.model.kernels == "xla" and xla.model.num_heads == 2
    pallas = dataclasses.replace(xla, model=xla.model.clone(kernels="pallas"))
    theirs = sampling.generate(xla, CAPTIONS, [6, 10], steps=3, guidance_scale=2.0, seed=5)
    assert calls == []
    ours = sampling.generate(pallas, CAPTIONS, [6, 10], steps=3, guidance_scale=2.0, seed=5)
    assert {"stylized_read", "key_value_context"} <= set(calls)
    np.testing.assert_allclose(ours["motion"], theirs["motion"], rtol=1e-4, atol=1e-4)


def reference_stochastic(loaded, caption, length, seed, index, sampler, steps, eta, spacing, scale, clip):
    """DDPM (Ho et al. 2020, the posterior q(x_{t-1} | x_t, x0) with its variance beta-tilde, no noise at
    t = 0), DDIM (Song et al. 2021, eq. 12 with sigma of eq. 16) or DPM-Solver++(2M) (Lu et al. 2022,
    Algorithm 2; the steps into t = 0 and to the data first order) in float64 numpy, for any prediction
    kind: x0 = out (x0), (x - sqrt(1 - abar) out) / sqrt(abar) (epsilon), sqrt(abar) x - sqrt(1 - abar) out
    (v), clipped to [-clip, clip] with the noise estimate recomputed from it. Separate conditional /
    unconditional model calls, guidance u + s (c - u) on the model output. Sample `index`'s noises: x_T =
    normal(fold_in(key_i, 0)), step j's normal(fold_in(fold_in(key_i, 1), j)), key_i =
    fold_in(key(seed), index), drawn at the sample's own length. -> standardized x0 [length, D]."""
    tokens, token_mask = loaded.tokenizer.encode([caption, ""], loaded.text_max_length)
    mask = np.ones((1, length), bool)
    feats, kind = loaded.model.input_feats, loaded.prediction
    key_i = jax.random.fold_in(jax.random.key(seed), index)
    with jax.threefry_partitionable(True):
        x = np.asarray(jax.random.normal(jax.random.fold_in(key_i, 0), (length, feats)), np.float64)[None]

        def noise(j):
            draw = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key_i, 1), j), (1, length, feats))
            return np.asarray(draw, np.float64)

    betas = np.asarray(loaded.schedule.betas, np.float64)  # (the schedule is checked in test_diffusion)
    abar = np.cumprod(1 - betas)
    lam = 0.5 * np.log(abar / (1 - abar))
    if sampler == "ddpm":
        times = list(range(STEPS - 1, -1, -1))
    elif spacing == "leading":
        times = [int(np.floor(i * STEPS / steps)) for i in reversed(range(steps))]
    else:  # Lin et al. 2024: round(T - i T / S) - 1
        times = [int(np.floor(STEPS - i * STEPS / steps + 0.5)) - 1 for i in range(steps)]
    apply = jitted_apply(loaded.model)
    previous_x0 = None
    for j, (t, t_prev) in enumerate(zip(times, times[1:] + [-1], strict=True)):

        def output(row, x=x, t=t):
            out = apply(
                {"params": loaded.params}, jnp.asarray(x, jnp.float32), jnp.array([t]),
                tokens[row : row + 1], token_mask[row : row + 1], mask,
            )  # fmt: skip
            return np.asarray(out, np.float64)

        out = output(0) if scale == 1 else output(1) + scale * (output(0) - output(1))
        a, a_prev = abar[t], (abar[t_prev] if t_prev >= 0 else 1.0)
        x0 = {
            "x0": out,
            "epsilon": (x - np.sqrt(1 - a) * out) / np.sqrt(a),
            "v": np.sqrt(a) * x - np.sqrt(1 - a) * out,
        }[kind]
        if clip is not None:
            x0 = np.clip(x0, -clip, clip)
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        if sampler == "ddpm":
            mean = (
                np.sqrt(a_prev) * betas[t] / (1 - a) * x0 + np.sqrt(1 - betas[t]) * (1 - a_prev) / (1 - a) * x
            )
            x = mean + (np.sqrt(betas[t] * (1 - a_prev) / (1 - a)) * noise(j) if t > 0 else 0.0)
        elif sampler == "ddim":
            sigma = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * noise(j)
        elif t_prev < 0:
            x = x0
        else:
            h = lam[t_prev] - lam[t]
            d = x0
            if previous_x0 is not None and t_prev > 0:
                r = (lam[t] - lam[times[j - 1]]) / h
                d = (1 + 1 / (2 * r)) * x0 - previous_x0 / (2 * r)
            x = np.sqrt((1 - a_prev) / (1 - a)) * x - np.sqrt(a_prev) * np.expm1(-h) * d
        previous_x0 = x0
    return x[0]


@pytest.mark.parametrize(
    ("prediction", "sampler", "steps", "eta", "spacing", "scale", "clip"),
    [
        ("epsilon", "ddpm", 0, 0.0, "leading", 2.0, None),
        ("x0", "ddim", 4, 0.5, "trailing", 1.0, None),
        ("v", "ddim", 5, 0.7, "leading", 2.5, 1.5),
        ("x0", "ddpm", 0, 0.0, "leading", 0.0, 1.0),
        ("v", "dpmpp_2m", 5, 0.0, "leading", 2.5, 1.5),
    ],
)
def test_every_sampler_and_prediction_kind_matches_numpy_with_each_samples_step_noises(
    tmp_path, prediction, sampler, steps, eta, spacing, scale, clip
):
    """generate's DDPM, stochastic DDIM and DPM-Solver++(2M) with a model that depends on x_t, of each
    prediction kind, guided or not, with clip_x0 or not, against `reference_stochastic` (the other tests
    check the stochastic samplers with a zero-output model only, and x0 / v prediction not at all here).
    Two samples of one caption at lengths 6 and 10 (one call at 10 frames: the first is masked)."""
    write_checkpoint(tmp_path / "run", prediction=prediction)
    loaded = dataclasses.replace(sampling.load_model(tmp_path / "run"), clip_x0=clip)
    captions = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0]]
    out = sampling.generate(
        loaded, captions, [6, 10, 10], sampler=sampler, steps=steps or 50, eta=eta, spacing=spacing,
        guidance_scale=scale, seed=7,
    )  # fmt: skip
    worst = 0.0
    for i, (caption, length) in enumerate(zip(out["captions"], out["lengths"], strict=True)):
        expected = reference_stochastic(
            loaded, caption, length, 7, i, sampler, steps, eta, spacing, scale, clip
        )
        got = (out["motion"][i, :length].astype(np.float64) - loaded.mean) / loaded.std
        # float32 rounding through the steps; the de-standardized float32 motion adds ulp(mean) / std
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5 * max(1.0, np.abs(expected).max()))
        worst = max(worst, np.abs(got).max())
        assert not out["motion"][i, length:].any()
    assert worst > 0.3  # (the model's output reached the samples)
    if clip is not None:  # every sampler's last step returns the (clipped) x0 estimate
        assert worst <= clip + 1e-5


def test_ddim_with_every_step_and_eta_one_follows_the_ddpm_rule(loaded):
    ddpm = sampling.generate(loaded, CAPTIONS, 8, sampler="ddpm", seed=3)
    ddim = sampling.generate(loaded, CAPTIONS, 8, sampler="ddim", steps=STEPS, eta=1.0, seed=3)
    np.testing.assert_allclose(ddim["motion"], ddpm["motion"], rtol=1e-4, atol=1e-4)
    other_seed = sampling.generate(loaded, CAPTIONS, 8, sampler="ddpm", seed=4)
    assert np.all(np.abs(other_seed["motion"] - ddpm["motion"]).max(axis=(1, 2)) > 1e-2)


def test_ddim_eta_zero_is_deterministic_per_seed_and_differs_across_seeds(loaded):
    first = sampling.generate(loaded, CAPTIONS, [6, 10], steps=3, seed=1)
    again = sampling.generate(loaded, CAPTIONS, [6, 10], steps=3, seed=1)
    other = sampling.generate(loaded, CAPTIONS, [6, 10], steps=3, seed=2)
    np.testing.assert_array_equal(first["motion"], again["motion"])
    assert np.all(np.abs(first["motion"] - other["motion"]).max(axis=(1, 2)) > 1e-2)


def test_samples_do_not_depend_on_the_batch_size_and_chunks_share_one_compilation(loaded, monkeypatch):
    traces = []
    real_loop = sampling.diffusion.ddpm_sample_loop

    def counting_loop(*args, **kwargs):
        traces.append(1)
        return real_loop(*args, **kwargs)

    monkeypatch.setattr(sampling.diffusion, "ddpm_sample_loop", counting_loop)
    settings = dict(sampler="ddpm", seed=3)  # as in the DDPM test above: its compiled sampler is reused
    whole = sampling.generate(loaded, CAPTIONS, [8, 5], batch_size=64, **settings)
    traces.clear()
    chunked = sampling.generate(loaded, CAPTIONS, [8, 5], batch_size=1, **settings)  # two calls of one
    assert len(traces) <= 1  # one trace for the new batch shape (none if compiled before), not one per call
    # Programs of other batch shapes round float32 differently, compounded over the loop's steps on this
    # untrained model's motion of thousands; a sample that depended on its batch would differ by its size.
    np.testing.assert_allclose(chunked["motion"], whole["motion"], rtol=1e-4, atol=1e-5)
    # batch_size below the device count: a call of batch_size samples on as many devices (it had split
    # ceil(batch / devices) >= 1 sample onto every device, so each call held one sample per device)
    with monkeypatch.context() as patched:
        patched.setattr(sampling.jax, "local_device_count", lambda: 4)
        assert [sampling.devices_for(2, batch) for batch in (1, 2, 64)] == [1, 2, 2]
    # ... and a batch_size that is no multiple of the devices: 10 samples, batch 5, on 4 devices had run
    # calls of 8 (ceil(5 / 4) = 2 a device); never more than batch_size a call, as few calls as that allows
    assert [
        sampling.call_split(10, 5, 4),
        sampling.call_split(10, 64, 8),
        sampling.call_split(10, 12, 8),
    ] == [1, 2, 1]
    for total, batch, local in itertools.product(range(1, 13), range(1, 13), range(1, 6)):
        devices = min(local, total, batch)
        chunk = sampling.call_split(total, batch, devices) * devices
        assert chunk <= batch and (chunk >= min(total, batch) - devices + 1), (total, batch, local)
    asked, devices_for = [], sampling.devices_for
    monkeypatch.setattr(sampling, "devices_for", lambda *args: asked.append(args) or devices_for(*args))
    sampling.generate(loaded, CAPTIONS, [8, 5], batch_size=1, **settings)
    assert asked == [(2, 1)]
    np.testing.assert_array_equal(chunked["lengths"], [8, 5])
    assert not whole["motion"][1, 5:].any() and whole["motion"][1, :5].all()
    as_array = sampling.generate(loaded, CAPTIONS, np.array([8, 5]), batch_size=64, **settings)
    np.testing.assert_array_equal(as_array["motion"], whole["motion"])  # lengths as a numpy array


def test_call_plan_groups_samples_by_length_into_few_programs():
    """`call_plan` against a brute-force account of what it promises, on random lengths: every sample in
    some call (a short call repeating its last sample: grouped, the first call, of the shortest samples;
    else the last), a call's frames cover its samples, round their longest up to a bucket (the longest
    of all at most), calls in order of length, and at most T / bucket + 1 programs; one call, or
    grouping off, runs all at the longest in sample order."""
    rng = np.random.default_rng(0)
    bucket = sampling.LENGTH_BUCKET
    for _ in range(200):
        total, chunk = int(rng.integers(1, 40)), int(rng.integers(1, 12))
        lengths = rng.integers(1, 200, total)
        longest = int(lengths.max())
        plan = sampling.call_plan(lengths, chunk)
        ungrouped = sampling.call_plan(lengths, chunk, group_lengths=False)
        assert len(plan) == len(ungrouped) == -(-total // chunk)
        for calls in (plan, ungrouped):
            covered = np.concatenate([index for index, _ in calls])
            assert sorted(set(covered.tolist())) == list(range(total))
            assert all(len(index) == chunk for index, _ in calls)
            assert len(covered) - total == len(covered) - len(set(covered.tolist()))  # repeats pad one call
            short = total % chunk
            padded = [i for i, (index, _) in enumerate(calls) if len(set(index.tolist())) < chunk]
            first = calls is plan and total > chunk
            assert padded == ([] if short == 0 else [0 if first else len(calls) - 1])
            for index, _ in calls:  # a call's own samples, then repeats of its last
                distinct = len(set(index.tolist()))
                assert (index[distinct:] == index[distinct - 1]).all()
        assert [frames for _, frames in ungrouped] == [longest] * len(ungrouped)
        np.testing.assert_array_equal(ungrouped[0][0][: min(chunk, total)], np.arange(min(chunk, total)))
        if total <= chunk:
            assert [f for _, f in plan] == [longest]
            continue
        previous = 0
        for index, frames in plan:
            own = int(lengths[index].max())
            want = min(longest, (own + bucket - 1) // bucket * bucket)
            assert frames == want and frames >= own
            assert lengths[index].min() >= previous  # in order of length
            previous = own
        assert len({f for _, f in plan}) <= longest // bucket + 1


def test_calls_of_mixed_lengths_run_at_their_own_lengths_and_give_each_sample(workdirs, loaded, monkeypatch):
    """More samples than a call holds, of mixed lengths: the calls take them in order of length, each
    at its samples' longest rounded up to LENGTH_BUCKET (4 here) frames, where they had all run at the
    longest length of all (a call of 3- and 5-frame samples computed 16 frames each). Against the
    analytic DDIM sample of a zero-output model (x_T / sqrt(abar at the first step), x_T drawn at the
    sample's own length), in the order asked; and on a trained-like model, unguided and guided, both
    modes against numpy DDIM of each sample alone at its own length (`reference_ddim`)."""
    monkeypatch.setattr(sampling, "LENGTH_BUCKET", 4)
    traced = []
    real_loop = sampling.diffusion.ddim_sample_loop

    def counting_loop(schedule, denoise, x_T, *args, **kwargs):
        traced.append(x_T.shape[-2])
        return real_loop(schedule, denoise, x_T, *args, **kwargs)

    monkeypatch.setattr(sampling.diffusion, "ddim_sample_loop", counting_loop)
    zero = sampling.load_model(workdirs["zero"])
    captions, lengths = CAPTIONS + CAPTIONS + CAPTIONS[:1], [10, 3, 16, 5, 7]
    steps, seed = 4, 8  # (a step count no other test compiles: every program traced here)
    out = sampling.generate(zero, captions, lengths, steps=steps, seed=seed, batch_size=2)
    # sorted 3 (+ a repeat) | 5, 7 | 10, 16: programs of 4, 8 and 16 frames, not three of 16
    assert sorted(traced) == [4, 8, 16]
    np.testing.assert_array_equal(out["lengths"], lengths)
    assert out["captions"] == captions and out["motion"].shape == (5, 16, 18)
    for i, length in enumerate(lengths):
        expected = zero_model_ddim(zero, seed, i, length, steps)
        np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-5, atol=1e-4)
        assert not out["motion"][i, length:].any()
    traced.clear()
    grouped = sampling.generate(loaded, captions, lengths, steps=steps, seed=seed, batch_size=2)
    longest = sampling.generate(
        loaded, captions, lengths, steps=steps, seed=seed, batch_size=2, group_lengths=False
    )
    assert traced == []  # the same architecture's programs again (longest: its 16-frame one for all)
    # Both modes against numpy DDIM of each sample alone at its own length (no padded frame anywhere),
    # unguided and guided (a guided call's rows are [conditional; unconditional], masks stacked likewise).
    request = dict(steps=steps, seed=seed, batch_size=2, guidance_scale=2.5)
    guided = {
        group: sampling.generate(loaded, captions, lengths, **request, group_lengths=group)
        for group in (True, False)
    }
    for scale, outs in ((1.0, (grouped, longest)), (2.5, tuple(guided.values()))):
        for i, (caption, length) in enumerate(zip(captions, lengths, strict=True)):
            expected = reference_ddim(loaded, caption, length, length, seed, i, steps, scale)
            for out in outs:
                np.testing.assert_allclose(out["motion"][i, :length], expected, rtol=1e-4, atol=1e-4)
                assert not out["motion"][i, length:].any()
    assert np.abs(grouped["motion"]).max() > 1  # (not the zero model's samples)
    # By default grouped on a CPU only: on an accelerator a program's compile costs more than padded frames
    asked, real_plan = [], sampling.call_plan
    monkeypatch.setattr(sampling, "call_plan", lambda *args: asked.append(args[2]) or real_plan(*args))
    sampling.generate(loaded, captions, lengths, steps=steps, seed=seed, batch_size=2)
    with monkeypatch.context() as on_gpu:
        on_gpu.setattr(sampling.jax, "default_backend", lambda: "gpu")
        ungrouped = sampling.generate(loaded, captions, lengths, steps=steps, seed=seed, batch_size=2)
    assert asked == [True, False]
    np.testing.assert_array_equal(ungrouped["motion"], longest["motion"])


def test_group_lengths_is_a_bool_or_none_not_a_string(loaded):
    """generate's group_lengths is True, False or None: the string "false" (the config's spelling,
    which sampler_settings maps to False) is refused, not read as True (a non-empty string)."""
    for value in ("false", "true", 0, 1):
        with pytest.raises(sampling.SampleError, match="group_lengths must be True, False or None"):
            sampling.generate(loaded, CAPTIONS, 4, steps=2, group_lengths=value)
    assert sampling.sampler_settings(base_config().sample)["group_lengths"] is None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_frames": 0}, "sample.num_frames"),
        ({"num_frames": MAX_FRAMES + 1}, "sample.num_frames"),
        ({"num_frames": [4]}, "sample.num_frames"),
        ({"num_frames": 4.5}, "sample.num_frames"),
        ({"num_frames": np.array([4.0, 5.0])}, "sample.num_frames"),
        ({"num_frames": np.array([[4, 5]])}, "sample.num_frames"),
        ({"sampler": "euler"}, "sample.sampler"),
        ({"steps": STEPS + 1}, "sample.steps"),
        ({"num_samples": 0}, "sample.num_samples"),
        ({"eta": -1.0}, "sample.eta"),
        ({"batch_size": 0}, "sample.batch_size"),
        ({"guidance_scale": float("nan")}, "sample.guidance_scale"),
        ({"guidance_scale": -0.5}, "sample.guidance_scale"),  # config.validate refuses it too
        ({"eta": True}, "sample.eta"),
        ({"guidance_scale": True}, "sample.guidance_scale"),
    ],
)
def test_bad_requests_are_user_errors_naming_the_field(loaded, kwargs, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        sampling.generate(loaded, CAPTIONS, **{"num_frames": 4, "steps": 3, **kwargs})


def test_a_sampler_name_without_its_loop_fails_instead_of_running_ddim(loaded, monkeypatch):
    """Any name but 'ddpm' had run DDIM: a sampler added to SAMPLERS before its loop sampled DDIM."""
    monkeypatch.setattr(sampling, "SAMPLERS", (*sampling.SAMPLERS, "heun"))
    with pytest.raises(ValueError, match="sampler 'heun' has no sampling loop"):
        sampling.generate(loaded, CAPTIONS[:1], 4, sampler="heun", steps=2)


def test_guidance_from_a_model_never_trained_unconditionally_is_refused(loaded):
    """model.cond_drop_prob = 0: the empty caption's prediction was never trained, so u + s(c - u) would
    extrapolate from an untrained branch; guidance is refused naming both fields, scale 1 samples."""
    metadata = {**loaded.metadata, "config": {**loaded.metadata["config"]}}
    metadata["config"]["model"] = {**metadata["config"]["model"], "cond_drop_prob": 0.0}
    never = dataclasses.replace(loaded, metadata=metadata)
    with pytest.raises(UserError, match=r"guidance_scale is 2\.5 .* model\.cond_drop_prob=0\.0"):
        sampling.generate(never, CAPTIONS[:1], 4, steps=2, guidance_scale=2.5)
    assert sampling.generate(never, CAPTIONS[:1], 4, steps=2, guidance_scale=1.0)["motion"].shape[0] == 1


# ------------------------------------------------------------------------------------------ Euler, BVH
@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_matrix_to_euler_matches_scipy_and_survives_gimbal_lock(order):
    rotations = Rotation.random(200, random_state=0)
    angles = sampling.matrix_to_euler(rotations.as_matrix(), order)
    np.testing.assert_allclose(angles, rotations.as_euler(order, degrees=True), atol=1e-6)
    locked = Rotation.from_euler(order, [[30, 90, 40], [-70, -90, 10]], degrees=True).as_matrix()
    back = Rotation.from_euler(order, sampling.matrix_to_euler(locked, order), degrees=True).as_matrix()
    np.testing.assert_allclose(back, locked, atol=1e-6)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_matrix_to_euler_of_float32_matrices_near_gimbal_lock_gives_back_the_rotation(order):
    """The sampler's rotations are float32: within ~0.02 degrees of a1 = +-90 their rounding (1e-7) is as
    large as the entries that fix a0 and a2 apart (cos(a1) times their sines). The angles must still give
    back the matrix to float32 precision (scipy, float64), not a rotation up to 180 degrees off."""
    rng = np.random.default_rng(0)
    middles = np.repeat([90.0, -90.0, 89.99999, -89.9999, 89.99, 89.9], 50)
    angles = np.stack(
        [rng.uniform(-180, 180, middles.size), middles, rng.uniform(-180, 180, middles.size)], -1
    )
    matrices = Rotation.from_euler(order, angles, degrees=True).as_matrix().astype(np.float32)
    euler = sampling.matrix_to_euler(matrices, order)
    back = Rotation.from_euler(order, euler, degrees=True).as_matrix()
    np.testing.assert_allclose(back, matrices.astype(np.float64), atol=2e-6)
    assert np.all(np.abs(euler[:, 1]) <= 90.0)


@pytest.mark.parametrize("order", ["ZXY", "XYZ", "ZYX"])
def test_bvh_euler_channels_are_continuous_over_frames_and_the_same_rotations(order):
    """A smooth path whose first angle turns past 180 degrees and whose middle one passes 90: frame by
    frame, `matrix_to_euler` jumps (by ~180 or 360 degrees); unwrapped, every frame-to-frame step is as
    small as the path's own (<= 4 degrees here), and each frame is still the same rotation (scipy)."""
    t = np.linspace(0.0, 1.0, 60)
    path = np.stack([150.0 + 100.0 * t, 70.0 + 40.0 * t, 10.0 - 30.0 * t], axis=-1)[:, None]  # [T, 1, 3]
    matrices = Rotation.from_euler(order, path[:, 0], degrees=True).as_matrix()[:, None]
    wrapped = sampling.matrix_to_euler(matrices, order)
    assert np.abs(np.diff(wrapped, axis=0)).max() > 100  # the jumps unwrapping removes
    unwrapped = sampling.unwrap_euler(wrapped)
    assert np.abs(np.diff(unwrapped, axis=0)).max() < 4.0
    back = Rotation.from_euler(order, unwrapped[:, 0], degrees=True).as_matrix()
    np.testing.assert_allclose(back, matrices[:, 0], atol=1e-9)
    np.testing.assert_allclose(unwrapped[0], wrapped[0])  # the first frame as matrix_to_euler gives it


def run_config(**sample):
    """Frames, steps and captions as in the guidance tests above, whose compiled samplers are reused."""
    config = tiny_config()
    config.sample.update({"text": "|".join(CAPTIONS), "num_frames": 10, "steps": 3, **sample})
    return config


def test_run_writes_axis_angle_bvh_files_that_read_back_as_the_sampled_positions(workdirs, tmp_path):
    summary = sampling.run(
        run_config(num_samples=2, output_dir=str(tmp_path / "out")), workdirs["axis_angle"]
    )
    out = Path(summary["output_dir"])
    index = json.loads((out / "index.json").read_text())
    bvh_files = sorted(out.glob("*.bvh"))
    assert [p.name for p in bvh_files] == [
        "000_wave_hello_0.bvh",
        "000_wave_hello_1.bvh",
        "001_point_left_0.bvh",
        "001_point_left_1.bvh",
    ]
    for path in bvh_files:
        motion = bvh.load_bvh(path)
        assert motion.fps == 30.0 and motion.skeleton.names == SKELETON.names
        positions = np.load(out / f"{path.stem}_positions.npy")
        assert positions.shape == (10, 6, 3)
        np.testing.assert_allclose(motion.positions(), positions, atol=2e-3)
        assert index["samples"][f"{path.stem}.npy"]["files"]["bvh"] == path.name


def test_a_skeleton_a_bvh_file_cannot_hold_is_said_before_sampling_and_the_rest_is_written(
    workdirs, tmp_path, monkeypatch
):
    """A skeleton given to write_dataset may name an end site otherwise than a BVH file reads it back
    (`<parent>_Nub`): sampling had crashed with a traceback after the sampler, leaving a folder without
    its index. Now it says why there are no .bvh files first, and writes everything else."""
    renamed = Skeleton(
        names=("Hips", "Spine", "Head", "Head_End", "Arm", "Arm_Nub"),
        parents=SKELETON.parents,
        offsets=SKELETON.offsets,
        end_sites=SKELETON.end_sites,
    )
    real_load = sampling.load_model
    monkeypatch.setattr(
        sampling, "load_model", lambda *a, **k: dataclasses.replace(real_load(*a, **k), skeleton=renamed)
    )
    lines = []
    summary = sampling.run(
        run_config(output_dir=str(tmp_path / "out")), workdirs["axis_angle"], log=lines.append
    )
    out = Path(summary["output_dir"])
    (said,) = [i for i, line in enumerate(lines) if line.startswith("no .bvh files: ")]
    assert "its skeleton cannot be written as BVH (end site 3 is named 'Head_End'" in lines[said]
    assert said < min(i for i, line in enumerate(lines) if line.startswith("wrote "))
    assert not list(out.glob("*.bvh")) and (out / "index.json").is_file()
    assert len(list(out.glob("*_positions.npy"))) == len(CAPTIONS)
    none = types.SimpleNamespace(skeleton=None, representation="axis_angle")
    assert "have no skeleton (no skeleton.json)" in sampling.bvh_problem(none)
    flat = types.SimpleNamespace(skeleton=None, representation="positions")  # a skeleton would not help
    assert sampling.bvh_problem(flat) == "the positions representation has no joint rotations"
    humanml3d = types.SimpleNamespace(skeleton=None, representation="humanml3d")  # rotations, no offsets
    assert "joint rotations (6D, from inverse kinematics) come without the skeleton offsets" in (
        sampling.bvh_problem(humanml3d)
    )


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_sampling_stopped_while_writing_leaves_no_partial_file(workdirs, tmp_path, monkeypatch, failure):
    """A full disk, Ctrl-C or SIGTERM (launch.py turns it into KeyboardInterrupt) while the files are
    written: the files this call wrote (and the one cut short) are removed with the folder it made; they
    had stayed, a 0-byte .npy or index.json among them, looking like a complete sample."""
    real_save, calls = sampling._save_npy, []

    def save_then_fail(path, array, written):
        calls.append(path)
        if len(calls) == 3:
            written.append(path)
            path.write_bytes(b"\x93NUMPY")  # cut short
            raise failure
        real_save(path, array, written)

    monkeypatch.setattr(sampling, "_save_npy", save_then_fail)
    out = tmp_path / "samples" / "step_3"
    with pytest.raises(type(failure)):
        sampling.run(run_config(output_dir=str(out)), workdirs["positions"], log=lambda _: None)
    assert len(calls) == 3 and not (tmp_path / "samples").exists()
    (tmp_path / "kept").mkdir()  # an empty folder of the user's: emptied of this call's files, kept
    calls.clear()
    with pytest.raises(type(failure)):
        sampling.run(run_config(output_dir=str(tmp_path / "kept")), workdirs["positions"], log=lambda _: None)
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_sample_array_is_never_under_its_name_half_written_nor_over_a_file(tmp_path, monkeypatch):
    """_save_npy had created the final name and written into it: a SIGKILL mid-write left part of an array
    under a sample's name. Now nothing is under that name until the whole array is."""
    real_save, visible = np.save, []

    def watched(handle, array):
        visible.append([p.name for p in tmp_path.iterdir() if not p.name.startswith(".")])
        real_save(handle, array)

    monkeypatch.setattr(sampling.np, "save", watched)
    written, array = [], np.arange(12, dtype=np.float32).reshape(3, 4)
    sampling._save_npy(tmp_path / "000_wave.npy", array, written)
    assert visible == [[]] and written == [tmp_path / "000_wave.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "000_wave.npy"), array)
    (tmp_path / "001_mine.npy").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        sampling._save_npy(tmp_path / "001_mine.npy", array, written)
    assert (tmp_path / "001_mine.npy").read_bytes() == b"mine" and len(written) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000_wave.npy", "001_mine.npy"]


@pytest.mark.parametrize(("features", "joints"), [(263, 22), (251, 21)])
def test_humanml3d_layout_samples_get_positions_and_an_animation_of_their_joints(
    tmp_path, monkeypatch, features, joints
):
    """HumanML3D's 263 features (and KIT-ML's 251) had come out as features alone (no positions, no
    picture): generate now decodes them (humanml3d.recover_from_ric, tested against its own float64
    reference) to HumanML3D's 22 T2M joints or KIT-ML's 21 MMM joints, and run writes the positions and
    the animation; BVH stays refused (no skeleton offsets)."""
    from motion_ddpm_jax import humanml3d, render

    monkeypatch.setitem(FEATURES, "humanml3d", features)
    write_checkpoint(tmp_path / "run", representation="humanml3d")
    loaded = sampling.load_model(tmp_path / "run")
    tree = {263: humanml3d.PARENTS, 251: humanml3d.KIT_PARENTS}[features]
    assert sampling.joint_parents(loaded) == tree and len(tree) == joints
    out = sampling.generate(loaded, CAPTIONS, [6, 9], steps=3, seed=2)
    assert out["positions"].shape == (2, 9, joints, 3)
    for i, length in enumerate(out["lengths"]):
        expected = np.asarray(humanml3d.recover_from_ric(out["motion"][i, :length]))
        np.testing.assert_allclose(out["positions"][i, :length], expected, rtol=1e-5, atol=1e-5)
        assert not out["positions"][i, length:].any()
    lines, drawn = [], []
    real_animate = render.animate_skeletons

    def animate(*args, **kwargs):
        drawn.append(kwargs.get("mirrored", False))
        return real_animate(*args, **kwargs)

    monkeypatch.setattr(render, "animate_skeletons", animate)
    summary = sampling.run(
        run_config(render=True, output_dir=str(tmp_path / "o")), tmp_path / "run", log=lines.append
    )
    names = set(summary["files"])
    assert {"samples.gif", "000_wave_hello_0_positions.npy"} <= names and not any(".bvh" in n for n in names)
    # KIT-ML's positions are a reflection of the MMM model's: drawn reflected back, saved as decoded.
    assert drawn == [features == 251]
    # So are the training run's progress GIFs (train.ProgressRenderer, here fed this checkpoint's model).
    from motion_ddpm_jax import train

    monkeypatch.setattr(sampling, "loaded_from_params", lambda *args: loaded)
    logged = []
    train.ProgressRenderer(run_config(), tmp_path / "run", {}, CAPTIONS, log=logged.append)(7, None)
    assert (tmp_path / "run" / "progress" / "step_0000007.gif").is_file(), logged
    assert drawn == [features == 251] * 2
    # The positions written are the written features decoded (not put on the ground: heights are data).
    positions = np.load(tmp_path / "o" / "000_wave_hello_0_positions.npy")
    decoded = humanml3d.recover_from_ric(np.load(tmp_path / "o" / "000_wave_hello_0.npy"))
    np.testing.assert_allclose(positions, decoded, rtol=1e-5, atol=1e-5)
    assert any("no .bvh files: the humanml3d representation's joint rotations" in line for line in lines)


def test_a_folder_left_by_a_killed_sampling_is_named_as_such(workdirs, tmp_path):
    """A sampling killed (SIGKILL) before it finished leaves its claim and some files; the next one writes
    beside it and says that folder holds an unfinished sample (it had said only 'already holds files')."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    wanted = tmp_path / "out"
    wanted.mkdir()
    (wanted / sampling.CLAIM).write_text(f"pid {gone.pid} on {files.host_id()}\n")
    (wanted / "000_wave_hello_0.npy").write_bytes(b"")
    lines = []
    summary = sampling.run(run_config(output_dir=str(wanted)), workdirs["positions"], log=lines.append)
    assert summary["output_dir"] == str(tmp_path / "out_2")
    assert any(
        f"already holds files (the unfinished files of a sampling killed before it finished, pid {gone.pid}"
        in line
        for line in lines
    ), lines
    assert not [p for p in Path(summary["output_dir"]).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    "caption, slug",
    [("Wave Hello", "wave_hello"), ("café naïve", "cafe_naive"), ("日本語 テスト", "日本語_テスト"),
     ("नमस्ते दुनिया", "नमस्ते_दुनिया"), ("👋", "caption"), ("so, nod  okay!", "so_nod_okay"),
     ("a" * 60, "a" * 40)],
)  # fmt: skip
def test_file_names_keep_a_captions_letters_whatever_its_script(caption, slug):
    assert sampling._slug(caption) == slug  # 'café' had lost its e, '日本語' and '👋' had read 'empty'


@pytest.mark.skipif(render_lib.find_ffmpeg() is None, reason="no ffmpeg (pip install imageio-ffmpeg)")
def test_run_renders_an_mp4_when_asked(workdirs, tmp_path):
    summary = sampling.run(
        run_config(render=True, render_format="mp4", output_dir=str(tmp_path / "out")), workdirs["positions"]
    )
    video = Path(summary["output_dir"]) / "samples.mp4"
    assert "samples.mp4" in summary["files"] and video.stat().st_size > 0
    probe = subprocess.run(
        [render_lib.find_ffmpeg(), "-i", str(video), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    assert re.findall(r"frame=\s*(\d+)", probe.stderr)[-1] == "10", probe.stderr[-1000:]


def test_run_writes_npy_and_index_and_never_overwrites(workdirs, monkeypatch):
    calls = []

    def animate_skeletons(positions, parents, path, *, fps, titles=None, **options):
        calls.append((positions, parents, fps, titles))
        Path(path).write_bytes(b"GIF89a")
        return Path(path)

    monkeypatch.setitem(
        sys.modules, "motion_ddpm_jax.render", types.SimpleNamespace(animate_skeletons=animate_skeletons)
    )
    logs = []
    config = run_config(seed=4, guidance_scale=2.0, render=True)
    first = sampling.run(config, workdirs["positions"], log=logs.append)
    out = Path(first["output_dir"])
    assert out == workdirs["positions"] / "samples" / "step_3"
    assert any("no .bvh" in line for line in logs)
    expected = sampling.generate(
        sampling.load_model(workdirs["positions"]), CAPTIONS, 10, steps=3, seed=4, guidance_scale=2.0
    )
    index = json.loads((out / "index.json").read_text())
    assert (
        index["settings"] | {"sampler": "ddim", "steps": 3, "seed": 4, "checkpoint_step": 3}
        == index["settings"]
    )
    assert index["settings"]["guidance_scale"] == 2.0
    drew = provenance.software(jax.local_devices()[0])  # what drew them (git_dirty may change meanwhile)
    assert {**index["software"], "git_dirty": None} == {**drew, "git_dirty": None}
    for i, name in enumerate(["000_wave_hello_0.npy", "001_point_left_0.npy"]):
        assert index["samples"][name]["caption"] == CAPTIONS[i] and index["samples"][name]["length"] == 10
        np.testing.assert_array_equal(np.load(out / name), expected["motion"][i])
        # stood on the ground: the lowest joint of the first frame at height 0 (Y up), nothing across
        reference = expected["positions"][i].astype(np.float64)
        reference[..., 1] -= reference[0, :, 1].min()
        written = np.load(out / name.replace(".npy", "_positions.npy"))
        np.testing.assert_allclose(written, reference, rtol=0, atol=1e-5)
        assert written[0, :, 1].min() == 0.0
    assert sorted(first["files"]) == sorted(p.name for p in out.iterdir())
    [(positions, parents, fps, titles)] = calls
    assert [p.shape for p in positions] == [(10, 6, 3)] * 2 and list(parents) == list(SKELETON.parents)
    assert fps == 30.0 and titles == CAPTIONS

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = sampling.run(run_config(render=False), workdirs["positions"], log=logs.append)
    assert Path(second["output_dir"]) == out.with_name("step_3_2")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert any("step_3_2" in line for line in logs)


def test_a_diverged_checkpoint_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "nan", diverged=True)
    opened, closed = [], []
    real_init, real_close = checkpoint.Checkpointer.__init__, checkpoint.Checkpointer.close
    monkeypatch.setattr(
        checkpoint.Checkpointer,
        "__init__",
        lambda self, *a, **k: opened.append(self) or real_init(self, *a, **k),
    )
    monkeypatch.setattr(
        checkpoint.Checkpointer, "close", lambda self: closed.append(self) or real_close(self)
    )
    with pytest.raises(UserError, match=r"step 3 .* not finite \(2 of 2 samples\).*Checkpoints there: \[3\]"):
        sampling.run(run_config(), tmp_path / "nan")
    assert not (tmp_path / "nan" / "samples").exists()
    assert len(opened) == 2 and opened == closed  # load_model's reader and the one naming the steps


def test_an_output_dir_of_dot_in_a_folder_with_files_writes_beside_it(workdirs, tmp_path, monkeypatch):
    """sample.output_dir='.' where the current folder holds files: a new sibling folder, as for any
    output_dir that is not empty; nothing in the current folder is touched."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("mine")
    monkeypatch.chdir(here)
    summary = sampling.run(run_config(render=False, output_dir="."), workdirs["positions"])
    assert Path(summary["output_dir"]) == tmp_path / "here_2"
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]


def test_an_output_folder_that_cannot_be_written_fails_before_sampling(workdirs, tmp_path, monkeypatch):
    """A read-only workdir (a colleague's copy) had failed only after the whole sampler ran, with a bare
    errno: now at once, naming sample.output_dir. A folder the run made for a request refused by
    `generate` is taken away again."""
    (tmp_path / "a_file").write_text("mine")
    calls = []
    monkeypatch.setattr(sampling, "generate", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(UserError, match=r"a_file.*cannot write the samples there.*sample\.output_dir"):
        sampling.run(run_config(output_dir=str(tmp_path / "a_file" / "out")), workdirs["positions"])
    assert calls == [] and (tmp_path / "a_file").read_text() == "mine"
    monkeypatch.undo()
    with pytest.raises(UserError, match="sample.num_frames"):
        sampling.run(run_config(num_frames=10**6, output_dir=str(tmp_path / "o")), workdirs["positions"])
    assert not (tmp_path / "o").exists()
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(UserError, match=r"ro.*cannot write the samples there"):
            sampling.run(run_config(output_dir=str(tmp_path / "ro")), workdirs["positions"])


def test_an_output_folder_is_claimed_so_that_two_processes_never_share_one(tmp_path, monkeypatch):
    """The folder a sampling run takes stays empty while it samples: a second run started meanwhile had
    taken it too (and one failed after its sampler). A claim file tells it apart; released, an empty
    folder is free again. A dangling link in the path is an error, not an endless search; a folder that
    cannot be written (os.access here, as root ignores modes) is refused and removed."""
    wanted = tmp_path / "samples" / "step_3"
    first, made = sampling.fresh_output_dir(wanted)
    second, _ = sampling.fresh_output_dir(wanted)
    assert (first, made, second) == (wanted, tmp_path / "samples", tmp_path / "samples" / "step_3_2")
    sampling.release_output_dir(first, made, failed=False)
    assert list(first.iterdir()) == [] and sampling.fresh_output_dir(wanted)[0] == wanted
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "samples").symlink_to(tmp_path / "not_mounted")
    with pytest.raises(OSError):
        sampling.fresh_output_dir(tmp_path / "run" / "samples" / "step_3")
    monkeypatch.setattr(sampling.os, "access", lambda *args: False)
    with pytest.raises(UserError, match=r"new/out: cannot write the samples there \(Permission denied\)"):
        sampling._output_folder(tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()


def test_run_reads_text_file_and_needs_some_caption(workdirs, tmp_path):
    with pytest.raises(UserError, match=r"sample\.text.*sample\.text_file"):
        sampling.run(run_config(text=" | "), workdirs["positions"])
    for given, number in (("wave||nod", "2 of the 3"), ("wave|", "2 of the 2"), ("| nod", "1 of the 2")):
        with pytest.raises(UserError, match=f"holds an empty caption \\(number {number} that"):
            sampling.run(run_config(text=given), workdirs["positions"])
    (tmp_path / "captions.txt").write_text("wave hello\n\nnod\n", encoding="utf-8-sig")  # a BOM, as Notepad
    summary = sampling.run(
        run_config(text="", text_file=str(tmp_path / "captions.txt"), output_dir=str(tmp_path / "o")),
        workdirs["positions"],
    )
    index = json.loads((Path(summary["output_dir"]) / "index.json").read_text())
    assert [e["caption"] for e in index["samples"].values()] == ["wave hello", "nod"]
    with pytest.raises(UserError, match=r"sample\.text_file"):
        sampling.run(run_config(text="", text_file=str(tmp_path / "missing.txt")), workdirs["positions"])


def test_a_caption_file_ends_lines_at_lf_crlf_and_cr_only(tmp_path):
    """CRLF, a lone CR and blank lines are line ends as a text editor shows them; a form feed, U+0085 and
    U+2028 inside a line (pasted from a web page or a word processor) are not: str.splitlines had made
    two captions of each such line, shifting the index of every caption after it."""
    path = tmp_path / "captions.txt"
    path.write_bytes("wave\u2028hello\r\n\r\n  \r\nbow\x0cdeep\r\nnod\rclap \u0085 twice\n\n".encode("utf-8"))
    config = run_config(text="", text_file=str(path)).sample
    assert sampling.read_captions(config) == [
        "wave\u2028hello",
        "bow\x0cdeep",
        "nod",
        "clap \u0085 twice",
    ]


# ------------------------------------------------------------------------------------------ end to end
def test_a_trained_checkpoint_samples_through_launch_on_host_devices_the_same_as_on_one(tmp_path):
    """`launch.py --mode sample` in a fresh process splits its samples over one host device per core (here
    two, asked for), a lone sample over one device, and writes what one device computes here."""
    from motion_ddpm_jax import train
    from motion_ddpm_jax.data import synthetic

    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = demo.get_config()
    synthetic.write_demo_dataset(
        tmp_path / "raw", num_speakers=2, recordings_per_speaker=1, sentences_per_recording=3
    )
    config.data.source, config.data.raw_root, config.data.root = (
        "beat",
        str(tmp_path / "raw"),
        str(tmp_path / "prep"),
    )
    config.data.representation, config.data.max_motion_length = "axis_angle", 32
    config.data.val_fraction = config.data.test_fraction = 0.0
    m = config.model
    m.latent_dim, m.num_layers, m.ff_size, m.num_heads = 16, 1, 32, 2
    m.text_latent_dim, m.text_num_layers, m.text_num_heads, m.text_ff_size = 16, 1, 2, 32
    config.loss.use_geometric_loss = False
    config.diffusion.steps, config.diffusion.schedule = 20, "cosine"
    config.train.batch_size, config.train.num_steps, config.train.log_every = 4, 2, 1
    config.train.save_every_steps = config.train.sample_every = 0  # (no progress GIF: 50 DDIM steps of 20)
    train.run(config, tmp_path / "run", log=lambda *_: None)
    loaded = sampling.load_model(tmp_path / "run")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["XLA_FLAGS"] = with_fast_compile("")  # as this process compiles; its host devices from --host_devices
    settings = {"num_frames": 12, "steps": 4, "seed": 7, "eta": 0.3, "guidance_scale": 2.0}

    for captions, num_samples, devices in ((["wave", "point at the sky", "nod"], 2, 2), (["nod"], 1, 1)):
        out = tmp_path / f"samples_{len(captions)}"
        sample = dict(settings, text="|".join(captions), num_samples=num_samples, render=False)
        result = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "--mode", "sample", "--workdir", str(tmp_path / "run")]
            + [f"--config.sample.{key}={value}" for key, value in sample.items()]
            + [f"--config.sample.output_dir={out}", "--host_devices=2"],
            cwd=tmp_path,
            env=dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"on {devices} cpu device(s)" in result.stdout, result.stdout
        index = json.loads((out / "index.json").read_text())
        assert [e["caption"] for e in index["samples"].values()] == [
            c for c in captions for _ in range(num_samples)
        ]
        assert len(list(out.glob("*.bvh"))) == len(captions) * num_samples

        with warnings.catch_warnings():  # ('point at the sky': its unseen words spelled take 17 tokens)
            warnings.simplefilter("ignore", sampling.CaptionCutWarning)
            one_device = sampling.generate(loaded, captions, num_samples=num_samples, **settings)
        for i, (name, entry) in enumerate(index["samples"].items()):
            motion = np.load(out / name)
            assert entry["length"] == 12 and motion.shape == (12, 228) and np.all(np.isfinite(motion))
            np.testing.assert_allclose(motion, one_device["motion"][i], rtol=1e-5, atol=1e-4)
    assert jax.local_device_count() == 1


PLACEMENT_SCRIPT = """
import json, sys
import jax, numpy as np
from motion_ddpm_jax import distributed, sampling
distributed.use_host_devices(2)
loaded = sampling.load_model(sys.argv[1])
motions, kept = [], []
for samples in (1, 3, 1):
    result = sampling.generate(loaded, ["wave hello"], 10, num_samples=samples, steps=3, seed=4)
    motions.append(result["motion"].tolist())
    kept.append(sorted(str(key) for key in loaded._cache if key[0] == "replicated"))
print(json.dumps({"devices": jax.local_device_count(), "motions": motions, "kept": kept}))
"""


def test_the_parameters_are_placed_once_per_device_count_and_replaced_when_it_changes(workdirs, loaded):
    """On two host devices, one sample runs on one device and three on two (the parameters and schedule
    placed on as many devices as the samples use), keeping one placement of each, not one per count
    ever used; the motion equals one device's."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["XLA_FLAGS"] = with_fast_compile("")  # as this process compiles; its host devices from --host_devices
    result = subprocess.run(
        [sys.executable, "-c", PLACEMENT_SCRIPT, str(workdirs["positions"])],
        env=dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2
    one, two = (
        ["('replicated', 'params', 1)", "('replicated', 'schedule', 1)"],
        [
            "('replicated', 'params', 2)",
            "('replicated', 'schedule', 2)",
        ],
    )
    assert out["kept"] == [one, two, one]
    for samples, motion in zip((1, 3, 1), out["motions"], strict=True):
        expected = sampling.generate(loaded, ["wave hello"], 10, num_samples=samples, steps=3, seed=4)
        np.testing.assert_allclose(np.asarray(motion), expected["motion"], rtol=1e-5, atol=1e-4)


def _scan_bodies(jaxpr):
    """The body jaxprs of every scan in a (closed) jaxpr, outermost first."""
    return [eqn.params["jaxpr"] for eqn in equations(jaxpr) if eqn.primitive.name == "scan"]


def _dot_operand_sizes(jaxpr) -> set[int]:
    """Every dimension size of every dot_general operand in a jaxpr and its sub-jaxprs."""
    dots = (eqn for eqn in equations(jaxpr) if eqn.primitive.name == "dot_general")
    return {size for eqn in dots for var in eqn.invars for size in var.aval.shape}


def _tiny_model() -> model_lib.MotionTransformer:
    """2 layers of width 12 (E = 48), text width 10, 6 motion features."""
    return model_lib.MotionTransformer(
        input_feats=6, max_motion_length=7, latent_dim=12, num_layers=2, ff_size=20, num_heads=2,
        text_vocab_size=30, text_max_length=3, text_latent_dim=10, text_num_layers=1, text_num_heads=2,
        text_ff_size=14,
    )  # fmt: skip


def test_a_sampler_step_runs_no_caption_or_step_embedding_matmul():
    """The per-step (inner) scan holds none of the products whose inputs are the caption or the step alone:
    no matmul there touches the embedding width E = 48 (time MLP, stylization projections: those run in
    the chunk (outer) scan) or the text width 10 (cross-attention keys and values: computed once, before
    both scans)."""
    model = _tiny_model()
    params = model_lib.init_params(model, jax.random.key(0))
    schedule = sampling.diffusion.make_schedule("cosine", 8)
    text, text_mask = jnp.zeros((2, 3, 10)), jnp.ones((2, 3), bool)

    def sample(params, x_T):
        denoise = sampling.conditioned_denoiser(
            model, params, text, text_mask, jnp.ones((1, 7), bool), guidance_scale=2.0, chunk=4
        )
        return sampling.diffusion.ddpm_sample_loop(schedule, denoise, x_T, jax.random.key(1), "epsilon")

    jaxpr = jax.make_jaxpr(sample)(params, jnp.zeros((1, 7, 6)))
    outer, inner = _scan_bodies(jaxpr)[:2]
    assert 10 in _dot_operand_sizes(jaxpr)
    assert 48 in _dot_operand_sizes(outer) and 10 not in _dot_operand_sizes(outer)
    assert not {48, 10} & _dot_operand_sizes(inner), _dot_operand_sizes(inner)


def test_prepared_modulations_are_one_array_of_every_block_side_by_side():
    """`prepare` packs every block's (scale, shift) into one array [steps, rows, 3 x layers x 2C], in the
    order of the model's modulations tree: the loops carry and slice one array per step."""
    model = _tiny_model()
    params = model_lib.init_params(model, jax.random.key(0))
    params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(a.size), a.shape), params)
    text, text_mask = jax.random.normal(jax.random.key(2), (2, 3, 10)), jnp.ones((2, 3), bool)
    denoise = sampling.conditioned_denoiser(model, params, text, text_mask, jnp.ones((2, 7), bool))
    timesteps = jnp.array([5, 0, 3])
    packed = denoise.prepare(timesteps)
    assert packed.shape == (3, 2, 3 * 2 * 24)
    condition = model.apply({"params": params}, text, text_mask, method=model.condition_on_text)
    expected = model.apply(
        {"params": params}, jnp.repeat(timesteps, 2), jnp.tile(condition["emb"], (3, 1)),
        method=model.modulations,
    )  # fmt: skip
    expected = np.concatenate([np.asarray(a).reshape(3, 2, -1) for a in jax.tree.leaves(expected)], axis=-1)
    np.testing.assert_allclose(np.asarray(packed), expected, rtol=1e-6, atol=1e-6)


def test_run_names_the_words_no_training_caption_held(workdirs, loaded, tmp_path):
    """A caption word outside the vocabulary is named once, with how the model reads it (spelled in bytes,
    as data.spell_prob of the training words were); captions of vocabulary words alone say nothing."""
    known = loaded.tokenizer.words[0]
    messages = []
    sampling.run(
        run_config(text=f"{known} zzqx|Zzqx {known} blorp", output_dir=str(tmp_path / "a")),
        workdirs["positions"],
        log=messages.append,
    )
    named = [m for m in messages if m.startswith("words no training caption held")]
    spelled = loaded.config.data.spell_prob
    assert named == [
        f"words no training caption held: zzqx, blorp; the model reads them spelled in bytes, as training "
        f"gave it {spelled:.0%} of its caption words"
    ]
    messages.clear()
    sampling.run(
        run_config(text=known, output_dir=str(tmp_path / "b")), workdirs["positions"], log=messages.append
    )
    assert not [m for m in messages if "no training caption" in m]


def test_a_caption_longer_than_the_model_reads_is_a_warning_from_python_and_a_note_from_run(
    workdirs, loaded, tmp_path
):
    """model.text_max_length 8 leaves 6 tokens for words: generate had sampled a 7-word caption from its
    first 6 words without a word (only `run`'s log said so). Counted by hand: every word of these
    captions is one of the training captions', one token each."""
    assert loaded.text_max_length == 8
    six, seven = "wave hello point left wave hello", "wave hello point left wave hello point"
    with warnings.catch_warnings():
        warnings.simplefilter("error", sampling.CaptionCutWarning)
        sampling.generate(loaded, [six], 4, steps=2)  # fits: nothing said
    with pytest.warns(sampling.CaptionCutWarning) as caught:
        sampling.generate(loaded, [six, seven], 4, steps=2)
    assert len(caught) == 1 and str(caught[0].message).startswith(
        "caption 1 ('wave hello point left wave hello point') takes 7 tokens; the model reads its first 6"
    )
    messages = []
    with warnings.catch_warnings():  # run says it once, in its log
        warnings.simplefilter("error", sampling.CaptionCutWarning)
        sampling.run(
            run_config(text=f"{six}|{seven}", num_frames=4, steps=2, output_dir=str(tmp_path / "a")),
            workdirs["positions"],
            log=messages.append,
        )
    assert [m for m in messages if "takes 7 tokens" in m] == [
        "caption 1 ('wave hello point left wave hello point') takes 7 tokens; the model reads its first 6 "
        "(model.text_max_length 8 less bos and eos)"
    ]


def test_a_length_past_the_models_window_is_refused_before_anything_is_said_or_written(
    workdirs, loaded, tmp_path
):
    """sample.num_frames above the run's data.max_motion_length had been refused only after the
    'sampling ...' line and the notes were printed, as if sampling had begun; so had sampler settings the
    checkpoint cannot take (more DDIM steps than its diffusion has), by `generate`, after the output
    folder was made too."""
    too_long, steps = int(loaded.max_motion_length) + 1, int(loaded.schedule.num_steps) + 1
    for fields, refusal in (
        ({"num_frames": too_long}, rf"must be in \[1, {too_long - 1}\].*got {too_long}"),
        ({"steps": steps}, rf"sample.steps must be an integer in \[1, {steps - 1}\]"),
    ):
        messages = []
        with pytest.raises(sampling.SampleError, match=refusal):
            config = run_config(**fields, output_dir=str(tmp_path / "out"))
            sampling.run(config, workdirs["positions"], log=messages.append)
        assert messages == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("camera", ["fixed", "follow"])
def test_the_animations_camera_is_the_configs(workdirs, tmp_path, monkeypatch, camera):
    """sample.camera reaches the animation (render.animate_skeletons' `camera`): it had been reachable only
    from Python, the CLI always drawing "auto"'s choice. validate names the field for another value."""
    from motion_ddpm_jax import render
    from motion_ddpm_jax.config import validate
    from motion_ddpm_jax.errors import UserError

    seen = []

    def spy(positions, parents, path, **options):
        seen.append(options.get("camera"))
        Path(path).write_bytes(b"GIF89a")
        return Path(path)

    monkeypatch.setattr(render, "animate_skeletons", spy)
    config = run_config(output_dir=str(tmp_path / "out"), camera=camera, render=True)
    sampling.run(config, workdirs["positions"], log=lambda _: None)
    assert seen == [camera]
    config.sample.camera = "moving"
    with pytest.raises(UserError, match="sample.camera"):
        validate(config)


def test_a_fine_tuned_runs_unseen_word_note_says_its_own_captions_were_spelled_too():
    """A run fine-tuned from another's weights reads with the source's vocabulary: its own captions' words
    that the source lacked were spelled in bytes every time (helper 102's run: 100% of 'jumps'), which
    the note's '5% of its caption words' had left out."""
    import ml_collections

    def loaded(spell_prob, init_from):
        config = ml_collections.ConfigDict({"data": {"spell_prob": spell_prob}})
        metadata = {"init_from": {"workdir": "runs/source"}} if init_from else {}
        tokenizer = types.SimpleNamespace(byte_fallback=True)
        return types.SimpleNamespace(config=config, metadata=metadata, tokenizer=tokenizer)

    own = "every word of its fine-tuning captions that the vocabulary of the run it started from lacks"
    assert sampling._unseen_note(loaded(0.05, False)).endswith("as training gave it 5% of its caption words")
    assert sampling._unseen_note(loaded(0.05, True)).endswith(f"5% of its caption words (and {own})")
    assert sampling._unseen_note(loaded(0.0, True)).endswith(f"as training gave it {own}")
    assert "never showed it" in sampling._unseen_note(loaded(0.0, False))


def test_a_relative_workdir_samples_into_its_folder_without_a_false_already_holds_files(
    workdirs, tmp_path, monkeypatch
):
    """`--mode sample --workdir runs/demo` (relative, as the README's command): the first sampling writes
    into samples/step_<step> and says nothing of other files (it said the folder "already holds files"
    and named the same folder, absolute); a second one goes to a sibling and says so."""
    shutil.copytree(
        workdirs["positions"], tmp_path / "runs" / "demo", ignore=shutil.ignore_patterns("samples")
    )
    monkeypatch.chdir(tmp_path)
    messages = []
    first = sampling.run(run_config(), "runs/demo", log=messages.append)
    step = sampling.load_model("runs/demo").step
    assert Path(first["output_dir"]) == tmp_path / "runs" / "demo" / "samples" / f"step_{step}"
    assert not [m for m in messages if "already holds files" in m]
    second = sampling.run(run_config(), "runs/demo", log=messages.append)
    assert Path(second["output_dir"]).name == f"step_{step}_2"
    assert [m for m in messages if "already holds files" in m] == [
        f"{tmp_path}/runs/demo/samples/step_{step} already holds files; writing to "
        f"{second['output_dir']} instead"
    ]
    # sample.output_dir naming a file: the file is kept, and the note says what is there.
    (tmp_path / "notes.txt").write_text("mine")
    messages.clear()
    third = sampling.run(run_config(output_dir="notes.txt"), "runs/demo", log=messages.append)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert Path(third["output_dir"]).parent == tmp_path and Path(third["output_dir"]).is_dir()
    assert [m for m in messages if "instead" in m] == [
        f"{tmp_path}/notes.txt is a file; writing to {third['output_dir']} instead"
    ]


def test_a_caption_longer_than_the_text_window_is_named_with_its_token_count():
    """`--mode sample` says which captions the model reads only in part: known words take one token, a
    word the vocabulary lacks 1 + its UTF-8 bytes (SPELL, then bytes); bos and eos take 2 of the window."""
    import types

    from motion_ddpm_jax.text import Tokenizer

    tokenizer = Tokenizer.build(["wave the hand", "nod"])
    loaded = types.SimpleNamespace(tokenizer=tokenizer, text_max_length=8)
    fits = "wave the hand nod wave the"  # 6 tokens: exactly the 8 - 2 of the window
    spelled = "wave héllo"  # 1 + (1 + 6 bytes) = 8 tokens
    notes = sampling._cut_captions(loaded, [fits, "nod", spelled])
    assert len(notes) == 1
    assert notes[0] == (
        "caption 2 ('wave héllo') takes 8 tokens; the model reads its first 6 (model.text_max_length 8 less "
        "bos and eos); each word the vocabulary lacks takes 1 + its UTF-8 bytes"
    )
    known = sampling._cut_captions(loaded, [fits + " nod"])  # only known words: no word on spelling
    assert known == [
        f"caption 0 ('{fits} nod') takes 7 tokens; the model reads its first 6 (model.text_max_length 8 "
        "less bos and eos)"
    ]


def test_a_checkpoint_removed_while_it_is_read_is_not_called_damaged(tmp_path, monkeypatch):
    """Sampling a run that is still training: its trainer can remove the checkpoint being read
    (train.max_to_keep). That read had been reported as a damaged checkpoint; now the latest one is read
    again, and a step asked for by number is said to have been removed."""
    write_checkpoint(tmp_path / "run", step=5)
    write_checkpoint(tmp_path / "run", step=7)
    real_restore, reads = checkpoint.Checkpointer.restore_params, []

    def removed_by_the_trainer(self, step, **kwargs):
        reads.append(step)
        if step == 7:
            shutil.rmtree(self.directory / "7")
            raise OSError("Truncated Zstd-compressed stream")
        return real_restore(self, step, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "restore_params", removed_by_the_trainer)
    assert sampling.load_model(tmp_path / "run").step == 5 and reads == [7, 5]
    write_checkpoint(tmp_path / "run", step=7)
    with pytest.raises(UserError, match=r"/7 was removed while it was read: the run is still training"):
        sampling.load_model(tmp_path / "run", step=7)


def test_a_checkpoint_whose_files_are_being_removed_is_not_called_damaged(tmp_path, monkeypatch):
    """Orbax removes a checkpoint's files before its folder: a read of the latest checkpoint of a run
    still training (train.max_to_keep, or train.init_from naming it) can fail while the folder is still
    there. That had been reported as a damaged checkpoint; now the folder is given a moment to go, and
    the new latest one is read."""
    import threading

    write_checkpoint(tmp_path / "run", step=5)
    real_restore, reads = checkpoint.Checkpointer.restore_params, []

    def removed_by_the_trainer(self, step, **kwargs):
        reads.append(step)
        if step == 5:  # the trainer saves step 7 and removes step 5: its files first, its folder later
            write_checkpoint(tmp_path / "run", step=7)
            shutil.rmtree(self.directory / "5" / "ema_params")
            threading.Timer(0.3, shutil.rmtree, [self.directory / "5"]).start()
            raise FileNotFoundError("Metadata file (named _METADATA) does not exist")
        return real_restore(self, step, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "restore_params", removed_by_the_trainer)
    assert sampling.load_model(tmp_path / "run").step == 7 and reads == [5, 7]


def test_an_animation_that_fails_costs_only_itself(workdirs, tmp_path, monkeypatch):
    """An mp4 asked for without ffmpeg failed after every array was written; removing a failed call's
    files then took the samples too. The arrays and index.json stay, and the log says why there is no
    animation."""
    monkeypatch.setattr(render_lib, "find_ffmpeg", lambda: None)
    lines = []
    summary = sampling.run(
        run_config(output_dir=str(tmp_path / "mine"), render=True, render_format="mp4"),
        workdirs["positions"],
        log=lines.append,
    )
    names = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert "index.json" in names and len([n for n in names if n.endswith(".npy")]) == 2 * len(CAPTIONS)
    assert not [n for n in names if n.endswith(".mp4")] and "samples.mp4" not in summary["files"]
    assert [line for line in lines if line.startswith("no animation: ")], lines


def test_panels_of_several_draws_of_a_caption_are_told_apart_as_the_files_are(
    workdirs, tmp_path, monkeypatch
):
    """Two samples of one caption had the same panel title; each panel names its draw as its files do."""
    drawn = []

    def animate_skeletons(positions, parents, path, *, fps, titles=None, **options):
        drawn.extend(titles)
        options["log"](f"{path}: no installed font has these characters")  # the renderer's one message
        Path(path).write_bytes(b"GIF89a")
        return Path(path)

    monkeypatch.setattr(render_lib, "animate_skeletons", animate_skeletons)
    config = run_config(num_samples=2, output_dir=str(tmp_path / "out"), render=True)
    lines = []
    summary = sampling.run(config, workdirs["positions"], log=lines.append)
    assert [line for line in lines if "no installed font" in line] == [
        f"{tmp_path / 'out' / 'samples.gif'}: no installed font has these characters"
    ]
    assert drawn == [
        "draw 0 of 2: wave hello",
        "draw 1 of 2: wave hello",
        "draw 0 of 2: point left",
        "draw 1 of 2: point left",
    ]
    assert "000_wave_hello_1.npy" in summary["files"] and "001_point_left_0.npy" in summary["files"]
    assert sampling.panel_titles(CAPTIONS, 1) == CAPTIONS


def test_an_animation_out_of_memory_costs_only_itself(workdirs, tmp_path, monkeypatch):
    """A MemoryError while drawing (100 panels of 60 frames held 4.1 GB) had failed the command, and the
    clean-up removed every sample written before it."""

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(render_lib, "animate_skeletons", out_of_memory)
    lines = []
    sampling.run(
        run_config(output_dir=str(tmp_path / "mine"), render=True), workdirs["positions"], log=lines.append
    )
    names = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert "index.json" in names and len([n for n in names if n.endswith(".npy")]) == 2 * len(CAPTIONS)
    assert [line for line in lines if line.startswith("no animation: out of memory drawing 2 samples")], lines


def test_a_run_that_read_a_humanml3d_layout_at_another_rate_warns_when_it_samples():
    """KIT-ML's 251 features (12.5 fps motion) trained with configs/humanml3d.py's data.fps=20: training
    warned, but a run folder's sampler never saw that log; its animation plays 20 / 12.5 = 1.6x too fast."""
    import types

    def loaded(representation, features, fps):
        return types.SimpleNamespace(representation=representation, mean=np.zeros(features), fps=fps)

    note = sampling.rate_note(loaded("humanml3d", 251, 20.0))
    assert note.startswith("warning: this run read its data at data.fps=20, but its KIT-ML-layout features")
    assert "are 12.5 fps motion" in note and "1.6x too fast" in note
    assert "2x too slow" in sampling.rate_note(loaded("humanml3d", 263, 10.0))
    for args in (
        ("humanml3d", 251, 12.5),
        ("humanml3d", 263, 20.0),
        ("positions", 264, 60.0),
        ("humanml3d", 12, 7.0),
    ):
        assert sampling.rate_note(loaded(*args)) is None, args


def test_a_length_below_the_runs_shortest_training_clip_is_noted():
    """HumanML3D's runs train on clips of 40 frames or more (data.min_motion_length); sampling 10 frames
    said nothing of it. At or above the limit, or for a run without one (1), there is no note."""
    import ml_collections

    def loaded(shortest, longest=196):
        data = ml_collections.ConfigDict({"min_motion_length": shortest, "max_motion_length": longest})
        return types.SimpleNamespace(config=ml_collections.ConfigDict({"data": data}))

    note = sampling.short_length_note(loaded(40), 10)
    assert "sample.num_frames=10" in note and "data.min_motion_length=40" in note
    assert sampling.short_length_note(loaded(40), 40) is None
    assert sampling.short_length_note(loaded(1), 1) is None
    # Windows of 30 frames cut from clips of 40 or more: every sample it trained on was 30 frames long,
    # and it had said of 30 frames that "the model never drew motion this short".
    assert sampling.short_length_note(loaded(40, 30), 30) is None
    note = sampling.short_length_note(loaded(40, 30), 20)
    assert "sample.num_frames=20" in note and "windows of data.max_motion_length=30 frames" in note


def test_ground_offset_and_bvh_channels_take_one_sample_and_refuse_a_batch():
    """generate returns batches ([N, T, J, 3], [N, T, D]); ground_offset and bvh_channels take one sample.
    A batch given by mistake was read as one sample (ground_offset took the first sample's joint 1 over
    all its frames: a wrong shift without an error); it is refused, saying what to pass."""
    positions = np.zeros((4, 3, 3))
    positions[0, :, 1] = [-2.0, 5.0, 1.0]  # the first frame's lowest joint at y = -2
    positions[1:, :, 1] = -9.0  # later frames are not read
    np.testing.assert_array_equal(sampling.ground_offset(positions), [0.0, 2.0, 0.0])
    batch = np.stack([positions, positions + 1.0])
    with pytest.raises(ValueError, match=r"\[T, J, 3\].*\[2, 4, 3, 3\].*positions\[i, :lengths\[i\]\]"):
        sampling.ground_offset(batch)
    skeleton = beat_skeleton()
    features = np.zeros((2, 5, representation.feature_size(skeleton, "axis_angle")), np.float32)
    with pytest.raises(ValueError, match=r"\[T, D\].*motion\[i, :lengths\[i\]\]"):
        sampling.bvh_channels(features, skeleton)
    euler, translation = sampling.bvh_channels(features[0], skeleton)
    assert euler.shape == (5, int((~skeleton.end_sites).sum()), 3) and translation.shape == (5, 3)
    np.testing.assert_array_equal(euler, 0.0)  # zero rotations: zero angles


def test_captions_that_are_lines_of_a_humanml3d_caption_file_are_noted():
    """A HumanML3D texts/<id>.txt given as sample.text_file had been sampled line by line, tags and
    seconds included ("a person walks.#a/DET person/NOUN walk/VERB#0.0#0.0"), said only as unseen words
    ('#', '/', 'det', ...): training had read the caption before the first '#'."""
    lines = [
        "a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0",
        "wave",
        "someone jumps.#someone/PRON jump/VERB#0.5#1.8",
        "a man waves#a/DET man/NOUN wave/VERB##",  # empty spans: whole clips, as the loader reads them
    ]
    note = sampling.caption_line_note(lines)
    assert note.startswith("note: 3 of the 4 captions read as lines of a HumanML3D caption file"), note
    assert "e.g. number 1, 'a person walks forward.#a/DET" in note
    assert "the part before the first '#' ('a person walks forward.')" in note
    # Captions that hold a '#' but are not such lines: no note.
    assert sampling.caption_line_note(["press button #1", "a#b#c#d", "wave", "walk # then # stop"]) is None


def test_a_later_checkpoint_under_another_name_is_named_when_sampling(tmp_path):
    """checkpoints/7 renamed `best` beside checkpoints/3: Orbax reads 3 as the latest, and sampling had
    used it without a word; asked for step 7, it had listed [3] alone. Both now name the folder, the step
    its train_state holds and the mv that makes it readable."""
    from motion_ddpm_jax.errors import ProjectWarning

    write_checkpoint(tmp_path / "run", step=3)
    write_checkpoint(tmp_path / "run", step=7)
    folder = tmp_path / "run" / "checkpoints"
    (folder / "7").rename(folder / "best")
    mv = re.escape(f"mv {folder}/best {folder}/7")
    with pytest.warns(ProjectWarning, match=rf"checkpoints/3 is the latest .*best \(training step 7\).*{mv}"):
        assert sampling.load_model(tmp_path / "run").step == 3
    with pytest.raises(
        checkpoint.CheckpointError, match=rf"no checkpoint at step 7; available: \[3\]; .*{mv}"
    ):
        sampling.load_model(tmp_path / "run", step=7)
    (folder / "best").rename(folder / "7")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ProjectWarning)
        assert sampling.load_model(tmp_path / "run").step == 7
