"""Specification of the BVH reader: values, conventions, errors that name file and line, fuzzing."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.data.bvh import BvhError, euler_to_matrix_np, load_bvh, parse_bvh, resample
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

# A small skeleton: 6-channel root (ZXY), Spine XYZ, Head YZX, LeftLeg ZYX, two end sites.
HIERARCHY = """\
HIERARCHY
ROOT Hips
{
\tOFFSET 1.0 2.0 3.0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\tJOINT Spine
\t{
\t\tOFFSET 0.0 10.0 0.5
\t\tCHANNELS 3 Xrotation Yrotation Zrotation
\t\tJOINT Head
\t\t{
\t\t\tOFFSET 0.0 5.0 0.0
\t\t\tCHANNELS 3 Yrotation Zrotation Xrotation
\t\t\tEnd Site
\t\t\t{
\t\t\t\tOFFSET 0.0 3.0 1.0
\t\t\t}
\t\t}
\t}
\tJOINT LeftLeg
\t{
\t\tOFFSET -2.0 -8.0 0.0
\t\tCHANNELS 3 Zrotation Yrotation Xrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0.0 -9.0 0.5
\t\t}
\t}
}
MOTION
"""
NAMES = ("Hips", "Spine", "Head", "Head_Nub", "LeftLeg", "LeftLeg_Nub")
PARENTS = [-1, 0, 1, 2, 0, 4]
FILE_OFFSETS = np.array(
    [[1.0, 2.0, 3.0], [0.0, 10.0, 0.5], [0.0, 5.0, 0.0], [0.0, 3.0, 1.0], [-2.0, -8.0, 0.0], [0.0, -9.0, 0.5]]
)
END_SITES = [False, False, False, True, False, True]
ORDERS = ("ZXY", "XYZ", "YZX", "ZYX")
ROTATING = [0, 1, 2, 4]
ROTATION_COLUMNS = [[3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14]]
NUM_FRAMES = 4
VALUES = np.round(np.random.default_rng(7).uniform(-90.0, 90.0, (NUM_FRAMES, 15)), 4)
VALUES[:, :3] = [[10.0, 90.0, -5.0], [10.5, 90.25, -4.5], [11.0, 90.5, -4.0], [11.5, 90.75, -3.5]]


def frame_lines(values: np.ndarray) -> str:
    return "".join(" ".join(f"{v:.4f}" for v in row) + "\n" for row in values)


def bvh_text(values: np.ndarray = VALUES, frame_time: str = "0.008333", hierarchy: str = HIERARCHY) -> str:
    return hierarchy + f"Frames: {len(values)}\nFrame Time: {frame_time}\n" + frame_lines(values)


VALID = bvh_text()
FIRST_FRAME_LINE = VALID.splitlines().index("Frame Time: 0.008333") + 2


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# ------------------------------------------------------------------------------------ independent reference
def reference_positions(values: np.ndarray, offsets: np.ndarray = FILE_OFFSETS) -> np.ndarray:
    """float64 FK frame by frame: root at its position channels, p_j = p_parent + G_parent offset_j."""
    out = np.zeros((len(values), len(NAMES), 3))
    for t, row in enumerate(values):
        global_rotations = {}
        for j, parent in enumerate(PARENTS):
            local = np.eye(3)
            if j in ROTATING:
                slot = ROTATING.index(j)
                local = Rotation.from_euler(
                    ORDERS[slot], row[ROTATION_COLUMNS[slot]], degrees=True
                ).as_matrix()
            if parent < 0:
                out[t, j] = row[:3]
                global_rotations[j] = local
            else:
                out[t, j] = out[t, parent] + global_rotations[parent] @ offsets[j]
                global_rotations[j] = global_rotations[parent] @ local
    return out


# ------------------------------------------------------------------------------------------------ values
def test_parse_gives_the_written_skeleton_channels_and_values():
    motion = parse_bvh(VALID)
    assert motion.skeleton.names == NAMES
    np.testing.assert_array_equal(motion.skeleton.parents, PARENTS)
    np.testing.assert_array_equal(motion.skeleton.end_sites, END_SITES)
    expected_offsets = FILE_OFFSETS.copy()
    expected_offsets[0] = 0  # the root's OFFSET is replaced by its position channels
    np.testing.assert_array_equal(motion.skeleton.offsets, expected_offsets.astype(np.float32))
    np.testing.assert_array_equal(motion.root_offset, np.float32([1.0, 2.0, 3.0]))
    assert motion.channels == (
        ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"),
        ("Xrotation", "Yrotation", "Zrotation"),
        ("Yrotation", "Zrotation", "Xrotation"),
        (),
        ("Zrotation", "Yrotation", "Xrotation"),
        (),
    )
    assert motion.euler_orders == ORDERS
    np.testing.assert_array_equal(motion.rotating_joints, ROTATING)
    assert motion.frame_time == 0.008333
    assert motion.fps == 120.0
    assert motion.num_frames == NUM_FRAMES
    np.testing.assert_array_equal(motion.euler_degrees, VALUES[:, ROTATION_COLUMNS].astype(np.float32))
    np.testing.assert_array_equal(motion.root_translation, VALUES[:, :3].astype(np.float32))
    assert motion.translated_joints.shape == (0,)
    assert motion.local_rotations.shape == (NUM_FRAMES, 6, 3, 3)
    assert motion.local_rotations.dtype == np.float32


def test_local_rotations_match_scipy_intrinsic_euler():
    motion = parse_bvh(VALID)
    for slot, joint in enumerate(ROTATING):
        expected = Rotation.from_euler(ORDERS[slot], VALUES[:, ROTATION_COLUMNS[slot]], degrees=True)
        np.testing.assert_allclose(motion.local_rotations[:, joint], expected.as_matrix(), atol=2e-6)


def test_end_sites_have_identity_rotation_and_no_channels():
    motion = parse_bvh(VALID)
    for joint in (3, 5):
        np.testing.assert_array_equal(motion.local_rotations[:, joint], np.broadcast_to(np.eye(3), (4, 3, 3)))
    assert list(motion.skeleton.rotation_joints) == ROTATING


def test_positions_match_an_independent_float64_forward_kinematics():
    motion = parse_bvh(VALID)
    positions = motion.positions()
    assert positions.shape == (NUM_FRAMES, 6, 3) and positions.dtype == np.float32
    np.testing.assert_allclose(positions, reference_positions(VALUES), atol=1e-4)


def test_positions_are_the_same_for_any_chunk_size():
    motion = parse_bvh(VALID)
    np.testing.assert_allclose(motion.positions(chunk_frames=3), motion.positions(), atol=1e-5)


def test_position_channels_of_a_non_root_joint_replace_its_offset_per_frame():
    hierarchy = HIERARCHY.replace(
        "\t\tCHANNELS 3 Xrotation Yrotation Zrotation",
        "\t\tCHANNELS 5 Xrotation Yrotation Zrotation Yposition Xposition",
    )
    extra = np.array([[10.5, 0.25], [11.0, 0.5], [11.5, 0.75], [12.0, 1.0]])  # (Y, X) of Spine per frame
    values = np.concatenate([VALUES[:, :9], extra, VALUES[:, 9:]], axis=1)
    motion = parse_bvh(bvh_text(values, hierarchy=hierarchy))
    np.testing.assert_array_equal(motion.translated_joints, [1])
    spine_offsets = np.stack([extra[:, 1], extra[:, 0], np.full(4, 0.5)], axis=1)  # Z keeps the OFFSET
    np.testing.assert_allclose(motion.joint_translations[:, 0], spine_offsets)
    np.testing.assert_array_equal(motion.euler_degrees, VALUES[:, ROTATION_COLUMNS].astype(np.float32))
    expected = np.stack(
        [
            reference_positions(VALUES[t : t + 1], _spine_offset(FILE_OFFSETS, spine_offsets[t]))[0]
            for t in range(4)
        ]
    )
    np.testing.assert_allclose(motion.positions(), expected, atol=1e-4)


SPINE_WITH_POSITIONS = HIERARCHY.replace(
    "\t\tCHANNELS 3 Xrotation Yrotation Zrotation",
    "\t\tCHANNELS 5 Xrotation Yrotation Zrotation Yposition Xposition",
)


def test_still_position_channels_of_a_non_root_joint_fold_into_its_offset():
    """Exporters that write position channels on every joint: constant values become the joint's OFFSET
    (rotations-only representations keep them), and FK of the folded skeleton gives the file's positions."""
    still = np.tile([[12.0, 0.75]], (4, 1))  # (Y, X) of Spine, the same in every frame
    values = np.concatenate([VALUES[:, :9], still, VALUES[:, 9:]], axis=1)
    motion = parse_bvh(bvh_text(values, hierarchy=SPINE_WITH_POSITIONS))
    folded = motion.with_static_offsets()
    assert folded.translated_joints.shape == (0,) and folded.joint_translations.shape == (4, 0, 3)
    np.testing.assert_array_equal(folded.skeleton.offsets[1], [0.75, 12.0, 0.5])  # Z keeps the OFFSET
    np.testing.assert_array_equal(folded.skeleton.offsets[2:], motion.skeleton.offsets[2:])
    expected = reference_positions(VALUES, _spine_offset(FILE_OFFSETS, np.array([0.75, 12.0, 0.5])))
    np.testing.assert_allclose(folded.positions(), expected, atol=1e-4)
    plain = parse_bvh(VALID)
    assert plain.with_static_offsets() is plain


def test_moving_position_channels_of_a_non_root_joint_cannot_be_folded():
    extra = np.array([[10.5, 0.25], [11.0, 0.5], [11.5, 0.75], [12.0, 1.0]])
    values = np.concatenate([VALUES[:, :9], extra, VALUES[:, 9:]], axis=1)
    motion = parse_bvh(bvh_text(values, hierarchy=SPINE_WITH_POSITIONS), source="take.bvh")
    with pytest.raises(BvhError, match=r"take\.bvh.*Spine.*move.*by up to 1\.5.*axis_angle.*positions"):
        motion.with_static_offsets()


def _spine_offset(offsets: np.ndarray, spine: np.ndarray) -> np.ndarray:
    offsets = offsets.copy()
    offsets[1] = spine
    return offsets


def test_root_without_position_channels_stays_at_its_offset():
    hierarchy = HIERARCHY.replace(
        "CHANNELS 6 Xposition Yposition Zposition Zrotation", "CHANNELS 3 Zrotation"
    )
    motion = parse_bvh(bvh_text(VALUES[:, 3:], hierarchy=hierarchy))
    np.testing.assert_array_equal(motion.root_translation, np.tile(np.float32([1.0, 2.0, 3.0]), (4, 1)))
    np.testing.assert_allclose(motion.positions()[:, 0], np.tile([1.0, 2.0, 3.0], (4, 1)))


def test_crlf_bom_and_blank_lines_parse_the_same():
    messy = "\ufeff" + VALID.replace("\n", "\r\n").replace("MOTION", "\r\nMOTION").rstrip() + "\r\n\r\n"
    a, b = parse_bvh(VALID), parse_bvh(messy)
    np.testing.assert_array_equal(a.local_rotations, b.local_rotations)
    assert a.skeleton == b.skeleton


def test_lone_carriage_returns_end_lines_as_newlines_do(tmp_path):
    """Classic Mac OS exporters end lines with a lone CR: the same motion as with LF, from a file too."""
    path = tmp_path / "mac.bvh"
    path.write_bytes(VALID.replace("\n", "\r").encode())
    a, b = parse_bvh(VALID), load_bvh(path)
    np.testing.assert_array_equal(a.euler_degrees, b.euler_degrees)
    np.testing.assert_array_equal(a.root_translation, b.root_translation)
    assert a.skeleton == b.skeleton and a.num_frames == b.num_frames == 4


def test_load_bvh_reads_a_file(tmp_path):
    path = tmp_path / "take.bvh"
    path.write_text(VALID)
    motion = load_bvh(path)
    assert motion.source == str(path)
    np.testing.assert_array_equal(motion.euler_degrees, parse_bvh(VALID).euler_degrees)


def test_zero_frames_is_a_valid_empty_motion():
    motion = parse_bvh(bvh_text(VALUES[:0]))
    assert motion.local_rotations.shape == (0, 6, 3, 3)
    assert motion.positions().shape == (0, 6, 3)


def _beat_hierarchy(skeleton: Skeleton) -> str:
    lines = ["HIERARCHY"]

    def write(joint: int, depth: int) -> None:
        pad = "  " * depth
        offset = " ".join(repr(float(v)) for v in skeleton.offsets[joint])
        if skeleton.end_sites[joint]:
            lines.extend([f"{pad}End Site", f"{pad}{{", f"{pad}  OFFSET {offset}", f"{pad}}}"])
            return
        root = skeleton.parents[joint] < 0
        channels = (
            "6 Xposition Yposition Zposition Yrotation Xrotation Zrotation"
            if root
            else ("3 Yrotation Xrotation Zrotation")
        )
        lines.extend(
            [
                f"{pad}{'ROOT' if root else 'JOINT'} {skeleton.names[joint]}",
                f"{pad}{{",
                f"{pad}  OFFSET {offset}",
                f"{pad}  CHANNELS {channels}",
            ]
        )
        for child in np.nonzero(skeleton.parents == joint)[0]:
            write(int(child), depth + 1)
        lines.append(f"{pad}}}")

    write(skeleton.root, 0)
    return "\n".join(lines) + "\nMOTION\n"


def test_a_beat_shaped_header_gives_the_packaged_beat_skeleton():
    beat = beat_skeleton()
    values = np.zeros((3, 228))
    motion = parse_bvh(bvh_text(values, hierarchy=_beat_hierarchy(beat)))
    assert motion.skeleton == beat
    assert motion.skeleton.num_joints == 88 and len(motion.euler_orders) == 75
    assert int(motion.skeleton.end_sites.sum()) == 13
    assert set(motion.euler_orders) == {"YXZ"}


# ------------------------------------------------------------------------------------------- Euler twin
@pytest.mark.parametrize("order", kinematics.EULER_ORDERS)
def test_numpy_euler_twin_matches_kinematics_and_scipy(order):
    angles = np.random.default_rng(0).uniform(-360.0, 360.0, (50, 2, 3))
    np.testing.assert_allclose(
        euler_to_matrix_np(angles, order),
        Rotation.from_euler(order, angles.reshape(-1, 3), degrees=True).as_matrix().reshape(50, 2, 3, 3),
        atol=1e-12,
    )
    angles32 = angles.astype(np.float32)
    np.testing.assert_allclose(
        euler_to_matrix_np(angles32, order),
        np.asarray(kinematics.euler_to_matrix(angles32, order)),
        atol=1e-6,
    )


# -------------------------------------------------------------------------------------------- resampling
def test_resample_120_to_60_keeps_every_other_frame():
    motion = parse_bvh(VALID)
    half = resample(motion, 60)
    assert half.num_frames == 2 and half.fps == 60.0
    assert half.frame_time == pytest.approx(2 * 0.008333)
    np.testing.assert_array_equal(half.euler_degrees, motion.euler_degrees[::2])
    np.testing.assert_array_equal(half.local_rotations, motion.local_rotations[::2])
    np.testing.assert_array_equal(half.root_translation, motion.root_translation[::2])
    np.testing.assert_array_equal(motion.resampled(60).local_rotations, half.local_rotations)
    assert resample(motion, 120) is motion


@pytest.mark.parametrize("fps", [50, 240, 0, -60])
def test_resample_to_a_rate_that_does_not_divide_raises(fps):
    with pytest.raises(ValueError, match="fps"):
        resample(parse_bvh(VALID), fps)


@pytest.mark.parametrize("frame_time, rate", [("0.016683", "59.94"), ("0.0333667", "29.97")])
def test_an_ntsc_rate_is_not_taken_for_the_round_one(frame_time, rate):
    """59.94 fps (1/1001 below 60) had been read as 60 fps, the motion 0.1% fast against its transcript
    (0.6 s of drift in 10 minutes), while 29.97 was refused: both are refused, named at 4 digits; a frame
    time printed to 6 decimals (0.008333 for 120) still divides."""
    motion = parse_bvh(bvh_text(frame_time=frame_time))
    round_rate = 60 if rate == "59.94" else 30
    with pytest.raises(
        ValueError, match=rf"cannot resample {rate} fps to {round_rate} fps.*\(e\.g\. {rate}, "
    ):
        resample(motion, round_rate)
    assert resample(parse_bvh(bvh_text(frame_time="0.008333")), 60).fps == 60.0
    # 1/240 printed with 5 decimals reads as 239.8 fps: refused, saying how to write it
    with pytest.raises(ValueError, match=r"239\.8 fps to 60 fps.*if the recording is at 240 fps.*6 decimals"):
        resample(parse_bvh(bvh_text(frame_time="0.00417")), 60)


def test_the_refusal_of_a_rate_suggests_the_source_rate_too():
    """The refusal's examples of a data.fps that works include the recording's own rate (no resampling)."""
    motion = parse_bvh(bvh_text(frame_time="0.0333333"))  # 30 fps
    with pytest.raises(
        ValueError, match=r"cannot resample 30 fps to 60 fps.*\(e\.g\. 30, 15, 10, 7\.5 fps\)"
    ):
        resample(motion, 60)


# ------------------------------------------------------------------------------------------------ errors
def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _truncated_frames():
    text = "".join(_lines(VALID)[:-1])
    return text, len(_lines(text)), "truncated: 'Frames: 4' declared but only 3"


def _partial_last_frame():
    lines = _lines(VALID)
    lines[-1] = " ".join(lines[-1].split()[:3])
    return "".join(lines), len(lines), "frame 4 has 3 values, expected 15.*truncated"


def _wrong_count_middle():
    lines = _lines(VALID)
    lines[FIRST_FRAME_LINE] = lines[FIRST_FRAME_LINE].rstrip("\n") + " 1.0\n"  # frame 2
    return "".join(lines), FIRST_FRAME_LINE + 1, "frame 2 has 16 values, expected 15"


def _bad_token(token: str, frame: int, column: int):
    lines = _lines(VALID)
    index = FIRST_FRAME_LINE - 1 + frame - 1
    values = lines[index].split()
    values[column - 1] = token
    lines[index] = " ".join(values) + "\n"
    return (
        "".join(lines),
        index + 1,
        f"frame {frame}, value {column}: expected a finite \\(float32\\) number, found '{re.escape(token)}'",
    )


def _replace(old: str, new: str, needle: str | None = None, match: str = ""):
    text = VALID.replace(old, new, 1)
    return text, line_of(text, needle if needle is not None else new.strip() or old), match


def _too_many_frames():
    text = VALID + _lines(VALID)[-1]
    return (
        text,
        len(_lines(text)),
        r"is frame line 5, past the 4 that 'Frames: 4' declares \(5 frame lines in all\)",
    )


MALFORMED = {
    "truncated frames": _truncated_frames,
    "partial last frame": _partial_last_frame,
    "wrong count on a frame line": _wrong_count_middle,
    "non-numeric value": lambda: _bad_token("1.2.3", 3, 5),
    "nan value": lambda: _bad_token("nan", 1, 2),
    "underscore number": lambda: _bad_token("1_0", 2, 15),
    "value overflowing float32": lambda: _bad_token("1e39", 4, 1),
    "unknown channel": lambda: _replace(
        "CHANNELS 3 Yrotation Zrotation Xrotation",
        "CHANNELS 3 Yrotation Wrotation Xrotation",
        match="unknown channel 'Wrotation' of 'Head'",
    ),
    "two rotation channels": lambda: _replace(
        "CHANNELS 3 Xrotation Yrotation Zrotation",
        "CHANNELS 2 Xrotation Yrotation",
        match="'Spine'.*expected three rotation channels",
    ),
    "repeated rotation axis": lambda: _replace(
        "CHANNELS 3 Zrotation Yrotation Xrotation",
        "CHANNELS 3 Zrotation Zrotation Xrotation",
        match="'ZZX' are not a rotation order",
    ),
    "missing HIERARCHY": lambda: (VALID.replace("HIERARCHY\n", "", 1), 1, "expected 'HIERARCHY'"),
    "missing ROOT": lambda: _replace("ROOT Hips", "JOINT Hips", match="expected 'ROOT <name>'"),
    "missing MOTION": lambda: _replace("MOTION\n", "", needle="Frames:", match="expected 'MOTION'"),
    "missing closing brace": lambda: (
        VALID.replace("\t\t\t}\n\t\t}\n", "\t\t\t}\n", 1),
        line_of(VALID, "MOTION") - 1,
        r"'}' closing 'Hips' \(opened on line 3\), found 'MOTION'",
    ),
    "extra closing brace": lambda: (
        VALID.replace("}\nMOTION", "}\n}\nMOTION", 1),
        line_of(VALID, "MOTION"),
        "expected 'MOTION'.*found '}'",
    ),
    "missing opening brace": lambda: (
        VALID.replace("\tJOINT Spine\n\t{\n", "\tJOINT Spine\n", 1),
        line_of(VALID, "JOINT Spine") + 1,
        "expected '{' opening JOINT 'Spine'",
    ),
    "bad offset": lambda: _replace("OFFSET 0.0 10.0 0.5", "OFFSET 0.0 ten 0.5", match="OFFSET Y of 'Spine'"),
    "zero frame time": lambda: _replace("Frame Time: 0.008333", "Frame Time: 0", match="positive"),
    "negative frame time": lambda: _replace("Frame Time: 0.008333", "Frame Time: -0.01", match="positive"),
    "frames not a number": lambda: _replace("Frames: 4", "Frames: four", match="'Frames: <count>'"),
    "too many frames": _too_many_frames,
    "second root": lambda: _replace(
        "}\nMOTION", "}\nROOT Other\nMOTION", needle="ROOT Other", match="second ROOT"
    ),
    "duplicate joint name": lambda: (
        VALID.replace("JOINT LeftLeg", "JOINT Spine", 1),
        line_of(VALID, "JOINT LeftLeg"),
        "duplicate joint name 'Spine' \\(first defined on line 6\\)",
    ),
    "no data after header": lambda: (
        VALID[: VALID.index("Frame Time")],
        line_of(VALID, "Frames:"),
        "expected 'Frame Time: <seconds>'",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_raises_bvh_error_naming_file_and_line(case, tmp_path):
    text, line, expected = MALFORMED[case]()
    path = tmp_path / "broken_take.bvh"
    path.write_text(text)
    with pytest.raises(BvhError) as info:
        load_bvh(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert info.value.line == line and info.value.source == str(path)
    assert re.search(expected, message), message


def test_bvh_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"^<string>:1: "):
        parse_bvh("")


# ---------------------------------------------------------------------------------------------- fuzzing
def mutate(draw, text: str, alphabet) -> str:
    """One random edit of `text`: at a uniformly chosen line, truncate / delete / insert / replace a token /
    duplicate or drop the line (positions drawn per line, so the edits spread over header and frames)."""
    lines = text.splitlines(keepends=True) or [""]
    n = draw(st.integers(0, len(lines) - 1))
    line = lines[n]
    at = draw(st.integers(0, len(line)))
    kind = draw(
        st.sampled_from(["truncate", "delete", "insert", "replace_token", "duplicate_line", "drop_line"])
    )
    if kind == "truncate":
        return "".join(lines[:n]) + line[:at]
    if kind == "delete":
        lines[n] = line[:at] + line[at + draw(st.integers(1, 12)) :]
    elif kind == "insert":
        lines[n] = line[:at] + "".join(draw(st.lists(alphabet, min_size=1, max_size=4))) + line[at:]
    elif kind == "duplicate_line":
        lines.insert(n, line)
    elif kind == "drop_line":
        del lines[n]
    else:
        tokens = line.split() or [""]
        tokens[draw(st.integers(0, len(tokens) - 1))] = draw(alphabet)
        lines[n] = " ".join(tokens) + "\n"
    return "".join(lines)


_ALPHABET = st.sampled_from(
    list('0123456789.-+eE {}\n\t\r:abcXYZ_"\x00\u00b2\u0661')
    + ["nan", "1e999", "End Site", "JOINT", "ROOT", "CHANNELS 3", "Xrotation", "MOTION", "Frames:"]
)


# Sixteen frames, so that edits land in the MOTION block about as often as in the hierarchy.
_FUZZ_BASE = bvh_text(np.round(np.random.default_rng(1).uniform(-180.0, 180.0, (16, 15)), 3))


@st.composite
def mutated_bvh(draw) -> str:
    text = _FUZZ_BASE
    for _ in range(draw(st.integers(1, 3))):
        text = mutate(draw, text, _ALPHABET)
    return text


@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. overflow casting to float32
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_bvh())
def test_fuzzed_files_parse_or_raise_bvh_error(text):
    try:
        motion = parse_bvh(text, source="fuzz.bvh")
    except BvhError as error:
        assert str(error).startswith("fuzz.bvh:")
        assert 0 < error.line <= text.count("\n") + 1
        return
    num_joints = motion.skeleton.num_joints
    assert motion.local_rotations.shape == (motion.num_frames, num_joints, 3, 3)
    assert motion.euler_degrees.shape == (motion.num_frames, len(motion.euler_orders), 3)
    assert np.isfinite(motion.local_rotations).all() and np.isfinite(motion.root_translation).all()
