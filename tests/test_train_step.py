"""The train step: 4 devices equal 1, a tiny model overfits, bf16 keeps fp32 state; training via launch.py."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny_run import launch_env

from motion_ddpm_jax import diffusion, train
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.config import base_config

ROOT = Path(__file__).resolve().parents[1]
D, T, L, VOCAB = 6, 10, 5, 40


def tiny_config(**sections):
    config = base_config()
    config.data.max_motion_length = T
    config.model.update(
        dict(latent_dim=16, num_layers=1, ff_size=32, num_heads=2, text_max_length=L, text_latent_dim=8)
    )
    config.model.update(dict(text_num_layers=1, text_num_heads=2, text_ff_size=16))
    config.diffusion.steps = 50
    config.loss.use_geometric_loss = False
    config.optim.warmup_steps = 2
    for section, values in sections.items():
        config[section].update(values)
    return config


def random_batch(seed, batch):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, batch)
    mask = np.arange(T)[None] < lengths[:, None]
    text_lengths = rng.integers(2, L + 1, batch)
    return {
        "motion": (rng.normal(size=(batch, T, D)) * mask[..., None]).astype(np.float32),
        "mask": mask,
        "tokens": rng.integers(5, VOCAB, (batch, L)).astype(np.int32),
        "text_mask": np.arange(L)[None] < text_lengths[:, None],
    }


def build(config, total=100, axis_name="batch"):
    model = model_lib.model_from_config(config, input_feats=D, text_vocab_size=VOCAB)
    lr = train.learning_rate_schedule(config.optim, total, train.warmup_steps(config.optim, 10))
    optimizer, ema = train.make_optimizer(config.optim, lr), train.make_ema(config.optim)
    state = train.create_train_state(model_lib.init_params(model, jax.random.key(0)), optimizer, ema, seed=1)
    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.steps)
    empty = (np.array([1, 2, 0, 0, 0], np.int32), np.array([True, True, False, False, False]))
    step = train.make_train_step(model, config, schedule, lr, optimizer, ema, empty, axis_name=axis_name)
    return state, step


def test_pmap_on_four_devices_equals_one_device_on_the_same_global_batch(tmp_path):
    """Runs in a subprocess: the fake device count must be set before jax starts."""
    script = textwrap.dedent(
        f"""
        import os, sys
        flags = os.environ.get("XLA_FLAGS", "")  # as tests/conftest.py set them
        os.environ["XLA_FLAGS"] = flags + " --xla_force_host_platform_device_count=4"
        os.environ["JAX_PLATFORMS"] = "cpu"
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import jax, numpy as np
        from test_train_step import build, random_batch, tiny_config
        from motion_ddpm_jax import train
        assert jax.local_device_count() == 4
        config = tiny_config(model=dict(cond_drop_prob=0.3))
        state, step = build(config)
        results = {{}}
        for devices in (1, 4):
            used = jax.local_devices()[:devices]
            p_step = jax.pmap(step, axis_name="batch", devices=used)
            # Placed as the step returns it, so the step compiles once (as train.run does).
            place = jax.pmap(lambda tree: tree, axis_name="batch", devices=used)
            s, rng = place(train.replicate(state, devices)), train.replicate(state.rng, devices)
            for k in range(3):
                batch = random_batch(k, 8)
                batch = {{key: v.reshape(devices, 8 // devices, *v.shape[1:]) for key, v in batch.items()}}
                s, metrics = p_step(s, batch, rng)
            results[devices] = (train.first_replica(s.params), float(train.first_replica(metrics)["loss"]))
        (one, loss1), (four, loss4) = results[1], results[4]
        np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), four, one)
        pairs = zip(jax.tree.leaves(one), jax.tree.leaves(state.params))
        moved = max(float(np.abs(a - b).max()) for a, b in pairs)
        assert moved > 1e-4, moved
        print("OK", loss1, loss4)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "OK" in result.stdout


def test_captions_are_dropped_per_example_and_replaced_by_the_empty_caption():
    """Classifier-free guidance's training: at model.cond_drop_prob = 0.5 the loss is the loss (at 0) of
    the batch with exactly one subset of its captions replaced by the empty caption, neither none nor all
    (the original trainer blanked whole batches); every subset gives another loss. Parameters perturbed:
    at initialisation the output does not depend on the caption. The same draws (t, noise) in every call:
    they come from the run's key and the step alone."""
    batch = random_batch(3, 4)
    empty_tokens, empty_mask = (
        np.array([1, 2, 0, 0, 0], np.int32),
        np.array([True, True, False, False, False]),
    )

    def loss_at(drop_prob):
        state, step = build(tiny_config(model=dict(cond_drop_prob=drop_prob)), axis_name=None)
        leaves, tree = jax.tree.flatten(state.params)
        # numpy's draws: jax.random's, op by op, compiled a sampler for each of the 20 leaf shapes (3 s)
        rng = np.random.default_rng(7)
        noisy = [p + np.float32(0.3) * rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
        state = state.replace(params=jax.tree.unflatten(tree, noisy))
        step = jax.jit(step)
        return lambda b: float(step(state, b, state.rng)[1]["loss"])

    def replaced(rows):
        out = {k: v.copy() for k, v in batch.items()}
        out["tokens"][rows], out["text_mask"][rows] = empty_tokens, empty_mask
        return out

    kept, half = loss_at(0.0), loss_at(0.5)
    target = half(batch)
    subsets = [np.array([(n >> i) & 1 for i in range(4)], bool) for n in range(16)]
    errors = sorted((abs(kept(replaced(rows)) - target) / abs(target), n) for n, rows in enumerate(subsets))
    (best, chosen), (second, _) = errors[:2]
    assert best < 1e-6 and second > 1e-4, errors[:3]
    assert 0 < subsets[chosen].sum() < 4, subsets[chosen]


def test_a_tiny_model_overfits_one_batch():
    config = tiny_config(
        diffusion=dict(prediction="x0"),
        loss=dict(use_velocity_loss=False, use_acceleration_loss=False),
        optim=dict(lr=3e-3, ema_decay=0.9),
        model=dict(cond_drop_prob=0.0, latent_dim=32, ff_size=64),
    )
    # 150 steps divide the loss by about 150 (400 had, by 2000): a tenth is far off either way.
    state, raw_step = build(config, total=150, axis_name=None)
    jit_step = jax.jit(lambda s, b, r: raw_step(s, b, r))
    batch = random_batch(0, 4)
    losses = []
    for _ in range(150):
        state, metrics = jit_step(state, batch, state.rng)
        losses.append(float(metrics["loss"]))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first / 10, (first, last)


def test_bfloat16_compute_keeps_float32_state_and_loss():
    config = tiny_config(model=dict(compute_dtype="bfloat16"), loss=dict(use_velocity_loss=True))
    state, raw_step = build(config, axis_name=None)
    state, metrics = jax.jit(lambda s, b, r: raw_step(s, b, r))(state, random_batch(1, 4), state.rng)
    for leaf in jax.tree.leaves((state.params, state.opt_state, state.ema_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    for name, value in metrics.items():
        assert value.dtype == jnp.float32 and np.isfinite(float(value)), name


def test_metrics_report_the_schedule_and_a_skipped_step():
    config = tiny_config()
    state, raw_step = build(config, total=100, axis_name=None)
    jit_step = jax.jit(lambda s, b, r: raw_step(s, b, r))
    batch = random_batch(2, 4)
    state, metrics = jit_step(state, batch, state.rng)
    assert float(metrics["lr"]) == pytest.approx(1e-5) and float(metrics["skipped"]) == 0.0
    bad = dict(batch, motion=np.where(batch["mask"][..., None], np.nan, batch["motion"]).astype(np.float32))
    after, metrics = jit_step(state, bad, state.rng)
    assert float(metrics["skipped"]) == 1.0 and float(metrics["nonfinite_total"]) == 1.0
    jax.tree.map(np.testing.assert_array_equal, after.params, state.params)
    # The skipped step did not advance the schedule: the next update is the second one, at warmup step 1
    # of 2 (0.1 + 0.9 / 2 of lr), not at step 2's lr, and its logged lr says so.
    _, metrics = jit_step(after, batch, state.rng)
    assert float(metrics["lr"]) == pytest.approx(1e-4 * (0.1 + 0.9 / 2), rel=1e-6)


def test_one_step_equals_a_float64_reference_of_its_loss_norm_and_update():
    """The step's wiring, from its own draws (t, noise): the network reads x_t = sqrt(abar) x0 +
    sqrt(1 - abar) noise (abar from betas computed here); the logged terms are the float64 masked means of
    the prediction's target and of the x0 estimate's differences (min(SNR, 1) per example for epsilon);
    grad_norm is the norm before clipping; and the first update is -lr0 * g_c / (|g_c| + eps), Adam's
    first step, g_c the gradient clipped to 0.5. A network fed x0 in place of x_t, or a norm logged after
    clipping, passed every other train-step test."""
    config = tiny_config(
        diffusion=dict(prediction="epsilon"),
        model=dict(cond_drop_prob=0.0),
        loss=dict(velocity_weight=0.7, acceleration_weight=0.3, aux_weighting="auto"),
        optim=dict(lr=1e-3),
    )
    state, step = build(config, axis_name=None)
    batch = random_batch(3, 6)
    new, metrics = jax.jit(step)(state, batch, state.rng)

    # The step's draws: one key per example, split into (t, noise, caption drop, dropout).
    keys = train._per_example_keys(jax.random.wrap_key_data(state.rng), state.step, 6, None)
    draws = [jax.random.split(k, 4) for k in keys]
    t = np.array([int(jax.random.randint(d[0], (), 0, 50)) for d in draws])
    noise = np.stack([np.asarray(jax.random.normal(d[1], (T, D)), np.float64) for d in draws])
    betas = np.linspace(20 * 1e-4, 20 * 0.02, 50)  # the linear schedule at 50 steps
    abar = np.cumprod(1.0 - betas)[t]
    signal, sigma = np.sqrt(abar)[:, None, None], np.sqrt(1.0 - abar)[:, None, None]
    x0, mask = batch["motion"].astype(np.float64), batch["mask"]
    x_t = signal * x0 + sigma * noise
    model = model_lib.model_from_config(config, input_feats=D, text_vocab_size=VOCAB)

    def output(params):
        inputs = (x_t.astype(np.float32), t, batch["tokens"], batch["text_mask"], mask)
        return model.apply({"params": params}, *map(jnp.asarray, inputs), deterministic=True)

    target, weights = noise, np.minimum(abar / (1 - abar), 1.0)
    pairs, triples = mask[:, 1:] & mask[:, :-1], mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2]

    # The gradient of the step's loss, spelled here in jnp (float32), through the network; the network's
    # output comes out of the same program (a forward compiled apart cost a compile).
    m, w32 = jnp.asarray(mask), jnp.asarray(weights, jnp.float32)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731

    def mean_over(per_frame, valid, w):
        return jnp.sum(jnp.where(valid, per_frame * w[:, None], 0.0)) / jnp.sum(valid)

    def loss(params):
        o = output(params).astype(jnp.float32)
        estimate = (f32(x_t) - f32(sigma) * o) / f32(signal)
        e = jnp.where(m[..., None], estimate - f32(x0), 0.0)
        rec = mean_over(jnp.mean(jnp.where(m[..., None], o - f32(target), 0.0) ** 2, -1), m, jnp.ones(6))
        vel = mean_over(jnp.mean(jnp.diff(e, axis=1) ** 2, -1), jnp.asarray(pairs), w32)
        acc = mean_over(jnp.mean(jnp.diff(e, n=2, axis=1) ** 2, -1), jnp.asarray(triples), w32)
        return rec + 0.7 * vel + 0.3 * acc, o

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(state.params)
    grads, out = jax.tree.map(lambda g: np.asarray(g, np.float64), grads), np.asarray(out, np.float64)

    # The logged terms, in float64 numpy from the network's output.
    x0_hat = (x_t - sigma * out) / signal

    def masked_mean(per_frame, valid, w):
        return float((per_frame * w[:, None] * valid).sum() / valid.sum())

    error = x0_hat - x0
    want = {
        "loss_mot_rec": masked_mean(((out - target) ** 2).mean(-1), mask, np.ones(6)),
        "loss_vel": masked_mean((np.diff(error, axis=1) ** 2).mean(-1), pairs, weights),
        "loss_acc": masked_mean((np.diff(error, n=2, axis=1) ** 2).mean(-1), triples, weights),
    }
    want["loss"] = want["loss_mot_rec"] + 0.7 * want["loss_vel"] + 0.3 * want["loss_acc"]
    for name, value in want.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=2e-5, err_msg=name)

    norm = float(np.sqrt(sum(np.sum(g**2) for g in jax.tree.leaves(grads))))
    assert norm > 0.5  # clipping acts
    np.testing.assert_allclose(float(metrics["grad_norm"]), norm, rtol=1e-4)
    lr0 = 0.1 * 1e-3
    assert float(metrics["lr"]) == pytest.approx(lr0, rel=1e-6)

    def first_adam_step(p, g):
        clipped = g * 0.5 / norm
        return np.asarray(p, np.float64) - lr0 * clipped / (np.abs(clipped) + 1e-8)

    expected = jax.tree.map(first_adam_step, state.params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * lr0), new.params, expected)


def test_a_step_under_jax_enable_x64_draws_what_it_draws_without():
    """A notebook that turned on jax_enable_x64 (for float64 references, say) drew the step's t, noise,
    caption drop and the model's dropout masks in 64 bits (jax.random's defaults there, and nn.Dropout's
    Python-float rate): other numbers for the same key, so the same seed trained another run (loss 563
    for 280 here). The draws are int32 and float32 as documented: the same step to float32 rounding (bit
    for bit compiled with XLA's default optimisations; the tests' fast compile rounds a few values one
    bit apart, and optax computes Adam's bias correction 1 - b2**t in float64 under x64)."""
    config = tiny_config(model=dict(cond_drop_prob=0.5, dropout=0.3))

    def one_step():
        state, step = build(config, axis_name=None)
        leaves, tree = jax.tree.flatten(state.params)  # perturbed: at initialisation no dropout shows
        rng = np.random.default_rng(5)
        moved = [p + np.float32(0.3) * rng.standard_normal(p.shape).astype(np.float32) for p in leaves]
        state = state.replace(params=jax.tree.unflatten(tree, moved))
        return jax.device_get(jax.jit(step)(state, random_batch(0, 4), state.rng))

    state32, metrics32 = one_step()
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        state64, metrics64 = one_step()
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert jax.tree.map(lambda a: a.dtype, state64) == jax.tree.map(lambda a: a.dtype, state32)
    for name, value in metrics32.items():
        np.testing.assert_allclose(metrics64[name], value, rtol=1e-6, err_msg=name)
    # Adam's first update is lr g / (|g| + eps), +-lr (1e-5) where |g| >> eps; where a gradient sums to
    # nearly 0, a bit of rounding moves its update by a fraction of lr (<= 0.1 lr seen); other draws, by 2 lr.
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=0.25 * 1e-5)  # noqa: E731
    jax.tree.map(close, state64.params, state32.params)


@pytest.mark.skipif(os.environ.get("MOTION_DDPM_SKIP_SLOW") == "1", reason="slow end-to-end run")
def test_demo_trains_through_launch_writes_a_checkpoint_and_resumes(tmp_path):
    def launch(steps):
        args = [
            sys.executable, "launch.py", "--config", "configs/demo.py", "--workdir", str(tmp_path / "run"),
            f"--config.data.raw_root={tmp_path / 'raw'}", f"--config.data.root={tmp_path / 'prepared'}",
            f"--config.train.num_steps={steps}", "--config.train.log_every=2",
            "--config.train.save_every_steps=2",
            "--config.model.latent_dim=32", "--config.model.num_layers=1", "--config.model.ff_size=64",
            # Each run draws its progress GIF at its end (the first run's is checked below): 8 frames of 2
            # DDIM steps draw one as the demo's 60 frames of 50 steps do, for a sixth of the test's CPU time.
            "--config.sample.num_frames=8", "--config.sample.steps=2",
        ]  # fmt: skip
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=launch_env())

    first = launch(4)
    assert first.returncode == 0, first.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(np.isfinite(r["loss"]) and r["lr"] > 0 for r in rows)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents*"))
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == [
        2,
        4,
    ]

    assert "train step ready in" in first.stdout + first.stderr  # its compile time, logged once
    assert sorted(p.name for p in (tmp_path / "run" / "progress").iterdir()) == [  # at the run's end
        "curves.png",
        "step_0000004.gif",
    ]
    second = launch(6)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stdout + second.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]

    changed = subprocess.run(
        [sys.executable, "launch.py", "--config", "configs/demo.py", "--workdir", str(tmp_path / "run"),
         f"--config.data.root={tmp_path / 'prepared'}", "--config.model.latent_dim=64"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=launch_env(),
    )  # fmt: skip
    assert changed.returncode != 0
    assert "model.latent_dim" in changed.stderr
