"""metrics.py's numpy metrics (jitter, bone lengths, end effectors and their speeds, diversity, motion
features, the linear classifier, Fréchet distances) against analytic answers and scipy."""

import jax
import numpy as np
import pytest
import scipy.linalg

from motion_ddpm_jax import metrics
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

FPS = 30.0
NAMES = ("Hips", "Spine", "Head", "RightHand", "LeftHand", "RightFoot")
PARENTS = (-1, 0, 1, 1, 1, 0)
OFFSETS = ((0, 0, 0), (0, 10, 0), (0, 8, 0), (-12, 0, 0), (12, 0, 0), (0, -15, 0))


def toy_skeleton() -> Skeleton:
    return Skeleton(NAMES, np.array(PARENTS), np.array(OFFSETS, np.float32))


def rest_pose(skeleton: Skeleton) -> np.ndarray:
    """Global rest positions [J, 3] by summing offsets down the hierarchy (parents listed first)."""
    pose = np.zeros((skeleton.num_joints, 3))
    for joint, parent in enumerate(skeleton.parents):
        pose[joint] = skeleton.offsets[joint] + (pose[parent] if parent >= 0 else 0.0)
    return pose


def padded(clips, garbage=1e6):
    """Clips [T_i, J, 3] -> [N, T, J, 3] padded with huge values (which every metric must ignore)."""
    lengths = np.array([len(c) for c in clips])
    out = np.full((len(clips), lengths.max(), *clips[0].shape[1:]), garbage)
    for i, clip in enumerate(clips):
        out[i, : len(clip)] = clip
    return out, lengths


# ------------------------------------------------------------------------------------------ jitter
def polynomial_clips(coefficients, lengths, fps=FPS, seed=0):
    """Clips whose every joint follows p0 + sum_k c_k t^k / k! (t in seconds). coefficients: [K, J, 3]."""
    rng = np.random.default_rng(seed)
    clips = []
    for length in lengths:
        t = np.arange(length)[:, None, None] / fps
        start = rng.normal(size=coefficients.shape[1:]) * 10.0
        clips.append(
            start + sum(c * t ** (k + 1) / np.prod(np.arange(1, k + 2)) for k, c in enumerate(coefficients))
        )
    return padded(clips)


def test_jitter_of_constant_velocity_motion_is_zero():
    velocity = np.random.default_rng(1).normal(size=(1, 4, 3)) * 50.0
    positions, lengths = polynomial_clips(velocity, [12, 7, 20])
    result = metrics.jitter(positions, lengths, FPS)
    assert result["acceleration"] == pytest.approx(0.0, abs=1e-6)
    assert result["jerk"] == pytest.approx(0.0, abs=1e-4)


def test_jitter_of_a_quadratic_trajectory_is_its_acceleration():
    rng = np.random.default_rng(2)
    velocity, acceleration = rng.normal(size=(2, 1, 5, 3)) * 20.0
    positions, lengths = polynomial_clips(np.concatenate([velocity, acceleration]), [9, 15, 4])
    result = metrics.jitter(positions, lengths, FPS)
    assert result["acceleration"] == pytest.approx(np.linalg.norm(acceleration[0], axis=-1).mean(), rel=1e-7)
    assert result["jerk"] == pytest.approx(0.0, abs=1e-3)


def test_jitter_of_a_cubic_trajectory_has_its_constant_jerk():
    rng = np.random.default_rng(3)
    coefficients = np.concatenate([np.zeros((2, 3, 3)), rng.normal(size=(1, 3, 3)) * 100.0])
    positions, lengths = polynomial_clips(coefficients, [10, 6], fps=60.0)
    result = metrics.jitter(positions, lengths, 60.0)
    assert result["jerk"] == pytest.approx(np.linalg.norm(coefficients[2], axis=-1).mean(), rel=1e-6)


def test_jitter_of_clips_too_short_for_a_difference_is_nan():
    positions, lengths = padded([np.zeros((2, 3, 3))])
    assert np.isnan(metrics.jitter(positions, lengths, FPS)["acceleration"])


def test_clips_of_one_to_three_frames_enter_only_the_differences_they_have():
    """Clips of 1, 2 and 3 frames (padded with huge values): the 3-frame clip alone has a second
    difference (and none a third: jerk NaN), the 2- and 3-frame ones their 1 + 2 steps of speed, and a
    1-frame clip resampled for diversity is its one pose at every frame."""
    rng = np.random.default_rng(13)
    clips = [rng.normal(size=(n, 3, 3)) * 10.0 for n in (1, 2, 3)]
    positions, lengths = padded(clips)
    c = clips[2]
    result = metrics.jitter(positions, lengths, FPS)
    assert result["acceleration"] == pytest.approx(
        np.mean([np.linalg.norm(c[2, j] - 2 * c[1, j] + c[0, j]) * FPS**2 for j in range(3)]), rel=1e-12
    )
    assert np.isnan(result["jerk"])
    steps = [clips[1][1] - clips[1][0], c[1] - c[0], c[2] - c[1]]
    speeds = np.array([np.linalg.norm(step[j]) * FPS for step in steps for j in (0, 2)])
    speed = metrics.effector_speed(positions, lengths, FPS, [0, 2])
    assert speed["mean"] == pytest.approx(speeds.mean(), rel=1e-12)
    ordered = np.sort(speeds)  # 6 values: the 95th percentile lies 0.75 of the way from the 5th to the 6th
    assert speed["p95"] == pytest.approx(ordered[4] + 0.75 * (ordered[5] - ordered[4]), rel=1e-12)
    a, b = clips[0][0] - clips[0][0, 1], clips[1][1] - clips[1][1, 1]  # root-relative, root joint 1
    one_frame, one_lengths = padded([clips[0], clips[1][1:]])  # two 1-frame clips
    assert metrics.diversity(one_frame, one_lengths, root=1) == pytest.approx(
        np.linalg.norm(a - b), rel=1e-12
    )
    assert np.isnan(metrics.diversity(positions[:1], lengths[:1]))


# ------------------------------------------------------------------------------------------ bones
def rigid_motion(pose, frames, seed):
    """[frames, J, 3]: `pose` turned by a random rotation and moved by a random translation per frame."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation = q * np.sign(np.diag(r))
        rotation *= np.linalg.det(rotation)  # a proper rotation
        out.append(pose @ rotation.T + rng.normal(size=3) * 30.0)
    return np.stack(out)


def test_bone_error_of_a_rigidly_moved_skeleton_is_zero():
    skeleton = toy_skeleton()
    positions, lengths = padded([rigid_motion(rest_pose(skeleton), n, n) for n in (5, 9)])
    result = metrics.bone_length_error(positions, lengths, skeleton)
    assert result["mean"] == pytest.approx(0.0, abs=1e-12)
    assert result["worst"] == pytest.approx(0.0, abs=1e-12)
    assert len(result["per_bone"]) == 5


def test_bone_error_of_a_scaled_skeleton_is_the_scale_minus_one():
    skeleton = toy_skeleton()
    positions, lengths = padded([1.25 * rigid_motion(rest_pose(skeleton), 6, 0)])
    result = metrics.bone_length_error(positions, lengths, skeleton)
    assert result["mean"] == pytest.approx(0.25, rel=1e-9)
    assert list(result["per_bone"].values()) == pytest.approx([0.25] * 5, rel=1e-9)
    reference = metrics.mean_bone_lengths(positions, lengths, skeleton)
    assert reference == pytest.approx(1.25 * np.linalg.norm(np.array(OFFSETS[1:]), axis=-1))
    assert metrics.bone_length_error(positions, lengths, skeleton, reference)["mean"] == pytest.approx(0.0)


def test_bone_error_names_the_worst_bone():
    skeleton = toy_skeleton()
    pose = rest_pose(skeleton)
    pose[NAMES.index("RightHand")] += [-3.6, 0.0, 0.0]  # Spine->RightHand 30% longer
    positions, lengths = padded([rigid_motion(pose, 4, 1)])
    result = metrics.bone_length_error(positions, lengths, skeleton)
    assert result["worst_bone"] == "Spine->RightHand"
    assert result["worst"] == pytest.approx(0.3, rel=1e-9)
    assert result["mean"] == pytest.approx(0.3 / 5, rel=1e-9)


def test_bone_error_leaves_out_zero_length_bones():
    skeleton = Skeleton(("a", "b", "c"), np.array([-1, 0, 1]), np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0.0]]))
    positions, lengths = padded([np.tile(rest_pose(skeleton), (3, 1, 1)) * 2.0])
    result = metrics.bone_length_error(positions, lengths, skeleton)
    assert list(result["per_bone"]) == ["b->c"] and result["mean"] == pytest.approx(1.0)
    # Every bone of zero length (a skeleton of zero offsets): no bone to measure, NaN (it had raised
    # numpy's "attempt to get argmax of an empty sequence").
    result = metrics.bone_length_error(positions, lengths, skeleton, reference=np.zeros(2))
    assert np.isnan(result["mean"]) and result["worst_bone"] is None and result["per_bone"] == {}


# ------------------------------------------------------------------------------------------ end effectors
def test_end_effectors_are_chosen_by_name_else_the_leaves():
    groups = metrics.end_effectors(NAMES, PARENTS)
    assert {k: v.tolist() for k, v in groups.items()} == {"hands": [3, 4], "feet": [5]}
    beat = beat_skeleton()
    groups = metrics.end_effectors(beat.names, beat.parents)
    hands = {beat.names[j] for j in groups["hands"]}
    feet = {beat.names[j] for j in groups["feet"]}
    assert {"RightHand", "LeftHand", "RightHandIndex4_Nub", "LeftHandThumb1"} <= hands
    assert {"RightFoot", "LeftToeBase"} <= feet and not hands & feet
    assert "Head" not in hands | feet and "RightForeArm" not in hands
    # README: for BEAT and the demo, 58 of the 88 joints are hands (hands, fingers, end sites), 10 feet
    assert (len(beat.names), len(hands), len(feet)) == (88, 58, 10)
    assert all(name.startswith(("RightHand", "LeftHand")) for name in hands)
    leaves = metrics.end_effectors(("root", "a", "b", "c"), (-1, 0, 1, 0))
    assert list(leaves) == ["leaves"] and leaves["leaves"].tolist() == [2, 3]


def test_effector_speed_of_circular_motion():
    radius, omega, fps = 20.0, 3.0, 25.0
    t = np.arange(50) / fps
    circle = np.stack([radius * np.cos(omega * t), radius * np.sin(omega * t), np.zeros_like(t)], axis=-1)
    clip = np.stack([circle, np.full_like(circle, 5.0)], axis=1)  # joint 0 circles, joint 1 rests
    positions, lengths = padded([clip, clip[:20]])
    chord_speed = 2.0 * radius * np.sin(omega / (2.0 * fps)) * fps  # exact for consecutive frames
    assert chord_speed == pytest.approx(radius * omega, rel=1e-3)
    moving = metrics.effector_speed(positions, lengths, fps, [0])
    assert moving["mean"] == pytest.approx(chord_speed, rel=1e-9)
    assert moving["p95"] == pytest.approx(chord_speed, rel=1e-9)
    both = metrics.effector_speed(positions, lengths, fps, [0, 1])
    assert both["mean"] == pytest.approx(chord_speed / 2.0, rel=1e-9)
    assert both["p95"] == pytest.approx(chord_speed, rel=1e-9)


# ------------------------------------------------------------------------------------------ diversity
def test_diversity_of_identical_samples_is_zero_whatever_the_root_path():
    rng = np.random.default_rng(4)
    clip = rng.normal(size=(20, 4, 3))
    moved = clip + rng.normal(size=(20, 1, 3)) * 100.0  # another root trajectory, same relative poses
    positions, lengths = padded([clip, moved, clip])
    assert metrics.diversity(positions, lengths, root=0) == pytest.approx(0.0, abs=1e-9)


def test_diversity_of_known_samples_is_their_pose_distance():
    rng = np.random.default_rng(5)
    clip = rng.normal(size=(16, 4, 3))
    shift_b, shift_c = np.zeros((4, 3)), np.zeros((4, 3))
    shift_b[2] = [3.0, 4.0, 0.0]  # distance 5 from clip at every frame
    shift_c[1] = [0.0, 0.0, 12.0]  # 12 from clip; from b: sqrt(5^2 + 12^2) = 13
    positions, lengths = padded([clip, clip + shift_b])
    assert metrics.diversity(positions, lengths) == pytest.approx(5.0, rel=1e-9)
    positions, lengths = padded([clip, clip + shift_b, clip + shift_c])
    assert metrics.diversity(positions, lengths) == pytest.approx((5.0 + 12.0 + 13.0) / 3.0, rel=1e-9)


def test_diversity_resamples_clips_of_other_lengths():
    t_short, t_long = np.linspace(0.0, 1.0, 11), np.linspace(0.0, 1.0, 41)
    ramp = lambda t: np.stack([np.zeros_like(t), 10.0 * t, np.zeros_like(t)], -1)[:, None]  # noqa: E731
    short = np.concatenate([np.zeros((11, 1, 3)), ramp(t_short)], axis=1)
    long = np.concatenate([np.zeros((41, 1, 3)), ramp(t_long)], axis=1)
    positions, lengths = padded([short, long])
    assert metrics.diversity(positions, lengths) == pytest.approx(0.0, abs=1e-9)  # the same linear ramp


def test_diversity_subsamples_pairs_deterministically():
    rng = np.random.default_rng(6)
    positions, lengths = padded([rng.normal(size=(8, 3, 3)) for _ in range(120)])
    full = metrics.diversity(positions, lengths, max_pairs=10**6)
    first = metrics.diversity(positions, lengths, max_pairs=2000, seed=3)
    assert first == metrics.diversity(positions, lengths, max_pairs=2000, seed=3)
    assert first != metrics.diversity(positions, lengths, max_pairs=2000, seed=4)
    assert first == pytest.approx(full, rel=0.02)


def test_summary_features_of_linear_motion():
    a, b = np.array([1.0, -2.0]), np.array([3.0, 0.5])  # per channel: x(t) = a + b * frame
    clips = [a + b * np.arange(n)[:, None] for n in (5, 8)]
    values, lengths = padded(clips)
    features = metrics.summary_features(values, lengths, fps=10.0)
    for row, n in zip(features, (5, 8), strict=True):
        frames = np.arange(n)
        expected = [a + b * frames.mean(), np.abs(b) * frames.std(), b * 10.0, np.zeros(2)]
        np.testing.assert_allclose(row, np.concatenate(expected), atol=1e-9)


def test_motion_features_are_the_statistics_of_the_root_relative_joints_and_the_roots_trajectory():
    """README's 4 x 3 x (joints + 1) numbers, from how the clips were built rather than from their
    global positions: per channel the mean and (population) std over the clip's frames of each joint's
    position relative to the root (joint 1 here, not 0), then of the root's path from its first frame,
    then the same of their velocities (units/s); a constant shift of the whole clip changes nothing, and
    padding past the length (huge values) enters nothing."""
    rng = np.random.default_rng(11)
    fps, root = 25.0, 1
    clips, expected = [], []
    for n in (6, 2, 11):
        relative = rng.normal(size=(n, 4, 3)) * 7.0  # joints around the root, moving
        relative[:, root] = 0.0
        path = np.cumsum(rng.normal(size=(n, 3)), axis=0) * 3.0  # the root's path
        path -= path[0]
        clips.append(relative + path[:, None] + rng.normal(size=3) * 500.0)  # anywhere in the world
        series = np.concatenate([relative, path[:, None]], axis=1).reshape(n, 15)
        velocity = np.diff(series, axis=0) * fps
        expected.append(np.concatenate([series.mean(0), series.std(0), velocity.mean(0), velocity.std(0)]))
    positions, lengths = padded(clips)
    features = metrics.motion_features(positions, lengths, fps, root=root)
    assert features.shape == (3, 4 * 3 * (4 + 1))
    np.testing.assert_allclose(features, np.array(expected), rtol=1e-9, atol=1e-9)
    shifted = metrics.motion_features(positions + np.array([40.0, -3.0, 9.0]), lengths, fps, root=root)
    np.testing.assert_allclose(shifted, features, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ classifier
def clusters(count, seed, dims=40, classes=("a", "b", "c", "d"), spread=8.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(len(classes), dims)) * spread
    labels = rng.integers(len(classes), size=count)
    return centres[labels] + rng.normal(size=(count, dims)), [classes[i] for i in labels]


def test_classifier_is_exact_on_well_separated_classes():
    features, labels = clusters(200, 0)
    classifier = metrics.fit_classifier(features, labels)
    assert classifier.classes == ("a", "b", "c", "d")
    test_features, test_labels = clusters(500, 1)
    assert classifier.accuracy(test_features, test_labels) == 1.0


def test_classifier_is_at_chance_on_shuffled_labels():
    features, labels = clusters(200, 0)
    classifier = metrics.fit_classifier(features, labels)
    test_features, test_labels = clusters(4000, 2)
    shuffled = list(np.random.default_rng(3).permutation(np.array(test_labels, dtype=object)))
    assert classifier.accuracy(test_features, shuffled) == pytest.approx(0.25, abs=0.04)


def test_classifier_with_more_features_than_clips_uses_the_dual_form():
    features, labels = clusters(30, 0, dims=500, spread=3.0)
    classifier = metrics.fit_classifier(features, labels)
    test_features, test_labels = clusters(300, 1, dims=500, spread=3.0)
    assert classifier.accuracy(test_features, test_labels) == 1.0


def test_label_function_reads_gesture_words_or_finite_captions():
    to_class, _ = metrics.label_function(["so wave okay", "nod", "and bow there"])
    assert [to_class(c) for c in ("now wave", "clap right", "hello")] == ["wave", "clap", None]
    to_class, how = metrics.label_function(["walk", "run", "Walk "])
    assert how == "the caption" and to_class(" RUN") == "run" and to_class("jump") is None
    assert metrics.label_function([f"free text number {i}" for i in range(100)]) is None


# ------------------------------------------------------------------------------------------ Fréchet
def random_spd(rng, dims):
    a = rng.normal(size=(dims, dims))
    return a @ a.T + 0.1 * np.eye(dims)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(7)
    for dims in (1, 3, 8):
        mu1, mu2 = rng.normal(size=(2, dims))
        s1, s2 = random_spd(rng, dims), random_spd(rng, dims)
        reference = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * scipy.linalg.sqrtm(s1 @ s2).real)
        assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
        assert metrics.sqrtm_psd(s1) == pytest.approx(scipy.linalg.sqrtm(s1).real, rel=1e-8, abs=1e-10)


def test_frechet_distance_in_one_dimension():
    # N(m1, v1) vs N(m2, v2): (m1 - m2)^2 + (sqrt v1 - sqrt v2)^2
    assert metrics.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4.0 + 1.0)
    assert metrics.frechet_distance([0.5], [[2.25]], [0.5], [[2.25]]) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_of_fitted_features():
    features = np.random.default_rng(8).normal(size=(300, 5))
    assert metrics.frechet_distance_of(features, features) == pytest.approx(0.0, abs=1e-9)
    shifted = features + np.array([3.0, 0, 0, 0, 0])
    assert metrics.frechet_distance_of(features, shifted) == pytest.approx(9.0, rel=1e-9)
    assert np.isnan(metrics.frechet_distance_of(features[:1], features))


def test_frechet_distance_of_fewer_clips_than_dimensions_matches_the_nuclear_norm_form():
    """Eval fits 276-1068 dimensional Gaussians to a few hundred clips or fewer: singular covariances,
    with columns of zero variance (the root's own relative position). With S = L L^T, L = the centred
    rows / sqrt(n - 1), tr (S_a^1/2 S_b S_a^1/2)^1/2 is the sum of the singular values of L_a^T L_b, an
    [n_a, n_b] product that needs no square root of a singular matrix."""
    rng = np.random.default_rng(12)
    for count_a, count_b, dims in ((6, 9, 20), (3, 3, 40), (2, 5, 8), (30, 12, 30)):
        a = rng.normal(size=(count_a, dims)) * np.linspace(0.1, 50.0, dims)
        b = rng.normal(size=(count_b, dims)) * np.linspace(0.1, 60.0, dims) + 2.0
        a[:, :3], b[:, :3] = 0.0, 0.0
        la = (a - a.mean(0)) / np.sqrt(count_a - 1)
        lb = (b - b.mean(0)) / np.sqrt(count_b - 1)
        cross = np.linalg.svd(la @ lb.T, compute_uv=False).sum()
        expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.sum(la**2) + np.sum(lb**2) - 2.0 * cross
        assert metrics.frechet_distance_of(a, b) == pytest.approx(expected, rel=1e-6), (count_a, dims)
        scale = np.sum(la**2) + np.sum(lb**2)
        assert metrics.frechet_distance_of(a, a[::-1]) == pytest.approx(0.0, abs=1e-9 * scale)


def test_metric_functions_refuse_inputs_that_gave_numbers_without_an_error():
    """Called from Python on a researcher's own arrays: a rate of 0 read as still motion (jitter 0), positions
    with more joints than the skeleton had their bones measured between the first J, and mismatched
    Gaussians failed inside numpy's matmul without naming the argument. Each is refused, named."""
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(2, 6, 3, 3))
    lengths = np.array([6, 4])
    for fps in (0.0, -30.0, float("nan")):
        with pytest.raises(ValueError, match=r"jitter: fps must be a positive number"):
            metrics.jitter(positions, lengths, fps)
        with pytest.raises(ValueError, match=r"effector_speed: fps must be a positive number"):
            metrics.effector_speed(positions, lengths, fps, [0])
    with pytest.raises(ValueError, match=r"joints must be joint indices in \[0, 3\).*\[3\]"):
        metrics.effector_speed(positions, lengths, 30.0, [3])
    # One joint moving 0.5 units per frame along x at 30 fps: 15 units/s (an analytic case).
    moving = np.zeros((1, 4, 3, 3))
    moving[0, :, 2, 0] = 0.5 * np.arange(4)
    assert metrics.effector_speed(moving, np.array([4]), np.float32(30.0), np.array([2]))["mean"] == 15.0
    assert np.isnan(metrics.effector_speed(moving, np.array([4]), 30.0, [])["mean"])
    skeleton = Skeleton(names=("a", "b"), parents=np.array([-1, 0]), offsets=np.zeros((2, 3), np.float32))
    with pytest.raises(
        ValueError, match=r"frame_bone_lengths: positions must be \[\.\.\., 2, 3\].*\(2, 6, 3, 3\)"
    ):
        metrics.bone_length_error(positions, lengths, skeleton, reference=np.ones(1))
    with pytest.raises(ValueError, match=r"mu1 \[2\], mu2 \[3\], sigma1 \[2, 2\], sigma2 \[3, 3\]"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"features_a and features_b .*\[5, 3\] and \[5, 2\]"):
        metrics.frechet_distance_of(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)))
    # 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2 with s the standard deviations.
    assert metrics.frechet_distance([1.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(5.0, rel=1e-12)


def test_metric_rates_take_a_0d_array_or_a_jax_scalar():
    """fps as np.load returns a saved number (a 0-d array) or as a jax scalar: the metrics had taken them
    (float(fps)) and the check of the rate refused them. One joint moving 0.5 units per frame along x at 30
    fps: 15 units/s (an analytic case); a bool and an array of several rates stay refused."""
    moving = np.zeros((1, 4, 3, 3))
    moving[0, :, 2, 0] = 0.5 * np.arange(4)
    for fps in (np.array(30.0), jax.numpy.float32(30.0), np.int64(30)):
        assert metrics.effector_speed(moving, np.array([4]), fps, [2])["mean"] == 15.0, fps
        assert metrics.jitter(moving, np.array([4]), fps)["acceleration"] == 0.0, fps
    for fps in (True, np.array([30.0]), "30"):
        with pytest.raises(ValueError, match=r"jitter: fps must be a positive number"):
            metrics.jitter(moving, np.array([4]), fps)
