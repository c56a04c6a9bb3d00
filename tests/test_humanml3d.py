"""humanml3d: the 263-feature layout and recover_from_ric, against float64 numpy written from the definition.

The references here (quaternion helpers, decoder, encoder) follow HumanML3D's `recover_root_rot_pos` +
`recover_from_ric` and `process_file` (Guo et al. 2022) and never call the module under test.
Quaternions are [w, x, y, z]; y is up; +x is the body's left when it faces +z.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motion_ddpm_jax import humanml3d
from motion_ddpm_jax.humanml3d import FEATURES, JOINTS, PARENTS, recover_from_ric


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
    """The original recover_root_rot_pos + recover_from_ric, float64: [..., T, 263] -> [..., T, 22, 3]."""
    data = np.asarray(data, np.float64)
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
    local = data[..., 4 : 4 + 3 * (JOINTS - 1)].reshape(data.shape[:-1] + (JOINTS - 1, 3))
    local = qrot(np.broadcast_to(qinv(quat)[..., None, :], local.shape[:-1] + (4,)), local)
    local[..., 0] += root[..., None, 0]
    local[..., 2] += root[..., None, 2]
    return np.concatenate([root[..., None, :], local], -2)


def encode(positions, rng, canonical_sign=True):
    """HumanML3D's process_file on global positions [T + 1, 22, 3] (float64): features [T, 263] and the
    normalised positions [T, 22, 3] they stand for.

    As the original: the motion is put on the floor, its first root xz moved to the origin and turned to
    face +z; each frame's facing comes from the hips' and shoulders' right-minus-left vector (not smoothed
    over time here: the decoding is exact for any facing about +y). The 6D rotations are filled with noise
    (the decoder must not read them). `canonical_sign` flips the frame-to-frame quaternion to w >= 0
    before the arcsin; the original does not (see test_original_encoder_flips_the_turn_when_facing_backwards).
    """
    p = np.array(positions, np.float64)
    p[..., 1] -= p.min(axis=(0, 1))[1]
    p -= p[0, 0] * np.array([1.0, 0.0, 1.0])

    def facing(frames):
        across = (frames[..., 2, :] - frames[..., 1, :]) + (frames[..., 17, :] - frames[..., 16, :])
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
    contacts = (steps[:, [7, 10, 8, 11]] < 0.002).astype(np.float64)

    frames = len(p) - 1
    features = np.concatenate(
        [
            np.arcsin(r_velocity[:, 2:3]),
            velocity[:, [0, 2]],
            p[:-1, 0, 1:2],
            local[:-1, 1:].reshape(frames, -1),
            rng.normal(size=(frames, 6 * (JOINTS - 1))),
            local_velocity.reshape(frames, -1),
            contacts,
        ],
        -1,
    )
    assert features.shape == (frames, FEATURES)
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


def walking_and_turning(frames, seed):
    """Global positions [frames, 22, 3] of a figure walking a curve, turning well past 180 degrees, arms
    and legs swinging, bobbing, with a little noise, starting anywhere and facing anywhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 20.0
    heading = rng.uniform(-np.pi, np.pi) + np.cumsum(np.full(frames, rng.choice([-1, 1]) * 0.045))
    heading += 0.2 * np.sin(2 * np.pi * 0.3 * t)
    forward = np.stack([np.sin(heading), np.zeros(frames), np.cos(heading)], -1)
    root = np.cumsum(forward * rng.uniform(0.5, 1.5) / 20, 0) + rng.uniform(-3, 3, 3) * np.array([1, 0, 1])
    phase = 2 * np.pi * 1.8 * t
    local = np.repeat(REST[None], frames, 0)
    for side, (knee, ankle, foot) in ((1, (4, 7, 10)), (-1, (5, 8, 11))):
        swing = side * 0.25 * np.sin(phase)
        local[:, knee, 2] += 0.5 * swing
        local[:, [ankle, foot], 2] += swing[:, None]
        local[:, [ankle, foot], 1] += 0.06 * np.maximum(0, np.sin(phase + side * np.pi / 2))[:, None]
        local[:, [18 + (side < 0), 20 + (side < 0)], 2] -= swing[:, None] * np.array([0.4, 0.8])
    local[:, :, 1] += 0.02 * np.cos(2 * phase)[:, None]
    local[:, 20, 1] += 0.3 * np.sin(2 * np.pi * 0.7 * t)
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]  # yaw `heading` about +y: +z -> forward
    world = np.stack(
        [c * local[..., 0] + s * local[..., 2], local[..., 1], -s * local[..., 0] + c * local[..., 2]], -1
    )
    return world + root[:, None] + rng.normal(0, 0.003, world.shape)


def random_features(shape, seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=shape + (FEATURES,))
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
def test_matches_the_float64_reference_with_any_leading_batch_axes(shape):
    features = random_features(shape, seed=len(shape))
    positions = recover_from_ric(jnp.asarray(features, jnp.float32))
    assert positions.shape == shape + (JOINTS, 3) and positions.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(positions), reference_recover_from_ric(features), rtol=1e-5, atol=1e-5
    )


def test_reads_only_the_root_and_ric_features():
    features = random_features((2, 30), seed=5)
    changed = features.copy()
    changed[..., humanml3d.ROTATIONS.start :] = np.random.default_rng(6).normal(size=(2, 30, FEATURES - 67))
    np.testing.assert_array_equal(
        np.asarray(recover_from_ric(features)), np.asarray(recover_from_ric(changed))
    )


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
@pytest.mark.parametrize("shape", [(10, 262), (10, 251), (10, 264), (263,), (2, 10, 22, 3)])
def test_a_wrong_shape_is_a_value_error_naming_the_expected_last_dimension(shape):
    with pytest.raises(ValueError, match=r"shape \[\.\.\., T, 263\] \(last dimension 263.*got shape"):
        recover_from_ric(np.zeros(shape, np.float32))


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64"])
def test_values_that_are_not_floating_point_are_a_value_error(dtype):
    with pytest.raises(ValueError, match=f"dtype {dtype}; expected real floating-point"):
        recover_from_ric(np.zeros((4, FEATURES), dtype))
