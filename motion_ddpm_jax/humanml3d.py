"""The HumanML3D feature layout (Guo et al. 2022) of HumanML3D and KIT-ML, decoded to joint positions.

"Generating Diverse and Natural 3D Human Motions from Text" (the T2M code, EricGuo5513/HumanML3D and
EricGuo5513/text-to-motion) stores each frame t of a clip of a skeleton of J joints as 12 J - 1 features,
in the data's unit, y up, the first frame's body facing +z:

- [0]          root rotation velocity about +y, in radians per frame: half the change of the facing angle
                 from frame t to t + 1 (arcsin of the y part of the unit quaternion between the two facings);
- [1:3]        root linear velocity (x, z), root[t + 1] - root[t] seen in the root's facing frame at t + 1
                 (the frame in which the body faces +z);
- [3]          root height y at frame t;
- ric          "rotation-invariant coordinates" of joints 1..J-1, 3 each: the joint minus the root's x and z
                 (the height is kept), in the root's facing frame at t;
- rotations    continuous 6D local rotations of joints 1..J-1, 6 each;
- velocities   velocities of all J joints, 3 each, in the root's facing frame;
- contacts     4 foot contacts (0/1), of `Layout.contact_joints` in that order.

Two skeletons use it (`LAYOUTS`, keyed by feature size; `layout` looks one up):

- `T2M` (HumanML3D): 22 SMPL joints, 263 features, metres, 20 fps; +x is the body's left.
- `KIT` (KIT-ML): 21 joints of the MMM (Master Motor Map) reference model, 251 features, millimetres (MMM's
  unit), 12.5 fps. The names spell out the MMM joints' (see `KIT`). The decoded figure faces +z but is
  mirrored with respect to HumanML3D's: MMM's left joints lie at -x (T2M's KIT processing takes them as
  the right side: face_joint_indx = [11, 16, 5, 8] = "r_hip, l_hip, sdr_r, sdr_l" in text-to-motion's
  scripts/motion_process.py), because KIT-ML's joint positions swap MMM's y (forward) and z (up) axes,
  a reflection (Language2Pose's src/data/data.py, "switch y and z axis", which made them). The positions
  `recover_from_ric` gives stay in those coordinates (KIT-ML's tools read them so: sampling's
  `*_positions.npy`, eval's inputs), but a picture of them would show the mirror image of the motion (a
  caption's left hand drawn as the figure's right): `KIT.mirrored` says so, and the drawings (sampling's
  animation, training's progress GIFs: `render.skeleton_scene(..., mirrored=True)`) reflect x back.

`recover_from_ric` turns features of either layout back into global joint positions exactly as the original
code's `recover_root_rot_pos` + `recover_from_ric(data, joints_num)` do, the joint count from the feature
size. It reads only the root features and the ric (features 0 .. 3 J); the 6D rotations, local velocities
and foot contacts are not read (they are redundant with the positions, and generated motion need not keep
them consistent).

Decoding integrates the velocities, so the root starts at x = z = 0 facing +z (as every clip was normalised
to), and the root's facing angle and trajectory are only as exact as the float32 running sums.

Sign convention (that of the original code): the frame-t root "angle" a[t] is the running sum of the
rotation velocities of the frames before t, and the quaternion (cos a, 0, sin a, 0) rotates the world
into the root's facing frame; its inverse (a rotation by -2 a about +y) takes facing-frame vectors back
into the world, so the body faces (-sin 2a, 0, cos 2a): a positive rotation velocity turns the body
clockwise seen from above (to its right in HumanML3D's right-handed data).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


def feature_count(joints: int) -> int:
    """The layout's feature count for `joints` joints: 4 + 3 (J - 1) + 6 (J - 1) + 3 J + 4 = 12 J - 1."""
    return 12 * int(joints) - 1


@dataclasses.dataclass(frozen=True)
class Layout:
    """One skeleton's instance of the layout: its joints (names, parents: -1 for the root, joint 0), the
    unit and frame rate of its published data, and the joints the original processing reads (both as
    indices into `names`): `facing_joints` (right hip, left hip, right shoulder, left shoulder as the T2M
    code names them: the body faces cross(+y, (right - left hips) + (right - left shoulders)) there) and
    `contact_joints` (those of the 4 foot-contact features, in order).

    mirrored: the data's joint positions are a mirror image of the motion as performed (KIT-ML's: with y
    up and the figure facing +z, MMM's left joints lie at -x, where HumanML3D's right-handed figure has
    its right); a drawing reflects x (x -> -x) to show the motion itself. The positions are left as the
    data have them."""

    dataset: str
    names: tuple[str, ...]
    parents: tuple[int, ...]
    unit: str
    fps: float
    facing_joints: tuple[int, int, int, int]
    contact_joints: tuple[int, int, int, int]
    mirrored: bool = False

    def __post_init__(self):
        if len(self.names) != len(self.parents) or len(set(self.names)) != len(self.names):
            raise ValueError(f"{self.dataset}: {len(self.names)} unique names needed for the parents")
        if self.parents[0] != -1 or any(not 0 <= p < j for j, p in enumerate(self.parents) if j):
            raise ValueError(f"{self.dataset}: parents must be -1 for joint 0 and lower indices elsewhere")

    @property
    def joints(self) -> int:
        return len(self.names)

    @property
    def features(self) -> int:
        return feature_count(self.joints)

    # Feature groups of the last axis (each a slice, so `features[..., layout.root_height]` keeps its axis).
    root_rot_velocity = slice(0, 1)
    root_linear_velocity = slice(1, 3)
    root_height = slice(3, 4)

    @property
    def ric(self) -> slice:
        return slice(4, 4 + 3 * (self.joints - 1))

    @property
    def rotations(self) -> slice:
        return slice(self.ric.stop, self.ric.stop + 6 * (self.joints - 1))

    @property
    def local_velocities(self) -> slice:
        return slice(self.rotations.stop, self.rotations.stop + 3 * self.joints)

    @property
    def foot_contacts(self) -> slice:
        return slice(self.local_velocities.stop, self.local_velocities.stop + 4)


# HumanML3D: SMPL's first 22 joints; the tree is the T2M code's t2m_kinematic_chain (paramUtil.py).
T2M = Layout(
    dataset="HumanML3D",
    names=(
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
    ),
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19),
    unit="m",
    fps=20.0,
    facing_joints=(2, 1, 17, 16),  # face_joint_indx
    contact_joints=(7, 10, 8, 11),  # fid_l, then fid_r
)

# KIT-ML: the 21 joints of the MMM model in the order of KIT-ML's joint files (TEMOS's temos/info/joints.py
# `mmm_joints`: root, BP, BT, BLN, BUN, LS, LE, LW, RS, RE, RW, LH, LK, LA, LMrot, LF, RH, RK, RA, RMrot,
# RF), named after them: BP and BT, the two trunk joints of MMM's spine (80 mm above the root and 120 mm
# above BP in Language2Pose's src/skeleton/mmm.xml; TEMOS maps them to SMPL's spine1 and spine3); BLN and
# BUN, its lower and upper neck joints; LMrot, the foot's joint between the ankle and the metatarsal heads
# (mmm.xml: 24 mm ahead of and 19 mm below the ankle, with the metatarsal-head markers 42-51 mm further
# ahead), and LF, the toe joint 54 mm ahead of LMrot (SMPL's "foot" joint, as TEMOS maps it). The tree is
# the T2M code's kit_kinematic_chain (EricGuo5513/HumanML3D paramUtil.py)
# [[0, 11, 12, 13, 14, 15], [0, 16, 17, 18, 19, 20], [0, 1, 2, 3, 4], [3, 5, 6, 7], [3, 8, 9, 10]].
KIT = Layout(
    dataset="KIT-ML",
    names=(
        "pelvis",  # root
        "lower_spine",  # BP
        "upper_spine",  # BT
        "lower_neck",  # BLN
        "upper_neck",  # BUN
        "left_shoulder",  # LS
        "left_elbow",  # LE
        "left_wrist",  # LW
        "right_shoulder",  # RS
        "right_elbow",  # RE
        "right_wrist",  # RW
        "left_hip",  # LH
        "left_knee",  # LK
        "left_ankle",  # LA
        "left_midfoot",  # LMrot
        "left_foot",  # LF
        "right_hip",  # RH
        "right_knee",  # RK
        "right_ankle",  # RA
        "right_midfoot",  # RMrot
        "right_foot",  # RF
    ),
    parents=(-1, 0, 1, 2, 3, 3, 5, 6, 3, 8, 9, 0, 11, 12, 13, 14, 0, 16, 17, 18, 19),
    unit="mm",
    fps=12.5,
    facing_joints=(11, 16, 5, 8),  # face_joint_indx: MMM's left hip and shoulder as "right" (mirrored data)
    contact_joints=(19, 20, 14, 15),  # fid_l = [19, 20] (MMM's right foot), then fid_r = [14, 15]
    mirrored=True,  # MMM's y and z swapped: a reflection, undone only for drawing
)

LAYOUTS = {lay.features: lay for lay in (T2M, KIT)}  # 263 -> T2M, 251 -> KIT

# The T2M layout's names, as before KIT-ML's was added (other modules and tests read them).
FEATURES = T2M.features  # 263
JOINTS = T2M.joints  # 22
NAMES = T2M.names
PARENTS = T2M.parents
KIT_NAMES = KIT.names
KIT_PARENTS = KIT.parents
ROOT_ROT_VELOCITY = T2M.root_rot_velocity
ROOT_LINEAR_VELOCITY = T2M.root_linear_velocity
ROOT_HEIGHT = T2M.root_height
RIC = T2M.ric  # 4:67
ROTATIONS = T2M.rotations  # 67:193
LOCAL_VELOCITIES = T2M.local_velocities  # 193:259
FOOT_CONTACTS = T2M.foot_contacts  # 259:263
assert FOOT_CONTACTS.stop == FEATURES and KIT.foot_contacts.stop == KIT.features == 251


def layout(representation: str, feature_size: int) -> Layout | None:
    """The layout data of `representation` with `feature_size` features are read as (and decoded with):
    T2M for the humanml3d representation's 263 features, KIT for its 251; None otherwise."""
    if representation != "humanml3d":
        return None
    return LAYOUTS.get(int(feature_size))


def other_rate(representation: str, feature_size: int, fps: float) -> tuple[Layout, str] | None:
    """Where data of this layout are read at `fps`, not the layout's own rate: the layout and how their
    motion then plays ("1.6x too fast", "2x too slow"); None where the rates agree or it is no layout."""
    found = layout(representation, feature_size)
    if found is None or math.isclose(float(fps), found.fps, rel_tol=1e-6):
        return None
    ratio = float(fps) / found.fps
    return found, f"{ratio:.3g}x too fast" if ratio > 1 else f"{1 / ratio:.3g}x too slow"


def is_layout(representation: str, feature_size: int) -> bool:
    """Whether data of `representation` and `feature_size` are read as this layout (and decoded): the
    humanml3d representation with 263 (HumanML3D) or 251 (KIT-ML) features."""
    return layout(representation, feature_size) is not None


def is_mirrored(representation: str, feature_size: int) -> bool:
    """Whether the joint positions decoded from data of `representation` and `feature_size` are a mirror
    image of the motion (`Layout.mirrored`): KIT-ML's 251 features; False for HumanML3D's 263 and for
    data that are not of this layout. What a drawing of them passes as `render.skeleton_scene`'s
    `mirrored`."""
    found = layout(representation, feature_size)
    return found is not None and found.mirrored


def _rotate_to_world(angle: jax.Array, x: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """qrot(qinv(q), (x, 0, z)) for q = (cos a, 0, sin a, 0): a rotation by -2a about +y, in closed form."""
    cos, sin = jnp.cos(2 * angle), jnp.sin(2 * angle)
    return cos * x - sin * z, sin * x + cos * z


def _sizes() -> str:
    return " or ".join(f"{f} ({lay.dataset}: {lay.joints} joints)" for f, lay in LAYOUTS.items())


def recover_from_ric(features: jax.Array) -> jax.Array:
    """Global joint positions [..., T, J, 3] (float32, the data's unit) of features [..., T, D] of either
    layout: D = 263 (HumanML3D, J = 22) or D = 251 (KIT-ML, J = 21).

    Pure and jit-able, any leading batch axes (the time axis is the second to last). Follows the original
    `recover_root_rot_pos` + `recover_from_ric(data, joints_num)`:

    - angle[t] = sum(rot_velocity[:t]) (angle[0] = 0);
    - root xz[t] = sum over s < t of linear_velocity[s] rotated into the world by the inverse of the root
      quaternion (cos angle[s + 1], 0, sin angle[s + 1], 0) (root xz[0] = 0); root y[t] = feature 3;
    - joint j > 0 at t = ric[t, j] rotated by the inverse of the frame-t root quaternion, plus root xz[t].

    Reads features 0 .. 3 J only (see the module docstring). Raises ValueError when the last axis is
    neither size, there is no time axis, or the values are not floating-point.
    """
    dtype = features.dtype if hasattr(features, "dtype") else np.asarray(features).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"HumanML3D features have dtype {dtype}; expected real floating-point values")
    features = jnp.asarray(features)
    chosen = LAYOUTS.get(features.shape[-1]) if features.ndim >= 2 else None
    if chosen is None:
        raise ValueError(
            f"HumanML3D-layout features must have shape [..., T, D] with D = 12 J - 1 (root 4 + ric "
            f"3 (J - 1) + rotations 6 (J - 1) + velocities 3 J + contacts 4), D = {_sizes()}; got shape "
            f"{tuple(features.shape)}"
        )
    features = features.astype(jnp.float32)

    rot_velocity = features[..., chosen.root_rot_velocity.start]  # [..., T]
    # Shift by one frame: the velocity stored at t - 1 takes the root from t - 1 to t.
    shifted = jnp.concatenate([jnp.zeros_like(rot_velocity[..., :1]), rot_velocity[..., :-1]], axis=-1)
    angle = jnp.cumsum(shifted, axis=-1)

    linear = features[..., chosen.root_linear_velocity]  # [..., T, 2]
    linear = jnp.concatenate([jnp.zeros_like(linear[..., :1, :]), linear[..., :-1, :]], axis=-2)
    step_x, step_z = _rotate_to_world(angle, linear[..., 0], linear[..., 1])
    root_x = jnp.cumsum(step_x, axis=-1)
    root_z = jnp.cumsum(step_z, axis=-1)
    root_y = features[..., chosen.root_height.start]
    root = jnp.stack([root_x, root_y, root_z], axis=-1)  # [..., T, 3]

    ric = features[..., chosen.ric].reshape(features.shape[:-1] + (chosen.joints - 1, 3))
    x, z = _rotate_to_world(angle[..., None], ric[..., 0], ric[..., 2])
    joints = jnp.stack([x + root_x[..., None], ric[..., 1], z + root_z[..., None]], axis=-1)
    return jnp.concatenate([root[..., None, :], joints], axis=-2)
