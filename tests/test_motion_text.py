"""The prepared layout and the HumanML3D layout: round trips, statistics, sub-clips, errors."""

import json

import numpy as np
import pytest

from motion_ddpm_jax.data import motion_text
from motion_ddpm_jax.data.motion_text import DatasetError, Split
from motion_ddpm_jax.skeleton import beat_skeleton


def make_splits(rng, size=6):
    def split(name, n, offset):
        motions = tuple(
            rng.normal(offset, 1.0, (int(rng.integers(5, 30)), size)).astype(np.float32) for _ in range(n)
        )
        ids = tuple(f"{name}_{i:02d}" for i in range(n))
        captions = tuple((f"caption {name} {i}", f"other {i}") if i % 2 else ("",) for i in range(n))
        return Split(name, ids, motions, captions)

    # val/test are shifted so that statistics over them would differ visibly from train's.
    return {"train": split("train", 5, 0.0), "val": split("val", 2, 10.0), "test": split("test", 2, -10.0)}


def test_write_then_open_round_trips_and_takes_stats_from_train_only(tmp_path):
    rng = np.random.default_rng(0)
    splits = make_splits(rng)
    written = motion_text.write_dataset(
        tmp_path / "ds", splits, {"representation": "positions", "fps": 60.0}, beat_skeleton()
    )
    dataset = motion_text.open_dataset(tmp_path / "ds")
    assert dataset.feature_size == 6 and dataset.fps == 60.0 and dataset.representation == "positions"
    assert dataset.skeleton == beat_skeleton()
    assert dataset.info["counts"] == {"train": 5, "val": 2, "test": 2} == written.info["counts"]
    for name, split in splits.items():
        loaded = dataset.split(name)
        assert loaded.ids == split.ids
        assert loaded.captions == split.captions
        for a, b in zip(loaded.motions, split.motions, strict=True):
            np.testing.assert_array_equal(a, b)
    frames = np.concatenate(splits["train"].motions).astype(np.float64)
    np.testing.assert_allclose(dataset.mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dataset.std, np.maximum(frames.std(0), 1e-2), rtol=1e-5)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no staging folder left behind"


def test_std_is_floored_for_constant_features(tmp_path):
    motions = (np.ones((10, 3), np.float32), np.ones((7, 3), np.float32))
    splits = {"train": Split("train", ("a", "b"), motions, (("x",), ("y",)))}
    dataset = motion_text.write_dataset(tmp_path / "ds", splits, {"representation": "positions", "fps": 30})
    np.testing.assert_array_equal(dataset.std, np.full(3, 1e-2, np.float32))


@pytest.mark.parametrize("brk", ["\n", "\r", "\u2028"])
def test_a_caption_with_a_line_break_is_refused_before_anything_is_written(tmp_path, brk):
    """Captions are stored one a line and read back by lines: one holding a break would come back as two."""
    splits = make_splits(np.random.default_rng(2))
    train = splits["train"]
    splits["train"] = Split(
        "train", train.ids, train.motions, (("good", f"morning{brk}friend"), *train.captions[1:])
    )
    with pytest.raises(DatasetError, match=r"clip 'train_00'.*line break"):
        motion_text.write_dataset(tmp_path / "ds", splits, {"representation": "positions", "fps": 60.0})
    assert list(tmp_path.iterdir()) == []


def test_writing_over_a_non_empty_folder_is_refused_and_leaves_it_alone(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my work")
    with pytest.raises(DatasetError, match="not empty"):
        motion_text.write_dataset(
            target, make_splits(np.random.default_rng(1)), {"representation": "x", "fps": 1}
        )
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "my work"


def test_broken_files_give_errors_naming_the_file(tmp_path):
    root = tmp_path / "ds"
    motion_text.write_dataset(
        root, make_splits(np.random.default_rng(2)), {"representation": "positions", "fps": 60}
    )
    (root / "texts" / "train_01.txt").unlink()
    with pytest.raises(DatasetError, match=r"train_01\.txt: caption file missing"):
        motion_text.open_dataset(root).split("train")
    np.save(root / "motions" / "val_00.npy", np.zeros((4, 5), np.float32))
    with pytest.raises(DatasetError, match=r"val_00\.npy: motion has shape \(4, 5\); expected \[frames, 6\]"):
        motion_text.open_dataset(root).split("val")
    (root / "motions" / "test_00.npy").write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match=r"test_00\.npy: not a readable \.npy"):
        motion_text.open_dataset(root).split("test")
    info = json.loads((root / "dataset.json").read_text())
    del info["feature_size"]
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="missing field 'feature_size'"):
        motion_text.open_dataset(root)


def test_configured_feature_size_mismatch_is_a_clear_error(tmp_path):
    dataset = motion_text.write_dataset(
        tmp_path / "ds", make_splits(np.random.default_rng(3)), {"representation": "positions", "fps": 60}
    )
    dataset.check_feature_size(6)
    with pytest.raises(DatasetError, match=r"model.input_feats is 264 .* has 6 features"):
        dataset.check_feature_size(264)


def test_unknown_folder_says_how_to_prepare(tmp_path):
    with pytest.raises(DatasetError, match="--mode prepare"):
        motion_text.open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        motion_text.open_dataset(tmp_path / "nope")


def write_humanml3d(root, rng):
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    motions = {
        "000001": rng.normal(size=(100, 263)),
        "000002": rng.normal(size=(30, 263)),
        "000003": rng.normal(size=(250, 263)),
    }
    for clip_id, motion in motions.items():
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", motion.astype(np.float32))
    (root / "texts" / "000001.txt").write_text(
        "a person walks forward.#a/DET person/NOUN walk/VERB forward/ADV#0.0#0.0\n"
        "a person waves.#a/DET person/NOUN wave/VERB#1.0#3.5\n"
        "someone strides ahead#someone/PRON stride/VERB ahead/ADV#0.0#0.0\n"
    )
    (root / "texts" / "000002.txt").write_text("too short to keep#too/ADV#0.0#0.0\n")
    (root / "texts" / "000003.txt").write_text(  # too long: MotionDiffuse drops its sub-clips with it
        "a long walk#a/DET long/ADJ walk/NOUN#0.0#0.0\na person jumps.#a/DET person/NOUN#1.0#4.0\n"
    )
    (root / "train.txt").write_text("000001\n000002\n000003\n000404\n")
    np.save(root / "Mean.npy", np.zeros(263, np.float32))
    np.save(root / "Std.npy", np.full(263, 1e-4, np.float32))
    return motions


def test_humanml3d_layout_reads_sub_clips_and_length_limits(tmp_path):
    motions = write_humanml3d(tmp_path, np.random.default_rng(4))
    dataset = motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200)
    assert dataset.feature_size == 263 and dataset.representation == "humanml3d"
    np.testing.assert_array_equal(dataset.std, np.full(263, 1e-2, np.float32))  # floored
    split = dataset.split("train")
    # 000002 (30 frames) is below min_length; 000003 (250 frames) is not below max_length, and its 60-frame
    # sub-clip goes with it, as in MotionDiffuse's loader; 000404 has no motion file (dropped by
    # HumanML3D's processing).
    assert split.ids == ("000001#1-3.5", "000001")
    np.testing.assert_array_equal(split.motions[0], motions["000001"][20:70].astype(np.float32))
    assert split.captions[0] == ("a person waves.",)
    assert split.captions[1] == ("a person walks forward.", "someone strides ahead")


def test_humanml3d_malformed_caption_line_names_file_and_line(tmp_path):
    write_humanml3d(tmp_path, np.random.default_rng(5))
    (tmp_path / "texts" / "000001.txt").write_text("fine#tokens#0#0\nbroken#only-two\n")
    with pytest.raises(DatasetError, match=r"000001\.txt:2: expected 'caption#tokens#from#to'"):
        motion_text.open_dataset(tmp_path).split("train")


def test_humanml3d_config_reads_the_layout_with_motiondiffuse_length_limits(tmp_path):
    import importlib.util
    from pathlib import Path

    from motion_ddpm_jax.data import beat

    path = Path(__file__).resolve().parents[1] / "configs" / "humanml3d.py"
    spec = importlib.util.spec_from_file_location("humanml3d_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.root = str(tmp_path)
    write_humanml3d(tmp_path, np.random.default_rng(6))
    dataset = beat.dataset_from_config(config)
    assert dataset.fps == 20.0 and dataset.feature_size == 263
    split = dataset.split("train")
    assert split.ids == ("000001#1-3.5", "000001")  # 30 frames: under 40, dropped
    assert all(40 <= len(m) < 200 for m in split.motions)


def test_humanml3d_text_files_saved_with_a_byte_order_mark_read_the_same(tmp_path):
    """Split and caption files written by Windows tools start with a BOM: it is neither part of the first
    clip id nor of the first caption."""
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    for root in (plain, marked):
        write_humanml3d(root, np.random.default_rng(4))
    for name in ("train.txt", "texts/000001.txt"):
        (marked / name).write_bytes(b"\xef\xbb\xbf" + (marked / name).read_bytes())
    a, b = (
        motion_text.open_dataset(r, fps=20, min_length=40, max_length=200).split("train")
        for r in (plain, marked)
    )
    assert b.ids == a.ids and b.captions == a.captions
    assert any("a person walks forward." in captions for captions in b.captions)


def test_humanml3d_std_is_floored_at_the_configs_data_std_floor(tmp_path):
    """data.std_floor reaches a HumanML3D-layout folder's Std.npy (it once stayed at 1e-2 whatever the
    config said): a published std of 0.004 is kept under a floor of 1e-4 and raised to 0.01 under 1e-2."""
    from motion_ddpm_jax.config import base_config
    from motion_ddpm_jax.data import beat

    write_humanml3d(tmp_path, np.random.default_rng(6))
    std = np.load(tmp_path / "Std.npy")
    std[0], std[1] = 0.004, 0.5
    np.save(tmp_path / "Std.npy", std.astype(np.float32))
    config = base_config()
    config.data.source, config.data.root, config.data.fps = "prepared", str(tmp_path), 20.0
    config.data.representation = "humanml3d"
    for floor, expected in ((1e-4, 0.004), (1e-2, 0.01)):
        config.data.std_floor = floor
        got = beat.dataset_from_config(config, log=lambda *_: None).std
        np.testing.assert_allclose(got[:2], [expected, 0.5], rtol=1e-6)
