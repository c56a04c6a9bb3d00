"""Rotation conversions, forward kinematics and bone lengths (pure, jit-able, differentiable).

Conventions
- Quaternions are `(w, x, y, z)`; axis-angle vectors are `angle * unit_axis` (radians).
- Rotation matrices act on column vectors: `v_rotated = R @ v`.
- Every function is vectorised over leading axes `[...]`. Floating inputs keep their dtype on output;
  arithmetic runs in at least float32 (float16/bfloat16 are upcast, float64 stays float64 under x64).
- Small-angle formulas switch to Taylor series behind the "double where" (the unused branch only ever
  sees a safe argument), so values and gradients are finite at exactly zero angle.
- Skeleton structure (`parents`, int [J], -1 marks a root) is static host data (numpy); it may list the
  joints in any order. Offsets and rotations are traced arrays.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

EULER_ORDERS = tuple("".join(p) for p in itertools.permutations("XYZ"))  # the 6 Tait-Bryan orders

# Below this squared angle the truncated Taylor series are exact to float64 precision (the first
# omitted term is < 2e-16 relative), while the closed forms lose accuracy to cancellation in gradients.
_SMALL_ANGLE_SQ = 1e-4


# ----------------------------------------------------------------------------------------------- dtypes
def compute_dtype(*arrays) -> jnp.dtype:
    """The dtype the maths runs in: the inputs' common float type, at least float32. With `output_dtype`
    the module's dtype convention, public so that `representation`'s 6D rotations follow the same one."""
    return jnp.result_type(*(jnp.asarray(a).dtype for a in arrays), jnp.float32)


def output_dtype(x) -> jnp.dtype:
    """The dtype returned for input `x`: its own if floating, else float32."""
    dtype = jnp.asarray(x).dtype
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


def safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
    """Euclidean norm over `axis` whose gradient is 0 (not NaN) where the norm is 0. x: [..., N] -> [...]."""
    squared = jnp.sum(jnp.square(x), axis=axis)
    is_zero = squared == 0
    return jnp.where(is_zero, 0.0, jnp.sqrt(jnp.where(is_zero, 1.0, squared)))


def _skew(v: jax.Array) -> jax.Array:
    """Cross-product matrix: `_skew(v) @ u == cross(v, u)`. v: [..., 3] -> [..., 3, 3]."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], axis=-1),
            jnp.stack([z, zero, -x], axis=-1),
            jnp.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )


def _check_last_dims(x: jax.Array, shape: tuple[int, ...], name: str, what: str) -> None:
    if x.ndim < len(shape) or tuple(x.shape[-len(shape) :]) != shape:
        raise ValueError(
            f"{name}: expected {what} of shape [..., {', '.join(map(str, shape))}], got {x.shape}"
        )


# ----------------------------------------------------------------------------------------- conversions
@jax.jit
def axis_angle_to_quaternion(axis_angle: jax.Array) -> jax.Array:
    """Axis-angle [..., 3] -> unit quaternion (w, x, y, z) [..., 4], w = cos(angle / 2)."""
    axis_angle = jnp.asarray(axis_angle)
    _check_last_dims(axis_angle, (3,), "axis_angle_to_quaternion", "axis-angle vectors")
    out_dtype = output_dtype(axis_angle)
    aa = axis_angle.astype(compute_dtype(axis_angle))
    theta_sq = jnp.sum(jnp.square(aa), axis=-1, keepdims=True)
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    # w = cos(theta / 2); v = aa * sin(theta / 2) / theta.
    w = jnp.where(small, 1.0 - theta_sq / 8.0 + jnp.square(theta_sq) / 384.0, jnp.cos(theta / 2.0))
    k = jnp.where(small, 0.5 - theta_sq / 48.0 + jnp.square(theta_sq) / 3840.0, jnp.sin(theta / 2.0) / theta)
    return jnp.concatenate([w, k * aa], axis=-1).astype(out_dtype)


@jax.jit
def quaternion_to_matrix(quaternion: jax.Array) -> jax.Array:
    """Quaternion (w, x, y, z) [..., 4], any non-zero norm (normalised here) -> rotation matrix [..., 3, 3].

    The zero quaternion maps to the identity (with finite gradients) rather than to NaN.
    """
    quaternion = jnp.asarray(quaternion)
    _check_last_dims(quaternion, (4,), "quaternion_to_matrix", "quaternions")
    out_dtype = output_dtype(quaternion)
    q = quaternion.astype(compute_dtype(quaternion))
    norm_sq = jnp.sum(jnp.square(q), axis=-1)
    is_zero = norm_sq == 0
    s = jnp.where(is_zero, 0.0, 2.0 / jnp.where(is_zero, 1.0, norm_sq))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        [1.0 - s * (y * y + z * z), s * (x * y - w * z), s * (x * z + w * y)],
        [s * (x * y + w * z), 1.0 - s * (x * x + z * z), s * (y * z - w * x)],
        [s * (x * z - w * y), s * (y * z + w * x), 1.0 - s * (x * x + y * y)],
    ]
    return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2).astype(out_dtype)


@jax.jit
def axis_angle_to_matrix(axis_angle: jax.Array) -> jax.Array:
    """Axis-angle [..., 3] -> rotation matrix [..., 3, 3] (Rodrigues: I + A K + B K^2, K = skew(aa))."""
    axis_angle = jnp.asarray(axis_angle)
    _check_last_dims(axis_angle, (3,), "axis_angle_to_matrix", "axis-angle vectors")
    out_dtype = output_dtype(axis_angle)
    aa = axis_angle.astype(compute_dtype(axis_angle))
    theta_sq = jnp.sum(jnp.square(aa), axis=-1)[..., None, None]
    small = theta_sq < _SMALL_ANGLE_SQ
    theta = jnp.sqrt(jnp.where(small, 1.0, theta_sq))
    # A = sin(theta) / theta; B = (1 - cos(theta)) / theta^2 = 2 sin^2(theta / 2) / theta^2 (no cancellation).
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + jnp.square(theta_sq) / 120.0, jnp.sin(theta) / theta)
    half_sinc = jnp.sin(theta / 2.0) / theta
    b = jnp.where(small, 0.5 - theta_sq / 24.0 + jnp.square(theta_sq) / 720.0, 2.0 * jnp.square(half_sinc))
    k = _skew(aa)
    eye = jnp.eye(3, dtype=aa.dtype)
    return (eye + a * k + b * (k @ k)).astype(out_dtype)


@jax.jit
def matrix_to_quaternion(matrix: jax.Array) -> jax.Array:
    """Rotation matrix [..., 3, 3] -> unit quaternion (w, x, y, z) [..., 4] with w >= 0.

    Shepperd's method without branches: the four candidate vectors 4 q_i q (i = w, x, y, z) are all
    formed, the one with the largest |q_i| (largest diagonal entry) is kept and normalised. That entry is
    >= 1, so the normalisation is always well conditioned (including at angle pi, where w = 0).
    """
    matrix = jnp.asarray(matrix)
    _check_last_dims(matrix, (3, 3), "matrix_to_quaternion", "rotation matrices")
    out_dtype = output_dtype(matrix)
    m = matrix.astype(compute_dtype(matrix))
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    candidates = jnp.stack(
        [
            jnp.stack([1.0 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], axis=-1),
            jnp.stack([m21 - m12, 1.0 + m00 - m11 - m22, m01 + m10, m02 + m20], axis=-1),
            jnp.stack([m02 - m20, m01 + m10, 1.0 - m00 + m11 - m22, m12 + m21], axis=-1),
            jnp.stack([m10 - m01, m02 + m20, m12 + m21, 1.0 - m00 - m11 + m22], axis=-1),
        ],
        axis=-2,
    )  # [..., 4, 4]; row i is 4 q_i * q
    diagonal = jnp.stack([candidates[..., i, i] for i in range(4)], axis=-1)
    is_best = jnp.argmax(diagonal, axis=-1)[..., None] == jnp.arange(4)  # one-hot [..., 4]
    chosen = jnp.sum(jnp.where(is_best[..., None], candidates, 0.0), axis=-2)
    q = chosen / jnp.linalg.norm(chosen, axis=-1, keepdims=True)
    q = jnp.where(q[..., :1] < 0, -q, q)
    return q.astype(out_dtype)


@jax.jit
def quaternion_to_axis_angle(quaternion: jax.Array) -> jax.Array:
    """Quaternion (w, x, y, z) [..., 4] (any non-zero norm) -> axis-angle [..., 3] with angle in [0, pi]."""
    quaternion = jnp.asarray(quaternion)
    _check_last_dims(quaternion, (4,), "quaternion_to_axis_angle", "quaternions")
    out_dtype = output_dtype(quaternion)
    q = quaternion.astype(compute_dtype(quaternion))
    q = jnp.where(q[..., :1] < 0, -q, q)  # q and -q are the same rotation; w >= 0 gives angle <= pi
    w, v = q[..., :1], q[..., 1:]
    sin_sq = jnp.sum(jnp.square(v), axis=-1, keepdims=True)  # |v|^2 = |q|^2 sin^2(angle / 2)
    # angle = 2 atan2(|v|, w); aa = v * angle / |v|. For |v| << w: angle / |v| = 2/w (1 - |v|^2 / (3 w^2)).
    # (The zero quaternion, not a rotation, takes the closed form with safe arguments and gives 0.)
    small = sin_sq < _SMALL_ANGLE_SQ * jnp.square(w)
    sin_half = jnp.sqrt(jnp.where(small | (sin_sq == 0), 1.0, sin_sq))
    safe_w = jnp.where(small, w, 1.0)
    r_sq = sin_sq / jnp.square(safe_w)
    factor = jnp.where(
        small,
        2.0 / safe_w * (1.0 - r_sq / 3.0 + jnp.square(r_sq) / 5.0 - r_sq * jnp.square(r_sq) / 7.0),
        2.0 * jnp.arctan2(sin_half, w) / sin_half,
    )
    return (factor * v).astype(out_dtype)


@jax.jit
def matrix_to_axis_angle(matrix: jax.Array) -> jax.Array:
    """Rotation matrix [..., 3, 3] -> axis-angle [..., 3], angle in [0, pi] (via Shepperd's quaternion)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


@jax.jit
def quaternion_multiply(a: jax.Array, b: jax.Array) -> jax.Array:
    """Hamilton product a * b of (w, x, y, z) quaternions [..., 4] (the rotation b first, then a)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_last_dims(a, (4,), "quaternion_multiply", "quaternions")
    _check_last_dims(b, (4,), "quaternion_multiply", "quaternions")
    out_dtype = jnp.result_type(output_dtype(a), output_dtype(b))
    dtype = compute_dtype(a, b)
    aw, ax, ay, az = jnp.moveaxis(a.astype(dtype), -1, 0)
    bw, bx, by, bz = jnp.moveaxis(b.astype(dtype), -1, 0)
    product = [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]
    return jnp.stack(product, axis=-1).astype(out_dtype)


def _elementary_rotation(axis: str, angle: jax.Array) -> jax.Array:
    """Rotation by `angle` (radians) [...] about the coordinate axis 'X', 'Y' or 'Z' -> [..., 3, 3]."""
    c, s = jnp.cos(angle), jnp.sin(angle)
    one, zero = jnp.ones_like(angle), jnp.zeros_like(angle)
    rows = {
        "X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def euler_to_matrix(angles_degrees: jax.Array, order: str) -> jax.Array:
    """BVH Euler angles in degrees [..., 3] -> rotation matrix [..., 3, 3].

    Intrinsic rotations in the written order (BVH channel order): angle i is about axis order[i], and
    R = R_{order[0]}(a0) @ R_{order[1]}(a1) @ R_{order[2]}(a2), which is scipy's
    `Rotation.from_euler(order, angles, degrees=True)` with an uppercase (intrinsic) order.
    order: one of 'XYZ', 'XZY', 'YXZ', 'YZX', 'ZXY', 'ZYX' (uppercase, as written in BVH files).
    """
    if not isinstance(order, str) or order not in EULER_ORDERS:
        raise ValueError(
            f"euler_to_matrix: unknown rotation order {order!r}; expected one of {', '.join(EULER_ORDERS)} "
            "(three distinct uppercase axes, intrinsic, as in BVH CHANNELS)"
        )
    return _euler_to_matrix(angles_degrees, order)


@functools.partial(jax.jit, static_argnames="order")
def _euler_to_matrix(angles_degrees: jax.Array, order: str) -> jax.Array:
    angles_degrees = jnp.asarray(angles_degrees)
    _check_last_dims(angles_degrees, (3,), "euler_to_matrix", "Euler angles")
    out_dtype = output_dtype(angles_degrees)
    radians = jnp.deg2rad(angles_degrees.astype(compute_dtype(angles_degrees)))
    r0, r1, r2 = (_elementary_rotation(axis, radians[..., i]) for i, axis in enumerate(order))
    return (r0 @ r1 @ r2).astype(out_dtype)


# -------------------------------------------------------------------------------------------- skeletons
def _static_parents(parents) -> np.ndarray:
    """parents as a validated 1-D int64 numpy array (static structure, not a traced value)."""
    try:
        array = np.asarray(parents)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError(
            "parents must be static host data (a numpy array or list of ints), not a traced jax value; "
            "pass it through jax.jit as a static argument or close over it"
        ) from error
    if array.ndim != 1:
        raise ValueError(f"parents must be a 1-D array of parent indices, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"parents must be integers (-1 for a root), got dtype {array.dtype}")
    return array.astype(np.int64)


def joint_depths(parents) -> np.ndarray:
    """Depth of each joint in its tree (roots are 0), computed on the host. parents: int [J] -> int32 [J].

    Raises ValueError for a parent index outside [-1, J) or for joints on a cycle (naming the indices).
    """
    parents = _static_parents(parents)
    num_joints = parents.shape[0]
    bad = np.nonzero((parents < -1) | (parents >= num_joints))[0]
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"joint {j} has parent index {int(parents[j])}, outside [-1, {num_joints}) "
            f"({bad.size} joint(s) out of range: {bad.tolist()[:10]})"
        )
    depths = np.where(parents < 0, 0, -1)
    for _ in range(num_joints):  # each pass settles at least one level of every tree
        unknown = depths < 0
        if not unknown.any():
            break
        parent_depths = depths[np.where(unknown, parents, 0)]
        depths = np.where(unknown & (parent_depths >= 0), parent_depths + 1, depths)
    cyclic = np.nonzero(depths < 0)[0]
    if cyclic.size:
        raise ValueError(
            f"parents contain a cycle: joints {cyclic.tolist()[:20]} never reach a root (parent -1); "
            f"e.g. joint {int(cyclic[0])} -> parent {int(parents[cyclic[0]])}"
        )
    return depths.astype(np.int32)


def forward_kinematics_with_rotations(
    local_rotations: jax.Array,
    offsets: jax.Array,
    parents,
    root_translation: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Global joint positions and rotations from local rotations.

    local_rotations: [..., J, 3, 3], each joint's rotation relative to its parent.
    offsets: [J, 3] (or broadcastable [..., J, 3]), each joint's rest offset in its parent's frame;
      a root's offset is added to `root_translation`.
    parents: static int [J], -1 for a root; any joint order (processed one depth level at a time).
    root_translation: [..., 3], shared by every root.
    Returns positions [..., J, 3] and global rotations [..., J, 3, 3], with
      G_root = R_root, p_root = t + offset_root; G_j = G_parent R_j, p_j = p_parent + G_parent offset_j.
    """
    joint_depths(parents)  # validates: ValueError for out-of-range parents or cycles
    parents = _static_parents(parents)
    num_joints = parents.shape[0]
    if num_joints == 0:
        raise ValueError("forward_kinematics: the skeleton has no joints (parents is empty)")
    local_rotations, offsets = jnp.asarray(local_rotations), jnp.asarray(offsets)
    root_translation = jnp.asarray(root_translation)
    joints = f"local rotations (parents has {num_joints} joints)"
    _check_last_dims(local_rotations, (num_joints, 3, 3), "forward_kinematics", joints)
    _check_last_dims(offsets, (num_joints, 3), "forward_kinematics", "offsets")
    _check_last_dims(root_translation, (3,), "forward_kinematics", "root translation")
    lead = local_rotations.shape[:-3]
    try:
        fits = np.broadcast_shapes(lead, root_translation.shape[:-1], offsets.shape[:-2]) == lead
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"forward_kinematics: root translation {list(root_translation.shape)} and offsets "
            f"{list(offsets.shape)} must broadcast to the rotations' leading axes {list(lead)} (root "
            f"translation [..., 3] with the rotations' [...]); got rotations {list(local_rotations.shape)}"
        )
    return _forward_kinematics(local_rotations, offsets, root_translation, parents=tuple(parents.tolist()))


@functools.partial(jax.jit, static_argnames="parents")
def _forward_kinematics(local_rotations, offsets, root_translation, *, parents: tuple[int, ...]):
    """forward_kinematics_with_rotations on validated inputs (parents a tuple, so it can be static)."""
    out_dtype = jnp.result_type(
        output_dtype(local_rotations), output_dtype(offsets), output_dtype(root_translation)
    )
    dtype = compute_dtype(local_rotations, offsets, root_translation)
    local_rotations = local_rotations.astype(dtype)
    offsets = offsets.astype(dtype)
    root_translation = root_translation.astype(dtype)
    depths = joint_depths(parents)
    parents = np.asarray(parents)

    # Joints grouped by depth. A joint's parent sits in the previous level, so each level gathers
    # from the previous level's block only; one final gather puts the joints back in their own order.
    levels = [np.nonzero(depths == d)[0] for d in range(int(depths.max()) + 1)]
    slot_in_level = np.zeros(parents.size, dtype=np.int64)
    for joints in levels:
        slot_in_level[joints] = np.arange(joints.size)

    batch = np.broadcast_shapes(local_rotations.shape[:-3], offsets.shape[:-2], root_translation.shape[:-1])
    roots = levels[0]
    level_rotations = [local_rotations[..., roots, :, :]]
    level_positions = [root_translation[..., None, :] + offsets[..., roots, :]]
    for joints in levels[1:]:
        parent_slots = slot_in_level[parents[joints]]
        parent_rotations = level_rotations[-1][..., parent_slots, :, :]
        parent_positions = level_positions[-1][..., parent_slots, :]
        # 3x3 products as multiply-and-sum, not dot: XLA:CPU (jax 0.10.2) fails to compile a dot of two
        # operands gathered with the same indices when there are >= 2 batch axes (HLO verifier error).
        rotated_offsets = jnp.sum(parent_rotations * offsets[..., joints, None, :], axis=-1)
        local = local_rotations[..., joints, :, :]
        level_rotations.append(jnp.sum(parent_rotations[..., :, :, None] * local[..., None, :, :], axis=-2))
        level_positions.append(parent_positions + rotated_offsets)

    inverse = np.argsort(np.concatenate(levels))
    rotations = jnp.concatenate(level_rotations, axis=-3)[..., inverse, :, :]
    positions = jnp.concatenate(
        [jnp.broadcast_to(p, batch + p.shape[-2:]) for p in level_positions], axis=-2
    )[..., inverse, :]
    return positions.astype(out_dtype), rotations.astype(out_dtype)


def forward_kinematics(
    local_rotations: jax.Array,
    offsets: jax.Array,
    parents,
    root_translation: jax.Array,
) -> jax.Array:
    """Global joint positions [..., J, 3]; see `forward_kinematics_with_rotations` for the arguments."""
    positions, _ = forward_kinematics_with_rotations(local_rotations, offsets, parents, root_translation)
    return positions


def bone_children(parents) -> np.ndarray:
    """The child joint of every bone: indices of the non-root joints, increasing. parents: int [J] -> [B]."""
    joint_depths(parents)  # validates range and cycles
    return np.nonzero(_static_parents(parents) >= 0)[0]


def bone_lengths(positions: jax.Array, parents) -> jax.Array:
    """Length of every bone (parent, child), in increasing child index. positions: [..., J, 3] -> [..., B].

    B = J - (number of roots), i.e. J - 1 for a single tree. Zero-length bones have a zero (finite) gradient.
    """
    children = bone_children(parents)
    parents = _static_parents(parents)
    positions = jnp.asarray(positions)
    _check_last_dims(positions, (parents.size, 3), "bone_lengths", "joint positions")
    return _bone_lengths(
        positions, children=tuple(children.tolist()), parents=tuple(parents[children].tolist())
    )


@functools.partial(jax.jit, static_argnames=("children", "parents"))
def _bone_lengths(positions, *, children: tuple[int, ...], parents: tuple[int, ...]):
    out_dtype = output_dtype(positions)
    positions = positions.astype(compute_dtype(positions))
    bones = (
        positions[..., np.asarray(children, np.int64), :] - positions[..., np.asarray(parents, np.int64), :]
    )
    return safe_norm(bones, axis=-1).astype(out_dtype)
