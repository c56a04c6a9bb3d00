"""--mode eval on HumanML3D's 263-feature layout: its features decode to the 22 T2M joints (real and
generated alike) and the position metrics of the report equal closed forms of figures whose motion is known
exactly (a rigid body walking straight ahead, one turning in place), encoded the way HumanML3D's
process_file encodes positions (test_humanml3d.encode); the 251-feature KIT-ML layout gets a note instead.

The references never call the code under test: closed forms in float64 numpy, the T2M joint names read by
eye, and (end to end with the real sampler) the float64 decoder of test_humanml3d with the metrics written
out from their definitions.
"""

import json

import jax
import numpy as np
import pytest
from test_evaluate import FakeSampling, install
from test_humanml3d import REST, encode, reference_recover_from_ric

from motion_ddpm_jax import evaluate, humanml3d
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

FPS = 20.0
FRAMES = 32  # features per evaluated clip: every resampled diversity frame is a frame (31 = 31 * 1)
WALK, TURN = "a person walks forward", "a person turns around"
SPEED, RATE = 1.2, 1.5  # the real val clips: walking at 1.2 m/s, turning at 1.5 rad/s
GENERATED = {WALK: {"speed": 0.9, "scale": 1.1}, TURN: {"turn": 2.0, "scale": 1.1}}  # the fake's clips
HANDS, FEET = [20, 21], [7, 8, 10, 11]  # left/right_wrist; left/right_ankle, left/right_foot


def figure(frames, speed=0.0, turn=0.0, scale=1.0, heading=0.4, start=(0.7, 0.0, -1.3)):
    """Global positions [frames, 22, 3] (metres, FPS) of the rest pose REST scaled by `scale` about the
    pelvis, walking straight ahead at `speed` m/s or turning about the vertical through the pelvis at
    `turn` rad/s; it faces `heading` (about +y, from +z) at frame 0."""
    t = np.arange(frames) / FPS
    body = scale * (REST - REST[0]) + REST[0] * np.array([0.0, 1.0, 0.0])
    yaw = (heading + turn * t)[:, None]
    c, s = np.cos(yaw), np.sin(yaw)
    x, y, z = body[None, :, 0], body[None, :, 1], body[None, :, 2]
    world = np.stack([c * x + s * z, np.broadcast_to(y, (frames, len(body))), -s * x + c * z], -1)
    forward = np.array([np.sin(heading), 0.0, np.cos(heading)])
    return world + np.asarray(start) + speed * t[:, None, None] * forward


def features_of(positions, seed=0):
    """HumanML3D's 263 features [T - 1, 263] (float32) of global positions [T, 22, 3]."""
    features, _ = encode(positions, np.random.default_rng(seed))
    return features.astype(np.float32)


def radii(scale=1.0):
    """Each joint's distance [22] from the vertical through the pelvis: the radius it turns on."""
    return scale * np.hypot(REST[:, 0] - REST[0, 0], REST[:, 2] - REST[0, 2])


def chord(rate, order):
    """|k-th difference| / radius of points turning at `rate` rad/s, sampled at FPS, per second^k:
    |e^(i theta) - 1|^k FPS^k with theta = rate / FPS."""
    return (2.0 * np.sin(rate / FPS / 2.0)) ** order * FPS**order


def expected_position_metrics(speed, rate, scale):
    """Closed forms of the metrics of two clips of FRAMES frames: a walk at `speed` and a turn in place
    at `rate`, both of the rest pose scaled by `scale`."""
    r = radii(scale)
    joints = len(r)
    return {
        # the walk's acceleration and jerk are 0; the turn's are r_j chord(rate, k), over equal frame counts
        "jitter/acceleration": r.sum() * chord(rate, 2) / (2 * joints),
        "jitter/jerk": r.sum() * chord(rate, 3) / (2 * joints),
        "speed/hands_mean": (speed + r[HANDS].mean() * chord(rate, 1)) / 2,
        "speed/hands_p95": max(speed, r[HANDS].max() * chord(rate, 1)),  # both wrists on one radius
        "speed/feet_mean": (speed + r[FEET].mean() * chord(rate, 1)) / 2,
        # a root-relative pose turned by phi is |P - R(phi) P|^2 = sum_j r_j^2 |1 - e^(i phi)|^2 away
        "diversity": np.sqrt(
            np.mean(4 * np.sin(rate * np.arange(FRAMES) / FPS / 2) ** 2) * np.square(r).sum()
        ),
    }


def write_humanml3d(root, clips, feature_size=humanml3d.FEATURES):
    """A HumanML3D-layout folder: clips {split: [(id, caption, features [T, D])]}, Mean.npy / Std.npy of
    the training clips."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for split, items in clips.items():
        (root / f"{split}.txt").write_text("".join(f"{clip_id}\n" for clip_id, _, _ in items))
        for clip_id, caption, features in items:
            np.save(root / "new_joint_vecs" / f"{clip_id}.npy", features[:, :feature_size])
            (root / "texts" / f"{clip_id}.txt").write_text(f"{caption}#tokens#0.0#0.0\n")
    frames = np.concatenate([f[:, :feature_size] for _, _, f in clips["train"]]).astype(np.float64)
    np.save(root / "Mean.npy", frames.mean(0).astype(np.float32))
    np.save(root / "Std.npy", (frames.std(0) + 1e-3).astype(np.float32))
    return root


def clip_set(seed=0):
    """{split: [(id, caption, features)]}: walks and turns of the rest pose; the val split is the walk at
    SPEED and the turn at RATE, FRAMES frames each."""
    train = [
        (f"00000{i}", caption, features_of(figure(41, **motion, heading=i), seed + i))
        for i, (caption, motion) in enumerate(
            [(WALK, {"speed": 1.0}), (TURN, {"turn": 1.0}), (WALK, {"speed": 1.4}), (TURN, {"turn": 2.0})]
        )
    ]
    val = [
        ("000010", WALK, features_of(figure(FRAMES + 1, speed=SPEED), seed + 10)),
        ("000011", TURN, features_of(figure(FRAMES + 1, turn=RATE, heading=-2.0), seed + 11)),
    ]
    return {"train": train, "val": val, "test": val[:1]}


@pytest.fixture(scope="module")
def humanml3d_dataset(tmp_path_factory):
    from motion_ddpm_jax.data import motion_text

    root = write_humanml3d(tmp_path_factory.mktemp("data") / "HumanML3D", clip_set())
    return motion_text.open_dataset(root, fps=FPS, std_floor=1e-6)


def humanml3d_config(dataset, tmp_path):
    config = base_config()
    config.data.source, config.data.root = "prepared", str(dataset.root)
    config.data.representation, config.data.fps, config.data.std_floor = "humanml3d", FPS, 1e-6
    config.eval.autoencoder_dir = str(tmp_path / "fgd")  # none there: FGD skipped
    config.eval.num_clips = 0
    return config


class FakeHumanML3DSampling(FakeSampling):
    """Stands in for sampling on HumanML3D data: 'generates' for each caption the GENERATED figure (or the
    real clip, `perfect`), and its positions as `sampling.generate` gives them for this layout:
    recover_from_ric of the features, zero past the length (None for another feature size)."""

    def __init__(self, dataset, perfect=False):
        super().__init__(dataset, max_motion_length=196)
        if not perfect:
            headings = {WALK: 1.0, TURN: 2.5}
            self.by_caption = {
                caption: features_of(figure(FRAMES + 1, **motion, heading=headings[caption]), 20)
                for caption, motion in GENERATED.items()
            }

    def load_model(self, workdir, step=None, use_ema=True):
        loaded = super().load_model(workdir, step, use_ema)
        loaded.representation, loaded.fps, loaded.skeleton = "humanml3d", FPS, None
        return loaded

    def generate(self, loaded, captions, num_frames, **options):
        self.calls.append(("generate", list(captions), list(num_frames), options))
        motion, lengths = evaluate._pad(
            [self.by_caption[c][:n] for c, n in zip(captions, num_frames, strict=True)]
        )
        positions = None
        if motion.shape[-1] == humanml3d.FEATURES:
            valid = np.arange(motion.shape[1])[None, :] < lengths[:, None]
            decoded = np.asarray(jax.jit(humanml3d.recover_from_ric)(motion))
            positions = np.where(valid[..., None, None], decoded, 0.0).astype(np.float32)
        return {"motion": motion, "positions": positions, "lengths": lengths, "captions": list(captions)}


# ------------------------------------------------------------------------------------------ the joints
def test_the_t2m_tree_picks_its_wrists_as_hands_and_its_ankles_and_feet_as_feet():
    """The T2M names read by eye: 'left_wrist' / 'right_wrist' end the arms (SMPL's hands are not among
    the 22), HumanML3D's own foot contacts are the ankles and feet; no other name (hips, knees, collars,
    shoulders, elbows) is taken for either."""
    tree = evaluate.joint_tree(None, "humanml3d", 263)
    assert tree.names == humanml3d.NAMES and tree.parents == humanml3d.PARENTS and tree.root == 0
    groups = evaluate.end_effectors(tree.names, tree.parents)
    assert sorted(groups) == ["feet", "hands"]
    assert [tree.names[j] for j in groups["hands"]] == ["left_wrist", "right_wrist"]
    assert [tree.names[j] for j in groups["feet"]] == ["left_ankle", "right_ankle", "left_foot", "right_foot"]
    assert groups["hands"].tolist() == HANDS and groups["feet"].tolist() == FEET


def test_only_the_263_feature_layout_and_skeletons_have_a_joint_tree():
    skeleton = Skeleton(("root", "arm", "hand"), np.array([-1, 0, 1]), np.ones((3, 3), np.float32))
    assert evaluate.joint_tree(None, "humanml3d", 251) is None  # KIT-ML: no tree of its 21 joints here
    assert evaluate.joint_tree(None, "positions", 9) is None
    assert evaluate.joint_tree(skeleton, "positions", 9) == evaluate.JointTree(skeleton.names, (-1, 0, 1))
    assert evaluate.decode_positions(np.zeros((1, 4, 251), np.float32), None, "humanml3d") is None


def test_the_report_names_metres_for_humanml3d_centimetres_for_beat_else_the_datas_own_unit():
    toy = Skeleton(("root", "arm", "hand"), np.array([-1, 0, 1]), np.ones((3, 3), np.float32))
    assert evaluate.position_unit(None, "humanml3d", 263) == "m"
    assert evaluate.position_unit(beat_skeleton(), "positions", 264) == "cm"  # BEAT's BVH and the demo
    assert evaluate.position_unit(beat_skeleton(), "axis_angle", 228) == "cm"
    assert (
        evaluate.position_unit(toy, "positions", 9) is None
        and evaluate.position_unit(None, "humanml3d", 251) is None
    )
    assert "jitter/acceleration in m/s^2" in evaluate.units_text("m")
    assert "speeds in cm/s" in evaluate.units_text("cm") and "the data's own unit" in evaluate.units_text(
        None
    )


def test_bone_error_of_a_joint_tree_is_relative_to_the_reference_it_is_given():
    """A chain of three joints whose bones are 2 and 3 long against a reference of 2 and 2.5: errors 0 and
    0.2; a JointTree has no offsets, so a missing reference is an error."""
    tree = evaluate.JointTree(("a", "b", "c"), (-1, 0, 1))
    pose = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    positions = np.broadcast_to(pose, (1, 5, 3, 3))
    error = evaluate.bone_length_error(positions, [5], tree, reference=[2.0, 2.5])
    assert error["per_bone"] == pytest.approx({"a->b": 0.0, "b->c": 0.2})
    assert error["worst_bone"] == "b->c" and error["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no rest bone lengths"):
        evaluate.bone_length_error(positions, [5], tree)


def test_decode_positions_of_the_layout_matches_the_float64_decoder():
    features = np.random.default_rng(3).normal(size=(2, 9, 263))
    features[..., 0] *= 0.3
    positions = evaluate.decode_positions(features.astype(np.float32), None, "humanml3d")
    assert positions.shape == (2, 9, 22, 3)
    np.testing.assert_allclose(positions, reference_recover_from_ric(features), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ --mode eval
def test_eval_of_humanml3d_reports_the_known_motion_of_real_and_generated_clips(
    humanml3d_dataset, tmp_path, monkeypatch
):
    """The real clips (a walk at 1.2 m/s, a turn at 1.5 rad/s) and the fake's (the body 1.1 times as
    large, walking at 0.9 m/s and turning at 2 rad/s): jitter, hand and foot speeds and diversity equal
    their closed forms in metres; bone errors are 0 and 0.1 against the training clips' bones (the rest
    pose's); the report says metres."""
    config = humanml3d_config(humanml3d_dataset, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(humanml3d_dataset))
    messages = []
    record = evaluate.run(config, tmp_path / "run", log=messages.append)
    metrics = record["metrics"]
    assert record["position_unit"] == "m" and "metres (m)" in record["units"]
    assert "m/s^2" in record["units"] and any(
        m.startswith("units: positions and diversity in metres") for m in messages
    )
    assert json.loads((tmp_path / "run" / "eval" / "metrics_step7.json").read_text())["position_unit"] == "m"

    real = expected_position_metrics(SPEED, RATE, 1.0)
    walk, turn = GENERATED[WALK], GENERATED[TURN]
    generated = expected_position_metrics(walk["speed"], turn["turn"], walk["scale"])
    tolerance = {"jitter/jerk": 2e-2, "jitter/acceleration": 2e-3}  # float32 positions, differenced
    for side, expected in (("real", real), ("generated", generated)):
        for name, value in expected.items():
            got = metrics[name][side]
            assert got == pytest.approx(value, rel=1e-3, abs=tolerance.get(name, 1e-4)), (side, name)
    assert metrics["bone_error/mean"]["real"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["bone_error/worst"]["real"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["bone_error/mean"]["generated"] == pytest.approx(0.1, abs=1e-5)
    assert metrics["bone_error/worst"]["generated"] == pytest.approx(0.1, abs=1e-5)
    assert any(
        n.startswith("bone_error: relative to the mean bone lengths of the 4 training")
        for n in record["notes"]
    )
    assert not any("position metrics" in n and "skipped" in n for n in record["notes"])
    # Position summaries (4 x 3 x 23 numbers), not the 4 x 263 raw ones, fitted to 2 clips a side: noted
    assert any(n.startswith("frechet/features: Gaussians in 276 dimensions") for n in record["notes"])


def test_eval_of_a_perfect_humanml3d_generator_scores_as_the_real_clips(
    humanml3d_dataset, tmp_path, monkeypatch
):
    config = humanml3d_config(humanml3d_dataset, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(humanml3d_dataset, perfect=True))
    metrics = evaluate.run(config, tmp_path / "run", log=lambda _: None)["metrics"]
    for name in ("jitter/acceleration", "jitter/jerk", "speed/hands_mean", "speed/feet_p95", "diversity"):
        assert metrics[name]["generated"] == pytest.approx(metrics[name]["real"], rel=1e-6), name
    assert metrics["frechet/features"]["generated"] == pytest.approx(0.0, abs=1e-6)


def test_eval_of_kit_mls_251_features_has_no_position_metrics_and_says_why(tmp_path, monkeypatch):
    """The same layout for KIT-ML's 21 joints (251 features): no tree of it here, so no positions on
    either side; the metrics of the raw features are still reported, and a note names the layout."""
    from motion_ddpm_jax.data import motion_text

    root = write_humanml3d(tmp_path / "KIT-ML", clip_set(), feature_size=251)
    dataset = motion_text.open_dataset(root, fps=FPS, std_floor=1e-6)
    assert dataset.feature_size == 251
    config = humanml3d_config(dataset, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(dataset, perfect=True))
    fitted = []  # the Fréchet distances' features, not fitted: 1004 dimensions take seconds to fit
    monkeypatch.setattr(evaluate, "frechet_distance_of", lambda a, b: fitted.append((a, b)) or 0.0)
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    metrics = record["metrics"]
    assert not any(name.startswith(("jitter", "bone_error", "speed", "diversity")) for name in metrics)
    real, generated = fitted[1]  # the per-channel statistics of the raw features
    assert real.shape == (2, 4 * 251) and np.array_equal(real, generated)
    assert record["position_unit"] is None and record["units"].startswith("no joint positions")
    (note,) = [n for n in record["notes"] if "position metrics" in n]
    assert "251 features (KIT-ML's layout" in note and "skipped" in note


# ---------------------------------------------------------------------------- with the real sampler
def float64_metrics(positions, lengths):
    """jitter, hand speed and bone lengths of positions [N, T, 22, 3] from their definitions (float64)."""
    out = {"acceleration": [], "jerk": [], "hands": [], "bones": []}
    children = np.arange(1, 22)
    for clip, n in zip(positions, lengths, strict=True):
        clip = np.asarray(clip[:n], np.float64)
        out["acceleration"].append(np.linalg.norm(np.diff(clip, 2, axis=0), axis=-1).ravel() * FPS**2)
        out["jerk"].append(np.linalg.norm(np.diff(clip, 3, axis=0), axis=-1).ravel() * FPS**3)
        out["hands"].append(np.linalg.norm(np.diff(clip[:, HANDS], axis=0), axis=-1).ravel() * FPS)
        parents = np.array(humanml3d.PARENTS)[children]
        out["bones"].append(np.linalg.norm(clip[:, children] - clip[:, parents], axis=-1))
    return {name: np.concatenate(values) for name, values in out.items()}


def write_checkpoint(workdir, dataset, captions):
    """A checkpoint of an untrained tiny model of HumanML3D's 263 features, trained (so its metadata says)
    on `dataset`: its statistics, 20 fps."""
    from test_sampling import tiny_config

    from motion_ddpm_jax import checkpoint, text
    from motion_ddpm_jax import model as model_lib

    config = tiny_config()
    config.data.source, config.data.root, config.data.representation = (
        "prepared",
        str(dataset.root),
        "humanml3d",
    )
    config.data.fps, config.data.std_floor = FPS, 1e-6
    tokenizer = text.Tokenizer.build(captions)
    model = model_lib.model_from_config(config, input_feats=263, text_vocab_size=tokenizer.vocab_size)
    rng = np.random.default_rng(3)  # weights drawn in numpy: nothing compiled for the initialisation
    shapes = model_lib.param_shapes(model)
    ema = jax.tree.map(lambda a: rng.normal(0, 0.2, a.shape).astype(a.dtype), shapes)
    metadata = {
        "config": config.to_dict(),
        "total_steps": 3,
        "steps_per_epoch": 1,
        "tokenizer": tokenizer.to_dict(),
        "mean": np.asarray(dataset.mean).tolist(),
        "std": np.asarray(dataset.std).tolist(),
        "skeleton": None,
        "dataset": {},
        "data_root": str(dataset.root),
        "representation": "humanml3d",
        "feature_size": 263,
        "fps": FPS,
    }
    ckpt = checkpoint.Checkpointer(workdir)
    ckpt.save(3, ema, ema, {"step": np.int32(3)}, metadata)
    ckpt.close()
    return config


def test_eval_with_the_real_sampler_decodes_both_sides_as_the_float64_decoder(
    humanml3d_dataset, tmp_path, monkeypatch
):
    """An untrained tiny checkpoint sampled by sampling.generate (3 DDIM steps): the generated column's
    jitter, hand speed and bone error are those of its motion decoded by the float64 reference decoder,
    the real column's those of the real clips (cut at the model's 16 frames), against the mean bones of
    the training clips, likewise decoded."""
    from motion_ddpm_jax import sampling

    config = write_checkpoint(tmp_path / "run", humanml3d_dataset, [WALK, TURN])
    config.eval.autoencoder_dir, config.eval.num_clips = str(tmp_path / "fgd"), 0
    config.sample.steps = 3
    generated = []
    real_generate = sampling.generate
    monkeypatch.setattr(
        sampling, "generate", lambda *a, **k: generated.append(real_generate(*a, **k)) or generated[-1]
    )
    metrics = evaluate.run(config, tmp_path / "run", log=lambda _: None)["metrics"]

    (out,) = generated
    frames = int(config.data.max_motion_length)
    val = humanml3d_dataset.split("val")
    real_features = np.stack([m[:frames] for m in val.motions])
    lengths = np.full(len(val.motions), frames)
    np.testing.assert_array_equal(out["lengths"], lengths)
    train = np.stack([m[:frames] for m in humanml3d_dataset.split("train").motions])  # all 40 frames long
    reference = float64_metrics(reference_recover_from_ric(train), [frames] * len(train))["bones"].mean(0)
    for side, features in (("real", real_features), ("generated", np.asarray(out["motion"], np.float64))):
        expected = float64_metrics(reference_recover_from_ric(features), lengths)
        bone_error = np.abs(expected["bones"] / reference - 1).mean(0)
        assert metrics["jitter/acceleration"][side] == pytest.approx(
            expected["acceleration"].mean(), rel=1e-3
        )
        assert metrics["jitter/jerk"][side] == pytest.approx(expected["jerk"].mean(), rel=1e-3)
        assert metrics["speed/hands_mean"][side] == pytest.approx(expected["hands"].mean(), rel=1e-4)
        assert metrics["bone_error/mean"][side] == pytest.approx(bone_error.mean(), rel=1e-3, abs=1e-5)
        assert metrics["bone_error/worst"][side] == pytest.approx(bone_error.max(), rel=1e-3, abs=1e-5)
    assert metrics["bone_error/mean"]["generated"] > 0.01  # an untrained model keeps no bone lengths
