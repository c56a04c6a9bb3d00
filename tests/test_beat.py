"""Raw BEAT preparation on a small raw folder written here (BVH and TextGrid as text), checked in numpy."""

import json
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import representation
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import beat, motion_text

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


def bvh_text(angles, root):
    lines = ["HIERARCHY"]

    def write(j, depth):
        name, _, (x, y, z), order = JOINTS[j]
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
        for child, joint in enumerate(JOINTS):
            if joint[1] == j:
                write(child, depth + 1)
        lines.append(f"{pad}}}")

    write(0, 0)
    frames = np.concatenate([root, angles.reshape(len(root), -1)], axis=1)
    lines += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {1 / FPS_IN:.8f}"]
    lines += [" ".join(f"{v:.4f}" for v in row) for row in frames]
    return "\n".join(lines) + "\n"


def textgrid_text(words, xmax):
    intervals, cursor = [], 0.0
    for start, end, word in words:
        if start > cursor:
            intervals.append((cursor, start, ""))
        intervals.append((start, end, word))
        cursor = end
    intervals.append((cursor, xmax, ""))
    out = [
        'File type = "ooTextFile"\nObject class = "TextGrid"\n',
        f"xmin = 0\nxmax = {xmax}\ntiers? <exists>\nsize = 1\nitem []:\n    item [1]:",
        f'        class = "IntervalTier"\n        name = "words"\n        xmin = 0\n        xmax = {xmax}',
        f"        intervals: size = {len(intervals)}",
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
    assert again.info["counts"] == json.loads((out / "dataset.json").read_text())["counts"]
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="data.fps"):
        beat.prepare_beat(raw, out, beat.PrepareOptions(fps=30), log=lambda *_: None)
    text = next(raw.rglob("*.TextGrid"))
    os.utime(text, ns=(text.stat().st_atime_ns, text.stat().st_mtime_ns + 10**9))
    with pytest.raises(FileExistsError, match="input files"):
        beat.prepare_beat(raw, out, beat.PrepareOptions(), log=lambda *_: None)
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
    head, frames = text.split("Frame Time:")
    lines = head.splitlines()
    spine = next(i for i, line in enumerate(lines) if line.strip() == "JOINT Spine")
    channels = spine + 3  # JOINT, {, OFFSET, CHANNELS
    lines[channels] = lines[channels].replace("CHANNELS 3", "CHANNELS 6 Xposition Yposition Zposition")
    time_line, *rows = frames.strip("\n").split("\n")
    rows = [
        " ".join([*row.split()[:6], *(f"{v:.4f}" for v in xyz), *row.split()[6:]])
        for row, xyz in zip(rows, spine_xyz, strict=True)
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
        beat.bvh.BvhError, match=rf"{moving.name}.*Spine.*move.*data.representation=positions"
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
