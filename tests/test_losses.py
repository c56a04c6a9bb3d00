"""Loss terms against float64 numpy references written here, plus the properties every term promises."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import diffusion, losses
from motion_ddpm_jax.skeleton import Skeleton

# A small skeleton with a branch, a leaf joint that rotates, an end site, and its root not at index 0.
NAMES = ("spine", "hips", "head", "head_Nub", "arm", "hand", "leg")
PARENTS = np.array([1, -1, 0, 2, 0, 4, 1], np.int32)
OFFSETS = np.array(
    [[0, 10, 0], [0, 0, 0], [0, 12, 1], [0, 8, 0], [15, 2, 0], [20, 0, 0], [-5, -40, 2]], np.float32
)
END_SITES = np.array([False, False, False, True, False, False, False])
SKELETON = Skeleton(names=NAMES, parents=PARENTS, offsets=OFFSETS, end_sites=END_SITES)
J = len(NAMES)
K = int((~END_SITES).sum())


def random_mask(rng, batch, frames):
    """Prefix masks of random lengths (one row empty, one full) plus a few holes, as bool[B, T]."""
    lengths = rng.integers(0, frames + 1, batch)
    lengths[0], lengths[-1] = 0, frames
    mask = np.arange(frames)[None] < lengths[:, None]
    holes = rng.random((batch, frames)) < 0.1
    return mask & ~holes


# ---------------------------------------------------------------- float64 references


def ref_masked_mean(per_frame, valid, weights=None):
    count = valid.sum()
    if weights is not None:
        per_frame = per_frame * np.asarray(weights, np.float64)[:, None]
    return 0.0 if count == 0 else float(per_frame[valid].sum() / count)


def ref_mse(pred, target, mask, weights=None):
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    per_frame = ((pred - target) ** 2).mean(-1)
    return ref_masked_mean(per_frame, mask, weights)


def ref_difference(pred, target, mask, order, weights=None):
    pred, target = pred.astype(np.float64), target.astype(np.float64)
    batch, frames, _ = pred.shape
    weights = np.ones(batch) if weights is None else weights
    errors = []
    for b in range(batch):
        for i in range(frames - order):
            if all(mask[b, i + k] for k in range(order + 1)):
                if order == 1:
                    dp, dt = pred[b, i + 1] - pred[b, i], target[b, i + 1] - target[b, i]
                else:
                    dp = pred[b, i + 2] - 2 * pred[b, i + 1] + pred[b, i]
                    dt = target[b, i + 2] - 2 * target[b, i + 1] + target[b, i]
                errors.append(weights[b] * ((dp - dt) ** 2).mean())
    return float(np.mean(errors)) if errors else 0.0


def ref_joint_positions(features):
    """positions features [D] -> root-relative joint positions [J, 3]."""
    positions = features.reshape(J, 3).copy()
    positions[SKELETON.root] = 0.0
    return positions


def ref_bone_lengths(positions):
    return np.array([np.linalg.norm(positions[j] - positions[p]) for j, p in enumerate(PARENTS) if p >= 0])


def ref_fk(features):
    """axis_angle features [3 + 3K] -> root-relative joint positions [J, 3], plain recursive FK."""
    rotvecs = features[3:].reshape(K, 3)
    local = {}
    for slot, j in enumerate(np.flatnonzero(~END_SITES)):
        local[j] = Rotation.from_rotvec(rotvecs[slot]).as_matrix()
    cache = {}

    def world(j):
        if j in cache:
            return cache[j]
        rot = local.get(j, np.eye(3))
        if PARENTS[j] < 0:
            result = (rot, np.zeros(3))
        else:
            parent_rot, parent_pos = world(PARENTS[j])
            result = (parent_rot @ rot, parent_pos + parent_rot @ OFFSETS[j].astype(np.float64))
        cache[j] = result
        return result

    return np.stack([world(j)[1] for j in range(J)])


def ref_geometric(pred, target, mask, mean, std, representation, weights=None):
    pred = pred.astype(np.float64) * std + mean
    target = target.astype(np.float64) * std + mean
    batch, frames, _ = pred.shape
    per_frame = np.zeros((batch, frames))
    for b in range(batch):
        for i in range(frames):
            if representation == "positions":
                lp = ref_bone_lengths(ref_joint_positions(pred[b, i]))
                lt = ref_bone_lengths(ref_joint_positions(target[b, i]))
                per_frame[b, i] = ((lp - lt) ** 2).mean()
            else:
                per_frame[b, i] = ((ref_fk(pred[b, i]) - ref_fk(target[b, i])) ** 2).mean()
    return ref_masked_mean(per_frame, mask, weights)


# ---------------------------------------------------------------- fixtures


def feature_size(representation):
    return 3 * J if representation == "positions" else 3 + 3 * K


def physical_motion(rng, batch, frames, representation):
    """Plausible de-standardized features: joint positions near the rest pose, or rotations < pi."""
    if representation == "positions":
        return rng.normal(0.0, 20.0, (batch, frames, 3 * J))
    translation = rng.normal(0.0, 1.0, (batch, frames, 3))
    rotations = rng.normal(0.0, 0.8, (batch, frames, 3 * K))
    return np.concatenate([translation, rotations], -1)


def stats(rng, size):
    return rng.normal(0.0, 3.0, size), rng.uniform(0.2, 5.0, size)


def geometry(mean, std, representation):
    return losses.Geometry(
        mean=jnp.asarray(mean, jnp.float32),
        std=jnp.asarray(std, jnp.float32),
        skeleton=SKELETON,
        representation=representation,
    )


def loss_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            aux_weighting="auto",
            use_velocity_loss=True,
            velocity_weight=0.1,
            use_acceleration_loss=True,
            acceleration_weight=0.05,
            use_geometric_loss=True,
            geometric_weight=0.01,
        )
    )
    config.update(overrides)
    return config


SIMPLE_TERMS = {
    "mse": (losses.masked_mse, lambda p, t, m: ref_mse(p, t, m)),
    "velocity": (losses.velocity_loss, lambda p, t, m: ref_difference(p, t, m, 1)),
    "acceleration": (losses.acceleration_loss, lambda p, t, m: ref_difference(p, t, m, 2)),
}


# ---------------------------------------------------------------- the terms against references


@pytest.mark.parametrize("name", sorted(SIMPLE_TERMS))
def test_temporal_terms_match_numpy_reference(name):
    term, reference = SIMPLE_TERMS[name]
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 5, 17, 6)).astype(np.float32)
    mask = random_mask(rng, 5, 17)
    np.testing.assert_allclose(float(term(pred, target, mask)), reference(pred, target, mask), rtol=1e-5)


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_geometric_terms_match_numpy_reference(representation):
    rng = np.random.default_rng(1)
    size = feature_size(representation)
    mean, std = stats(rng, size)
    physical = [physical_motion(rng, 3, 6, representation) for _ in range(2)]
    pred, target = [((x - mean) / std).astype(np.float32) for x in physical]
    mask = random_mask(rng, 3, 6)
    got = losses.geometric_loss(pred, target, mask, geometry(mean, std, representation))
    want = ref_geometric(pred, target, mask, mean, std, representation)
    assert want > 0
    np.testing.assert_allclose(float(got), want, rtol=2e-4)


def test_velocity_on_linear_motion_is_analytic():
    """Constant-velocity motions: the velocity error is the squared velocity difference, acceleration 0."""
    frames = np.arange(8, dtype=np.float32)[None, :, None]
    pred, target = 3.0 * frames, 1.0 * frames
    mask = np.ones((1, 8), bool)
    np.testing.assert_allclose(float(losses.velocity_loss(pred, target, mask)), 4.0, rtol=1e-6)
    assert float(losses.acceleration_loss(pred, target, mask)) == 0.0


def test_bone_length_loss_is_zero_for_rigid_rotations_of_the_target():
    """Rotating every joint position about the root keeps bone lengths: the bone term sees no error."""
    rng = np.random.default_rng(2)
    target = physical_motion(rng, 2, 4, "positions")
    rotation = Rotation.random(random_state=3).as_matrix()
    rotated = (target.reshape(2, 4, J, 3) @ rotation.T).reshape(2, 4, 3 * J)
    mean, std = np.zeros(3 * J), np.ones(3 * J)
    mask = np.ones((2, 4), bool)
    value = losses.bone_length_loss(rotated, target, mask, mean, std, SKELETON)
    assert float(value) < 1e-6 * float(np.square(target).mean())
    assert float(losses.masked_mse(rotated, target, mask)) > 1.0


# ---------------------------------------------------------------- properties of every term


def all_terms(representation):
    size = feature_size(representation)
    rng = np.random.default_rng(4)
    mean, std = stats(rng, size)
    geo = geometry(mean, std, representation)
    terms = {name: fn for name, (fn, _) in SIMPLE_TERMS.items()}
    terms["geometric"] = lambda p, t, m: losses.geometric_loss(p, t, m, geo)
    return size, terms


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_every_term_is_exactly_zero_when_prediction_equals_target(representation):
    size, terms = all_terms(representation)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 9, size)).astype(np.float32)
    mask = random_mask(rng, 3, 9)
    for name, term in terms.items():
        assert float(term(x, x, mask)) == 0.0, name


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_padded_frames_do_not_change_any_term(representation):
    size, terms = all_terms(representation)
    rng = np.random.default_rng(6)
    pred, target = rng.normal(size=(2, 4, 11, size)).astype(np.float32)
    mask = random_mask(rng, 4, 11)
    pred2, target2 = pred.copy(), target.copy()
    pred2[~mask] = rng.normal(0.0, 50.0, pred2[~mask].shape)
    target2[~mask] = rng.normal(0.0, 50.0, target2[~mask].shape)
    for name, term in terms.items():
        assert float(term(pred, target, mask)) == float(term(pred2, target2, mask)), name


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_nan_in_padded_frames_reaches_neither_value_nor_gradient(representation):
    """NaN as a padding sentinel, in pred and target: every term's value and gradient (with respect to
    pred and to target) equal those with zeros there; the velocity and acceleration terms' differences
    span a valid and a padded frame, which used to carry NaN into the valid frame's gradient."""
    size, terms = all_terms(representation)
    rng = np.random.default_rng(16)
    pred, target = rng.normal(size=(2, 3, 8, size)).astype(np.float32)
    mask = np.arange(8)[None] < np.array([[8], [5], [3]])
    pad = ~mask
    pred[pad], target[pad] = 0.0, 0.0
    nan_pred, nan_target = pred.copy(), target.copy()
    nan_pred[pad], nan_target[pad] = np.nan, np.nan
    for name, term in terms.items():
        value, grads = jax.value_and_grad(term, argnums=(0, 1))(nan_pred, nan_target, mask)
        reference, reference_grads = jax.value_and_grad(term, argnums=(0, 1))(pred, target, mask)
        assert float(value) == float(reference), name
        for grad, expected in zip(grads, reference_grads, strict=True):
            assert np.isfinite(np.asarray(grad)).all(), name
            np.testing.assert_array_equal(np.asarray(grad), np.asarray(expected), err_msg=name)
            assert not np.asarray(grad)[pad].any(), name


@pytest.mark.parametrize(
    "mask, weights, message",
    [
        (np.ones((1, 6), bool), None, r"mask must be bool\[B, T\] = bool\[2, 6\].*got bool\[1, 6\]"),
        (np.ones(6, bool), None, r"mask must be bool\[B, T\].*got bool\[6\]"),
        (np.full((2, 6), 0.5, np.float32), None, r"mask must be bool.*got float32\[2, 6\]"),
        (
            np.ones((2, 6), bool),
            np.ones((2, 1), np.float32),
            r"weights must be f32\[B\] = f32\[2\].*\[2, 1\]",
        ),
        (np.ones((2, 6), bool), np.float32(1.0), r"weights must be f32\[B\] = f32\[2\].*got shape \[\]"),
    ],
)
def test_a_mask_or_weights_of_another_shape_is_refused_naming_the_term(mask, weights, message):
    """Broadcasting had made a [1, T] or [T] mask one example's mask for all, a float mask a bool one, and
    weights [B, 1] multiply the term by B, all silently."""
    size, _ = all_terms("positions")
    x = np.zeros((2, 6, size), np.float32)
    for term, _ in SIMPLE_TERMS.values():
        with pytest.raises(ValueError, match=message):
            term(x, x + 1, mask, weights)
    with pytest.raises(ValueError, match="bone_length_loss: " + message):
        losses.geometric_loss(
            x, x, mask, geometry(*stats(np.random.default_rng(0), size), "positions"), weights
        )


def test_motion_of_another_shape_is_refused_naming_the_term():
    """[T, B, D] against a [B, T] mask, an unbatched [T, D] motion and pred / target of two shapes."""
    x = np.zeros((2, 5, 3), np.float32)
    mask = np.ones((2, 5), bool)
    with pytest.raises(ValueError, match=r"velocity_loss: mask must be bool\[B, T\] = bool\[5, 2\]"):
        losses.velocity_loss(x.transpose(1, 0, 2), x.transpose(1, 0, 2), mask)
    with pytest.raises(ValueError, match=r"masked_mse: pred and target must be motion \[B, T, D\]"):
        losses.masked_mse(x[0], x[0], mask[0])
    with pytest.raises(ValueError, match=r"acceleration_loss: .*got \[2, 5, 3\] and \[2, 4, 3\]"):
        losses.acceleration_loss(x, x[:, :4], mask)
    assert float(losses.masked_mse(x, x + 1, mask.astype(np.int32))) == 1.0  # 0/1 integers read as bool


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_geometric_terms_do_not_depend_on_the_normalisation(representation):
    rng = np.random.default_rng(7)
    size = feature_size(representation)
    physical = [physical_motion(rng, 2, 5, representation) for _ in range(2)]
    mask = random_mask(rng, 2, 5)
    values = []
    for _ in range(3):
        mean, std = stats(rng, size)
        pred, target = [((x - mean) / std).astype(np.float32) for x in physical]
        values.append(float(losses.geometric_loss(pred, target, mask, geometry(mean, std, representation))))
    np.testing.assert_allclose(values, values[0], rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SIMPLE_TERMS))
def test_terms_return_float32_for_bfloat16_inputs(name):
    term, _ = SIMPLE_TERMS[name]
    rng = np.random.default_rng(8)
    pred, target = jnp.asarray(rng.normal(size=(2, 2, 7, 4)), jnp.bfloat16)
    value = term(pred, target, np.ones((2, 7), bool))
    assert value.dtype == jnp.float32 and value.shape == ()


def test_feature_size_mismatch_names_the_expected_layout():
    geo = geometry(np.zeros(10), np.ones(10), "positions")
    with pytest.raises(ValueError, match=f"needs {3 * J}"):
        losses.geometric_loss(np.zeros((1, 2, 10)), np.zeros((1, 2, 10)), np.ones((1, 2), bool), geo)
    with pytest.raises(ValueError, match=r"mean and std must have shape \(12,\)"):
        losses.geometric_loss(np.zeros((1, 2, 12)), np.zeros((1, 2, 12)), np.ones((1, 2), bool), geo)
    # Each term alone too (it had failed inside jax's broadcasting): statistics per joint, [J, 3].
    x, mask = np.zeros((1, 2, 3 * J)), np.ones((1, 2), bool)
    for term in (losses.bone_length_loss, losses.fk_position_loss):
        with pytest.raises(ValueError, match=rf"{term.__name__}: mean and std must have shape \({3 * J},\)"):
            term(x, x, mask, np.zeros((J, 3)), np.ones((J, 3)), SKELETON)
    with pytest.raises(ValueError, match="representation"):
        geometry(np.zeros(10), np.ones(10), "humanml3d")


# ---------------------------------------------------------------- the weighted sum


SCHEDULE = diffusion.make_schedule("linear", 1000)


def diffusion_batch(rng, representation, batch=3, frames=10):
    size = feature_size(representation)
    mean, std = stats(rng, size)
    x0 = ((physical_motion(rng, batch, frames, representation) - mean) / std).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = jnp.asarray(rng.integers(0, 1000, batch), jnp.int32)
    x_t = diffusion.q_sample(SCHEDULE, x0, t, noise)
    return x0, noise, t, x_t, random_mask(rng, batch, frames), geometry(mean, std, representation)


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_compute_losses_is_zero_for_a_perfect_model(prediction):
    rng = np.random.default_rng(9)
    x0, noise, t, x_t, mask, geo = diffusion_batch(rng, "positions")
    perfect = diffusion.training_target(SCHEDULE, x0, noise, t, prediction)
    out = losses.compute_losses(SCHEDULE, perfect, x_t, x0, noise, t, mask, loss_config(), prediction, geo)
    assert set(out) == {"loss", "loss_mot_rec", "loss_vel", "loss_acc", "loss_geom"}
    # Auxiliary terms see predict_x0 of the output, which recovers x0 only to float32 rounding.
    for name, value in out.items():
        assert abs(float(value)) < 1e-5, (name, float(value))


@pytest.mark.parametrize("weighting", ["auto", "none", "truncated_snr"])
@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_compute_losses_weights_terms_of_the_x0_estimate(prediction, weighting):
    rng = np.random.default_rng(10)
    x0, noise, t, x_t, mask, geo = diffusion_batch(rng, "axis_angle")
    t = t.at[0].set(3)  # one example at low noise, where the truncated SNR weight is 1
    x_t = diffusion.q_sample(SCHEDULE, x0, t, noise)
    output = rng.normal(size=x0.shape).astype(np.float32)
    config = loss_config(aux_weighting=weighting)
    out = losses.compute_losses(SCHEDULE, output, x_t, x0, noise, t, mask, config, prediction, geo)

    # Independent float64 route from the output to the x0 estimate, the target and the weights.
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))[np.asarray(t)][:, None, None]
    weights = None
    if weighting == "truncated_snr" or (weighting == "auto" and prediction == "epsilon"):
        weights = np.minimum(abar[:, 0, 0] / (1 - abar[:, 0, 0]), 1.0)
        assert weights[0] == 1.0 and weights.min() < 0.5
    xt64, out64, x064, n64 = (np.asarray(a, np.float64) for a in (x_t, output, x0, noise))
    if prediction == "epsilon":
        x0_hat, target = (xt64 - np.sqrt(1 - abar) * out64) / np.sqrt(abar), n64
    elif prediction == "x0":
        x0_hat, target = out64, x064
    else:
        x0_hat = np.sqrt(abar) * xt64 - np.sqrt(1 - abar) * out64
        target = np.sqrt(abar) * n64 - np.sqrt(1 - abar) * x064
    mean, std = np.asarray(geo.mean), np.asarray(geo.std)
    want = {
        "loss_mot_rec": ref_mse(out64, target, mask),
        "loss_vel": ref_difference(x0_hat, x064, mask, 1, weights),
        "loss_acc": ref_difference(x0_hat, x064, mask, 2, weights),
        "loss_geom": ref_geometric(x0_hat, x064, mask, mean, std, "axis_angle", weights),
    }
    want["loss"] = (
        want["loss_mot_rec"] + 0.1 * want["loss_vel"] + 0.05 * want["loss_acc"] + 0.01 * want["loss_geom"]
    )
    for name, value in want.items():
        # For epsilon at large t, x0_hat amplifies float32 rounding of x_t by 1/sqrt(abar).
        np.testing.assert_allclose(float(out[name]), value, rtol=2e-3, err_msg=name)


def test_acceleration_term_does_not_need_the_velocity_term():
    rng = np.random.default_rng(11)
    x0, noise, t, x_t, mask, geo = diffusion_batch(rng, "positions")
    output = rng.normal(size=x0.shape).astype(np.float32)
    both = losses.compute_losses(SCHEDULE, output, x_t, x0, noise, t, mask, loss_config(), "x0", geo)
    config = loss_config(use_velocity_loss=False, use_geometric_loss=False)
    alone = losses.compute_losses(SCHEDULE, output, x_t, x0, noise, t, mask, config, "x0")
    assert set(alone) == {"loss", "loss_mot_rec", "loss_acc"}
    assert float(alone["loss_acc"]) == float(both["loss_acc"]) > 0
    np.testing.assert_allclose(
        float(alone["loss"]), float(both["loss_mot_rec"]) + 0.05 * float(both["loss_acc"]), rtol=1e-6
    )


def test_unknown_aux_weighting_is_a_clear_error():
    rng = np.random.default_rng(12)
    x0, noise, t, x_t, mask, _ = diffusion_batch(rng, "positions")
    config = loss_config(aux_weighting="snr", use_geometric_loss=False)
    with pytest.raises(ValueError, match="loss.aux_weighting is 'snr'"):
        losses.compute_losses(SCHEDULE, x0, x_t, x0, noise, t, mask, config, "x0")
    # A field set to None is not a missing one (the error had said the config lacked it)
    unset = dict(loss_config(use_geometric_loss=False), aux_weighting=None)
    with pytest.raises(KeyError, match="loss config field 'aux_weighting' is None"):
        losses.compute_losses(SCHEDULE, x0, x_t, x0, noise, t, mask, unset, "x0")
    missing = {k: v for k, v in unset.items() if k != "velocity_weight"}
    with pytest.raises(KeyError, match="loss config has no field 'velocity_weight'"):
        losses.compute_losses(SCHEDULE, x0, x_t, x0, noise, t, mask, missing, "x0")


def test_per_example_weights_scale_each_example():
    rng = np.random.default_rng(14)
    pred, target = rng.normal(size=(2, 3, 8, 4)).astype(np.float32)
    mask = random_mask(rng, 3, 8)
    weights = np.array([0.5, 2.0, 0.0], np.float32)
    for name, (term, _) in SIMPLE_TERMS.items():
        if name == "mse":
            want = ref_mse(pred, target, mask, weights)
        else:
            want = ref_difference(pred, target, mask, 1 if name == "velocity" else 2, weights)
        np.testing.assert_allclose(float(term(pred, target, mask, weights)), want, rtol=1e-5, err_msg=name)


def test_geometric_loss_without_geometry_is_a_clear_error():
    rng = np.random.default_rng(12)
    x0, noise, t, x_t, mask, _ = diffusion_batch(rng, "positions")
    with pytest.raises(ValueError, match="use_geometric_loss"):
        losses.compute_losses(SCHEDULE, x0, x_t, x0, noise, t, mask, loss_config(), "x0")


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_gradient_of_compute_losses_is_finite_and_matches_finite_differences(representation):
    rng = np.random.default_rng(13)
    x0, noise, t, x_t, mask, geo = diffusion_batch(rng, representation, batch=2, frames=5)
    output = rng.normal(size=x0.shape).astype(np.float32)

    def loss(out):
        return losses.compute_losses(SCHEDULE, out, x_t, x0, noise, t, mask, loss_config(), "x0", geo)["loss"]

    grad = np.asarray(jax.jit(jax.grad(loss))(output))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~mask] == 0.0), "padded frames must receive no gradient"
    grad_at_target = np.asarray(jax.grad(loss)(x0))
    assert np.all(np.isfinite(grad_at_target))

    direction = rng.normal(size=output.shape).astype(np.float32)
    eps = 1e-3
    numeric = (float(loss(output + eps * direction)) - float(loss(output - eps * direction))) / (2 * eps)
    np.testing.assert_allclose(float(np.sum(grad * direction)), numeric, rtol=2e-2)


@pytest.mark.parametrize("representation", ["positions", "axis_angle"])
def test_geometric_term_gradient_matches_float64_central_differences(representation):
    """Each coordinate of the geometric term's gradient (per-example weights, a hole in a mask, a joint at
    exactly zero rotation) against central differences of the float64 reference: the test above checks
    the whole loss along one direction, where the geometric term is 0.01 of it for positions data, and a
    bone-length gradient 10% off had passed it."""
    rng = np.random.default_rng(16)
    size = feature_size(representation)
    mean, std = stats(rng, size)
    physical = [physical_motion(rng, 3, 4, representation) for _ in range(2)]
    if representation == "axis_angle":
        physical[0][1, 2, 3:6] = 0.0  # the first rotation joint at zero angle in one frame
    pred, target = [(x - mean) / std for x in physical]
    mask = np.array([[True, True, False, False], [True, True, True, True], [True, False, True, True]])
    weights = np.array([0.3, 1.0, 0.7])
    geo = geometry(mean, std, representation)
    grad = np.asarray(
        jax.grad(losses.geometric_loss)(jnp.asarray(pred, jnp.float32), target, mask, geo, weights),
        np.float64,
    )
    assert np.all(grad[~mask] == 0.0)
    step = 1e-6
    for b, i in [(1, 2), (2, 0), (0, 1)]:
        numeric = np.zeros(size)
        for d in range(size):
            shift = np.zeros_like(pred)
            shift[b, i, d] = step
            up = ref_geometric(pred + shift, target, mask, mean, std, representation, weights)
            down = ref_geometric(pred - shift, target, mask, mean, std, representation, weights)
            numeric[d] = (up - down) / (2 * step)
        scale = np.abs(numeric).max()
        np.testing.assert_allclose(grad[b, i], numeric, rtol=0, atol=1e-3 * scale, err_msg=f"frame {b},{i}")


# ---------------------------------------------------------------- property-based: masks and shapes


# The three terms of one example in one compiled program: called op by op, each of the terms' dozens of
# operations compiled anew for every shape hypothesis draws (15 s for 40 examples on CI); one program per
# shape computes the same terms (the train step calls them compiled, too).
_SIMPLE_TERMS_COMPILED = jax.jit(
    lambda p, t, m: {name: term(p, t, m) for name, (term, _) in SIMPLE_TERMS.items()}
)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    frames=st.integers(1, 12),
    features=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    mask_kind=st.sampled_from(["random", "empty", "full", "prefix"]),
)
def test_terms_are_finite_nonnegative_scalars_for_any_mask(batch, frames, features, seed, mask_kind):
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=(2, batch, frames, features)).astype(np.float32)
    if mask_kind == "random":
        mask = rng.random((batch, frames)) < 0.5
    elif mask_kind == "prefix":
        mask = random_mask(rng, batch, frames)
    else:
        mask = np.full((batch, frames), mask_kind == "full")
    values = _SIMPLE_TERMS_COMPILED(pred, target, mask)
    for name, (_, reference) in SIMPLE_TERMS.items():
        value = values[name]
        assert value.shape == () and value.dtype == jnp.float32, name
        assert np.isfinite(float(value)) and float(value) >= 0.0, name
        np.testing.assert_allclose(float(value), reference(pred, target, mask), rtol=1e-5, atol=1e-7)


def test_device_shares_sum_to_the_global_batch_value_and_gradient():
    """Split over 4 'devices' (vmap with an axis name): shares sum to the whole-batch value, even though the
    devices hold different numbers of valid frames."""
    rng = np.random.default_rng(15)
    x0, noise, t, x_t, mask, geo = diffusion_batch(rng, "positions", batch=8, frames=6)
    output = rng.normal(size=x0.shape).astype(np.float32)
    config = loss_config(aux_weighting="truncated_snr")

    def whole(out):
        return losses.compute_losses(SCHEDULE, out, x_t, x0, noise, t, mask, config, "epsilon", geo)

    def shares(out):
        split = lambda a: jnp.reshape(a, (4, 2, *a.shape[1:]))  # noqa: E731

        def one(o, xt, x, n, tt, m):
            return losses.compute_losses(SCHEDULE, o, xt, x, n, tt, m, config, "epsilon", geo, axis_name="d")

        per_device = jax.vmap(one, axis_name="d")(*map(split, (out, x_t, x0, noise, t, jnp.asarray(mask))))
        return jax.tree.map(lambda v: jnp.sum(v, axis=0), per_device)

    def terms_and_gradient(terms):
        # One compiled program per side, its terms and its loss's gradient (op by op, the vmapped
        # collectives and their gradient took 16 s on CI).
        return jax.jit(jax.grad(lambda o: (terms(o)["loss"], terms(o)), has_aux=True))(output)

    (grad_whole, want), (grad_shares, got) = terms_and_gradient(whole), terms_and_gradient(shares)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_allclose(float(got[name]), float(want[name]), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(grad_shares), np.asarray(grad_whole), rtol=1e-4, atol=1e-9)
