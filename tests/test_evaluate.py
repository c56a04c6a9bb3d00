"""The FGD autoencoder, and --mode eval end to end with a stand-in for the sampler (metrics.py's numpy
metrics against analytic answers and scipy: test_metrics.py)."""

import datetime
import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest
from test_metrics import FPS, NAMES, OFFSETS, PARENTS, padded, rest_pose, toy_skeleton

import motion_ddpm_jax
from motion_ddpm_jax import errors, evaluate, fgd, lineage, metrics, provenance
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import motion_text
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.skeleton import Skeleton


def rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def test_real_clips_the_classifier_does_not_recognise_are_said_to_score_below_chance():
    """Real clips moving as another class's training clips do score 0 (by construction: 'a' trains on
    motion along x, 'b' along y, and the real 'a' clips move along y); a generated 1.0 beside it had read
    as a model better than the data. The note names the chance level and the class with fewest clips."""
    skeleton = Skeleton(("root", "tip"), np.array([-1, 0]), np.array([[0, 0, 0], [0, 10, 0.0]], np.float32))
    rng = np.random.default_rng(5)

    def clip(axis, length):
        t = np.arange(length) / FPS
        positions = np.tile(rest_pose(skeleton), (length, 1, 1))
        positions[:, 1, axis] += rng.uniform(4, 6) * np.sin(2 * np.pi * rng.uniform(0.8, 1.2) * t)
        return positions

    def features(positions):
        f = positions - positions[:, :1]
        f[1:, 0] = 0.0  # a still root: translation deltas of zero
        return f.reshape(len(positions), -1).astype(np.float32)

    train = [clip(0, 40) for _ in range(5)] + [clip(1, 40) for _ in range(2)]
    labels = ["a"] * 5 + ["b"] * 2
    real_clips = [clip(1, 40) for _ in range(3)]
    motion, lengths = padded([features(c) for c in real_clips], garbage=0.0)
    real = evaluate.Clips(motion, lengths, ("a", "a", "a"), np.stack(real_clips))
    comparison = evaluate.prepare_comparison(
        real, [features(c) for c in train], labels, skeleton=skeleton, representation="positions", fps=FPS
    )
    assert comparison.real_column["conditioning_accuracy"] == 0.0
    said = [n for n in comparison.class_notes if "below chance" in n]
    assert said == [
        "conditioning accuracy: the real clips score 0.000, below chance (0.500): the classifier does not "
        "recognise this split's real motion (other recordings or performers than the training split's, or "
        "too few training clips per class: 'b' has 2), so the generated column says how closely the "
        "samples resemble the training clips, not how well they follow their captions"
    ]
    recognised = evaluate.Clips(motion, lengths, ("b", "b", "b"), np.stack(real_clips))
    comparison = evaluate.prepare_comparison(
        recognised,
        [features(c) for c in train],
        labels,
        skeleton=skeleton,
        representation="positions",
        fps=FPS,
    )
    assert comparison.real_column["conditioning_accuracy"] == 1.0
    assert not [n for n in comparison.class_notes if "below chance" in n]


def test_a_skeleton_without_hand_names_is_told_which_joints_its_speeds_take():
    """A skeleton of one's own (`L_Palm`, not `LeftHand`) had no speed/hands row and no word of why."""
    names = ("Pelvis", "Chest", "L_Palm", "R_Palm", "L_Ankle", "R_Ankle")
    parents = np.array([-1, 0, 1, 1, 0, 0])
    offsets = np.array([[0, 0, 0], [0, 30, 0], [50, 0, 0], [-50, 0, 0], [10, -80, 0], [-10, -80, 0.0]])
    skeleton = Skeleton(names, parents, offsets.astype(np.float32))
    rng = np.random.default_rng(3)
    clips = []
    for length in (40, 33, 37):  # rest pose plus a smooth wobble per joint
        t = np.arange(length)[:, None, None] / FPS
        clips.append(rest_pose(skeleton) + 5.0 * np.sin(2 * np.pi * rng.uniform(0.5, 2, (1, 6, 3)) * t))
    features = []
    for clip in clips:
        f = clip - clip[:, :1]  # root-relative joints; the root slot: translation deltas (first: 0)
        f[1:, 0] = np.diff(clip[:, 0], axis=0)
        features.append(f.reshape(len(clip), -1).astype(np.float32))
    motion, lengths = padded(features, garbage=0.0)
    positions, _ = padded([c - c[:1, :1] for c in clips], garbage=0.0)
    real = evaluate.Clips(motion.astype(np.float32), lengths, ("a", "b", "a"), positions)
    comparison = evaluate.prepare_comparison(
        real, features, ["a", "b", "a"], skeleton=skeleton, representation="positions", fps=FPS
    )
    column, notes = comparison.real_column, " ".join(comparison.head_notes)
    assert "speed/hands_mean" not in column
    assert "feet = the joints whose names contain foot/toe/ankle/heel (L_Ankle, R_Ankle)" in notes
    assert "no speed/hands_* row" in notes and "hand/wrist/finger/thumb/pinky" in notes
    # the feet row: float64 speeds of the two ankles over every frame pair, pooled
    steps = [np.linalg.norm(np.diff(c[:, 4:6], axis=0), axis=-1).ravel() for c in clips]
    speeds = np.concatenate(steps) * FPS
    assert column["speed/feet_mean"] == pytest.approx(speeds.mean(), rel=1e-5)
    assert metrics.effectors_note(NAMES, metrics.end_effectors(NAMES, PARENTS)) is None  # both found
    plain = ("root", "a", "b", "c")
    leaves = metrics.effectors_note(plain, metrics.end_effectors(plain, (-1, 0, 1, 0)))
    assert "speed/leaves_* is the speed of the skeleton's 2 leaf joints (b, c)" in leaves


# ------------------------------------------------------------------------------------------ dataset + run
GESTURE_JOINTS = {"wave": "RightHand", "nod": "Head", "bow": "Spine"}


def toy_clip(word, length, rng):
    """Global positions [T, J, 3] of the toy skeleton doing `word`; bone lengths kept exactly."""
    skeleton = toy_skeleton()
    t = np.arange(length) / FPS
    amplitude = rng.uniform(0.6, 1.0)
    angle = amplitude * np.sin(np.pi * t / t[-1]) ** 2
    root = np.stack([rng.normal() * np.ones_like(t), 92.0 + np.sin(t), 0.3 * t], axis=-1)
    out = np.zeros((length, skeleton.num_joints, 3))
    for f in range(length):
        spine = rotation_x(angle[f] if word == "bow" else 0.0)
        head = spine @ rotation_x(angle[f] if word == "nod" else 0.0)
        hand = spine @ rotation_z(-1.5 * angle[f] if word == "wave" else 0.0)
        out[f, 0] = root[f]
        out[f, 1] = root[f] + spine @ OFFSETS[1]
        out[f, 2] = out[f, 1] + head @ OFFSETS[2]
        out[f, 3] = out[f, 1] + hand @ OFFSETS[3]
        out[f, 4] = out[f, 1] + spine @ OFFSETS[4]
        out[f, 5] = root[f] + np.asarray(OFFSETS[5], float)
    return out


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    rng = np.random.default_rng(10)
    skeleton = toy_skeleton()
    splits = {}
    for name, per_word in (("train", 6), ("val", 3), ("test", 1)):
        ids, motions, captions = [], [], []
        for i in range(per_word):
            for word in GESTURE_JOINTS:
                clip = toy_clip(word, int(rng.integers(30, 50)), rng)
                features = clip - clip[:, :1]  # root-relative joints; the root slot: translation deltas
                features[1:, 0] = np.diff(clip[:, 0], axis=0)
                ids.append(f"{name}_{word}_{i}")
                motions.append(features.reshape(len(clip), -1).astype(np.float32))
                captions.append((f"so {word} number {i} of {name}",))
        splits[name] = motion_text.Split(name, tuple(ids), tuple(motions), tuple(captions))
    root = tmp_path_factory.mktemp("data") / "toy"
    info = {"representation": "positions", "fps": FPS, "source": "test"}
    return motion_text.write_dataset(root, splits, info, skeleton)


def toy_config(dataset, tmp_path):
    config = base_config()
    config.data.source, config.data.fps = "prepared", FPS
    config.data.root = str(dataset.root)
    config.eval.autoencoder_dir = str(tmp_path / "fgd")
    config.eval.autoencoder_steps = 150
    config.eval.autoencoder_latent = 8
    config.eval.num_clips = 6
    return config


# ------------------------------------------------------------------------------------------ autoencoder
@pytest.fixture(scope="module")
def toy_autoencoder(toy_dataset, tmp_path_factory):
    """(config, folder) of an FGD autoencoder trained on the toy dataset by `train_autoencoder`."""
    config = toy_config(toy_dataset, tmp_path_factory.mktemp("ae"))
    messages = []
    directory = fgd.train_autoencoder(config, log=messages.append)
    # Where it goes is said as it starts (by default the dataset's folder), not only once it is saved.
    assert [m for m in messages if m.startswith("training the FGD autoencoder on 18 clips")] == [
        "training the FGD autoencoder on 18 clips (28-frame windows, latent 8) for 150 steps, to be saved "
        f"in {directory} (eval.autoencoder_dir)"
    ]
    # The last line's MSE is the mean over the last 5% of steps (7 of 150), not the last step's, and says so.
    stored = json.loads((directory / "autoencoder.json").read_text())["trained"]
    assert f"reconstruction MSE {stored['final_loss']:.4f} over its last 7 steps" in messages[-1], messages
    return config, directory


def test_train_autoencoder_reconstruction_error_falls(toy_autoencoder, toy_dataset):
    config, directory = toy_autoencoder
    record = json.loads((directory / "autoencoder.json").read_text())
    settings, trained = record["settings"], record["trained"]
    assert settings["window"] == 28 and settings["latent"] == 8 and settings["feature_size"] == 18
    assert settings["steps"] == config.eval.autoencoder_steps and trained["train_clips"] == 18
    assert settings["dataset_fingerprint"] == fgd.dataset_fingerprint(toy_dataset)
    assert trained["final_loss"] < 0.2 * trained["initial_loss"]


def test_train_autoencoder_never_overwrites(toy_autoencoder):
    config, directory = toy_autoencoder
    before = (directory / "autoencoder.npz").stat().st_mtime_ns
    messages = []
    assert fgd.train_autoencoder(config, log=messages.append) == directory
    assert any("exists already" in m for m in messages)
    assert (directory / "autoencoder.npz").stat().st_mtime_ns == before
    other = config.copy_and_resolve_references()
    other.eval.autoencoder_latent = 16
    with pytest.raises(UserError, match=f"{directory}.*latent"):
        fgd.train_autoencoder(other, log=messages.append)
    assert (directory / "autoencoder.npz").stat().st_mtime_ns == before


def test_train_autoencoder_on_clips_shorter_than_its_window_names_the_data_and_the_window(
    toy_dataset, tmp_path, monkeypatch
):
    """Clips all shorter than the window (a 2 s window here; the toy clips have 30-49 frames at 30 fps):
    the error names data.root, the window in frames and seconds at the data's rate, and the longest clip
    (it had said only "no training clip is at least N frames long"); nothing is written."""
    monkeypatch.setattr(fgd, "AUTOENCODER_WINDOW_S", 2.0)
    config = toy_config(toy_dataset, tmp_path)
    longest = max(len(m) for m in toy_dataset.split("train").motions)
    window = fgd.window_frames(FPS)
    assert longest < window
    with pytest.raises(UserError) as refused:
        fgd.train_autoencoder(config, log=lambda *_: None)
    said = str(refused.value)
    assert f"data.root={toy_dataset.root}" in said and f"at least {window} frames long" in said, said
    assert f"2 s at {FPS:g} fps" in said and f"has {longest})" in said, said
    assert not (tmp_path / "fgd").exists()


def test_train_autoencoder_into_someone_elses_folder_is_refused_with_no_circular_hint(toy_dataset, tmp_path):
    """A non-empty folder (or a file) without autoencoder.json: the error names it and asks for a new or
    empty folder (it said "train one with --mode train_autoencoder", the command just run); nothing in it
    is touched, and no training starts."""
    config = toy_config(toy_dataset, tmp_path)
    (tmp_path / "fgd").mkdir()
    (tmp_path / "fgd" / "notes.txt").write_text("mine")
    (tmp_path / "a_file").write_text("mine too")
    for target, what in ((tmp_path / "fgd", "a folder of other files"), (tmp_path / "a_file", "a file")):
        config.eval.autoencoder_dir = str(target)
        messages = []
        with pytest.raises(UserError) as refused:
            fgd.train_autoencoder(config, log=messages.append)
        assert f"{target} is {what}" in str(refused.value) and "new or empty folder" in str(refused.value)
        assert "--mode train_autoencoder" not in str(refused.value)
        assert not any("training the FGD autoencoder" in m for m in messages)
    assert [p.name for p in (tmp_path / "fgd").iterdir()] == ["notes.txt"]
    assert (tmp_path / "fgd" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "a_file").read_text() == "mine too"


def test_autoencoder_saves_and_reloads_to_the_same_encodings(toy_autoencoder, toy_dataset, tmp_path):
    encoder = fgd.load_autoencoder(toy_autoencoder[1])
    copy = fgd.save_autoencoder(
        tmp_path / "copy", encoder.params, encoder.mean, encoder.std, encoder.settings, {}
    )
    reloaded = fgd.load_autoencoder(copy)
    motions = toy_dataset.split("val").motions
    windows = fgd.motion_windows(motions, 28)
    assert len(windows) == sum((len(m) - 28) // 14 + 1 for m in motions)
    np.testing.assert_array_equal(windows[0], motions[0][:28])
    encodings = reloaded.encode(windows, chunk=4)
    assert encodings.shape == (len(windows), 8) and np.all(np.isfinite(encodings))
    np.testing.assert_allclose(encodings, encoder.encode(windows), rtol=1e-6, atol=1e-6)
    assert np.ptp(encodings, axis=0).min() > 0.0  # not a constant map
    with pytest.raises(errors.EvaluationError, match="not empty"):
        fgd.save_autoencoder(copy, encoder.params, encoder.mean, encoder.std, encoder.settings, {})


def small_autoencoder_folder(directory, fingerprint="f" * 16, dataset_root="/elsewhere/data"):
    """An FGD autoencoder folder as save_autoencoder writes it: untrained weights of a tiny model."""
    model = fgd.MotionAutoencoder(3, 8, 4)
    settings = {"format": fgd.AUTOENCODER_FORMAT, "feature_size": 3, "window": 8, "hidden": 8}
    settings |= {"latent": 4, "dataset_fingerprint": fingerprint}
    params = fgd.init_autoencoder(model, 8, 0)
    trained = {"dataset_root": dataset_root, "final_loss": 0.5}
    return fgd.save_autoencoder(directory, params, np.zeros(3), np.ones(3), settings, trained)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("no weights", r"autoencoder.npz: missing \(autoencoder.json is there without its weights\)"),
        ("garbage weights", r"autoencoder.npz: not the weights --mode train_autoencoder writes"),
        ("empty weights", r"autoencoder.npz: not the weights --mode train_autoencoder writes"),
        ("no mean", r"autoencoder.npz: not the weights --mode train_autoencoder writes"),
        ("json list", r"autoencoder.json: expected a JSON object with a 'settings' object"),
    ],
)
def test_a_damaged_autoencoder_folder_is_named_with_what_to_do(tmp_path, damage, said):
    """A folder cut short or overwritten had failed with a bare FileNotFoundError, numpy's 'contains
    pickled (object) data', a KeyError or an AttributeError: now an EvaluationError naming the file,
    what it should hold and how to get a good one."""
    folder = small_autoencoder_folder(tmp_path / "fgd")
    weights = folder / "autoencoder.npz"
    if damage == "no weights":
        weights.unlink()
    elif damage == "garbage weights":
        weights.write_bytes(b"not an npz at all")
    elif damage == "empty weights":
        weights.write_bytes(b"")
    elif damage == "no mean":
        np.savez(weights, std=np.ones(3))
    else:
        (folder / "autoencoder.json").write_text("[1, 2]")
    with pytest.raises(errors.EvaluationError, match=said) as refused:
        fgd.load_autoencoder(folder)
    assert str(folder) in str(refused.value)
    if damage != "json list":
        assert "--config.eval.autoencoder_dir=<new folder>" in str(refused.value)


def test_fgd_of_an_autoencoder_of_other_data_is_skipped_naming_both_and_what_to_do(tmp_path):
    folder = small_autoencoder_folder(tmp_path / "fgd")
    dataset = types.SimpleNamespace(
        info={"fps": 30.0}, mean=np.zeros(3), std=np.ones(3), root=tmp_path / "data"
    )
    config = base_config()
    config.eval.autoencoder_dir = str(folder)
    encoder, notes = fgd.fgd_encoder(config, dataset)
    assert encoder is None and len(notes) == 1
    assert notes[0].startswith(f"FGD skipped: the autoencoder in {folder} was trained on other data")
    assert "data.root=/elsewhere/data" in notes[0] and f"than data.root={tmp_path / 'data'}" in notes[0]
    assert "--config.eval.autoencoder_dir=<a new folder>" in notes[0]
    here = fgd.dataset_fingerprint(dataset)  # an autoencoder of this very data: used, no note
    config.eval.autoencoder_dir = str(small_autoencoder_folder(tmp_path / "fgd_same", fingerprint=here))
    encoder, notes = fgd.fgd_encoder(config, dataset)
    assert notes == [] and encoder.settings["dataset_fingerprint"] == here


@pytest.mark.parametrize("kind", ["folder of other files", "file"])
def test_fgd_skipped_for_an_autoencoder_dir_of_other_things_does_not_advise_training_into_it(tmp_path, kind):
    """eval.autoencoder_dir naming a folder of other files (or a file): FGD is skipped with a note that says
    what is there. It had said "no autoencoder in <it>; train one ... with --config.eval.autoencoder_dir=<it>,
    as here", advice that --mode train_autoencoder refuses (it never writes into another's folder)."""
    target = tmp_path / "mine"
    if kind == "file":
        target.write_text("notes\n")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("notes\n")
    config = base_config()
    config.eval.autoencoder_dir = str(target)
    dataset = types.SimpleNamespace(info={}, mean=np.zeros(3), std=np.ones(3), root=tmp_path / "data")
    encoder, notes = fgd.fgd_encoder(config, dataset)
    assert encoder is None and len(notes) == 1, notes
    assert notes[0].startswith(f"FGD skipped: eval.autoencoder_dir {target} is a {kind}"), notes[0]
    assert "as here" not in notes[0] and "--config.eval.autoencoder_dir=<a new folder>" in notes[0]
    # an empty or missing folder is where train_autoencoder saves one: the note advises it, as before
    for free in (tmp_path / "empty", tmp_path / "missing"):
        if free.name == "empty":
            free.mkdir()
        config.eval.autoencoder_dir = str(free)
        (note,) = fgd.fgd_encoder(config, dataset)[1]
        assert note.startswith(f"FGD skipped: no autoencoder in {free}") and "as here" in note, note


def test_fgd_skipped_for_want_of_an_autoencoder_names_the_evaluated_runs_folder(tmp_path):
    """The note's command trains the autoencoder for the run evaluated: `--workdir <run>` had left the user
    to fill in the folder they had just given; a folder with a space is quoted for the shell. It names the
    data evaluated too: `--workdir` alone trains on the checkpoint's data.root and saves into that folder's
    fgd_autoencoder, where an evaluation given another --config.data.root (a forgetting check) does not
    look, and its FGD stayed skipped after the advice was taken."""
    config = base_config()
    config.eval.autoencoder_dir = str(tmp_path / "missing")
    dataset = types.SimpleNamespace(info={}, mean=np.zeros(3), std=np.ones(3), root=tmp_path / "my data")
    data = f"--config.data.root='{tmp_path / 'my data'}'"
    for run, shown in (
        (tmp_path / "runs" / "demo", str(tmp_path / "runs" / "demo")),
        (tmp_path / "my run", f"'{tmp_path / 'my run'}'"),
    ):
        (note,) = fgd.fgd_encoder(config, dataset, run)[1]
        assert (
            f"`python launch.py --mode train_autoencoder --workdir {shown} {data}` (or --config <config>"
            in note
        ), note
    (note,) = fgd.fgd_encoder(config, dataset)[1]  # no run given (the Python API's other callers)
    assert f"--workdir <run> {data}`" in note, note


def test_fgd_skipped_for_an_autoencoder_of_other_data_or_of_other_things_gives_a_command_to_run(tmp_path):
    """The notes that advise training an autoencoder into a new folder had said `--mode train_autoencoder`
    alone, which needs --config or --workdir to run at all, and whose --workdir alone takes the data of the
    run's checkpoint, not the data.root evaluated (a forgetting check's): the command names both, the
    paths quoted for the shell."""
    other = small_autoencoder_folder(tmp_path / "fgd")  # trained on /elsewhere/data
    files_there = tmp_path / "mine"
    files_there.mkdir()
    (files_there / "notes.txt").write_text("notes\n")
    for run, data, shown in (
        (
            tmp_path / "runs" / "demo",
            tmp_path / "data",
            f"{tmp_path / 'runs' / 'demo'} --config.data.root={tmp_path / 'data'}",
        ),
        (
            tmp_path / "my run",
            tmp_path / "my data",
            f"'{tmp_path / 'my run'}' --config.data.root='{tmp_path / 'my data'}'",
        ),
    ):
        dataset = types.SimpleNamespace(info={}, mean=np.zeros(3), std=np.ones(3), root=data)
        command = (
            f"`python launch.py --mode train_autoencoder --workdir {shown} "
            "--config.eval.autoencoder_dir=<a new folder>` (or --config <config> in place of --workdir)"
        )
        for folder in (other, files_there):
            config = base_config()
            config.eval.autoencoder_dir = str(folder)
            (note,) = fgd.fgd_encoder(config, dataset, run)[1]
            assert note.startswith(
                f"FGD skipped: {'the autoencoder in' if folder == other else 'eval.autoencoder_dir'} {folder}"
            )
            assert command in note, note


def _autoencoder_reference(params, windows, mean, std):
    """(latent means [N, L], reconstructions [N, W, F]) of the FGD autoencoder in float64 numpy, written
    from its description: per-frame projections, kernel-k convolutions over time with (k - 1) // 2 zero
    frames before and k // 2 after, strided by 2 twice, leaky ReLU 0.2, upsampling that splits each frame
    of a 2F-wide convolution into two frames of F."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

    def dense(x, layer):
        return x @ layer["kernel"] + layer["bias"]

    def conv(x, layer, kernel=3, stride=1):
        weights = layer["Dense_0"]["kernel"].reshape(kernel, x.shape[-1], -1)  # [k, C_in, C_out]
        padded = np.pad(x, ((0, 0), ((kernel - 1) // 2, kernel // 2), (0, 0)))
        frames = -(-x.shape[1] // stride)
        out = np.zeros((x.shape[0], frames, weights.shape[-1]))
        for t in range(frames):
            for i in range(kernel):
                out[:, t] += padded[:, t * stride + i] @ weights[i]
        return out + layer["Dense_0"]["bias"]

    def leaky(x):
        return np.where(x > 0, x, 0.2 * x)

    def upsample(x, layer):
        y = conv(x, layer["TemporalConv_0"])
        half = y.shape[-1] // 2
        out = np.zeros((x.shape[0], 2 * x.shape[1], half))
        out[:, 0::2], out[:, 1::2] = y[..., :half], y[..., half:]
        return out

    e, d = p["encoder"], p["decoder"]
    x = (np.asarray(windows, np.float64) - mean) / std
    x = leaky(dense(x, e["Dense_0"]))
    x = leaky(conv(x, e["TemporalConv_0"]))
    x = leaky(conv(x, e["TemporalConv_1"], 4, 2))
    x = leaky(conv(x, e["TemporalConv_2"], 4, 2))
    z = conv(x, e["TemporalConv_3"])
    y = leaky(conv(z, d["TemporalConv_0"]))
    y = leaky(upsample(y, d["Upsample_0"]))
    y = leaky(upsample(y, d["Upsample_1"]))
    y = leaky(conv(y, d["TemporalConv_1"]))
    return z.mean(axis=1), dense(y, d["Dense_0"])


def test_the_fgd_autoencoder_is_the_network_it_describes_against_float64_numpy():
    """FgdEncoder.encode (FGD's features) and the autoencoder's reconstruction (its training loss) equal a
    float64 numpy network written from the docstrings, with random weights and biases: the FGD numbers are
    otherwise checked only against the same code (a save and reload, a shift that raises the distance),
    which a convolution padded on the wrong side or an upsampling that interleaves the wrong halves
    passes."""
    rng = np.random.default_rng(4)
    features, window, hidden, latent = 5, 12, 6, 3
    model = fgd.MotionAutoencoder(features, hidden, latent)
    params = jax.tree.map(
        lambda a: a + rng.normal(0.0, 0.3, a.shape).astype(np.float32),
        fgd.init_autoencoder(model, window, seed=1),
    )
    mean, std = rng.normal(size=features), rng.uniform(0.5, 2.0, features)
    settings = {"feature_size": features, "hidden": hidden, "latent": latent, "window": window}
    encoder = fgd.FgdEncoder(params, mean, std, settings)
    windows = rng.normal(size=(7, window, features)) * std + mean
    expected_latents, expected_output = _autoencoder_reference(params, windows, mean, std)
    np.testing.assert_allclose(encoder.encode(windows, chunk=4), expected_latents, rtol=1e-4, atol=1e-5)
    standardized = ((windows - mean) / std).astype(np.float32)
    output = np.asarray(model.apply({"params": params}, standardized))
    np.testing.assert_allclose(output, expected_output, rtol=1e-4, atol=1e-5)


def test_fgd_of_real_against_itself_is_zero_and_grows_with_a_shift(toy_autoencoder, toy_dataset):
    encoder = fgd.load_autoencoder(toy_autoencoder[1])
    real = fgd.motion_windows(toy_dataset.split("train").motions, 28)
    assert fgd.fgd(encoder, real, real) == pytest.approx(0.0, abs=1e-6)
    distances = [fgd.fgd(encoder, real, real + shift * encoder.std) for shift in (0.25, 0.5, 1.0, 2.0)]
    assert distances[0] > 1e-3
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False))


DIFFUSION_STEPS = 1000  # the fake checkpoint's diffusion.steps


class FakeSampling:
    """Stands in for motion_ddpm_jax.sampling: 'generates' the real clip whose caption it is given, plus
    optional noise, so every generated metric has a known relation to the real one. Its checkpoint
    trained on `dataset` (its statistics and data.root), with a DIFFUSION_STEPS-step linear schedule."""

    def __init__(self, dataset, noise=0.0, max_motion_length=40, split="val"):
        self.dataset, self.noise, self.max_motion_length = dataset, noise, max_motion_length
        split = dataset.split(split)
        self.by_caption = {c[0]: m for c, m in zip(split.captions, split.motions, strict=True)}
        self.calls = []

    def load_model(self, workdir, step=None, use_ema=True):
        from motion_ddpm_jax import diffusion

        self.calls.append(("load_model", str(workdir), step, use_ema))
        data = {**base_config().data.to_dict(), "root": str(self.dataset.root), "source": "prepared"}
        return types.SimpleNamespace(
            mean=self.dataset.mean,
            std=self.dataset.std,
            skeleton=self.dataset.skeleton,
            representation="positions",
            fps=FPS,
            max_motion_length=self.max_motion_length,
            step=7,
            schedule=diffusion.make_schedule("linear", DIFFUSION_STEPS),
            metadata={"config": {"data": data}, "data_root": str(self.dataset.root)},
            config=base_config(),  # (its model section, as sampling's checks read it)
        )

    def generate(self, loaded, captions, num_frames, **options):
        self.calls.append(("generate", list(captions), list(num_frames), options))
        motions = [self.by_caption[c][:n].copy() for c, n in zip(captions, num_frames, strict=True)]
        rng = np.random.default_rng(0)
        for m in motions:
            m[:, 3:] += self.noise * rng.normal(size=m[:, 3:].shape)  # joints, not the root deltas
        motion, lengths = evaluate._pad(motions)
        positions = evaluate.decode_positions(motion, loaded.skeleton, "positions")
        return {"motion": motion, "positions": positions, "lengths": lengths, "captions": list(captions)}


def install(monkeypatch, fake):
    from motion_ddpm_jax.sampling import (
        CaptionCutWarning,
        check_finite,
        check_settings,
        sampler_settings,
        settings_text,
        settings_used,
        shown_caption,
        spacing_note,
        unread_settings_note,
    )

    module = types.ModuleType("motion_ddpm_jax.sampling")
    module.load_model, module.generate = fake.load_model, fake.generate
    module.sampler_settings = sampler_settings  # the real config -> keywords mapping
    module.spacing_note = spacing_note  # the real note on few leading DDIM steps
    module.unread_settings_note = unread_settings_note  # the real note on DDIM's settings under ddpm
    module.settings_text = settings_text  # the real words of the log line
    module.settings_used = settings_used  # the real record of what the sampling used
    module.check_finite = check_finite  # the real check of the generated motion
    module.check_settings = check_settings  # the real check of the sampler settings against the checkpoint
    module.CaptionCutWarning = CaptionCutWarning  # the real warning, which eval's sampling silences
    module.shown_caption = shown_caption  # the real quoting of a caption in a note
    monkeypatch.setitem(sys.modules, "motion_ddpm_jax.sampling", module)
    monkeypatch.setattr(motion_ddpm_jax, "sampling", module, raising=False)


def test_run_of_a_perfect_generator_matches_the_real_clips(toy_dataset, tmp_path, monkeypatch):
    config = toy_config(toy_dataset, tmp_path)
    fake = FakeSampling(toy_dataset)
    install(monkeypatch, fake)
    messages = []
    result = evaluate.run(config, tmp_path / "run", log=messages.append)

    assert fake.calls[0] == ("load_model", str(tmp_path / "run"), None, True)
    _, captions, frames, options = fake.calls[1]
    val = toy_dataset.split("val")
    chosen = [0, 2, 3, 5, 6, 8]  # 6 of 9, evenly spaced (rounded 0, 1.6, 3.2, 4.8, 6.4, 8)
    assert captions == [val.captions[i][0] for i in chosen]
    assert frames == [min(len(val.motions[i]), 40) for i in chosen]
    assert options["sampler"] == "ddim" and options["steps"] == 50 and options["num_samples"] == 1

    path = tmp_path / "run" / "eval" / "metrics_step7.json"
    assert result["output"] == str(path)
    record = json.loads(path.read_text())
    metrics = record["metrics"]
    for name in (
        "jitter/acceleration",
        "jitter/jerk",
        "bone_error/mean",
        "speed/hands_mean",
        "speed/feet_p95",
        "diversity",
        "conditioning_accuracy",
    ):
        assert metrics[name]["generated"] == pytest.approx(metrics[name]["real"], rel=1e-5, abs=1e-6), name
    assert metrics["bone_error/mean"]["real"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["conditioning_accuracy"]["real"] == 1.0
    assert metrics["frechet/features"]["generated"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["frechet/features"]["real"] > 0.0
    assert metrics["fgd"] == {"real": None, "generated": None}  # no autoencoder: said, not left out
    assert any("train_autoencoder" in n for n in record["notes"]) and record["fgd_autoencoder"] is None
    assert any("metric" in m and "generated" in m for m in messages)  # the printed table

    evaluate.run(config, tmp_path / "run", log=messages.append)  # never overwrites: a suffix, said
    folder = tmp_path / "run" / "eval"
    assert (folder / "metrics_step7_1.json").is_file()
    said = f"{folder / 'metrics_step7.json'} exists already (kept as it is); writing the metrics to "
    assert said + f"{folder / 'metrics_step7_1.json'} instead" in messages


def test_an_eval_output_that_cannot_be_written_fails_before_sampling(toy_dataset, tmp_path, monkeypatch):
    """A metrics file under a read-only workdir had failed after the sampling and the table, with a bare
    errno: now before any sampling, naming eval.output."""
    (tmp_path / "a_file").write_text("mine")
    config = toy_config(toy_dataset, tmp_path)
    config.eval.output = str(tmp_path / "a_file" / "metrics.json")
    fake = FakeSampling(toy_dataset)
    install(monkeypatch, fake)
    with pytest.raises(errors.EvaluationError, match=r"a_file: cannot write the metrics there \(not a fold"):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert [call[0] for call in fake.calls] == ["load_model"]
    config.eval.output = str(tmp_path / "run" / "eval" / "metrics.json")
    monkeypatch.setattr(
        evaluate.os, "access", lambda *args: False
    )  # as a read-only folder (root ignores modes)
    with pytest.raises(errors.EvaluationError, match=r": cannot write the metrics there \(permission denied"):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "eval").exists()


def test_the_real_columns_reference_clips_match_each_real_clips_class_then_length():
    """matched_reference: per real clip in turn, an unused training clip of its class nearest its length
    (lowest index on ties); a class with none left, or no class, takes the nearest unused clip of any
    class; all used, they are used again. Worked by hand."""
    train_lengths = [48, 70, 52, 61, 59]
    train_classes = ["wave", "clap", "wave", "bow", "clap"]
    picks = evaluate.matched_reference(
        [50, 60, 55, 56, 65, 40, 66],
        ["wave", "clap", "wave", "wave", None, "shrug", "bow"],
        train_lengths,
        train_classes,
    )
    # 50 wave: 48 and 52 tie -> 0; 60 clap: 59 -> 4; 55 wave: 52 -> 2; 56 wave: none left -> 61 (bow) -> 3;
    # 65 no class: 70 -> 1; then all are used: 40 shrug -> 48 -> 0; 66 bow: 61 -> 3.
    assert picks.tolist() == [0, 4, 2, 3, 1, 0, 3]


def test_a_real_column_reference_of_another_class_is_noted():
    """Three real 'wave' clips and one training 'wave' clip: matched_reference takes it for the first and
    'nod' clips for the other two (worked by hand), so the note that the reference shares each real clip's
    class does not hold for 2 of 3, and a note says so; with a 'wave' clip for each, no such note."""
    rng = np.random.default_rng(0)
    real_motion, lengths = evaluate._pad([rng.normal(size=(40, 6)).astype(np.float32) for _ in range(3)])
    real = evaluate.Clips(real_motion, lengths, ("wave a", "wave b", "wave c"), None)
    train = [rng.normal(size=(40, 6)).astype(np.float32) for _ in range(6)]
    common = dict(skeleton=None, representation="positions", fps=FPS)
    for captions, expected in (
        (["so wave"] + ["so nod"] * 5, "for 2 of the 3 real clips no unused training clip of their class"),
        (["so wave"] * 3 + ["so nod"] * 3, None),
    ):
        notes = evaluate.prepare_comparison(real, train, captions, **common).head_notes
        other = [n for n in notes if "another class stands in" in n]
        assert len(other) == (expected is not None), notes
        assert expected is None or expected in other[0]


def test_the_real_column_compares_like_with_like(toy_dataset, tmp_path, monkeypatch):
    """evaluate.run's real column of the Fréchet distances: the training clips it takes share each real
    clip's class (the toy captions name their gesture), and the note says how they were chosen."""
    config = toy_config(toy_dataset, tmp_path)
    install(monkeypatch, FakeSampling(toy_dataset))
    taken = []
    original = evaluate.matched_reference
    monkeypatch.setattr(evaluate, "matched_reference", lambda *args: taken.append(args) or original(*args))
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    (_, real_classes, _, train_classes), picks = taken[0], original(*taken[0])
    assert None not in real_classes and [train_classes[i] for i in picks] == list(real_classes)
    assert any("each of its real clip's class and nearest its length" in note for note in record["notes"])


def test_run_of_a_noisy_generator_reports_the_noise(toy_dataset, toy_autoencoder, tmp_path, monkeypatch):
    config = toy_autoencoder[0].copy_and_resolve_references()
    config.eval.output = str(tmp_path / "noisy.json")
    install(monkeypatch, FakeSampling(toy_dataset, noise=0.5))
    metrics = evaluate.run(config, tmp_path / "run", log=lambda _: None)["metrics"]
    assert json.loads((tmp_path / "noisy.json").read_text())["metrics"] == metrics
    assert metrics["jitter/acceleration"]["generated"] > 5 * metrics["jitter/acceleration"]["real"]
    assert metrics["bone_error/mean"]["generated"] > 0.01
    assert metrics["fgd"]["generated"] > 0.0 and metrics["fgd"]["real"] > 0.0


def test_fgd_of_clips_shorter_than_its_window_says_why_it_is_nan(
    toy_dataset, toy_autoencoder, tmp_path, monkeypatch
):
    """A model whose max_motion_length is below the autoencoder's window: no window to compare, FGD NaN,
    and a note saying why (it said only "0 windows")."""
    config = toy_autoencoder[0].copy_and_resolve_references()
    config.eval.output = str(tmp_path / "short.json")
    install(monkeypatch, FakeSampling(toy_dataset, max_motion_length=10))
    result = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert np.isnan(result["metrics"]["fgd"]["generated"])
    window = fgd.load_autoencoder(toy_autoencoder[1]).window
    assert any(f"FGD is NaN: its autoencoder reads windows of {window} frames" in n for n in result["notes"])


def test_run_rejects_a_dataset_of_another_feature_size(toy_dataset, tmp_path, monkeypatch):
    config = toy_config(toy_dataset, tmp_path)
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    fake.load_model = lambda *a, **k: types.SimpleNamespace(
        **{**vars(original(*a, **k)), "mean": np.zeros(7)}
    )
    install(monkeypatch, fake)
    with pytest.raises(UserError, match="takes 7 positions features per frame.*data.root"):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)


@pytest.mark.parametrize("change", ["features", "fps"])
def test_a_refusal_of_other_data_names_the_data_the_run_trained_on_and_the_way_on(
    toy_dataset, tmp_path, monkeypatch, change
):
    """A data.root of another skeleton or representation (other features per frame), or of another rate:
    the refusal names both layouts, the data the checkpoint's run trained on and how to evaluate on it
    (it had said "point data.root at the data it was trained on", leaving the user to find which)."""
    config = toy_config(toy_dataset, tmp_path)
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    trained = str(tmp_path / "where_it_trained")
    changed = (
        {"mean": np.zeros(228), "representation": "axis_angle"} if change == "features" else {"fps": 60.0}
    )

    def load_model(*args, **kwargs):
        loaded = vars(original(*args, **kwargs))
        metadata = {**loaded["metadata"], "data_root": trained}
        return types.SimpleNamespace(**{**loaded, **changed, "metadata": metadata})

    fake.load_model = load_model
    install(monkeypatch, fake)
    with pytest.raises(UserError) as error:
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    message = str(error.value)
    assert f"its run trained on data.root={trained}" in message, message
    assert "evaluate without --config and --config.data.* overrides" in message, message
    if change == "features":
        assert "takes 228 axis_angle features per frame" in message, message
        assert f"data.root={toy_dataset.root} holds 18 positions features per frame" in message, message
    assert not (tmp_path / "run" / "eval").exists()


def test_a_config_of_another_representation_is_refused_before_preparing_its_data(
    toy_dataset, tmp_path, monkeypatch
):
    """`--mode eval --config configs/beat_rot.py` (rotation_6d now) with a run trained when that file named
    axis_angle, its data.root not prepared: the refusal comes before preparation (it had prepared the whole
    dataset from data.raw_root, then refused the checkpoint's 228 features), naming both layouts and the
    way on; nothing is written."""
    config = toy_config(toy_dataset, tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    config.data.source, config.data.raw_root = "beat", str(raw)
    config.data.root, config.data.representation = str(tmp_path / "beat_rotation_6d"), "rotation_6d"
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    fake.load_model = lambda *a, **k: types.SimpleNamespace(
        **{**vars(original(*a, **k)), "mean": np.zeros(228), "representation": "axis_angle"}
    )
    install(monkeypatch, fake)
    with pytest.raises(UserError) as error:
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    message = str(error.value)
    assert "takes axis_angle features" in message and "data.representation='rotation_6d'" in message, message
    assert "is not prepared" in message and "evaluate without --config" in message, message
    assert not (tmp_path / "beat_rotation_6d").exists() and not (tmp_path / "run" / "eval").exists()


def test_run_rejects_a_dataset_at_another_frame_rate(toy_dataset, tmp_path, monkeypatch):
    """Same features, another rate (BEAT positions at 30 and at 60 fps are both 264 wide): every per-second
    metric would be scaled by the dataset's rate, not the checkpoint's; refused, naming both, nothing
    written."""
    config = toy_config(toy_dataset, tmp_path)
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    fake.load_model = lambda *a, **k: types.SimpleNamespace(**{**vars(original(*a, **k)), "fps": 2 * FPS})
    install(monkeypatch, fake)
    with pytest.raises(UserError, match=rf"at {2 * FPS:g} fps \(.*\) but the dataset .* at {FPS:g} fps"):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "eval").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"), [("split", "dev", "eval.split"), ("num_clips", -1, "eval.num_clips")]
)
def test_run_names_a_bad_eval_field(toy_dataset, tmp_path, monkeypatch, field, value, message):
    config = toy_config(toy_dataset, tmp_path)
    config.eval[field] = value
    install(monkeypatch, FakeSampling(toy_dataset))
    with pytest.raises(UserError, match=message):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "eval").exists()


def test_evaluated_captions_longer_than_the_model_reads_are_noted_once(toy_dataset, tmp_path, monkeypatch):
    """Eval samples each clip's caption with generate's CaptionCutWarning silenced (not a warning per
    repeat), and had said nothing of captions cut to model.text_max_length, as training and sampling say
    of theirs. One note in the report. Counted by hand: a vocabulary of every toy caption's words reads
    "so wave number 0 of val" as 6 tokens, 5 of which fit text_max_length 7 besides bos and eos."""
    from motion_ddpm_jax import text

    words = [c[0] for name in ("train", "val", "test") for c in toy_dataset.split(name).captions]
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    reads = {}

    def load_model(*args, **kwargs):
        loaded = vars(original(*args, **kwargs))
        return types.SimpleNamespace(
            **loaded, tokenizer=text.Tokenizer.build(words), text_max_length=reads["length"]
        )

    fake.load_model = load_model
    install(monkeypatch, fake)
    config = toy_config(toy_dataset, tmp_path)
    config.eval.repeats = 2
    for length, expected in ((8, 0), (7, 1)):
        reads["length"] = length
        config.eval.output = str(tmp_path / f"reads_{length}.json")
        notes = evaluate.run(config, tmp_path / "run", log=lambda _: None)["notes"]
        cut = [n for n in notes if "captions evaluated take more than" in n]
        assert len(cut) == expected, notes
    assert re.fullmatch(
        r"6 of the 6 val captions evaluated take more than the 5 tokens that model.text_max_length=7 holds "
        r"besides bos and eos \(e.g. clip val_(\w+)_(\d)'s 'so \1 number \2 of val', 6 tokens\): their "
        r"samples are of their first 5 tokens, as training read its captions",
        cut[0],
    ), cut[0]


def test_run_without_a_config_reads_the_data_the_checkpoint_was_trained_on(
    toy_dataset, tmp_path, monkeypatch
):
    """launch.py --mode eval without --config: the real clips come from the checkpoint's run's data.*
    (here the toy set, while the config at hand points at a folder that does not exist), a data field
    the saved config lacks counts as its default, and a data field set on the command line stays the
    user's. The metrics equal those of the run given the toy config."""
    config = toy_config(toy_dataset, tmp_path)
    fake = FakeSampling(toy_dataset)
    saved = config.data.to_dict()
    del saved["std_floor"]  # a field added after the run started
    original = fake.load_model
    fake.load_model = lambda *a, **k: types.SimpleNamespace(
        **{**vars(original(*a, **k)), "metadata": {"config": {"data": saved, "model": {"latent_dim": 3}}}}
    )
    install(monkeypatch, fake)
    expected = evaluate.run(config, tmp_path / "given", log=lambda _: None)["metrics"]

    elsewhere = toy_config(toy_dataset, tmp_path)
    elsewhere.data.root, elsewhere.data.source = str(tmp_path / "no_such_data"), "beat"
    messages = []
    result = evaluate.run(elsewhere, tmp_path / "run", log=messages.append, data_from_checkpoint=True)
    assert result["metrics"] == expected
    assert any(f"data.root={toy_dataset.root}" in m for m in messages)
    merged = lineage.with_checkpoint_data(elsewhere, {"data": saved})
    assert merged.data.std_floor == base_config().data.std_floor and merged.data.root == str(toy_dataset.root)
    assert merged.eval.num_clips == 6 and elsewhere.data.root == str(tmp_path / "no_such_data")  # a copy
    kept = lineage.with_checkpoint_data(elsewhere, {"data": saved}, keep=["root"])
    assert kept.data.root == str(tmp_path / "no_such_data") and kept.data.source == "prepared"
    messages = []
    with pytest.raises(UserError, match="no_such_data"):
        evaluate.run(
            elsewhere, tmp_path / "run", log=messages.append, data_from_checkpoint=True, data_set=["root"]
        )
    given = f"real clips from data.root={tmp_path / 'no_such_data'} (--config.data.root; the checkpoint's run"
    assert any(m.startswith(given) for m in messages), messages  # the user's folder, not the trained one's


def test_a_data_root_given_that_holds_no_data_is_refused_not_prepared(toy_dataset, tmp_path, monkeypatch):
    """`--mode eval --config.data.root=<a slip of the path>` of a run whose data.source prepares (synthetic
    or beat): eval had written the demo set into data.raw_root and prepared the slip's folder from it (a
    long build for BEAT, a copy of the run's data at best). Refused before anything is written, naming the
    folder, the run's data and --mode prepare. Prepared as before: the run's own data.root gone since (as
    training would), or with a data.raw_root given too."""
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    raw = tmp_path / "raw"
    saved = {**toy_config(toy_dataset, tmp_path).data.to_dict(), "source": "synthetic", "raw_root": str(raw)}

    def load_model(*args, **kwargs):
        loaded = original(*args, **kwargs)
        return types.SimpleNamespace(
            **{**vars(loaded), "metadata": {**loaded.metadata, "config": {"data": saved}}}
        )

    fake.load_model = load_model
    install(monkeypatch, fake)
    config = toy_config(toy_dataset, tmp_path)
    config.data.root = str(tmp_path / "prepard")
    for from_checkpoint in (True, False):
        if not from_checkpoint:  # --config of the run's data.*, and the slip on the command line
            config.data.source, config.data.raw_root = "synthetic", str(raw)
        with pytest.raises(errors.EvaluationError) as caught:
            evaluate.run(
                config,
                tmp_path / "run",
                lambda _: None,
                data_from_checkpoint=from_checkpoint,
                data_set=["root"],
            )
        assert str(caught.value).startswith(
            f"--config.data.root={tmp_path / 'prepard'}: no prepared data there (no dataset.json), and not "
            f"the data the checkpoint's run trained on (data.root={toy_dataset.root}); "
        ), caught.value
        prepare = f"--mode prepare --config <config> --config.data.root={tmp_path / 'prepard'}`"
        assert prepare in str(caught.value)
        assert not (tmp_path / "prepard").exists() and not raw.exists()
    # What stays as it was: the run's own folder; a raw_root given too; a data.root from a config file.
    check = evaluate.check_given_data_root
    check(config, str(tmp_path / "prepard"), ["root"])
    check(config, str(toy_dataset.root), ["root", "raw_root"])
    check(config, str(toy_dataset.root), [])
    config.data.source = "prepared"  # (reading it says what is missing)
    check(config, str(toy_dataset.root), ["root"])


def test_the_refusals_before_preparing_quote_the_folder_and_leave_an_empty_data_root_to_its_own_error(
    toy_dataset, tmp_path, monkeypatch
):
    """The --mode prepare command of a data.root given that holds nothing runs as shown (a folder with a
    space quoted for the shell); and an empty data.root with another representation is the empty field's
    error, not a refusal of a folder "data.root= is not prepared" (./dataset.json looked for)."""
    config = toy_config(toy_dataset, tmp_path)
    config.data.source, config.data.root = "synthetic", str(tmp_path / "my data")
    with pytest.raises(errors.EvaluationError) as caught:
        evaluate.check_given_data_root(config, str(toy_dataset.root), ["root"])
    assert f"--config.data.root='{tmp_path / 'my data'}'`" in str(caught.value), caught.value
    fake = FakeSampling(toy_dataset)
    original = fake.load_model
    fake.load_model = lambda *a, **k: types.SimpleNamespace(
        **{**vars(original(*a, **k)), "representation": "axis_angle"}
    )
    install(monkeypatch, fake)
    config.data.root, config.data.raw_root = "", str(tmp_path / "raw")
    with pytest.raises(UserError, match=r"^data\.root is empty; set --config\.data\.root="):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "raw").exists()


def test_a_relative_data_root_missing_from_here_is_the_folder_the_run_trained_on(tmp_path, monkeypatch):
    """Evaluating without a config from another folder: the checkpoint's relative data.root means another
    folder there (or none), so the absolute folder the run recorded is read (not a new dataset prepared
    in the current folder, nor another folder of that name); the relative one where it names the trained
    folder, or where that is gone; a data.root given on the command line stays the user's."""
    trained = tmp_path / "project" / "data" / "demo"
    trained.mkdir(parents=True)
    saved = {"data": {**base_config().data.to_dict(), "root": "data/demo"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = base_config()
    assert lineage.with_checkpoint_data(config, saved, (), str(trained)).data.root == str(trained)
    assert lineage.with_checkpoint_data(config, saved).data.root == "data/demo"  # an older checkpoint
    gone = str(tmp_path / "gone")
    assert lineage.with_checkpoint_data(config, saved, (), gone).data.root == "data/demo"
    config.data.root = "mine"
    assert lineage.with_checkpoint_data(config, saved, ["root"], str(trained)).data.root == "mine"
    monkeypatch.chdir(tmp_path / "project")
    assert lineage.with_checkpoint_data(base_config(), saved, (), str(trained)).data.root == "data/demo"
    # Another folder with a data/demo of its own (a demo set prepared in another clone): the run's, not it.
    (tmp_path / "clone" / "data" / "demo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "clone")
    assert lineage.with_checkpoint_data(base_config(), saved, (), str(trained)).data.root == str(trained)
    assert lineage.with_checkpoint_data(base_config(), saved, (), gone).data.root == "data/demo"


def test_an_eval_output_that_is_a_folder_is_refused(tmp_path, monkeypatch):
    """eval.output names a file: a folder is refused (at the start of a run, before its sampling), and
    '.' or '..' never become a file named '_1' beside the folder."""
    with pytest.raises(errors.EvaluationError, match=r"is a folder; eval.output names the metrics file"):
        evaluate.write_new_json(tmp_path, {"a": 1})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(errors.EvaluationError, match="is a folder"):
        evaluate.write_new_json(Path("."), {"a": 1})
    config = base_config()
    config.eval.output = str(tmp_path)
    with pytest.raises(errors.EvaluationError, match=r"eval.output .* is a folder"):
        evaluate.run(config, tmp_path / "no_run", log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_conditioning_accuracy_says_why_it_is_nan_when_no_compared_caption_is_a_training_class():
    """Captions whose classes the training split never has (sentences rarely repeat across splits): both
    columns NaN, as before, and now a note that says why (the note had named only the classes and the
    chance level)."""
    rng = np.random.default_rng(0)
    train = [rng.standard_normal((30, 6)).astype(np.float32) for _ in range(12)]
    captions = ["wave" if i % 2 else "nod" for i in range(12)]

    def clips(names):
        motion = rng.standard_normal((len(names), 30, 6)).astype(np.float32)
        return evaluate.Clips(motion, np.full(len(names), 30), tuple(names), None)

    table, notes = evaluate.compare(
        clips(["clap", "bow"]), clips(["clap", "bow"]), train, captions, skeleton=None,
        representation="humanml3d", fps=20.0,
    )  # fmt: skip
    assert np.isnan(table["conditioning_accuracy"]["real"])
    assert np.isnan(table["conditioning_accuracy"]["generated"])
    assert [n for n in notes if n.startswith("conditioning accuracy is NaN: none of the 2 compared clips")]
    table, notes = evaluate.compare(
        clips(["wave", "nod"]), clips(["wave", "nod"]), train, captions, skeleton=None,
        representation="humanml3d", fps=20.0,
    )  # fmt: skip
    assert not np.isnan(table["conditioning_accuracy"]["real"])
    assert not [n for n in notes if "is NaN" in n]
    # One of three compared clips has a training class: the accuracy is of that one, and the note says so
    # (it had read as the accuracy over all three).
    table, notes = evaluate.compare(
        clips(["wave", "clap", "bow"]), clips(["wave", "clap", "bow"]), train, captions, skeleton=None,
        representation="humanml3d", fps=20.0,
    )  # fmt: skip
    assert table["conditioning_accuracy"]["real"] in (0.0, 1.0)  # one clip scored
    assert [
        n
        for n in notes
        if n.endswith("scored on the 1 of the 3 compared clips whose class the training split has")
    ]


@pytest.mark.parametrize(
    ("captions", "said"),
    [
        (["a person walks"] * 12, "every training clip has the caption 'a person walks': one class"),
        ([f"a person walks {i} steps" for i in range(70)], "captions are free text (70 distinct training"),
    ],
)
def test_a_skipped_conditioning_accuracy_says_why(captions, said):
    """One caption for every training clip (a KIT-like set) had been called free text; it is one class.
    Free text names how many distinct captions there are, against the classes a caption may name."""
    rng = np.random.default_rng(0)
    train = [rng.standard_normal((30, 6)).astype(np.float32) for _ in captions]
    real = evaluate.Clips(
        rng.standard_normal((2, 30, 6)).astype(np.float32), np.full(2, 30), ("a", "b"), None
    )
    table, notes = evaluate.compare(
        real, real, train, captions, skeleton=None, representation="humanml3d", fps=20.0
    )
    assert "conditioning_accuracy" not in table
    assert [n for n in notes if n.startswith(said) and n.endswith("conditioning accuracy skipped")], notes


def test_a_frechet_distance_below_the_real_columns_is_noted_as_noise_not_a_better_model():
    """The generated clips scoring closer to the real ones than other real clips do (here: the real clips
    themselves, distance 0) is noted as the estimate's noise or a lack of variety; clips far from the real
    ones (shifted by 10 standard deviations) get no such note."""
    rng = np.random.default_rng(1)
    captions = [f"a person walks {i} steps" for i in range(70)]
    train = [rng.standard_normal((30, 6)).astype(np.float32) for _ in captions]
    motion = rng.standard_normal((12, 30, 6)).astype(np.float32)
    real = evaluate.Clips(motion, np.full(12, 30), tuple(captions[:12]), None)
    table, notes = evaluate.compare(
        real, real, train, captions, skeleton=None, representation="humanml3d", fps=20.0
    )
    real_value = table["frechet/features"]["real"]
    assert table["frechet/features"]["generated"] == pytest.approx(0.0, abs=1e-6) and real_value > 0
    below = [n for n in notes if n.startswith("frechet/features: the generated clips score")]
    assert below == [
        f"frechet/features: the generated clips score {table['frechet/features']['generated']:.4g}, "
        f"below the real column's {real_value:.4g} (other real clips of their kind, which motion as real as "
        "the data's matches on average): at 12 clips that is the estimate's noise, or samples of less "
        "variety than real motion, not a model better than the data; compare models on more clips "
        "(eval.num_clips=0: the whole split) and over eval.repeats"
    ]
    far = evaluate.Clips(motion + 10.0, np.full(12, 30), real.captions, None)
    table, notes = evaluate.compare(
        real, far, train, captions, skeleton=None, representation="humanml3d", fps=20.0
    )
    assert table["frechet/features"]["generated"] > table["frechet/features"]["real"]
    assert not [n for n in notes if "below the real column" in n]


# ------------------------------------------------------------------------------------------ the report
def resplit(dataset, root):
    """`dataset`'s clips split otherwise (as another data.split_seed would): its val clips and the last 9
    training clips are the training split, its first 9 training clips the val split."""
    train, val = dataset.split("train"), dataset.split("val")

    def part(name, clips):
        ids, motions, captions = zip(*clips, strict=True)
        return motion_text.Split(name, ids, motions, captions)

    def clips(split, chosen):
        return [(split.ids[i], split.motions[i], split.captions[i]) for i in chosen]

    splits = {
        "train": part("train", clips(val, range(len(val))) + clips(train, range(9, len(train)))),
        "val": part("val", clips(train, range(9))),
    }
    info = {"representation": "positions", "fps": FPS, "source": "test"}
    return motion_text.write_dataset(root, splits, info, dataset.skeleton)


def float64_stats(motions, std_floor=1e-2):
    frames = np.concatenate([np.asarray(m, np.float64) for m in motions])
    return frames.mean(axis=0), np.maximum(frames.std(axis=0), std_floor)


def test_run_refuses_a_checkpoint_that_trained_on_other_data(toy_dataset, tmp_path, monkeypatch):
    """A checkpoint trained on another split of the clips (here its training split holds the first 9
    training clips of the data eval is pointed at, and its val clips): its statistics are not the data's,
    so eval.split may hold clips it trained on. Refused before any sampling, naming both data roots and
    split seeds and how to point at the right data; the gaps it names are those of float64 statistics of
    the two training splits. Statistics equal to float32 rounding pass."""
    other = resplit(toy_dataset, tmp_path / "other")
    fake = FakeSampling(toy_dataset)
    original = FakeSampling(other).load_model  # its statistics and data.root are the other split's

    def trained_on_other(*args, **kwargs):
        fake.calls.append(("load_model",))
        loaded = original(*args, **kwargs)
        loaded.metadata["config"]["data"]["split_seed"] = 1
        return loaded

    fake.load_model = trained_on_other
    install(monkeypatch, fake)
    config = toy_config(toy_dataset, tmp_path)  # points at the toy data: its val clips trained the run
    with pytest.raises(UserError) as refused:
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    message = str(refused.value)
    assert (
        "trained on other data" in message and "val split may hold clips the checkpoint trained on" in message
    )
    assert f"trained on data.root={other.root} with data.split_seed=1" in message
    assert f"here data.root={toy_dataset.root}, data.split_seed=0 (the config's" in message
    assert "Evaluate without --config" in message and "--config.data.root" in message
    mean_here, std_here = float64_stats(toy_dataset.split("train").motions)
    mean_run, std_run = float64_stats(other.split("train").motions)
    gap = float(re.search(r"means by up to ([0-9.e+-]+) std", message).group(1))
    assert gap == pytest.approx((np.abs(mean_here - mean_run) / std_run).max(), rel=5e-3)
    percent = float(re.search(r"stds by up to ([0-9.e+-]+)%", message).group(1))
    assert percent == pytest.approx(100 * np.abs(std_here / std_run - 1).max(), rel=5e-2)
    assert [call[0] for call in fake.calls] == ["load_model"]  # nothing sampled
    assert not (tmp_path / "run").exists()

    same = FakeSampling(toy_dataset)
    rounded = same.load_model
    same.load_model = lambda *a, **k: types.SimpleNamespace(
        **{
            **vars(rounded(*a, **k)),
            "mean": np.nextafter(toy_dataset.mean, np.float32(np.inf)),  # one float32 step up
            "std": np.nextafter(toy_dataset.std, np.float32(0)),
        }
    )
    install(monkeypatch, same)
    assert evaluate.run(config, tmp_path / "run", log=lambda _: None)["num_clips"] == 6


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_the_report_records_the_sampler_settings_used(toy_dataset, tmp_path, monkeypatch, sampler):
    """The report's `sample` holds the settings the sampling used: DDPM takes every diffusion step (the
    checkpoint's DIFFUSION_STEPS, not sample.steps) and reads neither eta nor ddim_spacing; num_samples,
    num_frames and text (unused: one sample per clip at its length) are not recorded; `eval` holds no
    autoencoder_* fields (the stored autoencoder's settings are in `fgd`). sample.group_lengths reaches
    generate (auto: None, the backend's default) but is not recorded: a sample is the same either way."""
    config = toy_config(toy_dataset, tmp_path)
    config.sample.sampler, config.sample.steps, config.sample.eta = sampler, 20, 0.5
    config.sample.group_lengths = "auto" if sampler == "ddpm" else "false"
    config.sample.ddim_spacing, config.sample.guidance_scale, config.sample.seed = "trailing", 2.5, 3
    config.sample.num_samples, config.sample.num_frames, config.sample.text = 5, 99, "never used"
    fake = FakeSampling(toy_dataset)
    install(monkeypatch, fake)
    evaluate.run(config, tmp_path / "run", log=lambda _: None)
    record = json.loads((tmp_path / "run" / "eval" / "metrics_step7.json").read_text())
    ddim = sampler == "ddim"
    assert record["sample"] == {
        "sampler": sampler,
        "steps": 20 if ddim else DIFFUSION_STEPS,
        "eta": 0.5 if ddim else None,
        "ddim_spacing": "trailing" if ddim else None,
        "guidance_scale": 2.5,
        "seed": 3,
        "use_ema": True,
        "checkpoint_step": 7,
    }
    assert record["diffusion_steps"] == DIFFUSION_STEPS
    assert record["eval"] == {"split": "val", "num_clips": 6}
    options = fake.calls[1][3]
    assert (options["sampler"], options["seed"], options["guidance_scale"]) == (sampler, 3, 2.5)
    assert options["num_samples"] == 1
    assert options["group_lengths"] is (None if sampler == "ddpm" else False)


def test_the_report_identifies_the_fgd_autoencoder(toy_dataset, toy_autoencoder, tmp_path, monkeypatch):
    """`fgd`: the autoencoder's folder (absolute), the settings and final loss stored with it and the
    sha256 of its weights file (hashed here from the file's bytes); the Fréchet fits on no more samples
    than dimensions are noted (84 = 4 * 3 * (6 joints + 1) summary features of 6 clips; 6 one-window clips
    in the 8-dimensional latent). Without an autoencoder the key is there, null."""
    config, directory = toy_autoencoder
    config = config.copy_and_resolve_references()
    config.eval.output = str(tmp_path / "with_fgd.json")
    install(monkeypatch, FakeSampling(toy_dataset))
    evaluate.run(config, tmp_path / "run", log=lambda _: None)
    record = json.loads((tmp_path / "with_fgd.json").read_text())
    stored = json.loads((directory / "autoencoder.json").read_text())
    assert record["fgd_autoencoder"]["directory"] == os.path.abspath(directory)
    assert (
        record["fgd_autoencoder"]["weights_sha256"]
        == hashlib.sha256((directory / "autoencoder.npz").read_bytes()).hexdigest()
    )
    settings = record["fgd_autoencoder"]["settings"]
    assert (settings["seed"], settings["steps"], settings["latent"]) == (config.seed, 150, 8)
    assert record["fgd_autoencoder"]["final_loss"] == stored["trained"]["final_loss"]
    assert "autoencoder_steps" not in record["eval"] and "autoencoder_latent" not in record["eval"]
    notes = record["notes"]
    assert any(
        n.startswith(
            "frechet/features: Gaussians in 84 dimensions fitted to 6 real, 6 generated, 6 reference clips"
        )
        for n in notes
    ), notes
    assert any(
        n.startswith("fgd: Gaussians in 8 dimensions fitted to 6 real, 6 generated, 6 reference windows")
        for n in notes
    ), notes

    config.eval.autoencoder_dir, config.eval.output = str(tmp_path / "none"), str(tmp_path / "no_fgd.json")
    record = json.loads(
        Path(evaluate.run(config, tmp_path / "run", log=lambda _: None)["output"]).read_text()
    )
    assert record["fgd_autoencoder"] is None and record["metrics"]["fgd"] == {"real": None, "generated": None}
    assert any(n.startswith("FGD skipped: no autoencoder in") for n in record["notes"])
    assert any(
        f"--mode train_autoencoder --workdir {tmp_path / 'run'} --config.data.root={toy_dataset.root}`" in n
        for n in record["notes"]
    ), record["notes"]
    # (the command it gives trains into the folder eval looks in, the one given, not the default)
    assert any(f"--config.eval.autoencoder_dir={tmp_path / 'none'}, as here" in n for n in record["notes"])


def test_the_log_names_what_two_evaluations_must_share_to_compare():
    """The printed table alone did not say which clips and FGD autoencoder it measured with."""
    clips = evaluate.clips_fingerprint(["a", "b"], [10, 12])
    fgd = {"directory": "/data/fgd", "weights_sha256": "f" * 64, "settings": {"steps": 100, "seed": 3}}
    line = evaluate.comparable_line({"clips": clips, "fgd_autoencoder": fgd})
    digest = hashlib.sha256(b'[["a",10],["b",12]]').hexdigest()
    assert line == (
        f"compare with evaluations of the same clips (sha256 {digest[:12]}) and FGD autoencoder /data/fgd "
        f"(weights sha256 {'f' * 12}, 100 steps, seed 3)"
    )
    assert line.split(" and ")[0] in evaluate.comparable_line({"clips": clips, "fgd_autoencoder": None})


def test_a_single_sample_names_the_column_it_makes_nan():
    """One reference clip makes only the real column NaN (the generated one compares the real clips with
    the generated ones); one real clip makes both; one generated clip the generated column."""
    notes = evaluate._fit_notes("fgd", 16, {"real": 3, "generated": 3, "reference": 1}, "windows")
    assert notes[0].startswith("the real column of fgd is NaN: a Gaussian needs 2 or more windows a side")
    notes = evaluate._fit_notes("fgd", 16, {"real": 3, "generated": 1, "reference": 3}, "windows")
    assert notes[0].startswith("the generated column of fgd is NaN") and "generated has 1" in notes[0]
    notes = evaluate._fit_notes("fgd", 16, {"real": 1, "generated": 3, "reference": 3}, "windows")
    assert notes[0].startswith("fgd is NaN") and "real has 1" in notes[0]
    assert evaluate._fit_notes("fgd", 2, {"real": 30, "generated": 30, "reference": 30}, "windows") == []


def test_sampler_settings_the_checkpoint_refuses_are_refused_before_the_data_is_read(
    toy_dataset, tmp_path, monkeypatch
):
    """sample.steps above the checkpoint's diffusion steps had been refused by the sampler, after the data
    was read and 'evaluating step 7: ...' announced the evaluation."""
    fake = FakeSampling(toy_dataset)
    install(monkeypatch, fake)
    config = toy_config(toy_dataset, tmp_path)
    config.sample.steps = DIFFUSION_STEPS + 1
    messages = []
    with pytest.raises(UserError, match=rf"sample\.steps must be an integer in \[1, {DIFFUSION_STEPS}\]"):
        evaluate.run(config, tmp_path / "run", log=messages.append)
    assert messages == [] and [call[0] for call in fake.calls] == ["load_model"]


def test_one_clip_says_why_diversity_and_the_frechet_distances_are_nan(toy_dataset, tmp_path, monkeypatch):
    """eval.num_clips=1 printed NaN for diversity and both Fréchet distances without a word of why."""
    install(monkeypatch, FakeSampling(toy_dataset))
    config = toy_config(toy_dataset, tmp_path)
    config.eval.num_clips = 1
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    metrics, notes = record["metrics"], record["notes"]
    assert np.isnan(metrics["diversity"]["real"]) and np.isnan(metrics["frechet/features"]["real"])
    assert any(n.startswith("diversity is NaN: the mean distance between pairs of clips") for n in notes)
    assert any(
        n.startswith("frechet/features is NaN: a Gaussian needs 2 or more clips a side, and real, generated")
        for n in notes
    ), notes


def test_eval_on_the_train_split_leaves_the_evaluated_clips_out_of_the_real_columns_reference(
    toy_dataset, toy_autoencoder, tmp_path, monkeypatch
):
    """eval.split=train: the training clips the real column compares with are other than the evaluated
    ones (they had been matched to themselves: class and length equal). Every reference clip's features
    differ from every evaluated clip's; when fewer clips are left than evaluated a note says they are
    reused; with none left the real column is NaN and a note says why."""
    config = toy_autoencoder[0].copy_and_resolve_references()
    config.eval.split, config.eval.output = "train", str(tmp_path / "train.json")
    install(monkeypatch, FakeSampling(toy_dataset, split="train"))
    compared = []
    original = metrics.frechet_distance_of
    monkeypatch.setattr(
        evaluate, "frechet_distance_of", lambda a, b: compared.append((a, b)) or original(a, b)
    )
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    evaluated, reference = compared[0]  # the real column of frechet/features
    assert len(evaluated) == len(reference) == 6
    distances = np.abs(evaluated[:, None] - reference[None]).max(axis=-1)
    assert distances.min() > 1e-3 * np.abs(evaluated).max()  # no evaluated clip among the reference
    assert not any("reuses" in n for n in record["notes"])
    assert any("eval.split=train: the conditioning classifier was trained" in n for n in record["notes"])

    config.eval.num_clips, config.eval.output = 12, str(tmp_path / "twelve.json")
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert any(
        "6 training clips outside the 12 evaluated ones stand in for 12 real clips" in n
        for n in record["notes"]
    )

    config.eval.num_clips, config.eval.output = 0, str(tmp_path / "all.json")
    record = evaluate.run(config, tmp_path / "run", log=lambda _: None)
    assert np.isnan(record["metrics"]["frechet/features"]["real"])
    assert np.isnan(record["metrics"]["fgd"]["real"])
    assert record["metrics"]["frechet/features"]["generated"] == pytest.approx(0.0, abs=1e-6)
    assert any("no training clip is left outside the 18 evaluated ones" in n for n in record["notes"])


def test_the_report_records_absolute_paths_the_clips_versions_device_and_time(
    toy_dataset, tmp_path, monkeypatch
):
    """workdir and data_root as absolute paths (given relative here); the evaluated clips' ids, lengths
    (cut at max_motion_length 40) and sha256 of their [id, length] list; the split seed the data records
    (none here); the positions' unit (the toy skeleton's own, unknown: not BEAT's cm nor HumanML3D's m);
    package versions, the device and the UTC time."""
    monkeypatch.chdir(tmp_path)
    config = toy_config(toy_dataset, tmp_path)
    config.data.root = os.path.relpath(toy_dataset.root, tmp_path)
    install(monkeypatch, FakeSampling(toy_dataset))
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    messages = []
    evaluate.run(config, "run", log=messages.append)
    after = datetime.datetime.now(datetime.UTC)
    # The first eval of a relative workdir: written under its name, no "exists already" said of it.
    assert not [m for m in messages if "exists already" in m], messages
    assert messages[-1] == f"wrote {tmp_path / 'run' / 'eval' / 'metrics_step7.json'}"
    assert messages[-2].startswith("compare with evaluations of the same clips (sha256 ")
    record = json.loads((tmp_path / "run" / "eval" / "metrics_step7.json").read_text())
    assert record["workdir"] == str(tmp_path / "run")
    assert record["data_root"] == str(toy_dataset.root)
    val, chosen = toy_dataset.split("val"), [0, 2, 3, 5, 6, 8]
    ids, lengths = [val.ids[i] for i in chosen], [min(len(val.motions[i]), 40) for i in chosen]
    pairs = json.dumps([[i, n] for i, n in zip(ids, lengths, strict=True)], separators=(",", ":"))
    assert record["clips"] == {
        "sha256": hashlib.sha256(pairs.encode()).hexdigest(),
        "ids": ids,
        "lengths": lengths,
    }
    assert record["split_seed"] is None
    assert record["position_unit"] is None and "in the data's own unit" in record["units"]
    assert record["versions"] == {
        "motion_ddpm_jax": motion_ddpm_jax.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
    }
    assert jax.devices()[0].device_kind in record["device"]
    now = provenance.software(jax.devices()[0])  # (git_dirty may change meanwhile: other tests' files)
    assert {**record["software"], "git_dirty": None} == {**now, "git_dirty": None}
    created = datetime.datetime.strptime(record["created_utc"], "%Y-%m-%dT%H:%M:%SZ")
    assert before <= created.replace(tzinfo=datetime.UTC) <= after


def test_the_split_seed_is_the_one_the_dataset_records():
    recorded = types.SimpleNamespace(info={"fingerprint": {"options": {"split_seed": 4}}})
    assert lineage.split_seed(recorded) == 4
    assert lineage.split_seed(types.SimpleNamespace(info={"source": "test"})) is None


@pytest.mark.parametrize(("clips", "noted"), [(7, True), (8, True), (9, False)])
def test_a_frechet_distance_fitted_on_no_more_samples_than_dimensions_is_noted(clips, noted):
    """Without a skeleton the features are the per-channel mean and std of the values and of their
    velocity: 4 * 2 = 8 dimensions for 2 channels; n clips give a covariance of rank n - 1, singular for
    n <= 8."""
    rng = np.random.default_rng(clips)
    train = [rng.standard_normal((30, 2)).astype(np.float32) for _ in range(12)]

    def side():
        return evaluate.Clips(
            rng.standard_normal((clips, 30, 2)).astype(np.float32), np.full(clips, 30), ("a",) * clips, None
        )

    _, notes = evaluate.compare(
        side(), side(), train, ["a"] * 12, skeleton=None, representation="humanml3d", fps=20.0
    )
    shown = (
        f"frechet/features: Gaussians in 8 dimensions fitted to {clips} real, {clips} generated, "
        f"{clips} reference clips"
    )
    assert any(n.startswith(shown) for n in notes) == noted, notes


# ------------------------------------------------------------------------- a full disk, Ctrl-C, a kill
def test_save_autoencoder_on_a_full_disk_leaves_no_staging_folder_and_names_the_file(
    toy_autoencoder, tmp_path, monkeypatch
):
    from test_files import ENOSPC_TEXT, full_disk

    encoder = fgd.load_autoencoder(toy_autoencoder[1])
    saving = (encoder.params, encoder.mean, encoder.std, encoder.settings, {})
    full_disk(monkeypatch, tmp_path, room=2000)
    with pytest.raises(OSError) as caught:
        fgd.save_autoencoder(tmp_path / "fgd", *saving)
    assert list(tmp_path.iterdir()) == []
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).endswith(f"writing {tmp_path / 'fgd' / 'autoencoder.npz'}: {ENOSPC_TEXT}")
    monkeypatch.undo()
    fgd.save_autoencoder(tmp_path / "fgd", *saving)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fgd"]


def test_save_autoencoder_removes_the_staging_folder_a_killed_process_left(toy_autoencoder, tmp_path):
    from test_files import assert_only_the_dead_ones_removed, leftover_names, make_leftovers

    names = leftover_names("fgd", "partial")
    make_leftovers(tmp_path, names, as_folders=True)
    encoder = fgd.load_autoencoder(toy_autoencoder[1])
    fgd.save_autoencoder(tmp_path / "fgd", encoder.params, encoder.mean, encoder.std, encoder.settings, {})
    assert_only_the_dead_ones_removed(tmp_path, names)
    assert fgd.load_autoencoder(tmp_path / "fgd").settings == encoder.settings


def test_write_new_json_on_a_full_disk_leaves_no_file_and_the_rerun_takes_the_name(tmp_path, monkeypatch):
    """It left a 0-byte metrics_step2000.json, and the rerun wrote metrics_step2000_1.json."""
    from test_files import ENOSPC_TEXT, full_disk

    path = tmp_path / "eval" / "metrics_step2000.json"
    path.parent.mkdir()
    full_disk(monkeypatch, path.parent)
    with pytest.raises(OSError) as caught:
        evaluate.write_new_json(path, {"fid": 1.5})
    assert list(path.parent.iterdir()) == []  # no 0-byte file under the name
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).endswith(f"writing {path}: {ENOSPC_TEXT}")
    monkeypatch.undo()
    assert evaluate.write_new_json(path, {"fid": 1.5}) == path
    assert json.loads(path.read_text()) == {"fid": 1.5}


KILLED_WRITE_NEW_JSON = """
import builtins, io, os, signal, sys
from pathlib import Path
from motion_ddpm_jax import evaluate

real_open = builtins.open
class Killed:
    def __init__(self, handle): self.handle = handle
    def __enter__(self): return self
    def __exit__(self, *args): self.handle.close()
    def __getattr__(self, name): return getattr(self.handle, name)
    def write(self, text):  # half of it reaches the disk, then SIGKILL
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
def opening(file, mode="r", *args, **kwargs):
    handle = real_open(file, mode, *args, **kwargs)
    inside = not isinstance(file, int) and Path(file).parent == Path(sys.argv[1]).parent
    return Killed(handle) if inside and ("w" in mode or "x" in mode) else handle
builtins.open = io.open = opening
evaluate.write_new_json(Path(sys.argv[1]), {"fid": 1.5, "notes": ["a"] * 100})
"""


def test_write_new_json_killed_mid_write_leaves_no_partial_file_under_the_name(tmp_path):
    from test_files import ROOT

    path = tmp_path / "metrics_step2000.json"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITE_NEW_JSON, str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert not path.exists(), "a half-written file under the canonical name"
    assert evaluate.write_new_json(path, {"fid": 1.5}) == path  # not metrics_step2000_1.json
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the killed write's temporary is gone


def test_write_new_json_never_overwrites_even_without_hard_links(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(source), str(destination))

    path = tmp_path / "metrics.json"
    path.write_text("a user's")
    assert evaluate.write_new_json(path, {"a": 1}) == tmp_path / "metrics_1.json"
    monkeypatch.setattr(os, "link", no_links)
    assert evaluate.write_new_json(path, {"a": 2}) == tmp_path / "metrics_2.json"
    assert path.read_text() == "a user's"
    assert [json.loads((tmp_path / f"metrics_{i}.json").read_text())["a"] for i in (1, 2)] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics_1.json", "metrics_2.json"]


def test_the_train_split_reference_leaves_out_sub_clips_and_mirrors_of_the_evaluated_clips():
    """HumanML3D's 'M' copies are the same motion mirrored and `<id>#from-to` its sub-clips: with only the
    evaluated clips left out, 9 of 16 reference clips of an eval on the training split were such twins."""
    ids = ["000001", "000001#0.5-3.0", "M000001", "M000001#1-2", "000002", "M000003", "M000002"]
    assert lineage.related_clips(ids, [0]).tolist() == [0, 1, 2, 3]
    assert lineage.related_clips(ids, [3]).tolist() == [0, 1, 2, 3]  # from the mirror's sub-clip too
    assert lineage.related_clips(ids, [4]).tolist() == [4, 6]
    assert lineage.related_clips(ids, [5]).tolist() == [5]  # no 000003 here: an id of its own
    windows = ["1_ada_0_1_1_000", "1_ada_0_1_1_001"]  # the prepared layout: each clip for itself
    assert lineage.related_clips(windows, [1]).tolist() == [1]


def test_the_refusal_of_other_data_writes_its_gaps_in_plain_percent_and_names_only_what_differs(tmp_path):
    """Stds 8.716 times the run's (float64: 100 * (8.716 - 1) = 771.6%) were written '7.7e+02%'; means equal
    to the run's were written 'means by up to 0 std'."""
    run_mean, run_std = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.25, 2.0])
    loaded = types.SimpleNamespace(mean=run_mean, std=run_std, metadata={})
    config = types.SimpleNamespace(
        data=types.SimpleNamespace(split_seed=0, std_floor=1e-6), eval=types.SimpleNamespace(split="val")
    )

    def refusal(mean, std):
        here = types.SimpleNamespace(root=tmp_path / "other", mean=mean, std=std, info={})
        with pytest.raises(errors.EvaluationError) as refused:
            lineage.check_same_statistics(loaded, here, config, tmp_path / "run")
        return str(refused.value)

    said = refusal(run_mean, run_std * np.array([1.0, 8.716, 1.0]))
    assert "(stds by up to 772%)" in said and "means by up to" not in said
    said = refusal(run_mean + np.array([0.0, 0.75, 0.0]), run_std)  # 0.75 / 0.25 = 3 std
    assert "(means by up to 3 std)" in said and "stds by up to" not in said
    # A mean far from 0 with a small std, within the tolerance of its value (5e-4 <= 1e-5 * 100, accepted
    # alone), is no gap beside a std that differs: it had read "means by up to 5 std, stds by up to 50%".
    run_mean, run_std = np.array([100.0, 0.0]), np.array([1e-4, 1.0])
    loaded.mean, loaded.std = run_mean, run_std
    close = run_mean + np.array([5e-4, 0.0])
    here = types.SimpleNamespace(root=tmp_path / "other", mean=close, std=run_std, info={})
    assert lineage.check_same_statistics(loaded, here, config, tmp_path / "run") == 0  # its own data
    said = refusal(close, run_std * np.array([1.0, 1.5]))
    assert "(stds by up to 50%)" in said and "means by up to" not in said
