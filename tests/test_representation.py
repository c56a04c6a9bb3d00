"""Feature layouts: encoding then decoding gives back the motion, checked against float64 numpy FK."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import representation
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

SMALL = Skeleton(
    names=("spine", "hips", "head", "head_Nub", "arm", "hand", "leg"),
    parents=np.array([1, -1, 0, 2, 0, 4, 1], np.int32),
    offsets=np.array(
        [[0, 10, 0], [1, 2, 3], [0, 12, 1], [0, 8, 0], [15, 2, 0], [20, 0, 0], [-5, -40, 2]], np.float32
    ),
    end_sites=np.array([False, False, False, True, False, False, False]),
)


def numpy_fk(rotvecs, root_translation, skeleton):
    """rotvecs [T, K, 3] of the rotation joints, root_translation [T, 3] -> global positions [T, J, 3]."""
    frames = rotvecs.shape[0]
    out = np.zeros((frames, skeleton.num_joints, 3))
    local = np.tile(np.eye(3), (frames, skeleton.num_joints, 1, 1))
    for slot, joint in enumerate(skeleton.rotation_joints):
        local[:, joint] = Rotation.from_rotvec(rotvecs[:, slot]).as_matrix()
    for f in range(frames):
        world = {}
        for j in skeleton.parents_first_order:
            p = skeleton.parents[j]
            offset = skeleton.offsets[j].astype(np.float64)
            if p < 0:
                world[j] = local[f, j]
                out[f, j] = root_translation[f] + offset
            else:
                world[j] = world[p] @ local[f, j]
                out[f, j] = out[f, p] + world[p] @ offset
    return out


def random_motion(skeleton, frames, seed):
    rng = np.random.default_rng(seed)
    k = len(skeleton.rotation_joints)
    axes = rng.normal(size=(k, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    angles = rng.uniform(0.1, 2.5, (frames, k, 1)) * np.sin(np.linspace(0, 3, frames))[:, None, None]
    rotvecs = axes * angles
    root = np.cumsum(rng.normal(0, 2.0, (frames, 3)), axis=0) + np.array([0.0, 90.0, 0.0])
    return rotvecs, root


@pytest.mark.parametrize("skeleton_name", ["small", "beat"])
def test_both_representations_rebuild_the_same_global_positions(skeleton_name):
    skeleton = SMALL if skeleton_name == "small" else beat_skeleton()
    rotvecs, root = random_motion(skeleton, 12, seed=0)
    positions = numpy_fk(rotvecs, root, skeleton)
    # Decoding integrates deltas from the origin: compare with the trajectory moved to start there.
    start = positions[0, skeleton.root]

    features = representation.encode_positions(positions.astype(np.float32), skeleton)
    assert features.shape == (12, representation.feature_size(skeleton, "positions"))
    decoded = representation.decode(features, skeleton, "positions")
    np.testing.assert_allclose(decoded, positions - start, atol=2e-3)

    rotations = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_matrix().reshape(12, -1, 3, 3)
    local = np.tile(np.eye(3, dtype=np.float32), (12, skeleton.num_joints, 1, 1))
    local[:, skeleton.rotation_joints] = rotations
    features = representation.encode_axis_angle(local.astype(np.float32), root.astype(np.float32), skeleton)
    assert features.shape == (12, representation.feature_size(skeleton, "axis_angle"))
    np.testing.assert_allclose(features[:, 3:].reshape(12, -1, 3), rotvecs, atol=2e-5)
    decoded = representation.decode(features, skeleton, "axis_angle")
    np.testing.assert_allclose(decoded, positions - root[:1], atol=2e-3)


def test_axis_angle_encoding_refuses_rotations_of_another_joint_count():
    """Rotations of 5 joints for a 6-joint skeleton had been encoded without an error, a joint's slot
    holding its neighbour's rotation; a root translation of the wrong shape is named too."""
    joints = SMALL.num_joints
    for count in (joints - 1, joints + 1):
        rotations = np.tile(np.eye(3, dtype=np.float32), (4, count, 1, 1))
        with pytest.raises(ValueError, match=rf"\[\.\.\., T, {joints}, 3, 3\].*got \[4, {count}, 3, 3\]"):
            representation.encode_axis_angle(rotations, np.zeros((4, 3), np.float32), SMALL)
    rotations = np.tile(np.eye(3, dtype=np.float32), (4, joints, 1, 1))
    with pytest.raises(ValueError, match=r"root translation \[\.\.\., T, 3\] = \[4, 3\].*got \[1, 4, 1, 3\]"):
        representation.encode_axis_angle(rotations, np.zeros((1, 4, 1, 3), np.float32), SMALL)
    with pytest.raises(ValueError, match=r"got \[4, 6, 3\]"):  # axis-angle vectors, not matrices
        representation.encode_axis_angle(np.zeros((4, 6, 3), np.float32), np.zeros((4, 3), np.float32), SMALL)


def test_positions_layout_puts_the_translation_delta_in_the_root_slot():
    skeleton = SMALL
    positions = np.random.default_rng(1).normal(size=(5, 7, 3)).astype(np.float32)
    features = np.asarray(representation.encode_positions(positions, skeleton)).reshape(5, 7, 3)
    root = skeleton.root
    np.testing.assert_allclose(features[0, root], 0.0)
    np.testing.assert_allclose(features[1:, root], positions[1:, root] - positions[:-1, root], atol=1e-6)
    others = [j for j in range(7) if j != root]
    np.testing.assert_allclose(features[:, others], positions[:, others] - positions[:, [root]], atol=1e-6)


def test_beat_feature_sizes_are_264_228_and_453():
    skeleton = beat_skeleton()
    assert representation.feature_size(skeleton, "positions") == 264
    assert representation.feature_size(skeleton, "axis_angle") == 228
    assert representation.feature_size(skeleton, "rotation_6d") == 3 + 6 * 75 == 453


def test_end_sites_get_identity_rotations():
    features = np.random.default_rng(2).normal(size=(4, 3 + 3 * 6)).astype(np.float32)
    rotations = np.asarray(representation.local_rotations(features, SMALL))
    np.testing.assert_array_equal(rotations[:, 3], np.tile(np.eye(3), (4, 1, 1)))
    np.testing.assert_allclose(
        rotations[:, 4], Rotation.from_rotvec(features[:, 3 + 9 : 3 + 12]).as_matrix(), atol=1e-6
    )


def test_wrong_feature_size_and_unknown_representation_are_clear_errors():
    for positions in (np.zeros((4, SMALL.num_joints + 1, 3)), np.zeros((4, 3 * SMALL.num_joints))):
        with pytest.raises(
            ValueError, match=rf"encode_positions: expected .*\[\.\.\., T, {SMALL.num_joints}, 3\]"
        ):
            representation.encode_positions(positions, SMALL)
    with pytest.raises(ValueError, match="needs 21"):
        representation.relative_positions(np.zeros((2, 20)), SMALL)
    with pytest.raises(ValueError, match="needs 21"):
        representation.local_rotations(np.zeros((2, 20)), SMALL)
    with pytest.raises(ValueError, match="unknown representation 'humanml3d'"):
        representation.decode(np.zeros((2, 21)), SMALL, "humanml3d")
