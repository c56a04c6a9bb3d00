"""Fuzzing of the BVH and TextGrid readers: whatever the input, only the documented error escapes.

Inputs are mutations of valid files (character flips, truncations, deleted / duplicated / swapped lines,
random tokens), token soups of the formats' own words, arbitrary text, and raw bytes in several encodings
read through `load_bvh` / `load_textgrid`. A parse either raises `BvhError` / `TextGridError` (naming the
source and a line inside the input) or returns arrays that are finite and of consistent shapes. Number
tokens are checked against an independent definition of what the readers accept. Every run is
derandomized, so CI sees the same few thousand inputs each time.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motion_ddpm_jax.data import motion_text
from motion_ddpm_jax.data.bvh import BvhError, BvhMotion, load_bvh, parse_bvh
from motion_ddpm_jax.data.motion_text import DatasetError, Split
from motion_ddpm_jax.data.textgrid import TextGridError, load_textgrid, parse_textgrid
from motion_ddpm_jax.errors import UserError

FLOAT32_MAX = float(np.finfo(np.float32).max)
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # what a number token may look like


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def accepted_number(token: str) -> float | None:
    """The reference: a plain ASCII decimal whose value is finite in float32, else None."""
    if not (token.isascii() and DECIMAL.fullmatch(token)):
        return None
    value = float(token)
    return value if abs(value) <= FLOAT32_MAX else None


# -------------------------------------------------------------------------------------------- mutations
@st.composite
def mutated(draw, text: str, tokens, max_edits: int = 3) -> str:
    """`text` after 1..max_edits random edits, each at a uniformly drawn line (so that edits reach the short
    header lines about as often as the long data lines)."""
    for _ in range(draw(st.integers(1, max_edits))):
        lines = text.splitlines(keepends=True) or [""]
        n = draw(st.integers(0, len(lines) - 1))
        line = lines[n]
        at = draw(st.integers(0, len(line)))
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "delete",
                    "insert",
                    "replace_token",
                    "drop_line",
                    "duplicate_line",
                    "swap",
                ]
            )
        )
        if kind == "flip" and line:
            at = min(at, len(line) - 1)
            lines[n] = line[:at] + draw(st.characters(codec="utf-8")) + line[at + 1 :]
        elif kind == "truncate":
            lines = [*lines[:n], line[:at]]
        elif kind == "delete":
            lines[n] = line[:at] + line[at + draw(st.integers(1, 12)) :]
        elif kind == "insert":
            lines[n] = line[:at] + "".join(draw(st.lists(tokens, min_size=1, max_size=3))) + line[at:]
        elif kind == "replace_token":
            words = line.split() or [""]
            words[draw(st.integers(0, len(words) - 1))] = draw(tokens)
            lines[n] = " ".join(words) + "\n"
        elif kind == "drop_line":
            del lines[n]
        elif kind == "duplicate_line":
            lines.insert(n, line)
        else:
            m = draw(st.integers(0, len(lines) - 1))
            lines[n], lines[m] = lines[m], lines[n]
        text = "".join(lines)
    return text


@st.composite
def byte_flipped(draw, raw: bytes, within: int | None = None) -> bytes:
    """`raw` with up to 4 bytes (among the first `within`, default all) replaced by random bytes, and
    perhaps cut short."""
    data = bytearray(raw)
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, min(len(data), within or len(data)) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "utf-16", "utf-16-le", "utf-16-be"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One file path reused by every example (a function-scoped tmp_path would be shared anyway)."""
    return tmp_path_factory.mktemp("fuzz") / "input"


# ------------------------------------------------------------------------------------------------- BVH
# Root with 6 channels (YXZ), Spine with 3 position + 3 rotation channels (a translated joint), Neck with
# no channels at all, Head ZYX, two end sites.
BVH_HIERARCHY = """\
HIERARCHY
ROOT Hips
{
  OFFSET 0.5 90.0 -1.25
  CHANNELS 6 Xposition Yposition Zposition Yrotation Xrotation Zrotation
  JOINT Spine
  {
    OFFSET 0.0 10.0 0.0
    CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
    JOINT Neck
    {
      OFFSET 0.0 12.0 1.0
      JOINT Head
      {
        OFFSET 0.0 8.0 0.0
        CHANNELS 3 Zrotation Yrotation Xrotation
        End Site
        {
          OFFSET 0.0 6.0 0.0
        }
      }
    }
  }
  JOINT Leg
  {
    OFFSET 4.0 -9.0 0.0
    CHANNELS 3 Xrotation Yrotation Zrotation
    End Site
    {
      OFFSET 0.0 -40.0 2.0
    }
  }
}
MOTION
"""
BVH_CHANNELS = 18  # 6 + 6 + 0 + 3 + 3
BVH_FRAMES = 12
BVH_VALUES = np.round(np.random.default_rng(0).uniform(-180.0, 180.0, (BVH_FRAMES, BVH_CHANNELS)), 4)


def bvh_text(frames: str = str(BVH_FRAMES), frame_time: str = "0.008333", values=BVH_VALUES) -> str:
    rows = "".join(" ".join(f"{v:.4f}" for v in row) + "\n" for row in values)
    return BVH_HIERARCHY + f"Frames: {frames}\nFrame Time: {frame_time}\n" + rows


BVH = bvh_text()
FIRST_FRAME_LINE = BVH.count("\n", 0, BVH.index("Frame Time:")) + 2
BVH_WORDS = [
    "HIERARCHY", "ROOT", "JOINT", "End", "Site", "End Site", "{", "}", "OFFSET", "CHANNELS", "MOTION",
    "Frames:", "Frame Time:", "Frame", "Time:", "Xposition", "Yposition", "Zposition", "Xrotation",
    "Yrotation", "Zrotation", "0", "1", "3", "6", "-2.5", "1e3", "0.008333", "1e-320", "nan", "inf", "1e39",
    "1_0", "\u0661", "x", "\n", "\r\n", "\t", " ", "\x00", "\ufeff",
]  # fmt: skip
BVH_TOKENS = st.sampled_from(BVH_WORDS)


def check_motion(motion: BvhMotion) -> None:
    """What every successful parse guarantees: consistent shapes, finite float32 arrays, proper rotations."""
    frames, joints = motion.num_frames, motion.skeleton.num_joints
    rotating, translated = len(motion.euler_orders), motion.translated_joints.size
    assert motion.local_rotations.shape == (frames, joints, 3, 3)
    assert motion.euler_degrees.shape == (frames, rotating, 3)
    assert motion.rotating_joints.shape == (rotating,)
    assert motion.root_translation.shape == (frames, 3)
    assert motion.joint_translations.shape == (frames, translated, 3)
    assert motion.skeleton.offsets.shape == (joints, 3) and len(motion.channels) == joints
    parents = motion.skeleton.parents
    assert parents[0] == -1 and all(0 <= parents[j] < j for j in range(1, joints))
    arrays = [
        motion.local_rotations,
        motion.euler_degrees,
        motion.root_translation,
        motion.joint_translations,
    ]
    for array in arrays + [motion.skeleton.offsets, motion.root_offset]:
        assert array.dtype == np.float32 and np.isfinite(array).all()
    identity = np.broadcast_to(np.eye(3), motion.local_rotations.shape)
    product = motion.local_rotations @ np.swapaxes(motion.local_rotations, -1, -2)
    np.testing.assert_allclose(product, identity, atol=1e-5)
    assert math.isfinite(motion.fps) and motion.fps > 0 and motion.frame_time > 0


def parse_or_error(text: str, source: str = "fuzz.bvh") -> BvhMotion | None:
    """parse_bvh, asserting that a failure is a BvhError naming `source` and a line of the input."""
    try:
        motion = parse_bvh(text, source=source)
    except BvhError as error:
        assert isinstance(error, UserError)
        assert str(error).startswith(f"{source}:{error.line}: ") and error.source == source
        assert 0 < error.line <= text.count("\n") + 1, (error.line, str(error))
        return None
    check_motion(motion)
    return motion


@pytest.mark.filterwarnings("error::RuntimeWarning")  # overflow in a cast would be a silent inf
@fuzz_settings(900)
@given(mutated(BVH, BVH_TOKENS))
def test_mutated_bvh_parses_or_raises_bvh_error(text):
    parse_or_error(text)


@fuzz_settings(300)
@given(st.lists(BVH_TOKENS, max_size=60), st.lists(st.sampled_from([" ", "\n", "\t", ""]), min_size=1))
def test_bvh_token_soup_parses_or_raises_bvh_error(words, separators):
    text = "".join(word + separators[n % len(separators)] for n, word in enumerate(words))
    parse_or_error(text)
    parse_or_error("HIERARCHY\nROOT Hips\n{\n" + text)


@fuzz_settings(300)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_bvh_error(text):
    parse_or_error(text)


NUMBER_TOKENS = st.one_of(
    st.floats().map(repr),
    st.floats(width=32, allow_nan=False).map(lambda v: f"{v:.6e}"),
    st.from_regex(r"[+-]?\d{0,3}\.?\d{0,3}(?:[eEdD][+-]?\d{0,3})?", fullmatch=True),
    st.sampled_from(
        [
            "1_0",
            "0x1A",
            "\u0661\u0662",
            "\uff11",
            "1e39",
            "-3.4028235e38",
            "3.4028234e38",
            "-1e-400",
            "+.5",
            "5.",
            ".",
            "-",
            "e5",
            "Infinity",
            "-nan",
            "NaN",
            "1d5",
            "1,5",
            "\u00bd",
            "\u00b2",
            "1e",
            "--1",
            "0b1",
            "1.5\x00",
            "\x001",
            "1.5\x1a",
            "'1'",
            '"1"',
            "#1",
            "1#",
            "1e-320",
            "4.9e-324",
            "2.2250738585072014e-308",
        ]
    ),  # fmt: skip
    st.text(min_size=1, max_size=4),
).filter(lambda token: token.split() == [token])


@pytest.mark.filterwarnings("error::RuntimeWarning")
@fuzz_settings(400)
@given(st.integers(0, BVH_FRAMES - 1), st.sampled_from([0, 1, 2, 3, 4, 5, 15]), NUMBER_TOKENS)
def test_a_frame_value_is_read_exactly_when_it_is_a_finite_float32_decimal(frame, column, token):
    lines = BVH.splitlines(keepends=True)
    index = FIRST_FRAME_LINE - 1 + frame
    values = lines[index].split()
    values[column] = token
    lines[index] = " ".join(values) + "\n"
    text = "".join(lines)
    expected = accepted_number(token)
    motion = parse_or_error(text)
    if expected is None:
        assert motion is None, f"{token!r} was accepted as a number"
        return
    assert motion is not None, f"{token!r} was rejected"
    # Columns 0-2: root position; 3-5: root rotation (channels Y X Z); 15: Leg's Xrotation.
    read = {
        0: motion.root_translation[frame, 0],
        1: motion.root_translation[frame, 1],
        2: motion.root_translation[frame, 2],
        3: motion.euler_degrees[frame, 0, 0],
        4: motion.euler_degrees[frame, 0, 1],
        5: motion.euler_degrees[frame, 0, 2],
        15: motion.euler_degrees[frame, 3, 0],
    }[column]
    assert read == np.float32(expected)


@fuzz_settings(250)
@given(st.one_of(NUMBER_TOKENS, st.sampled_from(["0", "-0", "1e-320", "4.9e-324", "1e-300", "1e38"])))
def test_frame_time_is_read_when_positive_with_a_finite_rate(frame_time):
    motion = parse_or_error(bvh_text(frame_time=frame_time))
    time = accepted_number(frame_time)
    valid = time is not None and time > 0 and math.isfinite(1 / time)
    assert (motion is not None) == valid, frame_time
    if motion is not None:
        assert motion.frame_time == time and motion.num_frames == BVH_FRAMES


@fuzz_settings(150)
@given(st.one_of(NUMBER_TOKENS, st.sampled_from(["0", f"0{BVH_FRAMES}", "99999999999999999999", "+12"])))
def test_frame_count_must_be_a_whole_number_matching_the_frame_lines(frames):
    motion = parse_or_error(bvh_text(frames=frames))
    valid = frames.isascii() and frames.isdigit() and int(frames) == BVH_FRAMES
    assert (motion is not None) == valid, frames


@fuzz_settings(300)
@given(st.sampled_from(ENCODINGS), st.data())
def test_bvh_bytes_in_any_encoding_load_or_raise_bvh_error(scratch, encoding, data):
    text = data.draw(st.one_of(st.just(BVH), mutated(BVH, BVH_TOKENS, max_edits=1)))
    raw = data.draw(byte_flipped(text.encode(encoding, errors="replace")))
    path = scratch.with_suffix(".bvh")
    path.write_bytes(raw)
    try:
        motion = load_bvh(path)
    except BvhError as error:
        assert str(error).startswith(f"{path}:") and error.line >= 0
        return
    check_motion(motion)


# --------------------------------------------------------------------------------------------- TextGrid
TEXTGRID_LONG = '''\
File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 2.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.4
            text = ""
        intervals [2]:
            xmin = 0.4
            xmax = 1.2
            text = "he said ""hi"""
        intervals [3]:
            xmin = 1.2
            xmax = 1.9
            text = "caf\u00e9
now"
        intervals [4]:
            xmin = 1.9
            xmax = 2.5
            text = ""
    item [2]:
        class = "TextTier"
        name = "beats"
        xmin = 0
        xmax = 2.5
        points: size = 2
        points [1]:
            number = 0.5
            mark = "b1"
        points [2]:
            number = 1.5
            mark = "b2"
'''
TEXTGRID_SHORT = """\
File type = "ooTextFile"
Object class = "TextGrid"

0
2.5
<exists>
2
"IntervalTier"
"words"
0
2.5
3
0
0.4
""
0.4
1.2
"so"
1.2
2.5
"yes"
"TextTier"
"beats"
0
2.5
1
1.0
"b1"
"""
TEXTGRID_WORDS = [
    '"', '""', '"x"', "<exists>", "<absent>", "item", "[]", "[1]", "[2]", ":", "=", "?", "intervals",
    "points", "size", "xmin", "xmax", "text", "class", "name", "number", "mark", '"IntervalTier"',
    '"TextTier"', "0", "1", "2", "-1", "0.4", "1e999", "1e-999", "nan", "\n", "\r\n", "\t", " ", "\x00",
    "\ufeff", "\u00e9", "<", ">", "[", "]",
]  # fmt: skip
TEXTGRID_TOKENS = st.sampled_from(TEXTGRID_WORDS)


def check_grid(text: str, source: str = "fuzz.TextGrid") -> None:
    """parse_textgrid: a TextGridError naming `source` and a line, or a grid whose times make sense."""
    try:
        grid = parse_textgrid(text, source=source)
    except TextGridError as error:
        assert isinstance(error, UserError)
        assert str(error).startswith(f"{source}:{error.line}: ") and error.source == source
        assert 0 < error.line <= text.count("\n") + 1, (error.line, str(error))
        return
    assert math.isfinite(grid.xmin) and math.isfinite(grid.xmax) and grid.xmin <= grid.xmax
    for tier in grid.tiers:
        assert tier.kind in ("IntervalTier", "TextTier") and isinstance(tier.name, str)
        assert math.isfinite(tier.xmin) and tier.xmin <= tier.xmax < math.inf
        assert not (tier.intervals and tier.points)
        for interval in tier.intervals:
            assert math.isfinite(interval.start) and interval.start <= interval.end < math.inf
            assert isinstance(interval.text, str)
        for before, after in zip(tier.intervals, tier.intervals[1:], strict=False):
            assert after.start >= before.end - 1e-6
        times = [point.time for point in tier.points]
        assert all(math.isfinite(t) for t in times) and times == sorted(times)


@fuzz_settings(900)
@given(st.sampled_from([TEXTGRID_LONG, TEXTGRID_SHORT]).flatmap(lambda t: mutated(t, TEXTGRID_TOKENS)))
def test_mutated_textgrid_parses_or_raises_textgrid_error(text):
    check_grid(text)


@fuzz_settings(300)
@given(st.lists(TEXTGRID_TOKENS, max_size=60), st.lists(st.sampled_from([" ", "\n", ""]), min_size=1))
def test_textgrid_token_soup_parses_or_raises_textgrid_error(words, separators):
    text = "".join(word + separators[n % len(separators)] for n, word in enumerate(words))
    check_grid(text)
    check_grid('File type = "ooTextFile"\nObject class = "TextGrid"\n' + text)


@fuzz_settings(300)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_textgrid_error(text):
    check_grid(text)


def short_textgrid(spans: list[tuple[float, float]], points: list[float]) -> str:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "0", "100", "<exists>", "2"]
    lines += ['"IntervalTier"', '"words"', "0", "100", str(len(spans))]
    for n, (start, end) in enumerate(spans):
        lines += [repr(start), repr(end), f'"w{n}"']
    lines += ['"TextTier"', '"beats"', "0", "100", str(len(points))]
    for n, time in enumerate(points):
        lines += [repr(time), f'"p{n}"']
    return "\n".join(lines) + "\n"


TIMES = st.integers(0, 40).map(lambda k: k / 4) | st.floats(0, 10, allow_nan=False)


@fuzz_settings(300)
@given(st.lists(st.tuples(TIMES, TIMES), max_size=6), st.lists(TIMES, max_size=4))
def test_intervals_are_accepted_exactly_when_in_order_and_not_overlapping(spans, points):
    in_order = all(start <= end for start, end in spans) and all(
        after[0] >= before[1] - 1e-6 for before, after in zip(spans, spans[1:], strict=False)
    )
    text = short_textgrid(spans, points)
    valid = in_order and points == sorted(points)
    try:
        grid = parse_textgrid(text, source="times.TextGrid")
    except TextGridError as error:
        assert not valid, str(error)
        assert re.search(r"before (its start|interval|point)", str(error)), str(error)
        return
    assert valid
    assert [(i.start, i.end) for i in grid.tiers[0].intervals] == spans
    assert [p.time for p in grid.tiers[1].points] == points


@fuzz_settings(300)
@given(st.sampled_from(ENCODINGS), st.data())
def test_textgrid_bytes_in_any_encoding_load_or_raise_textgrid_error(scratch, encoding, data):
    text = data.draw(st.sampled_from([TEXTGRID_LONG, TEXTGRID_SHORT]))
    raw = data.draw(st.one_of(byte_flipped(text.encode(encoding)), st.binary(max_size=80)))
    path = scratch.with_suffix(".TextGrid")
    path.write_bytes(raw)
    try:
        grid = load_textgrid(path)
    except TextGridError as error:
        assert str(error).startswith(f"{path}:") and error.line >= 0
        return
    assert grid.source == str(path)


# ------------------------------------------------------------------------------------------------- .npy
@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    """A prepared dataset with one training clip, `clip`, of 5 frames x 3 features."""
    root = tmp_path_factory.mktemp("npy") / "dataset"
    motion = np.arange(15, dtype=np.float32).reshape(5, 3)
    motion_text.write_dataset(
        root,
        {"train": Split("train", ("clip",), (motion,), (("a caption",),))},
        {"representation": "positions", "fps": 1},
    )
    return root


NPY = {}
for _dtype in ("<f4", ">f8", "<f2", "<i4"):
    _buffer = io.BytesIO()
    np.save(_buffer, np.arange(15).reshape(5, 3).astype(_dtype))
    NPY[_dtype] = _buffer.getvalue()


@fuzz_settings(300)
@given(st.sampled_from(sorted(NPY)).flatmap(lambda dtype: byte_flipped(NPY[dtype], within=128)))
def test_damaged_npy_motion_loads_or_raises_dataset_error(dataset_root, raw):
    path = dataset_root / "motions" / "clip.npy"
    path.write_bytes(raw)
    try:
        split = motion_text.open_dataset(dataset_root).split("train")
    except DatasetError as error:
        assert str(error).startswith(f"{path}: ")
        return
    (motion,) = split.motions
    assert motion.dtype == np.float32 and motion.ndim == 2 and motion.shape[1] == 3
    assert np.isfinite(motion).all()
