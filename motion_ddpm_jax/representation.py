"""The motion feature layouts, both directions (pure, jit-able).

- `positions`:  J * 3 features per frame, one 3-slot per joint in skeleton order. The root's slot holds
  the root translation delta (root[t] - root[t-1], zero at the first frame); every other slot holds
  the joint's global position minus the root's (root-relative, world orientation).
- `axis_angle`: 3 + 3 * K features per frame: the root translation delta, then the local axis-angle
  rotation of each of the K rotation joints of the skeleton (joints that are not end sites), in
  skeleton order. End sites rotate with their parent and carry no features. Each angle is kept in
  [0, pi], so a joint turning through a half turn (a root yawing past 180 degrees) jumps by about 2 pi
  in feature space between two frames: the rotations decode right, but the per-feature losses and the
  normalisation statistics see the jump. Kept for the caches and checkpoints made with it; prefer
  `rotation_6d`.
- `rotation_6d`: 3 + 6 * K features per frame: the root translation delta, then per rotation joint (in
  skeleton order) the first two columns of its local rotation matrix R, column by column:
  (R[0,0], R[1,0], R[2,0], R[0,1], R[1,1], R[2,1]): the images of the joint's x and y axes in its
  parent's frame (Zhou et al. 2019, "On the continuity of rotation representations in neural networks";
  pytorch3d's `matrix_to_rotation_6d`, which MDM uses, takes the first two rows instead, the 6D of the
  transpose). Continuous, and one 6D per rotation; decoded by Gram-Schmidt (`rotation_6d_to_matrix`), so
  any 6 numbers a model outputs give a rotation.

Decoding integrates the deltas, so a decoded root trajectory starts at the origin (plus the root's
offset for the rotation layouts); everything else is recovered exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.skeleton import Skeleton

# The layouts of local joint rotations (root translation delta + one rotation per rotation joint), each
# with its number of features per rotation: everything that poses rotations (forward kinematics, BVH
# files, the skeleton's bones) asks `representation in ROTATION_REPRESENTATIONS`.
ROTATION_WIDTHS = {"axis_angle": 3, "rotation_6d": 6}
ROTATION_REPRESENTATIONS = tuple(ROTATION_WIDTHS)
REPRESENTATIONS = ("positions", *ROTATION_REPRESENTATIONS)

# Below this length a 6D column (or the second column's part across the first) is taken as degenerate
# and replaced (`rotation_6d_to_matrix`): dividing by it would give gradients of 1/length.
_DEGENERATE = 1e-6


def feature_size(skeleton: Skeleton, representation: str) -> int:
    """Number of features per frame of `representation` on `skeleton`."""
    if representation == "positions":
        return 3 * skeleton.num_joints
    if representation in ROTATION_WIDTHS:
        return 3 + ROTATION_WIDTHS[representation] * len(skeleton.rotation_joints)
    raise ValueError(f"unknown representation {representation!r}; expected one of {REPRESENTATIONS}")


def _check_size(features: jax.Array, skeleton: Skeleton, representation: str) -> jax.Array:
    """`features` as a jax array, after checking its size against the skeleton."""
    expected = feature_size(skeleton, representation)
    if features.shape[-1] != expected:
        layout = (
            "3 per joint, root slot = translation delta"
            if representation == "positions"
            else f"root translation delta 3 + {ROTATION_WIDTHS[representation]} per rotation joint"
        )
        # Functions that default to axis_angle (local_rotations, relative_fk, sampling.bvh_channels) given
        # rotation_6d features: say which layout the size fits, as the caller may not know it has a choice.
        fits = [name for name in REPRESENTATIONS if feature_size(skeleton, name) == features.shape[-1]]
        hint = f"; {features.shape[-1]} is the size of {' or '.join(fits)} features on it" if fits else ""
        raise ValueError(
            f"{representation} features have {features.shape[-1]} values per frame, but the skeleton has "
            f"{skeleton.num_joints} joints ({len(skeleton.rotation_joints)} rotation joints) and needs "
            f"{expected} ({layout}){hint}"
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


# ---------------------------------------------------------------- rotations (axis_angle, rotation_6d)


def matrix_to_rotation_6d(matrix: jax.Array) -> jax.Array:
    """Rotation matrices [..., 3, 3] -> their `rotation_6d` [..., 6]: the first column, then the second."""
    matrix = jnp.asarray(matrix)
    if matrix.ndim < 2 or matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix_to_rotation_6d: expected rotation matrices [..., 3, 3]; got {matrix.shape}")
    return jnp.concatenate([matrix[..., :, 0], matrix[..., :, 1]], axis=-1)


def _unit(v: jax.Array, ok: jax.Array, fallback: jax.Array) -> jax.Array:
    """v / |v| where `ok`, else `fallback` (a unit vector); finite values and gradients either way: the
    division only ever sees a vector at least _DEGENERATE long."""
    chosen = jnp.where(ok[..., None], v, fallback)
    return chosen / jnp.sqrt(jnp.sum(jnp.square(chosen), axis=-1, keepdims=True))


def rotation_6d_to_matrix(six: jax.Array) -> jax.Array:
    """`rotation_6d` [..., 6] -> rotation matrices [..., 3, 3] by Gram-Schmidt: the first column is a / |a|
    (a = six[:3]), the second the part of b = six[3:] across it, normalised, the third their cross
    product. Exact for the 6D of a rotation; any other 6 numbers give a rotation too (the one whose first
    column points along a, its second in the plane of a and b), so whatever a model outputs decodes.

    Degenerate input (what an untrained or diverging model can output) gives a rotation, finite values and
    finite gradients, never NaN: where |a| < 1e-6 the first column is the x axis (1, 0, 0); where the part
    of b across the first column is shorter than 1e-6 (times |b| where |b| > 1: b zero, or parallel to a
    to float32's rounding) the second column is the unit vector across the first toward the coordinate
    axis least aligned with it. Such an input's gradient through the replaced column is zero. The part
    across is projected twice, so the columns are orthonormal to float32 rounding (~5e-7) at any size.
    """
    six = jnp.asarray(six)
    if six.ndim < 1 or six.shape[-1] != 6:
        raise ValueError(f"rotation_6d_to_matrix: expected 6D rotations [..., 6]; got shape {six.shape}")
    dtype = kinematics.output_dtype(six)
    six = six.astype(kinematics.compute_dtype(six))
    a, b = six[..., :3], six[..., 3:]
    eye = jnp.eye(3, dtype=six.dtype)
    x = _unit(a, jnp.sum(jnp.square(a), axis=-1) > _DEGENERATE**2, eye[0])
    across = b - jnp.sum(x * b, axis=-1, keepdims=True) * x
    # Twice ("twice is enough"): for b nearly along x the first pass leaves b's rounding error (|b| times
    # float32's epsilon, not across x), which normalised would be a second column far from orthogonal to
    # the first: no rotation. The second pass leaves a part across x whatever the first left.
    across = across - jnp.sum(x * across, axis=-1, keepdims=True) * x
    # The coordinate axis least aligned with x, made orthogonal to it: at least sqrt(2/3) long.
    axis = eye[jnp.argmin(jnp.abs(jax.lax.stop_gradient(x)), axis=-1)]
    spare = axis - jnp.sum(x * axis, axis=-1, keepdims=True) * x
    spare = spare / jnp.sqrt(jnp.sum(jnp.square(spare), axis=-1, keepdims=True))
    # Degenerate relative to |b| too (where |b| > 1): what is left across x after the passes is b's rounding
    # times float32's epsilon twice over, so at most ~1e-14 |b| is noise, far under 1e-6 |b|.
    floor = jnp.maximum(1.0, jax.lax.stop_gradient(jnp.sum(jnp.square(b), axis=-1)))
    y = _unit(across, jnp.sum(jnp.square(across), axis=-1) > _DEGENERATE**2 * floor, spare)
    z = jnp.cross(x, y)
    return jnp.stack([x, y, z], axis=-1).astype(dtype)


def _rotation_width(representation: str) -> int:
    if representation not in ROTATION_WIDTHS:
        raise ValueError(
            f"unknown rotation representation {representation!r}; expected one of {ROTATION_REPRESENTATIONS}"
        )
    return ROTATION_WIDTHS[representation]


def encode_rotations(
    local_rotations: jax.Array, root_translation: jax.Array, skeleton: Skeleton, representation: str
) -> jax.Array:
    """Local rotations [..., T, J, 3, 3] and root translation [..., T, 3] -> features of a rotation
    layout (`axis_angle` or `rotation_6d`)."""
    width = _rotation_width(representation)
    name = f"encode_{representation}"
    local_rotations, root_translation = jnp.asarray(local_rotations), jnp.asarray(root_translation)
    joints = skeleton.num_joints
    if local_rotations.ndim < 4 or local_rotations.shape[-3:] != (joints, 3, 3):
        raise ValueError(
            f"{name}: expected local rotation matrices [..., T, {joints}, 3, 3] (the skeleton's "
            f"{joints} joints, end sites included); got {list(local_rotations.shape)}"
        )
    if root_translation.shape != local_rotations.shape[:-3] + (3,):
        raise ValueError(
            f"{name}: expected the root translation [..., T, 3] = "
            f"{[*local_rotations.shape[:-3], 3]} (the rotations' leading axes); got "
            f"{list(root_translation.shape)}"
        )
    rotating = local_rotations[..., skeleton.rotation_joints, :, :]
    if representation == "axis_angle":
        per_joint = kinematics.matrix_to_axis_angle(rotating)
    else:
        per_joint = matrix_to_rotation_6d(rotating)
    flat = per_joint.reshape(*per_joint.shape[:-2], width * len(skeleton.rotation_joints))
    return jnp.concatenate([translation_deltas(root_translation), flat], axis=-1)


def encode_axis_angle(
    local_rotations: jax.Array, root_translation: jax.Array, skeleton: Skeleton
) -> jax.Array:
    """Local rotations [..., T, J, 3, 3] and root translation [..., T, 3] -> `axis_angle` features
    (jumping by about 2 pi where a joint turns through a half turn: see the module's docstring)."""
    return encode_rotations(local_rotations, root_translation, skeleton, "axis_angle")


def encode_rotation_6d(
    local_rotations: jax.Array, root_translation: jax.Array, skeleton: Skeleton
) -> jax.Array:
    """Local rotations [..., T, J, 3, 3] and root translation [..., T, 3] -> `rotation_6d` features."""
    return encode_rotations(local_rotations, root_translation, skeleton, "rotation_6d")


def local_rotations(features: jax.Array, skeleton: Skeleton, representation: str = "axis_angle") -> jax.Array:
    """Features [..., 3 + W*K] of a rotation layout (`axis_angle` by default) -> local rotation matrices
    [..., J, 3, 3] (identity at end sites)."""
    width = _rotation_width(representation)
    features = _check_size(features, skeleton, representation)
    rotating = skeleton.rotation_joints
    lead = features.shape[:-1]
    per_joint = features[..., 3:].reshape(*lead, len(rotating), width)
    if representation == "axis_angle":
        rotations = kinematics.axis_angle_to_matrix(per_joint)
    else:
        rotations = rotation_6d_to_matrix(per_joint)
    identity = jnp.broadcast_to(jnp.eye(3, dtype=rotations.dtype), (*lead, 1, 3, 3))
    # Slot 0 holds the identity; joint j takes slot 1 + (its index among the rotation joints).
    slots = np.zeros(skeleton.num_joints, np.int32)
    slots[rotating] = np.arange(1, len(rotating) + 1)
    return jnp.take(jnp.concatenate([identity, rotations], axis=-3), slots, axis=-3)


def _fk(features: jax.Array, skeleton: Skeleton, root_translation: jax.Array, representation: str):
    offsets = jnp.asarray(skeleton.offsets, features.dtype)
    rotations = local_rotations(features, skeleton, representation)
    return kinematics.forward_kinematics(rotations, offsets, skeleton.parents, root_translation)


def relative_fk(features: jax.Array, skeleton: Skeleton, representation: str = "axis_angle") -> jax.Array:
    """Features [..., 3 + W*K] of a rotation layout -> joint positions [..., J, 3], root at the origin."""
    _rotation_width(representation)
    features = _check_size(features, skeleton, representation)
    root_offset = jnp.asarray(skeleton.offsets[skeleton.root], features.dtype)
    return _fk(features, skeleton, jnp.broadcast_to(-root_offset, (*features.shape[:-1], 3)), representation)


def decode_rotations(features: jax.Array, skeleton: Skeleton, representation: str) -> jax.Array:
    """Features [..., T, 3 + W*K] of a rotation layout -> global joint positions [..., T, J, 3] (forward
    kinematics), the root's first frame at its first delta from the origin: the features hold the root's
    per-frame deltas, not where it started (a recording's first delta is 0; a clip cut from one starts
    with the step from the frame before it, so its root starts that one step away from the origin)."""
    _rotation_width(representation)
    features = _check_size(features, skeleton, representation)
    return _fk(features, skeleton, integrate_deltas(features[..., :3]), representation)


def decode_axis_angle(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`axis_angle` features [..., T, 3+3K] -> global joint positions [..., T, J, 3] (`decode_rotations`)."""
    return decode_rotations(features, skeleton, "axis_angle")


def decode_rotation_6d(features: jax.Array, skeleton: Skeleton) -> jax.Array:
    """`rotation_6d` features [..., T, 3+6K] -> global joint positions [..., T, J, 3] (`decode_rotations`)."""
    return decode_rotations(features, skeleton, "rotation_6d")


def decode(features: jax.Array, skeleton: Skeleton, representation: str) -> jax.Array:
    """Features [..., T, D] of any of REPRESENTATIONS -> global joint positions [..., T, J, 3]."""
    if representation == "positions":
        return decode_positions(features, skeleton)
    feature_size(skeleton, representation)  # names the accepted representations
    return decode_rotations(features, skeleton, representation)
