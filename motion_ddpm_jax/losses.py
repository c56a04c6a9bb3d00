"""Loss terms of the motion diffusion objective (pure, jit-able, float32 results).

Every term takes standardized `pred` and `target` motion `[B, T, D]`, a frame mask `bool[B, T]`
(True = real frame; integer 0/1 is read as bool) and optional per-example `weights` f32[B], and returns
a float32 scalar: a masked mean that is exactly zero when `pred == target` and whose value and gradient
do not depend on the values in padded frames (NaN there included). Means are taken over all valid frames
(pairs, triples) of the batch, as MotionDiffuse does: sum of per-frame errors / number of valid frames;
with weights, sum over examples of weights[b] x example b's per-frame errors / the same unweighted count
(so weights below 1 shrink the term, they are not renormalised). With no valid frame (pair, triple) a
term is 0. Shapes are checked (ValueError naming the term and the argument); values are not.

Geometric terms work in physical units: they de-standardize with the dataset statistics, so their
value does not depend on the normalisation. The feature layouts are in `representation.py`.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from motion_ddpm_jax import diffusion, kinematics
from motion_ddpm_jax.representation import REPRESENTATIONS, relative_fk, relative_positions
from motion_ddpm_jax.skeleton import Skeleton


def _masked_frame_mean(
    per_frame: jax.Array, mask: jax.Array, weights: jax.Array | None, axis_name: str | None
) -> jax.Array:
    """Mean of `per_frame [B, T']` over the entries where `mask [B, T']` is True (0 if there are none).

    weights: optional f32[B], multiplies each example's frames (the count of frames stays unweighted).
    axis_name: inside `pmap`/`shard_map`, the device axis: the count is summed over devices, so this
    device's value is its share of the mean over the *global* batch, and the psum of the shares (and of
    their gradients) is exactly the single-device result on the whole batch.
    """
    if weights is not None:
        per_frame = per_frame * jnp.asarray(weights, jnp.float32)[:, None]
    total = jnp.sum(jnp.where(mask, per_frame, 0.0))
    count = jnp.sum(mask.astype(jnp.float32))
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    return total / jnp.maximum(count, 1.0)


def _consecutive_valid(mask: jax.Array, span: int) -> jax.Array:
    """bool[B, T - span + 1]: True where frames i..i+span-1 are all valid."""
    length = mask.shape[1] - span + 1
    valid = mask[:, :length]
    for k in range(1, span):
        valid = valid & mask[:, k : k + length]
    return valid


def _as_f32(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _checked(where: str, pred, target, mask, weights) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(pred, target) as float32 with padded frames set to 0, and the mask as bool, after checking the
    shapes (pred, target [B, T, D] alike; mask [B, T]; weights [B]). Zeroing the padded frames keeps
    their values (a NaN sentinel, say) out of the gradient too: a masked-out NaN times a zero cotangent
    would otherwise still be NaN."""
    pred, target = _as_f32(pred, target)
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"{where}: pred and target must be motion [B, T, D] of one shape; got {list(pred.shape)} and "
            f"{list(target.shape)}"
        )
    mask = jnp.asarray(mask)
    if mask.shape != pred.shape[:2] or not (mask.dtype == bool or jnp.issubdtype(mask.dtype, jnp.integer)):
        raise ValueError(
            f"{where}: mask must be bool[B, T] = bool{list(pred.shape[:2])} (True = real frame) like pred's "
            f"first two axes; got {mask.dtype}{list(mask.shape)}"
        )
    if weights is not None and np.shape(weights) != pred.shape[:1]:
        raise ValueError(
            f"{where}: weights must be f32[B] = f32[{pred.shape[0]}], one per example; got shape "
            f"{list(np.shape(weights))}"
        )
    mask = mask.astype(bool)
    keep = mask[:, :, None]
    return jnp.where(keep, pred, 0.0), jnp.where(keep, target, 0.0), mask


def masked_mse(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    """Mean over valid frames of the per-frame mean squared error. pred, target: [B, T, D]; mask:
    bool[B, T] (True = a real frame). weights: None, or f32[B] multiplying each example's frames while
    the divisor stays the count of valid frames (sum_b w_b * sum_t e_bt / sum_bt mask_bt: a weight scales
    its example's share, the term is not renormalised; `auxiliary_weights` makes them). Returns f32[]."""
    pred, target, mask = _checked("masked_mse", pred, target, mask, weights)
    return _masked_frame_mean(jnp.mean(jnp.square(pred - target), axis=-1), mask, weights, axis_name)


def _difference_loss(pred, target, mask, weights, axis_name, order: int) -> jax.Array:
    where = "velocity_loss" if order == 1 else "acceleration_loss"
    pred, target, mask = _checked(where, pred, target, mask, weights)
    if pred.shape[1] <= order:
        return jnp.zeros((), jnp.float32)
    error = jnp.diff(pred - target, n=order, axis=1)
    valid = _consecutive_valid(mask, order + 1)
    return _masked_frame_mean(jnp.mean(jnp.square(error), axis=-1), valid, weights, axis_name)


def velocity_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    """MSE of first differences over pairs of consecutive valid frames (mean over D, then over the pairs
    whose two frames are valid). pred, target: [B, T, D]; mask, weights: as `masked_mse`."""
    return _difference_loss(pred, target, mask, weights, axis_name, order=1)


def acceleration_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    """MSE of second differences over triples of consecutive valid frames (mean over D, then over the
    triples whose three frames are valid). pred, target: [B, T, D]; mask, weights: as `masked_mse`."""
    return _difference_loss(pred, target, mask, weights, axis_name, order=2)


def _check_statistics(where: str, mean, std, size: int) -> None:
    if np.shape(mean) != (size,) or np.shape(std) != (size,):
        raise ValueError(
            f"{where}: mean and std must have shape ({size},) like the features, got "
            f"{np.shape(mean)} and {np.shape(std)}"
        )


def _destandardize(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    return x * jnp.asarray(std, jnp.float32) + jnp.asarray(mean, jnp.float32)


def bone_length_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    skeleton: Skeleton,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    """Squared error of bone lengths (physical units^2), mean over bones and valid frames.

    pred, target: standardized `positions` features [B, T, J*3]; mean, std: [J*3].
    """
    pred, target, mask = _checked("bone_length_loss", pred, target, mask, weights)
    _check_statistics("bone_length_loss", mean, std, pred.shape[-1])
    lengths = [
        kinematics.bone_lengths(relative_positions(_destandardize(x, mean, std), skeleton), skeleton.parents)
        for x in (pred, target)
    ]
    per_frame = jnp.mean(jnp.square(lengths[0] - lengths[1]), axis=-1)
    return _masked_frame_mean(per_frame, mask, weights, axis_name)


def fk_position_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    skeleton: Skeleton,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
    representation: str = "axis_angle",
) -> jax.Array:
    """Squared error of root-relative joint positions after forward kinematics (physical units^2).

    Mean over the J*3 coordinates and the valid frames. The root trajectory is left out: it is already
    in the feature-space reconstruction term, and integrating its deltas would weigh early frames more.
    pred, target: standardized features [B, T, 3+WK] of the rotation layout `representation`
    (`axis_angle`, W = 3, or `rotation_6d`, W = 6); mean, std: [3+WK].
    """
    pred, target, mask = _checked("fk_position_loss", pred, target, mask, weights)
    _check_statistics("fk_position_loss", mean, std, pred.shape[-1])
    positions = [relative_fk(_destandardize(x, mean, std), skeleton, representation) for x in (pred, target)]
    per_frame = jnp.mean(jnp.square(positions[0] - positions[1]), axis=(-2, -1))
    return _masked_frame_mean(per_frame, mask, weights, axis_name)


@struct.dataclass
class Geometry:
    """What the geometric loss needs besides the motion: dataset statistics and skeleton.

    mean, std: float32 [D] (the normalisation of the features); representation: `positions` or a rotation
    layout (`axis_angle`, `rotation_6d`); skeleton: the dataset's skeleton (static: it shapes the
    computation).
    """

    mean: jax.Array
    std: jax.Array
    skeleton: Skeleton = struct.field(pytree_node=False)
    representation: str = struct.field(pytree_node=False, default="positions")

    def __post_init__(self):
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"geometric loss: representation {self.representation!r} has no geometric term; "
                f"expected one of {REPRESENTATIONS}"
            )


def geometric_loss(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array,
    geometry: Geometry,
    weights: jax.Array | None = None,
    *,
    axis_name: str | None = None,
) -> jax.Array:
    """Bone-length loss for `positions` data, FK position loss for rotation data (`axis_angle`,
    `rotation_6d`: forward kinematics of the decoded rotations)."""
    _check_statistics("geometric loss", geometry.mean, geometry.std, np.shape(pred)[-1])
    args = (pred, target, mask, geometry.mean, geometry.std, geometry.skeleton, weights)
    if geometry.representation == "positions":
        return bone_length_loss(*args, axis_name=axis_name)
    return fk_position_loss(*args, axis_name=axis_name, representation=geometry.representation)


AUX_WEIGHTINGS = ("auto", "none", "truncated_snr")


def auxiliary_weights(schedule: diffusion.Schedule, t: jax.Array, weighting: str, prediction: str):
    """Per-example weights f32[B] of the auxiliary (x0-space) terms, or None for plain means.

    `truncated_snr` weighs example b by min(SNR(t_b), 1), SNR = abar / (1 - abar). With epsilon
    prediction an error e in the noise becomes an error e / sqrt(SNR) in the x0 estimate, so at high
    noise the x0-space terms would grow without bound and swamp the reconstruction term; the weight
    caps them at the size of the noise error. `auto` = `truncated_snr` for epsilon prediction and
    `none` for x0 and v (whose x0 estimates are bounded).
    """
    if weighting not in AUX_WEIGHTINGS:
        raise ValueError(f"loss.aux_weighting is {weighting!r}; expected one of {AUX_WEIGHTINGS}")
    if weighting == "auto":
        weighting = "truncated_snr" if prediction == "epsilon" else "none"
    if weighting == "none":
        return None
    abar = schedule.alphas_cumprod[t]
    return jnp.minimum(abar / (1.0 - abar), 1.0)


def _field(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        value = config.get(name, default)
    else:
        value = getattr(config, name, default)
    if value is None:
        present = name in config if isinstance(config, Mapping) else hasattr(config, name)
        raise KeyError(
            f"loss config field {name!r} is None" if present else f"loss config has no field {name!r}"
        )
    return value


def compute_losses(
    schedule: diffusion.Schedule,
    model_output: jax.Array,
    x_t: jax.Array,
    x0: jax.Array,
    noise: jax.Array,
    t: jax.Array,
    mask: jax.Array,
    config: Any,
    prediction: str = "epsilon",
    geometry: Geometry | None = None,
    *,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """The weighted training loss and each of its terms (float32 scalars), by name.

    model_output: [B, T, D] the network's output for `x_t: [B, T, D]` at `t: i32[B]`, a prediction of
    `prediction` (`epsilon`, `x0` or `v`); x0, noise: [B, T, D] the clean standardized motion and the
    noise that made x_t; mask: bool[B, T]. config: the `loss` section (ConfigDict or mapping) with
    use_velocity_loss, velocity_weight, use_acceleration_loss, acceleration_weight, use_geometric_loss,
    geometric_weight and optionally aux_weighting (see `auxiliary_weights`; default `auto`).
    axis_name: the device axis inside `pmap`: every value is then this device's share of the
    global-batch value (see `_masked_frame_mean`); psum them, and their gradients, over the axis.

    `loss_mot_rec` compares the output with its own training target (MotionDiffuse's term); the
    auxiliary terms compare the x0 estimate with x0, whatever the prediction target. Keys: `loss`,
    `loss_mot_rec`, and `loss_vel`, `loss_acc`, `loss_geom` for the terms that are switched on.
    """
    model_output = jnp.asarray(model_output, jnp.float32)
    target = diffusion.training_target(schedule, x0, noise, t, prediction)
    terms = {"loss_mot_rec": masked_mse(model_output, target, mask, axis_name=axis_name)}
    total = terms["loss_mot_rec"]
    auxiliary = [
        ("loss_vel", "use_velocity_loss", "velocity_weight"),
        ("loss_acc", "use_acceleration_loss", "acceleration_weight"),
        ("loss_geom", "use_geometric_loss", "geometric_weight"),
    ]
    enabled = [(name, _field(config, weight)) for name, switch, weight in auxiliary if _field(config, switch)]
    if not enabled:
        return {"loss": total, **terms}
    if "loss_geom" in dict(enabled) and geometry is None:
        raise ValueError(
            "loss.use_geometric_loss is True but no geometry (dataset mean/std and skeleton) was given; "
            "it needs a `positions`, `axis_angle` or `rotation_6d` dataset"
        )
    x0_pred = diffusion.predict_x0(schedule, x_t, t, model_output, prediction)
    weights = auxiliary_weights(schedule, t, _field(config, "aux_weighting", "auto"), prediction)
    compute = {
        "loss_vel": lambda: velocity_loss(x0_pred, x0, mask, weights, axis_name=axis_name),
        "loss_acc": lambda: acceleration_loss(x0_pred, x0, mask, weights, axis_name=axis_name),
        "loss_geom": lambda: geometric_loss(x0_pred, x0, mask, geometry, weights, axis_name=axis_name),
    }
    for name, weight in enabled:
        terms[name] = compute[name]()
        total = total + float(weight) * terms[name]
    return {"loss": total, **terms}
