"""The PyTorch twin of benchmarks/ computes what our model and step compute (skipped without torch)."""

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torch_twin  # noqa: E402

from motion_ddpm_jax import diffusion, losses  # noqa: E402
from motion_ddpm_jax import model as model_lib  # noqa: E402
from motion_ddpm_jax.config import base_config  # noqa: E402
from motion_ddpm_jax.skeleton import Skeleton  # noqa: E402

B, T, L, VOCAB, F = 3, 10, 5, 40, 12
TINY = dict(
    max_motion_length=T, latent_dim=16, num_layers=2, ff_size=32, num_heads=2, text_vocab_size=VOCAB,
    text_max_length=L, text_latent_dim=8, text_num_layers=2, text_num_heads=2, text_ff_size=16,
)  # fmt: skip
SKELETON = Skeleton(
    names=("root", "spine", "head", "arm"),
    parents=np.array([-1, 0, 1, 1]),
    offsets=np.array([[0, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], np.float32),
)
D = 3 * SKELETON.num_joints


def random_params(model, text_feature_dim=None, seed=0):
    """Every parameter random (the zero-initialised output layers too, so the comparison is not vacuous)."""
    shapes = model_lib.param_shapes(model, text_feature_dim)
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    values = [0.4 * rng.standard_normal(leaf.shape).astype(np.float32) for leaf in leaves]
    return jax.tree.unflatten(tree, [jnp.asarray(v) for v in values])


def random_inputs(seed=1):
    rng = np.random.default_rng(seed)
    mask = np.arange(T)[None] < np.array([T, 6, 3])[:, None]
    text_mask = np.arange(L)[None] < np.array([L, 2, 1])[:, None]
    return {
        "x": rng.standard_normal((B, T, D)).astype(np.float32),
        "t": np.array([0, 17, 999], np.int32),
        "tokens": rng.integers(0, VOCAB, (B, L)).astype(np.int32),
        "text_features": rng.standard_normal((B, L, F)).astype(np.float32),
        "text_mask": text_mask,
        "mask": mask,
    }


def twin_with(model, params, text_feature_dim=None):
    twin = torch_twin.twin_of(model, text_feature_dim)
    torch_twin.load_flax_params(twin, params)
    return twin.eval()


def as_torch(inputs):
    return torch_twin.to_torch(inputs, "cpu")


@pytest.mark.parametrize("attention", ["efficient", "softmax"])
def test_twin_forward_equals_ours_with_token_text(attention):
    model = model_lib.MotionTransformer(input_feats=D, attention=attention, **TINY)
    params = random_params(model)
    inputs = random_inputs()
    ours = model.apply(
        {"params": params}, inputs["x"], inputs["t"], inputs["tokens"], inputs["text_mask"], inputs["mask"]
    )
    i = as_torch(inputs)
    with torch.no_grad():
        theirs = twin_with(model, params)(i["x"], i["t"], i["tokens"], i["text_mask"], i["mask"])
    assert np.abs(np.asarray(ours)).mean() > 0.1
    np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), rtol=1e-4, atol=1e-5)


def test_twin_forward_equals_ours_with_text_features_and_encoded_text():
    model = model_lib.MotionTransformer(input_feats=D, **TINY)
    params = random_params(model, text_feature_dim=F)
    inputs = random_inputs()
    ours = model.apply(
        {"params": params},
        inputs["x"],
        inputs["t"],
        None,
        inputs["text_mask"],
        inputs["mask"],
        text_features=inputs["text_features"],
    )
    encoded = model_lib.encode_text(model, params, None, inputs["text_mask"], inputs["text_features"])
    i = as_torch(inputs)
    twin = twin_with(model, params, text_feature_dim=F)
    with torch.no_grad():
        theirs = twin(i["x"], i["t"], None, i["text_mask"], i["mask"], text_features=i["text_features"])
        their_encoded = twin.encode_text(None, i["text_mask"], i["text_features"])
        from_encoded = twin(i["x"], i["t"], None, i["text_mask"], i["mask"], encoded_text=their_encoded)
    np.testing.assert_allclose(theirs.numpy(), np.asarray(ours), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(their_encoded.numpy(), np.asarray(encoded), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(from_encoded.numpy(), theirs.numpy())


@pytest.mark.parametrize("features", [263, 264])
def test_parameter_counts_match_at_the_motiondiffuse_size(features):
    model = model_lib.MotionTransformer(input_feats=features)  # the MotionDiffuse defaults
    for text_feature_dim in (None, 512):
        ours = sum(
            math.prod(leaf.shape) for leaf in jax.tree.leaves(model_lib.param_shapes(model, text_feature_dim))
        )
        twin = torch_twin.twin_of(model, text_feature_dim, device="meta")
        assert torch_twin.parameter_count(twin) == ours
    if features == 263:  # CLIP token features in: MotionDiffuse's 87.2M trainable parameters
        assert round(ours / 1e5) == 872


def geometry():
    rng = np.random.default_rng(3)
    mean = rng.standard_normal(D).astype(np.float32)
    std = rng.uniform(0.5, 2.0, D).astype(np.float32)
    return losses.Geometry(mean=jnp.asarray(mean), std=jnp.asarray(std), skeleton=SKELETON)


def loss_config():
    config = base_config()
    config.loss.use_geometric_loss = True
    config.model.cond_drop_prob = 0.0
    return config


def test_twin_losses_equal_ours():
    schedule = diffusion.make_schedule("linear", 1000)
    rng = np.random.default_rng(4)
    x0, noise, output = (rng.standard_normal((B, T, D)).astype(np.float32) for _ in range(3))
    t = np.array([3, 400, 990], np.int32)
    mask = random_inputs()["mask"]
    x_t = np.asarray(diffusion.q_sample(schedule, x0, t, noise))
    ours = losses.compute_losses(
        schedule, output, x_t, x0, noise, t, mask, loss_config().loss, "epsilon", geometry()
    )
    tensors = as_torch(dict(x0=x0, noise=noise, output=output, t=t, mask=mask, x_t=x_t))
    theirs = torch_twin.compute_losses(
        torch_twin.Schedule(schedule, "cpu"),
        tensors["output"],
        tensors["x_t"],
        tensors["x0"],
        tensors["noise"],
        tensors["t"],
        tensors["mask"],
        loss_config().loss,
        torch_twin.Geometry.of(geometry(), "cpu"),
    )
    assert set(theirs) == set(ours) == {"loss", "loss_mot_rec", "loss_vel", "loss_acc", "loss_geom"}
    for name, value in ours.items():
        np.testing.assert_allclose(float(theirs[name]), float(value), rtol=1e-5, err_msg=name)


def test_twin_loss_gradients_equal_ours():
    """The twin's objective and its gradients equal ours for the same t, noise and weights."""
    config = loss_config()
    model = model_lib.MotionTransformer(input_feats=D, **TINY)
    params = random_params(model, seed=5)
    schedule = diffusion.make_schedule("linear", 1000)
    inputs = random_inputs()
    rng = np.random.default_rng(6)
    x0 = rng.standard_normal((B, T, D)).astype(np.float32)
    noise = rng.standard_normal((B, T, D)).astype(np.float32)
    t, mask = inputs["t"], inputs["mask"]

    def loss_fn(p):
        x_t = diffusion.q_sample(schedule, x0, t, noise)
        output = model.apply({"params": p}, x_t, t, inputs["tokens"], inputs["text_mask"], mask)
        terms = losses.compute_losses(
            schedule, output, x_t, x0, noise, t, mask, config.loss, "epsilon", geometry()
        )
        return terms["loss"]

    our_loss, our_grads = jax.value_and_grad(loss_fn)(params)
    twin = twin_with(model, params).train()
    trainer = torch_twin.Trainer(twin, config, schedule, (np.zeros(L), np.ones(L, bool)), geometry=geometry())
    i = as_torch(dict(x0=x0, noise=noise, **inputs))
    their_loss, _ = trainer.loss(i["x0"], i["mask"], i["tokens"], i["text_mask"], i["t"], i["noise"])
    their_loss.backward()
    np.testing.assert_allclose(float(their_loss.detach()), float(our_loss), rtol=1e-5)
    their_params = dict(twin.named_parameters())
    pairs = {}
    for path, grad in torch_twin._flatten(our_grads):
        expected = np.asarray(grad).T if path[-1] == "kernel" else np.asarray(grad)
        pairs["/".join(path)] = (their_params[torch_twin.torch_name(path)].grad.numpy(), expected)
    # Key biases get exactly-zero gradients in theory (both softmaxes are shift-invariant along the keys):
    # there both sides hold rounding noise, so the tolerance is relative to the largest gradient.
    largest = max(np.abs(expected).max() for _, expected in pairs.values())
    for name, (got, expected) in pairs.items():
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5 * largest, err_msg=name)


def test_twin_train_step_runs_and_moves_the_parameters_and_the_ema():
    config = loss_config()
    model = model_lib.MotionTransformer(input_feats=D, **TINY)
    params = random_params(model, seed=7)
    twin = twin_with(model, params).train()
    schedule = diffusion.make_schedule("linear", 50)
    trainer = torch_twin.Trainer(
        twin, config, schedule, (np.zeros(L, np.int32), np.ones(L, bool)), geometry=geometry()
    )
    inputs = as_torch(random_inputs())
    batch = {
        "motion": inputs["x"],
        "mask": inputs["mask"],
        "tokens": inputs["tokens"],
        "text_mask": inputs["text_mask"],
    }
    before = [p.detach().clone() for p in trainer.params]
    for autocast in (None, torch.bfloat16):
        metrics = trainer.step(batch, autocast)
        assert np.isfinite(float(metrics["loss"])) and float(metrics["grad_norm"]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.ema, strict=True))


def test_twin_ddim_equals_ours_ddpm_returns_finite_motion_and_the_hoisted_loops_agree():
    model = model_lib.MotionTransformer(input_feats=D, **TINY)
    params = jax.tree.map(lambda p: 0.5 * p, random_params(model, seed=8))
    jax_schedule = diffusion.make_schedule("linear", 30)
    schedule = torch_twin.Schedule(jax_schedule, "cpu")
    inputs = random_inputs()
    i = as_torch(inputs)
    twin = twin_with(model, params)
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(B, T, D, generator=generator)
    ddpm = torch_twin.ddpm_sample(twin, schedule, x_T, i["tokens"], i["text_mask"], i["mask"], generator)
    timesteps = diffusion.ddim_timesteps(30, 5)
    ddim = torch_twin.ddim_sample(twin, schedule, x_T, i["tokens"], i["text_mask"], i["mask"], timesteps)
    assert ddpm.shape == (B, T, D) and torch.isfinite(ddpm).all()

    encoded = model_lib.encode_text(model, params, inputs["tokens"], inputs["text_mask"])

    def denoise(x_t, t):
        return model.apply(
            {"params": params}, x_t, t, None, inputs["text_mask"], inputs["mask"], encoded_text=encoded
        )

    ours = diffusion.ddim_sample_loop(jax_schedule, denoise, x_T.numpy(), jax.random.key(0), "epsilon", 5)
    np.testing.assert_allclose(ddim.numpy(), np.asarray(ours), rtol=1e-3, atol=1e-3)
    hoisted = torch_twin.ddim_sample(
        twin, schedule, x_T, i["tokens"], i["text_mask"], i["mask"], timesteps, hoisted=True
    )
    np.testing.assert_allclose(hoisted.numpy(), np.asarray(ours), rtol=1e-3, atol=1e-3)
    generator.manual_seed(0)
    x_T = torch.randn(B, T, D, generator=generator)
    hoisted = torch_twin.ddpm_sample(
        twin, schedule, x_T, i["tokens"], i["text_mask"], i["mask"], generator, hoisted=True
    )
    np.testing.assert_allclose(hoisted.numpy(), ddpm.numpy(), rtol=1e-4, atol=1e-4)  # the same draws


@pytest.mark.parametrize("attention", ["efficient", "softmax"])
def test_twin_hoisted_denoiser_equals_the_whole_model_at_every_step(attention):
    """The like-for-like sampling rows hoist what ours hoists (the captions' context once, the block
    modulations `chunk` steps at a time): at every step, across chunk boundaries and a short last chunk,
    the same epsilon as the whole model."""
    model = model_lib.MotionTransformer(input_feats=D, attention=attention, **TINY)
    twin = twin_with(model, jax.tree.map(lambda p: 0.5 * p, random_params(model, seed=5)))
    i = as_torch(random_inputs())
    with torch.no_grad():
        text = twin.encode_text(i["tokens"], i["text_mask"])
        timesteps = [990, 700, 512, 300, 17, 3, 0]
        args = (twin, text, i["text_mask"], i["mask"], timesteps)
        whole = torch_twin._denoiser(*args, hoisted=False)
        hoisted = torch_twin._denoiser(*args, hoisted=True, chunk=3)
        for step in range(len(timesteps)):
            x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(step))
            expected = whole(x, step).numpy()
            assert np.abs(expected).mean() > 0.1
            np.testing.assert_allclose(hoisted(x, step).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_twin_with_linear_weights_cast_once_computes_what_autocast_does():
    """Under bf16 autocast the copy with bf16 Linear weights gives the same bits as the float32 twin
    (autocast rounds each weight to bf16 at every call); the original twin keeps float32 weights."""
    model = model_lib.MotionTransformer(input_feats=D, **TINY)
    twin = twin_with(model, random_params(model, seed=6))
    cast = torch_twin.linear_weights_in(twin, torch.bfloat16)
    assert cast.out.weight.dtype == torch.bfloat16 and twin.out.weight.dtype == torch.float32
    assert cast.motion_positions.weight.dtype == torch.float32  # not a Linear: kept
    i = as_torch(random_inputs())
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = twin(i["x"], i["t"], i["tokens"], i["text_mask"], i["mask"])
        got = cast(i["x"], i["t"], i["tokens"], i["text_mask"], i["mask"])
    assert np.abs(expected.numpy()).mean() > 0.1
    assert torch.equal(got, expected)
