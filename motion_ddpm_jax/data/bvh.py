"""BVH (Biovision hierarchy) reader: header by a small token parser, MOTION block by numpy in one go.

Conventions (what a `BvhMotion` holds)
- Joints are listed in the file's hierarchy order (depth-first, order of appearance). Every `End Site`
  becomes a joint named `<parent>_Nub` (as BEAT pipelines name them) right where it appears, with
  `skeleton.end_sites` True, no channels and an identity rotation. BEAT: 75 BVH joints + 13 end sites = 88.
- Rotations: a joint's three rotation channels, in the order written, are intrinsic Euler angles in degrees:
  `CHANNELS ... Zrotation Xrotation Yrotation` means R = Rz @ Rx @ Ry (order 'ZXY'), acting on column
  vectors, as `kinematics.euler_to_matrix` and scipy's `Rotation.from_euler('ZXY', a, degrees=True)`.
  A joint has either no rotation channel (identity) or all three, each axis once.
- Translations replace offsets. The root's position channels are its absolute position: `root_translation`
  [T, 3] holds them (an axis without a channel keeps the root's OFFSET value), `skeleton.offsets[root]` is 0
  (the OFFSET as written is kept in `root_offset`), so forward kinematics with `root_translation` puts the
  root exactly where the channels say. A non-root joint with position channels has its offset replaced, per
  frame, by them (`joint_translations`); `positions()` handles both.
- Arrays are float32 (parsed in float64). `fps` is 1 / frame_time, snapped to the nearest integer when within
  1e-4 relative (files print 0.008333 for 120 fps).

Errors: every malformed input raises `BvhError` (a `UserError`, hence a ValueError) whose message starts
`<file>:<line>:` and says what was expected. The MOTION block is parsed by `np.loadtxt` at C speed; only
when that fails, or its shape disagrees with the header, is the block scanned line by line to name the
offending line.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import numbers
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.files import write_text_file
from motion_ddpm_jax.skeleton import Skeleton

END_SITE_SUFFIX = "_Nub"
_AXES = "XYZ"
_CHANNEL_KINDS = {
    f"{axis}{kind}".lower(): (axis, kind) for axis in _AXES for kind in ("position", "rotation")
}
_FPS_SNAP_TOLERANCE = 1e-4  # relative; frame times are usually printed with 6 decimals
FK_CHUNK_FRAMES = 1024  # frames per jitted forward-kinematics call (one compile serves every file length)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Non-root position channels that move less than this (relative to the skeleton's size) count as still.
STATIC_OFFSET_TOLERANCE = 1e-5
# Relative mismatch allowed between the rate ratio and an integer stride: frame times printed with 6 decimals
# are off by < 2.5e-4 up to 500 fps (0.008333 for 120), while NTSC rates are 1/1001 = 1e-3 off theirs
# (59.94 fps, printed 0.016683, is refused as 60 rather than read 0.1% fast: 0.6 s of drift in 10 min).
_RESAMPLE_TOLERANCE = 5e-4


class BvhError(UserError):
    """A malformed BVH file. `source` and `line` (1-based; 0 when not tied to a line) say where."""

    def __init__(self, source: str, line: int, message: str):
        self.source, self.line = source, line
        super().__init__(f"{source}:{line}: {message}")


# ------------------------------------------------------------------------------------------- the result
@dataclasses.dataclass(frozen=True, eq=False)
class BvhMotion:
    """One BVH file: skeleton, channel layout and T frames of motion (all arrays float32 unless noted).

    skeleton: J joints incl. end sites, hierarchy order; offsets[root] = 0 (see `root_offset`).
    channels: per joint, its channel names as written (end sites: ()).
    frame_time: seconds per frame, as written.
    euler_orders: per rotating joint, its rotation order, e.g. 'ZXY'.
    rotating_joints: int32 [R], the joint index of each rotating joint (those with rotation channels).
    euler_degrees: [T, R, 3], the raw rotation channel values in channel order.
    local_rotations: [T, J, 3, 3], rotation of each joint relative to its parent (identity if none).
    root_translation: [T, 3], absolute root position (position channels replace the root OFFSET).
    root_offset: [3], the root's OFFSET as written.
    translated_joints: int32 [P], non-root joints with position channels (usually none).
    joint_translations: [T, P, 3], their per-frame offsets (channels replace OFFSET components).
    source: file name used in messages.
    """

    skeleton: Skeleton
    channels: tuple[tuple[str, ...], ...]
    frame_time: float
    euler_orders: tuple[str, ...]
    rotating_joints: np.ndarray
    euler_degrees: np.ndarray
    local_rotations: np.ndarray
    root_translation: np.ndarray
    root_offset: np.ndarray
    translated_joints: np.ndarray
    joint_translations: np.ndarray
    source: str = "<string>"

    @property
    def num_frames(self) -> int:
        return int(self.local_rotations.shape[0])

    @property
    def fps(self) -> float:
        """Frames per second, 1 / frame_time snapped to an integer when within 1e-4 relative."""
        return _snap_rate(1.0 / self.frame_time)

    @property
    def duration(self) -> float:
        """Seconds covered by the frames: num_frames * frame_time."""
        return self.num_frames * self.frame_time

    def frame_offsets(self) -> np.ndarray:
        """Per-frame joint offsets [T, J, 3] with the position channels of non-root joints applied."""
        offsets = np.broadcast_to(
            self.skeleton.offsets, (self.num_frames, *self.skeleton.offsets.shape)
        ).copy()
        offsets[:, self.translated_joints] = self.joint_translations
        return offsets

    def with_static_offsets(self) -> BvhMotion:
        """This motion with the position channels of its non-root joints folded into the skeleton's offsets,
        for a representation that keeps each joint's rotation only (axis_angle, rotation_6d).

        Channels that hold still over the frames (exporters that write six channels for every joint) become
        those joints' OFFSETs, so forward kinematics of the rotations with the new skeleton gives the same
        positions. Channels that move cannot be kept by rotations: BvhError names the joints and how far
        they move. Returns the motion itself where no non-root joint has position channels.
        """
        if self.translated_joints.size == 0:
            return self
        translations = self.joint_translations.astype(np.float64)
        if self.num_frames == 0:
            values = self.skeleton.offsets[self.translated_joints]
        else:
            values = translations[0]
            travel = np.abs(translations - values).max(axis=(0, 2))
            scale = max(1.0, float(np.abs(translations).max()), float(np.abs(self.skeleton.offsets).max()))
            moving = np.flatnonzero(travel > STATIC_OFFSET_TOLERANCE * scale)
            if moving.size:
                names = [self.skeleton.names[self.translated_joints[k]] for k in moving]
                raise BvhError(
                    self.source,
                    0,
                    f"joint(s) {', '.join(names)} have position channels that move over the frames (by up "
                    f"to {float(travel[moving].max()):g} file units); the rotation representations "
                    "(axis_angle, rotation_6d) keep each joint's rotation only and would drop that motion; "
                    "expected position channels on the root alone (or constant on the other joints), or "
                    "data.representation=positions",
                )
        offsets = self.skeleton.offsets.copy()
        offsets[self.translated_joints] = values
        return dataclasses.replace(
            self,
            skeleton=dataclasses.replace(self.skeleton, offsets=offsets.astype(self.skeleton.offsets.dtype)),
            translated_joints=np.zeros(0, np.int32),
            joint_translations=np.zeros((self.num_frames, 0, 3), np.float32),
        )

    def skeleton_in_use(self) -> Skeleton:
        """The skeleton with the offsets the motion's forward kinematics uses: a non-root joint with position
        channels takes their mean over the frames (their value, where they hold still) for its OFFSET.

        Exporters that write six channels on every joint may leave OFFSET at 0, or at a pose the channels do
        not use: a dataset's skeleton taken from the OFFSETs would then have bones its positions never have
        (eval's bone-length error of the real clips and sampling's size check measure against it). The
        skeleton itself where no non-root joint has position channels (or there are no frames).
        """
        if self.translated_joints.size == 0 or self.num_frames == 0:
            return self.skeleton
        offsets = self.skeleton.offsets.astype(np.float64)
        offsets[self.translated_joints] = self.joint_translations.astype(np.float64).mean(axis=0)
        return dataclasses.replace(self.skeleton, offsets=offsets)

    def positions(self, chunk_frames: int = FK_CHUNK_FRAMES) -> np.ndarray:
        """Global joint positions [T, J, 3] float32 by `kinematics.forward_kinematics`.

        Runs one jitted program per skeleton on fixed blocks of `chunk_frames` frames (the last one
        zero-padded), so files of any length reuse the same compiled program; eager jax would recompile
        every op for each new length (seconds per file).
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        fk = _compiled_forward_kinematics(tuple(self.skeleton.parents.tolist()))
        per_frame = self.translated_joints.size > 0
        offsets = self.frame_offsets() if per_frame else self.skeleton.offsets
        num_frames, num_joints = self.local_rotations.shape[:2]
        out = np.empty((num_frames, num_joints, 3), dtype=np.float32)
        for start in range(0, num_frames, chunk_frames):
            stop = min(start + chunk_frames, num_frames)
            blocks = [self.local_rotations[start:stop], self.root_translation[start:stop]]
            if per_frame:
                blocks.append(offsets[start:stop])
            if stop - start < chunk_frames:
                blocks = [_zero_pad(block, chunk_frames) for block in blocks]
            rotations, translation = blocks[0], blocks[1]
            chunk_offsets = blocks[2] if per_frame else offsets
            out[start:stop] = np.asarray(fk(rotations, chunk_offsets, translation))[: stop - start]
        return out

    def resampled(self, target_fps: float) -> BvhMotion:
        """`resample(self, target_fps)`."""
        return resample(self, target_fps)


def resample(motion: BvhMotion, target_fps: float) -> BvhMotion:
    """Keep every k-th frame (starting with the first) where k = fps / target_fps is an integer.

    120 -> 60 keeps frames 0, 2, 4, ...; the frame time is multiplied by k. No interpolation: a rate that
    does not divide the source rate (or exceeds it) raises ValueError.
    """
    source_fps = 1.0 / motion.frame_time
    if not (isinstance(target_fps, numbers.Real) and math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"target fps must be a positive number, got {target_fps!r}")
    ratio = source_fps / target_fps
    stride = round(ratio)
    if stride < 1 or abs(ratio - stride) > _RESAMPLE_TOLERANCE * ratio:
        rate = motion.fps  # as the file means it: 0.008333 s is 120 fps, not 120.0048
        near = round(rate)
        digits = (
            f"; if the recording is at {near} fps, its Frame Time is printed with too few digits (e.g. "
            "0.00417 for 1/240): write it with 6 decimals or more (NTSC rates such as 59.94 resample to NTSC "
            "rates)"
            if near and rate != near and abs(rate - near) < 5e-3 * rate
            else ""
        )
        raise ValueError(
            f"{motion.source}: cannot resample {rate:.4g} fps to {target_fps:g} fps by dropping frames; "
            f"the target must divide the source rate (e.g. {rate:.4g}, {rate / 2:.4g}, {rate / 3:.4g}, "
            f"{rate / 4:.4g} fps); interpolation is not supported{digits}"
        )
    if stride == 1:
        return motion
    keep = slice(None, None, stride)
    return dataclasses.replace(
        motion,
        frame_time=motion.frame_time * stride,
        euler_degrees=motion.euler_degrees[keep].copy(),
        local_rotations=motion.local_rotations[keep].copy(),
        root_translation=motion.root_translation[keep].copy(),
        joint_translations=motion.joint_translations[keep].copy(),
    )


@functools.lru_cache(maxsize=16)
def _compiled_forward_kinematics(parents: tuple[int, ...]):
    """Jitted forward kinematics for one parent structure: (rotations, offsets, translation) -> positions."""
    parents_array = np.asarray(parents, dtype=np.int32)

    def positions(rotations, offsets, root_translation):
        return kinematics.forward_kinematics(rotations, offsets, parents_array, root_translation)

    return jax.jit(positions)


def _zero_pad(block: np.ndarray, frames: int) -> np.ndarray:
    padded = np.zeros((frames, *block.shape[1:]), dtype=block.dtype)
    padded[: block.shape[0]] = block
    return padded


def _snap_rate(rate: float) -> float:
    nearest = round(rate)
    return float(nearest) if nearest > 0 and abs(rate - nearest) <= _FPS_SNAP_TOLERANCE * rate else rate


# ------------------------------------------------------------------------------------------- Euler angles
def euler_to_matrix_np(angles_degrees: np.ndarray, order: str) -> np.ndarray:
    """Numpy twin of `kinematics.euler_to_matrix` (same convention), for the reader's bulk conversion.

    angles_degrees: [..., 3] -> [..., 3, 3] in the input's float dtype (float32 for integers);
    R = R_{order[0]}(a0) @ R_{order[1]}(a1) @ R_{order[2]}(a2), intrinsic, angles in degrees.
    """
    return np.ascontiguousarray(_euler_to_matrix_view(angles_degrees, order))


def _euler_to_matrix_view(angles_degrees: np.ndarray, order: str) -> np.ndarray:
    """`euler_to_matrix_np` as a (non-contiguous) view of a component-major [3, 3, ...] array.

    Built as R_{order[0]} followed by two column rotations, without 3x3 matmuls (about 5x faster than
    multiplying stacked elementary matrices); the caller's copy into place does the transpose.
    """
    if order not in kinematics.EULER_ORDERS:
        raise ValueError(
            f"unknown rotation order {order!r}; expected one of {', '.join(kinematics.EULER_ORDERS)}"
        )
    angles = np.asarray(angles_degrees)
    if not np.issubdtype(angles.dtype, np.floating):
        angles = angles.astype(np.float32)
    if angles.shape[-1:] != (3,):
        raise ValueError(f"expected Euler angles of shape [..., 3], got {angles.shape}")
    radians = np.deg2rad(np.moveaxis(angles, -1, 0).copy())  # [3, ...], contiguous per angle
    cos, sin = np.cos(radians), np.sin(radians)
    m = np.zeros((3, 3, *angles.shape[:-1]), dtype=radians.dtype)  # m[row, column, ...]
    # R about axis i is the identity with the (j, k) block [[c, -s], [s, c]], (i, j, k) cyclic.
    i = _AXES.index(order[0])
    j, k = (i + 1) % 3, (i + 2) % 3
    m[i, i] = 1
    m[j, j] = m[k, k] = cos[0]
    m[j, k] = -sin[0]
    m[k, j] = sin[0]
    for n in (1, 2):  # m <- m @ R_{order[n]}(a_n): only columns j and k change
        i = _AXES.index(order[n])
        j, k = (i + 1) % 3, (i + 2) % 3
        column_j, column_k = m[:, j].copy(), m[:, k]
        m[:, j] = column_j * cos[n] + column_k * sin[n]
        m[:, k] = column_k * cos[n] - column_j * sin[n]
    return np.moveaxis(m, (0, 1), (-2, -1))


# ------------------------------------------------------------------------------------------- tokenizing
class _Token(NamedTuple):
    text: str
    line: int
    last_on_line: bool


def _lines(text: str, start: int = 0, first_line: int = 1) -> Iterator[tuple[int, str, int]]:
    """Lazily yield (line number, line text, offset just past the line) from `start`."""
    position, number, size = start, first_line, len(text)
    while position < size:
        end = text.find("\n", position)
        if end < 0:
            end = size
        yield number, text[position:end], end + 1
        position, number = end + 1, number + 1


class _Header:
    """Recursive-descent-free parser of HIERARCHY ... MOTION / Frames / Frame Time (an explicit stack)."""

    def __init__(self, text: str, source: str):
        self.source = source
        self.line_iter = _lines(text)
        self.pending: list[_Token] = []
        self.last_line = 1
        self.data_start = len(text)
        self.data_first_line = 0

    # tokens ------------------------------------------------------------------------------------------
    def error(self, line: int, message: str) -> BvhError:
        return BvhError(self.source, line, message)

    def _fill(self) -> bool:
        for number, line, _ in self.line_iter:
            self.last_line = number
            words = line.split()
            if words:
                self.pending = [_Token(w, number, n == len(words) - 1) for n, w in enumerate(words)][::-1]
                return True
        return False

    def peek(self) -> _Token | None:
        if not self.pending and not self._fill():
            return None
        return self.pending[-1]

    def next(self, expected: str) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error(self.last_line, f"unexpected end of file; expected {expected}")
        return self.pending.pop()

    def expect(self, keyword: str, expected: str | None = None) -> _Token:
        token = self.next(expected or repr(keyword))
        if token.text.upper() != keyword.upper():
            raise self.error(token.line, f"expected {expected or repr(keyword)}, found {token.text!r}")
        return token

    def number(self, what: str) -> float:
        token = self.next(what)
        value = _to_float(token.text)
        if value is None:
            raise self.error(token.line, f"expected {what} (a finite float32 number), found {token.text!r}")
        return value

    # hierarchy ---------------------------------------------------------------------------------------
    def parse(self):
        token = self.next("'HIERARCHY'")
        if token.text.upper() != "HIERARCHY":
            raise self.error(
                token.line, f"expected 'HIERARCHY' (a BVH file starts with it), found {token.text!r}"
            )
        root_token = self.expect("ROOT", "'ROOT <name>'")
        names: list[str] = []
        parents: list[int] = []
        offsets: list[tuple[float, float, float]] = []
        channels: list[tuple[str, ...]] = []
        channel_lines: list[int] = []
        end_sites: list[bool] = []
        first_seen: dict[str, int] = {}
        stack: list[tuple[int, int]] = []  # (joint index, line of its '{')
        kind, keyword_line = "ROOT", root_token.line
        while True:
            if kind is not None:  # parse a joint body: name, '{', OFFSET, [CHANNELS]
                if kind == "End Site":
                    parent = stack[-1][0]
                    name = names[parent] + END_SITE_SUFFIX
                else:
                    name_token = self.next(f"a joint name after {kind}")
                    if name_token.line != keyword_line or name_token.text in "{}":
                        raise self.error(keyword_line, f"expected a joint name after {kind} on the same line")
                    name = name_token.text
                    while not name_token.last_on_line and self.peek().text != "{":
                        name_token = self.next("")
                        name += " " + name_token.text  # a name with spaces, as some exporters write
                    parent = stack[-1][0] if stack else -1
                if name in first_seen:
                    raise self.error(
                        keyword_line,
                        f"duplicate joint name {name!r} (first defined on line {first_seen[name]})",
                    )
                first_seen[name] = keyword_line
                brace = self.expect("{", f"'{{' opening {kind} {name!r}")
                self.expect("OFFSET", f"'OFFSET x y z' of {name!r}")
                offset = tuple(self.number(f"OFFSET {axis} of {name!r}") for axis in _AXES)
                joint_channels: tuple[str, ...] = ()
                channels_line = brace.line
                if kind != "End Site":
                    token = self.peek()
                    if token is not None and token.text.upper() == "CHANNELS":
                        channels_token = self.next("CHANNELS")
                        channels_line = channels_token.line
                        joint_channels = self.channel_list(name, channels_line)
                names.append(name)
                parents.append(parent)
                offsets.append(offset)  # type: ignore[arg-type]
                channels.append(joint_channels)
                channel_lines.append(channels_line)
                end_sites.append(kind == "End Site")
                stack.append((len(names) - 1, brace.line))
                kind = None
            # inside an open joint: children or its closing brace
            joint, brace_line = stack[-1]
            what = (
                f"'}}' closing the end site of {names[parents[joint]]!r} (opened on line {brace_line})"
                if end_sites[joint]
                else f"'JOINT <name>', 'End Site' or '}}' closing {names[joint]!r} "
                f"(opened on line {brace_line})"
            )
            token = self.next(what)
            word = token.text.upper()
            if word == "}":
                stack.pop()
                if not stack:
                    break
            elif word == "JOINT" and not end_sites[joint]:
                kind, keyword_line = "JOINT", token.line
            elif word == "END" and not end_sites[joint]:
                site = self.next("'Site' after 'End'")
                if site.text.upper() != "SITE" or site.line != token.line:
                    raise self.error(token.line, f"expected 'End Site', found 'End {site.text}'")
                kind, keyword_line = "End Site", token.line
            else:
                raise self.error(token.line, f"expected {what}, found {token.text!r}")
        motion = self.next("'MOTION' after the hierarchy")
        if motion.text.upper() != "MOTION":
            if motion.text.upper() == "ROOT":
                raise self.error(motion.line, "a second ROOT: files with several skeletons are not supported")
            raise self.error(
                motion.line, f"expected 'MOTION' after the hierarchy's last '}}', found {motion.text!r}"
            )
        if not motion.last_on_line:
            raise self.error(motion.line, "expected 'MOTION' alone on its line")
        num_frames, frame_time = self.motion_header()
        return names, parents, offsets, channels, channel_lines, end_sites, num_frames, frame_time

    def channel_list(self, name: str, line: int) -> tuple[str, ...]:
        count_token = self.next(f"the channel count of {name!r}")
        if not (count_token.text.isascii() and count_token.text.isdigit()):
            raise self.error(line, f"expected the number of channels of {name!r}, found {count_token.text!r}")
        count = int(count_token.text)
        result = []
        for _ in range(count):
            token = self.next(f"{count} channel names for {name!r}")
            if token.text.lower() not in _CHANNEL_KINDS:
                raise self.error(
                    token.line,
                    f"unknown channel {token.text!r} of {name!r}; expected one of "
                    "Xposition Yposition Zposition Xrotation Yrotation Zrotation "
                    f"(CHANNELS says {count})",
                )
            result.append(token.text)
        lowered = [c.lower() for c in result]
        rotations = "".join(_CHANNEL_KINDS[c][0] for c in lowered if _CHANNEL_KINDS[c][1] == "rotation")
        positions = [c for c in lowered if _CHANNEL_KINDS[c][1] == "position"]
        if rotations and rotations not in kinematics.EULER_ORDERS:
            raise self.error(
                line,
                f"joint {name!r}: rotation channels {rotations!r} are not a rotation order; expected three "
                f"rotation channels, one per axis, in any order ({', '.join(kinematics.EULER_ORDERS)})",
            )
        if len(set(positions)) != len(positions):
            raise self.error(line, f"joint {name!r}: a position channel is repeated in {result}")
        return tuple(result)

    def motion_header(self) -> tuple[int, float]:
        frames_line = self._next_line("'Frames: <count>'")
        match = re.fullmatch(r"\s*frames\s*:\s*(\S+)\s*", frames_line[1], re.IGNORECASE)
        if match is None or not (match.group(1).isascii() and match.group(1).isdigit()):
            raise self.error(frames_line[0], f"expected 'Frames: <count>', found {frames_line[1].strip()!r}")
        num_frames = int(match.group(1))
        time_line = self._next_line("'Frame Time: <seconds>'")
        match = re.fullmatch(r"\s*frame\s+time\s*:\s*(\S+)\s*", time_line[1], re.IGNORECASE)
        frame_time = _to_float(match.group(1)) if match else None
        # 1 / frame_time must be finite too: a subnormal time (1e-320) would give an infinite frame rate.
        if frame_time is None or frame_time <= 0 or not math.isfinite(1.0 / frame_time):
            raise self.error(
                time_line[0],
                f"expected 'Frame Time: <seconds>' with a positive time, found {time_line[1].strip()!r}",
            )
        self.data_start = time_line[2]
        self.data_first_line = time_line[0] + 1
        return num_frames, frame_time

    def _next_line(self, expected: str) -> tuple[int, str, int]:
        for number, line, end in self.line_iter:
            self.last_line = number
            if line.strip():
                return number, line, end
        raise self.error(self.last_line, f"unexpected end of file; expected {expected}")


def _to_float(text: str) -> float | None:
    """A float from an ASCII decimal token that is finite in float32, else None.

    (Python's float() would also take '1_0', '١' and values that overflow the float32 arrays.)
    """
    if not text.isascii() or "_" in text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if abs(value) <= _FLOAT32_MAX else None


# -------------------------------------------------------------------------------------------- MOTION data
def _read_frames(text: str, start: int, first_line: int, num_frames: int, num_channels: int, source: str):
    """The MOTION block as float64 [num_frames, num_channels]; BvhError names the first bad line."""
    data = text[start:]
    blank = data.isspace() or not data
    if num_frames == 0 and blank:
        return np.zeros((0, num_channels))
    values, problem = None, "the numbers do not match the header"
    if num_frames and not blank:
        try:
            values = np.loadtxt(io.StringIO(data), dtype=np.float64, comments=None, ndmin=2)
        except ValueError as error:
            problem = str(error)
    if (
        values is not None
        and values.shape == (num_frames, num_channels)
        and np.all(np.abs(values) <= _FLOAT32_MAX)  # False for NaN too
    ):
        return values
    _locate_bad_frame(data, first_line, num_frames, num_channels, source)
    # Not reached for any input we know of: the scan finds whatever np.loadtxt rejects.
    raise BvhError(source, first_line, f"could not read the MOTION frames ({problem})")


def _locate_bad_frame(data: str, first_line: int, num_frames: int, num_channels: int, source: str) -> None:
    """Slow path: scan frame lines to raise a BvhError naming the first offending line."""
    frame, last_line = 0, first_line - 1
    for number, line, end in _lines(data, first_line=first_line):
        last_line = number
        tokens = line.split()
        if not tokens:
            continue
        frame += 1
        if frame > num_frames:
            total = frame + sum(1 for _, rest, _ in _lines(data, end) if rest.split())
            raise BvhError(
                source,
                number,
                f"{line.strip()[:40]!r} is frame line {frame}, past the {num_frames} that 'Frames: "
                f"{num_frames}' declares ({total} frame lines in all); if they are all frames, set the "
                "Frames line to their count, else remove what follows the last frame",
            )
        if len(tokens) != num_channels:
            truncated = len(tokens) < num_channels and not data[end:].strip()
            hint = " (the file looks truncated)" if truncated else ""
            raise BvhError(
                source,
                number,
                f"frame {frame} has {len(tokens)} values, expected {num_channels} (one per channel){hint}",
            )
        for column, token in enumerate(tokens):
            if _to_float(token) is None:
                raise BvhError(
                    source,
                    number,
                    f"frame {frame}, value {column + 1}: expected a finite (float32) number, found {token!r}",
                )
    if frame < num_frames:
        raise BvhError(  # at the file's last line (the Frame Time line when no frame line follows it)
            source,
            last_line,
            f"file truncated: 'Frames: {num_frames}' declared but only {frame} frame lines found; if the "
            f"file is whole, set its Frames line to {frame}",
        )


# -------------------------------------------------------------------------------------------------- API
def parse_bvh(text: str, source: str = "<string>") -> BvhMotion:
    """Parse the text of a BVH file. Raises BvhError naming `source` and the line on malformed input.

    Lines may end in LF, CRLF or a lone CR (classic Mac OS exporters).
    """
    text = text.lstrip("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    header = _Header(text, source)
    names, parents, offsets, channels, channel_lines, end_sites, num_frames, frame_time = header.parse()
    num_joints = len(names)

    # Column of every channel in a frame line.
    rotating, orders, rotation_columns = [], [], []
    position_columns = np.full((num_joints, 3), -1)
    column = 0
    for joint, joint_channels in enumerate(channels):
        rotation = []
        for name in joint_channels:
            axis, kind = _CHANNEL_KINDS[name.lower()]
            if kind == "rotation":
                rotation.append((axis, column))
            else:
                position_columns[joint, _AXES.index(axis)] = column
            column += 1
        if rotation:
            rotating.append(joint)
            orders.append("".join(axis for axis, _ in rotation))
            rotation_columns.append([c for _, c in rotation])
    num_channels = column
    if num_channels == 0:
        raise BvhError(source, channel_lines[0], "the hierarchy declares no CHANNELS; expected at least one")

    values = _read_frames(text, header.data_start, header.data_first_line, num_frames, num_channels, source)
    offsets_array = np.asarray(offsets, dtype=np.float64).reshape(num_joints, 3)

    def translations(joint: int) -> np.ndarray:  # [T, 3]: channels where present, else the OFFSET
        columns = position_columns[joint]
        out = np.broadcast_to(offsets_array[joint], (num_frames, 3)).copy()
        out[:, columns >= 0] = values[:, columns[columns >= 0]]
        return out

    root = 0
    root_translation = translations(root)
    translated = [j for j in range(1, num_joints) if (position_columns[j] >= 0).any()]
    joint_translations = np.zeros((num_frames, len(translated), 3))
    for slot, joint in enumerate(translated):
        joint_translations[:, slot] = translations(joint)

    euler = values[:, np.asarray(rotation_columns, dtype=np.int64).reshape(-1, 3)]  # [T, R, 3]
    euler32 = euler.astype(np.float32)
    rotating_array = np.asarray(rotating, dtype=np.int32)
    local = np.zeros((num_frames, num_joints, 3, 3), dtype=np.float32)
    still = np.setdiff1d(np.arange(num_joints), rotating_array)
    local[:, still] = np.eye(3, dtype=np.float32)
    for order in sorted(set(orders)):  # one vectorised call per distinct rotation order (BEAT: one)
        slots = np.asarray([n for n, o in enumerate(orders) if o == order])
        local[:, rotating_array[slots]] = _euler_to_matrix_view(euler32[:, slots], order)

    skeleton_offsets = offsets_array.copy()
    skeleton_offsets[root] = 0
    skeleton = Skeleton(
        names=tuple(names),
        parents=np.asarray(parents, dtype=np.int32),
        offsets=skeleton_offsets,
        end_sites=np.asarray(end_sites, dtype=bool),
    )
    return BvhMotion(
        skeleton=skeleton,
        channels=tuple(channels),
        frame_time=frame_time,
        euler_orders=tuple(orders),
        rotating_joints=rotating_array,
        euler_degrees=euler32,
        local_rotations=local,
        root_translation=root_translation.astype(np.float32),
        root_offset=offsets_array[root].astype(np.float32),
        translated_joints=np.asarray(translated, dtype=np.int32),
        joint_translations=joint_translations.astype(np.float32),
        source=source,
    )


def load_bvh(path: str | os.PathLike) -> BvhMotion:
    """Read and parse a BVH file (UTF-8, or Latin-1 where it is not valid UTF-8).

    A NUL byte (UTF-16 text, a binary file, or a file zero-filled by a crash) raises BvhError at its line.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    nul = raw.find(b"\0")
    if nul >= 0:
        raise BvhError(
            os.fspath(path),
            raw.count(b"\n", 0, nul) + 1,
            f"a NUL byte at byte {nul}: this is not BVH text (UTF-16, or binary data?); expected a text file "
            "in UTF-8 or Latin-1",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return parse_bvh(text, source=os.fspath(path))


# -------------------------------------------------------------------------------------------------- writing
def format_bvh(
    skeleton: Skeleton,
    euler_degrees: np.ndarray,
    root_translation: np.ndarray,
    frame_time: float,
    order: str = "ZXY",
    root_offset: np.ndarray | None = None,
    decimals: int = 6,
) -> str:
    """The text of a BVH file that `parse_bvh` reads back as the same skeleton and motion.

    skeleton: J joints in a depth-first order (each joint followed by its whole subtree) in which an end
      site, if any, is the last child of its parent and is named `<parent>_Nub`, as `parse_bvh` returns
      them (BEAT's order). End sites are written as `End Site`; every other joint gets three rotation
      channels in `order` (the root also Xposition Yposition Zposition before them).
    euler_degrees: [T, R, 3], R = the joints that are not end sites, in skeleton order; the angles of
      each joint in `order` (intrinsic, degrees, the convention of `parse_bvh`).
    root_translation: [T, 3], the translation given to forward kinematics; the root's position channels
      hold root_translation + skeleton.offsets[root] (its global position), so the file gives the same
      global positions (the reader then sets the root's offset to 0).
    frame_time: seconds per frame, written with full precision (1/120 -> 0.008333333333333333).
    root_offset: [3], the root's OFFSET as written (informative only: its channels replace it); by
      default skeleton.offsets[root].
    decimals: digits after the point of the channel values ('%.6f'); offsets are written with the
      shortest digits that give back the same float32.
    """
    num_joints, root = skeleton.num_joints, 0
    check_writable(skeleton)
    if order not in kinematics.EULER_ORDERS:
        raise ValueError(
            f"unknown rotation order {order!r}; expected one of {', '.join(kinematics.EULER_ORDERS)}"
        )
    if not (isinstance(decimals, numbers.Integral) and 0 <= decimals <= 15):
        raise ValueError(f"decimals must be an integer in [0, 15], got {decimals!r}")
    if not (isinstance(frame_time, numbers.Real) and math.isfinite(frame_time) and frame_time > 0):
        raise ValueError(f"frame_time must be a positive number of seconds, got {frame_time!r}")
    rotating = int(num_joints - skeleton.end_sites.sum())
    euler = np.asarray(euler_degrees, dtype=np.float64)
    if euler.ndim != 3 or euler.shape[1:] != (rotating, 3):
        raise ValueError(
            f"euler_degrees has shape {euler.shape}, expected [T, {rotating}, 3]: one angle triple per joint "
            f"that is not an end site ({rotating} of {num_joints}), in skeleton order"
        )
    translation = np.asarray(root_translation, dtype=np.float64)
    if translation.shape != (euler.shape[0], 3):
        raise ValueError(f"root_translation has shape {translation.shape}, expected [{euler.shape[0]}, 3]")
    offset = skeleton.offsets[root] if root_offset is None else np.asarray(root_offset, dtype=np.float32)
    if offset.shape != (3,) or not np.all(np.isfinite(offset)):
        raise ValueError(f"root_offset must be 3 finite numbers, got {root_offset!r}")

    values = np.concatenate(
        [
            translation + skeleton.offsets[root].astype(np.float64),
            euler.reshape(euler.shape[0], rotating * 3),
        ],
        axis=1,
    )
    bad = np.argwhere(~(np.abs(values) <= _FLOAT32_MAX))  # NaN, inf and float32 overflow
    if bad.size:
        frame, column = (int(i) for i in bad[0])
        if column < 3:
            what = "root_translation"
        else:
            slot = (column - 3) // 3
            what = f"euler_degrees[{frame}, {slot}] ({skeleton.names[skeleton.rotation_joints[slot]]!r})"
        raise ValueError(f"frame {frame}: {what} holds {values[frame, column]}; expected finite float32")

    rotation_channels = " ".join(f"{axis}rotation" for axis in order)
    lines = ["HIERARCHY"]
    open_joints: list[int] = []
    for joint in range(num_joints):
        parent = int(skeleton.parents[joint])
        while open_joints and open_joints[-1] != parent:
            open_joints.pop()
            lines.append("\t" * len(open_joints) + "}")
        indent = "\t" * len(open_joints)
        if joint == root:
            lines.append(f"ROOT {skeleton.names[joint]}")
        elif skeleton.end_sites[joint]:
            lines.append(f"{indent}End Site")
        else:
            lines.append(f"{indent}JOINT {skeleton.names[joint]}")
        joint_offset = offset if joint == root else skeleton.offsets[joint]
        lines += [f"{indent}{{", f"{indent}\tOFFSET {' '.join(_shortest_float32(v) for v in joint_offset)}"]
        if joint == root:
            lines.append(f"{indent}\tCHANNELS 6 Xposition Yposition Zposition {rotation_channels}")
        elif not skeleton.end_sites[joint]:
            lines.append(f"{indent}\tCHANNELS 3 {rotation_channels}")
        open_joints.append(joint)
    while open_joints:
        open_joints.pop()
        lines.append("\t" * len(open_joints) + "}")
    lines += ["MOTION", f"Frames: {values.shape[0]}", f"Frame Time: {np.format_float_positional(frame_time)}"]

    buffer = io.StringIO()
    buffer.write("\n".join(lines) + "\n")
    # Rounding first turns tiny negatives into 0.0 (+ 0.0 clears the sign), so no '-0.000000' is written.
    np.savetxt(buffer, np.round(values, decimals) + 0.0, fmt=f"%.{decimals}f", delimiter=" ")
    return buffer.getvalue()


def write_bvh(
    path: str | os.PathLike,
    skeleton: Skeleton,
    euler_degrees: np.ndarray,
    root_translation: np.ndarray,
    frame_time: float,
    order: str = "ZXY",
    root_offset: np.ndarray | None = None,
    decimals: int = 6,
    overwrite: bool = False,
) -> str:
    """Write `format_bvh(...)` to `path` (UTF-8, '\\n' line ends) and return the path as a string.

    An existing file raises FileExistsError unless `overwrite` (then it is replaced atomically).
    """
    text = format_bvh(skeleton, euler_degrees, root_translation, frame_time, order, root_offset, decimals)
    return write_text_file(path, text, overwrite)


def _shortest_float32(value) -> str:
    """The shortest positional decimal that reads back as the same float32 ('6.269896', '0')."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def _reorder_advice(skeleton: Skeleton) -> str:
    """How to list a skeleton of one root as a BVH file does (`Skeleton.depth_first_order`)."""
    return (
        "reorder the skeleton depth-first, skeleton.reordered(skeleton.depth_first_order), with its "
        f"features' joints in that order, {skeleton.depth_first_order.tolist()} (local rotations "
        "[..., order, :, :])"
    )


def check_writable(skeleton: Skeleton) -> None:
    """ValueError unless the joints are in an order a BVH file can list, with writable names."""
    names, parents = skeleton.names, skeleton.parents.tolist()
    if parents[0] != -1 or parents.count(-1) != 1:
        one = parents.count(-1) == 1  # (listed after other joints: reordering puts it first)
        raise ValueError(
            f"a BVH file holds one skeleton whose root comes first; this one has roots at "
            f"{[j for j, p in enumerate(parents) if p == -1]}"
            + (f": {_reorder_advice(skeleton)}" if one else "")
        )
    if skeleton.end_sites[0]:
        raise ValueError(f"the root {names[0]!r} is marked as an end site; a BVH root must have channels")
    children: list[list[int]] = [[] for _ in names]
    for joint, parent in enumerate(parents[1:], start=1):
        children[parent].append(joint)
    visit, order = [0], []
    while visit:
        joint = visit.pop()
        order.append(joint)
        visit.extend(reversed(children[joint]))
    for position, joint in enumerate(order):
        if joint != position:
            raise ValueError(
                f"joint {position} ({names[position]!r}) is not where a depth-first listing puts it (joint "
                f"{joint}, {names[joint]!r}, belongs there); a BVH file lists each joint right after its "
                f"parent's previous subtree: {_reorder_advice(skeleton)}"
            )
    for joint, kids in enumerate(children):
        sites = [kid for kid in kids if skeleton.end_sites[kid]]
        if sites and (len(sites) > 1 or sites[0] != kids[-1]):
            listed = f": {_reorder_advice(skeleton)}" if len(sites) == 1 else ""  # (a site listed early)
            raise ValueError(
                f"joint {joint} ({names[joint]!r}) must have at most one end site, as its last child; "
                f"its children are {[names[kid] for kid in kids]}{listed}"
            )
        if sites and names[sites[0]] != names[joint] + END_SITE_SUFFIX:
            raise ValueError(
                f"end site {sites[0]} is named {names[sites[0]]!r}, but a BVH file gives end sites no "
                f"name and parse_bvh calls it {names[joint] + END_SITE_SUFFIX!r}; rename it so the file "
                "reads back as the same skeleton"
            )
    for joint, name in enumerate(names):
        if not skeleton.end_sites[joint] and (" ".join(name.split()) != name or set(name) & set("{}")):
            raise ValueError(
                f"joint {joint}'s name {name!r} cannot be written to a BVH file; expected no braces, no "
                "leading, trailing or repeated whitespace and no line breaks"
            )
