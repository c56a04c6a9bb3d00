"""The optimizer chain, the learning-rate schedule and the parameter EMA against closed forms."""

import json
import math
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from motion_ddpm_jax import train
from motion_ddpm_jax.config import base_config


def optim(**overrides):
    config = base_config().optim
    config.update(overrides)
    return config


def reference_lr(step, lr, min_lr, warmup, total, start=0.1):
    """torch's SequentialLR(LinearLR(start, 1, warmup), CosineAnnealingLR(total - warmup, min_lr))."""
    if step < warmup:
        return lr * (start + (1 - start) * step / warmup)
    progress = min(step - warmup, total - warmup) / (total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("total,warmup", [(10_000, 500), (2_000, 37)])
def test_learning_rate_follows_warmup_then_cosine(total, warmup):
    config = optim()
    schedule = train.learning_rate_schedule(config, total, warmup)
    for step in [0, 1, warmup // 2, warmup, warmup + 1, (warmup + total) // 2, total - 1, total, total + 50]:
        want = reference_lr(step, 1e-4, 1e-6, warmup, total)
        np.testing.assert_allclose(train.learning_rate_at(schedule, step), want, rtol=2e-5, err_msg=str(step))
    assert float(train.learning_rate_at(schedule, 0)) == pytest.approx(1e-5)
    assert float(train.learning_rate_at(schedule, total)) == pytest.approx(1e-6)


@pytest.mark.parametrize("total,warmup", [(10, 30), (10, 9), (1, 5)])
def test_a_run_shorter_than_its_warmup_climbs_to_lr_by_its_last_update_and_says_so(total, warmup):
    """A run of `total` steps with a longer warmup warms up over total - 1 steps (its last update at lr),
    and its `data:` line names that warmup, not the configured one (a 10-step run said "warmup 30 steps")."""
    config = optim()
    applied = max(min(warmup, total - 1), 0)
    schedule = train.learning_rate_schedule(config, total, warmup)
    for step in range(total + 1):
        want = reference_lr(step, 1e-4, 1e-6, applied, total) if applied else (1e-4 if step < total else 1e-6)
        np.testing.assert_allclose(train.learning_rate_at(schedule, step), want, rtol=2e-5, err_msg=str(step))
    if applied == warmup:
        assert train.warmup_note(warmup, total) == f"warmup {warmup} steps"
    else:
        assert train.warmup_note(warmup, total) == (
            f"warmup {applied} steps (the run is shorter than its warmup of {warmup} steps)"
        )


def test_default_warmup_is_min_of_500_and_an_epoch():
    config = optim()
    assert train.warmup_steps(config, 120) == 120
    assert train.warmup_steps(config, 5000) == 500
    config.warmup_steps = 42
    assert train.warmup_steps(config, 5000) == 42


def toy_params():
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "bias": jnp.ones(3, jnp.float32),
        },
        "norm": {"scale": jnp.ones(3, jnp.float32)},
    }


def setup(**overrides):
    config = optim(**overrides)
    schedule = train.learning_rate_schedule(config, 100, 10)
    optimizer, ema = train.make_optimizer(config, schedule), train.make_ema(config)
    return config, optimizer, ema, train.create_train_state(toy_params(), optimizer, ema, seed=0)


def test_clipping_bounds_the_gradient_that_reaches_adam():
    _, optimizer, ema, state = setup(b1=0.5)
    grads = jax.tree.map(lambda p: 10.0 * jnp.ones_like(p), state.params)
    state = train.apply_gradients(state, grads, optimizer, ema)
    adam_state = state.opt_state.inner_state[1][0]
    # Adam's first moment after one step is (1 - b1) * (the clipped gradient).
    clipped_norm = float(train.global_norm(adam_state.mu)) / 0.5
    assert clipped_norm == pytest.approx(0.5, rel=1e-5)
    direction = jax.tree.map(lambda m: m / 0.5, adam_state.mu)
    expected = 0.5 / math.sqrt(10.0**2 * (12 + 3 + 3))
    np.testing.assert_allclose(np.asarray(direction["dense"]["kernel"]), 10.0 * expected, rtol=1e-5)


@pytest.mark.parametrize("scale", [10.0, 0.01])
def test_clip_by_global_norm_scales_to_the_norm_in_float64(scale):
    """Gradients above the limit come out with global norm exactly clip_norm and their direction
    unchanged; below it they pass untouched (float64 reference), as optax.clip_by_global_norm's do."""
    rng = np.random.default_rng(4)
    grads = {"a": rng.normal(size=(6, 5)) * scale, "b": rng.normal(size=7) * scale}
    norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads.values()))
    factor = min(1.0, 0.5 / norm)
    clip = train.clip_by_global_norm(0.5)
    f32 = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), grads)
    got, _ = jax.jit(clip.update)(f32, clip.init(f32))
    theirs, _ = optax.clip_by_global_norm(0.5).update(f32, optax.EmptyState())
    for name, g in grads.items():
        want = g.astype(np.float32).astype(np.float64) * factor
        np.testing.assert_allclose(np.asarray(got[name], np.float64), want, rtol=2e-7, atol=0)
        np.testing.assert_allclose(got[name], theirs[name], rtol=2e-7, atol=0)
    if scale < 1:  # below the limit: the very same values
        jax.tree.map(np.testing.assert_array_equal, got, f32)


def test_apply_gradients_equals_the_optimizer_update_then_the_parameter_update():
    """The fused step (update, parameters and EMA in one conditional) gives the values of the plain
    optax sequence: `optimizer.update`, `optax.apply_updates`, `ema.update`."""
    _, optimizer, ema, state = setup(ema_decay=0.9)
    rng = np.random.default_rng(8)
    plain = state
    step = jax.jit(lambda s, g: train.apply_gradients(s, g, optimizer, ema))
    for _ in range(3):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), state.params)
        state = step(state, grads)
        updates, opt_state = optimizer.update(grads, plain.opt_state, plain.params)
        params = optax.apply_updates(plain.params, updates)
        _, ema_state = ema.update(params, plain.ema_state)
        plain = plain.replace(params=params, opt_state=opt_state, ema_state=ema_state)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # noqa: E731
    jax.tree.map(close, state.params, plain.params)
    jax.tree.map(close, state.ema_state.ema, plain.ema_state.ema)
    jax.tree.map(close, state.opt_state.inner_state, plain.opt_state.inner_state)
    assert int(state.ema_state.count) == int(plain.ema_state.count) == 3


def test_a_gradient_norm_beyond_float32_is_skipped_as_non_finite():
    """Every gradient finite but their squared norm beyond float32's range: the norm is inf, clipping
    would scale the step to 0, and the step is skipped and counted instead (by the optimizer alone and
    by apply_gradients alike)."""
    _, optimizer, ema, state = setup()
    huge = jax.tree.map(lambda p: jnp.full_like(p, 3e19), state.params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(huge))
    assert not bool(train.gradients_are_finite(huge))
    after = train.apply_gradients(state, huge, optimizer, ema)
    jax.tree.map(np.testing.assert_array_equal, after.params, state.params)
    assert tuple(int(c) for c in train.nonfinite_counts(after.opt_state)) == (1, 1)
    updates, opt_state = optimizer.update(huge, state.opt_state, state.params)
    assert all(not np.any(np.asarray(u)) for u in jax.tree.leaves(updates))
    assert not bool(train.last_step_was_finite(opt_state))


def test_apply_gradients_names_the_optimizer_it_needs():
    _, _, ema, state = setup()
    plain = optax.adam(1e-3)
    with pytest.raises(TypeError, match="make_optimizer"):
        train.apply_gradients(state, state.params, plain, ema)


def test_weight_decay_spares_biases_and_norm_scales():
    _, optimizer, ema, state = setup(weight_decay=0.1)
    zero = jax.tree.map(jnp.zeros_like, state.params)
    new = train.apply_gradients(state, zero, optimizer, ema)
    lr0 = 1e-5
    np.testing.assert_allclose(
        new.params["dense"]["kernel"], state.params["dense"]["kernel"] * (1 - lr0 * 0.1), rtol=1e-6
    )
    np.testing.assert_array_equal(new.params["dense"]["bias"], state.params["dense"]["bias"])
    np.testing.assert_array_equal(new.params["norm"]["scale"], state.params["norm"]["scale"])


def test_ema_is_the_debiased_average_of_the_fed_parameters():
    config = optim(ema_decay=0.9)
    ema = train.make_ema(config)
    rng = np.random.default_rng(1)
    sequence = [rng.normal(size=(5,)) for _ in range(7)]
    state = ema.init(jnp.zeros(5, jnp.float32))
    for p in sequence:
        _, state = ema.update(jnp.asarray(p, jnp.float32), state)
    d, n = 0.9, len(sequence)
    want = sum((1 - d) * d ** (n - 1 - k) * p for k, p in enumerate(sequence)) / (1 - d**n)
    got = train.ema_params(state, config, jnp.zeros(5, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_ema_with_the_default_decay_keeps_float32_precision():
    """0.9999 as a float32 array: a constant parameter stays constant to float32 precision after debiasing,
    at every count (1 - decay ** count in float32 cancelled: up to 1e-4 relative in the first steps)."""
    config = optim()
    ema = train.make_ema(config)
    state = ema.init(jnp.zeros(3, jnp.float32))
    for count in range(1, 41):
        _, state = ema.update(jnp.full(3, 2.0, jnp.float32), state)
        got = np.asarray(train.ema_params(state, config, jnp.zeros(3)))
        np.testing.assert_allclose(got, 2.0, rtol=1e-6, err_msg=f"count {count}")


def test_an_ema_not_yet_fed_gives_the_parameters_themselves():
    """Count 0 (a checkpoint before the first step, or only skipped steps so far): the debiasing would
    divide by 1 - decay ** 0 = 0; the parameters stand in for the average. Once fed, the average."""
    config = optim(ema_decay=0.9)
    ema = train.make_ema(config)
    params = jnp.asarray([1.0, -2.0, 3.0], jnp.float32)
    state = ema.init(params)
    np.testing.assert_array_equal(np.asarray(train.ema_params(state, config, params)), [1.0, -2.0, 3.0])
    _, state = ema.update(params + 1.0, state)
    np.testing.assert_allclose(
        np.asarray(train.ema_params(state, config, params)), [2.0, -1.0, 4.0], rtol=1e-6
    )


def test_ema_is_fed_the_new_parameters_and_does_not_touch_training():
    _, optimizer, ema, state = setup(ema_decay=0.5)
    rng = np.random.default_rng(2)
    plain = state
    history = []
    step = jax.jit(lambda s, g: train.apply_gradients(s, g, optimizer, ema))
    for _ in range(4):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), state.params)
        state = step(state, grads)
        updates, opt_state = optimizer.update(grads, plain.opt_state, plain.params)
        plain = plain.replace(
            params=jax.tree.map(lambda p, u: p + u, plain.params, updates), opt_state=opt_state
        )
        history.append(state.params)
    # Training with the EMA gives bit-identical raw parameters to training without it.
    jax.tree.map(np.testing.assert_array_equal, state.params, plain.params)
    d = 0.5
    want = jax.tree.map(
        lambda *ps: sum((1 - d) * d ** (3 - k) * np.asarray(p) for k, p in enumerate(ps)) / (1 - d**4),
        *history,
    )
    got = train.ema_params(state.ema_state, optim(ema_decay=0.5), state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_non_finite_gradients_skip_the_update_and_the_ema():
    config, optimizer, ema, state = setup()
    good = jax.tree.map(jnp.ones_like, state.params)
    state = train.apply_gradients(state, good, optimizer, ema)
    bad = jax.tree.map(lambda p: p.at[0].set(jnp.nan), good)
    after = train.apply_gradients(state, bad, optimizer, ema)
    jax.tree.map(np.testing.assert_array_equal, after.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, after.ema_state.ema, state.ema_state.ema)
    assert int(after.step) == int(state.step) + 1
    consecutive, total = train.nonfinite_counts(after.opt_state)
    assert (int(consecutive), int(total)) == (1, 1)
    resumed = train.apply_gradients(after, good, optimizer, ema)
    assert int(train.nonfinite_counts(resumed.opt_state)[0]) == 0
    assert not np.array_equal(resumed.params["dense"]["bias"], state.params["dense"]["bias"])


def test_ema_every_feeds_only_every_nth_step():
    _, optimizer, ema, state = setup(ema_decay=0.5)
    grads = jax.tree.map(jnp.ones_like, state.params)
    counts = []
    for _ in range(6):
        state = train.apply_gradients(state, grads, optimizer, ema, ema_every=3)
        counts.append(int(state.ema_state.count))
    assert counts == [0, 0, 1, 1, 1, 2]


def test_state_is_float32_whatever_the_input():
    _, optimizer, ema, _ = setup()
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), toy_params())
    state = train.create_train_state(params, optimizer, ema, seed=3)
    for leaf in jax.tree.leaves((state.params, state.ema_state.ema)):
        assert leaf.dtype == jnp.float32
    assert state.rng.dtype == jnp.uint32


@pytest.mark.parametrize("total", [1, 2, 4])
def test_a_run_shorter_than_its_warmup_still_has_a_schedule(total):
    config = optim(lr=1e-3, min_lr=1e-6)
    schedule = train.learning_rate_schedule(config, total, warmup=10)
    values = [float(train.learning_rate_at(schedule, s)) for s in range(total + 1)]
    assert all(np.isfinite(values))
    assert values[total] == pytest.approx(1e-6, rel=1e-5)
    assert values[0] == pytest.approx(1e-4 if total > 1 else 1e-3, rel=1e-5)


@pytest.mark.parametrize("metres_per_unit", [1.0, 0.01, 0.001])  # metres, centimetres, millimetres
def test_training_with_the_centimetre_geometric_weight_on_a_figure_in_metres_or_millimetres_is_warned_of(
    tmp_path, metres_per_unit
):
    """The geometric loss is in the data's unit squared and loss.geometric_weight's default (0.01) weighs a
    centimetre figure's: a run on a 1.7 m figure written in metres (an SMPL user's arrays) or millimetres
    is told the weight that weighs it as in centimetres, 0.01 x (centimetres per unit)^2; a run that set
    the weight, or trains without the loss, or on centimetres, is told nothing."""
    import warnings

    from motion_ddpm_jax.config import base_config
    from motion_ddpm_jax.data import motion_text
    from motion_ddpm_jax.skeleton import Skeleton

    offsets = np.array([[0, 0, 0], [0, 0.8, 0], [0, 0.7, 0], [0, -0.2, 0.0]]) / metres_per_unit  # 1.7 m
    skeleton = Skeleton(("hips", "spine", "head", "toe"), np.array([-1, 0, 1, 0]), offsets)
    motions = (np.random.default_rng(0).normal(size=(12, 3 + 6 * 4)).astype(np.float32),)
    splits = {"train": motion_text.Split("train", ("a",), motions, (("walks",),))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = {"representation": "rotation_6d", "fps": 20.0}
        dataset = motion_text.write_dataset(tmp_path / "data", splits, info, skeleton)
    config = base_config()
    message = train.geometric_unit_warning(config, dataset)
    if metres_per_unit == 0.01:
        assert message is None
        return
    weight = 0.01 * (metres_per_unit * 100) ** 2  # 100 for metres, 0.0001 for millimetres
    unit = "metres" if metres_per_unit == 1.0 else "millimetres"
    extent = 1.7 / metres_per_unit
    assert f"spans {extent:.3g} units, a figure in {unit}" in message
    assert f"--config.loss.geometric_weight={weight:g} weighs it as in centimetres" in message
    config.loss.geometric_weight = weight
    assert train.geometric_unit_warning(config, dataset) is None
    config.loss.geometric_weight, config.loss.use_geometric_loss = 0.01, False
    assert train.geometric_unit_warning(config, dataset) is None


def test_a_model_too_narrow_for_epsilon_prediction_is_warned_about():
    """Measured on the demo: latent 128 < 264 features with epsilon prediction stalled at loss ~0.54
    (= 136/264) and sampled motion ~500 std units off; x0 prediction is fine at the same width."""
    from motion_ddpm_jax.config import base_config

    config = base_config()
    config.model.latent_dim = 128
    message = train.bottleneck_warning(config, 264)
    assert "latent_dim=128" in message and "0.52" in message and "diffusion.prediction=x0" in message
    config.diffusion.prediction = "x0"
    assert train.bottleneck_warning(config, 264) is None
    config.diffusion.prediction = "v"
    assert train.bottleneck_warning(config, 264) is not None
    config.model.latent_dim = 512
    assert train.bottleneck_warning(config, 264) is None


def test_metrics_log_writes_strict_json_with_non_finite_values_as_null(tmp_path, capsys):
    """metrics.jsonl is strict JSON (no NaN / Infinity tokens, which jq and JavaScript refuse): a diverged
    value is null, the finite ones and numpy scalars as their numbers; the training curves still plot it."""
    from motion_ddpm_jax import render

    log = train.MetricsLog(tmp_path, total=100, enabled=True)
    values = {"loss": float("nan"), "loss_geom": np.float32(0.25), "lr": 1e-4, "grad_norm": float("inf")}
    values |= {"skipped_steps": 1.0, "steps_per_s": 2.0, "samples_per_s": -float("inf")}
    log.write(50, values)
    log.write(100, {**values, "loss": 0.5})
    log.close()

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    lines = (tmp_path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line, parse_constant=refuse) for line in lines]
    assert rows[0] == {
        "step": 50, "loss": None, "loss_geom": 0.25, "lr": 1e-4, "grad_norm": None,
        "skipped_steps": 1.0, "steps_per_s": 2.0, "samples_per_s": None,
    }  # fmt: skip
    assert rows[1]["loss"] == 0.5 and "nan" in capsys.readouterr().out  # the console still says what it was
    figure = render.training_curves_figure(tmp_path / "metrics.jsonl")
    points = {line.get_label(): list(line.get_xdata()) for line in figure.axes[0].get_lines()}
    assert points == {"loss": [100], "loss_geom": [50, 100]}  # loss: its one finite row


def test_resuming_on_other_statistics_names_only_what_differs(tmp_path):
    """check_same_data: a dataset whose means moved by 0.5 std (stds equal) is refused saying so, without
    a 'stds by up to 0%'; one whose stds grew 10% names the stds alone; a change under 1e-4 passes."""
    from types import SimpleNamespace

    from motion_ddpm_jax import checkpoint

    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 1.0])
    saved = {"mean": mean.tolist(), "std": std.tolist()}

    def dataset(new_mean, new_std):
        return SimpleNamespace(root=tmp_path / "data", mean=np.asarray(new_mean), std=np.asarray(new_std))

    with pytest.raises(checkpoint.CheckpointError, match=r"differ \(means by up to 0\.5 std\), and"):
        train.check_same_data(saved, dataset(mean + [0.0, 2.0, 0.0], std), tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match=r"differ \(stds by up to 10%\), and"):
        train.check_same_data(saved, dataset(mean, std * [1.0, 1.1, 1.0]), tmp_path)
    train.check_same_data(saved, dataset(mean + 1e-6, std * (1 + 1e-6)), tmp_path)


def test_resuming_a_fine_tuned_run_on_other_data_does_not_blame_its_normalisation(tmp_path):
    """A run started from another's weights normalises with the source's statistics whatever data it reads;
    resumed on other data (here the source's own, whose statistics are exactly those it normalises with),
    the refusal said its "normalisation statistics differ" and that it would train "under other
    statistics", neither of which holds: it names the data it fine-tuned on instead, measured against them
    (float64 numpy: |1 - 3| / 0.5 = 4 std)."""
    from types import SimpleNamespace

    from motion_ddpm_jax import checkpoint

    source_mean, source_std = np.array([1.0, 2.0]), np.array([1.0, 1.0])
    own_mean, own_std = np.array([3.0, 2.0]), np.array([0.5, 1.0])
    saved = {
        "mean": source_mean.tolist(),
        "std": source_std.tolist(),
        "init_from": {
            "workdir": "/runs/source",
            "data_statistics": {"mean": own_mean.tolist(), "std": own_std.tolist()},
        },
    }
    on_source_data = SimpleNamespace(root=tmp_path / "source_data", mean=source_mean, std=source_std)
    with pytest.raises(checkpoint.CheckpointError) as refused:
        train.check_same_data(saved, on_source_data, tmp_path)
    said = str(refused.value)
    assert "data it fine-tuned on differ (means by up to 4 std, stds by up to 100%" in said
    assert "/runs/source" in said and "under other statistics" not in said
    train.check_same_data(saved, SimpleNamespace(root=tmp_path / "own", mean=own_mean, std=own_std), tmp_path)


def test_a_workdir_of_another_config_names_every_differing_field_or_how_many_more(tmp_path):
    """The refusal listed the first 8 differing fields and dropped the rest without a word."""
    from motion_ddpm_jax.config import base_config

    started = base_config()
    train.write_run_record(tmp_path, started)
    changed = base_config()
    for field in ("num_layers", "latent_dim", "num_heads", "ff_size", "dropout", "text_latent_dim"):
        changed.model[field] = changed.model[field] * 2 if field != "dropout" else 0.5
    changed.optim.lr, changed.seed, changed.diffusion.steps, changed.loss.velocity_weight = 1e-3, 7, 500, 1.0
    with pytest.raises(train.WorkdirError, match=r"differs in .*model\.num_layers.* and 2 more \(see"):
        train.claim_workdir(tmp_path, changed)
    only_two = base_config()
    only_two.optim.lr, only_two.model.num_layers = 1e-3, 3  # the run's values, then this config's
    with pytest.raises(
        train.WorkdirError,
        match=r"differs in model\.num_layers \(8 -> 3\), optim\.lr \(0\.0001 -> 0\.001\) \(see",
    ):
        train.claim_workdir(tmp_path, only_two)


def test_auto_precision_that_resolves_otherwise_on_a_resumes_backend_is_noted():
    """model.compute_dtype=auto is bfloat16 on a GPU or TPU and float32 on a CPU: a CPU run requeued on a
    GPU (or back) mixes precisions, and says so; a named dtype, the same backend or an unrecorded one
    (a checkpoint from before the record) say nothing."""
    note = train.precision_change("auto", "gpu", "cpu", 20)
    assert note.startswith(
        "model.compute_dtype=auto: the run computed in bfloat16 on gpu up to checkpoint 20"
    )
    assert "computes in float32 on cpu from here" in note
    assert "in float32 on cpu up to" in train.precision_change("auto", "cpu", "tpu", 5)
    for args in (
        ("float32", "gpu", "cpu"),
        ("auto", "cpu", "cpu"),
        ("auto", "gpu", "tpu"),
        ("auto", None, "cpu"),
    ):
        assert train.precision_change(*args, 1) is None, args


def test_a_run_record_cut_short_leaves_the_workdir_to_the_rerun(tmp_path, monkeypatch):
    """A run killed, or out of disk, while writing run.json left .run.json.tmp, and the rerun was refused
    as someone else's folder. Such a file (and the lock file) counts as nothing of a user's; a failed
    write removes its own and names the record."""
    import errno

    from motion_ddpm_jax.config import base_config

    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".run.json.tmp").write_text('{"config": {"da')  # cut short
    (workdir / train.LOCK).write_text("pid 1 on elsewhere\n")
    assert train.claim_workdir(workdir, base_config()) is True  # it still needs its record
    (workdir / "notes.txt").write_text("mine")
    with pytest.raises(train.WorkdirError, match=r"is not empty \(notes\.txt\)"):
        train.claim_workdir(workdir, base_config())

    real_write = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        real_write(self, text[:100], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "other").mkdir()
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match=r"writing the run record .*run\.json: No space left on device"):
        train.write_run_record(tmp_path / "other", base_config())
    assert list((tmp_path / "other").iterdir()) == []


def test_importing_train_loads_neither_tensorboardx_nor_torch():
    """config, sample and eval import train.py's helpers: tensorboardX, which imports torch where it is
    installed (1.4 s at every start: `launch.py --mode config` took 4.4-5.2 s, 2.2-2.5 s without), is
    loaded only by a run that writes TensorBoard logs."""
    code = "import sys, motion_ddpm_jax.train; print('tensorboardX' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def tiny_run_config(data: Path, **train_fields):
    """The tiny model of tests/tiny_run.py on the small synthetic BEAT-format set of `tiny_data` (its raw
    files and prepared folder under `data`), for runs of `train.run` in this process."""
    from tiny_run import TINY_MODEL

    config = base_config()
    for arg in TINY_MODEL:
        key, value = arg.removeprefix("--config.").split("=", 1)
        section, field = key.split(".")
        config[section][field] = type(config[section][field])(value)
    config.data.update(source="beat", raw_root=str(data / "raw"), root=str(data / "prepared"), fps=30.0)
    config.diffusion.prediction = "x0"  # the tiny latent cannot carry epsilon (the run would warn)
    config.train.update(save_every_epochs=0, **train_fields)
    return config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A small synthetic BEAT-format set, written and prepared once for this module's runs of `train.run`:
    they read it and write only into their own workdirs (each run had written and prepared a set of its
    own, the same one: 8 of them in this module)."""
    from motion_ddpm_jax.data import beat, synthetic

    data = tmp_path_factory.mktemp("tiny_data")
    synthetic.write_demo_dataset(
        data / "raw", num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30
    )
    beat.prepare_from_config(tiny_run_config(data).data, log=lambda *_: None)
    return data


@pytest.fixture(scope="module")
def five_steps(tiny_data, tmp_path_factory):
    """A run of 5 steps of 5 (warmup 2, rows at steps 3 and 5, its checkpoint at step 5) and what it said:
    test_a_run_says_what_it_trains_on reads its `data:` line, and
    test_resuming_a_run_an_earlier_version_logged_... resumes copies of it (one run where each had its
    own)."""
    config = tiny_run_config(tiny_data, num_steps=5, batch_size=5, log_every=3, save_every_steps=0)
    config.optim.warmup_steps = 2
    workdir, lines = tmp_path_factory.mktemp("five_steps") / "run", []
    train.run(config, workdir, log=lines.append)
    return types.SimpleNamespace(config=config, workdir=workdir, lines=lines)


def test_a_run_says_what_it_trains_on(tiny_data, five_steps):
    """A run on data already prepared said nothing of them (prepare's line comes only when it prepares):
    it names the folder, its training clips, features and rate, the window, and the epochs its steps
    make, counted here from the prepared files."""
    config, lines = five_steps.config, five_steps.lines
    root = tiny_data / "prepared"
    clips = [c for c in (root / "train.txt").read_text().split() if c]
    features = np.load(root / "motions" / f"{clips[0]}.npy").shape[1]
    said = [line for line in lines if line.startswith("data: ")]
    assert said == [
        f"data: {root}: {len(clips)} training clips of positions motion ({features} features at 30 fps), "
        f"windows of up to {config.data.max_motion_length} frames; 5 steps of 5: about "
        f"{5 * 5 / len(clips):.3g} epochs, warmup 2 steps"
    ], lines


def test_a_run_of_epochs_that_leave_many_clips_past_the_last_whole_batch_says_why(tmp_path, tiny_data):
    """train.num_epochs counts num_clips // batch steps an epoch: with a batch of about half the clips an
    epoch is one step and the run read about half the epochs asked, which its `data:` line showed (about
    E epochs) without a word of why. Counted here from the prepared files: N clips, batch N // 2 + 1."""
    lines = []
    config = tiny_run_config(tiny_data, num_steps=0, num_epochs=2, log_every=1, save_every_steps=0)
    config.optim.warmup_steps = 0
    root = tiny_data / "prepared"
    clips = len([c for c in (root / "train.txt").read_text().split() if c])
    batch = clips // 2 + 1  # one whole batch an epoch; clips - batch (about half) past it
    config.train.batch_size = batch
    summary = train.run(config, tmp_path / "run", log=lines.append)
    assert summary["steps"] == 2
    (said,) = [line for line in lines if line.startswith("data: ")]
    assert said.endswith(
        f"2 steps of {batch}: about {2 * batch / clips:.3g} epochs, warmup 0 steps (train.num_epochs=2 "
        f"counts 1 step an epoch, {clips} clips // {batch}, as a loader that drops each epoch's last "
        f"partial batch; --config.train.num_steps={-(-2 * clips // batch)} makes 2 epochs)"
    ), said
    assert train.epoch_count_note(config.train, 2 * batch, batch) == ""  # no clip past the whole batches
    config.train.num_steps = 7
    assert train.epoch_count_note(config.train, clips, batch) == ""  # a length in steps: nothing to say


def _spin_for(seconds: float):
    """(spin, count, took): a function of products of a 512 x 512 matrix, `count` of them, that took `took`
    >= `seconds` alone here (timed after compiling; the count traced, so one program for any count)."""
    matrix = jnp.asarray(np.random.default_rng(0).normal(size=(512, 512)) / 32, jnp.float32)

    def spin(count):
        return jax.lax.fori_loop(0, count, lambda _, x: jnp.tanh(x @ matrix), matrix)[0, 0]

    timed, count = jax.jit(spin), 8
    timed(count).block_until_ready()  # compiled
    while True:
        began = time.perf_counter()
        timed(count).block_until_ready()
        took = time.perf_counter() - began
        if took >= seconds:
            return spin, count, took
        count *= 2


def _steps_that_also(monkeypatch, work):
    """train.run's steps each followed by `work(state)` (a float32 scalar of the state before the step),
    which the step waits for: its result feeds the new step number, adding 0, which XLA cannot know."""
    real_make_train_step = train.make_train_step

    def make_train_step(*args, **kwargs):
        step_fn = real_make_train_step(*args, **kwargs)

        def step(state, batch, rng):
            new_state, metrics = step_fn(state, batch, rng)
            waited = jnp.isnan(work(state)).astype(new_state.step.dtype)
            return new_state.replace(step=new_state.step + waited), metrics

        return step

    monkeypatch.setattr(train, "make_train_step", make_train_step)


def _steps_per_second(tmp_path, data, num_steps: int, log_every: int) -> list[dict]:
    config = tiny_run_config(data, num_steps=num_steps, log_every=log_every, save_every_steps=0)
    train.run(config, tmp_path / "run", log=lambda *_: None)
    return [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]


def test_the_first_rows_steps_per_second_leaves_out_the_first_run_of_the_step(
    tmp_path, tiny_data, monkeypatch
):
    """The first row's steps/s is the training's rate like the others'. The first call of the compiled step
    returns once it is compiled, before the step has run, and that first run also sets up the program's
    buffers and threads: on 2 CPU cores a tiny model's first step took 0.2 s against 5-8 ms for the later
    ones, so the first row read 4.5 steps/s against 130 (log_every=1) and 38-65 against 150-190 (10).
    Here train.py reads a clock of the steps' own (no wall clock, which a loaded machine slows): each step,
    as it runs, moves it on by 1 s, and the first by 1000 s. Read after the first step has run, every row
    reads exactly 1 step/s; counted, the first run would make the first row 2 / 1001."""
    ran: dict[int, float] = {}  # step -> the seconds it adds (once, whatever the number of devices)

    def runs(step):
        ran.setdefault(int(step), 1000.0 if int(step) == 0 else 1.0)
        return np.float32(0)

    _steps_that_also(
        monkeypatch,
        lambda state: jax.pure_callback(runs, jax.ShapeDtypeStruct((), jnp.float32), state.step),
    )
    monkeypatch.setattr(
        train, "time", types.SimpleNamespace(**{**vars(time), "perf_counter": lambda: sum(ran.values())})
    )
    rows = _steps_per_second(tmp_path, tiny_data, num_steps=6, log_every=2)
    assert sorted(ran) == [0, 1, 2, 3, 4, 5]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert [r["steps_per_s"] for r in rows] == [1.0, 1.0, 1.0], rows


def test_a_rows_steps_per_second_counts_steps_that_ran_not_steps_queued(tmp_path, tiny_data, monkeypatch):
    """steps/s is the rate at which steps ran. The compiled step returns before it has run (jax dispatches
    asynchronously), so a clock read when the last step of a window is queued, not done, overstates that
    window's rate and understates the next one's: on 2 CPU cores a KIT-ML run's first row read 30-58 steps/s
    against 5 for the later ones. Here every step multiplies matrices for at least `slow` seconds (as many as
    took that long alone, timed first, and each step waits for the last): no row may read more than
    1 / slow steps/s (2 / slow allowed, for a machine whose load changed since the timing)."""
    spin, count, slow = _spin_for(0.3)
    _steps_that_also(monkeypatch, lambda state: spin(count))
    rows = _steps_per_second(tmp_path, tiny_data, num_steps=7, log_every=3)
    assert [r["step"] for r in rows] == [3, 6, 7]
    assert all(0 < r["steps_per_s"] <= 2 / slow for r in rows), (slow, rows)


def test_a_log_row_holds_the_means_of_its_steps_and_leaves_out_skipped_ones(tmp_path, tiny_data, monkeypatch):
    """Each row's loss terms and grad_norm are the means (float64, here) of the per-step values of the steps
    since the row before, as a run logging every step gives them (the same steps: log_every changes no
    training); a step skipped for non-finite gradients (a NaN batch) is left out of its row's means and
    counted in skipped_steps; lr is the row's step's own. The last row may hold fewer steps (7: 3 + 3 + 1)."""
    from motion_ddpm_jax.data import pipeline

    real_batch = pipeline.BatchSource.batch

    def batch(self, step):
        out = real_batch(self, step)
        return {**out, "motion": np.full_like(out["motion"], np.nan)} if step == 4 else out

    monkeypatch.setattr(pipeline.BatchSource, "batch", batch)
    rows = {}
    for every in (1, 3):
        config = tiny_run_config(tiny_data, num_steps=7, log_every=every, save_every_steps=0)
        train.run(config, tmp_path / str(every) / "run", log=lambda *_: None)
        lines = (tmp_path / str(every) / "run" / "metrics.jsonl").read_text().splitlines()
        rows[every] = [json.loads(line) for line in lines]
    single, windows = rows[1], rows[3]
    assert [r["step"] for r in single] == list(range(1, 8)) and [r["step"] for r in windows] == [3, 6, 7]
    assert single[4]["loss"] is None and single[4]["skipped_steps"] == 1.0  # step 5 ran batch 4
    names = [k for k in single[0] if k.startswith("loss")] + ["grad_norm"]
    for row, steps in zip(windows, ([1, 2, 3], [4, 5, 6], [7]), strict=True):
        for name in names:
            values = [single[s - 1][name] for s in steps if single[s - 1][name] is not None]
            assert row[name] == pytest.approx(float(np.mean(np.asarray(values, np.float64))), rel=1e-6), name
        assert row["lr"] == single[steps[-1] - 1]["lr"]
        assert row["skipped_steps"] == single[steps[-1] - 1]["skipped_steps"]


def test_a_skipped_step_is_left_out_of_its_rows_means_even_where_its_losses_are_finite():
    """A step whose gradients alone are non-finite (their float32 norm overflowing) is skipped with finite
    loss terms: the row's loss had averaged it in (the README says skipped steps are left out) while its
    grad_norm left it out, one row of means over different steps. So too across a checkpoint between two
    rows (`log_window`), where the record keeps no `skipped`. Reference: float64 numpy means of the
    steps that were not skipped."""

    def step(loss, grad_norm, skipped):
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": 1e-3,
            "skipped": skipped,
            "nonfinite_total": 0.0,
        }
        return {k: np.array([v, v], np.float32) for k, v in metrics.items()}  # two replicas, as pmap gives

    window = [step(0.25, 2.0, 0.0), step(7.0, np.inf, 1.0), step(0.5, 4.0, 0.0), step(9.0, 1e30, 1.0)]
    kept = [0, 2]
    means = train.window_means(window)
    for name in ("loss", "grad_norm"):
        want = np.mean([np.float64(window[i][name][0]) for i in kept])
        assert means[name] == want, (name, means[name], want)
    for cut in range(1, len(window)):  # a checkpoint after step `cut`, its metadata through JSON, resumed
        record = json.loads(json.dumps({"log_window": train.window_record(window[:cut])}, allow_nan=False))
        assert train.window_means(train.restored_window(record) + window[cut:]) == means, cut


def test_resuming_a_run_an_earlier_version_logged_says_which_rows_hold_one_steps_values(tmp_path, five_steps):
    """A version before the rows' means (its checkpoints hold no `log_window`) wrote one step's values per
    row; resumed here, the rows to come are means and nothing in metrics.jsonl told the two apart. Here
    such a run: this version's run of 5 steps (rows 3 and 5) with `log_window` taken out of its last
    checkpoint's metadata and its last row out of the file, as the earlier version left a run that a
    SIGTERM stopped at step 5. Extended to 7 steps, it notes the last one-step row (3) and the steps whose
    values no checkpoint kept (4-5); a run of this version resumed so gives no note. Both resume a copy of
    the one run of 5 steps (`five_steps`: the earlier version's differs by what is taken out of it)."""
    import copy
    import shutil

    notes = {}
    for earlier in (True, False):
        run = tmp_path / str(earlier) / "run"
        shutil.copytree(five_steps.workdir, run)
        if earlier:
            path = run / "checkpoints" / "5" / "metadata" / "metadata"
            metadata = json.loads(path.read_text())
            del metadata["log_window"]
            path.write_text(json.dumps(metadata))
            rows = (run / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(row)["step"] for row in rows] == [3, 5]
            (run / "metrics.jsonl").write_text(rows[0] + "\n")
        longer = copy.deepcopy(five_steps.config)
        longer.train.num_steps = 7
        said = []
        train.run(longer, run, log=said.append)
        notes[earlier] = [line for line in said if "earlier version" in line]
        rows = [json.loads(row) for row in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == ([3, 6, 7] if earlier else [3, 5, 6, 7])
    assert len(notes[True]) == 1 and not notes[False], notes
    assert "rows up to step 3 were written by an earlier version" in notes[True][0]
    assert "no values of steps 4-5" in notes[True][0]


@pytest.mark.parametrize(
    "section, field, value, named",
    [
        ("diffusion", "prediction", "x_0", "diffusion.prediction is 'x_0'"),
        ("model", "latent_dim", -4, "model.latent_dim is -4"),
    ],
)
def test_run_from_python_checks_the_config_before_touching_the_workdir(
    tmp_path, section, field, value, named
):
    """train.run called from Python (a notebook, not launch.py) checks the config as launch.py does: these
    had failed inside jax (a shape error for the latent size) after run.json recorded them, and that record
    then refused the corrected config in the same workdir."""
    from motion_ddpm_jax.errors import UserError

    config = base_config()
    config.data.root = str(tmp_path / "no_data_needed")
    config[section][field] = value
    with pytest.raises(UserError, match=re.escape(named)):
        train.run(config, tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists() and not (tmp_path / "no_data_needed").exists()


def test_the_progress_note_names_three_long_captions_and_counts_the_rest():
    """train.sample_every's note of progress captions longer than the model reads: the first three, each
    with its token count (bos and eos aside), and how many more; counted here by hand (each caption's
    words are in the vocabulary: one token a word)."""
    from motion_ddpm_jax import text

    tokenizer = text.Tokenizer.build(["one two three four five six"])
    captions = [
        "one two",
        "one two three four five",
        "two three four five six one",
        "one",
        "six five four three two",
        "one two three four five six",
        "three four five six two",
    ]
    note = train.progress_cut_note(captions, tokenizer, 6)  # 4 tokens besides bos and eos
    assert note == (
        "train.sample_every: progress caption 1 ('one two three four five') takes 5 tokens; caption 2 "
        "('two three four five six one') takes 6 tokens; caption 4 ('six five four three two') takes 5 "
        "tokens; and 2 more; the progress samples read the first 4 (model.text_max_length 6 less bos and eos)"
    )
    assert train.progress_cut_note(captions[:1], tokenizer, 6) is None
