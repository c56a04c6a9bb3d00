"""The `rotation_6d` layout: continuous where axis-angle jumps, exact against float64 references, safe for
whatever a model outputs, and usable from raw BEAT to a BVH file."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_beat import JOINTS, SECONDS, WORDS, angles_and_root, bvh_text, textgrid_text
from test_representation import SMALL, numpy_fk, random_motion

from motion_ddpm_jax import losses, representation
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import beat, bvh


def local_rotations_of(rotvecs, skeleton):
    """rotvecs [T, K, 3] of the rotation joints -> local matrices [T, J, 3, 3] (identity at end sites),
    float64 by scipy."""
    frames = len(rotvecs)
    local = np.tile(np.eye(3), (frames, skeleton.num_joints, 1, 1))
    local[:, skeleton.rotation_joints] = (
        Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_matrix().reshape(frames, -1, 3, 3)
    )
    return local


def numpy_gram_schmidt(six):
    """[N, 6] -> [N, 3, 3], float64: columns a/|a|, (b - (x.b) x)/|...|, their cross product."""
    a, b = six[:, :3], six[:, 3:]
    x = a / np.linalg.norm(a, axis=1, keepdims=True)
    y = b - np.sum(x * b, axis=1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def test_encode_decode_round_trip_of_random_rotations_against_scipy():
    rotations = Rotation.random(200, random_state=0)
    matrices = rotations.as_matrix()
    with jax.enable_x64(True):
        six = np.asarray(representation.matrix_to_rotation_6d(matrices))
        back = np.asarray(representation.rotation_6d_to_matrix(six))
    # The documented column convention: first column, then second, of each matrix.
    np.testing.assert_allclose(six, np.concatenate([matrices[:, :, 0], matrices[:, :, 1]], axis=1), atol=0)
    np.testing.assert_allclose(back, matrices, atol=1e-14)
    # Any 6 numbers: the Gram-Schmidt rotation a float64 numpy reference computes, a proper rotation.
    raw = np.random.default_rng(1).normal(size=(200, 6))
    with jax.enable_x64(True):
        decoded = np.asarray(representation.rotation_6d_to_matrix(raw))
    np.testing.assert_allclose(decoded, numpy_gram_schmidt(raw), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(decoded), 1.0, atol=1e-12)


def test_wrong_sizes_and_layouts_are_named():
    with pytest.raises(ValueError, match=r"needs 39 \(root translation delta 3 \+ 6 per rotation joint\)"):
        representation.local_rotations(np.zeros((2, 21)), SMALL, "rotation_6d")
    with pytest.raises(ValueError, match="unknown rotation representation 'positions'"):
        representation.relative_fk(np.zeros((2, 21)), SMALL, "positions")
    with pytest.raises(ValueError, match=r"expected 6D rotations \[\.\.\., 6\]; got shape \(4, 3\)"):
        representation.rotation_6d_to_matrix(np.zeros((4, 3)))


def test_rotation_6d_features_where_axis_angle_is_the_default_name_the_layout_their_size_fits():
    """local_rotations, relative_fk and sampling.bvh_channels take axis_angle unless told: 6D features given
    without the layout are refused with the sizes and the layout they fit (SMALL: 6 rotation joints, 7
    joints: axis_angle and positions take 3 * 7 = 3 + 3 * 6 = 21, rotation_6d 3 + 6 * 6 = 39)."""
    from motion_ddpm_jax import sampling

    six = np.zeros((2, 39))
    with pytest.raises(ValueError, match=r"needs 21 .*; 39 is the size of rotation_6d features on it"):
        representation.local_rotations(six, SMALL)
    with pytest.raises(ValueError, match=r"39 is the size of rotation_6d features on it"):
        sampling.bvh_channels(six, SMALL)
    with pytest.raises(ValueError, match=r"needs 39 .*; 21 is the size of positions or axis_angle features"):
        representation.relative_fk(np.zeros((2, 21)), SMALL, "rotation_6d")
    with pytest.raises(ValueError, match=r"needs 39 \(root translation delta 3 \+ 6 per rotation joint\)$"):
        representation.local_rotations(np.zeros((2, 40)), SMALL, "rotation_6d")  # (fits none: no hint)


def yawing_root(degrees):
    """Local rotations [T, J, 3, 3] of SMALL whose root turns about the vertical axis by `degrees` [T] and
    whose other joints hold still, and a still root translation."""
    rotvecs = np.zeros((len(degrees), len(SMALL.rotation_joints), 3))
    rotvecs[:, list(SMALL.rotation_joints).index(SMALL.root), 1] = np.radians(degrees)
    return local_rotations_of(rotvecs, SMALL), np.zeros((len(degrees), 3))


def test_a_root_yawing_through_a_half_turn_is_continuous_in_rotation_6d_and_jumps_in_axis_angle():
    """The motivating case: a root turning 170 -> 190 degrees in 0.5 degree steps. Axis-angle keeps the
    angle in [0, pi], so it flips from (0, ~pi, 0) to (0, ~-pi, 0): a jump of ~2 pi in one frame, and
    recordings at 179 and 181 degrees 6.25 apart. The 6D columns move by 2 sin(step / 2) per frame."""
    step = 0.5
    local, root = yawing_root(np.arange(170.0, 190.0 + step, step))
    root_slot = list(SMALL.rotation_joints).index(SMALL.root)
    with jax.enable_x64(True):
        six = np.asarray(representation.encode_rotation_6d(local, root, SMALL))
        axis_angle = np.asarray(representation.encode_axis_angle(local, root, SMALL))
    six_root = six[:, 3 + 6 * root_slot : 9 + 6 * root_slot]
    aa_root = axis_angle[:, 3 + 3 * root_slot : 6 + 3 * root_slot]
    six_steps = np.linalg.norm(np.diff(six_root, axis=0), axis=1)
    aa_steps = np.linalg.norm(np.diff(aa_root, axis=0), axis=1)
    # Only the first column turns (the second is the yaw axis itself): |change| = 2 sin(step / 2).
    np.testing.assert_allclose(six_steps, 2 * np.sin(np.radians(step) / 2), rtol=1e-9)
    assert aa_steps.max() > 2 * np.pi - 0.1  # (the jump this layout replaces)
    assert beat.half_turn_joints(axis_angle, SMALL) == [SMALL.names[SMALL.root]]
    assert beat.half_turn_joints(axis_angle[:20], SMALL) == []  # (170 -> 179.5 degrees: no jump)

    local, root = yawing_root(np.array([179.0, 181.0]))
    with jax.enable_x64(True):
        pair_six = np.asarray(representation.encode_rotation_6d(local, root, SMALL))
        pair_aa = np.asarray(representation.encode_axis_angle(local, root, SMALL))
    np.testing.assert_allclose(
        np.linalg.norm(np.diff(pair_six, axis=0)), 2 * np.sin(np.radians(1)), rtol=1e-9
    )
    assert np.linalg.norm(np.diff(pair_aa, axis=0)) > 6.2


@pytest.mark.parametrize(
    "six",
    [
        [0, 0, 0, 0, 0, 0],  # an untrained model's zero output
        [0, 0, 0, 0, 1, 0],  # first column zero
        [1, 2, 3, 0, 0, 0],  # second column zero
        [1, 2, 3, 2, 4, 6],  # parallel
        [1, 2, 3, -1, -2, -3],  # antiparallel
        [0, 0, 2, 1e-9, 0, 1],  # nearly parallel
        [1e-30, 0, 0, 1, 1, 1],  # first column below the threshold
    ],
)
def test_degenerate_6d_gives_a_rotation_with_finite_values_and_gradients(six):
    six = jnp.asarray(six, jnp.float32)
    weights = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3)), jnp.float32)
    matrix = np.asarray(representation.rotation_6d_to_matrix(six), np.float64)
    gradient = jax.grad(lambda s: jnp.sum(representation.rotation_6d_to_matrix(s) * weights))(six)
    assert np.isfinite(matrix).all() and np.isfinite(np.asarray(gradient)).all()
    np.testing.assert_allclose(matrix.T @ matrix, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(matrix), 1.0, atol=1e-6)
    a = np.asarray(six[:3], np.float64)
    if np.linalg.norm(a) > 1e-6:  # a usable first column is kept, whatever the second
        np.testing.assert_allclose(matrix[:, 0], a / np.linalg.norm(a), atol=1e-6)
    else:  # else the x axis, as documented
        np.testing.assert_allclose(matrix[:, 0], [1, 0, 0], atol=0)
    if not np.asarray(six).any():
        np.testing.assert_allclose(matrix, np.eye(3), atol=0)


@pytest.mark.parametrize("scale", [1.0, 100.0, 1000.0])
def test_nearly_parallel_6d_of_any_size_gives_a_rotation_in_float32(scale):
    """b along a but for 1e-7, and up to 1000 times longer (a diverging model's output): one projection
    in float32 leaves b's rounding error, |b| eps, above the 1e-6 threshold, and its normalised direction
    was the second column, not orthogonal to the first. Checked as a rotation should be, in float64 numpy:
    orthonormal, determinant 1, its first column a / |a|."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(500, 3))
    b = scale * a * rng.uniform(0.5, 2, size=(500, 1)) + 1e-7 * rng.normal(size=(500, 3))
    six = jnp.asarray(np.concatenate([a, b], axis=1), jnp.float32)
    m = np.asarray(representation.rotation_6d_to_matrix(six), np.float64)
    eye = np.broadcast_to(np.eye(3), m.shape)
    np.testing.assert_allclose(np.einsum("nji,njk->nik", m, m), eye, atol=2e-6)  # (was 1 apart)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=2e-6)
    first = np.asarray(six, np.float64)[:, :3]
    np.testing.assert_allclose(m[:, :, 0], first / np.linalg.norm(first, axis=1, keepdims=True), atol=1e-6)


def test_rotation_6d_and_axis_angle_give_the_same_positions_and_fk_loss_as_float64_numpy_fk():
    rotvecs, root = random_motion(SMALL, 12, seed=3)
    other, _ = random_motion(SMALL, 12, seed=4)
    local = local_rotations_of(rotvecs, SMALL)
    expected = numpy_fk(rotvecs, root, SMALL) - root[:1]  # decoding integrates the deltas from the origin
    with jax.enable_x64(True):
        six = representation.encode_rotation_6d(local, root, SMALL)
        axis_angle = representation.encode_axis_angle(local, root, SMALL)
        assert six.shape == (12, representation.feature_size(SMALL, "rotation_6d")) == (12, 3 + 6 * 6)
        from_six = np.asarray(representation.decode(six, SMALL, "rotation_6d"))
        from_aa = np.asarray(representation.decode(axis_angle, SMALL, "axis_angle"))
        # The FK position loss of the rotation_6d geometry: root-relative positions' mean squared error.
        target = representation.encode_rotation_6d(local_rotations_of(other, SMALL), root, SMALL)
        mean, std = jnp.zeros(six.shape[-1]), jnp.ones(six.shape[-1])
        geometry = losses.Geometry(mean=mean, std=std, skeleton=SMALL, representation="rotation_6d")
        loss = float(losses.geometric_loss(six[None], target[None], jnp.ones((1, 12), bool), geometry))
        # A model's zero output (every 6D column zero): a finite loss with a finite gradient.
        grad = jax.grad(lambda x: losses.geometric_loss(x, target[None], jnp.ones((1, 12), bool), geometry))(
            jnp.zeros_like(six[None])
        )
    np.testing.assert_allclose(from_six, expected, atol=1e-9)
    np.testing.assert_allclose(from_aa, expected, atol=1e-9)
    relative = [
        p - p[:, SMALL.root : SMALL.root + 1] for p in (numpy_fk(r, root, SMALL) for r in (rotvecs, other))
    ]
    # (the loss terms reduce in float32)
    np.testing.assert_allclose(loss, np.mean(np.square(relative[0] - relative[1])), rtol=1e-6)
    assert np.isfinite(np.asarray(grad)).all()


FRACTIONS = {"val_fraction": 0.0, "test_fraction": 0.0}


def turning_raw(root, recordings=3):
    """Raw BEAT-like recordings (test_beat's skeleton and words); the first one's root turns a full turn
    about the vertical axis over its 8 s, passing the half turn where axis-angle jumps."""
    for r in range(recordings):
        speaker = root / f"{r + 1}"
        speaker.mkdir(parents=True)
        stem = f"{r + 1}_spk{r}_0_{r + 1}_{r + 1}"
        angles, trajectory = angles_and_root(r)
        if r == 0:
            angles[:, 0] = 0.0
            angles[:, 0, 2] = np.round(np.linspace(0.0, 360.0, len(angles)), 4)  # Hips ZXY: Y, the yaw
        (speaker / f"{stem}.bvh").write_text(bvh_text(angles, trajectory))
        (speaker / f"{stem}.TextGrid").write_text(textgrid_text(WORDS, SECONDS))


def test_raw_beat_prepared_as_rotation_6d_trains_with_the_fk_loss_and_samples_bvh_files(tmp_path):
    """The whole path: prepare (axis_angle warns of the half turn and is refused by a rotation_6d config;
    rotation_6d does not warn), train a few steps with the geometric loss through FK of the decoded
    rotations, sample BVH files that read back as the sampled positions."""
    from motion_ddpm_jax import sampling, train

    raw = tmp_path / "raw"
    turning_raw(raw)
    said = []
    beat.prepare_beat(
        raw, tmp_path / "aa", beat.PrepareOptions(representation="axis_angle", **FRACTIONS), log=said.append
    )
    (warning,) = [line for line in said if "jump by more than pi" in line]
    assert "1 of 3 recordings" in warning and "(1 joint(s) in all: Hips;" in warning
    assert "--config.data.representation=rotation_6d" in warning
    with pytest.raises(
        beat.OccupiedFolderError, match="data.representation 'axis_angle' \\(the config: 'rotation_6d'\\)"
    ):
        beat._check_prepared_options(
            tmp_path / "aa", beat.PrepareOptions(representation="rotation_6d", **FRACTIONS)
        )

    said.clear()
    options = beat.PrepareOptions(representation="rotation_6d", **FRACTIONS)
    dataset = beat.prepare_beat(raw, tmp_path / "six", options, log=said.append)
    assert not [line for line in said if line.startswith("warning:")]
    assert dataset.feature_size == 3 + 6 * sum(1 for joint in JOINTS if joint[3])
    # The turning root's 6D moves by a small step per frame (60 fps: 0.75 degrees of yaw, 0.013 rad).
    clips = dataset.split("train")
    turning = [m for clip_id, m in zip(clips.ids, clips.motions, strict=True) if clip_id.startswith("1_")]
    assert turning and max(float(np.abs(np.diff(m[:, 3:9], axis=0)).max()) for m in turning) < 0.02

    config = base_config()
    config.data.source, config.data.raw_root, config.data.root = "beat", str(raw), str(tmp_path / "six")
    config.data.representation, config.data.max_motion_length = "rotation_6d", 16
    config.data.val_fraction = config.data.test_fraction = 0.0
    m = config.model
    m.latent_dim, m.num_layers, m.ff_size, m.num_heads = 16, 1, 32, 2
    m.text_latent_dim, m.text_num_layers, m.text_num_heads, m.text_ff_size = 16, 1, 2, 32
    config.loss.use_geometric_loss = True
    config.diffusion.steps, config.diffusion.schedule = 10, "cosine"
    config.train.batch_size, config.train.num_steps, config.train.log_every = 4, 2, 1
    config.train.save_every_steps = config.train.sample_every = 0
    lines = []
    train.run(config, tmp_path / "run", log=lines.append)
    assert any("loss_geom" in line for line in lines)
    config.sample.update({"text": "wave now", "num_frames": 8, "steps": 3, "render": False})
    config.sample.output_dir = str(tmp_path / "out")
    summary = sampling.run(config, tmp_path / "run", log=lambda *_: None)
    out = Path(summary["output_dir"])
    (path,) = sorted(out.glob("*.bvh"))
    motion = bvh.load_bvh(path)
    positions = np.load(out / f"{path.stem}_positions.npy")
    assert positions.shape == (8, len(JOINTS), 3)
    np.testing.assert_allclose(motion.positions(), positions, atol=2e-3)
    index = json.loads((out / "index.json").read_text())
    assert index["samples"][f"{path.stem}.npy"]["files"]["bvh"] == path.name


def test_preparing_rotation_6d_into_an_axis_angle_cache_names_both_values_and_the_way_on(tmp_path):
    """configs/beat_rot.py now prepares rotation_6d; `--mode prepare` pointed at the axis_angle cache it
    named before is refused with both values (as training's refusal gives them) and the flags that keep the
    old layout; with changed inputs as well, setting the options alone would not do, and is not advised."""
    raw, out = tmp_path / "raw", tmp_path / "aa"
    turning_raw(raw, recordings=1)
    beat.prepare_beat(
        raw, out, beat.PrepareOptions(representation="axis_angle", **FRACTIONS), log=lambda *_: None
    )
    six = beat.PrepareOptions(representation="rotation_6d", **FRACTIONS)
    with pytest.raises(beat.OccupiedFolderError) as refused:
        beat.prepare_beat(raw, out, six, log=lambda *_: None)
    said = str(refused.value)
    assert "options data.representation differ" in said
    assert "data.representation 'axis_angle' (the config: 'rotation_6d')" in said
    assert "Set those data.* fields to the prepared values" in said
    (recording,) = raw.glob("*/*.bvh")
    recording.write_text(recording.read_text() + "\n")  # other bytes: an input changed too
    with pytest.raises(beat.OccupiedFolderError) as refused:
        beat.prepare_beat(raw, out, six, log=lambda *_: None)
    said = str(refused.value)
    assert "data.representation 'axis_angle' (the config: 'rotation_6d')" in said
    assert "changed since it was prepared" in said and "Set those data.* fields" not in said
