"""kinematics: conversions against scipy's Rotation, forward kinematics against a float64 numpy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import kinematics as K
from motion_ddpm_jax.skeleton import beat_skeleton


# ------------------------------------------------------------------------------------------ references
def wxyz(xyzw: np.ndarray) -> np.ndarray:
    """scipy quaternions (x, y, z, w) -> ours (w, x, y, z)."""
    return xyzw[..., [3, 0, 1, 2]]


def random_axes(rng: np.random.Generator, n: int) -> np.ndarray:
    axes = rng.normal(size=(n, 3))
    return axes / np.linalg.norm(axes, axis=-1, keepdims=True)


def rotvec_cases(seed: int = 0) -> dict[str, np.ndarray]:
    """float64 rotation vectors [N, 3]: uniform, near 0, near pi, exactly 0 and exactly pi."""
    rng = np.random.default_rng(seed)
    coordinate_axes = np.concatenate([np.eye(3), -np.eye(3)])
    return {
        "uniform": Rotation.random(3000, random_state=seed).as_rotvec(),
        "near_zero": random_axes(rng, 1000) * 10 ** rng.uniform(-8, -3, size=(1000, 1)),
        "near_pi": random_axes(rng, 1000) * (np.pi - 10 ** rng.uniform(-6, -2, size=(1000, 1))),
        "zero": np.zeros((1, 3)),
        "pi": np.concatenate([coordinate_axes, random_axes(rng, 100)]) * np.pi,
    }


def assert_rotvecs_close(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    """Equal up to the sign ambiguity of a half turn (v and -v are the same rotation at angle pi)."""
    error = np.minimum(
        np.abs(actual - expected).max(axis=-1),
        np.where(
            np.linalg.norm(expected, axis=-1) > np.pi - 1e-3, np.abs(actual + expected).max(axis=-1), np.inf
        ),
    )
    assert error.max() < atol, (error.max(), np.argmax(error))


def assert_quaternions_close(actual: np.ndarray, expected: np.ndarray, atol: float) -> None:
    """Equal up to the global sign (q and -q are the same rotation)."""
    error = np.minimum(np.abs(actual - expected).max(axis=-1), np.abs(actual + expected).max(axis=-1))
    assert error.max() < atol, (error.max(), np.argmax(error))


def reference_fk(rotations, offsets, parents, root_translation):
    """Per-joint float64 loop: returns positions [..., J, 3] and global rotations [..., J, 3, 3]."""
    rotations = np.asarray(rotations, np.float64)
    offsets = np.asarray(offsets, np.float64)
    root_translation = np.asarray(root_translation, np.float64)
    positions = [None] * len(parents)
    globals_ = [None] * len(parents)

    def visit(j):
        if positions[j] is not None:
            return
        parent = int(parents[j])
        if parent < 0:
            globals_[j] = rotations[..., j, :, :]
            positions[j] = root_translation + offsets[j]
            return
        visit(parent)
        globals_[j] = globals_[parent] @ rotations[..., j, :, :]
        positions[j] = positions[parent] + np.einsum("...ij,j->...i", globals_[parent], offsets[j])

    for j in range(len(parents)):
        visit(j)
    return np.stack(positions, axis=-2), np.stack(globals_, axis=-3)


def random_rotations(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    matrices = Rotation.random(int(np.prod(shape)), random_state=seed).as_matrix()
    return matrices.reshape(*shape, 3, 3)


def shuffled(parents: np.ndarray, offsets: np.ndarray, seed: int):
    """The same skeleton with its joints listed in a random order (not parents-first)."""
    permutation = np.random.default_rng(seed).permutation(len(parents))  # new joint i = old joint perm[i]
    new_index = np.argsort(permutation)
    old_parents = parents[permutation]
    new_parents = np.where(old_parents < 0, -1, new_index[np.maximum(old_parents, 0)])
    return new_parents, offsets[permutation], permutation


@pytest.fixture(scope="module")
def beat():
    return beat_skeleton()


# ----------------------------------------------------------------------------------------- conversions
# One array holding every case (one compilation per function): uniform, near 0, near pi, 0 and pi.
ROTVECS = np.concatenate(list(rotvec_cases().values()))
MATRICES = Rotation.from_rotvec(ROTVECS).as_matrix()


def test_axis_angle_to_matrix_matches_scipy():
    actual = K.axis_angle_to_matrix(ROTVECS.astype(np.float32))
    assert actual.shape == (len(ROTVECS), 3, 3) and actual.dtype == jnp.float32
    np.testing.assert_allclose(actual, MATRICES, atol=2e-6)


def test_axis_angle_to_quaternion_matches_scipy():
    actual = np.asarray(K.axis_angle_to_quaternion(ROTVECS.astype(np.float32)))
    assert_quaternions_close(actual, wxyz(Rotation.from_rotvec(ROTVECS).as_quat()), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=-1), 1.0, atol=1e-6)


def test_axis_angle_beyond_pi_matches_scipy():
    rotvecs = (
        random_axes(np.random.default_rng(1), len(ROTVECS))
        * np.linspace(np.pi, 4 * np.pi, len(ROTVECS))[:, None]
    )
    actual = K.axis_angle_to_matrix(rotvecs.astype(np.float32))
    np.testing.assert_allclose(actual, Rotation.from_rotvec(rotvecs).as_matrix(), atol=5e-6)


def test_quaternion_to_matrix_matches_scipy_and_normalises():
    rng = np.random.default_rng(2)
    quaternions = Rotation.random(2000, random_state=2).as_quat()
    scales = 10 ** rng.uniform(-2, 2, size=(2000, 1))
    actual = K.quaternion_to_matrix((wxyz(quaternions) * scales).astype(np.float32))
    np.testing.assert_allclose(actual, Rotation.from_quat(quaternions).as_matrix(), atol=2e-6)


def test_matrix_to_quaternion_matches_scipy_with_nonnegative_w():
    actual = np.asarray(K.matrix_to_quaternion(MATRICES.astype(np.float32)))
    assert np.all(actual[:, 0] >= 0)
    assert_quaternions_close(actual, wxyz(Rotation.from_matrix(MATRICES).as_quat()), atol=2e-6)


def test_matrix_to_axis_angle_matches_scipy_and_round_trips():
    actual = np.asarray(K.matrix_to_axis_angle(MATRICES.astype(np.float32)))
    assert np.all(np.linalg.norm(actual, axis=-1) <= np.pi + 1e-6)
    assert_rotvecs_close(actual, Rotation.from_matrix(MATRICES).as_rotvec(), atol=2e-6)
    # The rotation itself survives matrix -> axis-angle -> matrix (also at pi, whatever the axis sign).
    np.testing.assert_allclose(K.axis_angle_to_matrix(actual), MATRICES, atol=2e-6)


def test_matrix_to_axis_angle_keeps_relative_precision_of_tiny_angles():
    rotvecs = random_axes(np.random.default_rng(3), 200) * 10 ** np.linspace(-8, -3, 200)[:, None]
    actual = np.asarray(K.matrix_to_axis_angle(Rotation.from_rotvec(rotvecs).as_matrix().astype(np.float32)))
    np.testing.assert_allclose(actual, rotvecs, rtol=1e-5, atol=1e-12)


def test_float64_conversions_match_scipy_tightly():
    with jax.enable_x64(True):
        to_matrix = K.axis_angle_to_matrix(jnp.asarray(ROTVECS, jnp.float64))
        to_rotvec = np.asarray(K.matrix_to_axis_angle(jnp.asarray(MATRICES, jnp.float64)))
        assert to_matrix.dtype == jnp.float64 and to_rotvec.dtype == np.float64
    np.testing.assert_allclose(to_matrix, MATRICES, atol=1e-13)
    expected = Rotation.from_matrix(MATRICES).as_rotvec()
    near_pi = np.linalg.norm(expected, axis=-1) > np.pi - 0.1  # there the axis comes from sqrt(1 - cos)
    assert_rotvecs_close(to_rotvec[~near_pi], expected[~near_pi], atol=1e-12)
    assert_rotvecs_close(to_rotvec[near_pi], expected[near_pi], atol=1e-7)


def test_quaternion_multiply_composes_like_scipy():
    first, second = Rotation.random(500, random_state=4), Rotation.random(500, random_state=5)
    actual = K.quaternion_multiply(
        wxyz(first.as_quat()).astype(np.float32), wxyz(second.as_quat()).astype(np.float32)
    )
    assert_quaternions_close(np.asarray(actual), wxyz((first * second).as_quat()), atol=2e-6)


def test_quaternion_to_axis_angle_accepts_either_sign():
    rotvecs = Rotation.random(200, random_state=6).as_rotvec()
    quaternions = wxyz(Rotation.from_rotvec(rotvecs).as_quat()).astype(np.float32)
    np.testing.assert_allclose(K.quaternion_to_axis_angle(-quaternions), rotvecs, atol=2e-6)
    np.testing.assert_allclose(K.quaternion_to_axis_angle(3.0 * quaternions), rotvecs, atol=2e-6)


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_to_matrix_matches_scipy_intrinsic(order):
    angles = np.random.default_rng(6).uniform(-360, 360, size=(2000, 3))
    angles[:5] = [[0, 0, 0], [90, 0, 0], [0, 90, 0], [0, 0, 90], [180, -90, 45]]
    actual = K.euler_to_matrix(angles.astype(np.float32), order)
    assert actual.shape == (2000, 3, 3) and actual.dtype == jnp.float32
    np.testing.assert_allclose(
        actual, Rotation.from_euler(order, angles, degrees=True).as_matrix(), atol=3e-6
    )


def test_euler_to_matrix_applies_the_first_axis_outermost():
    # R = R_Z(a0) @ R_X(a1) @ R_Y(a2) for 'ZXY'.
    a = np.array([30.0, -50.0, 70.0])
    elementary = [
        Rotation.from_euler(axis, angle, degrees=True).as_matrix()
        for axis, angle in zip("ZXY", a, strict=True)
    ]
    np.testing.assert_allclose(
        K.euler_to_matrix(a.astype(np.float32), "ZXY"),
        elementary[0] @ elementary[1] @ elementary[2],
        atol=2e-6,
    )


@pytest.mark.parametrize("order", ["zxy", "Zxy", "XXY", "ZXZ", "XY", "XYZW", "", "ABC", None, 3])
def test_euler_to_matrix_rejects_unknown_orders(order):
    with pytest.raises(ValueError, match="ZXY") as error:
        K.euler_to_matrix(np.zeros(3, np.float32), order)
    assert repr(order) in str(error.value)


def test_conversions_keep_floating_dtypes_and_promote_integers():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        aa = jax.ShapeDtypeStruct((2, 3), dtype)
        matrix = jax.ShapeDtypeStruct((2, 3, 3), dtype)
        quaternion = jax.ShapeDtypeStruct((2, 4), dtype)
        for function, argument in [
            (K.axis_angle_to_matrix, aa),
            (K.axis_angle_to_quaternion, aa),
            (K.matrix_to_axis_angle, matrix),
            (K.matrix_to_quaternion, matrix),
            (K.quaternion_to_matrix, quaternion),
            (lambda x: K.euler_to_matrix(x, "XYZ"), aa),
        ]:
            assert jax.eval_shape(function, argument).dtype == dtype
    assert K.axis_angle_to_matrix(jnp.zeros(3, jnp.int32)).dtype == jnp.float32
    half = np.asarray(K.axis_angle_to_matrix(jnp.full((3,), 0.3, jnp.bfloat16)), np.float64)
    np.testing.assert_allclose(half, Rotation.from_rotvec([0.3, 0.3, 0.3]).as_matrix(), atol=1e-2)


def test_conversions_reject_wrong_trailing_shapes():
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        K.axis_angle_to_matrix(np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, 3\]"):
        K.matrix_to_quaternion(np.zeros((5, 3), np.float32))


# ------------------------------------------------------------------------------------------- gradients
ZERO_ANGLE_FUNCTIONS = {
    "axis_angle_to_matrix": (K.axis_angle_to_matrix, np.zeros(3)),
    "axis_angle_to_quaternion": (K.axis_angle_to_quaternion, np.zeros(3)),
    "quaternion_to_matrix": (K.quaternion_to_matrix, np.array([1.0, 0, 0, 0])),
    "quaternion_to_axis_angle": (K.quaternion_to_axis_angle, np.array([1.0, 0, 0, 0])),
    "matrix_to_quaternion": (K.matrix_to_quaternion, np.eye(3)),
    "matrix_to_axis_angle": (K.matrix_to_axis_angle, np.eye(3)),
    "round_trip": (lambda aa: K.matrix_to_axis_angle(K.axis_angle_to_matrix(aa)), np.zeros(3)),
}


@pytest.mark.parametrize("name", list(ZERO_ANGLE_FUNCTIONS))
def test_values_and_gradients_are_finite_at_exactly_zero_angle(name):
    function, point = ZERO_ANGLE_FUNCTIONS[name]

    @jax.jit
    def value_and_derivatives(x):
        return function(x), jax.jacfwd(function)(x), jax.jacrev(function)(x)

    for result in value_and_derivatives(jnp.asarray(point, jnp.float32)):
        assert np.all(np.isfinite(result))


def test_round_trip_jacobian_is_identity_at_and_near_zero():
    # matrix_to_axis_angle(axis_angle_to_matrix(aa)) == aa for |aa| < pi, so its Jacobian is I.
    def round_trip(aa):
        return K.matrix_to_axis_angle(K.axis_angle_to_matrix(aa))

    scales = np.array([0.0, 1e-7, 1e-4, 1e-2, 1.0, 3.0])
    points = jnp.asarray(random_axes(np.random.default_rng(7), len(scales)) * scales[:, None], jnp.float32)
    forward, reverse = jax.jit(jax.vmap(lambda x: (jax.jacfwd(round_trip)(x), jax.jacrev(round_trip)(x))))(
        points
    )
    np.testing.assert_allclose(forward, np.broadcast_to(np.eye(3), forward.shape), atol=2e-5)
    np.testing.assert_allclose(reverse, np.broadcast_to(np.eye(3), reverse.shape), atol=2e-5)


def cross_matrix(v: np.ndarray) -> np.ndarray:
    """[v]x with [v]x @ u == cross(v, u)."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def central_difference(function, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """d function / d x [*out_shape, n] by float64 central differences."""
    columns = []
    for i in range(x.size):
        dx = np.zeros_like(x)
        dx[i] = step
        columns.append((function(x + dx) - function(x - dx)) / (2 * step))
    return np.stack(columns, axis=-1)


FD_SCALES = np.array([0.0, 1e-6, 1e-3, 3e-2, 0.5, 2.0])


def test_axis_angle_jacobians_near_zero_match_finite_differences():
    points = random_axes(np.random.default_rng(8), len(FD_SCALES)) * FD_SCALES[:, None]
    jacobians = jax.jit(
        jax.vmap(lambda x: (jax.jacfwd(K.axis_angle_to_matrix)(x), jax.jacrev(K.axis_angle_to_quaternion)(x)))
    )
    matrix_jacobians, quaternion_jacobians = jacobians(jnp.asarray(points, jnp.float32))
    for i, aa in enumerate(points):
        expected_matrix = central_difference(lambda v: Rotation.from_rotvec(v).as_matrix(), aa)
        expected_quaternion = central_difference(lambda v: wxyz(Rotation.from_rotvec(v).as_quat()), aa)
        np.testing.assert_allclose(matrix_jacobians[i], expected_matrix, atol=1e-5, err_msg=str(FD_SCALES[i]))
        np.testing.assert_allclose(
            quaternion_jacobians[i], expected_quaternion, atol=1e-5, err_msg=str(FD_SCALES[i])
        )


def test_matrix_to_axis_angle_derivative_near_zero_matches_finite_differences():
    # Differentiate along the rotation manifold: R(h) = R @ exp(h [e_k]x), against scipy's as_rotvec.
    points = random_axes(np.random.default_rng(9), len(FD_SCALES)) * FD_SCALES[:, None]
    rotations = Rotation.from_rotvec(points)
    tangents = np.stack([rotations.as_matrix() @ cross_matrix(e) for e in np.eye(3)], axis=1)  # [N, 3, 3, 3]
    jvp = jax.jit(jax.vmap(jax.vmap(lambda m, t: jax.jvp(K.matrix_to_axis_angle, (m,), (t,))[1], (None, 0))))
    actual = jvp(jnp.asarray(rotations.as_matrix(), jnp.float32), jnp.asarray(tangents, jnp.float32))
    for i in range(len(points)):
        for k, direction in enumerate(np.eye(3)):
            expected = central_difference(
                lambda h, d=direction, r=rotations[i]: (r * Rotation.from_rotvec(h[0] * d)).as_rotvec(),
                np.zeros(1),
            )[:, 0]
            np.testing.assert_allclose(actual[i, k], expected, atol=2e-5, err_msg=f"{FD_SCALES[i]}, axis {k}")


# ---------------------------------------------------------------------------------- forward kinematics
def test_joint_depths_of_a_shuffled_tree():
    np.testing.assert_array_equal(K.joint_depths([2, 0, -1, 1, 2]), [1, 2, 0, 3, 1])


@pytest.mark.parametrize(
    ("parents", "message"),
    [
        ([-1, 2, 1], "cycle"),
        ([1, 0], "cycle"),
        ([-1, 0, 0, 3], "cycle"),
        ([-1, 5], "parent index 5"),
        ([-1, -2], "parent index -2"),
        ([-1.0, 0.0], "must be integers"),
    ],
)
def test_fk_rejects_cycles_and_out_of_range_parents(parents, message):
    num_joints = len(parents)
    with pytest.raises(ValueError, match=message):
        K.forward_kinematics(
            np.tile(np.eye(3), (num_joints, 1, 1)), np.zeros((num_joints, 3)), parents, np.zeros(3)
        )


def test_fk_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="offsets"):
        K.forward_kinematics(np.tile(np.eye(3), (3, 1, 1)), np.zeros((4, 3)), [-1, 0, 1], np.zeros(3))
    with pytest.raises(ValueError, match=r"local rotations \(parents has 3 joints\)"):
        K.forward_kinematics(np.tile(np.eye(3), (2, 1, 1)), np.zeros((3, 3)), [-1, 0, 1], np.zeros(3))
    # A root translation [T, 1, 3] against rotations [T, J, 3, 3] had broadcast to positions [T, T, J, 3].
    rotations = np.tile(np.eye(3), (4, 3, 1, 1))
    for translation in (np.zeros((4, 1, 3)), np.zeros((5, 3))):
        with pytest.raises(ValueError, match=r"must broadcast to the rotations' leading axes \[4\]"):
            K.forward_kinematics(rotations, np.zeros((3, 3)), [-1, 0, 1], translation)
    assert K.forward_kinematics(rotations, np.zeros((3, 3)), [-1, 0, 1], np.zeros((4, 3))).shape == (4, 3, 3)


def test_fk_matches_numpy_reference_on_beat_skeleton(beat):
    rotations = random_rotations(10, (2, 3, beat.num_joints))
    translation = np.random.default_rng(10).normal(scale=50.0, size=(2, 3, 3))
    positions, global_rotations = K.forward_kinematics_with_rotations(
        rotations.astype(np.float32), beat.offsets, beat.parents, translation.astype(np.float32)
    )
    expected_positions, expected_rotations = reference_fk(rotations, beat.offsets, beat.parents, translation)
    assert positions.shape == (2, 3, 88, 3) and positions.dtype == jnp.float32
    np.testing.assert_allclose(positions, expected_positions, atol=2e-4)
    np.testing.assert_allclose(global_rotations, expected_rotations, atol=5e-6)


def test_fk_matches_numpy_reference_on_shuffled_skeleton(beat):
    parents, offsets, permutation = shuffled(beat.parents, beat.offsets, seed=11)
    assert np.any(parents >= np.arange(len(parents))), "the shuffled skeleton should not be parents-first"
    rotations = random_rotations(11, (4, beat.num_joints))
    translation = np.random.default_rng(11).normal(size=(4, 3))
    positions = K.forward_kinematics(
        rotations.astype(np.float32), offsets, parents, translation.astype(np.float32)
    )
    np.testing.assert_allclose(
        positions, reference_fk(rotations, offsets, parents, translation)[0], atol=2e-4
    )
    # Same joints, same answer: the shuffled output is the original output permuted.
    original = K.forward_kinematics(
        rotations[:, np.argsort(permutation)].astype(np.float32),
        beat.offsets,
        beat.parents,
        translation.astype(np.float32),
    )
    np.testing.assert_allclose(positions, np.asarray(original)[:, permutation], atol=1e-4)


def rest_pose(offsets: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Cumulative offsets along each joint's chain to its root, float64 [J, 3]."""
    rest = np.zeros((len(parents), 3))
    for j in range(len(parents)):
        joint = j
        while joint >= 0:
            rest[j] += offsets[joint]
            joint = parents[joint]
    return rest


def test_fk_identity_rotations_give_rest_pose(beat):
    identity = np.tile(np.eye(3, dtype=np.float32), (4, beat.num_joints, 1, 1))
    positions = K.forward_kinematics(identity, beat.offsets, beat.parents, np.zeros((4, 3), np.float32))
    np.testing.assert_allclose(
        positions, np.broadcast_to(rest_pose(beat.offsets, beat.parents), (4, 88, 3)), atol=1e-4
    )


def test_fk_preserves_bone_lengths(beat):
    rotations = random_rotations(12, (4, beat.num_joints)).astype(np.float32)
    positions = K.forward_kinematics(rotations, beat.offsets, beat.parents, np.ones((4, 3), np.float32))
    expected = np.linalg.norm(beat.offsets[beat.parents >= 0], axis=-1)
    np.testing.assert_allclose(
        K.bone_lengths(positions, beat.parents), np.broadcast_to(expected, (4, 87)), atol=1e-4
    )


def test_fk_rotating_the_root_rotates_root_relative_positions(beat):
    rotations = random_rotations(13, (2, beat.num_joints))
    turns = Rotation.from_euler("ZXY", [[40, -20, 75], [-170, 80, 5]], degrees=True).as_matrix()
    turned = rotations.copy()
    turned[:, beat.root] = turns @ rotations[:, beat.root]
    translation = np.array([[10.0, 90.0, -5.0]] * 4, np.float32)
    both = np.concatenate([rotations, turned]).astype(np.float32)
    before, after = np.split(
        np.asarray(K.forward_kinematics(both, beat.offsets, beat.parents, translation)), 2
    )
    root = beat.root
    np.testing.assert_allclose(after[:, root], before[:, root], atol=1e-6)
    expected = np.einsum("bij,bkj->bki", turns, before - before[:, root : root + 1])
    np.testing.assert_allclose(after - after[:, root : root + 1], expected, atol=2e-4)


def test_fk_root_translation_moves_every_joint(beat):
    rotations = np.tile(random_rotations(14, (1, beat.num_joints)), (4, 1, 1, 1)).astype(np.float32)
    shifts = np.array([[0.0, 0.0, 0.0], [3.0, -7.0, 120.0], [-50.0, 0.5, 0.0], [1e3, 1e3, -1e3]], np.float32)
    positions = np.asarray(K.forward_kinematics(rotations, beat.offsets, beat.parents, shifts))
    np.testing.assert_allclose(
        positions - positions[:1], np.broadcast_to(shifts[:, None], (4, 88, 3)), atol=2e-4
    )


def test_fk_forest_roots_share_the_root_translation():
    parents = np.array([1, -1, -1, 2])
    offsets = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 1, 1]])
    rotations = random_rotations(15, (4,))
    translation = np.array([5.0, 6.0, 7.0])
    positions = K.forward_kinematics(
        rotations.astype(np.float32), offsets.astype(np.float32), parents, translation
    )
    np.testing.assert_allclose(
        positions, reference_fk(rotations, offsets, parents, translation)[0], atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(positions)[[1, 2]], translation + offsets[[1, 2]], atol=1e-6)


def test_fk_under_jit_matches_eager_and_differentiates_offsets(beat):
    # Two batch axes [B, T], as in training (and the case that once tripped XLA:CPU's dot of two gathers).
    translation = jnp.zeros((2, 2, 3), jnp.float32)

    def mean_height(rotations, offsets):
        return jnp.mean(K.forward_kinematics(rotations, offsets, beat.parents, translation)[..., 1])

    value_and_gradients = jax.jit(jax.value_and_grad(mean_height, argnums=(0, 1)))
    rotations = jnp.asarray(random_rotations(16, (2, 2, beat.num_joints)), jnp.float32)
    offsets = jnp.asarray(beat.offsets)
    value, gradients = value_and_gradients(rotations, offsets)
    np.testing.assert_allclose(value, mean_height(rotations, offsets), rtol=1e-6)
    assert all(np.all(np.isfinite(g)) for g in gradients)
    # In the rest pose the mean height is linear in the offsets: d / d offset_j[1] = |subtree(j)| / J.
    identity = jnp.tile(jnp.eye(3), (2, 2, beat.num_joints, 1, 1))
    _, (_, offset_gradient) = value_and_gradients(identity, offsets)
    subtree_sizes = np.zeros(beat.num_joints)
    for j in range(beat.num_joints):
        joint = j
        while joint >= 0:
            subtree_sizes[joint] += 1
            joint = beat.parents[joint]
    np.testing.assert_allclose(offset_gradient[:, 1], subtree_sizes / beat.num_joints, rtol=1e-5)


def test_fk_accepts_per_sample_offsets():
    parents = np.array([-1, 0, 1, 1])
    rotations = random_rotations(18, (3, 4))
    offsets = np.random.default_rng(18).normal(size=(3, 4, 3))
    translation = np.random.default_rng(19).normal(size=(3, 3))
    positions = K.forward_kinematics(
        rotations.astype(np.float32), offsets.astype(np.float32), parents, translation.astype(np.float32)
    )
    for b in range(3):
        expected = reference_fk(rotations[b], offsets[b], parents, translation[b])[0]
        np.testing.assert_allclose(positions[b], expected, atol=1e-5)


def test_fk_keeps_the_input_dtype():
    parents = np.array([-1, 0, 1])
    for dtype in (jnp.float32, jnp.bfloat16):
        positions, rotations = jax.eval_shape(
            lambda r, o, t: K.forward_kinematics_with_rotations(r, o, parents, t),
            jax.ShapeDtypeStruct((5, 3, 3, 3), dtype),
            jax.ShapeDtypeStruct((3, 3), dtype),
            jax.ShapeDtypeStruct((5, 3), dtype),
        )
        assert positions.shape == (5, 3, 3) and positions.dtype == dtype
        assert rotations.shape == (5, 3, 3, 3) and rotations.dtype == dtype


def test_fk_rejects_traced_parents(beat):
    with pytest.raises(TypeError, match="static"):
        jax.jit(
            lambda p: K.forward_kinematics(np.tile(np.eye(3), (3, 1, 1)), np.zeros((3, 3)), p, np.zeros(3))
        )(jnp.array([-1, 0, 1]))


@st.composite
def random_trees(draw):
    """A random forest of up to 9 joints: parent < child (or -1), then the joints randomly relabelled."""
    num_joints = draw(st.integers(1, 9))
    parents = [-1] + [draw(st.integers(-1 if j > 2 else 0, j - 1)) for j in range(1, num_joints)]
    permutation = np.array(draw(st.permutations(range(num_joints))))
    new_index = np.argsort(permutation)
    old_parents = np.array(parents)[permutation]
    return np.where(old_parents < 0, -1, new_index[np.maximum(old_parents, 0)])


@settings(max_examples=25, deadline=None)
@given(parents=random_trees(), seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3))
def test_fk_matches_numpy_reference_on_random_trees(parents, seed, batch):
    num_joints = len(parents)
    rng = np.random.default_rng(seed)
    rotations = random_rotations(seed, (batch, num_joints))
    offsets = rng.normal(size=(num_joints, 3))
    translation = rng.normal(size=(batch, 3))
    positions, global_rotations = K.forward_kinematics_with_rotations(
        rotations.astype(np.float32), offsets.astype(np.float32), parents, translation.astype(np.float32)
    )
    expected_positions, expected_rotations = reference_fk(rotations, offsets, parents, translation)
    np.testing.assert_allclose(positions, expected_positions, atol=1e-5)
    np.testing.assert_allclose(global_rotations, expected_rotations, atol=1e-5)


# ---------------------------------------------------------------------------------------- bone lengths
def test_bone_lengths_match_numpy_in_child_order(beat):
    parents, _, _ = shuffled(beat.parents, beat.offsets, seed=17)
    positions = np.random.default_rng(17).normal(size=(2, beat.num_joints, 3))
    children = np.nonzero(parents >= 0)[0]
    expected = np.linalg.norm(positions[:, children] - positions[:, parents[children]], axis=-1)
    actual = K.bone_lengths(positions.astype(np.float32), parents)
    assert actual.shape == (2, 87) and actual.dtype == jnp.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_bone_lengths_gradient_is_finite_for_a_zero_length_bone():
    parents = np.array([-1, 0, 1])
    positions = jnp.array([[0.0, 0, 0], [1.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    np.testing.assert_allclose(K.bone_lengths(positions, parents), [3.0, 0.0])
    gradient = jax.grad(lambda p: jnp.sum(K.bone_lengths(p, parents)))(positions)
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient[0], [-1 / 3, -2 / 3, -2 / 3], rtol=1e-6)
