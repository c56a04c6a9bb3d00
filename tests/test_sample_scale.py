"""sampling.check_figure_size: sampled figures implausibly sized for the checkpoint's data are named in a
FigureSizeWarning (a badly trained epsilon-prediction run had written HumanML3D figures 58-94 m tall
without a word: the animation scales itself). Figures are built by hand in numpy with known bone lengths,
and every expected number is computed here from the skeleton or the statistics, not by the code."""

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_sampling import CAPTIONS, SKELETON, run_config, write_checkpoint

from motion_ddpm_jax import humanml3d, sampling
from motion_ddpm_jax.errors import ProjectWarning

# The test skeleton's bones, summed: Spine (0, 10, 0), Head (0, 8, 1), Head_Nub (0, 5, 0), Arm (6, 1, 0),
# Arm_Nub (9, 0, 0).
REST_SUM = 10 + np.sqrt(65) + 5 + np.sqrt(37) + 9


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    for kind in ("positions", "axis_angle", "humanml3d"):
        write_checkpoint(root / kind, kind)
    return {kind: root / kind for kind in ("positions", "axis_angle", "humanml3d")}


@pytest.fixture(scope="module")
def loaded(workdirs):
    return {kind: sampling.load_model(workdir) for kind, workdir in workdirs.items()}


def posed(frames: int, rng, parents=SKELETON.parents, offsets=SKELETON.offsets, scale=1.0) -> np.ndarray:
    """Global joint positions [frames, J, 3] of a figure whose every bone is its rest offset turned by a
    random rotation each frame (so its bone lengths are |offset| in any pose), its root wandering; all
    times `scale`. `parents` must list each parent before its children."""
    offsets = np.asarray(offsets, np.float64)
    out = np.zeros((frames, len(parents), 3))
    out[:, 0] = rng.normal(0, 30, (frames, 3))
    for joint in range(1, len(parents)):
        turn = Rotation.random(frames, random_state=rng).as_matrix()
        out[:, joint] = out[:, parents[joint]] + turn @ offsets[joint]
    return scale * out


def result_of(figures: list[np.ndarray], features: int, frames: int | None = None) -> dict:
    """`generate`'s result for figures [T_i, J, 3]: padded with zeros to the longest (or `frames`)."""
    frames = frames or max(len(f) for f in figures)
    positions = np.zeros((len(figures), frames) + figures[0].shape[1:], np.float32)
    for i, figure in enumerate(figures):
        positions[i, : len(figure)] = figure
    return {
        "positions": positions,
        "motion": np.zeros((len(figures), frames, features), np.float32),
        "lengths": np.array([len(f) for f in figures], np.int32),
        "captions": [f"caption {i}" for i in range(len(figures))],
    }


def no_size_warning(function, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error", sampling.FigureSizeWarning)
        return function(*args)


def test_figures_within_3x_of_the_skeletons_size_in_any_pose_give_no_warning(loaded):
    rng = np.random.default_rng(0)
    scales = [1.0, 2.5, 0.4]
    sizes = no_size_warning(
        sampling.check_figure_size,
        result_of([posed(12, rng, scale=s) for s in scales], 18),
        loaded["positions"],
    )
    for size, scale in zip(sizes, scales, strict=True):
        np.testing.assert_allclose(size["value"], scale * REST_SUM, rtol=1e-5)
        np.testing.assert_allclose([size["expected"], size["ratio"]], [REST_SUM, scale], rtol=1e-5)
        assert size["unit"] is None  # not BEAT's skeleton: the data's own unit


def test_figures_10x_or_a_twentieth_the_size_are_named_with_their_size_and_the_expected_one(loaded):
    rng = np.random.default_rng(1)
    result = result_of([posed(8, rng), posed(8, rng, scale=10), posed(8, rng, scale=0.05)], 18)
    names = ["a.npy", "b.npy", "c.npy"]
    with pytest.warns(sampling.FigureSizeWarning) as caught:
        sampling.check_figure_size(result, loaded["positions"], names)
    [warning] = caught
    assert issubclass(warning.category, ProjectWarning)  # launch.py says it as a `warning:` line
    message = str(warning.message)
    assert "2 of 3 samples" in message and "step 3" in message
    assert f"sample 1 ('caption 1', b.npy): {10 * REST_SUM:.3g}, 10x" in message
    assert f"sample 2 ('caption 2', c.npy): {0.05 * REST_SUM:.3g}, 0.05x" in message
    assert "sample 0" not in message and "a.npy" not in message
    assert f"expected about {REST_SUM:.3g} (in the data's unit) (its skeleton's rest pose)" in message
    assert "undertrained or diverged" in message


def test_figures_whose_positions_overflow_are_named_not_finite_and_index_json_stays_json(loaded):
    """Positions beyond float32 from finite features (the root's deltas summed): no ratio to give, the
    sample named "not finite", and its size entry holds no NaN or Infinity (index.json is JSON)."""
    rng = np.random.default_rng(2)
    broken = posed(8, rng)
    broken[3:, 0] = np.inf
    with pytest.warns(
        sampling.FigureSizeWarning, match=r"1 of 2 samples.*sample 1 \('caption 1'\): not finite"
    ):
        sizes = sampling.check_figure_size(result_of([posed(8, rng), broken], 18), loaded["positions"])
    assert sizes[1]["value"] is None and sizes[1]["ratio"] is None and sizes[1]["plausible"] is False
    assert sizes[0]["plausible"] is True
    json.dumps(sizes, allow_nan=False)  # raises on NaN or Infinity


def test_a_few_wild_frames_and_the_padding_do_not_decide_a_samples_size(loaded):
    rng = np.random.default_rng(2)
    wild = posed(10, rng)
    wild[3] *= 100  # one frame of ten a hundred times too large: the median over frames ignores it
    short = posed(4, rng)  # padded with 6 frames of zeros (bones of length 0) that are not its frames
    sizes = no_size_warning(sampling.check_figure_size, result_of([wild, short], 18), loaded["positions"])
    np.testing.assert_allclose([s["value"] for s in sizes], [REST_SUM, REST_SUM], rtol=1e-5)


def test_humanml3d_figures_are_judged_against_the_bones_of_the_mean_pose_in_metres(loaded):
    rng = np.random.default_rng(3)
    lay = humanml3d.T2M
    pose = rng.normal(0, 0.3, (lay.joints, 3))  # a mean pose: root above the origin, joints anywhere
    pose[0] = [0.0, 0.9, 0.0]
    mean = np.zeros(lay.features, np.float32)
    mean[3] = pose[0, 1]
    mean[lay.ric] = pose[1:].ravel()
    model = dataclasses.replace(loaded["humanml3d"], mean=mean)
    parents = np.asarray(lay.parents)
    expected = sum(np.linalg.norm(pose[j] - pose[parents[j]]) for j in range(1, lay.joints))
    offsets = np.zeros((lay.joints, 3))
    offsets[1:] = pose[1:] - pose[parents[1:]]
    fine, huge = posed(6, rng, parents, offsets), posed(6, rng, parents, offsets, scale=40)
    with pytest.warns(sampling.FigureSizeWarning) as caught:
        sizes = sampling.check_figure_size(result_of([fine, huge], lay.features), model)
    message = str(caught[0].message)
    assert "1 of 2 samples" in message and f"sample 1 ('caption 1'): {40 * expected:.3g} m, 40x" in message
    assert f"expected about {expected:.3g} m (the bones of the mean pose" in message
    np.testing.assert_allclose([s["ratio"] for s in sizes], [1, 40], rtol=1e-5)
    assert [s["unit"] for s in sizes] == ["m", "m"]
    # Statistics that are not of motion (all zero) give nothing to compare with: no check, no size.
    blank = dataclasses.replace(model, mean=np.zeros(lay.features, np.float32))
    assert no_size_warning(sampling.check_figure_size, result_of([huge], lay.features), blank) == [None]


def test_axis_angle_samples_whose_root_moves_far_faster_than_the_data_are_named(loaded):
    model = loaded["axis_angle"]
    mean, std = np.asarray(model.mean, np.float64)[:3], np.asarray(model.std, np.float64)[:3]
    rms = np.sqrt(np.sum(mean**2 + std**2))  # the data's RMS root step per frame
    features = model.model.input_feats
    result = result_of([np.zeros((8, 6, 3))] * 3, features)
    direction = np.array([3.0, 0.0, 4.0]) / 5
    result["motion"][1, :8, :3] = 20 * rms * direction  # 20x the data's speed
    result["motion"][2, :8, :3] = 5 * rms * direction  # fast, but within 10x
    with pytest.warns(sampling.FigureSizeWarning) as caught:  # (sample 0 stands still: plausible)
        sizes = sampling.check_figure_size(result, model)
    message = str(caught[0].message)
    assert "implausibly fast" in message and f"sample 1 ('caption 1'): {20 * rms:.3g}, 20x" in message
    assert "sample 0" not in message and "sample 2" not in message
    np.testing.assert_allclose([s["value"] for s in sizes], [0, 20 * rms, 5 * rms], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_sample_mode_warns_of_figures_10x_the_datas_and_records_each_size_in_index_json(
    workdirs, tmp_path, monkeypatch, scale
):
    """Through `sampling.run` on a real tiny checkpoint, its decoder giving figures of the skeleton's
    bones (in random poses) times `scale`: 10x is named by its file; every sample's size is in index.json,
    as measured here on the written positions."""
    rng = np.random.default_rng(5)

    def decoder(skeleton, kind):
        def decode(features):  # [N, T, D] -> figures [N, T, J, 3]
            count, frames = features.shape[:2]
            return posed(count * frames, rng, scale=scale).reshape(count, frames, -1, 3).astype(np.float32)

        return decode

    monkeypatch.setattr(sampling, "_decoder", decoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = sampling.run(run_config(output_dir=str(tmp_path / "out")), workdirs["positions"])
    said = [str(w.message) for w in caught if issubclass(w.category, sampling.FigureSizeWarning)]
    out = Path(summary["output_dir"])
    index = json.loads((out / "index.json").read_text())
    for name in ("000_wave_hello_0.npy", "001_point_left_0.npy"):
        written = np.load(out / name.replace(".npy", "_positions.npy")).astype(np.float64)  # [T, J, 3]
        bones = written[:, 1:] - written[:, SKELETON.parents[1:]]
        measured = np.median(np.linalg.norm(bones, axis=-1).sum(-1))
        np.testing.assert_allclose(measured, scale * REST_SUM, rtol=1e-5)
        size = index["samples"][name]["size"]
        np.testing.assert_allclose([size["value"], size["expected"]], [measured, REST_SUM], rtol=1e-5)
    if scale == 1.0:
        assert said == []
    else:
        [message] = said
        assert "2 of 2 samples" in message and f"'{CAPTIONS[0]}', 000_wave_hello_0.npy" in message
        assert f"{10 * REST_SUM:.3g}, 10x" in message


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_training_progress_samples_10x_the_datas_size_are_said_in_the_log(
    loaded, tmp_path, monkeypatch, scale
):
    """train.ProgressRenderer's GIF scales itself too: a line of the run's log says the figures' size
    while it is off (a note of progress, no warning: an early model's figures often are)."""
    from motion_ddpm_jax import render, train

    rng = np.random.default_rng(6)
    monkeypatch.setattr(
        sampling,
        "_decoder",
        lambda skeleton, kind: (
            lambda f: (
                posed(f.shape[0] * f.shape[1], rng, scale=scale)
                .reshape(*f.shape[:2], -1, 3)
                .astype(np.float32)
            )
        ),
    )
    monkeypatch.setattr(sampling, "loaded_from_params", lambda *args: loaded["positions"])
    monkeypatch.setattr(render, "animate_skeletons", lambda *args, **kwargs: None)
    logged = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", sampling.FigureSizeWarning)
        train.ProgressRenderer(run_config(), tmp_path, {}, CAPTIONS, log=logged.append)(7, None)
    assert not [line for line in logged if "rendering progress samples failed" in line], logged
    said = [line for line in logged if "the data's" in line]
    if scale == 1.0:
        assert said == [], logged
    else:
        assert said == [
            f"step 7: the progress samples' summed bone length per frame (median over frames) is "
            f"{scale:.3g}x the data's (the GIF scales itself to its figures): the model does not draw the "
            "data's figures yet"
        ], logged
