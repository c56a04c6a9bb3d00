"""Raw BEAT preparation on a small raw folder written here (BVH and TextGrid as text), checked in numpy."""

import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import representation
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import beat, motion_text
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.skeleton import Skeleton

FPS_IN = 120
SECONDS = 8.0
# name, parent, offset, rotation channels ('' = end site); the root also has 3 position channels.
JOINTS = [
    ("Hips", -1, (0, 0, 0), "ZXY"),
    ("Spine", 0, (0, 10, 0), "ZXY"),
    ("Head", 1, (0, 10, 1), "XYZ"),
    ("Head_Nub", 2, (0, 5, 0), ""),
    ("Arm", 1, (8, 5, 0), "ZXY"),
    ("Arm_Nub", 4, (10, 0, 0), ""),
]
ROTATING = [j for j, joint in enumerate(JOINTS) if joint[3]]
# (start, end, word): sentences separated by >= 0.8 s, the third one too short to keep (0.2 s < 0.5 s).
WORDS = [
    (0.5, 0.9, "look"), (1.0, 1.5, "here"),
    (2.3, 3.0, "wave"), (3.1, 3.6, "now"),
    (4.5, 4.7, "uh"),
    (5.5, 6.2, "point"), (6.25, 7.0, "there"),
]  # fmt: skip


def angles_and_root(seed):
    rng = np.random.default_rng(seed)
    frames = int(SECONDS * FPS_IN)
    time_s = np.arange(frames) / FPS_IN
    freq = rng.uniform(0.2, 1.0, (len(ROTATING), 3))
    angles = 40 * np.sin(
        2 * np.pi * freq[None] * time_s[:, None, None] + rng.uniform(0, 6, (len(ROTATING), 3))
    )
    root = np.stack([np.sin(time_s), 90 + 0.5 * np.cos(3 * time_s), 0.2 * time_s], -1) * [5, 1, 1]
    return np.round(angles, 4), np.round(root, 4)


def bvh_text(angles, root, joints=JOINTS):
    """A BVH file of `joints` (listed depth-first, children in list order); angles [T, R, 3] of its rotating
    joints in list order."""
    lines = ["HIERARCHY"]

    def write(j, depth):
        name, _, (x, y, z), order = joints[j]
        pad = "  " * depth
        if not order:
            lines.extend([f"{pad}End Site", f"{pad}{{", f"{pad}  OFFSET {x} {y} {z}", f"{pad}}}"])
            return
        rotations = " ".join(f"{axis}rotation" for axis in order)
        channels = (
            f"CHANNELS 6 Xposition Yposition Zposition {rotations}" if j == 0 else f"CHANNELS 3 {rotations}"
        )
        head = "ROOT" if j == 0 else "JOINT"
        lines.extend([f"{pad}{head} {name}", f"{pad}{{", f"{pad}  OFFSET {x} {y} {z}", f"{pad}  {channels}"])
        for child, joint in enumerate(joints):
            if joint[1] == j:
                write(child, depth + 1)
        lines.append(f"{pad}}}")

    write(0, 0)
    frames = np.concatenate([root, angles.reshape(len(root), -1)], axis=1)
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {1 / FPS_IN:.8f}"]
    lines += [" ".join(f"{v:.4f}" for v in row) for row in frames]
    return "\n".join(lines) + "\n"


def textgrid_text(words, xmax, fill="", tiers=None):
    """A long-form TextGrid of one 'words' tier (or `tiers`: (name, words) pairs), the silences between
    words as intervals labelled `fill`."""
    tiers = tiers or [("words", words)]
    out = [
        'File type = "ooTextFile"\nObject class = "TextGrid"\n',
        f"xmin = 0\nxmax = {xmax}\ntiers? <exists>\nsize = {len(tiers)}\nitem []:",
    ]
    for n, (name, tier_words) in enumerate(tiers, 1):
        intervals, cursor = [], 0.0
        for start, end, word in tier_words:
            if start > cursor:
                intervals.append((cursor, start, fill))
            intervals.append((start, end, word))
            cursor = end
        intervals.append((cursor, xmax, fill))
        out += [
            f'    item [{n}]:\n        class = "IntervalTier"\n        name = "{name}"',
            f"        xmin = 0\n        xmax = {xmax}\n        intervals: size = {len(intervals)}",
        ]
        for i, (start, end, text) in enumerate(intervals, 1):
            out.append(f"        intervals [{i}]:\n            xmin = {start}\n            xmax = {end}")
            out.append(f'            text = "{text}"')
    return "\n".join(out) + "\n"


def make_raw(root, recordings=5):
    truth = {}
    for r in range(recordings):
        speaker = root / f"{r % 2 + 1}"
        speaker.mkdir(parents=True, exist_ok=True)
        stem = f"{r % 2 + 1}_spk{r % 2}_0_{r + 1}_{r + 1}"
        angles, trajectory = angles_and_root(r)
        (speaker / f"{stem}.bvh").write_text(bvh_text(angles, trajectory))
        (speaker / f"{stem}.TextGrid").write_text(textgrid_text(WORDS, SECONDS))
        truth[stem] = (angles, trajectory)
    return truth


def numpy_positions(angles, root, joints=JOINTS):
    """Global positions [T, J, 3] in float64 by a plain per-joint loop."""
    frames = len(root)
    local = np.tile(np.eye(3), (frames, len(joints), 1, 1))
    for slot, j in enumerate(ROTATING):
        local[:, j] = Rotation.from_euler(joints[j][3], angles[:, slot], degrees=True).as_matrix()
    world_rot = np.zeros_like(local)
    pos = np.zeros((frames, len(joints), 3))
    for j, (_, parent, offset, _) in enumerate(joints):
        if parent < 0:
            world_rot[:, j], pos[:, j] = local[:, j], root
        else:
            world_rot[:, j] = world_rot[:, parent] @ local[:, j]
            pos[:, j] = pos[:, parent] + world_rot[:, parent] @ np.asarray(offset, float)
    return pos


def clip_frames(start, end, fps=60):
    return int(np.floor(start * fps)), int(np.ceil(end * fps))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    truth = make_raw(raw)
    out = tmp_path_factory.mktemp("prepared") / "beat_positions"
    dataset = beat.prepare_beat(raw, out, beat.PrepareOptions(), log=lambda *_: None)
    return raw, truth, out, dataset


def test_sentences_cut_at_pauses():
    got = beat.sentences(WORDS, 0.5)
    assert [s.words for s in got] == [("look", "here"), ("wave", "now"), ("uh",), ("point", "there")]
    assert (got[1].start_s, got[1].end_s) == (2.3, 3.6)
    assert len(beat.sentences(WORDS, 2.0)) == 1
    # A pause written as exactly the minimum cuts, whatever its floating-point difference (0.57 - 0.07 < 0.5).
    assert 0.57 - 0.07 < 0.5
    assert len(beat.sentences([(0.0, 0.07, "a"), (0.57, 0.9, "b")], 0.5)) == 2
    assert len(beat.sentences([(0.0, 0.07, "a"), (0.56, 0.9, "b")], 0.5)) == 1


def test_splits_are_by_recording_with_every_clip_accounted_for(prepared):
    _, truth, _, dataset = prepared
    owner = {}
    for name in motion_text.SPLITS:
        for clip_id in dataset.split(name).ids:
            recording = clip_id.rsplit("_", 1)[0]
            assert owner.setdefault(recording, name) == name, f"{recording} straddles splits"
    assert set(owner) == set(truth)
    assert sorted(owner.values()).count("val") == 1 and sorted(owner.values()).count("test") == 1
    counts = dataset.info["counts"]
    assert sum(counts.values()) == 3 * len(truth)  # 3 sentences kept per recording
    assert dataset.info["dropped_short_clips"] == len(truth)  # the 0.2 s "uh"


def test_clips_hold_the_sentence_motion_and_words(prepared):
    _, truth, _, dataset = prepared
    kept = [s for s in beat.sentences(WORDS, 0.5) if s.words != ("uh",)]
    for name in motion_text.SPLITS:
        split = dataset.split(name)
        for clip_id, motion, captions in zip(split.ids, split.motions, split.captions, strict=True):
            recording, k = clip_id.rsplit("_", 1)
            sentence = beat.sentences(WORDS, 0.5)[int(k)]
            assert sentence in kept
            assert captions == (" ".join(sentence.words),)
            angles, root = truth[recording]
            positions = numpy_positions(angles, root)[::2]  # 120 -> 60 fps
            relative = positions - positions[:, :1]
            relative[:, 0] = np.concatenate([[[0, 0, 0]], np.diff(positions[:, 0], axis=0)])
            first, last = clip_frames(sentence.start_s, sentence.end_s)
            np.testing.assert_allclose(motion, relative[first:last].reshape(last - first, -1), atol=2e-3)


def test_statistics_come_from_the_training_clips_only(prepared):
    _, _, _, dataset = prepared
    frames = np.concatenate(dataset.split("train").motions).astype(np.float64)
    np.testing.assert_allclose(dataset.mean, frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dataset.std, np.maximum(frames.std(0), 1e-2), rtol=1e-4)
    everything = np.concatenate([m for s in motion_text.SPLITS for m in dataset.split(s).motions])
    assert not np.allclose(dataset.mean, everything.mean(0), atol=1e-4)


def test_rerun_reuses_the_cache_and_changes_are_detected(prepared):
    raw, _, out, _ = prepared
    stamp = (out / "dataset.json").stat().st_mtime_ns
    again = beat.prepare_beat(raw, out, beat.PrepareOptions(), log=lambda *_: None)
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert again.info["counts"] == counts
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="data.fps"):
        beat.prepare_beat(raw, out, beat.PrepareOptions(fps=30), log=lambda *_: None)
    text = next(raw.rglob("*.TextGrid"))
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10**9))  # content unchanged
    assert beat.prepare_beat(raw, out, beat.PrepareOptions(), log=lambda *_: None).info["counts"] == counts
    assert (out / "dataset.json").stat().st_mtime_ns == stamp


def test_training_refuses_a_cache_prepared_with_other_options(prepared):
    """A run (dataset_from_config, as train and eval call it) on a prepared data.root with other data.*
    options than its config's is refused, naming each field with both values, and the cache is left as
    it is; with the options it was prepared with, the cache is opened as it is."""
    raw, _, out, _ = prepared
    config = base_config()
    config.data.raw_root, config.data.root = str(raw), str(out)
    record = (out / "dataset.json").read_bytes()
    assert beat.dataset_from_config(config, log=lambda *_: None).fps == 60.0
    config.data.fps, config.data.min_pause_s = 30.0, 2.0
    with pytest.raises(beat.OccupiedFolderError) as refused:
        beat.dataset_from_config(config, log=lambda *_: None)
    assert "data.fps 60.0 (the config: 30.0)" in str(refused.value)
    assert "data.min_pause_s 0.5 (the config: 2.0)" in str(refused.value)
    assert "representation" not in str(refused.value)
    assert (out / "dataset.json").read_bytes() == record
    config.data.fps, config.data.min_pause_s, config.data.source = 60.0, 0.5, "synthetic"
    config.data.std_floor = 1e-3  # the statistics were floored at 1e-2
    with pytest.raises(beat.OccupiedFolderError, match="data.std_floor"):
        beat.dataset_from_config(config, log=lambda *_: None)
    config.data.source = "prepared"  # opened as it is, whatever the options say
    assert beat.dataset_from_config(config, log=lambda *_: None).fps == 60.0


def test_axis_angle_rebuilds_the_same_positions(prepared, tmp_path):
    raw, _, _, positions_dataset = prepared
    dataset = beat.prepare_beat(
        raw, tmp_path / "rot", beat.PrepareOptions(representation="axis_angle"), log=lambda *_: None
    )
    assert dataset.feature_size == 3 + 3 * len(ROTATING)
    assert positions_dataset.feature_size == 3 * len(JOINTS)
    assert dataset.skeleton.names == tuple(j[0] for j in JOINTS)
    a, b = dataset.split("train"), positions_dataset.split("train")
    assert a.ids == b.ids
    for rot, pos in zip(a.motions, b.motions, strict=True):
        from_rot = np.asarray(representation.decode(rot, dataset.skeleton, "axis_angle"))
        from_pos = np.asarray(representation.decode(pos, positions_dataset.skeleton, "positions"))
        # Both integrate the root from the origin; the rotation decode adds the root's offset (0 here).
        np.testing.assert_allclose(from_rot - from_rot[:1, :1], from_pos - from_pos[:1, :1], atol=5e-3)


def with_spine_positions(text, spine_xyz):
    """The BVH text with three position channels on Spine (before its rotations), per frame spine_xyz[t]."""
    return with_joint_positions(text, "Spine", spine_xyz)


def with_joint_positions(text, joint, joint_xyz):
    """The BVH text with three position channels on `joint` (before its rotations), per frame joint_xyz[t]."""
    head, frames = text.split("Frame Time:")
    lines = head.splitlines()
    channels = next(i for i, line in enumerate(lines) if line.strip() == f"JOINT {joint}") + 3  # {, OFFSET
    column = sum(int(line.split()[1]) for line in lines[:channels] if line.strip().startswith("CHANNELS"))
    lines[channels] = lines[channels].replace("CHANNELS 3", "CHANNELS 6 Xposition Yposition Zposition")
    time_line, *rows = frames.strip("\n").split("\n")
    rows = [
        " ".join([*row.split()[:column], *(f"{v:.4f}" for v in xyz), *row.split()[column:]])
        for row, xyz in zip(rows, joint_xyz, strict=True)
    ]
    return "\n".join(lines) + "\nFrame Time:" + "\n".join([time_line, *rows]) + "\n"


def test_axis_angle_folds_still_joint_position_channels_and_refuses_moving_ones(tmp_path):
    """A non-root joint with position channels (exporters that write six channels on every joint): held
    still, its values become the dataset skeleton's offset and the clips decode to the file's positions;
    moving, the recording is refused (rotations cannot hold it) and nothing is written."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    spine = (0.5, 12.0, -1.0)  # not the OFFSET (0, 10, 0) the header says
    frames = int(SECONDS * FPS_IN)
    for path in raw.rglob("*.bvh"):
        path.write_text(with_spine_positions(path.read_text(), np.tile(spine, (frames, 1))))
    dataset = beat.prepare_beat(
        raw, tmp_path / "rot", beat.PrepareOptions(representation="axis_angle"), log=lambda *_: None
    )
    np.testing.assert_allclose(dataset.skeleton.offsets[1], spine)
    joints = [*JOINTS[:1], ("Spine", 0, spine, "ZXY"), *JOINTS[2:]]
    sentences = beat.sentences(WORDS, 0.5)
    for split in motion_text.SPLITS:
        for clip_id, clip in zip(dataset.split(split).ids, dataset.split(split).motions, strict=True):
            recording, k = clip_id.rsplit("_", 1)
            positions = numpy_positions(*truth[recording], joints)[::2]  # float64, 120 -> 60 fps
            first, last = clip_frames(sentences[int(k)].start_s, sentences[int(k)].end_s)
            expected = positions[first:last] - positions[first, 0]
            decoded = np.asarray(representation.decode(clip, dataset.skeleton, "axis_angle"))
            np.testing.assert_allclose(decoded - decoded[:1, :1], expected, atol=5e-3)
    moving = next(raw.rglob("*.bvh"))
    drift = np.tile(spine, (frames, 1)) + np.linspace(0, 2, frames)[:, None] * [1, 0, 0]
    moving.write_text(with_spine_positions(bvh_text(*truth[moving.stem]), drift))
    with pytest.raises(
        beat.DatasetError, match=rf"{moving.name}.*Spine.*move.*data.representation=positions"
    ):
        beat.prepare_beat(raw, tmp_path / "moving", beat.PrepareOptions(representation="axis_angle"))
    assert not (tmp_path / "moving").exists()


def test_missing_transcript_and_foreign_output_folder_are_clear_errors(tmp_path):
    raw = tmp_path / "raw"
    make_raw(raw, recordings=1)
    next(raw.rglob("*.TextGrid")).unlink()
    with pytest.raises(FileNotFoundError, match=r"no transcript beside it \(expected .*\.TextGrid\)"):
        beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions())
    raw2 = tmp_path / "raw2"
    make_raw(raw2, recordings=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a prepared dataset"):
        beat.prepare_beat(raw2, mine, beat.PrepareOptions())
    assert (mine / "thesis.tex").read_text() == "precious"


def test_speaker_folders_linked_in_are_found(tmp_path):
    """A raw root whose speaker folders are symlinks to elsewhere (a dataset assembled without copying):
    every recording is prepared, not only those in real folders."""
    store, raw = tmp_path / "store", tmp_path / "raw"
    make_raw(store, recordings=4)  # speakers 1 and 2
    raw.mkdir()
    (raw / "1").symlink_to(store / "1", target_is_directory=True)
    (raw / "2").symlink_to(store / "2", target_is_directory=True)
    pairs = beat.find_recordings(raw)
    assert len(pairs) == 4 and all(text.suffix == ".TextGrid" for _, text in pairs)
    dataset = beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    assert dataset.info["recordings"] == 4


def test_an_empty_raw_root_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """data.raw_root = "" with data.source=synthetic would write the demo set into the current folder."""
    monkeypatch.chdir(tmp_path)
    config = base_config()
    config.data.source, config.data.raw_root, config.data.root = "synthetic", "", str(tmp_path / "prep")
    with pytest.raises(beat.MissingInputError, match=r"data.raw_root is empty"):
        beat.dataset_from_config(config, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_neither_a_prepared_root_nor_a_raw_folder_says_where_to_point(tmp_path):
    """A resume or eval whose prepared data moved (and whose raw folder is elsewhere or gone): the error
    names both fields and gives the moved data's flag first, then how to prepare BEAT."""
    config = base_config()
    config.data.source, config.data.raw_root = "beat", str(tmp_path / "raw_gone")
    config.data.root = str(tmp_path / "prepared_moved")
    with pytest.raises(beat.MissingInputError) as refused:
        beat.dataset_from_config(config, log=lambda *_: None)
    message = str(refused.value)
    assert "prepared_moved is not prepared and data.raw_root" in message and "raw_gone" in message
    assert "if the prepared data moved, give its new place with --config.data.root=<folder>" in message
    assert "--mode prepare" in message and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ a researcher's own recordings
ONE_RECORDING = "1/1_spk0_0_1_1"  # make_raw's first recording, relative to the raw root
ALONE = beat.PrepareOptions(val_fraction=0.0, test_fraction=0.0)  # every recording in train
WORD_CAPTIONS = {"look here", "wave now", "point there"}  # WORDS' sentences but the 0.2 s "uh"


def captions_of(dataset):
    return {c for (c,) in dataset.split("train").captions}


def warnings_in(logged):
    return [line for line in logged if line.startswith("warning: ")]


@pytest.mark.parametrize("second", ["take1", "Take1"])
def test_recordings_of_one_name_in_two_folders_are_refused(tmp_path, second):
    """alice/take1.bvh and bob/take1.bvh would share clip ids (take1_000, ...): one would overwrite the
    other's clips (Take1 too, on a case-insensitive file system). Both paths are named, nothing written."""
    raw = tmp_path / "raw"
    for speaker, name in (("alice", "take1"), ("bob", second)):
        (raw / speaker).mkdir(parents=True)
        (raw / speaker / f"{name}.bvh").write_text(bvh_text(*angles_and_root(0)))
        (raw / speaker / f"{name}.TextGrid").write_text(textgrid_text(WORDS, SECONDS))
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", ALONE, log=lambda *_: None)
    message = str(refused.value)
    assert str(raw / "alice" / "take1.bvh") in message and str(raw / "bob" / f"{second}.bvh") in message
    assert "must be unique across data.raw_root" in message and "prefix the speaker" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fill", ["sil", "SIL", "<eps>"])  # <eps>: Kaldi's empty label
def test_silence_labels_are_pauses_when_named_and_warned_of_otherwise(tmp_path, fill):
    """A transcript whose silences are labelled (as MFA/Kaldi write 'sil') instead of blank: by default the
    labels are words (a one-sentence caption 'sil look sil here ...') and a warning names the label, its
    count and the setting; with data.pause_labels naming it (any case) the sentences are the words'."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=1)
    (raw / f"{ONE_RECORDING}.TextGrid").write_text(textgrid_text(WORDS, SECONDS, fill=fill))
    logged = []
    as_words = beat.prepare_beat(raw, tmp_path / "default", ALONE, log=logged.append)
    assert len(captions_of(as_words)) == 1 and next(iter(captions_of(as_words))).startswith(f"{fill} look")
    # 8 silences: before 'look', 7 gaps between sentences or words, after 'there'
    (warning,) = warnings_in(logged)
    assert f"{fill!r} (8 intervals)" in warning and f"--config.data.pause_labels={fill}" in warning
    logged = []
    options = dataclasses.replace(ALONE, pause_labels=f" {fill.lower()} , sp")
    as_pauses = beat.prepare_beat(raw, tmp_path / "named", options, log=logged.append)
    assert captions_of(as_pauses) == WORD_CAPTIONS
    assert warnings_in(logged) == []


def in_metres(joints=JOINTS):
    return [(name, parent, tuple(v / 100 for v in offset), order) for name, parent, offset, order in joints]


def test_recordings_in_another_unit_and_a_floor_too_coarse_for_metres_are_warned_of(tmp_path):
    """A folder mixing exporters in centimetres and metres is averaged into one skeleton and trained in two
    units: prepare names the odd recording. All in metres: one unit, but data.std_floor (1e-2, meant for
    centimetres) floors features that vary less than a centimetre; the warning counts them (against
    float64 statistics of the written clips) and gives a floor 100x smaller, after which it is quiet."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    odd = "2_spk1_0_2_2"  # the last recording read: the first one's skeleton stays in centimetres
    angles, root = truth[odd]
    (raw / "2" / f"{odd}.bvh").write_text(bvh_text(angles, root / 100, joints=in_metres()))
    logged = []
    beat.prepare_beat(raw, tmp_path / "mixed", beat.PrepareOptions(), log=logged.append)
    (mixed,) = [line for line in warnings_in(logged) if "median recording's" in line]
    assert "1 recording(s) have bones more than 2x longer or shorter than the median" in mixed
    assert f"{odd}.bvh: 0.01x)" in mixed
    assert not any("metres?" in line for line in logged)

    for stem, (angles, root) in truth.items():
        (raw / stem[0] / f"{stem}.bvh").write_text(bvh_text(angles, root / 100, joints=in_metres()))
    logged = []
    dataset = beat.prepare_beat(raw, tmp_path / "metres", beat.PrepareOptions(), log=logged.append)
    spread = np.concatenate([np.asarray(m, np.float64) for m in dataset.split("train").motions]).std(axis=0)
    below = int(((spread > 0) & (spread < 1e-2)).sum())
    assert below > 0
    (coarse,) = [line for line in warnings_in(logged) if "metres?" in line]
    assert "rest pose spans 0.25 units (metres?)" in coarse
    assert f"raised the std of {below} of the {spread.size} features" in coarse
    assert "--config.data.std_floor=0.0001" in coarse
    assert not any("median recording's" in line for line in logged)
    logged = []
    fine = dataclasses.replace(beat.PrepareOptions(), std_floor=1e-7)
    beat.prepare_beat(raw, tmp_path / "metres_floored", fine, log=logged.append)
    assert not any("metres?" in line for line in logged), logged


def test_a_metre_figure_is_told_the_geometric_weight_and_a_centimetre_equivalent_floor_is_kept(tmp_path):
    """The geometric loss is in units^2: prepare tells a figure in metres (millimetres) the
    loss.geometric_weight that weighs it as in centimetres, and a figure in centimetres nothing. The floor
    it advises for metres (1e-4, the default's centimetre in metres) is not warned of again, although
    features still vary less than it (float64 statistics of the written clips): it had advised 100x less
    again at every floor, as long as one feature varied less."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    logged = []
    beat.prepare_beat(raw, tmp_path / "cm", beat.PrepareOptions(), log=logged.append)
    assert not any("geometric_weight" in line for line in logged), logged
    # The rig spans 25 units: 0.25 reads as metres, 2500 as millimetres.
    for scale, unit, weight in ((1 / 100, "metres", "100"), (100, "millimetres", "0.0001")):
        for stem, (angles, root) in truth.items():
            joints = [(n, parent, tuple(v * scale for v in offset), o) for n, parent, offset, o in JOINTS]
            (raw / stem[0] / f"{stem}.bvh").write_text(bvh_text(angles, root * scale, joints=joints))
        floor = 1e-4 if unit == "metres" else 1e-2
        logged = []
        options = dataclasses.replace(beat.PrepareOptions(), std_floor=floor)
        dataset = beat.prepare_beat(raw, tmp_path / unit, options, log=logged.append)
        (line,) = [line for line in warnings_in(logged) if "geometric_weight" in line]
        assert f"as a figure in {unit} would" in line
        assert f"--config.loss.geometric_weight={weight} " in line
        motions = [np.asarray(m, np.float64) for m in dataset.split("train").motions]
        spread = np.concatenate(motions).std(axis=0)
        if unit == "metres":
            assert ((spread > 0) & (spread < 1e-4)).any()
        assert not any("std_floor" in line for line in logged), logged


# The test rig's joints with Z up: Y-up (x, y, z) written as (x, -z, y), so that turning Z up to Y up,
# (x, y, z) -> (x, z, -y), gives JOINTS back.
JOINTS_Z_UP = [(n, parent, (x, -z, y), order) for n, parent, (x, y, z), order in JOINTS]


def z_up_to_y_up(points):
    """[..., 3] Z-up points as Y-up ones: (x, y, z) -> (x, z, -y), the figure's front from -Y to +Z."""
    points = np.asarray(points, np.float64)
    return np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1)


@pytest.mark.parametrize("kind", ["positions", "axis_angle"])
def test_recordings_with_z_up_are_warned_of_and_turned_to_y_up_by_data_up_axis(tmp_path, kind):
    """Z-up recordings prepared as they are would be stood on the ground along y and drawn lying down by
    sampling: prepare warns of a rest pose lying in y. With data.up_axis=z they are turned to Y up as they
    are read: the clips decode to the float64 positions of the files turned (x, y, z) -> (x, z, -y), on a
    skeleton whose offsets are turned alike, and the warning is gone."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    for stem, (angles, root) in truth.items():
        (raw / stem[0] / f"{stem}.bvh").write_text(bvh_text(angles, root, joints=JOINTS_Z_UP))
    logged = []
    options = beat.PrepareOptions(representation=kind)
    beat.prepare_beat(raw, tmp_path / "as_is", options, log=logged.append)
    (lying,) = [line for line in warnings_in(logged) if "lies in y" in line]
    assert "spans 18 x 1 x 25 units along x, y, z" in lying
    assert "--config.data.up_axis=" in lying
    logged = []
    turned = dataclasses.replace(options, up_axis="z")
    dataset = beat.prepare_beat(raw, tmp_path / "turned", turned, log=logged.append)
    assert not any("lies in y" in line for line in logged), logged
    np.testing.assert_allclose(dataset.skeleton.offsets, [offset for _, _, offset, _ in JOINTS], atol=1e-6)
    sentences = beat.sentences(WORDS, 0.5)
    for split in motion_text.SPLITS:
        for clip_id, clip in zip(dataset.split(split).ids, dataset.split(split).motions, strict=True):
            recording, k = clip_id.rsplit("_", 1)
            positions = z_up_to_y_up(numpy_positions(*truth[recording], JOINTS_Z_UP)[::2])
            first, last = clip_frames(sentences[int(k)].start_s, sentences[int(k)].end_s)
            expected = positions[first:last] - positions[first, 0]
            decoded = np.asarray(representation.decode(clip, dataset.skeleton, kind))
            np.testing.assert_allclose(decoded - decoded[:1, :1], expected, atol=5e-3)
    with pytest.raises(UserError, match=r"data.up_axis is 'Z'; expected .* y, z, x"):
        beat.PrepareOptions(up_axis="Z")


@pytest.mark.parametrize("axis", ["y", "z", "x"])
def test_each_up_axis_is_turned_onto_y_by_a_rotation(axis):
    """data.up_axis's turn takes that axis onto +Y and is a rotation (no mirror image of the figure)."""
    turn = beat.TO_Y_UP[axis]
    np.testing.assert_array_equal(turn @ np.eye(3)["xyz".index(axis)], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(turn @ turn.T, np.eye(3), atol=0)
    assert np.linalg.det(turn) == pytest.approx(1.0)


def test_positions_data_take_bones_from_the_position_channels_that_replace_offsets(tmp_path):
    """An exporter writing six channels on every joint may leave OFFSET at 0: the positions come from the
    channels, and so must the dataset's skeleton (eval's bone-length error and sampling's size check
    measure against its bones): its bone lengths are those of the float64 positions of the files, not
    the OFFSETs' (Spine's OFFSET 0 had made its bone 0 long)."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    spine = (0.5, 12.0, -1.0)
    joints = [*JOINTS[:1], ("Spine", 0, (0, 0, 0), "ZXY"), *JOINTS[2:]]
    for stem, (angles, root) in truth.items():
        text = bvh_text(angles, root, joints=joints)
        (raw / stem[0] / f"{stem}.bvh").write_text(with_spine_positions(text, np.tile(spine, (len(root), 1))))
    dataset = beat.prepare_beat(raw, tmp_path / "pos", beat.PrepareOptions(), log=lambda *_: None)
    positions = numpy_positions(
        *next(iter(truth.values())), [*JOINTS[:1], ("Spine", 0, spine, "ZXY"), *JOINTS[2:]]
    )
    parents = [parent for _, parent, _, _ in JOINTS]
    bones = [np.linalg.norm(positions[0, j] - positions[0, parents[j]]) for j in range(1, len(JOINTS))]
    np.testing.assert_allclose(dataset.skeleton.bone_lengths(), bones, rtol=1e-6)


def phones(words):
    """Each word's letters as phones splitting its span evenly (a MAUS-like phone tier)."""
    out = []
    for start, end, word in words:
        step = (end - start) / len(word)
        out += [(start + i * step, start + (i + 1) * step, letter) for i, letter in enumerate(word)]
    return out


def test_the_word_tier_is_chosen_by_textgrid_tier_and_a_fallback_is_warned_of(tmp_path):
    """BAS WebMAUS writes the phones ('MAU') before the words ('ORT-MAU'): the default rule reads the first
    interval tier, says which in the summary and warns naming the tiers and data.textgrid_tier; with
    data.textgrid_tier the words come from that tier."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=1)
    text_path = raw / f"{ONE_RECORDING}.TextGrid"
    text_path.write_text(textgrid_text(None, SECONDS, tiers=[("MAU", phones(WORDS)), ("ORT-MAU", WORDS)]))
    logged = []
    from_phones = beat.prepare_beat(raw, tmp_path / "default", ALONE, log=logged.append)
    assert captions_of(from_phones) == {" ".join(c.replace(" ", "")) for c in WORD_CAPTIONS}  # 'l o o k ...'
    assert "words from tier 'MAU'" in logged[0]
    (warning,) = warnings_in(logged)
    assert f"{text_path}: 'MAU', 'ORT-MAU'" in warning and "--config.data.textgrid_tier=" in warning
    logged = []
    options = dataclasses.replace(ALONE, textgrid_tier="ORT-MAU")
    assert captions_of(beat.prepare_beat(raw, tmp_path / "ort", options, log=logged.append)) == WORD_CAPTIONS
    assert "words from tier 'ORT-MAU'" in logged[0] and warnings_in(logged) == []
    with pytest.raises(
        beat.DatasetError,
        match=rf"^{re.escape(str(text_path))}:0: data.textgrid_tier: no tier named 'ORT'; tiers are "
        r"\['MAU', 'ORT-MAU'\]$",
    ):
        beat.prepare_beat(raw, tmp_path / "ort2", dataclasses.replace(ALONE, textgrid_tier="ORT"))
    # The Montreal Forced Aligner's '<speaker> - phones' before '<speaker> - words': read, and no warning
    text_path.write_text(
        textgrid_text(None, SECONDS, tiers=[("spk0 - phones", phones(WORDS)), ("spk0 - words", WORDS)])
    )
    logged = []
    assert captions_of(beat.prepare_beat(raw, tmp_path / "mfa", ALONE, log=logged.append)) == WORD_CAPTIONS
    assert "words from tier 'spk0 - words'" in logged[0] and warnings_in(logged) == []
    # Two speakers' word tiers: the first is read, and the guess is warned of as any other
    text_path.write_text(
        textgrid_text(None, SECONDS, tiers=[("spk0 - words", WORDS), ("spk1 - words", WORDS)])
    )
    logged = []
    beat.prepare_beat(raw, tmp_path / "mfa2", ALONE, log=logged.append)
    (warning,) = warnings_in(logged)
    assert f"{text_path}: 'spk0 - words', 'spk1 - words'" in warning


def test_a_cache_recorded_before_the_textgrid_options_existed_is_reused_at_their_defaults(tmp_path):
    """A dataset.json written before data.pause_labels / data.textgrid_tier (and the inputs' sha256)
    existed: prepare and training accept it with those fields at their defaults, refuse it with others, and
    a touched input is refused as before (no hash to compare)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=1)
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    record = json.loads((out / "dataset.json").read_text())
    assert {"pause_labels": "", "textgrid_tier": ""}.items() <= record["fingerprint"]["options"].items()
    for key in ("pause_labels", "textgrid_tier"):
        del record["fingerprint"]["options"][key]
    del record["fingerprint"]["sha256"]
    (out / "dataset.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    old = (out / "dataset.json").read_bytes()
    assert beat.prepare_beat(raw, out, ALONE, log=lambda *_: None).info["recordings"] == 1
    config = base_config()
    config.data.raw_root, config.data.root = str(raw), str(out)
    config.data.val_fraction = config.data.test_fraction = 0.0
    assert beat.dataset_from_config(config, log=lambda *_: None).info["recordings"] == 1
    config.data.pause_labels = "sil"
    with pytest.raises(beat.OccupiedFolderError, match=r"data.pause_labels '' \(the config: 'sil'\)"):
        beat.dataset_from_config(config, log=lambda *_: None)
    with pytest.raises(beat.OccupiedFolderError, match=r"options data.textgrid_tier differ"):
        beat.prepare_beat(raw, out, dataclasses.replace(ALONE, textgrid_tier="ORT-MAU"))
    text = raw / f"{ONE_RECORDING}.TextGrid"
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10**9))
    with pytest.raises(beat.OccupiedFolderError, match="1 input file changed since it was prepared"):
        beat.prepare_beat(raw, out, ALONE)
    assert (out / "dataset.json").read_bytes() == old


def test_a_touched_input_is_compared_by_content(tmp_path, monkeypatch):
    """Inputs copied or cloned (new mtimes, same bytes) reuse the cache, hashing only the files whose mtime
    moved; a change of content of the same size, an added and a removed recording are refused, each named."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=2)
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    record = (out / "dataset.json").read_bytes()
    hashed = []
    sha256 = beat.sha256_of
    monkeypatch.setattr(beat, "sha256_of", lambda path: hashed.append(path) or sha256(path))
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    assert hashed == []  # nothing touched, nothing read
    text, motion = raw / f"{ONE_RECORDING}.TextGrid", raw / f"{ONE_RECORDING}.bvh"
    for path in (text, motion):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert beat.prepare_beat(raw, out, ALONE, log=lambda *_: None).info["recordings"] == 2
    assert sorted(hashed) == sorted([text, motion])
    original = text.read_text()
    text.write_text(original.replace('"look"', '"lock"'))  # same size, other words
    changed = (
        rf"\(1 input file changed since it was prepared \(size or content; e.g. {ONE_RECORDING}\.TextGrid"
    )
    with pytest.raises(beat.OccupiedFolderError, match=changed):
        beat.prepare_beat(raw, out, ALONE)
    text.write_text(original)
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    extra = raw / "3" / "3_spk2_0_9_9"
    extra.parent.mkdir()
    extra.with_suffix(".bvh").write_text(motion.read_text())
    extra.with_suffix(".TextGrid").write_text(original)
    with pytest.raises(
        beat.OccupiedFolderError, match=r"\(2 input files added \(e.g. 3/3_spk2_0_9_9.TextGrid\)\)"
    ):
        beat.prepare_beat(raw, out, ALONE)
    for path in (*extra.parent.iterdir(), motion):
        path.unlink()
    with pytest.raises(
        beat.OccupiedFolderError, match=rf"\(2 input files removed \(e.g. {ONE_RECORDING}.TextGrid\)\)"
    ):
        beat.prepare_beat(raw, out, ALONE)
    assert (out / "dataset.json").read_bytes() == record


OLD_NS = 1_600_000_000 * 10**9  # 2020: the times a copy of the raw folder is given, well before any run


def copied_raw(raw, copy):
    """A copy of the raw folder with the same bytes and new times (as `cp` without -p, a clone or a
    download gives): each file's mtime OLD_NS + its index."""
    shutil.copytree(raw, copy)
    paths = sorted(p for p in copy.rglob("*") if p.is_file())
    for k, path in enumerate(paths):
        os.utime(path, ns=(OLD_NS, OLD_NS + k))
    return paths


def counting_hashes(monkeypatch):
    hashed, sha256 = [], beat.sha256_of
    monkeypatch.setattr(beat, "sha256_of", lambda path: hashed.append(path) or sha256(path))
    return hashed


def megabytes(paths):
    return f"{sum(os.path.getsize(p) for p in paths) / 1e6:.1f} MB"


def test_a_copied_raw_folder_is_read_once_then_known_by_its_times(tmp_path, monkeypatch):
    """After raw BEAT is copied (new times, same bytes), the first run reads every file to compare its
    sha256, then records the new times beside dataset.json; later runs read none. dataset.json and the
    dataset (its fgd.dataset_fingerprint: what an FGD autoencoder is tied to) stay as they were."""
    from motion_ddpm_jax.fgd import dataset_fingerprint

    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=2)
    expected = beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    record, before = (out / "dataset.json").read_bytes(), os.listdir(out)
    paths = copied_raw(raw, tmp_path / "copy")
    hashed = counting_hashes(monkeypatch)
    logged = []
    got = beat.prepare_beat(tmp_path / "copy", out, ALONE, log=logged.append)
    assert sorted(hashed) == paths
    seen = out / "inputs_seen.json"
    assert logged == [
        f"4 input files ({megabytes(paths)}) matched the prepared cache by content under new times (copied "
        f"since it was prepared); their times are recorded in {seen}, so later runs do not read them again"
    ]
    files = json.loads(seen.read_text())["files"]
    names = [str(p.relative_to(tmp_path / "copy")) for p in paths]
    assert files == {
        name: {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "times": [[os.stat(path).st_size, os.stat(path).st_mtime_ns]],
        }
        for name, path in zip(names, paths, strict=True)
    }
    assert (out / "dataset.json").read_bytes() == record
    assert got.info == expected.info and dataset_fingerprint(got) == dataset_fingerprint(expected)
    assert sorted(os.listdir(out)) == sorted([*before, "inputs_seen.json"])  # no staging copy left
    hashed.clear(), logged.clear()
    written = seen.read_bytes()
    again = beat.prepare_beat(tmp_path / "copy", out, ALONE, log=logged.append)
    assert hashed == [] and logged == [] and seen.read_bytes() == written
    assert dataset_fingerprint(again) == dataset_fingerprint(expected)
    # A second copy (another host's scratch) adds its times to those of the first: both are known after.
    touched = raw / f"{ONE_RECORDING}.bvh"
    os.utime(touched, ns=(OLD_NS, OLD_NS - 7))
    beat.prepare_beat(raw, out, ALONE, log=logged.append)
    assert hashed == [touched] and len(logged) == 1 and logged[0].startswith("1 input file (")
    times = json.loads(seen.read_text())["files"][f"{ONE_RECORDING}.bvh"]["times"]
    assert times[0] == [os.stat(touched).st_size, OLD_NS - 7] and len(times) == 2
    hashed.clear()
    for folder in (raw, tmp_path / "copy"):
        beat.prepare_beat(folder, out, ALONE, log=lambda *_: None)
    assert hashed == []
    # A record that is not ours (damaged) is only a lost shortcut: the files are read again, it is rewritten.
    seen.write_text("{not json")
    beat.prepare_beat(tmp_path / "copy", out, ALONE, log=lambda *_: None)
    assert sorted(hashed) == paths and set(json.loads(seen.read_text())["files"]) == set(names)


def test_a_file_touched_within_the_clock_tick_of_its_reading_is_not_remembered(tmp_path, monkeypatch):
    """A file whose mtime is within RACY_NS of its reading could be written again in the same tick with
    its times unchanged: it is read, found unchanged, and read again next run rather than remembered."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=1)
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    motion = raw / f"{ONE_RECORDING}.bvh"
    os.utime(motion, ns=(OLD_NS, time.time_ns() - 5 * 10**8))  # half a second ago
    hashed = counting_hashes(monkeypatch)
    for _ in range(2):
        beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    assert hashed == [motion, motion]
    assert not (out / "inputs_seen.json").exists()
    os.utime(motion, ns=(OLD_NS, OLD_NS))  # an old time: remembered
    for _ in range(2):
        beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    assert hashed == [motion] * 3


def test_a_remembered_file_whose_content_changed_at_the_same_size_is_refused(tmp_path, monkeypatch):
    """Times remembered for a copy vouch for those times only: the copy's file rewritten at the same size
    (new content, its own new times) is read and refused, naming it, and both records are left as they
    are."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=2)
    beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    copied_raw(raw, tmp_path / "copy")
    beat.prepare_beat(tmp_path / "copy", out, ALONE, log=lambda *_: None)
    records = {name: (out / name).read_bytes() for name in ("dataset.json", "inputs_seen.json")}
    text = tmp_path / "copy" / f"{ONE_RECORDING}.TextGrid"
    original = text.read_text()
    text.write_text(original.replace('"look"', '"lock"'))  # same size, other words
    os.utime(text, ns=(OLD_NS, OLD_NS - 1))  # an old time, though not the remembered one
    hashed = counting_hashes(monkeypatch)
    with pytest.raises(
        beat.OccupiedFolderError, match=rf"1 input file changed since it was prepared .*{ONE_RECORDING}"
    ):
        beat.prepare_beat(tmp_path / "copy", out, ALONE, log=lambda *_: None)
    assert hashed == [text]
    assert {name: (out / name).read_bytes() for name in records} == records


@pytest.mark.parametrize(
    "refusal", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")]
)
def test_times_that_cannot_be_recorded_are_said_and_the_run_goes_on(tmp_path, monkeypatch, refusal):
    """A cache folder the run cannot write (another user's, a read-only mount): the dataset is returned as
    it would be otherwise, one line says the times were not recorded, why, what it costs and what to do,
    and nothing is left in the folder; once it can be written, the next run records them."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=2)
    expected = beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    before = sorted(os.listdir(out))
    paths = copied_raw(raw, tmp_path / "copy")
    code, reason = refusal

    def refuse(source, target):
        raise OSError(code, reason, str(target))

    monkeypatch.setattr(beat.os, "replace", refuse)
    hashed = counting_hashes(monkeypatch)
    for run in range(2):
        logged = []
        got = beat.prepare_beat(tmp_path / "copy", out, ALONE, log=logged.append)
        assert got.info == expected.info and np.array_equal(got.std, expected.std)
        assert logged == [
            f"warning: 4 input files ({megabytes(paths)}) matched the prepared cache by content under new "
            f"times, but their times could not be recorded in {out / 'inputs_seen.json'} ({reason}): every "
            f"run will read them again. Make {out} writable once (the next run records them), or prepare "
            "again into a folder you own (--config.data.root=<new folder>)"
        ]
        assert sorted(os.listdir(out)) == before  # no staging copy, no record
        assert sorted(hashed) == sorted(paths * (run + 1))  # read again by each run
    monkeypatch.undo()
    hashed = counting_hashes(monkeypatch)
    beat.prepare_beat(tmp_path / "copy", out, ALONE, log=lambda *_: None)
    beat.prepare_beat(tmp_path / "copy", out, ALONE, log=lambda *_: None)
    assert sorted(hashed) == paths and sorted(os.listdir(out)) == sorted([*before, "inputs_seen.json"])


def test_a_demo_set_that_cannot_be_written_names_the_data_fields(tmp_path):
    """--mode eval of a demo run away from its data re-creates the demo set at the recorded data.raw_root;
    where that cannot be written the error had been a bare errno, not saying what was being written."""
    (tmp_path / "a_file").write_text("mine")
    config = base_config()
    config.data.source, config.data.raw_root = "synthetic", str(tmp_path / "a_file" / "raw")
    config.data.root = str(tmp_path / "prepared")
    logged = []
    with pytest.raises(UserError, match=r"a_file.*cannot write the demo set there.*--config\.data\.raw_root"):
        beat.dataset_from_config(config, log=logged.append)
    assert "writing the demo set into data.raw_root" in logged[0]
    assert (tmp_path / "a_file").read_text() == "mine"


def test_a_raw_root_of_other_files_is_named_with_why_the_demo_set_is_not_written(tmp_path):
    """A demo config whose data.raw_root holds other recordings (or another demo seed's set) is refused
    with write_demo_dataset's reason: the message had read 'cannot write the demo set there (None)'. The
    line before it had said "writing the demo set into data.raw_root" of a folder that is never written."""
    from motion_ddpm_jax.data import synthetic

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "take1.bvh").write_text("HIERARCHY")
    other_seed = tmp_path / "seed5"
    synthetic.write_demo_dataset(other_seed, num_speakers=1, recordings_per_speaker=1, seed=5)
    for raw, reason in ((mine, "holds no readable synthetic.json"), (other_seed, "other options")):
        config = base_config()
        config.data.source, config.data.raw_root = "synthetic", str(raw)
        config.data.root = str(tmp_path / "prepared")
        logged = []
        with pytest.raises(UserError) as caught:
            beat.dataset_from_config(config, log=logged.append)
        message = str(caught.value)
        assert reason in message and "None" not in message, message
        # nothing is written there, and the run's line does not say it writes the demo set
        assert logged == [
            f"data.root {config.data.root} is not prepared: preparing it from data.raw_root {raw}, which is "
            "not empty (a demo set written there before is checked and read as it is, not rewritten)"
        ]
        assert f"data.raw_root {raw}" in message and "--config.data.raw_root" in message
    assert (mine / "take1.bvh").read_text() == "HIERARCHY"


def test_a_full_disk_while_the_demo_set_is_written_names_the_file_once(tmp_path, monkeypatch):
    """The error that files.writing words names the file already: the message had said the folder, then
    the same path again inside the parentheses."""
    from motion_ddpm_jax import files
    from motion_ddpm_jax.data import synthetic

    raw = tmp_path / "raw"

    def full_disk(root, **unused):
        staging = tmp_path / ".raw.partial"
        with files.writing(root, staging):
            raise OSError(errno.ENOSPC, "No space left on device", str(staging / "a.bvh"))

    monkeypatch.setattr(synthetic, "write_demo_dataset", full_disk)
    config = base_config()
    config.data.source, config.data.raw_root, config.data.root = "synthetic", str(raw), str(tmp_path / "p")
    with pytest.raises(UserError) as caught:
        beat.dataset_from_config(config, log=lambda line: None)
    message = str(caught.value)
    assert f"cannot write the demo set there (writing {raw / 'a.bvh'}: No space left on device)" in message
    assert message.count(str(raw)) == 1, message


def test_an_input_changed_while_it_is_prepared_is_refused(tmp_path, monkeypatch):
    """A recording written to while prepare reads it (a copy still running) would be cached under a hash of
    content it was not prepared from: refused, naming it, with nothing written."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, recordings=2)
    text = raw / f"{ONE_RECORDING}.TextGrid"
    load_bvh = beat.bvh.load_bvh

    def load_then_touch(path):
        os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10**9))
        return load_bvh(path)

    monkeypatch.setattr(beat.bvh, "load_bvh", load_then_touch)
    with pytest.raises(beat.DatasetError, match=rf"{ONE_RECORDING}\.TextGrid: changed while it was being"):
        beat.prepare_beat(raw, out, ALONE, log=lambda *_: None)
    assert not out.exists()


def test_sentences_past_the_motion_end_are_counted_apart_and_warned_of(tmp_path):
    """A transcript running 3.6 s past its 8 s motion: the sentence across the end (0.3 s left, under
    min_clip_s) and the two after it are counted as past the motion's end, not as short sentences, and a
    warning names the recording."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=1)
    text = raw / f"{ONE_RECORDING}.TextGrid"
    late = [(7.7, 8.6, "across"), (9.2, 9.8, "late"), (11.0, 11.6, "later")]
    text.write_text(textgrid_text(WORDS + late, 12.0))
    logged = []
    dataset = beat.prepare_beat(raw, tmp_path / "out", ALONE, log=logged.append)
    assert captions_of(dataset) == WORD_CAPTIONS
    assert (dataset.info["dropped_short_clips"], dataset.info["dropped_past_motion_end"]) == (1, 3)
    assert "1 shorter than 0.5s, 3 past the motion's end dropped" in logged[0]
    (warning,) = warnings_in(logged)
    assert f"{text}: words to 11.60 s, motion 8.00 s" in warning


def test_a_requested_split_left_without_recordings_is_warned_of(tmp_path):
    """Two recordings round val and test fractions of 0.1 to no recording: each split asked for is named;
    from 3 recordings on each gets one and nothing is warned of."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=2)
    logged = []
    options = beat.PrepareOptions(val_fraction=0.1, test_fraction=0.2)
    dataset = beat.prepare_beat(raw, tmp_path / "two", options, log=logged.append)
    assert dataset.info["counts"]["val"] == dataset.info["counts"]["test"] == 0
    val, test = warnings_in(logged)
    assert "data.val_fraction is 0.1 but the val split got none of the 2 recordings" in val
    assert "data.test_fraction is 0.2 but the test split got none of the 2 recordings" in test
    assert "prepare 3 or more recordings" in val
    logged = []
    beat.prepare_beat(
        raw, tmp_path / "no_val", dataclasses.replace(options, val_fraction=0.0), log=logged.append
    )
    assert [w.split(" is ")[0] for w in warnings_in(logged)] == ["warning: data.test_fraction"]
    make_raw(raw, recordings=3)
    logged = []
    beat.prepare_beat(raw, tmp_path / "three", options, log=logged.append)
    assert warnings_in(logged) == []


def case_sensitive(folder):
    """Whether `folder`'s file system tells names differing in case only apart."""
    probe = folder / "Probe"
    probe.write_text("")
    sensitive = not (folder / "probe").exists()
    probe.unlink()
    return sensitive


def test_recordings_and_transcripts_are_found_whatever_the_case_of_their_extensions(tmp_path):
    """Exporters write `.BVH` and aligners `.textgrid`: such a recording was skipped without a word (or
    refused as without transcript). Found now, each gives the clips (ids and data) it gives under the usual
    extensions, and the record names the files as they are."""
    usual, renamed = tmp_path / "usual", tmp_path / "renamed"
    make_raw(usual, recordings=3)
    make_raw(renamed, recordings=3)
    as_written = {
        "1/1_spk0_0_1_1.bvh": "1/1_spk0_0_1_1.BVH",
        "1/1_spk0_0_3_3.TextGrid": "1/1_spk0_0_3_3.textgrid",
        "2/2_spk1_0_2_2.bvh": "2/2_spk1_0_2_2.Bvh",
        "2/2_spk1_0_2_2.TextGrid": "2/2_spk1_0_2_2.TEXTGRID",
    }
    for old, new in as_written.items():
        (renamed / old).rename(renamed / new)
    files = sorted(str(path.relative_to(renamed)) for path in renamed.rglob("*") if path.is_file())
    assert len(files) == 6 and set(as_written.values()) <= set(files)
    pairs = beat.find_recordings(renamed)
    assert sorted(str(path.relative_to(renamed)) for pair in pairs for path in pair) == files
    expected = beat.prepare_beat(usual, tmp_path / "usual_out", beat.PrepareOptions(), log=lambda *_: None)
    got = beat.prepare_beat(renamed, tmp_path / "renamed_out", beat.PrepareOptions(), log=lambda *_: None)
    for split in motion_text.SPLITS:
        a, b = got.split(split), expected.split(split)
        assert a.ids == b.ids and a.captions == b.captions
        for motion, reference in zip(a.motions, b.motions, strict=True):
            np.testing.assert_array_equal(motion, reference)
    record = json.loads((tmp_path / "renamed_out" / "dataset.json").read_text())
    assert sorted(record["fingerprint"]["sha256"]) == files


def test_two_transcripts_differing_in_case_only_are_refused(tmp_path):
    """take1.TextGrid and take1.textgrid beside take1.bvh: which is the alignment is not ours to guess."""
    if not case_sensitive(tmp_path):
        pytest.skip("the file system does not tell names differing in case only apart")
    raw = tmp_path / "raw"
    make_raw(raw, recordings=1)
    (raw / f"{ONE_RECORDING}.textgrid").write_text(textgrid_text(WORDS[:2], SECONDS))
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", ALONE, log=lambda *_: None)
    message = str(refused.value)
    assert message.startswith(f"{raw / ONE_RECORDING}.bvh: 2 transcripts beside it")
    assert "1_spk0_0_1_1.TextGrid, 1_spk0_0_1_1.textgrid" in message and "expected one TextGrid" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("transcript", ["blank", "blank_first_tier", "pause_labels_only", "too_short"])
def test_a_transcript_without_words_and_a_split_left_without_clips_are_warned_of(tmp_path, transcript):
    """The test split's one recording gives no clip: its TextGrid gives no words (blank intervals; a first
    tier the fallback read that holds none; labels all named by data.pause_labels), or its one sentence is
    too short. Prepare had said nothing (eval later blamed data.min_clip_s): it warns naming the TextGrid
    and its tier, and the split, with why."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    options = beat.PrepareOptions(pause_labels="sil")
    (tested,) = [name for name in truth if beat.split_of(name, list(truth), options) == "test"]
    text = next(raw.rglob(f"{tested}.TextGrid"))
    contents, tier, why = {
        "blank": (textgrid_text([], SECONDS), "words", "blank intervals only"),
        "blank_first_tier": (
            textgrid_text(None, SECONDS, tiers=[("MAU", []), ("ORT-MAU", WORDS)]),
            "MAU",
            "blank intervals only",
        ),
        "pause_labels_only": (
            textgrid_text([], SECONDS, fill="sil"),
            "words",
            "only pauses named by data.pause_labels",
        ),
        "too_short": (textgrid_text([(4.5, 4.7, "uh")], SECONDS), "words", None),
    }[transcript]
    text.write_text(contents)
    logged = []
    dataset = beat.prepare_beat(raw, tmp_path / "out", options, log=logged.append)
    assert dataset.info["counts"]["test"] == 0 and dataset.info["counts"]["val"] > 0
    warnings = warnings_in(logged)
    (empty,) = [w for w in warnings if " split ends with 0 clips" in w]
    assert empty.startswith(f"warning: the test split ends with 0 clips: its 1 recording(s) ({tested}) gave ")
    wordless = [w for w in warnings if "give no words, so their recordings give no clips" in w]
    if why is None:
        assert "gave 1 sentence(s), all dropped: 1 shorter than data.min_clip_s (0.5 s); lower" in empty
        assert wordless == []
    else:
        assert "gave no sentences: their TextGrids give no words (data.min_clip_s plays no part)" in empty
        assert wordless == [
            "warning: 1 TextGrid(s) give no words, so their recordings give no clips: "
            f"{text} (tier {tier!r}: {why}); is the word tier another one "
            "(--config.data.textgrid_tier=<its name>), or the alignment missing?"
        ]


def test_no_training_clips_from_transcripts_without_words_says_so(tmp_path):
    """Every TextGrid blank: the refusal said '0 sentences shorter than data.min_clip_s'; it names the
    recordings and says that their TextGrids give no words. Where the train split got no recording, it says
    that instead."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=2)
    for text in raw.rglob("*.TextGrid"):
        text.write_text(textgrid_text([], SECONDS))
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", ALONE, log=lambda *_: None)
    assert str(refused.value).startswith(
        f"{raw}: the train split ends with 0 clips, nothing to train on: its 2 recording(s) (1_spk0_0_1_1, "
        "2_spk1_0_2_2) gave no sentences: their TextGrids give no words (data.min_clip_s plays no part)"
    )
    assert not (tmp_path / "out").exists()
    make_raw(raw, recordings=2)  # with words again; round(2 x 0.3) = 1 recording each to val and test
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(val_fraction=0.3, test_fraction=0.3))
    assert str(refused.value) == (
        f"{raw}: the train split ends with 0 clips, nothing to train on: it got none of the 2 recordings "
        "(data.val_fraction 0.3 and data.test_fraction 0.3 took them all); lower them"
    )


# JOINTS with Spine's children in the other order (Arm's subtree before Head's): the same joints and parents.
SIBLINGS_SWAPPED = [
    ("Hips", -1, (0, 0, 0), "ZXY"),
    ("Spine", 0, (0, 10, 0), "ZXY"),
    ("Arm", 1, (8, 5, 0), "ZXY"),
    ("Arm_Nub", 2, (10, 0, 0), ""),
    ("Head", 1, (0, 10, 1), "XYZ"),
    ("Head_Nub", 4, (0, 5, 0), ""),
]
SWAPPED_SLOTS = [0, 1, 3, 2]  # its rotating joints (Hips, Spine, Arm, Head) as slots of JOINTS' angles
LATER_RECORDING = "2/2_spk1_0_2_2"  # of make_raw(raw, recordings=3), sorted after ONE_RECORDING


@pytest.mark.parametrize("kind", ["positions", "axis_angle"])
def test_a_recording_listing_sibling_joints_in_another_order_gives_the_same_data(tmp_path, kind):
    """An exporter that lists a joint's children in another order writes the same hierarchy (joint names
    and parents): the recording is read in the first recording's joint order, and the prepared data are
    those of the same motion written in that order (Head has position channels too, held still off its
    OFFSET, as exporters that write six channels on every joint do)."""
    listed, swapped = tmp_path / "listed", tmp_path / "swapped"
    truth = make_raw(listed, recordings=3)
    make_raw(swapped, recordings=3)
    angles, root = truth[LATER_RECORDING.split("/")[1]]
    head = np.tile((0.5, 9.0, 1.5), (len(root), 1))
    (listed / f"{LATER_RECORDING}.bvh").write_text(with_joint_positions(bvh_text(angles, root), "Head", head))
    path = swapped / f"{LATER_RECORDING}.bvh"
    swapped_text = bvh_text(angles[:, SWAPPED_SLOTS], root, SIBLINGS_SWAPPED)
    path.write_text(with_joint_positions(swapped_text, "Head", head))
    as_written = beat.bvh.load_bvh(path)
    assert as_written.skeleton.names == tuple(j[0] for j in SIBLINGS_SWAPPED)
    assert as_written.translated_joints.tolist() == [4]
    options = beat.PrepareOptions(representation=kind)
    expected = beat.prepare_beat(listed, tmp_path / "listed_out", options, log=lambda *_: None)
    got = beat.prepare_beat(swapped, tmp_path / "swapped_out", options, log=lambda *_: None)
    assert got.skeleton.names == expected.skeleton.names == tuple(j[0] for j in JOINTS)
    np.testing.assert_array_equal(got.skeleton.parents, expected.skeleton.parents)
    np.testing.assert_array_equal(got.skeleton.offsets, expected.skeleton.offsets)
    np.testing.assert_array_equal(got.skeleton.end_sites, expected.skeleton.end_sites)
    for split in motion_text.SPLITS:
        a, b = got.split(split), expected.split(split)
        assert a.ids == b.ids and a.captions == b.captions
        for motion, reference in zip(a.motions, b.motions, strict=True):
            np.testing.assert_array_equal(motion, reference)
    np.testing.assert_array_equal(got.mean, expected.mean)
    np.testing.assert_array_equal(got.std, expected.std)


@pytest.mark.parametrize(
    "joints, difference",
    [
        (
            JOINTS[:5],  # no end site under Arm
            "it has 5 joints, 1_spk0_0_1_1.bvh 6; 1_spk0_0_1_1.bvh's joint 5 'Arm_Nub' is not among its "
            "joints",
        ),
        (
            [*JOINTS[:2], ("Neck", 1, (0, 10, 1), "XYZ"), *JOINTS[3:]],  # its end site: Neck_Nub
            "1_spk0_0_1_1.bvh's joint 2 'Head' is not among its joints (2 such joints); its joint 2 'Neck' "
            "is not among 1_spk0_0_1_1.bvh's (2 such joints)",
        ),
        (
            [*JOINTS[:4], ("Arm", 0, (8, 5, 0), "ZXY"), JOINTS[5]],  # Arm on the hips
            "its joint 4 'Arm' has parent 'Hips', in 1_spk0_0_1_1.bvh 'Spine'",
        ),
    ],
    ids=["a_joint_missing", "a_joint_renamed", "a_parent_changed"],
)
def test_a_recording_of_another_hierarchy_is_refused_naming_the_first_difference(
    tmp_path, joints, difference
):
    """'its joint hierarchy differs' said nothing of what differs: the refusal names it (the joint counts
    and a joint one file lacks; a joint whose parent differs), and nothing is written."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=3)
    path = raw / f"{LATER_RECORDING}.bvh"
    path.write_text(bvh_text(*truth[path.stem], joints))
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    assert str(refused.value) == (
        f"{path}: its joint hierarchy differs from {raw / ONE_RECORDING}.bvh's: {difference}; all recordings "
        "of one dataset must share the skeleton's joints and parents (siblings may be listed in any order) "
        f"(the one recording of the 3 under data.raw_root={raw} that cannot be prepared: fix it, or move it "
        "and its TextGrid out of data.raw_root)"
    )
    assert not (tmp_path / "out").exists()


def test_prepare_reads_every_recording_and_names_all_it_cannot_read_in_one_error(tmp_path, monkeypatch):
    """Prepare had stopped at the first recording it could not read: on a large release, one attempt per
    broken file, each after reading all the recordings before it. It reads on and names every one (a
    malformed BVH with its line, a malformed TextGrid, another hierarchy: compared with the first
    recording it could read, as the first one is broken), writes nothing, and prepares the rest once they
    are moved out."""
    raw = tmp_path / "raw"
    truth = make_raw(raw, recordings=5)  # sorted: 1/..._1_1, 1/..._3_3, 1/..._5_5, 2/..._2_2, 2/..._4_4
    broken_bvh = raw / "1" / "1_spk0_0_1_1.bvh"
    text = broken_bvh.read_text()
    broken_bvh.write_text(text.replace("Frame Time:", "Frame Tim:", 1))
    line = text.splitlines().index(next(s for s in text.splitlines() if s.startswith("Frame Time:"))) + 1
    broken_grid = raw / "2" / "2_spk1_0_2_2.TextGrid"
    broken_grid.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = oops\n')
    other = raw / "2" / "2_spk1_0_4_4.bvh"
    other.write_text(bvh_text(*truth[other.stem], JOINTS[:5]))
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    message = str(refused.value)
    assert message.startswith(
        f"3 of the 5 recordings under data.raw_root={raw} cannot be prepared (fix them, or move them and "
        "their TextGrids out of data.raw_root):\n"
    ), message
    lines = message.splitlines()[1:]
    assert len(lines) == 3, message
    assert lines[0].startswith(f"  {broken_bvh}:{line}: "), lines[0]
    assert lines[1].startswith(f"  {broken_grid}:5: "), lines[1]
    assert lines[2] == (
        f"  {other}: its joint hierarchy differs from {raw / '1' / '1_spk0_0_3_3.bvh'}'s: it has 5 joints, "
        "1_spk0_0_3_3.bvh 6; 1_spk0_0_3_3.bvh's joint 5 'Arm_Nub' is not among its joints; all recordings "
        "of one dataset must share the skeleton's joints and parents (siblings may be listed in any order)"
    ), lines[2]
    assert not (tmp_path / "out").exists()

    # At MAX_UNREADABLE failures it stops reading (a systematic mistake would fail every recording).
    monkeypatch.setattr(beat, "MAX_UNREADABLE", 2)
    with pytest.raises(beat.DatasetError) as refused:
        beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    assert str(refused.value).startswith(
        f"the first 2 found of the 5 recordings under data.raw_root={raw} that cannot be prepared (reading "
        "stopped there; fix them"
    ), str(refused.value)
    assert len(str(refused.value).splitlines()) == 3 and str(other) not in str(refused.value)

    aside = tmp_path / "aside"
    aside.mkdir()
    for path in (broken_bvh, broken_grid, other):
        for twin in (path.with_suffix(".bvh"), path.with_suffix(".TextGrid")):
            twin.rename(aside / twin.name)
    dataset = beat.prepare_beat(raw, tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    assert dataset.info["recordings"] == 2
    trained = {clip_id.rsplit("_", 1)[0] for clip_id in dataset.split("train").ids}
    assert trained and trained <= {"1_spk0_0_3_3", "1_spk0_0_5_5"}


def test_data_joint_order_reads_every_recording_in_a_given_skeletons_order(tmp_path):
    """A run fine-tuned on data whose exporter lists sibling joints otherwise than the source's is refused
    (train.init_from): data.joint_order prepares them in the source's order, named by a skeleton.json or
    the prepared folder holding one. Every joint's positions are then those of the same joint prepared in
    the recordings' own order, joint for joint by name; the order is an option of the cache like the
    others; a file that does not read is refused naming the field."""
    raw = tmp_path / "raw"
    make_raw(raw, recordings=3)
    own = beat.prepare_beat(raw, tmp_path / "own", beat.PrepareOptions(), log=lambda *_: None)
    swapped_names = tuple(j[0] for j in SIBLINGS_SWAPPED)
    order = Skeleton(
        swapped_names,
        np.array([j[1] for j in SIBLINGS_SWAPPED]),
        np.array([j[2] for j in SIBLINGS_SWAPPED], np.float32),
        np.array([not j[3] for j in SIBLINGS_SWAPPED]),
    )
    order.save_json(tmp_path / "order" / "skeleton.json")
    for given in (tmp_path / "order" / "skeleton.json", tmp_path / "order"):
        out = tmp_path / f"ordered_{given.name}"
        options = beat.PrepareOptions(joint_order=str(given))
        ordered = beat.prepare_beat(raw, out, options, log=lambda *_: None)
        assert ordered.skeleton.names == swapped_names != own.skeleton.names
        where = [own.skeleton.names.index(name) for name in swapped_names]  # own joint of each ordered one
        np.testing.assert_array_equal(ordered.skeleton.offsets, own.skeleton.offsets[where])
        for split in motion_text.SPLITS:
            a, b = ordered.split(split), own.split(split)
            assert a.ids == b.ids
            for motion, reference in zip(a.motions, b.motions, strict=True):
                positions = np.asarray(motion).reshape(len(motion), -1, 3)
                expected = np.asarray(reference).reshape(len(reference), -1, 3)[:, where]
                np.testing.assert_array_equal(positions, expected)
    with pytest.raises(beat.OccupiedFolderError, match=r"options data.joint_order differ"):  # the cache's
        beat.prepare_beat(raw, tmp_path / "ordered_order", beat.PrepareOptions(), log=lambda *_: None)
    with pytest.raises(UserError, match=rf"data.joint_order={re.escape(str(tmp_path))}/nowhere: .*skeleton"):
        beat.prepare_beat(
            raw, tmp_path / "x", beat.PrepareOptions(joint_order=str(tmp_path / "nowhere")), log=print
        )
    assert not (tmp_path / "x").exists()


def test_a_data_std_floor_that_a_folder_written_from_arrays_does_not_use_is_said(tmp_path):
    """data.source=prepared reads a write_dataset folder's statistics as written (floored at its
    dataset.json's std_floor): --config.data.std_floor=1e-4, as the README advises for metres, did nothing
    and nothing said so. The std the run standardizes with is still the written floor's (float64 here),
    and the note names both floors and how to write the data again; the default floor, or the folder's
    own, says nothing."""
    import warnings

    rng = np.random.default_rng(4)
    motions = tuple(
        np.stack([rng.normal(0, 1, 30), rng.normal(0, 1e-3, 30), np.full(30, 0.5)], -1).astype(np.float32)
        for _ in range(3)
    )
    splits = {"train": motion_text.Split("train", ("a", "b", "c"), motions, (("x",), ("y",), ("z",)))}
    for name, floor in (("cm", 1e-2), ("m", 1e-4)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (positions without a skeleton)
            motion_text.write_dataset(
                tmp_path / name, splits, {"representation": "positions", "fps": 20}, std_floor=floor
            )
    config = base_config()
    config.data.update(source="prepared", root=str(tmp_path / "cm"), fps=20.0, std_floor=1e-4)
    logged = []
    dataset = beat.dataset_from_config(config, log=logged.append)
    spread = np.concatenate(motions).astype(np.float64).std(axis=0)
    np.testing.assert_allclose(dataset.std, np.maximum(spread, 1e-2), rtol=1e-5)  # not 1e-4's
    (note,) = [line for line in logged if "std_floor" in line]
    assert f"data.std_floor=0.0001 is not used: the statistics of data.root {tmp_path / 'cm'}" in note
    assert "were floored at 0.01 when it was written" in note
    assert "write_dataset(..., std_floor=0.0001)" in note
    for root, floor in (("cm", 1e-2), ("m", 1e-2), ("m", 1e-4)):
        config.data.update(root=str(tmp_path / root), std_floor=floor)
        logged = []
        beat.dataset_from_config(config, log=logged.append)
        assert not [line for line in logged if "std_floor" in line], (root, floor, logged)
