"""humanml3d: the layout (HumanML3D's 263 features, KIT-ML's 251) and recover_from_ric, against float64 numpy
written from the definition.

The references here (quaternion helpers, decoder, encoder) follow the T2M code's `recover_root_rot_pos` +
`recover_from_ric(data, joints_num)` and `process_file` (Guo et al. 2022) and never call the module under
test; KIT-ML's kinematic chain, facing and foot-contact joints are copied by hand from the T2M sources
(EricGuo5513/HumanML3D paramUtil.py, EricGuo5513/text-to-motion scripts/motion_process.py) and its joint
labels from TEMOS (Mathux/TEMOS temos/info/joints.py, the MMM joints).
Quaternions are [w, x, y, z]; y is up; in HumanML3D +x is the body's left when it faces +z (KIT-ML's data
are mirrored: MMM's left joints are at -x).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motion_ddpm_jax import humanml3d
from motion_ddpm_jax.humanml3d import FEATURES, JOINTS, PARENTS, recover_from_ric

# KIT-ML as the T2M code writes it, copied by hand (not read from the module under test):
# paramUtil.py's kit_kinematic_chain, and motion_process.py's KIT settings (face_joint_indx = r_hip, l_hip,
# sdr_r, sdr_l; fid_l, fid_r; process_file(source_data, 0.05)).
KIT_CHAIN = [[0, 11, 12, 13, 14, 15], [0, 16, 17, 18, 19, 20], [0, 1, 2, 3, 4], [3, 5, 6, 7], [3, 8, 9, 10]]
KIT_FACE = (11, 16, 5, 8)
KIT_FID_L, KIT_FID_R = (19, 20), (14, 15)
# TEMOS's mmm_joints: the MMM labels of the 21 joints in KIT-ML's order.
MMM_JOINTS = ["root", "BP", "BT", "BLN", "BUN", "LS", "LE", "LW", "RS", "RE", "RW", "LH", "LK", "LA", "LMrot",
              "LF", "RH", "RK", "RA", "RMrot", "RF"]  # fmt: skip


# ------------------------------------------------------------------------------ float64 numpy references
def qrot(q, v):
    """v rotated by unit quaternion q (broadcasting), as the original qrot: v + 2 (w u x v + u x (u x v))."""
    u = q[..., 1:]
    uv = np.cross(u, v)
    return v + 2 * (q[..., :1] * uv + np.cross(u, uv))


def qinv(q):
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def qmul(a, b):
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        -1,
    )


def qbetween(v0, v1):
    """The shortest-arc unit quaternion taking direction v0 onto v1 (the original qbetween_np; w >= 0)."""
    w = np.sqrt(np.sum(v0**2, -1) * np.sum(v1**2, -1)) + np.sum(v0 * v1, -1)
    q = np.concatenate([w[..., None], np.cross(v0, v1)], -1)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def reference_recover_from_ric(data):
    """The original recover_root_rot_pos + recover_from_ric(data, joints_num), float64: [..., T, 12 J - 1]
    -> [..., T, J, 3] (263 features: 22 joints; 251: 21)."""
    data = np.asarray(data, np.float64)
    joints = (data.shape[-1] + 1) // 12
    assert 12 * joints - 1 == data.shape[-1]
    angle = np.zeros(data.shape[:-1])
    angle[..., 1:] = data[..., :-1, 0]
    angle = np.cumsum(angle, -1)
    quat = np.zeros(data.shape[:-1] + (4,))
    quat[..., 0] = np.cos(angle)
    quat[..., 2] = np.sin(angle)
    root = np.zeros(data.shape[:-1] + (3,))
    root[..., 1:, 0] = data[..., :-1, 1]
    root[..., 1:, 2] = data[..., :-1, 2]
    root = np.cumsum(qrot(qinv(quat), root), -2)
    root[..., 1] = data[..., 3]
    local = data[..., 4 : 4 + 3 * (joints - 1)].reshape(data.shape[:-1] + (joints - 1, 3))
    local = qrot(np.broadcast_to(qinv(quat)[..., None, :], local.shape[:-1] + (4,)), local)
    local[..., 0] += root[..., None, 0]
    local[..., 2] += root[..., None, 2]
    return np.concatenate([root[..., None, :], local], -2)


def encode(
    positions, rng, canonical_sign=True, face=(2, 1, 17, 16), contacts=(7, 10, 8, 11), threshold=0.002
):
    """The T2M code's process_file on global positions [T + 1, J, 3] (float64): features [T, 12 J - 1] and
    the normalised positions [T, J, 3] they stand for. The defaults are HumanML3D's (22 joints:
    face_joint_indx [2, 1, 17, 16], fid_l + fid_r [7, 10] + [8, 11], feet_thre 0.002); KIT-ML's 21 joints
    take KIT_FACE, KIT_FID_L + KIT_FID_R and 0.05.

    As the original: the motion is put on the floor, its first root xz moved to the origin and turned to
    face +z; each frame's facing comes from the hips' and shoulders' right-minus-left vector (`face`: right
    hip, left hip, right shoulder, left shoulder; not smoothed over time here: the decoding is exact for any
    facing about +y). The 6D rotations are filled with noise (the decoder must not read them).
    `canonical_sign` flips the frame-to-frame quaternion to w >= 0 before the arcsin; the original does not
    (see test_original_encoder_flips_the_turn_when_facing_backwards).
    """
    p = np.array(positions, np.float64)
    joints = p.shape[1]
    p[..., 1] -= p.min(axis=(0, 1))[1]
    p -= p[0, 0] * np.array([1.0, 0.0, 1.0])
    r_hip, l_hip, sdr_r, sdr_l = face

    def facing(frames):
        across = (frames[..., r_hip, :] - frames[..., l_hip, :]) + (
            frames[..., sdr_r, :] - frames[..., sdr_l, :]
        )
        forward = np.cross(np.array([0.0, 1.0, 0.0]), across)
        return forward / np.linalg.norm(forward, axis=-1, keepdims=True)

    to_front = qbetween(facing(p[0]), np.array([0.0, 0.0, 1.0]))
    p = qrot(np.broadcast_to(to_front, p.shape[:-1] + (4,)), p)
    r_rot = qbetween(facing(p), np.broadcast_to([0.0, 0.0, 1.0], (len(p), 3)))  # world -> facing frame

    velocity = qrot(r_rot[1:], p[1:, 0] - p[:-1, 0])
    r_velocity = qmul(r_rot[1:], qinv(r_rot[:-1]))
    if canonical_sign:
        r_velocity *= np.where(r_velocity[:, :1] < 0, -1.0, 1.0)
    local = p.copy()
    local[..., 0] -= local[:, :1, 0]
    local[..., 2] -= local[:, :1, 2]
    local = qrot(np.broadcast_to(r_rot[:, None], local.shape[:-1] + (4,)), local)
    local_velocity = qrot(np.broadcast_to(r_rot[:-1, None], p[1:].shape[:-1] + (4,)), p[1:] - p[:-1])
    steps = np.sum((p[1:] - p[:-1]) ** 2, -1)
    contact = (steps[:, list(contacts)] < threshold).astype(np.float64)

    frames = len(p) - 1
    features = np.concatenate(
        [
            np.arcsin(r_velocity[:, 2:3]),
            velocity[:, [0, 2]],
            p[:-1, 0, 1:2],
            local[:-1, 1:].reshape(frames, -1),
            rng.normal(size=(frames, 6 * (joints - 1))),
            local_velocity.reshape(frames, -1),
            contact,
        ],
        -1,
    )
    assert features.shape == (frames, 12 * joints - 1)
    return features, p[:-1]


# A rest pose in metres, facing +z with +x the body's left (SMPL-like proportions).
REST = np.array(
    [
        [0.0, 0.93, 0.0],
        [0.07, 0.84, -0.01],
        [-0.07, 0.84, -0.01],
        [0.0, 1.05, -0.02],
        [0.09, 0.47, 0.01],
        [-0.09, 0.47, 0.01],
        [0.0, 1.18, -0.01],
        [0.08, 0.07, -0.03],
        [-0.08, 0.07, -0.03],
        [0.0, 1.23, 0.0],
        [0.09, 0.02, 0.1],
        [-0.09, 0.02, 0.1],
        [0.0, 1.45, -0.02],
        [0.07, 1.37, -0.01],
        [-0.07, 1.37, -0.01],
        [0.0, 1.6, 0.03],
        [0.17, 1.4, -0.02],
        [-0.17, 1.4, -0.02],
        [0.43, 1.38, -0.04],
        [-0.43, 1.38, -0.04],
        [0.68, 1.37, -0.02],
        [-0.68, 1.37, -0.02],
    ]
)


# KIT-ML's 21 joints at rest in millimetres, facing +z, as KIT-ML's data hold them: mirrored, MMM's left
# joints (labels L*) at -x; the MMM labels are in MMM_JOINTS.
KIT_REST = np.array(
    [
        [0.0, 960.0, 0.0],  # root
        [0.0, 1040.0, -15.0],  # BP
        [0.0, 1230.0, -25.0],  # BT
        [0.0, 1440.0, -25.0],  # BLN
        [0.0, 1500.0, 0.0],  # BUN
        [-190.0, 1410.0, -25.0],  # LS
        [-205.0, 1110.0, -40.0],  # LE
        [-215.0, 860.0, -10.0],  # LW
        [190.0, 1410.0, -25.0],  # RS
        [205.0, 1110.0, -40.0],  # RE
        [215.0, 860.0, -10.0],  # RW
        [-90.0, 910.0, 0.0],  # LH
        [-95.0, 490.0, 15.0],  # LK
        [-100.0, 75.0, -25.0],  # LA
        [-100.0, 40.0, 15.0],  # LMrot
        [-100.0, 20.0, 110.0],  # LF
        [90.0, 910.0, 0.0],  # RH
        [95.0, 490.0, 15.0],  # RK
        [100.0, 75.0, -25.0],  # RA
        [100.0, 40.0, 15.0],  # RMrot
        [100.0, 20.0, 110.0],  # RF
    ]
)


@dataclasses.dataclass(frozen=True)
class Figure:
    """A skeleton to animate and encode: its rest pose [J, 3] (in its unit: `scale` units a metre), its
    limbs (swing sign, knee, the joints below the knee, elbow, wrist) and the arguments of `encode`."""

    rest: np.ndarray
    limbs: tuple
    scale: float
    fps: float
    face: tuple = (2, 1, 17, 16)
    contacts: tuple = (7, 10, 8, 11)
    threshold: float = 0.002

    def encode(self, positions, rng, canonical_sign=True):
        return encode(positions, rng, canonical_sign, self.face, self.contacts, self.threshold)


T2M_FIGURE = Figure(REST, ((1, 4, (7, 10), 18, 20), (-1, 5, (8, 11), 19, 21)), scale=1.0, fps=20.0)
KIT_FIGURE = Figure(
    KIT_REST,
    ((1, 12, (13, 14, 15), 6, 7), (-1, 17, (18, 19, 20), 9, 10)),
    scale=1000.0,
    fps=12.5,
    face=KIT_FACE,
    contacts=KIT_FID_L + KIT_FID_R,
    threshold=0.05,
)


def walking_and_turning(frames, seed, figure=T2M_FIGURE):
    """Global positions [frames, J, 3] of a figure walking a curve, turning well past 180 degrees, arms
    and legs swinging, bobbing, with a little noise, starting anywhere and facing anywhere."""
    rng = np.random.default_rng(seed)
    u = figure.scale
    t = np.arange(frames) / figure.fps
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(np.full(frames, rng.choice([-1, 1]) * 0.045))
    heading += 0.2 * np.sin(2 * np.pi * 0.3 * t)
    forward = np.stack([np.sin(heading), np.zeros(frames), np.cos(heading)], -1)
    root = np.cumsum(forward * rng.uniform(0.5, 1.5) * u / figure.fps, 0)
    root += rng.uniform(-3, 3, 3) * u * np.array([1, 0, 1])
    phase = 2 * np.pi * 1.8 * t
    local = np.repeat(figure.rest[None], frames, 0)
    for side, knee, below, elbow, wrist in figure.limbs:
        swing = side * 0.25 * u * np.sin(phase)
        local[:, knee, 2] += 0.5 * swing
        local[:, list(below), 2] += swing[:, None]
        local[:, list(below), 1] += 0.06 * u * np.maximum(0, np.sin(phase + side * np.pi / 2))[:, None]
        local[:, [elbow, wrist], 2] -= swing[:, None] * np.array([0.4, 0.8])
    local[:, :, 1] += 0.02 * u * np.cos(2 * phase)[:, None]
    local[:, figure.limbs[0][4], 1] += 0.3 * u * np.sin(2 * np.pi * 0.7 * t)
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]  # yaw `heading` about +y: +z -> forward
    world = np.stack(
        [c * local[..., 0] + s * local[..., 2], local[..., 1], -s * local[..., 0] + c * local[..., 2]], -1
    )
    return world + root[:, None] + rng.normal(0, 0.003 * u, world.shape)


def random_features(shape, seed, size=FEATURES):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=shape + (size,))
    features[..., 0] *= 0.3  # rotation velocities of up to about a radian a frame
    return features


# ------------------------------------------------------------------------------------------ the layout
def test_the_layout_constants_tile_263_features_for_22_joints_of_a_valid_tree():
    assert (FEATURES, JOINTS) == (263, 22)
    assert len(humanml3d.NAMES) == len(PARENTS) == JOINTS and len(set(humanml3d.NAMES)) == JOINTS
    assert PARENTS == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
    assert all(parent < joint for joint, parent in enumerate(PARENTS))
    named = dict(zip(humanml3d.NAMES, PARENTS, strict=True))
    assert named["left_wrist"] == humanml3d.NAMES.index("left_elbow") and named["head"] == 12
    groups = [
        humanml3d.ROOT_ROT_VELOCITY,
        humanml3d.ROOT_LINEAR_VELOCITY,
        humanml3d.ROOT_HEIGHT,
        humanml3d.RIC,
        humanml3d.ROTATIONS,
        humanml3d.LOCAL_VELOCITIES,
        humanml3d.FOOT_CONTACTS,
    ]
    bounds = [(group.start, group.stop) for group in groups]
    assert bounds == [(0, 1), (1, 3), (3, 4), (4, 67), (67, 193), (193, 259), (259, 263)]
    t2m = humanml3d.T2M
    assert (t2m.features, t2m.joints, t2m.names, t2m.parents, t2m.unit, t2m.fps) == (
        263,
        22,
        humanml3d.NAMES,
        PARENTS,
        "m",
        20.0,
    )
    assert t2m.facing_joints == (2, 1, 17, 16) and t2m.contact_joints == (7, 10, 8, 11)


def kit_parents_from_chain(chain, joints):
    """Parents from a T2M kinematic chain as the T2M Skeleton builds them: parent[c[j]] = c[j - 1]."""
    parents = [0] * joints
    parents[0] = -1
    for limb in chain:
        for j in range(1, len(limb)):
            parents[limb[j]] = limb[j - 1]
    return tuple(parents)


def test_the_kit_layout_tiles_251_features_for_the_21_joints_of_t2ms_kit_chain():
    kit = humanml3d.KIT
    assert (kit.features, kit.joints, kit.unit, kit.fps) == (251, 21, "mm", 12.5)
    assert kit.parents == kit_parents_from_chain(KIT_CHAIN, 21)
    assert kit.parents == (-1, 0, 1, 2, 3, 3, 5, 6, 3, 8, 9, 0, 11, 12, 13, 14, 0, 16, 17, 18, 19)
    assert humanml3d.KIT_PARENTS == kit.parents and humanml3d.KIT_NAMES == kit.names
    assert len(set(kit.names)) == 21
    assert kit.facing_joints == KIT_FACE and kit.contact_joints == KIT_FID_L + KIT_FID_R
    groups = [
        kit.root_rot_velocity,
        kit.root_linear_velocity,
        kit.root_height,
        kit.ric,
        kit.rotations,
        kit.local_velocities,
        kit.foot_contacts,
    ]
    bounds = [(group.start, group.stop) for group in groups]
    assert bounds == [(0, 1), (1, 3), (3, 4), (4, 64), (64, 184), (184, 247), (247, 251)]
    assert humanml3d.LAYOUTS == {263: humanml3d.T2M, 251: kit}


def test_kit_joint_names_say_the_side_and_part_of_their_mmm_labels():
    """Each name is its MMM label (TEMOS's mmm_joints) spelled out: L/R -> left_/right_, S/E/W shoulder /
    elbow / wrist, H/K/A hip / knee / ankle, Mrot the midfoot joint, F the foot (toe) joint; the trunk:
    root, B(ody)P(elvis), B(ody)T(horax), B(ody)L(ower)N(eck), B(ody)U(pper)N(eck)."""
    parts = {"S": "shoulder", "E": "elbow", "W": "wrist", "H": "hip", "K": "knee", "A": "ankle",
             "Mrot": "midfoot", "F": "foot"}  # fmt: skip
    trunk = {"root": "pelvis", "BP": "lower_spine", "BT": "upper_spine", "BLN": "lower_neck",
             "BUN": "upper_neck"}  # fmt: skip
    for label, name in zip(MMM_JOINTS, humanml3d.KIT.names, strict=True):
        if label in trunk:
            assert name == trunk[label]
        else:
            assert name == {"L": "left_", "R": "right_"}[label[0]] + parts[label[1:]], (label, name)


def test_layout_lookup_is_the_humanml3d_representation_of_either_size_only():
    assert humanml3d.layout("humanml3d", 263) is humanml3d.T2M
    assert humanml3d.layout("humanml3d", 251) is humanml3d.KIT
    for representation, size in (
        ("humanml3d", 262),
        ("humanml3d", 275),
        ("positions", 263),
        ("axis_angle", 251),
    ):
        assert humanml3d.layout(representation, size) is None and not humanml3d.is_layout(
            representation, size
        )
    assert humanml3d.is_layout("humanml3d", 263) and humanml3d.is_layout("humanml3d", np.int64(251))


# ----------------------------------------------------------------------------------- analytic cases
def test_a_quarter_turn_in_place_turns_the_body_to_its_right():
    """rot_vel = pi/4 at frame 0 is a 90-degree turn (the angle is half the yaw): facing +z -> facing -x."""
    features = np.zeros((2, FEATURES))
    features[0, 0] = np.pi / 4
    features[:, 3] = 0.9
    ric = np.zeros((2, JOINTS - 1, 3))
    ric[:, 0] = [0.1, 0.8, 0.0]  # left hip: on the body's left (+x while facing +z)
    ric[:, 14] = [0.0, 1.6, 0.2]  # head pushed 0.2 forward
    features[:, humanml3d.RIC] = ric.reshape(2, -1)
    positions = np.asarray(recover_from_ric(features))
    np.testing.assert_allclose(positions[:, 0], [[0, 0.9, 0], [0, 0.9, 0]], atol=1e-7)
    np.testing.assert_allclose(positions[0, 1], [0.1, 0.8, 0.0], atol=1e-7)
    np.testing.assert_allclose(positions[0, 15], [0.0, 1.6, 0.2], atol=1e-7)
    np.testing.assert_allclose(positions[1, 1], [0.0, 0.8, 0.1], atol=1e-7)  # facing -x, the left is +z
    np.testing.assert_allclose(positions[1, 15], [-0.2, 1.6, 0.0], atol=1e-7)  # forward is -x


def test_walking_straight_ahead_moves_along_plus_z():
    features = np.zeros((5, FEATURES))
    features[:, 2] = 0.05
    features[:, 3] = np.linspace(0.9, 1.0, 5)
    positions = np.asarray(recover_from_ric(features))
    np.testing.assert_allclose(positions[:, 0, 2], 0.05 * np.arange(5), atol=1e-7)
    np.testing.assert_allclose(positions[:, 0, 0], 0, atol=0)
    np.testing.assert_allclose(positions[:, 0, 1], np.linspace(0.9, 1.0, 5), atol=1e-7)
    np.testing.assert_allclose(positions[:, 1:], np.broadcast_to(positions[:, :1] * [1, 0, 1], (5, 21, 3)))
    offsets = np.random.default_rng(3).normal(size=(JOINTS - 1, 3))
    features[:, humanml3d.RIC] = offsets.reshape(-1)  # the same body-frame pose on every frame
    positions = np.asarray(recover_from_ric(features))
    np.testing.assert_allclose(positions[:, 1:], positions[:, :1] * [1, 0, 1] + offsets, atol=1e-6)


def test_turning_at_a_constant_rate_while_walking_traces_a_circle_of_known_radius_and_centre():
    """rot_vel = w, forward speed v: the yaw turns by 2w a frame, so the root visits the vertices of a
    regular polygon with chord v, on the circle of radius v / (2 sin w) about -R (cos w, sin w) in (x, z):
    root[t] = centre + R (cos(2wt + w), sin(2wt + w)). A joint held at the centre in the body frame,
    (-R cos w, y, -R sin w), never moves; a joint 0.3 ahead is root + 0.3 (-sin 2wt, 0, cos 2wt)."""
    frames, w, v, height = 40, np.pi / 16, 0.1, 0.95
    radius = v / (2 * np.sin(w))
    centre = -radius * np.array([np.cos(w), np.sin(w)])
    features = np.zeros((frames, FEATURES))
    features[:, 0] = w
    features[:, 2] = v
    features[:, 3] = height
    ric = np.zeros((frames, JOINTS - 1, 3))
    ric[..., 1] = 0.5
    ric[:, 0] = [-radius * np.cos(w), 0.4, -radius * np.sin(w)]  # joint 1 at the centre
    ric[:, 14] = [0.0, 1.6, 0.3]  # joint 15 (head) 0.3 ahead
    features[:, humanml3d.RIC] = ric.reshape(frames, -1)

    positions = np.asarray(recover_from_ric(features), np.float64)
    t = np.arange(frames)
    root_xz = positions[:, 0, [0, 2]]
    np.testing.assert_allclose(np.linalg.norm(root_xz - centre, axis=-1), radius, rtol=1e-5)
    expected = centre + radius * np.stack([np.cos(2 * w * t + w), np.sin(2 * w * t + w)], -1)
    np.testing.assert_allclose(root_xz, expected, atol=2e-6)
    np.testing.assert_allclose(root_xz[16], 0, atol=2e-6)  # a full circle after 16 frames of pi/8 each
    np.testing.assert_allclose(positions[:, 0, 1], height, rtol=1e-7)
    np.testing.assert_allclose(
        positions[:, 1], np.broadcast_to([centre[0], 0.4, centre[1]], (frames, 3)), atol=2e-6
    )
    ahead = np.stack([-np.sin(2 * w * t), np.zeros(frames), np.cos(2 * w * t)], -1)
    np.testing.assert_allclose(
        positions[:, 15], positions[:, 0] * [1, 0, 1] + [0, 1.6, 0] + 0.3 * ahead, atol=2e-6
    )
    others = [j for j in range(1, JOINTS) if j not in (1, 15)]
    np.testing.assert_allclose(positions[:, others, 1], 0.5, rtol=1e-7)
    np.testing.assert_allclose(
        positions[:, others][..., [0, 2]], np.repeat(root_xz[:, None], len(others), 1), atol=2e-6
    )


# --------------------------------------------------------------------------------- vs the reference
@pytest.mark.parametrize("shape", [(1,), (17,), (3, 17), (2, 3, 40)])
@pytest.mark.parametrize("size", [263, 251])
def test_matches_the_float64_reference_with_any_leading_batch_axes(shape, size):
    features = random_features(shape, seed=len(shape), size=size)
    positions = recover_from_ric(jnp.asarray(features, jnp.float32))
    assert positions.shape == shape + ((size + 1) // 12, 3) and positions.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(positions), reference_recover_from_ric(features), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("size, ric_stop", [(263, 67), (251, 64)])
def test_reads_only_the_root_and_ric_features(size, ric_stop):
    features = random_features((2, 30), seed=5, size=size)
    changed = features.copy()
    changed[..., ric_stop:] = np.random.default_rng(6).normal(size=(2, 30, size - ric_stop))
    decode = jax.jit(recover_from_ric)
    np.testing.assert_array_equal(np.asarray(decode(features)), np.asarray(decode(changed)))
    changed[..., ric_stop - 1] += 1.0  # the last ric coordinate (the last joint's z) is read
    assert not np.array_equal(np.asarray(decode(features)), np.asarray(decode(changed)))


def test_float64_input_gives_float32_positions():
    features = random_features((9,), seed=7)
    with jax.enable_x64(True):
        positions = recover_from_ric(jnp.asarray(features))
    assert positions.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(positions), reference_recover_from_ric(features), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------------------------------------ encode-decode
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoding_a_walking_turning_skeleton_the_humanml3d_way_decodes_to_its_positions(seed):
    positions = walking_and_turning(121, seed)
    features, expected = encode(positions, np.random.default_rng(seed))
    assert np.ptp(features[:, 0].cumsum()) > np.pi / 2  # the body turned by more than 180 degrees
    decoded = np.asarray(recover_from_ric(features.astype(np.float32)), np.float64)
    assert decoded.shape == (120, JOINTS, 3)
    np.testing.assert_allclose(decoded, expected, atol=1e-4)
    np.testing.assert_allclose(reference_recover_from_ric(features), expected, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoding_a_walking_turning_kit_skeleton_the_t2m_way_decodes_to_its_positions(seed):
    """KIT-ML's 21 joints in millimetres at 12.5 fps, encoded with the T2M code's KIT settings: 251
    features whose decoding is the normalised positions (to 1e-4 m, as HumanML3D's)."""
    positions = walking_and_turning(121, seed, KIT_FIGURE)
    features, expected = KIT_FIGURE.encode(positions, np.random.default_rng(seed))
    assert features.shape == (120, 251)
    assert np.ptp(features[:, 0].cumsum()) > np.pi / 2  # the body turned by more than 180 degrees
    decoded = np.asarray(jax.jit(recover_from_ric)(features.astype(np.float32)), np.float64)
    assert decoded.shape == (120, 21, 3)
    np.testing.assert_allclose(decoded, expected, atol=0.1)  # millimetres
    np.testing.assert_allclose(reference_recover_from_ric(features), expected, atol=1e-6)


def standing(rest, frames=3, heading=2.0, start=(500.0, 0.0, -700.0)):
    """The rest pose standing still, turned by `heading` about +y and moved to `start`."""
    c, s = np.cos(heading), np.sin(heading)
    turned = np.stack([c * rest[:, 0] + s * rest[:, 2], rest[:, 1], -s * rest[:, 0] + c * rest[:, 2]], -1)
    return np.repeat((turned + np.asarray(start))[None], frames, 0)


def test_kit_data_decode_mirrored_facing_plus_z_with_mmms_left_joints_at_minus_x():
    """T2M's KIT processing takes MMM's left hip and shoulder (LH, LS) for the right ones (face_joint_indx
    = [11, 16, 5, 8]), which faces KIT-ML's mirrored data (MMM's y and z swapped) forward: the decoded
    figure's toes point +z and its L joints lie at -x, where HumanML3D's right joints lie. A figure that
    is not mirrored (L joints at +x, as HumanML3D's left) comes out facing backwards, toes at -z."""
    left = [i for i, label in enumerate(MMM_JOINTS) if label[0] == "L"]
    right = [i for i, label in enumerate(MMM_JOINTS) if label[0] == "R"]
    decode = jax.jit(recover_from_ric)
    features, _ = KIT_FIGURE.encode(standing(KIT_REST), np.random.default_rng(0))
    pose = np.asarray(decode(features.astype(np.float32)))[0]
    assert np.all(pose[left, 0] < 0) and np.all(pose[right, 0] > 0)
    assert pose[15, 2] > pose[13, 2] + 50 and pose[20, 2] > pose[18, 2] + 50  # LF, RF ahead of LA, RA
    unmirrored = KIT_REST * np.array([-1.0, 1.0, 1.0])
    features, _ = KIT_FIGURE.encode(standing(unmirrored), np.random.default_rng(0))
    pose = np.asarray(decode(features.astype(np.float32)))[0]
    assert pose[15, 2] < pose[13, 2] - 50 and pose[20, 2] < pose[18, 2] - 50  # toes behind the ankles


@pytest.mark.parametrize(
    ("lay", "figure"), [(humanml3d.T2M, T2M_FIGURE), (humanml3d.KIT, KIT_FIGURE)], ids=["T2M", "KIT"]
)
def test_layout_mirrored_says_whose_decoded_figures_are_a_mirror_image(lay, figure):
    """A body's left is cross(up, forward): +x for a right-handed y-up figure facing +z. Decoded KIT-ML
    figures have their left_* joints (MMM's L) on the other side, so KIT.mirrored; reflected in x, as a
    drawing of them is (render's `mirrored`), their left joints lie on their left, as HumanML3D's do
    unreflected. The decoded positions stay as the data hold them."""
    features, _ = figure.encode(standing(figure.rest), np.random.default_rng(0))
    pose = np.asarray(jax.jit(recover_from_ric)(features.astype(np.float32)), np.float64)[0]
    index = {name: j for j, name in enumerate(lay.names)}
    toes = sum(pose[index[f"{s}_foot"]] - pose[index[f"{s}_ankle"]] for s in ("left", "right"))
    forward = toes * [1.0, 0.0, 1.0] / np.linalg.norm(toes * [1.0, 0.0, 1.0])
    assert forward[2] > 0.9  # (both face +z: the first frame's facing)

    left = np.cross([0.0, 1.0, 0.0], forward)
    named_left = [j for name, j in index.items() if name.startswith("left_")]
    named_right = [j for name, j in index.items() if name.startswith("right_")]

    def on_their_sides(points) -> bool:
        """Whether every left_* joint lies to the body's left of the root, every right_* to its right."""
        away = (points - points[0]) @ left
        return bool(np.all(away[named_left] > 0) and np.all(away[named_right] < 0))

    def on_the_other_sides(points) -> bool:
        return on_their_sides(points * [-1.0, 1.0, 1.0])

    assert on_the_other_sides(pose) if lay.mirrored else on_their_sides(pose)
    assert humanml3d.is_mirrored("humanml3d", lay.features) == lay.mirrored
    shown = pose * ([-1.0, 1.0, 1.0] if lay.mirrored else 1.0)  # what a drawing shows
    assert on_their_sides(shown)


def test_is_mirrored_is_kit_mls_layout_only():
    assert humanml3d.KIT.mirrored and not humanml3d.T2M.mirrored
    assert humanml3d.is_mirrored("humanml3d", 251) and humanml3d.is_mirrored("humanml3d", np.int64(251))
    for representation, size in (("humanml3d", 263), ("humanml3d", 250), ("positions", 251), ("x", 251)):
        assert not humanml3d.is_mirrored(representation, size)


def test_original_encoder_flips_the_turn_when_facing_backwards():
    """Not the decoder's doing, but worth knowing about the data: HumanML3D's process_file takes the arcsin
    of the y part of r_rot[t + 1] * inv(r_rot[t]) without making w >= 0, so on the frame where the facing
    crosses 180 degrees from the first frame's (r_rot jumps from half-angle -90 to +90 degrees) the stored
    turn has the wrong sign and every later frame is rotated by twice that frame's turn."""
    positions = walking_and_turning(121, 0)
    canonical, expected = encode(positions, np.random.default_rng(0))
    original, _ = encode(positions, np.random.default_rng(0), canonical_sign=False)
    flipped = np.nonzero(~np.isclose(canonical[:, 0], original[:, 0]))[0]
    assert len(flipped) >= 1
    np.testing.assert_allclose(original[flipped, 0], -canonical[flipped, 0])
    error = np.abs(reference_recover_from_ric(original) - expected).max(axis=(1, 2))
    assert error[: flipped[0] + 1].max() < 1e-9 and error[flipped[0] + 1 :].min() > 1e-2


# ---------------------------------------------------------------------------------------- jit / vmap
def test_jits_and_vmaps_to_the_same_positions():
    features = jnp.asarray(random_features((4, 25), seed=11), jnp.float32)
    eager = recover_from_ric(features)
    np.testing.assert_allclose(
        np.asarray(jax.jit(recover_from_ric)(features)), np.asarray(eager), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(jax.vmap(recover_from_ric)(features)), np.asarray(eager), rtol=1e-6, atol=1e-6
    )
    both = jnp.stack([features, 0.5 * features], axis=1)  # [4, 2, 25, 263]: map over the second axis
    mapped = jax.jit(jax.vmap(recover_from_ric, in_axes=1))(both)
    assert mapped.shape == (2, 4, 25, JOINTS, 3)
    np.testing.assert_allclose(np.asarray(mapped[0]), np.asarray(eager), rtol=1e-6, atol=1e-6)
    halved = reference_recover_from_ric(0.5 * np.asarray(features, np.float64))
    np.testing.assert_allclose(np.asarray(mapped[1]), halved, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "shape", [(10, 262), (10, 250), (10, 264), (10, 275), (263,), (251,), (2, 10, 22, 3)]
)
def test_a_wrong_shape_is_a_value_error_naming_the_expected_last_dimensions(shape):
    expected = r"D = 263 \(HumanML3D: 22 joints\) or 251 \(KIT-ML: 21 joints\); got shape"
    with pytest.raises(ValueError, match=r"shape \[\.\.\., T, D\] with D = 12 J - 1 .*" + expected):
        recover_from_ric(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64"])
def test_values_that_are_not_floating_point_are_a_value_error(dtype):
    with pytest.raises(ValueError, match=f"dtype {dtype}; expected real floating-point"):
        recover_from_ric(np.zeros((4, FEATURES), dtype))
