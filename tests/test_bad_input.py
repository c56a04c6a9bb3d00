"""Bad input gives one clear `UserError` naming the file (and line or field) and what was expected.

One test per kind of bad input to the readers (BVH, TextGrid), the dataset layouts (prepared and
HumanML3D), the prepared cache and raw BEAT preparation; never a traceback from inside numpy or jax.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from motion_ddpm_jax.data import beat, motion_text
from motion_ddpm_jax.data.bvh import BvhError, load_bvh
from motion_ddpm_jax.data.motion_text import DatasetError, Split
from motion_ddpm_jax.data.textgrid import TextGridError, format_textgrid, load_textgrid, load_words
from motion_ddpm_jax.errors import UserError


def test_reader_errors_are_user_errors_and_value_errors():
    for error in (BvhError, TextGridError, DatasetError):
        assert issubclass(error, UserError) and issubclass(error, ValueError)
    assert issubclass(beat.MissingInputError, UserError) and issubclass(
        beat.MissingInputError, FileNotFoundError
    )
    assert issubclass(beat.OccupiedFolderError, UserError) and issubclass(
        beat.OccupiedFolderError, FileExistsError
    )


# ------------------------------------------------------------------------------------------------- BVH
HIERARCHY = """\
HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {
      OFFSET 0 5 0
    }
  }
}
MOTION
"""
FRAMES = np.round(np.random.default_rng(0).uniform(-90, 90, (6, 9)), 3)


def bvh_text(values=FRAMES, frames: int | None = None, frame_time: str = "0.0166667") -> str:
    count = len(values) if frames is None else frames
    rows = "".join(" ".join(f"{v:.3f}" for v in row) + "\n" for row in values)
    return HIERARCHY + f"Frames: {count}\nFrame Time: {frame_time}\n" + rows


BVH = bvh_text()
LINES = BVH.splitlines(keepends=True)
FRAMES_LINE = LINES.index(f"Frames: {len(FRAMES)}\n") + 1  # 1-based
FIRST_FRAME_LINE = FRAMES_LINE + 2


def with_line(number: int, text: str) -> str:
    """BVH with its 1-based line `number` replaced by `text`."""
    lines = list(LINES)
    lines[number - 1] = text + "\n"
    return "".join(lines)


def bvh_error(tmp_path, content: str | bytes, line: int, pattern: str) -> BvhError:
    """Load `content` as a .bvh file and check the error names the file, the line and `pattern`."""
    path = tmp_path / "take.bvh"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(BvhError) as info:
        load_bvh(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert re.search(pattern, message), message
    return info.value


def test_bvh_truncated_inside_the_hierarchy(tmp_path):
    text = "".join(LINES[:8])  # ends after Spine's OFFSET
    bvh_error(
        tmp_path,
        text,
        8,
        r"unexpected end of file; expected 'JOINT <name>', 'End Site' or '}' closing 'Spine'",
    )


def test_bvh_truncated_frames(tmp_path):
    text = "".join(LINES[:-2])
    bvh_error(tmp_path, text, len(LINES) - 2, r"file truncated: 'Frames: 6' declared but only 4 frame lines")


@pytest.mark.parametrize("end", ["", "\n", "\n\n"])
def test_bvh_truncated_right_after_the_header(tmp_path, end):
    # Found by fuzzing: with no frame line at all, the error named the line after the last one.
    text = "".join(LINES[:FRAMES_LINE]) + "Frame Time: 0.0166667" + end
    last = FRAMES_LINE + 1 + max(end.count("\n") - 1, 0)
    bvh_error(tmp_path, text, last, r"file truncated: 'Frames: 6' declared but only 0 frame lines found")


def test_bvh_truncated_inside_the_last_frame_line(tmp_path):
    text = BVH[: BVH.rindex(" ")]
    bvh_error(tmp_path, text, len(LINES), r"frame 6 has 8 values, expected 9 .*\(the file looks truncated\)")


def test_bvh_channel_count_larger_than_the_channels_listed(tmp_path):
    number = LINES.index("    CHANNELS 3 Zrotation Xrotation Yrotation\n") + 1
    text = with_line(number, "    CHANNELS 4 Zrotation Xrotation Yrotation")
    bvh_error(tmp_path, text, number + 1, r"unknown channel 'End' of 'Spine'.*\(CHANNELS says 4\)")


def test_bvh_channel_count_smaller_than_the_channels_listed(tmp_path):
    number = LINES.index("    CHANNELS 3 Zrotation Xrotation Yrotation\n") + 1
    text = with_line(number, "    CHANNELS 2 Zrotation Xrotation Yrotation")
    bvh_error(tmp_path, text, number, r"'Spine': rotation channels 'ZX' are not a rotation order")


def test_bvh_frame_line_with_the_wrong_number_of_values(tmp_path):
    text = with_line(FIRST_FRAME_LINE + 1, LINES[FIRST_FRAME_LINE].rstrip("\n") + " 1.0")
    bvh_error(tmp_path, text, FIRST_FRAME_LINE + 1, r"frame 2 has 10 values, expected 9 \(one per channel\)")


def test_bvh_value_that_is_not_a_number(tmp_path):
    values = LINES[FIRST_FRAME_LINE + 1].split()
    values[4] = "12,5"
    text = with_line(FIRST_FRAME_LINE + 2, " ".join(values))
    bvh_error(tmp_path, text, FIRST_FRAME_LINE + 2, r"frame 3, value 5: expected a finite \(float32\) number")


@pytest.mark.parametrize("token", ["nan", "NaN", "inf", "-Infinity", "1e39"])
def test_bvh_non_finite_value(tmp_path, token):
    values = LINES[FIRST_FRAME_LINE - 1].split()
    values[0] = token
    text = with_line(FIRST_FRAME_LINE, " ".join(values))
    bvh_error(tmp_path, text, FIRST_FRAME_LINE, rf"frame 1, value 1: expected a finite .* found '{token}'")


def test_bvh_zero_frames_with_frame_lines_after_it(tmp_path):
    text = bvh_text(frames=0)
    lines = len(text.split("Frame Time:")[1].strip().splitlines()) - 1  # after the Frame Time line's own
    bvh_error(
        tmp_path,
        text,
        FIRST_FRAME_LINE,
        rf"is frame line 1, past the 0 that 'Frames: 0' declares \({lines} frame lines in all\); if they are "
        "all frames, set the Frames line to their count",
    )


def test_bvh_missing_motion_section(tmp_path):
    text = BVH.replace("MOTION\n", "")
    bvh_error(
        tmp_path, text, FRAMES_LINE - 1, r"expected 'MOTION' after the hierarchy's last '}', found 'Frames:'"
    )


def test_bvh_file_that_ends_after_the_hierarchy(tmp_path):
    text = HIERARCHY
    bvh_error(tmp_path, text, FRAMES_LINE - 1, r"unexpected end of file; expected 'Frames: <count>'")


@pytest.mark.parametrize("frame_time", ["0", "-0.01", "fast", "nan", "inf", "1e-320"])
def test_bvh_bad_frame_time(tmp_path, frame_time):
    # 1e-320 is a crash found by fuzzing: a subnormal time gave an infinite rate, and `fps` overflowed.
    text = bvh_text(frame_time=frame_time)
    bvh_error(tmp_path, text, FRAMES_LINE + 1, r"expected 'Frame Time: <seconds>' with a positive time")


def test_bvh_missing_frame_time_line(tmp_path):
    text = BVH.replace("Frame Time: 0.0166667\n", "")
    bvh_error(tmp_path, text, FRAMES_LINE + 1, r"expected 'Frame Time: <seconds>' with a positive time")


def test_bvh_in_utf16_or_binary_is_refused_at_its_first_nul_byte(tmp_path):
    bvh_error(tmp_path, BVH.encode("utf-16"), 1, r"a NUL byte at byte 3: this is not BVH text \(UTF-16")
    broken = BVH.encode().replace(b"Spine\n", b"Spine\n\0\0\0\n", 1)
    bvh_error(tmp_path, broken, LINES.index("  JOINT Spine\n") + 2, r"a NUL byte at byte \d+")


def test_bvh_bytes_that_are_not_utf8_are_read_as_latin1_not_a_decode_error(tmp_path):
    raw = with_line(FIRST_FRAME_LINE, LINES[FIRST_FRAME_LINE - 1].rstrip() + " \xb5").encode("latin-1")
    bvh_error(tmp_path, raw, FIRST_FRAME_LINE, r"frame 1 has 10 values, expected 9")


# --------------------------------------------------------------------------------------------- TextGrid
WORDS = [(0.5, 1.0, "so"), (1.0, 1.6, "we"), (2.0, 2.5, "went")]
TEXTGRID = format_textgrid(WORDS, 0.0, 3.0)
TG_LINES = TEXTGRID.splitlines(keepends=True)


def tg_line(needle: str, occurrence: int = 1) -> int:
    hits = [n for n, line in enumerate(TG_LINES, 1) if needle in line]
    return hits[occurrence - 1]


def textgrid_error(tmp_path, content: str | bytes, line: int, pattern: str) -> TextGridError:
    path = tmp_path / "take.TextGrid"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(TextGridError) as info:
        load_textgrid(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert re.search(pattern, message), message
    return info.value


def test_textgrid_truncated(tmp_path):
    text = "".join(TG_LINES[: tg_line("intervals [3]:")])
    textgrid_error(
        tmp_path,
        text,
        tg_line("intervals [3]:"),
        r"unexpected end of file; expected xmin of interval 3 of tier 1 \('words'\) "
        r"\(the file looks truncated\)",
    )


def test_textgrid_bad_number(tmp_path):
    line = tg_line("xmax = 1", 1)
    text = TEXTGRID.replace(TG_LINES[line - 1], TG_LINES[line - 1].replace("xmax = 1", "xmax = 1.0.0"))
    textgrid_error(tmp_path, text, line, r"expected a number \(xmax of interval 2 of tier 1 \('words'\)\)")


def test_textgrid_intervals_out_of_order(tmp_path):
    # Interval 3 ('we', 1-1.6 s) moved to 0.1-0.4 s, before interval 2 ('so', 0.5-1 s).
    text = TEXTGRID.replace("xmin = 1\n            xmax = 1.6", "xmin = 0.1\n            xmax = 0.4", 1)
    line = tg_line("xmin = 1")
    textgrid_error(
        tmp_path,
        text,
        line,
        r"tier 1 \('words'\): interval 3 starts at 0.1 s, before interval 2 ends \(1.0 s\); expected "
        r"intervals in time order, not overlapping",
    )


def test_textgrid_overlapping_intervals(tmp_path):
    text = TEXTGRID.replace("xmin = 2\n            xmax = 2.5", "xmin = 1.5\n            xmax = 2.5", 1)
    textgrid_error(
        tmp_path, text, tg_line("xmin = 2"), r"interval 5 starts at 1.5 s, before interval 4 ends \(2.0 s\)"
    )


def test_textgrid_interval_ending_before_it_starts(tmp_path):
    text = TEXTGRID.replace("xmin = 2\n            xmax = 2.5", "xmin = 2\n            xmax = 1.9", 1)
    textgrid_error(tmp_path, text, tg_line("xmax = 2.5"), r"interval 5: end 1.9 s is before its start 2.0 s")


def test_textgrid_in_broken_utf16_is_a_textgrid_error_not_a_decode_error(tmp_path):
    raw = TEXTGRID.encode("utf-16")[:-1]  # odd length: the last code unit is cut in half
    textgrid_error(tmp_path, raw, 0, r"not valid UTF-16/UTF-8 text")


def test_textgrid_without_the_requested_tier(tmp_path):
    path = tmp_path / "take.TextGrid"
    path.write_text(TEXTGRID)
    with pytest.raises(TextGridError, match=rf"^{re.escape(str(path))}:0: .*no tier named 'phones'"):
        load_words(path, tier="phones")


# ---------------------------------------------------------------------------------- dataset layouts
FEATURES = 6


@pytest.fixture
def prepared(tmp_path):
    """A prepared dataset: train a/b/c, val v, test t, 6 features."""
    rng = np.random.default_rng(1)

    def split(name, ids):
        motions = tuple(rng.normal(size=(12, FEATURES)).astype(np.float32) for _ in ids)
        return Split(name, tuple(ids), motions, tuple((f"caption {i}",) for i in ids))

    splits = {"train": split("train", "abc"), "val": split("val", "v"), "test": split("test", "t")}
    root = tmp_path / "prepared"
    motion_text.write_dataset(root, splits, {"representation": "positions", "fps": 30.0})
    return root


@pytest.fixture
def humanml3d(tmp_path):
    """A HumanML3D-layout folder: clips 000001 and 000002 with 50 frames of 6 features each."""
    root = tmp_path / "humanml3d"
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    rng = np.random.default_rng(2)
    for clip in ("000001", "000002"):
        np.save(root / "new_joint_vecs" / f"{clip}.npy", rng.normal(size=(50, FEATURES)).astype(np.float32))
        (root / "texts" / f"{clip}.txt").write_text(f"clip {clip}#clip/NOUN#0.0#0.0\n")
    (root / "train.txt").write_text("000001\n000002\n")
    np.save(root / "Mean.npy", np.zeros(FEATURES, np.float32))
    np.save(root / "Std.npy", np.ones(FEATURES, np.float32))
    return root


def motion_path(root, layout: str):
    folder = "motions" if layout == "prepared" else "new_joint_vecs"
    return root / folder / ("b.npy" if layout == "prepared" else "000002.npy")


@pytest.fixture(params=["prepared", "humanml3d"])
def layout(request, prepared, humanml3d):
    """(root, the path of one training clip's motion) for each layout."""
    root = prepared if request.param == "prepared" else humanml3d
    return root, motion_path(root, request.param)


def split_error(root, pattern: str, split: str = "train") -> DatasetError:
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(root).split(split)
    assert re.search(pattern, str(info.value)), str(info.value)
    return info.value


def test_motion_file_that_is_not_npy(layout):
    root, path = layout
    path.write_bytes(b"frame 1: 0.1 0.2 0.3\n")
    split_error(
        root, rf"^{re.escape(str(path))}: not a readable \.npy array \(it lacks the \.npy signature\)"
    )


def test_motion_file_truncated(layout):
    root, path = layout
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    split_error(
        root,
        rf"^{re.escape(str(path))}: not a readable \.npy array \(its header says shape \(\d+, 6\) of "
        r"float32, \d+ bytes of data, but the file holds \d+: it looks truncated\)",
    )


def npy_bytes(header: str, data: bytes) -> bytes:
    """A version 1.0 .npy file with this header text (padded as numpy pads it) and data."""
    text = header.encode("latin-1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def test_motion_file_with_a_garbled_header(layout):
    # Crashes found by fuzzing .npy bytes: numpy's header parser raised tokenize.TokenError (not a
    # ValueError), and a garbled shape made np.load try to allocate terabytes (MemoryError).
    root, path = layout
    data = np.zeros((12, FEATURES), np.float32).tobytes()
    path.write_bytes(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': ((12, 6), }", data))
    split_error(root, rf"^{re.escape(str(path))}: not a readable \.npy array \(damaged header: ")
    path.write_bytes(
        npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 6), }", data)
    )
    split_error(
        root,
        rf"^{re.escape(str(path))}: not a readable \.npy array \(its header says shape "
        r"\(999999999999, 6\) of float32, 23999999999976 bytes of data, but the file holds 288: it looks "
        r"truncated\)",
    )


@pytest.mark.parametrize("shape", [(12,), (12, 5), (12, 6, 1)])
def test_motion_with_the_wrong_shape(layout, shape):
    root, path = layout
    np.save(path, np.zeros(shape, np.float32))
    split_error(
        root, rf"^{re.escape(str(path))}: motion has shape {re.escape(str(shape))}; expected \[frames, 6\]"
    )


@pytest.mark.parametrize("dtype", ["int32", "complex64", "bool", "<U3"])
def test_motion_with_a_dtype_that_is_not_floating_point(layout, dtype):
    root, path = layout
    np.save(path, np.zeros((12, FEATURES), dtype))
    split_error(root, rf"^{re.escape(str(path))}: motion has dtype {dtype}; expected floating-point values")


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_motion_with_non_finite_values_names_the_frame_and_feature(layout, bad):
    root, path = layout
    motion = np.zeros((12, FEATURES), np.float64)
    motion[7, 4] = bad
    motion[9, 1] = bad
    np.save(path, motion)
    if root.name == "humanml3d":  # left out, with where its first bad value lies
        split = motion_text.open_dataset(root).split("train")
        assert split.ids == ("000001",) and dict(split.dropped) == {"non_finite": ("000002",)}
        assert split.drop_notes == {"000002": f"{motion[7, 4]} at frame 7, feature 4, 1 more"}
        return
    split_error(
        root,
        rf"^{re.escape(str(path))}: motion has 2 non-finite values \(NaN, inf or beyond float32\), the first "
        r"at frame 7, feature 4.*; to leave this clip out, remove its id from the split file that lists it$",
    )


def test_motion_saved_as_an_object_array_is_never_unpickled(layout):
    root, path = layout
    np.save(path, np.array([np.zeros((12, FEATURES))] * 2, dtype=object), allow_pickle=True)
    split_error(root, rf"^{re.escape(str(path))}: holds an array of Python objects .*allow_pickle=False")


def test_motion_saved_as_a_pickle_is_never_unpickled(layout):
    root, path = layout
    path.write_bytes(pickle.dumps(np.zeros((12, FEATURES))))
    split_error(root, rf"^{re.escape(str(path))}: not a readable \.npy array \(it looks like a Python pickle")


def test_motion_saved_as_an_npz_archive(layout):
    root, path = layout
    with open(path, "wb") as handle:
        np.savez(handle, motion=np.zeros((12, FEATURES), np.float32))
    split_error(root, rf"^{re.escape(str(path))}: an \.npz archive, not a \.npy array")


def test_caption_file_missing_names_the_clip_and_the_expected_path(prepared, humanml3d):
    (prepared / "texts" / "b.txt").unlink()
    split_error(
        prepared, rf"^{re.escape(str(prepared / 'texts' / 'b.txt'))}: caption file missing for clip 'b'"
    )
    (humanml3d / "texts" / "000002.txt").unlink()
    path = humanml3d / "texts" / "000002.txt"
    split_error(humanml3d, rf"^{re.escape(str(path))}: caption file missing for clip '000002'")


def test_caption_file_that_is_not_utf8(prepared):
    path = prepared / "texts" / "c.txt"
    path.write_bytes(b"caf\xe9 au lait\n")
    split_error(
        prepared,
        rf"^{re.escape(str(path))}: not UTF-8 text \(byte 3: .*\); expected the captions of clip 'c'",
    )


def test_humanml3d_caption_times_that_are_not_finite(humanml3d):
    path = humanml3d / "texts" / "000001.txt"
    path.write_text("whole#t#0.0#0.0\nwaves#t#1.0#inf\n")
    split_error(humanml3d, rf"^{re.escape(str(path))}:2: from/to must be finite, non-negative numbers")


def test_configured_feature_size_that_does_not_match_the_data(prepared, humanml3d):
    for root in (prepared, humanml3d):
        dataset = motion_text.open_dataset(root)
        dataset.check_feature_size(FEATURES)
        with pytest.raises(DatasetError) as info:
            dataset.check_feature_size(263)
        message = str(info.value)
        assert f"model.input_feats is 263 but the dataset at {root} has 6 features" in message
        assert "set --config.model.input_feats=6" in message


def test_empty_split_in_the_prepared_layout(prepared):
    (prepared / "val.txt").write_text("\n")
    split_error(
        prepared,
        rf"^{re.escape(str(prepared / 'val.txt'))}: the val split lists no clips; .*List the ids of its "
        r"clips in val\.txt.*--config\.eval\.split=train",
        "val",
    )


def test_empty_split_in_the_humanml3d_layout(humanml3d):
    path = humanml3d / "train.txt"
    path.write_text("000001\n000002\n000404\n")
    with pytest.raises(DatasetError) as info:
        motion_text.open_dataset(humanml3d, min_length=60).split("train")  # both clips have 50 frames
    message = str(info.value)
    assert message.startswith(f"{path}: the train split has no clips: of the 3 it lists, 1 have no motion")
    assert "at least 60 frames" in message and "data.min_motion_length" in message


# ---------------------------------------------------------------------------------- the prepared cache
@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"format": "motion-ddpm-jax/1", ', r"not valid JSON .*the prepared dataset looks damaged"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"not UTF-8 text \(byte 0: .*\); expected the dataset record"),
        ("[1, 2, 3]", r"expected a JSON object of dataset fields, found a list"),
        (
            '{"format": "motion-ddpm-jax/1", "representation": "positions", "fps": 30, "feature_size": "6"}',
            r"field 'feature_size' is '6'; expected a positive integer",
        ),
        (
            '{"format": "motion-ddpm-jax/1", "representation": "positions", "fps": -1, "feature_size": 6}',
            r"field 'fps' is -1; expected a positive number",
        ),
    ],
)
def test_corrupt_dataset_record(prepared, content, pattern):
    path = prepared / "dataset.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: {pattern}"):
        motion_text.open_dataset(prepared)


def test_corrupt_statistics(prepared):
    (prepared / "mean.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(prepared / 'mean.npy'))}: not a readable \.npy"
    ):
        motion_text.open_dataset(prepared)
    np.save(prepared / "mean.npy", np.zeros(FEATURES, np.float32))
    np.save(prepared / "std.npy", np.array([1, 1, 0, 1, 1, 1], np.float32))
    with pytest.raises(
        DatasetError, match=r"std\.npy: standard deviation 0\.0 at feature 2; expected positive"
    ):
        motion_text.open_dataset(prepared)
    np.save(prepared / "std.npy", np.ones(FEATURES + 1, np.float32))
    with pytest.raises(DatasetError, match=r"std\.npy: expected 6 values \(shape \[6\]\), got shape \(7,\)"):
        motion_text.open_dataset(prepared)


def test_corrupt_humanml3d_statistics(humanml3d):
    np.save(humanml3d / "Mean.npy", np.zeros((2, FEATURES), np.float32))
    path = humanml3d / "Mean.npy"
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(path))}: shape \(2, 6\); expected the feature means"
    ):
        motion_text.open_dataset(humanml3d)


def test_corrupt_skeleton(prepared):
    path = prepared / "skeleton.json"
    path.write_text('{"names": ["Hips"], "parents": ')
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(path))}: .*expected the skeleton written with"):
        motion_text.open_dataset(prepared)


# -------------------------------------------------------------------------------------- raw BEAT
def textgrid_for(seconds: float) -> str:
    return format_textgrid([(0.1, 0.9, "hello"), (1.0, seconds - 0.1, "there")], 0.0, seconds)


def write_recording(folder, name: str, bvh: str, seconds: float = 2.0):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.bvh").write_text(bvh)
    (folder / f"{name}.TextGrid").write_text(textgrid_for(seconds))
    return folder / f"{name}.bvh"


def long_bvh(seconds: float = 2.0, fps: int = 60, scale: float = 10.0) -> str:
    frames = int(seconds * fps)
    values = np.round(np.random.default_rng(3).uniform(-scale, scale, (frames, 9)), 3)
    return bvh_text(values, frame_time=f"{1 / fps:.7f}")


def test_prepare_a_recording_with_zero_frames(tmp_path):
    path = write_recording(tmp_path / "raw", "1_a_0_1_1", bvh_text(FRAMES[:0]))
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(path))}:0: 'Frames: 0': the recording has no motion"
    ):
        beat.prepare_beat(tmp_path / "raw", tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)
    assert not (tmp_path / "out").exists()


def test_prepare_a_recording_whose_positions_overflow_float32(tmp_path):
    bvh = long_bvh()
    lines = bvh.splitlines()
    start = lines.index("Frame Time: 0.0166667") + 1
    for n in range(start, len(lines)):  # the root jumps between -3e38 and 3e38: its velocity overflows
        values = lines[n].split()
        values[0] = "3e38" if n % 2 else "-3e38"
        lines[n] = " ".join(values)
    path = write_recording(tmp_path / "raw", "1_a_0_1_1", "\n".join(lines) + "\n")
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(path))}:0: its positions features are not finite"
    ):
        beat.prepare_beat(tmp_path / "raw", tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)


def test_prepare_at_a_rate_that_does_not_divide_the_recording_rate(tmp_path):
    write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    with pytest.raises(
        UserError, match=r"1_a_0_1_1\.bvh: cannot resample 60 fps to 25 fps.*\(data.fps is 25\)"
    ):
        beat.prepare_beat(
            tmp_path / "raw", tmp_path / "out", beat.PrepareOptions(fps=25.0), log=lambda *_: None
        )


def test_prepare_with_a_missing_transcript(tmp_path):
    path = write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    path.with_suffix(".TextGrid").unlink()
    with pytest.raises(beat.MissingInputError, match=r"1_a_0_1_1\.bvh: no transcript beside it"):
        beat.prepare_beat(tmp_path / "raw", tmp_path / "out", beat.PrepareOptions())


def test_prepare_recordings_with_different_skeletons(tmp_path):
    write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    other = write_recording(tmp_path / "raw", "2_b_0_1_1", long_bvh().replace("JOINT Spine", "JOINT Chest"))
    with pytest.raises(DatasetError, match=rf"{re.escape(str(other))}: its joint hierarchy differs"):
        beat.prepare_beat(tmp_path / "raw", tmp_path / "out", beat.PrepareOptions(), log=lambda *_: None)


def test_prepared_cache_with_a_damaged_record_is_left_alone(tmp_path):
    write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    out = tmp_path / "out"
    options = beat.PrepareOptions(val_fraction=0.0, test_fraction=0.0)
    beat.prepare_beat(tmp_path / "raw", out, options, log=lambda *_: None)
    (out / "dataset.json").write_text('{"format": "motion-ddpm-jax/1", "fingerprint": {')
    with pytest.raises(DatasetError) as info:
        beat.prepare_beat(tmp_path / "raw", out, options, log=lambda *_: None)
    message = str(info.value)
    assert message.startswith(f"{out / 'dataset.json'}: not valid JSON")
    assert f"{out} is a damaged prepared cache and is left as it is: delete it to prepare again" in message
    assert (out / "dataset.json").read_text().endswith('"fingerprint": {')


def test_prepared_cache_with_damaged_statistics_is_left_alone(tmp_path):
    write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    out = tmp_path / "out"
    options = beat.PrepareOptions(val_fraction=0.0, test_fraction=0.0)
    beat.prepare_beat(tmp_path / "raw", out, options, log=lambda *_: None)
    (out / "std.npy").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        beat.prepare_beat(tmp_path / "raw", out, options, log=lambda *_: None)
    message = str(info.value)
    assert message.startswith(f"{out / 'std.npy'}: not a readable .npy array (the file is empty)")
    assert f"{out} is a damaged prepared cache" in message


def test_prepared_cache_with_an_empty_val_split(tmp_path):
    write_recording(tmp_path / "raw", "1_a_0_1_1", long_bvh())
    out = tmp_path / "out"
    options = beat.PrepareOptions(val_fraction=0.0, test_fraction=0.0)
    dataset = beat.prepare_beat(tmp_path / "raw", out, options, log=lambda *_: None)
    assert dataset.split("train").captions == (("hello there",),)
    with pytest.raises(
        DatasetError, match=rf"^{re.escape(str(out / 'val.txt'))}: the val split lists no clips"
    ):
        dataset.split("val")


# ------------------------------------------------------------------------- launch.py: config and flags
def launch_config(tmp_path, *args: str):
    """`launch.py --mode config` (which writes nothing) as a user runs it, from the repository's root."""
    from tiny_run import run_launch

    return run_launch("--mode", "config", "--workdir", str(tmp_path / "run"), *args)


def one_clean_line(result, expected: str) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert expected in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]


@pytest.mark.parametrize(
    ("override", "meant"),
    [("optim.LR", "optim.lr"), ("lr", "optim.lr"), ("model.LATENT_DIM", "model.latent_dim")],
)
def test_an_override_of_no_field_names_it_and_the_field_meant(tmp_path, override, meant):
    """ml_collections suggests a name only where difflib finds one: `--config.optim.LR=1` had said
    `a --config override could not be applied: "LR"`, naming neither the section nor the field."""
    result = launch_config(tmp_path, "--config", "configs/demo.py", f"--config.{override}=1")
    one_clean_line(result, f"--config.{override} names no config field (did you mean --config.{meant}?)")


def test_a_batch_the_devices_do_not_divide_is_refused_before_the_data_and_by_mode_config(tmp_path):
    """train.batch_size=3 on 2 devices: training had refused it only after writing and preparing the data
    (minutes for a real dataset), and --mode config, run to check a config before a job, printed it as
    good."""
    from tiny_run import run_launch

    two = ["--config", "configs/demo.py", "--host_devices=2"]
    data = [f"--config.data.raw_root={tmp_path / 'raw'}", f"--config.data.root={tmp_path / 'data'}"]
    expected = "train.batch_size=3 must be divisible by the number of devices, 2"
    checked = launch_config(tmp_path, *two, "--config.train.batch_size=3")
    one_clean_line(checked, f"{expected} on this machine; set --config.train.batch_size to a multiple of it")
    assert launch_config(tmp_path, *two, "--config.train.batch_size=4").returncode == 0
    trained = run_launch(
        "--mode", "train", *two, f"--workdir={tmp_path / 'run'}", *data, "--config.train.batch_size=3"
    )
    one_clean_line(trained, f"{expected}; set --config.train.batch_size to a multiple of it")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data written, prepared, nor a workdir


CONFIG_HEAD = (
    "from motion_ddpm_jax.config import base_config\n\n\ndef get_config():\n    config = base_config()\n"
)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # a misspelt section: had been "a --config override could not be applied" with no override given
        (
            CONFIG_HEAD + "    config.modle.latent_dim = 256\n    return config\n",
            ", line 6: AttributeError: modle",
        ),
        (CONFIG_HEAD + "    config['nosuch'].x = 1\n    return config\n", ", line 6: KeyError"),
        # these were tracebacks
        (
            "import no_such_module_here\n" + CONFIG_HEAD + "    return config\n",
            ", line 1: ModuleNotFoundError",
        ),
        (CONFIG_HEAD + "    return confg\n", ", line 6: NameError: name 'confg' is not defined"),
        (CONFIG_HEAD + "    config.train.batch_size = 64\n", ": get_config() returned None"),  # no return
    ],
    ids=["attribute", "key", "import", "name", "no-return"],
)
def test_a_config_file_whose_code_fails_is_one_line_naming_the_file_and_line(tmp_path, body, expected):
    path = tmp_path / "mine.py"
    path.write_text(body)
    result = launch_config(tmp_path, "--config", str(path))
    one_clean_line(result, f"launch.py: --config {path}{expected}")


def test_an_empty_workdir_is_refused_not_read_as_the_default(tmp_path):
    """`--workdir "$RUN"` with RUN unset gave --workdir='': read as no --workdir, the run went to (or
    resumed!) runs/<config name> in the current directory."""
    from tiny_run import run_launch

    for args in (["--workdir="], ["--workdir", ""], ["--workdir", "  "]):
        result = run_launch("--mode", "config", "--config", "configs/demo.py", *args)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "flag --workdir=" in result.stderr and "an empty path" in result.stderr, result.stderr
