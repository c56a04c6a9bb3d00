"""Specification of the BVH writer: what parse_bvh reads back is what was written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.data.bvh import euler_to_matrix_np, format_bvh, load_bvh, parse_bvh, write_bvh
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

BEAT = beat_skeleton()
NUM_ROTATING = int((~BEAT.end_sites).sum())  # 75

# Hips -> Spine -> Head -> end site; Hips -> Leg -> end site.
SMALL = Skeleton(
    names=("Hips", "Spine", "Head", "Head_Nub", "Leg", "Leg_Nub"),
    parents=np.array([-1, 0, 1, 2, 0, 4]),
    offsets=np.array([[0, 0, 0], [0, 10, 0.5], [0, 5, 0], [0, 3, 1], [-2, -8, 0], [0, -9, 0.5]], dtype=float),
    end_sites=np.array([False, False, False, True, False, True]),
)
SMALL_TEXT = """\
HIERARCHY
ROOT Hips
{
\tOFFSET 1 2 3
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\tJOINT Spine
\t{
\t\tOFFSET 0 10 0.5
\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\tJOINT Head
\t\t{
\t\t\tOFFSET 0 5 0
\t\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\t\tEnd Site
\t\t\t{
\t\t\t\tOFFSET 0 3 1
\t\t\t}
\t\t}
\t}
\tJOINT Leg
\t{
\t\tOFFSET -2 -8 0
\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0 -9 0.5
\t\t}
\t}
}
MOTION
Frames: 2
Frame Time: 0.5
0.000000 90.500000 -1.000000 10.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 \
0.000000 0.000000 0.123457 -45.000000
1.250000 90.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 0.000000 \
0.000000 0.000000 0.000000 0.000000
"""


def reference_positions(skeleton: Skeleton, euler: np.ndarray, translation: np.ndarray, order: str):
    """Global positions [T, J, 3] by forward kinematics of the arrays given to the writer."""
    local = np.broadcast_to(np.eye(3, dtype=np.float32), (len(euler), skeleton.num_joints, 3, 3)).copy()
    local[:, skeleton.rotation_joints] = euler_to_matrix_np(euler, order)
    positions = kinematics.forward_kinematics(local, skeleton.offsets, skeleton.parents, translation)
    return np.asarray(positions)


def random_motion(rng: np.random.Generator, num_frames: int, num_rotating: int):
    euler = rng.uniform(-180, 180, (num_frames, num_rotating, 3)).astype(np.float32)
    translation = (rng.normal(0, 50, (num_frames, 3)) + [0, 90, 0]).astype(np.float32)
    return euler, translation


def test_layout_of_a_small_file():
    euler = np.zeros((2, 4, 3))
    euler[0, 0] = [10, 0, 0]
    euler[0, 3] = [0, 0.1234567, -45]
    translation = np.array([[0, 90.5, -1], [1.25, 90, 0]])
    text = format_bvh(SMALL, euler, translation, 0.5, root_offset=np.array([1.0, 2.0, 3.0]))
    assert text == SMALL_TEXT


def test_beat_skeleton_round_trips_exactly():
    euler, translation = random_motion(np.random.default_rng(0), 50, NUM_ROTATING)
    motion = parse_bvh(format_bvh(BEAT, euler, translation, 1 / 120))
    assert motion.skeleton == BEAT  # names, parents, offsets (exact float32), end sites
    assert motion.skeleton.names == BEAT.names and np.array_equal(motion.skeleton.offsets, BEAT.offsets)
    assert motion.frame_time == 1 / 120 and motion.fps == 120
    assert motion.euler_orders == ("ZXY",) * NUM_ROTATING
    np.testing.assert_allclose(motion.euler_degrees, euler, rtol=0, atol=1e-6)  # '%.6f'
    np.testing.assert_allclose(motion.root_translation, translation, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        motion.positions(), reference_positions(BEAT, euler, translation, "ZXY"), rtol=0, atol=1e-3
    )


@pytest.mark.parametrize("order", ["XYZ", "YZX", "ZYX"])
def test_other_orders_and_a_root_offset_keep_the_global_positions(order):
    skeleton = dataclasses.replace(
        SMALL, offsets=SMALL.offsets + np.array([[1.5, 2.0, -3.0]] + [[0, 0, 0]] * 5)
    )
    euler, translation = random_motion(np.random.default_rng(1), 7, 4)
    motion = parse_bvh(format_bvh(skeleton, euler, translation, 1 / 30, order=order))
    assert motion.euler_orders == (order,) * 4
    np.testing.assert_allclose(motion.root_offset, [1.5, 2.0, -3.0])  # written as the root's OFFSET
    np.testing.assert_allclose(
        motion.positions(), reference_positions(skeleton, euler, translation, order), rtol=0, atol=1e-3
    )


def test_more_decimals_keep_more_digits():
    euler = np.full((1, 4, 3), 1 / 3)
    motion = parse_bvh(format_bvh(SMALL, euler, np.zeros((1, 3)), 0.01, decimals=9))
    np.testing.assert_allclose(motion.euler_degrees, 1 / 3, rtol=1e-7)
    assert "0.333333333" in format_bvh(SMALL, euler, np.zeros((1, 3)), 0.01, decimals=9)


def test_tiny_negatives_are_written_as_zero():
    euler = np.full((1, 4, 3), -1e-9)
    assert "-0.000000" not in format_bvh(SMALL, euler, np.full((1, 3), -0.0), 0.01)


def test_zero_frames():
    motion = parse_bvh(format_bvh(SMALL, np.zeros((0, 4, 3)), np.zeros((0, 3)), 1 / 60))
    assert motion.num_frames == 0 and motion.skeleton == SMALL


def test_write_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "take.bvh"
    path.write_text("a user's file")
    euler, translation = random_motion(np.random.default_rng(2), 3, 4)
    with pytest.raises(FileExistsError, match="take.bvh exists; pass overwrite=True"):
        write_bvh(path, SMALL, euler, translation, 1 / 120)
    assert path.read_text() == "a user's file"
    assert write_bvh(path, SMALL, euler, translation, 1 / 120, overwrite=True) == str(path)
    assert load_bvh(path).num_frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.bvh"]  # no temporary file left


def test_write_creates_a_new_file(tmp_path):
    euler, translation = random_motion(np.random.default_rng(3), 4, NUM_ROTATING)
    path = write_bvh(tmp_path / "new.bvh", BEAT, euler, translation, 1 / 120)
    motion = load_bvh(path)
    assert motion.skeleton == BEAT and motion.num_frames == 4


# ------------------------------------------------------------------------------------------------ errors
def reordered(skeleton: Skeleton, order: list[int]) -> Skeleton:
    inverse = np.argsort(order)
    parents = [int(inverse[skeleton.parents[j]]) if skeleton.parents[j] >= 0 else -1 for j in order]
    return Skeleton(
        tuple(skeleton.names[j] for j in order),
        np.array(parents),
        skeleton.offsets[order],
        skeleton.end_sites[order],
    )


@pytest.mark.parametrize(
    "skeleton, message",
    [
        (
            reordered(SMALL, [0, 1, 4, 2, 3, 5]),
            r"joint 2 \('Leg'\) is not where a depth-first listing puts it",
        ),
        (reordered(SMALL, [1, 0, 2, 3, 4, 5]), "root comes first"),
        (
            Skeleton(
                ("Hips", "Hips_Nub", "Spine"),
                np.array([-1, 0, 0]),
                np.zeros((3, 3)),
                np.array([0, 1, 0], bool),
            ),
            "at most one end site, as its last child",
        ),
        (
            dataclasses.replace(SMALL, names=("Hips", "Spine", "Head", "HeadTop", "Leg", "Leg_Nub")),
            "parse_bvh calls it 'Head_Nub'",
        ),
        (
            dataclasses.replace(SMALL, names=("Hips", "Spine {", "Head", "Head_Nub", "Leg", "Leg_Nub")),
            "braces",
        ),
    ],
)
def test_skeletons_a_bvh_file_cannot_hold_are_refused(skeleton, message):
    num_rotating = int((~skeleton.end_sites).sum())
    with pytest.raises(ValueError, match=message):
        format_bvh(skeleton, np.zeros((1, num_rotating, 3)), np.zeros((1, 3)), 0.01)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(euler_degrees=np.zeros((2, 6, 3))), r"expected \[T, 4, 3\]: one angle triple per joint"),
        (dict(root_translation=np.zeros((3, 3))), r"root_translation has shape \(3, 3\), expected \[2, 3\]"),
        (dict(frame_time=0.0), "frame_time must be a positive number"),
        (dict(order="ZXX"), "unknown rotation order 'ZXX'"),
        (
            dict(
                euler_degrees=np.array([[[0, 0, 0]] * 4, [[0, 0, 0], [0, np.nan, 0], [0, 0, 0], [0, 0, 0]]])
            ),
            "frame 1",
        ),
        (dict(root_translation=np.array([[0, 0, 0], [np.inf, 0, 0]])), "frame 1: root_translation"),
        (dict(decimals=-1), "decimals must be an integer"),
    ],
)
def test_bad_motion_arrays_are_refused(changes, message):
    arguments = dict(
        skeleton=SMALL, euler_degrees=np.zeros((2, 4, 3)), root_translation=np.zeros((2, 3)), frame_time=0.01
    )
    with pytest.raises(ValueError, match=message):
        format_bvh(**(arguments | changes))


# ------------------------------------------------------------------------------------------------ fuzzing
def numpy_positions(local: np.ndarray, offsets: np.ndarray, parents: np.ndarray, translation: np.ndarray):
    """Forward kinematics as a float64 loop over joints listed parents first: [T, J, 3]."""
    glob = np.empty(local.shape, dtype=np.float64)
    positions = np.empty((*local.shape[:2], 3))
    for j, p in enumerate(parents):
        if p < 0:
            glob[:, j], positions[:, j] = local[:, j], translation + offsets[j]
        else:
            glob[:, j] = glob[:, p] @ local[:, j]
            positions[:, j] = positions[:, p] + glob[:, p] @ offsets[j]
    return positions


@st.composite
def depth_first_skeletons(draw) -> Skeleton:
    """Random trees listed depth-first; some leaves end in an end site (then they take no more children)."""
    names, parents, end_sites = ["J0"], [-1], [False]
    open_path = [0]  # joints that may still take children: the current path from the root
    for _ in range(draw(st.integers(1, 12))):
        parent = open_path[draw(st.integers(0, len(open_path) - 1))]
        open_path = open_path[: open_path.index(parent) + 1]
        joint = len(names)
        names.append(f"J{joint}")
        parents.append(parent)
        end_sites.append(False)
        if draw(st.booleans()):
            names.append(f"J{joint}_Nub")
            parents.append(joint)
            end_sites.append(True)
        else:
            open_path.append(joint)
    coordinate = st.floats(-100, 100, allow_nan=False, width=32)
    offsets = draw(
        st.lists(st.tuples(coordinate, coordinate, coordinate), min_size=len(names), max_size=len(names))
    )
    offsets[0] = (0.0, 0.0, 0.0)
    return Skeleton(tuple(names), np.array(parents), np.array(offsets, dtype=np.float32), np.array(end_sites))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(skeleton=depth_first_skeletons(), seed=st.integers(0, 2**32 - 1))
def test_any_depth_first_skeleton_round_trips(skeleton, seed):
    num_rotating = int((~skeleton.end_sites).sum())
    euler, translation = random_motion(np.random.default_rng(seed), 2, num_rotating)
    motion = parse_bvh(format_bvh(skeleton, euler, translation, 1 / 120))
    assert motion.skeleton == skeleton
    np.testing.assert_allclose(motion.euler_degrees, euler, rtol=0, atol=1e-6)
    local = np.broadcast_to(np.eye(3), (2, skeleton.num_joints, 3, 3)).copy()
    local[:, skeleton.rotation_joints] = euler_to_matrix_np(euler.astype(np.float64), "ZXY")
    expected = numpy_positions(local, skeleton.offsets, skeleton.parents, translation)
    actual = numpy_positions(
        motion.local_rotations.astype(np.float64),
        motion.skeleton.offsets,
        motion.skeleton.parents,
        motion.root_translation,
    )
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-3)
