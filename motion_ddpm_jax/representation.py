"""The motion feature layouts, both directions (pure, jit-able).

- `positions`:  J * 3 features per frame, one 3-slot per joint in skeleton order. The root's slot holds
  the root translation delta (root[t] - root[t-1], zero at the first frame); every other slot holds
  the joint's global position minus the root's (root-relative, world orientation).
- `axis_angle`: 3 + 3 * K features per frame: the root translation delta, then the local axis-angle
  rotation of each of the K rotation joints of the skeleton (joints that are not end sites), in
  skeleton order. End sites rotate with their parent and carry no features.

Decoding integrates the deltas, so a decoded root trajectory starts at the origin (plus the root's
offset for `axis_angle`); everything else is recovered exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.skeleton import Skeleton

REPRESENTATIONS = ("positions", "axis_angle")


def feature_size(skeleton: Skeleton, representation: str) -> int:
    """Number of features per frame of `representation` on `skeleton`."""
    if representation == "positions":
        return 3 * skeleton.num_joints
    if representation == "axis_angle":
        return 3 + 3 * len(skeleton.rotation_joints)
    raise ValueError(f"unknown representation {representation!r}; expected one of {REPRESENTATIONS}")


def _check_size(features: jax.Array, skeleton: Skeleton, representation: str) -> jax.Array:
    """`features` as a jax array, after checking its size against the skeleton."""
    expected = feature_size(skeleton, representation)
    if features.shape[-1] != expected:
        layout = (
            "3 per joint, root slot = translation delta"
            if representation == "positions"
            else "root translation delta 3 + 3 per rotation joint"
        )
        raise ValueError(
            f"{representation} features have {features.shape[-1]} values per frame, but the skeleton has "
            f"{skeleton.num_joints} joints ({len(skeleton.rotation_joints)} rotation joints) and needs "
            f"{expected} ({layout})"
        )
    return jnp.asarray(features)


def translation_deltas(root: jax.Array) -> jax.Array:
    """[..., T, 3] root trajectory -> [..., T, 3] per-frame deltas (zero at the first frame)."""
    return jnp.concatenate([jnp.zeros_like(root[..., :1, :]), jnp.diff(root, axis=-2)], axis=-2)


def integrate_deltas(deltas: jax.Array) -> jax.Array:
    """[..., T, 3] per-frame deltas -> [..., T, 3] trajectory: their running sum (frame 0 at the first
    delta, the origin where that is 0)."""
    return jnp.cumsum(deltas, axis=-2)


# ---------------------------------------------------------------- positions


def encode_positions(positions: jax.Array, skeleton: Skeleton) -> jax.Array:
    """Global joint positions [..., T, J, 3] -> `positions` features [..., T, J*3]."""
    positions = jnp.asarray(positions)
    if positions.ndim < 3 or positions.shape[-2:] != (skeleton.num_joints, 3):
        raise ValueError(
            f"encode_positions: expected global joint positions [..., T, {skeleton.num_joints}, 3] (the "
            f"skeleton's {skeleton.num_joints} joints); got {list(positions.shape)}"
        )
    root = positions[..., skeleton.root, :]
    relative = positions - root[..., None, :]
    relative = relative.at[..., skeleton.root, :].set(translation_deltas(root))
    return relative.reshape(*positions.shape[:-2], 3 * skeleton.num_joints)


def relative_positions(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`positions` features [..., J*3] -> root-relative joint positions [..., J, 3] (root at the origin)."""
    features = _check_size(features, skeleton, "positions")
    positions = features.reshape(*features.shape[:-1], skeleton.num_joints, 3)
    return positions.at[..., skeleton.root, :].set(0.0)


def decode_positions(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`positions` features [..., T, J*3] -> global joint positions [..., T, J, 3], the root's first frame
    at the origin: the features hold the root's per-frame deltas, not where it started."""
    features = _check_size(features, skeleton, "positions")
    root = integrate_deltas(features[..., 3 * skeleton.root : 3 * skeleton.root + 3])
    return relative_positions(features, skeleton) + root[..., None, :]


# ---------------------------------------------------------------- axis-angle


def encode_axis_angle(
    local_rotations: jax.Array, root_translation: jax.Array, skeleton: Skeleton
) -> jax.Array:
    """Local rotations [..., T, J, 3, 3] and root translation [..., T, 3] -> `axis_angle` features."""
    local_rotations, root_translation = jnp.asarray(local_rotations), jnp.asarray(root_translation)
    joints = skeleton.num_joints
    if local_rotations.ndim < 4 or local_rotations.shape[-3:] != (joints, 3, 3):
        raise ValueError(
            f"encode_axis_angle: expected local rotation matrices [..., T, {joints}, 3, 3] (the skeleton's "
            f"{joints} joints, end sites included); got {list(local_rotations.shape)}"
        )
    if root_translation.shape != local_rotations.shape[:-3] + (3,):
        raise ValueError(
            f"encode_axis_angle: expected the root translation [..., T, 3] = "
            f"{[*local_rotations.shape[:-3], 3]} (the rotations' leading axes); got "
            f"{list(root_translation.shape)}"
        )
    rotating = skeleton.rotation_joints
    axis_angle = kinematics.matrix_to_axis_angle(local_rotations[..., rotating, :, :])
    flat = axis_angle.reshape(*axis_angle.shape[:-2], 3 * len(rotating))
    return jnp.concatenate([translation_deltas(root_translation), flat], axis=-1)


def local_rotations(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`axis_angle` features [..., 3+3K] -> local rotation matrices [..., J, 3, 3] (identity at end sites)."""
    features = _check_size(features, skeleton, "axis_angle")
    rotating = skeleton.rotation_joints
    lead = features.shape[:-1]
    rotations = kinematics.axis_angle_to_matrix(features[..., 3:].reshape(*lead, len(rotating), 3))
    identity = jnp.broadcast_to(jnp.eye(3, dtype=rotations.dtype), (*lead, 1, 3, 3))
    # Slot 0 holds the identity; joint j takes slot 1 + (its index among the rotation joints).
    slots = np.zeros(skeleton.num_joints, np.int32)
    slots[rotating] = np.arange(1, len(rotating) + 1)
    return jnp.take(jnp.concatenate([identity, rotations], axis=-3), slots, axis=-3)


def _fk(features: jax.Array, skeleton: Skeleton, root_translation: jax.Array) -> jax.Array:
    offsets = jnp.asarray(skeleton.offsets, features.dtype)
    rotations = local_rotations(features, skeleton)
    return kinematics.forward_kinematics(rotations, offsets, skeleton.parents, root_translation)


def relative_fk(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`axis_angle` features [..., 3+3K] -> joint positions [..., J, 3] with the root at the origin."""
    features = _check_size(features, skeleton, "axis_angle")
    root_offset = jnp.asarray(skeleton.offsets[skeleton.root], features.dtype)
    return _fk(features, skeleton, jnp.broadcast_to(-root_offset, (*features.shape[:-1], 3)))


def decode_axis_angle(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`axis_angle` features [..., T, 3+3K] -> global joint positions [..., T, J, 3] (forward kinematics),
    the root's first frame at its first delta from the origin: the features hold the root's per-frame
    deltas, not where it started (a recording's first delta is 0; a clip cut from one starts with the
    step from the frame before it, so its root starts that one step away from the origin)."""
    features = _check_size(features, skeleton, "axis_angle")
    return _fk(features, skeleton, integrate_deltas(features[..., :3]))


def decode(features: jax.Array, skeleton: Skeleton, representation: str) -> jax.Array:
    """Features [..., T, D] of either representation -> global joint positions [..., T, J, 3]."""
    if representation == "positions":
        return decode_positions(features, skeleton)
    feature_size(skeleton, representation)  # names the accepted representations
    return decode_axis_angle(features, skeleton)
