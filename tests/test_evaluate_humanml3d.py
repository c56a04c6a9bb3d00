"""--mode eval on the HumanML3D layout: HumanML3D's 263 features decode to the 22 T2M joints and KIT-ML's 251
to its 21 MMM joints (real and generated alike), and the position metrics of the report equal closed forms
of figures whose motion is known exactly (a rigid body walking straight ahead, one turning in place),
encoded the way the T2M code's process_file encodes positions (test_humanml3d.encode, with HumanML3D's or
KIT-ML's settings); the humanml3d representation of another size gets a note instead.

The references never call the code under test: closed forms in float64 numpy, the joint names read by
eye, KIT-ML's tree from the T2M code's kit_kinematic_chain (test_humanml3d.KIT_CHAIN), and (end to end with
the real sampler) the float64 decoder of test_humanml3d with the metrics written out from their
definitions.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest
from test_evaluate import FakeSampling, install
from test_humanml3d import (
    KIT_CHAIN,
    KIT_FIGURE,
    T2M_FIGURE,
    Figure,
    kit_parents_from_chain,
    reference_recover_from_ric,
)

from motion_ddpm_jax import evaluate, humanml3d, metrics
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

FPS = 20.0
FRAMES = 32  # features per evaluated clip: every resampled diversity frame is a frame (31 = 31 * 1)
WALK, TURN = "a person walks forward", "a person turns around"
SPEED, RATE = 1.2, 1.5  # the real val clips: walking at 1.2 m/s, turning at 1.5 rad/s
GENERATED = {WALK: {"speed": 0.9, "scale": 1.1}, TURN: {"turn": 2.0, "scale": 1.1}}  # the fake's clips
HANDS, FEET = [20, 21], [7, 8, 10, 11]  # left/right_wrist; left/right_ankle, left/right_foot


@dataclasses.dataclass(frozen=True)
class Kind:
    """A dataset of the layout: its figure (rest pose, unit, fps, encoder settings), feature count, and
    the joints its names make hands and feet (read by eye)."""

    figure: Figure
    size: int
    hands: list
    feet: list

    @property
    def fps(self) -> float:
        return self.figure.fps


T2M_KIND = Kind(T2M_FIGURE, 263, HANDS, FEET)
# KIT-ML: left/right_wrist (MMM LW, RW); left_ankle, left_midfoot, left_foot (LA, LMrot, LF), and the right's
KIT_KIND = Kind(KIT_FIGURE, 251, [7, 10], [13, 14, 15, 18, 19, 20])


def figure(frames, speed=0.0, turn=0.0, scale=1.0, heading=0.4, start=(0.7, 0.0, -1.3), kind=T2M_KIND):
    """Global positions [frames, J, 3] (the kind's unit, at its fps) of its rest pose scaled by `scale`
    about the pelvis, walking straight ahead at `speed` m/s or turning about the vertical through the
    pelvis at `turn` rad/s; it faces `heading` (about +y, from +z) at frame 0; `start` in metres."""
    rest, unit = kind.figure.rest, kind.figure.scale
    t = np.arange(frames) / kind.fps
    body = scale * (rest - rest[0]) + rest[0] * np.array([0.0, 1.0, 0.0])
    yaw = (heading + turn * t)[:, None]
    c, s = np.cos(yaw), np.sin(yaw)
    x, y, z = body[None, :, 0], body[None, :, 1], body[None, :, 2]
    world = np.stack([c * x + s * z, np.broadcast_to(y, (frames, len(body))), -s * x + c * z], -1)
    forward = np.array([np.sin(heading), 0.0, np.cos(heading)])
    return world + unit * np.asarray(start) + unit * speed * t[:, None, None] * forward


def features_of(positions, seed=0, kind=T2M_KIND):
    """The layout's features [T - 1, D] (float32) of global positions [T, J, 3]."""
    features, _ = kind.figure.encode(positions, np.random.default_rng(seed))
    assert features.shape[-1] == kind.size
    return features.astype(np.float32)


def radii(scale=1.0, kind=T2M_KIND):
    """Each joint's distance [J] from the vertical through the pelvis: the radius it turns on."""
    rest = kind.figure.rest
    return scale * np.hypot(rest[:, 0] - rest[0, 0], rest[:, 2] - rest[0, 2])


def chord(rate, order, fps=FPS):
    """|k-th difference| / radius of points turning at `rate` rad/s, sampled at fps, per second^k:
    |e^(i theta) - 1|^k fps^k with theta = rate / fps."""
    return (2.0 * np.sin(rate / fps / 2.0)) ** order * fps**order


def expected_position_metrics(speed, rate, scale, kind=T2M_KIND):
    """Closed forms of the metrics of two clips of FRAMES frames: a walk at `speed` m/s and a turn in
    place at `rate`, both of the kind's rest pose scaled by `scale`, in the kind's unit."""
    r, fps = radii(scale, kind), kind.fps
    speed = speed * kind.figure.scale
    joints = len(r)
    return {
        # the walk's acceleration and jerk are 0; the turn's are r_j chord(rate, k), over equal frame counts
        "jitter/acceleration": r.sum() * chord(rate, 2, fps) / (2 * joints),
        "jitter/jerk": r.sum() * chord(rate, 3, fps) / (2 * joints),
        "speed/hands_mean": (speed + r[kind.hands].mean() * chord(rate, 1, fps)) / 2,
        "speed/hands_p95": max(speed, r[kind.hands].max() * chord(rate, 1, fps)),  # wrists on one radius
        "speed/feet_mean": (speed + r[kind.feet].mean() * chord(rate, 1, fps)) / 2,
        # a root-relative pose turned by phi is |P - R(phi) P|^2 = sum_j r_j^2 |1 - e^(i phi)|^2 away
        "diversity": np.sqrt(
            np.mean(4 * np.sin(rate * np.arange(FRAMES) / fps / 2) ** 2) * np.square(r).sum()
        ),
    }


def write_humanml3d(root, clips, feature_size=None):
    """A HumanML3D-layout folder: clips {split: [(id, caption, features [T, D])]} (cut to `feature_size`
    features where given), Mean.npy / Std.npy of the training clips."""
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


def clip_set(seed=0, kind=T2M_KIND):
    """{split: [(id, caption, features)]}: walks and turns of the kind's rest pose; the val split is the
    walk at SPEED and the turn at RATE, FRAMES frames each."""
    train = [
        (f"00000{i}", caption, features_of(figure(41, **motion, heading=i, kind=kind), seed + i, kind))
        for i, (caption, motion) in enumerate(
            [(WALK, {"speed": 1.0}), (TURN, {"turn": 1.0}), (WALK, {"speed": 1.4}), (TURN, {"turn": 2.0})]
        )
    ]
    val = [
        ("000010", WALK, features_of(figure(FRAMES + 1, speed=SPEED, kind=kind), seed + 10, kind)),
        (
            "000011",
            TURN,
            features_of(figure(FRAMES + 1, turn=RATE, heading=-2.0, kind=kind), seed + 11, kind),
        ),
    ]
    return {"train": train, "val": val, "test": val[:1]}


@pytest.fixture(scope="module")
def humanml3d_dataset(tmp_path_factory):
    from motion_ddpm_jax.data import motion_text

    root = write_humanml3d(tmp_path_factory.mktemp("data") / "HumanML3D", clip_set())
    return motion_text.open_dataset(root, fps=FPS, std_floor=1e-6)


@pytest.fixture(scope="module")
def kit_dataset(tmp_path_factory):
    from motion_ddpm_jax.data import motion_text

    root = write_humanml3d(tmp_path_factory.mktemp("data") / "KIT-ML", clip_set(kind=KIT_KIND))
    return motion_text.open_dataset(root, fps=KIT_KIND.fps, std_floor=1e-6)


def humanml3d_config(dataset, tmp_path):
    config = base_config()
    config.data.source, config.data.root = "prepared", str(dataset.root)
    config.data.representation, config.data.fps, config.data.std_floor = "humanml3d", dataset.fps, 1e-6
    config.eval.autoencoder_dir = str(tmp_path / "fgd")  # none there: FGD skipped
    config.eval.num_clips = 0
    return config


class FakeHumanML3DSampling(FakeSampling):
    """Stands in for sampling on HumanML3D-layout data: 'generates' for each caption the GENERATED figure
    (or the real clip, `perfect`), and its positions as `sampling.generate` gives them for this layout:
    recover_from_ric of the features, zero past the length (None for a size that is neither layout's)."""

    def __init__(self, dataset, perfect=False, kind=T2M_KIND):
        super().__init__(dataset, max_motion_length=196)
        self.fps = float(dataset.fps)
        if not perfect:
            headings = {WALK: 1.0, TURN: 2.5}
            self.by_caption = {
                caption: features_of(
                    figure(FRAMES + 1, **motion, heading=headings[caption], kind=kind), 20, kind
                )
                for caption, motion in GENERATED.items()
            }

    def load_model(self, workdir, step=None, use_ema=True):
        loaded = super().load_model(workdir, step, use_ema)
        loaded.representation, loaded.fps, loaded.skeleton = "humanml3d", self.fps, None
        return loaded

    def generate(self, loaded, captions, num_frames, **options):
        self.calls.append(("generate", list(captions), list(num_frames), options))
        motion, lengths = evaluate._pad(
            [self.by_caption[c][:n] for c, n in zip(captions, num_frames, strict=True)]
        )
        positions = None
        if motion.shape[-1] in (263, 251):
            valid = np.arange(motion.shape[1])[None, :] < lengths[:, None]
            decoded = np.asarray(jax.jit(humanml3d.recover_from_ric)(motion))
            positions = np.where(valid[..., None, None], decoded, 0.0).astype(np.float32)
        return {"motion": motion, "positions": positions, "lengths": lengths, "captions": list(captions)}


# ------------------------------------------------------------------------------------------ the joints
def test_the_t2m_tree_picks_its_wrists_as_hands_and_its_ankles_and_feet_as_feet():
    """The T2M names read by eye: 'left_wrist' / 'right_wrist' end the arms (SMPL's hands are not among
    the 22), HumanML3D's own foot contacts are the ankles and feet; no other name (hips, knees, collars,
    shoulders, elbows) is taken for either."""
    tree = metrics.joint_tree(None, "humanml3d", 263)
    assert tree.names == humanml3d.NAMES and tree.parents == humanml3d.PARENTS and tree.root == 0
    groups = metrics.end_effectors(tree.names, tree.parents)
    assert sorted(groups) == ["feet", "hands"]
    assert [tree.names[j] for j in groups["hands"]] == ["left_wrist", "right_wrist"]
    assert [tree.names[j] for j in groups["feet"]] == ["left_ankle", "right_ankle", "left_foot", "right_foot"]
    assert groups["hands"].tolist() == HANDS and groups["feet"].tolist() == FEET


def test_the_kit_tree_picks_its_wrists_as_hands_and_its_ankles_midfeet_and_feet_as_feet():
    """KIT-ML's tree is the T2M code's kit_kinematic_chain; its names read by eye: the wrists (MMM LW, RW)
    end the arms, and each leg ends in ankle, midfoot and foot (LA, LMrot, LF: KIT-ML's foot contacts
    are the midfoot and foot joints); the trunk, shoulders, elbows, hips and knees are neither."""
    tree = metrics.joint_tree(None, "humanml3d", 251)
    assert tree == metrics.JointTree(humanml3d.KIT.names, kit_parents_from_chain(KIT_CHAIN, 21))
    assert tree.root == 0 and tree.parents[7] == 6 and tree.parents[15] == 14
    groups = metrics.end_effectors(tree.names, tree.parents)
    assert sorted(groups) == ["feet", "hands"]
    assert [tree.names[j] for j in groups["hands"]] == ["left_wrist", "right_wrist"]
    assert [tree.names[j] for j in groups["feet"]] == [
        "left_ankle", "left_midfoot", "left_foot", "right_ankle", "right_midfoot", "right_foot"
    ]  # fmt: skip
    assert groups["hands"].tolist() == KIT_KIND.hands and groups["feet"].tolist() == KIT_KIND.feet


def test_the_layouts_of_either_size_and_skeletons_have_a_joint_tree():
    skeleton = Skeleton(("root", "arm", "hand"), np.array([-1, 0, 1]), np.ones((3, 3), np.float32))
    assert metrics.joint_tree(None, "humanml3d", 263) == metrics.HUMANML3D_TREE
    assert metrics.joint_tree(None, "humanml3d", 251) == metrics.KIT_TREE
    assert metrics.joint_tree(None, "humanml3d", 262) is None
    assert metrics.joint_tree(None, "positions", 9) is None
    assert metrics.joint_tree(skeleton, "positions", 9) == metrics.JointTree(skeleton.names, (-1, 0, 1))
    assert evaluate.decode_positions(np.zeros((1, 4, 251), np.float32), None, "humanml3d").shape == (
        1,
        4,
        21,
        3,
    )
    assert evaluate.decode_positions(np.zeros((1, 4, 262), np.float32), None, "humanml3d") is None


def test_the_report_names_metres_for_humanml3d_millimetres_for_kit_centimetres_for_beat():
    toy = Skeleton(("root", "arm", "hand"), np.array([-1, 0, 1]), np.ones((3, 3), np.float32))
    assert metrics.position_unit(None, "humanml3d", 263) == "m"
    assert metrics.position_unit(None, "humanml3d", 251) == "mm"
    assert metrics.position_unit(beat_skeleton(), "positions", 264) == "cm"  # BEAT's BVH and the demo
    assert metrics.position_unit(beat_skeleton(), "axis_angle", 228) == "cm"
    assert (
        metrics.position_unit(toy, "positions", 9) is None
        and metrics.position_unit(None, "humanml3d", 262) is None
    )
    assert "jitter/acceleration in m/s^2" in metrics.units_text("m")
    assert "positions and diversity in millimetres (mm); speeds in mm/s" in metrics.units_text("mm")
    assert "speeds in cm/s" in metrics.units_text("cm") and "the data's own unit" in metrics.units_text(None)


def test_bone_error_of_a_joint_tree_is_relative_to_the_reference_it_is_given():
    """A chain of three joints whose bones are 2 and 3 long against a reference of 2 and 2.5: errors 0 and
    0.2; a JointTree has no offsets, so a missing reference is an error."""
    tree = metrics.JointTree(("a", "b", "c"), (-1, 0, 1))
    pose = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    positions = np.broadcast_to(pose, (1, 5, 3, 3))
    error = metrics.bone_length_error(positions, [5], tree, reference=[2.0, 2.5])
    assert error["per_bone"] == pytest.approx({"a->b": 0.0, "b->c": 0.2})
    assert error["worst_bone"] == "b->c" and error["mean"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no rest bone lengths"):
        metrics.bone_length_error(positions, [5], tree)


@pytest.mark.parametrize("size", [263, 251])
def test_decode_positions_of_the_layout_matches_the_float64_decoder(size):
    features = np.random.default_rng(3).normal(size=(2, 9, size))
    features[..., 0] *= 0.3
    positions = evaluate.decode_positions(features.astype(np.float32), None, "humanml3d")
    assert positions.shape == (2, 9, (size + 1) // 12, 3)
    np.testing.assert_allclose(positions, reference_recover_from_ric(features), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ --mode eval
def check_known_motion(record, kind, unit_words, dimensions):
    """The report of FakeHumanML3DSampling's known clips against the real ones: every position metric at
    its closed form in the kind's unit, bone errors 0 and 0.1, and the notes and units that go with it."""
    metrics = record["metrics"]
    unit = kind.figure.scale
    real = expected_position_metrics(SPEED, RATE, 1.0, kind)
    walk, turn = GENERATED[WALK], GENERATED[TURN]
    generated = expected_position_metrics(walk["speed"], turn["turn"], walk["scale"], kind)
    tolerance = {"jitter/jerk": 2e-2, "jitter/acceleration": 2e-3}  # float32 positions, differenced
    for side, expected in (("real", real), ("generated", generated)):
        for name, value in expected.items():
            got = metrics[name][side]
            assert got == pytest.approx(value, rel=1e-3, abs=tolerance.get(name, 1e-4) * unit), (side, name)
    assert metrics["bone_error/mean"]["real"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["bone_error/worst"]["real"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["bone_error/mean"]["generated"] == pytest.approx(0.1, abs=1e-5)
    assert metrics["bone_error/worst"]["generated"] == pytest.approx(0.1, abs=1e-5)
    assert unit_words in record["units"]
    assert not any("position metrics" in n and "skipped" in n for n in record["notes"])
    # Position summaries (4 x 3 x (J + 1) numbers), not the raw ones, fitted to 2 clips a side: noted
    assert any(
        n.startswith(f"frechet/features: Gaussians in {dimensions} dimensions") for n in record["notes"]
    )


@pytest.mark.parametrize(
    ("dataset", "kind", "unit", "name", "jitter", "dimensions", "tree"),
    [
        (
            "humanml3d_dataset",
            "t2m",
            "m",
            "metres",
            "jitter/acceleration in m/s^2",
            276,
            "HumanML3D's 22 joints",
        ),
        (
            "kit_dataset",
            "kit",
            "mm",
            "millimetres",
            "jitter/acceleration in mm/s^2",
            264,
            "KIT-ML's 21 joints",
        ),
    ],
)
def test_eval_reports_the_known_motion_of_real_and_generated_clips(
    request, tmp_path, monkeypatch, dataset, kind, unit, name, jitter, dimensions, tree
):
    """The real clips (a walk at 1.2 m/s, a turn at 1.5 rad/s) and the fake's (the body 1.1 times as
    large, walking at 0.9 m/s and turning at 2 rad/s): jitter, hand and foot speeds and diversity equal
    their closed forms in the layout's unit; bone errors are 0 and 0.1 against the training clips' bones
    (the rest pose's); the report says the unit. HumanML3D's 22 joints in metres at 20 fps (263
    features); KIT-ML's 21 in millimetres at 12.5 fps (251), the wrists and the ankles, midfeet and feet
    being the hands and feet."""
    data = request.getfixturevalue(dataset)
    layout = {"t2m": T2M_KIND, "kit": KIT_KIND}[kind]
    config = humanml3d_config(data, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(data, kind=layout))
    messages = []
    record = evaluate.run(config, tmp_path / "run", log=messages.append)
    assert record["position_unit"] == unit and f"{name} ({unit})" in record["units"]
    assert any(m.startswith(f"units: positions and diversity in {name}") for m in messages)
    written = json.loads((tmp_path / "run" / "eval" / "metrics_step7.json").read_text())
    assert written["position_unit"] == unit
    check_known_motion(record, layout, jitter, dimensions)
    assert any(
        n.startswith("bone_error: relative to the mean bone lengths of the 4 training") and tree in n
        for n in record["notes"]
    )


@pytest.mark.filterwarnings("ignore:.*are KIT-ML's layout, whose motions are 12.5 fps")  # (expected)
def test_kit_ml_read_at_another_rate_is_noted_in_the_report(kit_dataset, tmp_path, monkeypatch):
    """KIT-ML's 12.5 fps features read at 20 fps: every per-second metric is 1.6x (speeds), 1.6^2 (accel-
    eration) too large, which only a load-time warning had said; the report's notes say it, and the
    speeds are those at 12.5 fps times 1.6 (the same frames, another rate)."""
    from motion_ddpm_jax.data import motion_text

    records = {}
    for fps in (KIT_KIND.fps, 20.0):
        data = motion_text.open_dataset(kit_dataset.root, fps=fps, std_floor=1e-6)
        config = humanml3d_config(data, tmp_path / str(fps))
        config.eval.output = str(tmp_path / f"kit_{fps}.json")
        install(monkeypatch, FakeHumanML3DSampling(data, kind=KIT_KIND))
        records[fps] = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    slow, fast = records[KIT_KIND.fps], records[20.0]
    said = [n for n in fast["notes"] if "every per-second metric" in n]
    assert len(said) == 1 and "data.fps=20, but KIT-ML-layout features are 12.5 fps" in said[0]
    assert "scaled by 1.6" in said[0]
    assert not [n for n in slow["notes"] if "every per-second metric" in n]
    for side in ("real", "generated"):
        speed = fast["metrics"]["speed/hands_mean"][side] / slow["metrics"]["speed/hands_mean"][side]
        acceleration = (
            fast["metrics"]["jitter/acceleration"][side] / slow["metrics"]["jitter/acceleration"][side]
        )
        assert speed == pytest.approx(1.6, rel=1e-5) and acceleration == pytest.approx(2.56, rel=1e-5)


def test_an_evaluated_training_clip_is_left_out_of_the_bone_reference(humanml3d_dataset):
    """eval.split=train: the Fréchet distances' pool leaves the evaluated clips out, and so now does the
    bone reference (the training clips' mean bone lengths), as the real column is not to be measured
    against a mean it is part of. Four training clips of the rest pose, the evaluated one at scale 1 and
    the others at 2: its bone error is |1 - 2| / 2 = 0.5 against the three others, where all four (equal
    lengths) gave |1 - 1.75| / 1.75."""
    clips = [
        features_of(figure(41, scale=scale, kind=T2M_KIND), seed, T2M_KIND)
        for seed, scale in enumerate((1.0, 2.0, 2.0, 2.0))
    ]
    motion = clips[0][None]
    real = evaluate.Clips(
        motion,
        np.array([len(clips[0])]),
        ("a person walks",),
        evaluate.decode_positions(motion, None, "humanml3d"),
    )
    common = dict(skeleton=None, representation="humanml3d", fps=FPS)
    for pool, expected, left_out in ((None, 0.75 / 1.75, None), ([1, 2, 3], 0.5, 1)):
        comparison = evaluate.prepare_comparison(
            real, clips, ["a person walks"] * 4, reference_pool=pool, **common
        )
        assert comparison.real_column["bone_error/mean"] == pytest.approx(expected, rel=1e-4), pool
        note = next(n for n in comparison.head_notes if n.startswith("bone_error: relative to the mean bone"))
        assert f"of the {4 - (left_out or 0)} training clips" in note
        assert (f"the {left_out} evaluated ones and their relatives left out" in note) == bool(left_out)


def test_eval_of_a_perfect_humanml3d_generator_scores_as_the_real_clips(
    humanml3d_dataset, tmp_path, monkeypatch
):
    config = humanml3d_config(humanml3d_dataset, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(humanml3d_dataset, perfect=True))
    metrics = evaluate.run(config, tmp_path / "run", log=lambda _: None)["metrics"]
    for name in ("jitter/acceleration", "jitter/jerk", "speed/hands_mean", "speed/feet_p95", "diversity"):
        assert metrics[name]["generated"] == pytest.approx(metrics[name]["real"], rel=1e-6), name
    assert metrics["frechet/features"]["generated"] == pytest.approx(0.0, abs=1e-6)


def test_eval_of_another_feature_size_has_no_position_metrics_and_says_why(tmp_path, monkeypatch):
    """The humanml3d representation with a feature count of neither layout (262): no tree of it, so no
    positions on either side; the metrics of the raw features are still reported, and a note names the
    layouts that decode."""
    from motion_ddpm_jax.data import motion_text

    root = write_humanml3d(tmp_path / "other", clip_set(), feature_size=262)
    dataset = motion_text.open_dataset(root, fps=FPS, std_floor=1e-6)
    assert dataset.feature_size == 262
    config = humanml3d_config(dataset, tmp_path)
    install(monkeypatch, FakeHumanML3DSampling(dataset, perfect=True))
    fitted = []  # the Fréchet distances' features, not fitted: 1048 dimensions take seconds to fit
    monkeypatch.setattr(evaluate, "frechet_distance_of", lambda a, b: fitted.append((a, b)) or 0.0)
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    metrics = record["metrics"]
    assert not any(name.startswith(("jitter", "bone_error", "speed", "diversity")) for name in metrics)
    real, generated = fitted[1]  # the per-channel statistics of the raw features
    assert real.shape == (2, 4 * 262) and np.array_equal(real, generated)
    assert record["position_unit"] is None and record["units"].startswith("no joint positions")
    (note,) = [n for n in record["notes"] if "position metrics" in n]
    assert note.startswith("no joint tree for the humanml3d representation's 262 features")
    assert "HumanML3D's 263 and KIT-ML's 251 decode" in note and "skipped" in note


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
