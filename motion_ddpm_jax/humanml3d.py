"""HumanML3D's 263-feature motion layout (Guo et al. 2022) and its decoding to joint positions (pure jax).

HumanML3D ("Generating Diverse and Natural 3D Human Motions from Text", the T2M skeleton of 22 SMPL
joints, 20 fps) stores each frame t of a clip as 263 features, in the data's unit (metres for HumanML3D;
y is up, the first frame's body faces +z, +x is the body's left):

- [0]       ROOT_ROT_VELOCITY: root rotation velocity about +y, in radians per frame: half the change of
              the facing angle from frame t to t + 1 (arcsin of the y part of the unit quaternion between
              the two facings);
- [1:3]     ROOT_LINEAR_VELOCITY: root linear velocity (x, z), root[t + 1] - root[t] seen in the root's
              facing frame at t + 1 (the frame in which the body faces +z);
- [3]       ROOT_HEIGHT: root (pelvis) height y at frame t;
- [4:67]    RIC: "rotation-invariant coordinates" of joints 1..21, 3 each: the joint minus the root's x and
              z (the height is kept), in the root's facing frame at t;
- [67:193]  ROTATIONS: continuous 6D local rotations of joints 1..21, 6 each;
- [193:259] LOCAL_VELOCITIES: velocities of all 22 joints, 3 each, in the root's facing frame;
- [259:263] FOOT_CONTACTS: foot contacts (0/1) of the left ankle, left foot, right ankle, right foot.

`recover_from_ric` turns features back into global joint positions exactly as the original code's
`recover_root_rot_pos` + `recover_from_ric` do. It reads only features 0..66 (root rotation velocity,
root linear velocity, root height, ric); the 6D rotations, local velocities and foot contacts are not
read (they are redundant with the positions, and generated motion need not keep them consistent).

Decoding integrates the velocities, so the root starts at x = z = 0 facing +z (as every HumanML3D clip was
normalised to), and the root's facing angle and trajectory are only as exact as the float32 running sums.

Sign convention (that of the original code): the frame-t root "angle" a[t] is the running sum of the
rotation velocities of the frames before t, and the quaternion (cos a, 0, sin a, 0) rotates the world
into the root's facing frame; its inverse (a rotation by -2 a about +y) takes facing-frame vectors back
into the world, so the body faces (-sin 2a, 0, cos 2a): a positive rotation velocity turns the body to its
right (clockwise seen from above).
"""

import jax
import jax.numpy as jnp
import numpy as np

FEATURES = 263
JOINTS = 22

NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)
# The T2M kinematic tree (SMPL's first 22 joints): PARENTS[j] is the parent of joint j, -1 for the pelvis.
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)

# Feature groups of the last axis (each a slice, so `features[..., ROOT_HEIGHT]` keeps a size-1 axis).
ROOT_ROT_VELOCITY = slice(0, 1)
ROOT_LINEAR_VELOCITY = slice(1, 3)
ROOT_HEIGHT = slice(3, 4)
RIC = slice(4, 4 + 3 * (JOINTS - 1))  # 4:67
ROTATIONS = slice(RIC.stop, RIC.stop + 6 * (JOINTS - 1))  # 67:193
LOCAL_VELOCITIES = slice(ROTATIONS.stop, ROTATIONS.stop + 3 * JOINTS)  # 193:259
FOOT_CONTACTS = slice(LOCAL_VELOCITIES.stop, LOCAL_VELOCITIES.stop + 4)  # 259:263
assert FOOT_CONTACTS.stop == FEATURES


def is_layout(representation: str, feature_size: int) -> bool:
    """Whether data of `representation` and `feature_size` are read as this layout (and decoded)."""
    return representation == "humanml3d" and int(feature_size) == FEATURES


def _rotate_to_world(angle: jax.Array, x: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """qrot(qinv(q), (x, 0, z)) for q = (cos a, 0, sin a, 0): a rotation by -2a about +y, in closed form."""
    cos, sin = jnp.cos(2 * angle), jnp.sin(2 * angle)
    return cos * x - sin * z, sin * x + cos * z


def recover_from_ric(features: jax.Array) -> jax.Array:
    """Global joint positions [..., T, 22, 3] (float32, the data's unit) of HumanML3D features [..., T, 263].

    Pure and jit-able, any leading batch axes (the time axis is the second to last). Follows the original
    `recover_root_rot_pos` + `recover_from_ric`:

    - angle[t] = sum(rot_velocity[:t]) (angle[0] = 0);
    - root xz[t] = sum over s < t of linear_velocity[s] rotated into the world by the inverse of the root
      quaternion (cos angle[s + 1], 0, sin angle[s + 1], 0) (root xz[0] = 0); root y[t] = feature 3;
    - joint j > 0 at t = ric[t, j] rotated by the inverse of the frame-t root quaternion, plus root xz[t].

    Reads features 0..66 only (see the module docstring). Raises ValueError when the last axis is not 263,
    there is no time axis, or the values are not floating-point.
    """
    dtype = features.dtype if hasattr(features, "dtype") else np.asarray(features).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"HumanML3D features have dtype {dtype}; expected real floating-point values")
    features = jnp.asarray(features)
    if features.ndim < 2 or features.shape[-1] != FEATURES:
        raise ValueError(
            f"HumanML3D features must have shape [..., T, {FEATURES}] (last dimension {FEATURES}: root 4 + "
            f"ric {3 * (JOINTS - 1)} + rotations {6 * (JOINTS - 1)} + velocities {3 * JOINTS} + contacts 4 "
            f"for {JOINTS} joints), got shape {tuple(features.shape)}"
        )
    features = features.astype(jnp.float32)

    rot_velocity = features[..., ROOT_ROT_VELOCITY.start]  # [..., T]
    # Shift by one frame: the velocity stored at t - 1 takes the root from t - 1 to t.
    shifted = jnp.concatenate([jnp.zeros_like(rot_velocity[..., :1]), rot_velocity[..., :-1]], axis=-1)
    angle = jnp.cumsum(shifted, axis=-1)

    linear = features[..., ROOT_LINEAR_VELOCITY]  # [..., T, 2]
    linear = jnp.concatenate([jnp.zeros_like(linear[..., :1, :]), linear[..., :-1, :]], axis=-2)
    step_x, step_z = _rotate_to_world(angle, linear[..., 0], linear[..., 1])
    root_x = jnp.cumsum(step_x, axis=-1)
    root_z = jnp.cumsum(step_z, axis=-1)
    root_y = features[..., ROOT_HEIGHT.start]
    root = jnp.stack([root_x, root_y, root_z], axis=-1)  # [..., T, 3]

    ric = features[..., RIC].reshape(features.shape[:-1] + (JOINTS - 1, 3))
    x, z = _rotate_to_world(angle[..., None], ric[..., 0], ric[..., 2])
    joints = jnp.stack([x + root_x[..., None], ric[..., 1], z + root_z[..., None]], axis=-1)
    return jnp.concatenate([root[..., None, :], joints], axis=-2)
