"""The synthetic demo set: real BEAT files, gestures that are what their words say, safe to re-run."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from motion_ddpm_jax.data import synthetic
from motion_ddpm_jax.data.bvh import euler_to_matrix_np, load_bvh
from motion_ddpm_jax.data.textgrid import load_textgrid, load_words
from motion_ddpm_jax.skeleton import beat_skeleton

SKELETON = beat_skeleton()
J = {name: index for index, name in enumerate(SKELETON.names)}
MIN_PAUSE_S = 0.5  # the preparation cuts transcripts at silences this long
# Three speakers, one recording each, one round of all gestures per recording.
OPTIONS = dict(
    num_speakers=3, recordings_per_speaker=1, sentences_per_recording=len(synthetic.GESTURES), seed=3
)


# ------------------------------------------------------------------------------------------- fixtures
class Recording:
    """One generated recording read back by the real readers, with its sentences."""

    def __init__(self, bvh_path: Path):
        self.path = bvh_path
        self.motion = load_bvh(bvh_path)
        self.words = load_words(bvh_path.with_suffix(".TextGrid"))
        self.positions = self.motion.positions().astype(np.float64)  # [T, J, 3], cm
        self.sentences = split_sentences(self.words)

    def frames(self, start_s: float, end_s: float) -> slice:
        return slice(round(start_s * self.motion.fps), round(end_s * self.motion.fps) + 1)

    def gestures(self):
        """(word, start_s, end_s, positions [N, J, 3] during the word) of every gesture word."""
        for start, end, word in self.words:
            if word in synthetic.GESTURES:
                yield word, start, end, self.positions[self.frames(start, end)]

    def rest_frames(self) -> np.ndarray:
        """Indices of frames in pauses between sentences (no word spoken, no gesture)."""
        silent = np.ones(self.motion.num_frames, dtype=bool)
        for sentence in self.sentences:
            silent[self.frames(sentence[0][0], sentence[-1][1])] = False
        return np.nonzero(silent)[0]


def split_sentences(words):
    """Words grouped at silences >= MIN_PAUSE_S, as the preparation does."""
    sentences = []
    for word in words:
        if sentences and word[0] - sentences[-1][-1][1] < MIN_PAUSE_S:
            sentences[-1].append(word)
        else:
            sentences.append([word])
    return sentences


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "raw"
    summary = synthetic.write_demo_dataset(root, **OPTIONS)
    return summary, [Recording(root / name) for name in summary.files if name.endswith(".bvh")]


def small(root: Path, **changes) -> synthetic.DemoSummary:
    options = dict(num_speakers=1, recordings_per_speaker=1, sentences_per_recording=2, seed=0) | changes
    return synthetic.write_demo_dataset(root, **options)


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: relative path -> (content, mtime_ns)."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------- format and layout
def test_layout_follows_beat_naming_with_a_manifest(dataset):
    summary, recordings = dataset
    assert summary.created
    assert summary.files == tuple(sorted(summary.files))
    assert [r.path.relative_to(summary.root).as_posix() for r in recordings] == [
        "1/1_ada_0_1_1.bvh",
        "2/2_ben_0_1_1.bvh",
        "3/3_cleo_0_1_1.bvh",
    ]
    for recording in recordings:
        assert recording.path.with_suffix(".TextGrid").is_file()
    manifest = json.loads((summary.root / synthetic.MANIFEST_NAME).read_text())
    assert manifest["options"]["seed"] == OPTIONS["seed"]
    assert sorted(manifest["files"]) == list(summary.files)


def test_files_parse_with_the_beat_skeleton_at_120_fps(dataset):
    summary, recordings = dataset
    for recording in recordings:
        motion = recording.motion
        assert motion.skeleton == SKELETON  # names, parents, offsets and end sites
        assert motion.fps == 120
        assert set(motion.euler_orders) == {"ZXY"}
        assert motion.channels[0][:3] == ("Xposition", "Yposition", "Zposition")
    assert summary.num_frames == sum(r.motion.num_frames for r in recordings)


def test_words_lie_within_the_recording_and_the_textgrid_covers_it(dataset):
    _, recordings = dataset
    for recording in recordings:
        grid = load_textgrid(recording.path.with_suffix(".TextGrid"))
        assert grid.xmin == 0 and grid.xmax == pytest.approx(recording.motion.duration, abs=1e-9)
        starts = np.array([w[0] for w in recording.words])
        ends = np.array([w[1] for w in recording.words])
        assert starts[0] > 0 and ends[-1] < recording.motion.duration
        assert np.all(starts < ends) and np.all(ends[:-1] <= starts[1:])


def test_each_sentence_holds_one_gesture_word_between_long_pauses(dataset):
    summary, recordings = dataset
    fillers = set(synthetic.WORDS_BEFORE) | set(synthetic.WORDS_AFTER)
    for recording in recordings:
        assert len(recording.sentences) == OPTIONS["sentences_per_recording"]
        for sentence in recording.sentences:
            texts = [w for _, _, w in sentence]
            assert sum(w in synthetic.GESTURES for w in texts) == 1
            assert set(texts) - set(synthetic.GESTURES) <= fillers
            assert 1.0 <= sentence[-1][1] - sentence[0][0] <= synthetic.MAX_SENTENCE_S + 1e-9
            gaps = [b[0] - a[1] for a, b in zip(sentence, sentence[1:], strict=False)]
            assert all(gap < MIN_PAUSE_S for gap in gaps)
        pauses = [
            b[0][0] - a[-1][1] for a, b in zip(recording.sentences, recording.sentences[1:], strict=False)
        ]
        assert min(pauses) >= synthetic.PAUSE_S[0] - 1e-9 > MIN_PAUSE_S
        # One round of all gestures per recording: each word once.
        assert sorted(w for w, *_ in recording.gestures()) == sorted(synthetic.GESTURES)
    assert summary.gesture_counts == {word: OPTIONS["num_speakers"] for word in synthetic.GESTURES}


# -------------------------------------------------------------------------- gestures are what they say
def relative(positions: np.ndarray, joint: str, to: str = "Hips") -> np.ndarray:
    """[N, 3] position of `joint` minus that of `to`."""
    return positions[:, J[joint]] - positions[:, J[to]]


def check_gesture(word: str, p: np.ndarray) -> None:
    """Assert that positions p [N, J, 3] (cm, Y up, facing +Z, right on -X) show gesture `word`."""
    head_top = p[:, J["HeadEnd_Nub"], 1]
    right, left = p[:, J["RightHand"]], p[:, J["LeftHand"]]
    shoulders = p[:, J["RightArm"], 1]
    chest = p[:, J["Spine3"]]
    if word == "wave":
        assert np.max(right[:, 1] - head_top) > 5  # the right hand above the head
        assert np.all(left[:, 1] < shoulders - 30)  # the left arm stays down
        side_to_side = np.diff(np.sign(np.diff(right[:, 0])))
        assert np.count_nonzero(side_to_side) >= 4  # it waves: the hand turns back and forth
    elif word == "point":
        reach = relative(p, "RightHand", "Spine3")[:, 2]
        assert reach.max() > 45  # far forward of the chest
        top = np.argmax(reach)
        assert abs(right[top, 1] - shoulders[top]) < 15  # at shoulder height
        assert np.all(left[:, 1] < shoulders - 30)
    elif word == "nod":
        head = relative(p, "HeadEnd_Nub", "Spine3")
        assert np.ptp(head[:, 2]) > 5 and np.ptp(head[:, 1]) > 1  # the head tips forward and back
        for hand in ("RightHand", "LeftHand"):
            assert np.ptp(relative(p, hand), axis=0).max() < 5  # the arms stay still
    elif word == "clap":
        gap = np.linalg.norm(right - left, axis=1)
        assert gap.min() < 12  # the hands meet
        meet = np.argmin(gap)
        assert (right[meet, 2] + left[meet, 2]) / 2 - chest[meet, 2] > 20  # in front of the body
        assert abs((right[meet, 0] + left[meet, 0]) / 2 - chest[meet, 0]) < 5  # at the middle
        closed = gap < 15
        assert np.count_nonzero(np.diff(closed.astype(int)) == 1) == 3  # three times
    elif word == "shrug":
        for side, hand, sign in (("RightArm", right, -1), ("LeftArm", left, 1)):
            lift = relative(p, side, "Spine3")[:, 1]
            assert lift.max() - lift[0] > 3  # the shoulders go up
            outward = sign * (hand[:, 0] - chest[:, 0])
            assert outward.max() - outward[0] > 12  # the forearms open out
    elif word == "stretch":
        assert np.max(right[:, 1] - head_top) > 15 and np.max(left[:, 1] - head_top) > 15
    elif word == "bow":
        head = relative(p, "HeadEnd_Nub")
        assert head[:, 2].max() - head[0, 2] > 20 and head[0, 1] - head[:, 1].min() > 8
    else:
        raise AssertionError(f"no check written for gesture {word!r}")


def test_every_gesture_has_a_check():
    assert len(synthetic.GESTURES) >= 5
    assert {"wave", "point", "nod", "clap"} <= set(synthetic.GESTURES)
    for gesture in synthetic.GESTURES.values():
        assert gesture.word.isalpha() and gesture.word.islower()


def test_gestures_are_what_their_words_say(dataset):
    _, recordings = dataset
    for recording in recordings:
        for word, _, _, positions in recording.gestures():
            check_gesture(word, positions)


def test_word_interval_contains_the_peak_of_its_gesture(dataset):
    _, recordings = dataset
    for recording in recordings:
        body = recording.positions - recording.positions[:, :1]  # root-relative
        rest = body[recording.rest_frames()].mean(axis=0)
        departure = np.linalg.norm(body - rest, axis=-1).max(axis=-1)  # [T], cm
        for n, sentence in enumerate(recording.sentences):
            # From the middle of the pause before to the middle of the pause after.
            before = (sentence[0][0] + recording.sentences[n - 1][-1][1]) / 2 if n else 0.0
            after = (
                (sentence[-1][1] + recording.sentences[n + 1][0][0]) / 2
                if n + 1 < len(recording.sentences)
                else recording.motion.duration
            )
            window = recording.frames(before, after)
            peak = (window.start + np.argmax(departure[window])) / recording.motion.fps
            ((start, end),) = [(s, e) for s, e, w in sentence if w in synthetic.GESTURES]
            assert start <= peak <= end
            assert departure[window].max() > 2 * np.percentile(departure[recording.rest_frames()], 95)


def test_rest_has_the_arms_down_and_moves_a_little(dataset):
    _, recordings = dataset
    for recording in recordings:
        p = recording.positions[recording.rest_frames()]
        for hand, shoulder in (("RightHand", "RightArm"), ("LeftHand", "LeftArm")):
            assert np.all(p[:, J[hand], 1] < p[:, J[shoulder], 1] - 40)
            assert np.all(np.abs(p[:, J[hand], 0] - p[:, J[shoulder], 0]) < 20)  # beside the body
        idle = np.ptp(p - p[:, :1], axis=0).max(axis=-1)  # per joint, cm
        assert 0.5 < idle.max() < 10  # breathing and sway, not a statue, not a gesture
        assert 0.3 < np.ptp(p[:, 0, 0]) < 5  # the root sways
        feet = p[:, [J["RightFoot"], J["LeftFoot"]]]
        assert np.all(np.abs(feet[..., 1] - 6) < 3)  # standing on the floor


def sentence_features(positions: np.ndarray) -> np.ndarray:
    """Mean root-relative pose over a gesture word [J * 3]."""
    return (positions - positions[:, :1]).mean(axis=0).ravel()


def test_nearest_class_mean_separates_the_gestures_across_speakers(dataset):
    _, recordings = dataset
    for held_out in range(len(recordings)):
        means = {}
        for word in synthetic.GESTURES:
            means[word] = np.mean(
                [
                    sentence_features(p)
                    for n, recording in enumerate(recordings)
                    if n != held_out
                    for w, _, _, p in recording.gestures()
                    if w == word
                ],
                axis=0,
            )
        words = list(means)
        centres = np.stack([means[w] for w in words])
        for word, _, _, positions in recordings[held_out].gestures():
            distances = np.linalg.norm(centres - sentence_features(positions), axis=1)
            assert words[int(np.argmin(distances))] == word
            others = np.delete(distances, words.index(word))
            assert distances[words.index(word)] < 0.75 * others.min()  # by a clear margin


def numpy_positions(euler: np.ndarray) -> np.ndarray:
    """Global positions [N, J, 3] of the BEAT skeleton from Euler angles [N, 75, 3] (ZXY), hips at rest."""
    local = np.broadcast_to(np.eye(3), (len(euler), SKELETON.num_joints, 3, 3)).copy()
    local[:, SKELETON.rotation_joints] = euler_to_matrix_np(euler, "ZXY")
    rotations = np.empty_like(local)
    positions = np.empty((len(euler), SKELETON.num_joints, 3))
    for joint, parent in enumerate(SKELETON.parents):  # parents come first
        if parent < 0:
            rotations[:, joint] = local[:, joint]
            positions[:, joint] = [0.0, synthetic.ROOT_HEIGHT_CM, 0.0]
        else:
            rotations[:, joint] = rotations[:, parent] @ local[:, joint]
            positions[:, joint] = positions[:, parent] + rotations[:, parent] @ SKELETON.offsets[joint]
    return positions


@pytest.mark.parametrize(
    "amplitude", [synthetic.AMPLITUDE_RANGE[0] * 0.95, synthetic.AMPLITUDE_RANGE[1] * 1.05]
)
@pytest.mark.parametrize("word", list(synthetic.GESTURES))
def test_gestures_keep_their_meaning_at_extreme_amplitudes(word, amplitude):
    u = np.linspace(0.0, 1.0, 241)
    slots = {SKELETON.names[j]: slot for slot, j in enumerate(SKELETON.rotation_joints)}
    euler = np.zeros((u.size, len(slots), 3))
    for joint, angles in synthetic.REST_POSE.items():
        euler[:, slots[joint]] = angles
    offsets = synthetic.GESTURES[word].pose(u, amplitude)
    for joint, delta in offsets.items():
        euler[:, slots[joint]] += delta
    check_gesture(word, numpy_positions(euler))
    # Smooth: starts and ends at rest, at (near) zero speed: the first and last steps are tiny.
    for delta in offsets.values():
        np.testing.assert_allclose(delta[[0, -1]], 0.0, atol=1e-9)
        steps = np.abs(np.diff(delta, axis=0))
        assert steps[[0, -1]].max() < 0.05 * steps.max()


# --------------------------------------------------------------------------------------- safe to re-run
def test_output_is_determined_by_the_seed(tmp_path):
    first, again, other = small(tmp_path / "a"), small(tmp_path / "b"), small(tmp_path / "c", seed=1)
    assert first.files == again.files == other.files
    a, b, c = tree(first.root), tree(again.root), tree(other.root)
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
    bvh = next(name for name in a if name.endswith(".bvh"))
    assert a[bvh][0] != c[bvh][0]


def test_second_call_with_the_same_options_is_a_no_op(tmp_path):
    first = small(tmp_path / "raw")
    before = tree(first.root)
    second = small(tmp_path / "raw")
    assert not second.created
    assert dataclasses_without_created(second) == dataclasses_without_created(first)
    assert tree(first.root) == before  # same bytes, untouched (same modification times)


def dataclasses_without_created(summary: synthetic.DemoSummary) -> dict:
    return {k: v for k, v in vars(summary).items() if k != "created"}


def test_an_empty_existing_folder_is_filled_not_replaced(tmp_path):
    (tmp_path / "raw").mkdir()
    inode = (tmp_path / "raw").stat().st_ino  # someone's working directory must stay valid
    assert small(tmp_path / "raw").created
    assert (tmp_path / "raw").stat().st_ino == inode
    assert (tmp_path / "raw" / synthetic.MANIFEST_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_a_folder_with_foreign_files_is_refused_and_left_alone(tmp_path):
    root = tmp_path / "mine"
    (root / "1").mkdir(parents=True)
    (root / "1" / "1_wayne_0_1_1.bvh").write_text("a user's file")
    before = tree(root)
    with pytest.raises(FileExistsError, match=r"mine is not empty and holds no readable synthetic\.json"):
        small(root)
    assert tree(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind


def test_other_options_or_edited_output_are_refused(tmp_path):
    root = small(tmp_path / "raw").root
    before = tree(root)
    with pytest.raises(FileExistsError, match=r"other options .*'seed': \(0, 5\)"):
        small(root, seed=5)
    assert tree(root) == before
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"extra files \['notes.txt'\]"):
        small(root)
    (root / "notes.txt").unlink()
    edited = next(root.rglob("*.TextGrid"))
    edited.write_text(edited.read_text() + "\n")
    with pytest.raises(FileExistsError, match="modified"):
        small(root)
    assert edited.read_text().endswith("\n\n")  # still the edited file


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    (tmp_path / "raw").write_text("not a folder")
    with pytest.raises(FileExistsError, match="not a folder"):
        small(tmp_path / "raw")


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_speakers=0), "num_speakers must be an integer >= 1, got 0"),
        (dict(sentences_per_recording=2.0), "sentences_per_recording must be an integer >= 1, got 2.0"),
        (dict(fps=10), "fps must be an integer >= 20"),
        (dict(seed=-1), "seed must be a non-negative integer"),
    ],
)
def test_bad_options_are_rejected(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        small(tmp_path / "raw", **changes)
    assert not (tmp_path / "raw").exists()


def test_command_line_writes_what_the_function_would(tmp_path):
    arguments = ["--speakers", "2", "--recordings", "1", "--sentences", "3", "--seed", "4"]
    command = [sys.executable, "-m", "motion_ddpm_jax.data.synthetic", str(tmp_path / "raw"), *arguments]
    environment = os.environ | {"JAX_PLATFORMS": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    assert result.stdout.startswith(f"wrote {tmp_path / 'raw'}: 2 recordings, 6 sentences")
    again = synthetic.write_demo_dataset(
        tmp_path / "raw", num_speakers=2, recordings_per_speaker=1, sentences_per_recording=3, seed=4
    )
    assert not again.created and len(again.files) == 4


def test_main_reports_an_unchanged_folder_and_a_refusal(tmp_path, capsys):
    arguments = [str(tmp_path / "raw"), "--speakers", "1", "--recordings", "1", "--sentences", "2"]
    assert synthetic.main(arguments).created
    assert not synthetic.main(arguments).created
    assert "found (unchanged)" in capsys.readouterr().out.splitlines()[-1]
    with pytest.raises(SystemExit) as exit_info:
        synthetic.main([*arguments, "--seed", "9"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("python -m motion_ddpm_jax.data.synthetic: error: ") and "other options" in error


# ------------------------------------------------------------------------- a full disk, Ctrl-C, a kill
def test_a_full_disk_leaves_no_staging_folder_and_names_the_output(tmp_path, monkeypatch):
    from test_files import ENOSPC_TEXT, full_disk

    full_disk(monkeypatch, tmp_path, room=20_000)
    with pytest.raises(OSError) as caught:
        small(tmp_path / "raw")
    assert list(tmp_path.iterdir()) == []
    assert caught.value.errno == errno.ENOSPC and str(caught.value).endswith(ENOSPC_TEXT)
    assert f"writing {tmp_path / 'raw'}" in str(caught.value) and ".tmp-" not in str(caught.value)
    assert caught.value.strerror.startswith(f"writing {tmp_path / 'raw'}")  # what beat.py words in
    monkeypatch.undo()
    assert small(tmp_path / "raw").created


def test_the_staging_folder_a_killed_process_left_is_removed_by_the_next_write(tmp_path):
    from test_files import assert_only_the_dead_ones_removed, leftover_names, make_leftovers

    names = leftover_names("raw", "tmp")
    make_leftovers(tmp_path, names, as_folders=True)
    assert small(tmp_path / "raw").created
    assert_only_the_dead_ones_removed(tmp_path, names)
