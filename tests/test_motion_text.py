"""The prepared layout and the HumanML3D layout: round trips, statistics, sub-clips, errors."""

import errno
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from motion_ddpm_jax.data import motion_text
from motion_ddpm_jax.data.motion_text import DatasetError, Split
from motion_ddpm_jax.errors import ProjectWarning
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton


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
    beat = beat_skeleton()  # its first two joints: positions of 2 joints are the clips' 6 features
    two_joints = Skeleton(names=beat.names[:2], parents=beat.parents[:2], offsets=beat.offsets[:2])
    written = motion_text.write_dataset(
        tmp_path / "ds", splits, {"representation": "positions", "fps": 60.0}, two_joints
    )
    dataset = motion_text.open_dataset(tmp_path / "ds")
    assert dataset.feature_size == 6 and dataset.fps == 60.0 and dataset.representation == "positions"
    assert dataset.skeleton == two_joints
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


@pytest.mark.parametrize("split_name, bad", [("train", np.nan), ("val", np.inf), ("test", 1e39)])
def test_a_clip_with_values_that_are_not_finite_is_refused_before_anything_is_written(
    tmp_path, split_name, bad
):
    """A NaN in a training clip would have made the written statistics NaN, one in val/test would have
    stopped that split's reading later: write_dataset names the clip and the first bad value instead."""
    splits = make_splits(np.random.default_rng(3))
    split = splits[split_name]
    motion = np.array(split.motions[1], np.float64)
    motion[2, 4] = motion[3, 0] = bad
    splits[split_name] = Split(
        split_name, split.ids, (split.motions[0], motion, *split.motions[2:]), split.captions
    )
    expected = (
        rf"clip '{split.ids[1]}' of the {split_name} split has 2 non-finite values .* the first at frame 2, "
        rf"feature 4 \({re.escape(str(motion[2, 4]))}\)"
    )
    with pytest.raises(DatasetError, match=expected):
        motion_text.write_dataset(tmp_path / "ds", splits, {"representation": "positions", "fps": 60.0})
    assert list(tmp_path.iterdir()) == []


def test_writing_over_a_non_empty_folder_is_refused_and_leaves_it_alone(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my work")
    with pytest.raises(DatasetError, match="not empty"):
        motion_text.write_dataset(
            target, make_splits(np.random.default_rng(1)), {"representation": "positions", "fps": 1}
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
    # A representation this package does not know is named on reading, not left to training's checks.
    info["feature_size"], info["representation"] = 6, "quaternions"
    (root / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(
        DatasetError, match=r"dataset\.json: field 'representation' is 'quaternions'; expected one"
    ):
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
    with pytest.raises(DatasetError, match=r"nope: dataset folder not found .*--config\.data\.root=<folder>"):
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
        said = []
        got = beat.dataset_from_config(config, log=said.append).std
        np.testing.assert_allclose(got[:2], [expected, 0.5], rtol=1e-6)
        raised = int((std < floor).sum())  # the floor had been applied without a word
        floored = [line for line in said if line.startswith(f"data.std_floor ({floor:g}) raised")]
        assert len(floored) == (raised > 0) and (
            not raised or f"raised {raised} of the 263 entries" in floored[0]
        )


# ---------------------------------------------------------------- what loading leaves out, and why


def write_humanml3d_with_every_drop(root):
    """A HumanML3D folder at 20 fps whose train.txt lists a clip for each reason to leave one out (limits
    40 <= T < 200): 000001 is kept (whole, and its 1-3.5 s sub-clip; its 0.5-1 s sub-clip has 10 frames),
    000002 has 30 frames, 000003 250, 000005 an empty caption file, 000404 and 000405 no motion file."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rng = np.random.default_rng(7)
    for clip_id, frames in (("000001", 100), ("000002", 30), ("000003", 250), ("000005", 80)):
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", rng.normal(size=(frames, 4)).astype(np.float32))
        (root / "texts" / f"{clip_id}.txt").write_text(f"clip {clip_id}#clip/NOUN#0.0#0.0\n")
    (root / "texts" / "000001.txt").write_text(
        "a person walks.#a/DET#0.0#0.0\na person waves.#a/DET#1.0#3.5\na quick nod#a/DET#0.5#1.0\n"
    )
    (root / "texts" / "000005.txt").write_text("\n  \n")
    (root / "train.txt").write_text("000001\n000404\n000002\n000003\n000005\n000405\n")
    np.save(root / "Mean.npy", np.zeros(4, np.float32))
    np.save(root / "Std.npy", np.ones(4, np.float32))


def test_humanml3d_split_records_each_clip_it_leaves_out_with_the_reason(tmp_path):
    write_humanml3d_with_every_drop(tmp_path)
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200).split("train")
    assert split.ids == ("000001#1-3.5", "000001")
    assert dict(split.dropped) == {
        "no_motion": ("000404", "000405"),
        "no_captions": ("000005",),
        "too_short": ("000002",),
        "too_long": ("000003",),
        "short_sub_clip": ("000001#0.5-1",),
    }
    # every clip the file lists is either loaded (whole or through a sub-clip) or accounted for
    listed = (tmp_path / "train.txt").read_text().split()
    accounted = {i.split("#")[0] for i in split.ids} | {i for ids in split.dropped.values() for i in ids}
    assert set(listed) <= accounted


def test_humanml3d_captions_without_words_are_left_out_and_a_negative_std_refused(tmp_path):
    """A caption line with nothing before its first '#' had been read as the empty caption, the one
    classifier-free guidance trains as unconditional: such lines are left out and counted, and a clip with
    no other caption is left out as captionless. A negative entry of Std.npy had been floored to
    data.std_floor (that feature then scaled up a million times): refused, naming the file and feature."""
    write_humanml3d_with_every_drop(tmp_path)
    (tmp_path / "texts" / "000001.txt").write_text("a person walks.#a/DET#0.0#0.0\n#a/DET#0.0#0.0\n")
    (tmp_path / "texts" / "000002.txt").write_text("#x/X#0.0#0.0\n")  # (also too short: counted so)
    np.save(tmp_path / "new_joint_vecs" / "000002.npy", np.ones((60, 4), np.float32))
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200).split("train")
    assert split.ids == ("000001",) and split.captions == (("a person walks.",),)
    assert split.dropped["empty_caption"] == ("texts/000001.txt:2",)
    assert split.dropped["no_captions"] == ("000002", "000005")
    std = np.ones(4, np.float32)
    std[2] = -0.5
    np.save(tmp_path / "Std.npy", std)
    with pytest.raises(
        DatasetError, match=r"Std\.npy: standard deviation -0\.5 at feature 2; expected values >= 0"
    ):
        motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200)


def test_describe_dropped_gives_a_line_per_split_with_counts_reasons_and_examples(tmp_path):
    write_humanml3d_with_every_drop(tmp_path)
    dataset = motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200)
    expected = (
        "train: 2 clips kept; left out 2 listed ids with no motion file in new_joint_vecs/ (e.g. 000404, "
        "...); 1 clip with no caption (an empty caption file, or captions without words) (000005); 1 clip "
        "shorter than 40 frames, sub-clips and all "
        "(000002); 1 clip of 200 frames or more, sub-clips and all (000003); 1 sub-clip shorter than 40 "
        "frames (000001#0.5-1)"
    )
    assert motion_text.describe_dropped(dataset, [dataset.split("train")], examples=1) == expected
    # without splits: every split the folder lists is loaded (here train only: no val.txt / test.txt)
    assert motion_text.describe_dropped(dataset, examples=1) == expected
    for clip_id, copy in (("000001", "000011"), ("000002", "000012")):  # val's own ids: none of train's
        for folder, suffix in (("new_joint_vecs", "npy"), ("texts", "txt")):
            (tmp_path / folder / f"{copy}.{suffix}").write_bytes(
                (tmp_path / folder / f"{clip_id}.{suffix}").read_bytes()
            )
    (tmp_path / "val.txt").write_text("000011\n000012\n")
    lines = motion_text.describe_dropped(dataset).splitlines()
    assert lines[0] == expected.replace("(e.g. 000404, ...)", "(000404, 000405)")
    assert lines[1] == (
        "val: 2 clips kept; left out 1 clip shorter than 40 frames, sub-clips and all (000012); 1 sub-clip "
        "shorter than 40 frames (000011#0.5-1)"
    )
    unlimited = motion_text.open_dataset(tmp_path, fps=20)
    (tmp_path / "val.txt").write_text("000011\n")
    assert motion_text.describe_dropped(unlimited, [unlimited.split("val")]) == ""


def test_describe_dropped_on_a_prepared_folder_names_what_training_leaves_out(tmp_path):
    """The prepared layout is loaded whole (evaluation sees every clip); training leaves out the clips under
    data.min_motion_length, and data.max_clip_length does not apply to it: both are said, not silent."""
    lengths = {"a": 5, "b": 12, "c": 30, "d": 8, "e": 20}
    motions = tuple(np.zeros((n, 3), np.float32) for n in lengths.values())
    splits = {"train": Split("train", tuple(lengths), motions, tuple((f"clip {i}",) for i in lengths))}
    motion_text.write_dataset(tmp_path / "ds", splits, {"representation": "positions", "fps": 30})
    dataset = motion_text.open_dataset(tmp_path / "ds", min_length=10, max_length=20)
    split = dataset.split("train")
    assert split.ids == ("a", "b", "c", "d", "e") and dict(split.dropped) == {}
    assert motion_text.describe_dropped(dataset) == (
        "train: of 5 clips, training leaves out 2 shorter than 10 frames (data.min_motion_length: a, d) and "
        "keeps 2 of 20 frames or more (data.max_clip_length applies to the HumanML3D layout only: c, e)"
    )
    assert motion_text.describe_dropped(motion_text.open_dataset(tmp_path / "ds", min_length=6)) == (
        "train: of 5 clips, training leaves out 1 shorter than 6 frames (data.min_motion_length: a)"
    )
    assert motion_text.describe_dropped(motion_text.open_dataset(tmp_path / "ds")) == ""


# ---------------------------------------------------------------- an empty split: the hint fits the layout


def write_prepared(root, info_extra=None, empty="val"):
    splits = make_splits(np.random.default_rng(8))
    splits[empty] = Split(empty, (), (), ())
    info = {"representation": "positions", "fps": 60.0, **(info_extra or {})}
    return motion_text.write_dataset(root, splits, info)


def empty_split_message(dataset, name="val"):
    with pytest.raises(DatasetError) as info:
        dataset.split(name)
    return str(info.value)


def test_empty_split_of_a_written_dataset_says_to_list_ids_or_use_another_split(tmp_path):
    message = empty_split_message(write_prepared(tmp_path / "ds"))
    assert message.startswith(f"{tmp_path / 'ds' / 'val.txt'}: the val split lists no clips")
    assert "List the ids of its clips in val.txt" in message and "motions/<id>.npy" in message
    assert "--config.eval.split=train" in message
    assert "val_fraction" not in message  # raw BEAT preparation's option: nothing to do with this folder


def test_empty_split_of_a_humanml3d_folder_says_to_list_ids_or_use_another_split(tmp_path):
    write_humanml3d(tmp_path, np.random.default_rng(9))
    (tmp_path / "val.txt").write_text("\n")
    message = empty_split_message(motion_text.open_dataset(tmp_path, fps=20))
    assert message.startswith(f"{tmp_path / 'val.txt'}: the val split lists no clips")
    assert "new_joint_vecs/<id>.npy" in message and "--config.eval.split=train" in message
    assert "val_fraction" not in message and "of the 0 it lists" not in message


def test_empty_train_split_does_not_suggest_another_split(tmp_path):
    splits = make_splits(np.random.default_rng(10))
    root = tmp_path / "ds"
    dataset = motion_text.write_dataset(root, splits, {"representation": "positions", "fps": 60.0})
    (root / "train.txt").write_text("")
    message = empty_split_message(dataset, "train")
    assert "List the ids of its clips in train.txt" in message and "eval.split" not in message


@pytest.mark.parametrize(
    "recorded, expected",
    [
        ({"recordings": 9, "fingerprint": {"options": {"val_fraction": 0.0}}}, "with data.val_fraction=0"),
        ({"recordings": 2, "fingerprint": {"options": {"val_fraction": 0.1}}}, "from 2 raw BEAT recording"),
        ({"recordings": 9, "fingerprint": {"options": {"val_fraction": 0.2}}}, "data.min_clip_s"),
        ({}, "a non-zero data.val_fraction (at least one from 3 recordings"),
    ],
)
def test_empty_split_of_a_beat_preparation_names_the_option_that_fills_it(tmp_path, recorded, expected):
    message = empty_split_message(write_prepared(tmp_path / "ds", {"source": "beat", **recorded}))
    assert expected in message and "--config.eval.split=train" in message, message


# ---------------------------------------------------------------- HumanML3D from/to: NaN in any spelling


@pytest.mark.parametrize("nan", ["nan", "NaN", "NAN", "-nan", " NaN "])
def test_humanml3d_nan_from_to_in_any_spelling_reads_as_the_whole_clip(tmp_path, nan):
    write_humanml3d(tmp_path, np.random.default_rng(11))
    (tmp_path / "texts" / "000001.txt").write_text(
        f"a person walks forward.#a/DET#{nan}#{nan}\na person waves.#a/DET#{nan}#3.5\n"
    )
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=40, max_length=200).split("train")
    # NaN reads as 0: the first caption is the whole clip's, the second a sub-clip from 0 s to 3.5 s
    assert split.ids == ("000001#0-3.5", "000001")
    assert split.captions == (("a person waves.",), ("a person walks forward.",))
    assert len(split.motions[0]) == 70 and len(split.motions[1]) == 100


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e400", "-1", "soon", "0x10"])
def test_humanml3d_infinite_negative_or_garbled_from_to_is_refused(tmp_path, value):
    write_humanml3d(tmp_path, np.random.default_rng(12))
    (tmp_path / "texts" / "000001.txt").write_text(f"fine#a/DET#0#0\na person waves.#a/DET#{value}#3.5\n")
    with pytest.raises(DatasetError, match=r"000001\.txt:2: from/to must be finite, non-negative numbers"):
        motion_text.open_dataset(tmp_path, fps=20).split("train")


# ---------------------------------------------------------------- HumanML3D sub-clips: unique ids, 20 fps


def write_tiny_humanml3d(root, texts, listed=None, frames=100):
    """A HumanML3D folder of 4 features: clip <id> is frame i = [i, i, i, i] + 1000 * its number (so a
    slice shows which frames it holds), with the caption lines `texts[<id>]`; train.txt lists `listed`
    (default: every clip of `texts`)."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for number, (clip_id, lines) in enumerate(texts.items()):
        motion = np.repeat(np.arange(frames, dtype=np.float32)[:, None], 4, axis=1) + 1000 * number
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", motion)
        (root / "texts" / f"{clip_id}.txt").write_text("".join(f"{line}\n" for line in lines))
    (root / "train.txt").write_text("".join(f"{i}\n" for i in (listed or texts)))
    np.save(root / "Mean.npy", np.zeros(4, np.float32))
    np.save(root / "Std.npy", np.ones(4, np.float32))


def frame_numbers(motion):
    return motion[:, 0].astype(int) % 1000


def test_humanml3d_spans_that_cut_the_same_frames_make_one_sub_clip_holding_each_caption(tmp_path):
    """Two caption lines of one span describe one sub-motion: one clip (one id) with both captions, as a
    clip's several whole-motion lines make one clip. They once made two clips of the same id."""
    write_tiny_humanml3d(
        tmp_path,
        {
            "000001": [  # 100 frames (5 s at 20 fps)
                "a person walks.#a/DET#0.0#0.0",
                "a person waves.#a/DET#1.0#3.5",  # frames 20:70
                "a person bows.#a/DET#2.0#4.0",  # frames 40:80
                "someone waves a hand#someone/PRON#1.0#3.5",  # 20:70 again
                "a nod#a/DET#0.5#1.0",  # frames 10:20, under min_length 15
                "a person waves once more#a/DET#1.02#3.51",  # int(20.4):int(70.2), 20:70 again
                "a short nod#a/DET#0.5#1.0",  # 10:20 again: dropped, and counted, once
                "the whole walk#the/DET#0#5",  # frames 0:100, the whole motion
                "the walk, all of it#the/DET#0.0#9.0",  # 0:180, cut at the motion's 100: the whole too
            ],
            "000002": ["jumps#t#1.0#3.5", "leaps#t#1.0#3.5"],  # the same span as 000001's, no whole caption
        },
    )
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=15).split("train")
    assert split.ids == ("000001#1-3.5", "000001#2-4", "000001", "000002#1-3.5")
    assert split.captions == (
        ("a person waves.", "someone waves a hand", "a person waves once more"),
        ("a person bows.",),
        ("a person walks.", "the whole walk", "the walk, all of it"),
        ("jumps", "leaps"),
    )
    expected_frames = (range(20, 70), range(40, 80), range(100), range(20, 70))
    for motion, expected in zip(split.motions, expected_frames, strict=True):
        np.testing.assert_array_equal(frame_numbers(motion), list(expected))
    np.testing.assert_array_equal(split.motions[3][:, 0], np.arange(1020, 1070))  # 000002's frames
    assert dict(split.dropped) == {"short_sub_clip": ("000001#0.5-1",)}


def test_humanml3d_spans_that_cut_other_frames_keep_ids_apart_where_short_forms_agree(tmp_path):
    """1.0499999 s and 1.05 s both read "1.05" at 6 digits but start at frames 20 and 21: two sub-clips,
    whose ids give the seconds exactly where the short form would make them one."""
    write_tiny_humanml3d(tmp_path, {"000001": ["early#t#1.0499999#3", "late#t#1.05#3", "whole#t#0#0"]})
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=15).split("train")
    assert split.ids == ("000001#1.0499999-3", "000001#1.05-3", "000001")
    assert split.captions == (("early",), ("late",), ("whole",))
    assert [len(m) for m in split.motions] == [40, 39, 100]
    np.testing.assert_array_equal(frame_numbers(split.motions[1]), np.arange(21, 60))


@pytest.mark.parametrize(
    "listed, message",
    [
        (["000001", "000002", "000001"], r"lists '000001' \(2 times\); expected each clip id once"),
        (["000001", "000001#1-3.5"], r"clip id '000001#1-3.5' holds '#', which names sub-clips"),
    ],
)
def test_humanml3d_split_file_listing_an_id_twice_or_a_sub_clip_id_is_refused(tmp_path, listed, message):
    """Either would give the split two clips of one id (a repeat loads its clip twice)."""
    write_tiny_humanml3d(tmp_path, {"000001": ["waves#t#1.0#3.5", "walks#t#0#0"], "000002": ["bows#t#0#0"]})
    (tmp_path / "train.txt").write_text("".join(f"{i}\n" for i in listed))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'train.txt'))}: {message}"):
        motion_text.open_dataset(tmp_path, fps=20).split("train")


def test_humanml3d_caption_spans_refuse_an_fps_other_than_20_naming_data_fps(tmp_path):
    """The spans are seconds at HumanML3D's 20 fps: at data.fps=30 the 1-3.5 s sub-clip was cut as frames
    30:105 (of a 100-frame motion), not 20:70."""
    write_tiny_humanml3d(tmp_path, {"000001": ["a person walks.#a/DET#0.0#0.0", "waves#t#1.0#3.5"]})
    path = tmp_path / "texts" / "000001.txt"
    for fps, given in ((30, "30"), (12.5, "12.5"), (20.5, "20.5")):
        with pytest.raises(DatasetError) as info:
            motion_text.open_dataset(tmp_path, fps=fps).split("train")
        assert str(info.value).startswith(
            f"{path}:2: data.fps is {given}, but this caption spans 1-3.5 s of its motion; expected "
            "data.fps=20 for the HumanML3D layout: the spans of its caption files are seconds at HumanML3D's "
            "20 fps"
        ), str(info.value)
        assert "--config.data.fps=20" in str(info.value)
    for fps in (None, 20, 20.0000001):  # the default is HumanML3D's 20; float rounding of 20 is 20
        assert motion_text.open_dataset(tmp_path, fps=fps).split("train").ids == ("000001#1-3.5", "000001")


def test_humanml3d_config_with_another_data_fps_is_refused(tmp_path):
    """configs/humanml3d.py with --config.data.fps=30 on a folder with caption spans: a DatasetError (a
    UserError, printed as one paragraph by launch.py) naming data.fps, what it is and what it should be."""
    import importlib.util
    from pathlib import Path

    from motion_ddpm_jax.data import beat
    from motion_ddpm_jax.errors import UserError

    path = Path(__file__).resolve().parents[1] / "configs" / "humanml3d.py"
    spec = importlib.util.spec_from_file_location("humanml3d_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.root, config.data.fps = str(tmp_path), 30.0
    config.data.min_motion_length = 15
    write_tiny_humanml3d(tmp_path, {"000001": ["walks#t#0#0", "waves#t#1.0#3.5"]})
    with pytest.raises(
        UserError, match=r"data\.fps is 30, .* expected data\.fps=20 for the HumanML3D layout"
    ):
        beat.dataset_from_config(config).split("train")
    config.data.fps = 20.0
    assert beat.dataset_from_config(config).split("train").ids == ("000001#1-3.5", "000001")


def test_humanml3d_layout_without_caption_spans_loads_at_any_fps(tmp_path):
    """KIT-ML comes in this layout at 12.5 fps, every caption of the whole clip (`#0.0#0.0`): nothing is cut
    at 20 fps, so its own rate is taken as given."""
    write_tiny_humanml3d(tmp_path, {"00001": ["a person walks#t#0.0#0.0", "walking#t#0.0#0.0"]}, frames=50)
    dataset = motion_text.open_dataset(tmp_path, fps=12.5)
    split = dataset.split("train")
    assert dataset.fps == 12.5
    assert split.ids == ("00001",) and split.captions == (("a person walks", "walking"),)
    np.testing.assert_array_equal(frame_numbers(split.motions[0]), np.arange(50))


def write_layout_folder(root, features, frames=30):
    """A HumanML3D-layout folder of one 30-frame clip of `features` features, captioned as a whole."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    np.save(root / "new_joint_vecs" / "000001.npy", np.zeros((frames, features), np.float32))
    (root / "texts" / "000001.txt").write_text("a person walks#a/DET person/NOUN walk/VERB#0.0#0.0\n")
    (root / "train.txt").write_text("000001\n")
    np.save(root / "Mean.npy", np.zeros(features, np.float32))
    np.save(root / "Std.npy", np.ones(features, np.float32))


@pytest.mark.parametrize(
    ("features", "given", "said", "layout", "speed"),
    [
        (251, 20, "data.fps is 20", "KIT-ML's layout, whose motions are 12.5 fps", "1.6x too fast"),
        (251, None, "no data.fps was given (the default 20)", "KIT-ML's layout, whose motions are 12.5 fps",
         "1.6x too fast"),
        (251, 25.0, "data.fps is 25", "KIT-ML's layout, whose motions are 12.5 fps", "2x too fast"),
        (263, 12.5, "data.fps is 12.5", "HumanML3D's layout, whose motions are 20 fps", "1.6x too slow"),
        (263, 30, "data.fps is 30", "HumanML3D's layout, whose motions are 20 fps", "1.5x too fast"),
    ],
)  # fmt: skip
def test_a_layout_folder_read_at_another_fps_than_its_layouts_warns_and_loads(
    tmp_path, features, given, said, layout, speed
):
    """A KIT-ML folder (251 features) read at the default 20 fps had trained and drawn at 1.6x its speed
    without a word: a UserWarning names data.fps, the rate used and the layout's, and the fix; the folder
    loads all the same, at the rate asked for (the clips may have been resampled)."""
    write_layout_folder(tmp_path, features)
    with pytest.warns(UserWarning) as caught:
        dataset = motion_text.open_dataset(tmp_path, fps=given)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{tmp_path}: {said}, but its {features} features per frame are {layout}")
    own = {251: "12.5", 263: "20"}[features]
    assert f"animations play them {speed}" in message and f"--config.data.fps={own} for" in message
    assert caught[0].filename == __file__  # attributed to open_dataset's caller
    assert dataset.fps == (20.0 if given is None else given)
    assert dataset.split("train").ids == ("000001",)


@pytest.mark.parametrize(
    ("features", "fps"), [(251, 12.5), (263, 20), (263, None), (263, 20.0000001), (4, 12.5), (4, 30)]
)
def test_a_layout_folder_read_at_its_layouts_own_fps_or_of_no_layout_loads_without_a_warning(
    tmp_path, features, fps
):
    """KIT-ML at 12.5 fps, HumanML3D at 20 (its default): no warning; nor for a feature size that names no
    layout (nothing to compare data.fps with)."""
    import warnings

    write_layout_folder(tmp_path, features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert motion_text.open_dataset(tmp_path, fps=fps).split("train").ids == ("000001",)


# ---------------------------------------------------------------- HumanML3D folders split or summed by hand


def write_clips(root, clips, features=4, splits=None, frames=50):
    """A HumanML3D-layout folder of `clips` (ids; clip n is `frames` frames of n + frame / 100 in every
    feature), each captioned as a whole; splits: {name: ids} (default: train lists every clip); Mean.npy /
    Std.npy of `features` zeros / ones."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for number, clip_id in enumerate(clips):
        motion = np.full((frames, features), number, np.float32) + np.arange(frames)[:, None] / 100
        np.save(root / "new_joint_vecs" / f"{clip_id}.npy", motion.astype(np.float32))
        (root / "texts" / f"{clip_id}.txt").write_text(f"clip {clip_id}#clip/NOUN#0.0#0.0\n")
    for name, ids in (splits or {"train": clips}).items():
        (root / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    np.save(root / "Mean.npy", np.zeros(features, np.float32))
    np.save(root / "Std.npy", np.ones(features, np.float32))


def test_humanml3d_clip_ids_in_train_and_in_an_eval_split_are_refused_naming_the_files_and_ids(tmp_path):
    """000001 in train.txt and test.txt loaded without a word, and eval scored clips the model trained on:
    opening the folder names train.txt, the other file, how many ids and the first few."""
    clips = [f"{n:06d}" for n in range(1, 11)]
    train, test = clips[:8], clips[1:2] + clips[8:]
    write_clips(tmp_path, clips, splits={"train": train, "val": clips[8:], "test": test})
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path)
    assert str(info.value).startswith(
        f"{tmp_path / 'train.txt'}: lists clip ids that another split file lists: 1 in test.txt too "
        "(000002); expected each clip in one split"
    ), str(info.value)
    (tmp_path / "val.txt").write_text("".join(f"{i}\n" for i in reversed(clips)))  # 8 shared: 5 shown
    shown = r"8 in val\.txt too \(000001, 000002, 000003, 000004, 000005, \.\.\. \(8 in all\)\); 1 in test"
    with pytest.raises(DatasetError, match=shown):
        motion_text.open_dataset(tmp_path)
    # val and test sharing a clip trains on neither: it loads, as before
    (tmp_path / "val.txt").write_text("000009\n000010\n")
    (tmp_path / "test.txt").write_text("000009\n")
    assert motion_text.open_dataset(tmp_path).split("test").ids == ("000009",)


def test_humanml3d_training_clip_whose_mirror_is_in_an_eval_split_warns_naming_the_pairs(tmp_path):
    """HumanML3D's own split files keep <id> and its mirror M<id> in one split (its test.txt lists its
    ids, then each again as M<id>): a folder split by hand that puts them apart loads, with a warning."""
    clips = ["000001", "M000001", "000002", "M000002", "000003", "M000003"]
    splits = {"train": ["000001", "M000002", "000003", "M000003"], "test": ["M000001", "000002"]}
    write_clips(tmp_path, clips, splits=splits)
    with pytest.warns(UserWarning) as caught:
        dataset = motion_text.open_dataset(tmp_path, fps=20)
    assert len(caught) == 1 and caught[0].filename == __file__
    message = str(caught[0].message)
    assert message.startswith(f"{tmp_path}: train.txt lists clips whose mirrored copy"), message
    assert "another split file lists: 2 in test.txt (000001 / M000001, M000002 / 000002)" in message
    assert dataset.split("test").ids == ("M000001", "000002")
    # each clip with its mirror, in whichever split: no warning
    (tmp_path / "train.txt").write_text("000001\nM000001\n000003\nM000003\n")
    (tmp_path / "test.txt").write_text("000002\nM000002\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert motion_text.open_dataset(tmp_path, fps=20).split("test").ids == ("000002", "M000002")


@pytest.mark.parametrize(
    ("mean", "std", "start", "expected"),
    [
        (251, 251, "Mean.npy: 251 values (KIT-ML's layout), as Std.npy has", "in Mean.npy and Std.npy"),
        (263, 251, "Std.npy: 251 values (KIT-ML's layout), where Mean.npy has 263", "in Std.npy,"),
        (250, 263, "Mean.npy: 250 values, where Std.npy has 263", "in Mean.npy,"),
        (250, 251, "Mean.npy: 250 values, and Std.npy 251 values (KIT-ML's layout)", "in Mean.npy and Std"),
    ],
)
def test_humanml3d_statistics_of_another_size_than_the_clips_name_the_file_and_both_sizes(
    tmp_path, mean, std, start, expected
):
    """Mean.npy / Std.npy of 251 values beside 263-feature clips said "motion has shape (30, 263); expected
    [frames, 251] as dataset.json says" (a HumanML3D folder has no dataset.json): opening the folder
    compares them with the first listed clip and names the file that disagrees."""
    write_layout_folder(tmp_path, 263)
    np.save(tmp_path / "Mean.npy", np.zeros(mean, np.float32))
    np.save(tmp_path / "Std.npy", np.ones(std, np.float32))
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / start}, but the clips have 263 features per frame "), message
    assert "(new_joint_vecs/000001.npy: shape (30, 263)); expected 263 values " + expected in message
    assert "dataset.json" not in message and "python -c" in message


def test_humanml3d_clip_of_another_size_than_the_statistics_says_where_the_size_comes_from(tmp_path):
    write_clips(tmp_path, ["000001", "000002"], features=4)
    np.save(tmp_path / "new_joint_vecs" / "000002.npy", np.zeros((50, 5), np.float32))
    path = tmp_path / "new_joint_vecs" / "000002.npy"
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path).split("train")
    assert str(info.value) == (
        f"{path}: motion has shape (50, 5); expected [frames, 4] (the 4 values of Mean.npy and Std.npy: a "
        "folder's clips share one size)"
    )


def recipe_of(message):
    """The Python code of the `python -c "..."` command a message gives."""
    found = re.search(r'`python -c "(.*?)"`', message)
    assert found, message
    return found.group(1)


@pytest.mark.parametrize("missing", [("Mean.npy", "Std.npy"), ("Std.npy",)])
def test_humanml3d_missing_statistics_say_how_to_make_them_and_the_recipe_makes_them(tmp_path, missing):
    """A missing Mean.npy / Std.npy said only that the layout needs them: the message gives a command that
    writes the missing ones, the per-feature mean and std over every frame of train.txt's clips (checked
    here against float64 numpy), and nothing else (a Mean.npy that is there stays as it was)."""
    clips = ["000001", "000002", "000003"]
    write_clips(tmp_path, clips, splits={"train": ["000001", "000003", "000404"], "test": ["000002"]})
    rng = np.random.default_rng(3)
    motions = {i: rng.normal(i == "000003", 2.0, (40 + 7 * n, 4)) for n, i in enumerate(clips)}
    for clip_id, motion in motions.items():
        np.save(tmp_path / "new_joint_vecs" / f"{clip_id}.npy", motion.astype(np.float32))
    before = {name: (tmp_path / name).read_bytes() for name in ("Mean.npy", "Std.npy")}
    for name in missing:
        (tmp_path / name).unlink()
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / missing[0]}: missing"), message
    assert "per-feature mean and standard deviation" in message and "training split" in message
    assert all(name in message for name in missing)
    assert not any((tmp_path / name).exists() for name in missing)  # the folder is never written to
    exec(recipe_of(message), {})
    # train.txt's clips (000404 has no file), as saved (float32), in float64
    frames = np.concatenate([np.float32(motions[i]).astype(np.float64) for i in ("000001", "000003")])
    expected = {"Mean.npy": frames.mean(0), "Std.npy": frames.std(0)}
    for name in ("Mean.npy", "Std.npy"):
        if name in missing:
            np.testing.assert_allclose(np.load(tmp_path / name), expected[name], rtol=1e-5)
        else:
            assert (tmp_path / name).read_bytes() == before[name]
    assert motion_text.open_dataset(tmp_path).feature_size == 4


def test_humanml3d_backwards_or_late_spans_are_dropped_with_their_reason_and_spans_past_the_end_counted(
    tmp_path,
):
    """A span written backwards (3-1 s) was counted as a sub-clip shorter than min_length: it has a reason
    of its own, as has a span that starts after its clip's end. A span that runs past the end is cut there
    (T2M's motion[int(from * 20):int(to * 20)]), kept, and counted in the summary."""
    write_tiny_humanml3d(  # 100 frames, 5 s at 20 fps
        tmp_path,
        {
            "000001": [
                "walks#t#0.0#0.0",
                "backwards#t#3.0#1.0",
                "backwards again#t#3#1",  # the same span: counted once
                "after the end#t#6.0#7.0",  # frames 120:140 of 100
                "to the end and past it#t#4.0#9.0",  # frames 80:180, cut to 80:100
                "the whole, and more#t#0#12",  # frames 0:240, cut to the whole motion
                "the whole, exactly#t#0#5",  # frames 0:100: not past the end
            ]
        },
    )
    split = motion_text.open_dataset(tmp_path, fps=20, min_length=15).split("train")
    assert split.ids == ("000001#4-9", "000001")
    np.testing.assert_array_equal(frame_numbers(split.motions[0]), np.arange(80, 100))
    assert split.captions[1] == ("walks", "the whole, and more", "the whole, exactly")
    assert dict(split.dropped) == {"backwards_span": ("000001#3-1",), "span_after_end": ("000001#6-7",)}
    assert split.spans_past_end == ("000001#4-9", "000001#0-12")
    dataset = motion_text.open_dataset(tmp_path, fps=20, min_length=15)
    assert motion_text.describe_dropped(dataset) == (
        "train: 2 clips kept; left out 1 sub-clip whose span runs backwards, its from after its to "
        "(000001#3-1); 1 sub-clip whose span starts at or after its clip's end (000001#6-7). 2 caption "
        "spans ran past their clip's end and were cut there, as HumanML3D's loaders slice (000001#4-9, "
        "000001#0-12)"
    )


def test_humanml3d_clips_holding_nan_or_inf_are_left_out_and_counted_with_where_the_first_lies(tmp_path):
    """One clip holding a NaN stopped the whole load (a locally built HumanML3D copy holds some): such a
    clip is left out with a reason of its own, its first bad value and place named, and every other clip
    reads exactly as saved."""
    clips = [f"00000{n}" for n in range(1, 7)]
    write_clips(tmp_path, clips)
    folder = tmp_path / "new_joint_vecs"
    nan_clip = np.load(folder / "000002.npy")
    nan_clip[3, 1] = np.nan
    np.save(folder / "000002.npy", nan_clip)
    inf_clip = np.load(folder / "000005.npy")
    inf_clip[0, 2], inf_clip[10, 0] = np.inf, -np.inf
    np.save(folder / "000005.npy", inf_clip)
    dataset = motion_text.open_dataset(tmp_path, fps=20)
    split = dataset.split("train")
    kept = ("000001", "000003", "000004", "000006")
    assert split.ids == kept
    assert dict(split.dropped) == {"non_finite": ("000002", "000005")}
    for clip_id, motion in zip(split.ids, split.motions, strict=True):
        saved = np.load(folder / f"{clip_id}.npy")
        assert motion.dtype == np.float32 and motion.tobytes() == saved.tobytes()
    assert motion_text.describe_dropped(dataset) == (
        "train: 4 clips kept; left out 2 clips whose motion in new_joint_vecs/ holds NaN, inf or values "
        "beyond float32, sub-clips and all (000002 (nan at frame 3, feature 1), 000005 (inf at frame 0, "
        "feature 2, 1 more))"
    )
    assert motion_text.describe_dropped(dataset, examples=1) == (
        "train: 4 clips kept; left out 2 clips whose motion in new_joint_vecs/ holds NaN, inf or values "
        "beyond float32, sub-clips and all (e.g. 000002 (nan at frame 3, feature 1), ...)"
    )


def test_humanml3d_split_whose_clips_all_hold_nan_or_inf_says_so_in_its_no_clips_error(tmp_path):
    write_clips(tmp_path, ["000001", "000002", "000003"], splits={"train": ["000001", "000002"]})
    for clip_id, bad in (("000001", np.nan), ("000002", np.inf)):
        path = tmp_path / "new_joint_vecs" / f"{clip_id}.npy"
        motion = np.load(path)
        motion[7, 3] = bad
        np.save(path, motion)
    with pytest.raises(motion_text.EmptySplitError) as info:
        motion_text.open_dataset(tmp_path, fps=20).split("train")
    assert str(info.value).startswith(f"{tmp_path / 'train.txt'}: the train split has no clips: of the 2")
    assert str(info.value).endswith(
        ". Left out: 2 clips whose motion in new_joint_vecs/ holds NaN, inf or values beyond float32, "
        "sub-clips and all (000001 (nan at frame 7, feature 3), 000002 (inf at frame 7, feature 3))"
    )


@pytest.mark.parametrize("name, bad", [("Mean.npy", np.nan), ("Std.npy", np.inf)])
def test_humanml3d_statistics_holding_nan_or_inf_are_refused_naming_the_file(tmp_path, name, bad):
    """Mean.npy / Std.npy standardize every clip: a non-finite entry is refused, not left out."""
    write_clips(tmp_path, ["000001"])
    values = np.load(tmp_path / name)
    values[2] = bad
    np.save(tmp_path / name, values)
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path, fps=20)
    assert str(info.value) == (
        f"{tmp_path / name}: the statistics has 1 non-finite values (NaN, inf or beyond float32), the "
        f"first at feature 2 ({bad}); expected finite values [4]"
    )


def test_a_prepared_clip_holding_nan_is_refused_saying_how_to_leave_it_out(tmp_path):
    """The prepared layout is loaded whole (its record counts its clips): a NaN there is refused."""
    root = tmp_path / "ds"
    motion_text.write_dataset(
        root, make_splits(np.random.default_rng(5)), {"representation": "positions", "fps": 30}
    )
    path = root / "motions" / "val_01.npy"
    motion = np.load(path)
    motion[2, 5] = np.nan
    np.save(path, motion)
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(root).split("val")
    assert str(info.value) == (
        f"{path}: motion has 1 non-finite values (NaN, inf or beyond float32), the first at frame 2, feature "
        "5 (nan); expected finite values [frames, 6]; to leave this clip out, remove its id from the split "
        "file that lists it"
    )


def test_humanml3d_split_ids_written_with_the_npy_suffix_name_the_path_looked_for(tmp_path):
    """train.txt listing `000001.npy` said "2 have no motion in new_joint_vecs": the loader looked for
    000001.npy.npy. Where 000001.npy is there, the id is refused naming both; where it is not, the
    no-clips error shows the paths it looked for and says the ids should be bare."""
    write_clips(tmp_path, ["000001", "000002"], splits={"train": ["000001.npy", "000002.npy"]})
    path = tmp_path / "train.txt"
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(tmp_path).split("train")
    assert str(info.value) == (
        f"{path}: lists '000001.npy' and 1 more ids with the motion file's '.npy' suffix; expected bare ids "
        f"('000001'): the loader adds '.npy' and looks for {tmp_path / 'new_joint_vecs' / '000001.npy.npy'}, "
        "which is not there. Remove '.npy' from the ids of train.txt"
    )
    path.write_text("000008.npy\n000009.npy\n000010\n")  # no file under either name
    with pytest.raises(motion_text.EmptySplitError) as info:
        motion_text.open_dataset(tmp_path).split("train")
    message = str(info.value)
    folder = tmp_path / "new_joint_vecs"
    assert message.startswith(
        f"{path}: the train split has no clips: of the 3 it lists, 3 have no motion in {folder} (no "
        f"{folder / '000008.npy.npy'}, no {folder / '000009.npy.npy'}, ...)"
    ), message
    assert message.endswith(
        "2 of the ids train.txt lists end in '.npy' ('000008.npy', ...): expected bare ids ('000008'), the "
        "names of new_joint_vecs/<id>.npy without '.npy', which the loader adds"
    )


# ---------------------------------------------------------------- write_dataset checks before writing


@pytest.mark.parametrize("representation", ["features", "Positions", "", None])
def test_write_dataset_refuses_an_unknown_representation_before_writing(tmp_path, representation):
    root = tmp_path / "ds"
    with pytest.raises(DatasetError) as info:
        motion_text.write_dataset(
            root, make_splits(np.random.default_rng(13)), {"representation": representation, "fps": 30}
        )
    message = str(info.value)
    assert message.startswith(f"{root}: write_dataset's info field 'representation' is {representation!r}")
    assert "('positions', 'axis_angle', 'rotation_6d', 'humanml3d')" in message
    assert list(tmp_path.iterdir()) == []


def test_write_dataset_refuses_a_missing_representation_or_fps(tmp_path):
    for info, field in (({"fps": 30}, "representation"), ({"representation": "positions"}, "fps")):
        with pytest.raises(DatasetError, match=rf"info field '{field}' lacks it; expected"):
            motion_text.write_dataset(tmp_path / "ds", make_splits(np.random.default_rng(14)), info)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("representation", ["positions", "axis_angle", "humanml3d"])
def test_write_dataset_takes_every_known_representation(tmp_path, representation):
    info = {"representation": representation, "fps": np.float32(20.0)}  # a numpy fps is recorded as a float
    dataset = motion_text.write_dataset(tmp_path / "ds", make_splits(np.random.default_rng(15)), info)
    assert dataset.representation == representation and dataset.fps == 20.0
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["fps"] == 20.0


@pytest.mark.parametrize("fps", [0, -30, float("nan"), float("inf"), "30", True])
def test_write_dataset_refuses_an_fps_that_is_not_a_positive_number_before_writing(tmp_path, fps):
    with pytest.raises(DatasetError) as info:
        motion_text.write_dataset(
            tmp_path / "ds",
            make_splits(np.random.default_rng(16)),
            {"representation": "positions", "fps": fps},
        )
    assert f"write_dataset's info field 'fps' is {fps!r}; expected a positive number" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # it once wrote the folder, then refused to read it back


def test_write_dataset_refuses_info_it_cannot_record_before_writing(tmp_path):
    splits = make_splits(np.random.default_rng(17))
    info = {"representation": "positions", "fps": 30, "options": {"seed": np.int64(3)}}
    with pytest.raises(DatasetError, match=r"info cannot be recorded in dataset\.json .*int64"):
        motion_text.write_dataset(tmp_path / "ds", splits, info)
    info = {"representation": "positions", "fps": 30, "format": "other/2"}
    with pytest.raises(DatasetError, match=r"field 'format' is 'other/2'; leave it out"):
        motion_text.write_dataset(tmp_path / "ds", splits, info)
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind either


def test_write_dataset_refuses_clips_it_would_lose_before_writing(tmp_path):
    """A split name it does not write, an id used twice (the second clip's files would replace the first's),
    or an id that is no plain file name would each lose or misplace clips without a word."""
    info = {"representation": "positions", "fps": 30}
    base = make_splits(np.random.default_rng(18))
    validation = {**base, "validation": base.pop("val")}
    with pytest.raises(DatasetError, match=r"splits \['validation'\], which would not be written"):
        motion_text.write_dataset(tmp_path / "ds", validation, info)
    twice = make_splits(np.random.default_rng(18))
    val = twice["val"]
    twice["val"] = Split("val", ("train_01", *val.ids[1:]), val.motions, val.captions)
    with pytest.raises(DatasetError, match=r"clip id 'train_01' is in the train split and again in the val"):
        motion_text.write_dataset(tmp_path / "ds", twice, info)
    twice["val"] = Split("val", ("TRAIN_01", *val.ids[1:]), val.motions, val.captions)  # one file on macOS
    with pytest.raises(
        DatasetError, match=r"'train_01' \(train split\) and 'TRAIN_01' \(val split\) differ only"
    ):
        motion_text.write_dataset(tmp_path / "ds", twice, info)
    for bad in ("sub/clip", " padded", "", ".hidden", "two\nlines"):
        splits = make_splits(np.random.default_rng(18))
        train = splits["train"]
        splits["train"] = Split("train", (bad, *train.ids[1:]), train.motions, train.captions)
        with pytest.raises(
            DatasetError, match=rf"the train split's clip id {re.escape(repr(bad))}: expected"
        ):
            motion_text.write_dataset(tmp_path / "ds", splits, info)
    uneven = make_splits(np.random.default_rng(18))
    uneven["test"] = Split("test", uneven["test"].ids, uneven["test"].motions[:1], uneven["test"].captions)
    with pytest.raises(DatasetError, match=r"test split has 2 ids, 1 motions and 2 caption groups"):
        motion_text.write_dataset(tmp_path / "ds", uneven, info)
    # A bare string would be written one caption per letter; an empty group read back as the empty caption.
    for group in ("wave hi", (), ("wave", 3)):
        splits = make_splits(np.random.default_rng(18))
        train = splits["train"]
        splits["train"] = Split("train", train.ids, train.motions, (group, *train.captions[1:]))
        refusal = r"the train split's clip 'train_00': captions .*expected a tuple"
        with pytest.raises(DatasetError, match=refusal):
            motion_text.write_dataset(tmp_path / "ds", splits, info)
    assert list(tmp_path.iterdir()) == []


def test_write_dataset_refuses_features_not_of_its_skeleton(tmp_path):
    """Positions on J joints are 3 J features, axis-angle 3 + 3 per rotating joint: clips of another size
    were written and only failed in training's geometric loss."""

    def skeleton(joints):
        return Skeleton(
            names=tuple(f"j{i}" for i in range(joints)),
            parents=np.arange(joints) - 1,
            offsets=np.ones((joints, 3), np.float32),
        )

    splits = make_splits(np.random.default_rng(19), size=6)
    info = {"representation": "positions", "fps": 30}
    with pytest.raises(
        DatasetError,
        match=r"the clips have 6 features per frame, but positions on the "
        r"skeleton's 3 joints has 9",
    ):
        motion_text.write_dataset(tmp_path / "three", splits, info, skeleton(3))
    assert not (tmp_path / "three").exists()
    written = motion_text.write_dataset(tmp_path / "two", splits, info, skeleton(2))  # 2 x 3 = 6
    assert written.feature_size == 6


def test_write_dataset_warns_of_what_a_dataset_will_lack_without_a_usable_skeleton(tmp_path):
    """Positions or axis-angle features written without a skeleton train, but give no positions, BVH or
    pictures; an axis-angle skeleton whose end site is not named `<parent>_Nub` trains and samples, but
    its motion cannot be written as BVH (sampling had crashed there). Each is a warning when it is
    written; a skeleton that suits is written without one."""
    import warnings

    rng = np.random.default_rng(23)
    positions = {"representation": "positions", "fps": 30}
    with pytest.warns(UserWarning, match=r"positions features without a skeleton: no joint positions"):
        motion_text.write_dataset(tmp_path / "none", make_splits(rng), positions)
    # (bones of 50 units: a figure in centimetres, of which no unit is warned)
    chain = dict(parents=np.array([-1, 0, 1]), offsets=np.full((3, 3), 50.0, np.float32),
                 end_sites=np.array([False, False, True]))  # fmt: skip
    named = Skeleton(names=("root", "neck", "Head_End"), **chain)
    info = {"representation": "axis_angle", "fps": 30}
    with pytest.warns(UserWarning, match=r"cannot be written as BVH files: end site 2 is named 'Head_End'"):
        motion_text.write_dataset(tmp_path / "end", make_splits(rng, size=9), info, named)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = Skeleton(names=("root", "neck", "neck_Nub"), **chain)
        motion_text.write_dataset(tmp_path / "good", make_splits(rng, size=9), info, good)


def _walking_rotation_6d(rng, skeleton, scale, clips=6):
    """rotation_6d clips of a figure `scale` units per metre walking at 1-1.5 m/s at 20 fps, a bob of 1 cm
    (amplitude), joints swaying by up to 0.3 rad, encoded here in float64: the root's step, then the first
    two columns of each joint's local rotation matrix."""
    joints = skeleton.num_joints
    motions = []
    for _ in range(clips):
        frames = int(rng.integers(40, 80))
        t = np.arange(frames) / 20.0
        angles = 0.3 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5, (1, joints)) * t[:, None])  # about x
        c, s = np.cos(angles), np.sin(angles)
        matrices = np.zeros((frames, joints, 3, 3))
        matrices[..., 0, 0] = 1.0
        matrices[..., 1, 1], matrices[..., 1, 2], matrices[..., 2, 1], matrices[..., 2, 2] = c, -s, s, c
        root = np.stack([np.zeros(frames), 0.9 + 0.01 * np.sin(4 * np.pi * t), rng.uniform(1, 1.5) * t], -1)
        step = np.diff(root * scale, axis=0, prepend=root[:1] * scale)
        six = np.concatenate([matrices[..., :, 0], matrices[..., :, 1]], axis=-1).reshape(frames, -1)
        motions.append(np.concatenate([step, six], axis=-1).astype(np.float32))
    return motions


@pytest.mark.parametrize("unit, scale", [("metres", 1.0), ("centimetres", 100.0), ("millimetres", 1000.0)])
def test_write_dataset_tells_a_figure_in_metres_or_millimetres_its_geometric_weight_and_floor(
    tmp_path, unit, scale
):
    """The geometric loss is in the data's unit squared and std_floor in its unit (both set for
    centimetres): an SMPL-like figure in metres (1.6 units tall) written from arrays is told
    loss.geometric_weight=100 and, where write_dataset's std_floor (1e-2) raised features above their
    std, how many (counted here from float64 statistics of the clips) and the floor to write with (1e-4),
    after which only the weight is said; in millimetres the weight 0.0001; in centimetres nothing.
    --mode prepare said so for BVH recordings, write_dataset for arrays did not."""
    import warnings

    names = ("pelvis", "spine", "neck", "head", "left_hip", "left_knee", "left_ankle")
    offsets = (
        np.array(
            [[0, 0, 0], [0, 0.25, 0], [0, 0.3, 0], [0, 0.15, 0], [0.1, -0.1, 0], [0, -0.4, 0], [0, -0.4, 0]]
        )
        * scale
    )
    skeleton = Skeleton(names=names, parents=np.array([-1, 0, 1, 2, 0, 4, 5]), offsets=offsets)
    motions = _walking_rotation_6d(np.random.default_rng(5), skeleton, scale)
    splits = {
        "train": Split(
            "train",
            tuple(f"c{i}" for i in range(len(motions))),
            motions,
            tuple(("a person walks",) for _ in motions),
        )
    }
    info = {"representation": "rotation_6d", "fps": 20.0}
    spread = np.concatenate([m.astype(np.float64) for m in motions]).std(axis=0)
    below = int(((spread[:3] > 0) & (spread[:3] < 1e-2)).sum())  # (the root's steps: the 6D has no unit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        motion_text.write_dataset(tmp_path / "default", splits, info, skeleton)
    said = [str(w.message) for w in caught]
    if unit == "centimetres":
        assert said == []
        return
    weight = "100" if unit == "metres" else "0.0001"
    (line,) = [text for text in said if "geometric_weight" in text]
    assert f"as a figure in {unit} would" in line and f"--config.loss.geometric_weight={weight} " in line
    assert "spans 1.6 units" in line if unit == "metres" else "spans 1.6e+03 units" in line
    floors = [text for text in said if "std_floor" in text]
    if unit == "millimetres":
        assert floors == []
        return
    assert below > 0  # the root's bob (and sideways step) vary by under a centimetre a frame
    (floor,) = floors
    assert f"raised the std of {below} of the 3 root translation features" in floor
    assert "write_dataset(..., std_floor=0.0001)" in floor
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        motion_text.write_dataset(tmp_path / "fine", splits, info, skeleton, std_floor=1e-4)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and "geometric_weight=100 " in said[0], said


@pytest.mark.parametrize("root_step_std", [0.05, 0.002])  # metres a frame: over and under a centimetre
def test_the_floor_warning_in_metres_counts_only_the_root_translation_of_rotation_data(
    tmp_path, root_step_std
):
    """Of rotation_6d features only the root's 3 translation steps are in the data's unit; the 6D entries
    have none and std_floor floors them alike in metres and centimetres. A figure in metres whose root
    steps vary by more than a centimetre, whose joints turn by a few hundredths of a radian (6D entries
    varying by about 1e-3, under the floor), is told only the geometric weight; with root steps varying
    less, the count is that of the 3 root columns (float64 statistics here), not of the 6D entries."""
    import warnings

    names = ("pelvis", "spine", "head", "hip", "knee")
    offsets = np.array([[0, 0, 0], [0, 0.5, 0], [0, 0.4, 0], [0.1, -0.1, 0], [0, -0.8, 0.0]])  # 1.7 m
    skeleton = Skeleton(names=names, parents=np.array([-1, 0, 1, 0, 3]), offsets=offsets)
    rng = np.random.default_rng(11)
    motions = []
    for _ in range(4):
        axes = rng.normal(size=(60, len(names), 3))
        k = axes / np.linalg.norm(axes, axis=-1, keepdims=True)
        angle = rng.uniform(0.02, 0.06, (60, len(names)))[..., None, None]
        cross = np.zeros((60, len(names), 3, 3))
        cross[..., 0, 1], cross[..., 0, 2], cross[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
        cross[..., 1, 0], cross[..., 2, 0], cross[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
        rotations = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross  # Rodrigues
        six = np.concatenate([rotations[..., :, 0], rotations[..., :, 1]], -1).reshape(60, -1)
        step = rng.normal(0.0, root_step_std, (60, 3))
        motions.append(np.concatenate([step, six], -1).astype(np.float32))
    spread = np.concatenate([m.astype(np.float64) for m in motions]).std(axis=0)
    # 6D entries a centimetre's floor raises: each joint's R[0,0] and R[1,1] vary by about angle^2 / 2
    assert ((spread[3:] > 0) & (spread[3:] < 1e-2)).sum() == 2 * len(names)
    root_below = int(((spread[:3] > 0) & (spread[:3] < 1e-2)).sum())
    assert root_below == (3 if root_step_std < 1e-2 else 0)
    splits = {"train": Split("train", ("a", "b", "c", "d"), tuple(motions), (("walks",),) * 4)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        motion_text.write_dataset(
            tmp_path / "m", splits, {"representation": "rotation_6d", "fps": 20}, skeleton
        )
    said = [str(w.message) for w in caught]
    assert any("--config.loss.geometric_weight=100 " in line for line in said), said
    floors = [line for line in said if "std_floor" in line]
    if not root_below:
        assert floors == [], floors
        return
    (floor,) = floors
    assert f"raised the std of {root_below} of the 3 root translation features to it" in floor


def test_write_dataset_warns_of_a_figure_lying_in_y_and_its_advice_stands_it_up(tmp_path):
    """Y is the up axis here (the ground, the animations): a Z-up figure (AMASS's convention) written from
    arrays is warned of, with the turn that stands it up; the turn as the warning words it (offsets and
    the root's translation v -> M v, local rotations R -> M R M^T) poses every joint at M p (float64
    forward kinematics here), and the turned figure is written without the warning."""
    import warnings

    names = ("pelvis", "spine", "neck", "head", "left_hip", "left_knee", "left_ankle")
    parents = [-1, 0, 1, 2, 0, 4, 5]
    y_up = np.array([[0, 0, 0], [0, 25, 0], [0, 30, 0], [0, 15, 0], [10, -10, 0], [0, -40, 0], [0, -40, 0.0]])
    turn = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # Z up -> Y up: (x, y, z) -> (x, z, -y)
    z_up = y_up @ turn  # (turn.T's rows: the inverse turn)
    rng = np.random.default_rng(8)
    angles = rng.normal(0, 0.4, (20, len(names)))
    c, s = np.cos(angles), np.sin(angles)
    rotations = np.zeros((20, len(names), 3, 3))  # about each joint's local z
    rotations[..., 0, 0], rotations[..., 0, 1], rotations[..., 1, 0], rotations[..., 1, 1] = c, -s, s, c
    rotations[..., 2, 2] = 1.0
    translation = np.stack([np.linspace(0, 50, 20), np.zeros(20), np.full(20, 90.0)], -1)  # Z up: z height

    def fk(rotations, offsets, translation):
        positions, world = np.zeros((20, len(names), 3)), np.zeros((20, len(names), 3, 3))
        for j, p in enumerate(parents):
            if p < 0:
                world[:, j], positions[:, j] = rotations[:, j], translation + offsets[j]
            else:
                world[:, j] = world[:, p] @ rotations[:, j]
                positions[:, j] = positions[:, p] + world[:, p] @ offsets[j]
        return positions

    turned = (turn @ rotations @ turn.T, y_up, translation @ turn.T)
    np.testing.assert_allclose(fk(*turned), fk(rotations, z_up, translation) @ turn.T, atol=1e-9)
    info = {"representation": "rotation_6d", "fps": 20.0}
    for folder, (local, offsets, root) in (("z_up", (rotations, z_up, translation)), ("y_up", turned)):
        skeleton = Skeleton(names=names, parents=np.array(parents), offsets=offsets)
        six = np.concatenate([local[..., :, 0], local[..., :, 1]], -1).reshape(20, -1)
        step = np.diff(root, axis=0, prepend=root[:1])
        splits = {"train": Split("train", ("c0",), (np.concatenate([step, six], -1),), (("walks",),))}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            motion_text.write_dataset(tmp_path / folder, splits, info, skeleton)
        said = [str(w.message) for w in caught]
        if folder == "z_up":
            (line,) = said
            assert "rest pose spans 10 x 0 x 160 units along x, y, z: it lies in y" in line
            assert "every local rotation R -> M R M^T" in line
        else:
            assert said == []


def test_beats_upper_body_standing_in_a_t_pose_is_not_taken_to_lie_in_y():
    """BEAT's upper body alone (the legs left out, as co-speech gesture work often does), Y up in its T-pose,
    is 87 cm high and 194 cm wide: less high than half its span, but far deeper than it is thin (13 cm),
    so it stands; written Z up ((x, y, z) -> (x, -z, y)), it and the whole figure lie in y, their extents
    those of a float64 rest pose here."""
    full = beat_skeleton()
    legs = {full.names.index(name) for name in ("RightUpLeg", "LeftUpLeg")}

    def under_legs(joint):
        while joint >= 0 and joint not in legs:
            joint = int(full.parents[joint])
        return joint >= 0

    kept = [j for j in range(full.num_joints) if not under_legs(j)]
    new_index = {j: i for i, j in enumerate(kept)}
    parents = np.array([-1 if full.parents[j] < 0 else new_index[int(full.parents[j])] for j in kept])
    offsets = full.offsets[kept].astype(np.float64)
    upper = Skeleton(tuple(full.names[j] for j in kept), parents, offsets, full.end_sites[kept])

    def extents(offsets, parents):
        rest = np.zeros((len(parents), 3))
        for j in range(len(parents)):  # (BEAT lists each joint after its parent)
            rest[j] = offsets[j] if parents[j] < 0 else rest[parents[j]] + offsets[j]
        return rest.max(axis=0) - rest.min(axis=0)

    spans = extents(offsets, parents)
    assert spans[1] < 0.5 * spans.max() and spans[2] < spans[1]  # (87 x 194; 13 deep)
    assert motion_text.lying_spans(upper) is None
    to_z_up = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    for skeleton in (upper, full):
        offsets = skeleton.offsets.astype(np.float64) @ to_z_up.T
        lying = Skeleton(skeleton.names, skeleton.parents, offsets, skeleton.end_sites)
        got = motion_text.lying_spans(lying)
        assert got is not None, skeleton.num_joints
        np.testing.assert_allclose(got, extents(offsets, skeleton.parents), rtol=1e-5)


# ------------------------------------------------------------------------- a full disk, Ctrl-C, a kill
@pytest.mark.parametrize("room", [0, 3000])  # the first file does not fit; some clips are written first
def test_write_dataset_on_a_full_disk_leaves_no_staging_folder_and_names_the_file(
    tmp_path, monkeypatch, room
):
    from test_files import ENOSPC_TEXT, full_disk

    splits, info = make_splits(np.random.default_rng(19)), {"representation": "positions", "fps": 30}
    full_disk(monkeypatch, tmp_path, room)
    with pytest.raises(OSError) as caught:
        motion_text.write_dataset(tmp_path / "ds", splits, info)
    assert list(tmp_path.iterdir()) == []  # the staging folder is gone: a rerun has the space again
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and message.endswith(ENOSPC_TEXT)
    assert re.search(rf"writing {re.escape(str(tmp_path / 'ds'))}\b", message) and ".partial" not in message
    monkeypatch.undo()
    assert motion_text.write_dataset(tmp_path / "ds", splits, info).info["counts"]["train"] == 5


def test_an_interrupted_write_dataset_leaves_no_staging_folder(tmp_path, monkeypatch):
    saved = []

    def save(*args, **kwargs):  # Ctrl-C while the third array is written
        saved.append(args[0])
        if len(saved) == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    real_save = np.save
    monkeypatch.setattr(np, "save", save)
    with pytest.raises(KeyboardInterrupt):
        motion_text.write_dataset(
            tmp_path / "ds",
            make_splits(np.random.default_rng(20)),
            {"representation": "positions", "fps": 30},
        )
    assert list(tmp_path.iterdir()) == []


KILLED_WRITE_DATASET = """
import os, signal, sys
import numpy as np
from motion_ddpm_jax.data import motion_text

real_save, saved = np.save, []
def save(*args, **kwargs):  # SIGKILL (the OOM killer, a scheduler) once two clips are written
    saved.append(1)
    if len(saved) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(*args, **kwargs)
np.save = save
motions = tuple(np.zeros((20, 6), np.float32) for _ in range(4))
split = motion_text.Split("train", ("a", "b", "c", "d"), motions, (("x",),) * 4)
motion_text.write_dataset(sys.argv[1], {"train": split}, {"representation": "positions", "fps": 30})
"""


def test_the_staging_folder_of_a_killed_write_dataset_is_removed_by_the_next(tmp_path):
    """Only that of the killed process: another host's (a shared file system) and a running process's
    staging folders of the same dataset, and those of other folders, stay."""
    from test_files import HOST, ROOT, assert_only_the_dead_ones_removed, leftover_names, make_leftovers

    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITE_DATASET, str(tmp_path / "ds")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr
    (killed,) = tmp_path.iterdir()
    assert re.fullmatch(rf"\.ds\.partial-{re.escape(HOST)}-{child.pid}-[0-9a-f]{{8}}", killed.name)
    assert len(list((killed / "motions").iterdir())) == 2  # two clips written before the kill
    others = leftover_names("ds", "partial")
    make_leftovers(tmp_path, others, as_folders=True)
    motion_text.write_dataset(
        tmp_path / "ds", make_splits(np.random.default_rng(21)), {"representation": "positions", "fps": 30}
    )
    assert not killed.exists()
    assert_only_the_dead_ones_removed(tmp_path, others)


SHORT_WRITE_DATASET = """
import resource, signal, sys
import numpy as np
from motion_ddpm_jax.data import motion_text

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: what fits, then EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
split = motion_text.Split("train", ("small", "big"), (np.zeros((5, 6), np.float32),
                          np.zeros((5000, 6), np.float32)), (("x",), ("y",)))
try:
    motion_text.write_dataset(sys.argv[1], {"train": split}, {"representation": "positions", "fps": 30})
except OSError as error:
    print(error)
"""


def test_write_dataset_names_the_file_numpy_wrote_short(tmp_path):
    """numpy says only "120000 requested and 65408 written" when the disk takes part of an array."""
    from test_files import ROOT

    out = subprocess.run(
        [sys.executable, "-c", SHORT_WRITE_DATASET, str(tmp_path / "ds")],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    big = tmp_path / "ds" / "motions" / "big.npy"
    assert re.match(rf"writing {re.escape(str(big))}: \d+ requested and \d+ written", out), out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("features", "height", "looks"),
    [
        (251, 0.98, "metres"),
        (263, 984.0, "millimetres or centimetres"),
        (263, 95.0, "millimetres or centimetres"),
    ],
)
def test_a_layout_folder_whose_root_height_is_in_another_unit_warns(tmp_path, features, height, looks):
    """KIT-ML's layout in metres (a researcher's copy: mean root height 0.98, where KIT-ML's is ~1000 mm)
    loaded without a word, and eval and the pictures would label its metres millimetres: a warning names
    Mean.npy, the height, the layout's unit and what the clips look like. The folder still loads."""
    write_layout_folder(tmp_path, features)
    mean = np.zeros(features, np.float32)
    mean[3] = height  # the root height feature, in both layouts
    np.save(tmp_path / "Mean.npy", mean)
    fps = {251: 12.5, 263: 20.0}[features]
    with pytest.warns(UserWarning) as caught:
        dataset = motion_text.open_dataset(tmp_path, fps=fps)
    assert len(caught) == 1 and issubclass(caught[0].category, ProjectWarning)
    unit = {251: "mm", 263: "m"}[features]
    assert str(caught[0].message).startswith(
        f"{tmp_path / 'Mean.npy'}: the mean root height (feature 3) is {height:.3g}, but {features} features "
        f"per frame are {'KIT-ML' if features == 251 else 'HumanML3D'}'s layout, in {unit}"
    )
    assert f"these clips look like {looks}. Eval's distances" in str(caught[0].message)
    assert dataset.split("train").ids == ("000001",)


@pytest.mark.parametrize(("features", "height"), [(251, 984.0), (251, 620.0), (263, 0.95), (263, 0.0)])
def test_a_layout_folder_whose_root_height_fits_its_unit_loads_without_a_warning(tmp_path, features, height):
    """KIT-ML's ~1000 mm, a child's 620 mm, HumanML3D's ~0.95 m; a mean of 0 (statistics not of motion,
    as these tests' folders have) says nothing of the unit."""
    import warnings

    write_layout_folder(tmp_path, features)
    mean = np.zeros(features, np.float32)
    mean[3] = height
    np.save(tmp_path / "Mean.npy", mean)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        motion_text.open_dataset(tmp_path, fps={251: 12.5, 263: 20.0}[features])
