"""Raw BEAT (BVH + TextGrid per recording) -> the prepared motion-text layout, cached.

Each recording's motion is resampled to the output frame rate and encoded whole in the chosen
representation; its transcript is cut into sentences at pauses of at least `min_pause_s`, and each
sentence becomes a clip whose caption is its words. Recordings (never clips) are assigned to
train/val/test by a seeded hash of their name, so no recording straddles two splits. All recordings share
the first one's joints and parents; one that lists sibling joints in another order is read in the first
one's order. Recordings whose up axis is not Y (`data.up_axis`) are turned to Y up as they are read, since
sampling stands figures on the ground along Y and animations draw Y upwards. Statistics come from the
training clips only. The output folder is a cache: re-running with
the same inputs and options is a no-op, and a folder made from other inputs or options is never
overwritten. Inputs found unchanged by content under new times (a copied raw folder) have those times
remembered in the cache's `inputs_seen.json`, so the next run does not read them again.

Errors: every problem with the raw files, the output folder or the `data` fields raises a `UserError`
naming the file or field (a missing input: `MissingInputError`, also a FileNotFoundError; an output
folder that is not our cache: `OccupiedFolderError`, also a FileExistsError; a damaged cache or
inconsistent recordings: `DatasetError`). Recordings that cannot be read (a malformed BVH or TextGrid:
`BvhError` / `TextGridError` with its line; another hierarchy) do not stop the reading of the others: one
`DatasetError` names them all (up to MAX_UNREADABLE) and nothing is written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jax
import numpy as np

from motion_ddpm_jax import representation
from motion_ddpm_jax.config import listed
from motion_ddpm_jax.data import bvh, motion_text, textgrid
from motion_ddpm_jax.data.motion_text import DatasetError
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.files import sha256_of, staged_file
from motion_ddpm_jax.skeleton import Skeleton

FRAME_BUCKET = 1024  # encode recordings padded to a multiple of this many frames: one compile per bucket
OVERRUN_WARNING_S = 1.0  # warn of a recording whose words run this far past the end of its motion
# Beside dataset.json: [size, mtime_ns] of inputs found unchanged by their sha256 under new times (a copied
# raw folder), so that later runs match them by their times alone. Apart from dataset.json, which
# fgd.dataset_fingerprint hashes whole: new times there would make a trained FGD autoencoder refuse
# the data.
SEEN_FILE = "inputs_seen.json"
SEEN_FORMAT = "motion-ddpm-jax/inputs-seen/1"
SEEN_PER_FILE = 8  # times kept per input: one per copy of the raw folder (each host's scratch copy)
RACY_NS = 2 * 10**9  # a file modified this close to its hashing is read again next time (2 s: FAT's clock)
# Rotations (proper, det +1) taking a recording whose up axis is the key to Y up, the axis sampling stands
# figures on and animations draw upwards (BEAT's and the BVH convention): Z up (x, y, z) -> (x, z, -y), so a
# figure facing -Y (Blender's front) faces +Z as BEAT's do; X up (x, y, z) -> (-y, x, z).
TO_Y_UP = {
    "y": np.eye(3),
    "z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
    "x": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


# Preparation reads on past a recording it cannot read, naming all in one error; at this many it stops
# (a systematic mistake, a wrong data.textgrid_tier say, would otherwise read every recording first).
MAX_UNREADABLE = 10


class MissingInputError(UserError, FileNotFoundError):
    """A raw input folder or file that preparation needs is not there."""


class OccupiedFolderError(UserError, FileExistsError):
    """The output folder holds something other than this cache; it is left alone."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the prepared output besides the input files."""

    representation: str = "positions"
    fps: float = 60.0
    min_pause_s: float = 0.5
    min_clip_s: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    std_floor: float = 1e-2
    pause_labels: str = ""  # labels of pauses besides blank ones, comma-separated, any case: "sil,sp"
    textgrid_tier: str = ""  # the word tier's name; "" = the IntervalTier named 'words', else the first one
    up_axis: str = "y"  # the recordings' up axis; "z" or "x" turns them to Y up as they are read
    joint_order: str = ""  # a skeleton.json (or a prepared folder holding it): the joints' order

    def __post_init__(self):
        if self.up_axis not in TO_Y_UP:
            raise UserError(
                f"data.up_axis is {self.up_axis!r}; expected the recordings' up axis, one of "
                f"{', '.join(TO_Y_UP)} (lower case; the data are turned to Y up as they are prepared)"
            )
        for field in ("pause_labels", "textgrid_tier", "joint_order"):
            if not isinstance(getattr(self, field), str):
                raise UserError(f"data.{field} is {getattr(self, field)!r}; expected a string")
        if self.representation not in representation.REPRESENTATIONS:
            raise UserError(
                f"data.representation is {self.representation!r}; raw BEAT can be prepared as one of "
                f"{representation.REPRESENTATIONS}"
            )
        if not (
            self.val_fraction >= 0 and self.test_fraction >= 0 and self.val_fraction + self.test_fraction < 1
        ):
            raise UserError(
                f"data.val_fraction ({self.val_fraction}) and data.test_fraction ({self.test_fraction}) "
                "must be >= 0 and sum to less than 1"
            )

    def pause_label_set(self) -> frozenset[str]:
        """`pause_labels` as the keys `textgrid.tier_words` compares (blanks collapsed, lower case)."""
        return frozenset(textgrid.label_key(label) for label in self.pause_labels.split(",") if label.strip())


@dataclasses.dataclass(frozen=True)
class Sentence:
    start_s: float
    end_s: float
    words: tuple[str, ...]


def find_recordings(raw_root: Path) -> list[tuple[Path, Path]]:
    """(bvh, TextGrid) pairs under `raw_root` (any depth), sorted. Extensions are matched in any case
    (`.bvh`, `.BVH`; `.TextGrid`, `.textgrid`), and a TextGrid's name matches its BVH's in any case, as it
    does on a case-insensitive file system. A BVH without its TextGrid, with two of them (names differing in
    case only), or two BVHs of the same name (the recording's name, in any case) is an error."""
    if not raw_root.is_dir():
        raise MissingInputError(
            f"data.raw_root: {raw_root} is not a folder (expected the BEAT release layout)"
        )
    # The files of each folder; os.walk follows symlinked folders (a speaker linked in), rglob does not.
    files_in: dict[Path, list[str]] = {
        Path(folder): names for folder, _, names in os.walk(raw_root, followlinks=True)
    }
    found = (
        folder / name for folder, names in files_in.items() for name in names if name.lower().endswith(".bvh")
    )
    pairs = []
    named: dict[str, Path] = {}
    for motion_path in sorted(found):
        key = motion_path.stem.casefold()  # clip files of Take1 and take1 are one file on macOS or Windows
        if key in named:
            raise DatasetError(
                f"{named[key]} and {motion_path}: two recordings named {motion_path.stem!r} (names are "
                "compared regardless of case); recording file names must be unique across data.raw_root "
                f"{raw_root} (clip ids are <name>_<k>): rename them (with their TextGrids), e.g. prefix the "
                "speaker "
                f"({motion_path.parent.name}_{motion_path.name})"
            )
        named[key] = motion_path
        pairs.append((motion_path, _transcript_of(motion_path, files_in[motion_path.parent])))
    if not pairs:
        raise MissingInputError(
            f"data.raw_root: no .bvh files under {raw_root} (the extension in any case; expected the BEAT "
            "release layout)"
        )
    return pairs


def _transcript_of(motion_path: Path, names: list[str]) -> Path:
    """The TextGrid beside `motion_path` among its folder's file `names`: `<stem>.TextGrid`, in any case."""
    wanted = f"{motion_path.stem}.TextGrid"
    found = sorted(
        motion_path.parent / name
        for name in names
        if name.casefold() == wanted.casefold() and (motion_path.parent / name).is_file()
    )
    if not found:
        raise MissingInputError(
            f"{motion_path}: no transcript beside it (expected {wanted}); every BEAT recording needs its "
            "word alignment, named as the recording with the extension .TextGrid (in any case)"
        )
    if len(found) > 1:
        raise DatasetError(
            f"{motion_path}: {len(found)} transcripts beside it whose names differ in case only "
            f"({', '.join(path.name for path in found)}); expected one TextGrid per recording: remove or "
            "rename the others"
        )
    return found[0]


def sentences(words: list[tuple[float, float, str]], min_pause_s: float) -> list[Sentence]:
    """Group time-ordered words into sentences, cutting wherever the silence between two is >= min_pause_s
    (to `textgrid.PAUSE_TOLERANCE_S`: a pause written as 0.07 -> 0.57 is one of 0.5 s)."""
    groups: list[list[tuple[float, float, str]]] = []
    for word in words:
        if groups and word[0] - groups[-1][-1][1] < min_pause_s - textgrid.PAUSE_TOLERANCE_S:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [Sentence(g[0][0], g[-1][1], tuple(w for _, _, w in g)) for g in groups]


def split_of(recording: str, names: list[str], options: PrepareOptions) -> str:
    """train | val | test for `recording`, among all recording `names`, by a seeded hash order."""
    order = sorted(names, key=lambda n: hashlib.sha256(f"{options.split_seed}:{n}".encode()).hexdigest())
    count = len(names)
    n_val, n_test = (round(count * f) for f in (options.val_fraction, options.test_fraction))
    if count >= 3:  # a small set still gets one recording in each requested split
        n_val = max(n_val, 1 if options.val_fraction > 0 else 0)
        n_test = max(n_test, 1 if options.test_fraction > 0 else 0)
    rank = order.index(recording)
    return "val" if rank < n_val else "test" if rank < n_val + n_test else "train"


@functools.cache
def _encoder(kind: str, structure: Skeleton):
    """A compiled encoder per representation and joint structure (offsets play no part in encoding)."""
    if kind == "positions":
        return jax.jit(lambda positions: representation.encode_positions(positions, structure))
    return jax.jit(lambda rotations, root: representation.encode_rotations(rotations, root, structure, kind))


def _pad_to_bucket(x: np.ndarray) -> np.ndarray:
    frames = -(-len(x) // FRAME_BUCKET) * FRAME_BUCKET
    return np.concatenate([x, np.repeat(x[-1:], frames - len(x), axis=0)]) if frames > len(x) else x


def encode_recording(motion: bvh.BvhMotion, options: PrepareOptions) -> np.ndarray:
    """One recording's features [T, D] at `options.fps` (padding frames at the end do not change them).

    The motion is turned to Y up from `options.up_axis` (`TO_Y_UP`; the skeleton alike: `turned_skeleton`).
    Raises BvhError for a recording without frames, whose features are not finite in float32, or (rotation
    layouts) with position channels on a non-root joint that move (`BvhMotion.with_static_offsets`), and
    UserError when data.fps does not divide the recording's frame rate.
    """
    if motion.num_frames == 0:
        raise bvh.BvhError(
            motion.source, 0, "'Frames: 0': the recording has no motion; expected at least one frame"
        )
    try:
        motion = motion.resampled(options.fps)
    except ValueError as error:
        raise UserError(f"{error} (data.fps is {options.fps:g})") from None
    turn = TO_Y_UP[options.up_axis].astype(np.float32)
    if options.representation == "positions":
        inputs = (motion.positions() @ turn.T,)
    else:  # rotations only: refuses non-root joints whose position channels move
        motion = motion.with_static_offsets()
        # Turning the world by M takes every global rotation G to M G M^T, hence every local one alike, and
        # every offset and the root's translation to M v: forward kinematics then gives M p.
        inputs = (turn @ motion.local_rotations @ turn.T, motion.root_translation @ turn.T)
    # Speakers differ in bone lengths only: zero offsets let them all share one compiled encoder.
    structure = dataclasses.replace(motion.skeleton, offsets=np.zeros_like(motion.skeleton.offsets))
    encode = _encoder(options.representation, structure)
    features = np.asarray(encode(*[_pad_to_bucket(x) for x in inputs]))[: motion.num_frames]
    bad = ~np.isfinite(features)
    if bad.any():
        frame = int(np.argwhere(bad)[0, 0])
        raise bvh.BvhError(
            motion.source,
            0,
            f"its {options.representation} features are not finite at frame {frame} (of {len(features)} at "
            f"{options.fps:g} fps): channel values or offsets too large for float32; expected a motion "
            "whose joint positions fit in float32",
        )
    return features


def turned_skeleton(motion: bvh.BvhMotion, options: PrepareOptions) -> Skeleton:
    """The skeleton `encode_recording` encodes `motion` on: the offsets its forward kinematics uses
    (`BvhMotion.skeleton_in_use`: position channels of non-root joints, not their OFFSETs) turned to Y up
    from `options.up_axis`."""
    skeleton = motion.skeleton_in_use()
    offsets = skeleton.offsets.astype(np.float64) @ TO_Y_UP[options.up_axis].T
    return dataclasses.replace(skeleton, offsets=offsets)


def _fingerprint_inputs(pairs: list[tuple[Path, Path]], raw_root: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(raw_root)): _size_and_time(p) for pair in pairs for p in pair}


def _size_and_time(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _hierarchy_difference(skeleton: Skeleton, reference: Skeleton, reference_name: str) -> str | None:
    """The first way `skeleton`'s joints differ from `reference`'s (read from `reference_name`), as a phrase
    in which 'its' is `skeleton`'s: a joint count, a joint one of them lacks, a joint's parent or whether it
    is an end site. None where both hold the same joints with the same parents, in any order."""
    names, reference_names = set(skeleton.names), set(reference.names)
    missing = [(j, name) for j, name in enumerate(reference.names) if name not in names]
    extra = [(j, name) for j, name in enumerate(skeleton.names) if name not in reference_names]
    parts = []
    if len(skeleton.names) != len(reference.names):
        parts.append(f"it has {len(skeleton.names)} joints, {reference_name} {len(reference.names)}")
    if missing:
        j, name = missing[0]
        more = f" ({len(missing)} such joints)" if len(missing) > 1 else ""
        parts.append(f"{reference_name}'s joint {j} {name!r} is not among its joints{more}")
    if extra:
        j, name = extra[0]
        more = f" ({len(extra)} such joints)" if len(extra) > 1 else ""
        parts.append(f"its joint {j} {name!r} is not among {reference_name}'s{more}")
    if parts:
        return "; ".join(parts)
    reference_index = {name: k for k, name in enumerate(reference.names)}
    for j, name in enumerate(skeleton.names):
        k = reference_index[name]
        parent, reference_parent = _parent_of(skeleton, j), _parent_of(reference, k)
        if parent != reference_parent:
            return f"its joint {j} {name!r} has parent {parent}, in {reference_name} {reference_parent}"
        if skeleton.end_sites[j] != reference.end_sites[k]:
            kinds = ("a joint", "an end site")
            return (
                f"its joint {j} {name!r} is {kinds[int(skeleton.end_sites[j])]}, in {reference_name} "
                f"{kinds[int(reference.end_sites[k])]}"
            )
    return None


def _parent_of(skeleton: Skeleton, joint: int) -> str:
    parent = int(skeleton.parents[joint])
    return repr(skeleton.names[parent]) if parent >= 0 else "none (it is the root)"


def _in_joint_order(motion: bvh.BvhMotion, names: tuple[str, ...]) -> bvh.BvhMotion:
    """`motion` with its joints listed in the order `names` (the same joints, parents and end sites as
    `motion.skeleton`, siblings in another order, as exporters reorder them): every per-joint field is
    permuted alike, giving the motion the file would hold had it listed its joints that way."""
    skeleton = motion.skeleton
    if skeleton.names == names:
        return motion
    old_index = {name: j for j, name in enumerate(skeleton.names)}
    order = np.asarray([old_index[name] for name in names])  # new joint j is old joint order[j]
    new_index = np.argsort(order)  # old joint i is new joint new_index[i]
    old_parents = skeleton.parents[order]
    parents = np.where(old_parents >= 0, new_index[np.maximum(old_parents, 0)], -1)
    rotating, translated = new_index[motion.rotating_joints], new_index[motion.translated_joints]
    rotation_slots, translation_slots = np.argsort(rotating), np.argsort(translated)
    return dataclasses.replace(
        motion,
        skeleton=dataclasses.replace(
            skeleton,
            names=tuple(names),
            parents=parents.astype(skeleton.parents.dtype),
            offsets=skeleton.offsets[order],
            end_sites=skeleton.end_sites[order],
        ),
        channels=tuple(motion.channels[j] for j in order),
        euler_orders=tuple(motion.euler_orders[slot] for slot in rotation_slots),
        rotating_joints=rotating[rotation_slots].astype(motion.rotating_joints.dtype),
        euler_degrees=motion.euler_degrees[:, rotation_slots],
        local_rotations=motion.local_rotations[:, order],
        translated_joints=translated[translation_slots].astype(motion.translated_joints.dtype),
        joint_translations=motion.joint_translations[:, translation_slots],
    )


def _with_joints_of(
    motion: bvh.BvhMotion, motion_path: Path, reference: Skeleton, reference_path: Path
) -> bvh.BvhMotion:
    """`motion` with its joints in the order of `reference` (the skeleton of the dataset's first recording,
    at `reference_path`); DatasetError naming the first difference where their joints, parents or end sites
    differ."""
    difference = _hierarchy_difference(motion.skeleton, reference, reference_path.name)
    if difference:
        raise DatasetError(
            f"{motion_path}: its joint hierarchy differs from {reference_path}'s: {difference}; all "
            "recordings of one dataset must share the skeleton's joints and parents (siblings may be listed "
            "in any order)"
        )
    return _in_joint_order(motion, reference.names)


def _common_skeleton(skeletons: list[Skeleton]) -> tuple[Skeleton, float]:
    """The dataset's skeleton (mean offsets over recordings whose joints are in one order) and the largest
    relative offset deviation."""
    offsets = np.stack([s.offsets for s in skeletons])
    mean = offsets.mean(0)
    scale = np.maximum(np.linalg.norm(mean, axis=-1), 1e-6)
    deviation = float((np.linalg.norm(offsets - mean, axis=-1) / scale).max())
    return dataclasses.replace(skeletons[0], offsets=mean.astype(np.float32)), deviation


def prepare_beat(
    raw_root: str | os.PathLike, out_root: str | os.PathLike, options: PrepareOptions, log=print
) -> motion_text.MotionTextDataset:
    """Prepare raw BEAT under `raw_root` into `out_root` (a cache folder owned by this function).

    Re-running with the same inputs and options returns the cached dataset. If `out_root` holds a
    dataset made from other inputs or options, or anything else, it is left alone and an error says
    what differs.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    pairs = find_recordings(raw_root)
    fingerprint = {"options": dataclasses.asdict(options), "inputs": _fingerprint_inputs(pairs, raw_root)}
    if out_root.exists() and (not out_root.is_dir() or any(out_root.iterdir())):
        return _reuse(out_root, fingerprint, raw_root, log)

    start = time.perf_counter()
    names = [motion_path.stem for motion_path, _ in pairs]
    min_frames = int(round(options.min_clip_s * options.fps))
    clips: dict[str, list[tuple[str, np.ndarray, tuple[str, ...]]]] = {s: [] for s in motion_text.SPLITS}
    skeletons: list[Skeleton] = []  # each recording's, its joints in the first recording's order
    hashes: dict[str, str] = {}
    tallies = {s: _SplitTally() for s in motion_text.SPLITS}
    tiers, markers = Counter(), Counter()
    first_tier_of: list[tuple[Path, list[str]]] = []  # TextGrids read by the fallback: their interval tiers
    overruns: list[tuple[Path, float, float]] = []  # recordings whose words run past the motion's end
    wordless: list[tuple[Path, textgrid.Tier]] = []  # TextGrids whose word tier gives no words
    half_turns: list[tuple[Path, list[str]]] = []  # axis_angle: recordings with joints jumping by > pi
    failed: list[tuple[Path, str]] = []  # recordings that could not be read, and why
    # The joints' order: data.joint_order's, else the first readable recording's; and its file.
    reference: tuple[Skeleton, Path] | None = _joint_order(options.joint_order)
    for motion_path, text_path in pairs:
        try:
            for path in (motion_path, text_path):  # before reading: the hash is of no later content
                hashes[str(path.relative_to(raw_root))] = sha256_of(path)
            motion = bvh.load_bvh(motion_path)
            if options.representation != "positions":  # still position channels become the joints' offsets
                motion = motion.with_static_offsets()
            if reference is not None:
                motion = _with_joints_of(motion, motion_path, *reference)
            skeleton_here = turned_skeleton(motion, options)
            features = encode_recording(motion, options)
            words, tier, fallback = _read_words(text_path, options)
        except (bvh.BvhError, textgrid.TextGridError, DatasetError, OSError) as error:  # (data.fps: stop)
            # Read on: one pass names every recording that cannot be read, not one per attempt.
            failed.append((motion_path, _reading_error(error, motion_path)))
            if len(failed) >= MAX_UNREADABLE:
                break
            continue
        if reference is None:
            reference = (motion.skeleton, motion_path)
        if options.representation == "axis_angle":
            jumping = half_turn_joints(features, motion.skeleton)
            if jumping:
                half_turns.append((motion_path, jumping))
        skeletons.append(skeleton_here)
        split = split_of(motion_path.stem, names, options)
        tally = tallies[split]
        tally.recordings.append(motion_path.stem)
        tiers[tier.name] += 1
        if fallback:
            first_tier_of.append((text_path, fallback))
        if not words:
            wordless.append((text_path, tier))
        markers.update(w for _, _, w in words if w.lower() in textgrid.SILENCE_MARKERS)
        duration = len(features) / options.fps
        if words and words[-1][1] > duration + OVERRUN_WARNING_S:
            overruns.append((text_path, words[-1][1], duration))
        spoken = sentences(words, options.min_pause_s)
        tally.sentences += len(spoken)
        for k, sentence in enumerate(spoken):
            first = max(int(np.floor(sentence.start_s * options.fps)), 0)
            end = int(np.ceil(sentence.end_s * options.fps))
            last = min(end, len(features))
            if last - first < min_frames:  # cut short by the motion's end, or short as spoken
                if first >= len(features) or end - first >= min_frames:
                    tally.past_end += 1
                else:
                    tally.short += 1
                continue
            clips[split].append(
                (f"{motion_path.stem}_{k:03d}", features[first:last], (" ".join(sentence.words),))
            )
    if failed:
        _raise_unreadable(failed, len(pairs), raw_root)
    now = _fingerprint_inputs(pairs, raw_root)
    changed = sorted(name for name, stat in now.items() if fingerprint["inputs"][name] != stat)
    if changed:
        raise DatasetError(
            f"{raw_root / changed[0]}: changed while it was being prepared ({len(changed)} file(s) in all); "
            "run --mode prepare again once the recordings are complete"
        )
    fingerprint["sha256"] = hashes
    skeleton, deviation = _common_skeleton(skeletons)
    splits = {
        name: motion_text.Split(
            name, tuple(c[0] for c in items), tuple(c[1] for c in items), tuple(c[2] for c in items)
        )
        for name, items in clips.items()
    }
    if not splits["train"].ids:
        raise DatasetError(
            f"{raw_root}: the train split ends with 0 clips, nothing to train on: "
            f"{_no_clips('train', tallies, options)}"
        )
    dropped, past_end = (sum(getattr(t, field) for t in tallies.values()) for field in ("short", "past_end"))
    info: dict[str, Any] = {
        "source": "beat",
        "representation": options.representation,
        "fps": options.fps,
        "recordings": len(pairs),
        "dropped_short_clips": dropped,
        "dropped_past_motion_end": past_end,
        "skeleton_offset_max_relative_deviation": deviation,
        "fingerprint": fingerprint,
    }
    # (its unit warnings are prepare's own, below: with the --config flags to set)
    dataset = motion_text.write_dataset(out_root, splits, info, skeleton, options.std_floor, unit_check=False)
    counts = dataset.info["counts"]
    past = f", {past_end} past the motion's end" if past_end else ""
    log(
        f"prepared {len(pairs)} recordings into {out_root} in {time.perf_counter() - start:.1f}s: "
        f"{counts['train']} train / {counts['val']} val / {counts['test']} test clips, "
        f"{dropped} shorter than {options.min_clip_s}s{past} dropped, {dataset.feature_size} features at "
        f"{options.fps:g} fps, words from tier "
        + ", ".join(
            f"{name!r}" + (f" ({n} recording{'s' * (n > 1)})" if len(tiers) > 1 else "")
            for name, n in tiers.items()
        )
    )
    for warning in _warnings(options, tallies, counts, markers, first_tier_of, overruns, wordless):
        log(f"warning: {warning}")
    for warning in _unit_warnings(skeletons, [path for path, _ in pairs], splits["train"].motions, options):
        log(f"warning: {warning}")
    if half_turns:
        log(f"warning: {_half_turn_warning(half_turns, len(pairs))}")
    return dataset


def half_turn_joints(features: np.ndarray, skeleton: Skeleton) -> list[str]:
    """The rotation joints of `skeleton` whose `axis_angle` features [T, 3 + 3K] jump by more than pi
    (the length of the 3-vector's change) between two consecutive frames. Axis-angle keeps each angle in
    [0, pi]: a joint turning through a half turn flips to the opposite axis, a change of about 2 pi, where
    a real rotation at any capture rate moves far less than pi in a frame."""
    if len(features) < 2:
        return []
    rotations = np.asarray(features, np.float64)[:, 3:].reshape(len(features), -1, 3)
    steps = np.linalg.norm(np.diff(rotations, axis=0), axis=-1).max(axis=0)
    return [
        skeleton.names[j] for j, step in zip(skeleton.rotation_joints, steps, strict=True) if step > np.pi
    ]


def _half_turn_warning(half_turns: list[tuple[Path, list[str]]], recordings: int) -> str:
    joints = sorted({name for _, names in half_turns for name in names})
    path, names = half_turns[0]
    return (
        f"{len(half_turns)} of {recordings} recordings have joints whose axis_angle features jump by more "
        f"than pi between two frames ({len(joints)} joint(s) in all: {', '.join(joints[:5])}"
        f"{', ...' if len(joints) > 5 else ''}; e.g. {path}: {', '.join(names[:5])}): axis-angle keeps each "
        "angle in [0, pi], so a joint turning through a half turn jumps by about 2 pi in feature space. The "
        "rotations decode right, but the losses and the normalisation statistics see the jump; prepare "
        "continuous features with --config.data.representation=rotation_6d (into a new data.root)"
    )


def _joint_order(value: str) -> tuple[Skeleton, Path] | None:
    """The skeleton whose joint order data.joint_order names (a skeleton.json, or a prepared data.root
    holding one), and its file; None for "" (the first recording's order). UserError naming the field where
    it does not read."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "skeleton.json"
    try:
        return Skeleton.load_json(path), path
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"data.joint_order={value}: {error}; expected a skeleton.json (a prepared dataset's: "
            "<data.root>/skeleton.json) or a prepared data.root folder holding one, whose joint order the "
            "recordings are read in"
        ) from None


def _reading_error(error: BaseException, motion_path: Path) -> str:
    """What went wrong reading one recording, naming its file (an error of this project names it
    already; an OSError names the file it could not open)."""
    if isinstance(error, OSError):
        return f"{error.filename or motion_path}: cannot be read: {error.strerror or error}"
    return str(error)


def _raise_unreadable(failed: list[tuple[Path, str]], total: int, raw_root: Path) -> None:
    """The error of a preparation that found recordings it cannot read (`failed`: file, why), raised
    after reading the others (up to MAX_UNREADABLE failures), so that one attempt names them all: each
    with its own error's message (a BvhError's or TextGridError's file and line)."""
    if len(failed) == 1:
        why = failed[0][1]
        if total == 1:
            raise DatasetError(why)
        raise DatasetError(
            f"{why} (the one recording of the {total} under data.raw_root={raw_root} that cannot be "
            f"prepared: fix it, or move it and its TextGrid out of data.raw_root)"
        )
    counted = (
        f"the first {len(failed)} found of the {total} recordings under data.raw_root={raw_root} that "
        "cannot be prepared (reading stopped there; "
        if len(failed) >= MAX_UNREADABLE
        else f"{len(failed)} of the {total} recordings under data.raw_root={raw_root} cannot be prepared ("
    )
    shown = "\n".join(f"  {why}" for _, why in failed)
    raise DatasetError(f"{counted}fix them, or move them and their TextGrids out of data.raw_root):\n{shown}")


def _unit_warnings(
    skeletons: list[Skeleton], paths: list[Path], train_motions, options: PrepareOptions
) -> list[str]:
    """Recordings whose bones are more than 2x longer or shorter than the median recording's (a folder
    mixing exporters in metres and centimetres would be averaged into one skeleton and trained in two
    units); a rest pose lying in y (the recordings' up axis is not `options.up_axis`); and a figure in
    metres or millimetres (`motion_text.figure_unit`), whose geometric loss (units^2)
    loss.geometric_weight weighs 10^4 times less, or 100 times more, than in centimetres, and in metres
    features in the data's unit (`motion_text.unit_warnings`) that vary less than a data.std_floor above
    the centimetres' default in metres (1e-4: in metres 1e-2 is a centimetre, more than a slow root moves
    in a frame; a feature that does not vary at all is floored in any unit, and not counted; at 1e-4 or
    below it is floored as much as in centimetres, so it is not warned of again)."""
    warnings = []
    sizes = np.array([s.bone_lengths().sum() for s in skeletons])  # (not the root's OFFSET: anything)
    ratios = sizes / max(float(np.median(sizes)), 1e-30)
    odd = [(path, ratio) for path, ratio in zip(paths, ratios, strict=True) if not 0.5 <= ratio <= 2.0]
    if odd:
        path, ratio = odd[0]
        warnings.append(
            f"{len(odd)} recording(s) have bones more than 2x longer or shorter than the median "
            f"recording's (e.g. {path}: {ratio:.3g}x): recordings in different units (metres, centimetres, "
            "millimetres) are trained as one; convert them to one unit (their OFFSETs and root position "
            "channels)"
        )
    skeleton = skeletons[0]
    if (spans := motion_text.lying_spans(skeleton)) is not None:
        turned = f" (data.up_axis={options.up_axis} turned to Y up)" if options.up_axis != "y" else ""
        warnings.append(
            f"the skeleton's rest pose spans {spans[0]:.3g} x {spans[1]:.3g} x {spans[2]:.3g} units along x, "
            f"y, z{turned}: it lies in y, so the recordings' up axis is probably not "
            f"{options.up_axis}. Samples are stood on the ground along y and animations draw y upwards: "
            "prepare again (into a new data.root) with --config.data.up_axis=<the axis from the feet to the "
            "head, z in most Z-up tools>"
        )
    fix = "prepare with --config.data.std_floor={floor}"
    floor = options.std_floor
    return warnings + motion_text.unit_warnings(
        skeleton, train_motions, floor, "data.std_floor", fix, options.representation
    )


def _read_words(
    text_path: Path, options: PrepareOptions
) -> tuple[list[tuple[float, float, str]], textgrid.Tier, list[str]]:
    """A recording's words (options.pause_labels left out), the tier they came from, and the TextGrid's
    interval tiers where the default rule took the first of several ([] otherwise)."""
    grid = textgrid.load_textgrid(text_path)
    try:
        tier = textgrid.word_tier(grid, options.textgrid_tier or None)
    except textgrid.TextGridError as error:
        if not options.textgrid_tier:
            raise
        raise textgrid.TextGridError(
            error.source, error.line, f"data.textgrid_tier: {error.detail}"
        ) from None
    interval_tiers = [t.name for t in grid.tiers if t.kind == "IntervalTier"]
    speakers = [n for n in interval_tiers if textgrid.is_word_tier_name(n) and n.strip().lower() != "words"]
    guessed = not textgrid.is_word_tier_name(tier.name) or len(speakers) > 1  # (several speakers' words)
    fallback = not options.textgrid_tier and len(interval_tiers) > 1 and guessed
    words = textgrid.tier_words(tier, options.pause_label_set())
    return words, tier, interval_tiers if fallback else []


@dataclasses.dataclass
class _SplitTally:
    """What one split's recordings gave: their names, sentences, and the sentences dropped (too short; past
    the motion's end)."""

    recordings: list[str] = dataclasses.field(default_factory=list)
    sentences: int = 0
    short: int = 0
    past_end: int = 0


def _no_words(text_path: Path, tier: textgrid.Tier) -> str:
    """A TextGrid whose word tier gives no words, and why, as a phrase."""
    why = (
        "only pauses named by data.pause_labels"
        if any(interval.text.strip() for interval in tier.intervals)
        else "blank intervals only"
        if tier.intervals
        else "no intervals"
    )
    return f"{text_path} (tier {tier.name!r}: {why})"


def _no_clips(split: str, tallies: dict[str, _SplitTally], options: PrepareOptions) -> str:
    """Why `split` ended with no clips and what would give it some, as a phrase ('its' = the split's)."""
    tally = tallies[split]
    if not tally.recordings:
        count = sum(len(t.recordings) for t in tallies.values())
        return (
            f"it got none of the {count} recordings (data.val_fraction {options.val_fraction:g} and "
            f"data.test_fraction {options.test_fraction:g} took them all); lower them"
        )
    recordings = f"its {len(tally.recordings)} recording(s) ({listed(tally.recordings)})"
    other_draw = "or prepare with another data.split_seed to draw other recordings for it"
    if not tally.sentences:
        return (
            f"{recordings} gave no sentences: their TextGrids give no words (data.min_clip_s plays no part); "
            f"give them their word alignments, {other_draw}"
        )
    dropped, fixes = [], []
    if tally.short:
        dropped.append(f"{tally.short} shorter than data.min_clip_s ({options.min_clip_s:g} s)")
        fixes.append("lower data.min_clip_s")
    if tally.past_end:
        dropped.append(f"{tally.past_end} past the end of their motion")
        fixes.append("check that each TextGrid is beside its own BVH")
    return (
        f"{recordings} gave {tally.sentences} sentence(s), all dropped: {', '.join(dropped)}; "
        + ", ".join([*fixes, other_draw])
    )


def _warnings(options, tallies, counts, markers, first_tier_of, overruns, wordless) -> list[str]:
    """What prepare warns of: requested splits left without recordings, TextGrids that give no words,
    splits left without clips, silence markers read as words, word tiers picked by the fallback,
    transcripts running past their motion."""
    warnings = []
    recordings = sum(len(t.recordings) for t in tallies.values())
    past_end = sum(t.past_end for t in tallies.values())
    for split, fraction in (("val", options.val_fraction), ("test", options.test_fraction)):
        if fraction > 0 and not tallies[split].recordings:
            warnings.append(
                f"data.{split}_fraction is {fraction:g} but the {split} split got none of the {recordings} "
                f"recordings (round({recordings} x {fraction:g}) = 0; from 3 recordings on, each requested "
                f"split gets at least one): prepare 3 or more recordings, or set data.{split}_fraction=0"
            )
    if wordless:
        warnings.append(
            f"{len(wordless)} TextGrid(s) give no words, so their recordings give no clips: "
            + listed([_no_words(path, tier) for path, tier in wordless])
            + "; is the word tier another one (--config.data.textgrid_tier=<its name>), or the alignment "
            "missing?"
        )
    for split in ("val", "test"):
        if tallies[split].recordings and not counts[split]:
            warnings.append(f"the {split} split ends with 0 clips: {_no_clips(split, tallies, options)}")
    if markers:
        labels = sorted(markers, key=lambda label: (-markers[label], label))
        named = [label.strip() for label in options.pause_labels.split(",") if label.strip()]
        warnings.append(
            "intervals labelled as silence were read as words: "
            + ", ".join(f"{label!r} ({markers[label]} intervals)" for label in labels)
            + f"; if they are pauses, set --config.data.pause_labels={','.join(named + labels)}"
        )
    if first_tier_of:
        path, names = first_tier_of[0]
        warnings.append(
            f"{len(first_tier_of)} TextGrids have several interval tiers, none named 'words' (e.g. {path}: "
            f"{', '.join(map(repr, names))}); their words were read from the first, {names[0]!r}. If that is "
            "not the word tier, set --config.data.textgrid_tier=<its name>"
        )
    if overruns:
        path, words_end, motion_end = overruns[0]
        warnings.append(
            f"{len(overruns)} recordings have words more than {OVERRUN_WARNING_S:g} s after their motion "
            f"ends (e.g. {path}: words to {words_end:.2f} s, motion {motion_end:.2f} s; {past_end} sentences "
            "past the motion's end dropped in all); is each TextGrid beside its own BVH, and its Frame Time "
            "right?"
        )
    return warnings


def _reuse(out_root: Path, fingerprint: dict[str, Any], raw_root: Path, log) -> motion_text.MotionTextDataset:
    """The cache at `out_root` where it was prepared from these inputs and options, else an error saying
    what differs. Inputs it had to read to know them unchanged (new times) are remembered (`_remember`)."""
    info_path = out_root / "dataset.json"
    if not info_path.is_file():
        raise OccupiedFolderError(
            f"{out_root} exists but is not a prepared dataset; refusing to write into it. Point data.root at "
            f"a new folder"
        )
    try:
        previous = _mapping(motion_text.read_dataset_info(info_path).get("fingerprint"))
        recorded = _mapping(previous.get("options"))
        changed_options = (
            _changed_options(recorded, fingerprint["options"]) if recorded else fingerprint["options"]
        )
        seen = _read_seen(out_root / SEEN_FILE)
        what, by_content = _changed_inputs(previous, fingerprint["inputs"], raw_root, seen)
        if changed_options:
            named = "options " + ", ".join(f"data.{k}" for k in sorted(changed_options)) + " differ"
            if recorded:  # both values, as training's refusal names them (`_check_prepared_options`)
                named += ": prepared with " + _both_values(recorded, fingerprint["options"], changed_options)
            what.insert(0, named)
        if not what:
            dataset = motion_text.open_dataset(out_root)
    except DatasetError as error:
        raise DatasetError(
            f"{error}. {out_root} is a damaged prepared cache and is left as it is: delete it to prepare "
            "again, or point data.root at a new folder"
        ) from None
    if what:
        raise OccupiedFolderError(
            f"{out_root} holds a dataset prepared from other inputs or options ({'; '.join(what)}); it is "
            "left as it is. "
            + (  # options alone: the config can name the prepared ones (README: beat_rot's axis_angle)
                "Set those data.* fields to the prepared values to use it as it is, or point"
                if recorded and changed_options and len(what) == 1
                else "Point"
            )
            + " data.root at a new folder to prepare again, or delete that folder yourself"
        )
    if by_content:
        _remember(out_root, by_content, _mapping(previous.get("sha256")), log)
    return dataset


def _changed_inputs(
    previous: dict[str, Any],
    inputs: dict[str, list[int]],
    raw_root: Path,
    seen: dict[str, tuple[str, list[list[int]]]],
) -> tuple[list[str], dict[str, list[int]]]:
    """What differs between the input files a cache was prepared from (`previous`, its fingerprint) and
    `inputs` ([size, mtime_ns] per file), as phrases ([] if nothing); and the files read to know that,
    with their [size, mtime_ns], to remember. A file of the recorded size but another mtime (copied,
    cloned) is unchanged if its content has the recorded sha256: known without reading it where `seen`
    (`_read_seen`) holds its [size, mtime_ns] for that sha256, else read. A file read is not to be
    remembered where its times moved while it was read or are within RACY_NS of it (a write in the same
    clock tick would leave them as they are)."""
    recorded, hashes = _mapping(previous.get("inputs")), _mapping(previous.get("sha256"))
    by_content: dict[str, list[int]] = {}

    def changed(name: str) -> bool:
        old, new = recorded[name], inputs[name]
        if old == new:
            return False
        if not (isinstance(old, list) and old[:1] == new[:1] and name in hashes):
            return True
        if seen.get(name, ("", []))[0] == hashes[name] and new in seen[name][1]:
            return False
        reading = time.time_ns()
        if hashes[name] != sha256_of(raw_root / name):
            return True
        if new[1] < reading - RACY_NS and _size_and_time(raw_root / name) == new:
            by_content[name] = new
        return False

    what = []
    for names, phrase in (
        (
            [k for k in inputs if k in recorded and changed(k)],
            "changed since it was prepared (size or content; e.g.",
        ),
        ([k for k in inputs if k not in recorded], "added (e.g."),
        ([k for k in recorded if k not in inputs], "removed (e.g."),
    ):
        if names:
            what.append(f"{len(names)} input file{'s' * (len(names) > 1)} {phrase} {min(names)})")
    return what, by_content


def _read_seen(path: Path) -> dict[str, tuple[str, list[list[int]]]]:
    """The record `path` (SEEN_FILE) as {input: (sha256, its [size, mtime_ns] seen with that content)};
    {} where it is missing, unreadable or not ours: it only spares reading files again, so a damaged one
    costs that read, never a wrong answer."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("format") != SEEN_FORMAT:
        return {}
    seen = {}
    for name, entry in _mapping(record.get("files")).items():
        sha, times = _mapping(entry).get("sha256"), _mapping(entry).get("times")
        if isinstance(sha, str) and isinstance(times, list):
            seen[name] = (sha, [t for t in times if isinstance(t, list) and len(t) == 2])
    return seen


def _remember(out_root: Path, by_content: dict[str, list[int]], hashes: dict[str, Any], log) -> None:
    """Add the [size, mtime_ns] of the inputs `by_content` (read and found to have their recorded sha256,
    `hashes`) to the cache's SEEN_FILE, so later runs know them unchanged without reading them.

    dataset.json is left as it is (fgd.dataset_fingerprint hashes it whole). Written to a staged file,
    then os.replace: the record is whole or as it was, even where several processes write it at once (the
    times one of them adds may then be lost: a later run reads those files again). A record that cannot be
    written (a read-only folder or mount, no permission, a full disk) is said, and the run goes on."""
    path = out_root / SEEN_FILE
    seen = _read_seen(path)  # what other copies of the raw folder (other hosts) added: kept
    for name, stat in by_content.items():
        sha, times = seen.get(name, ("", []))
        earlier = [t for t in times if t != stat] if sha == hashes[name] else []
        seen[name] = (hashes[name], [stat, *earlier][:SEEN_PER_FILE])
    files = {  # an entry for another sha256 than dataset.json records (stale) is dropped
        name: {"sha256": sha, "times": times}
        for name, (sha, times) in sorted(seen.items())
        if hashes.get(name) == sha
    }
    record = {"format": SEEN_FORMAT, "files": files}
    size = sum(stat[0] for stat in by_content.values())
    shown = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    count = f"{len(by_content)} input file{'s' * (len(by_content) > 1)} ({shown})"
    try:
        with staged_file(path) as staging:
            staging.write_text(json.dumps(record, separators=(",", ":")) + "\n", encoding="utf-8")
            os.replace(staging, path)
    except OSError as error:
        log(
            f"warning: {count} matched the prepared cache by content under new times, but their times could "
            f"not be recorded in {path} ({error.strerror or error}): every run will read them again. Make "
            f"{out_root} writable once (the next run records them), or prepare again into a folder you own "
            "(--config.data.root=<new folder>)"
        )
        return
    log(
        f"{count} matched the prepared cache by content under new times (copied since it was prepared); "
        f"their times are recorded in {path}, so later runs do not read them again"
    )


def _recorded_option(recorded: dict[str, Any], name: str) -> Any:
    """A cache's recorded value of option `name`; one it lacks (recorded before the option existed) is the
    option's default, which keeps what was done before."""
    if name in recorded:
        return recorded[name]
    return json.loads(json.dumps(dataclasses.asdict(PrepareOptions())))[name]


def _both_values(recorded: dict[str, Any], options: dict[str, Any], names) -> str:
    """The options `names` with the cache's value and the config's (`options`, as JSON reads them back):
    one spelling for preparing (`_reuse`) and for training on (`_check_prepared_options`) a cache."""
    wanted = json.loads(json.dumps(options))
    return ", ".join(
        f"data.{k} {_recorded_option(recorded, k)!r} (the config: {wanted[k]!r})" for k in sorted(names)
    )


def _changed_options(recorded: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The fields of `options` (PrepareOptions as a dict) whose values differ from a cache's `recorded`
    ones (read back from its JSON record; a field it lacks counts as its default)."""
    wanted = json.loads(json.dumps(options))
    return [k for k in wanted if _recorded_option(recorded, k) != wanted[k]]


def _mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a dict (as a well-formed cache record holds), else {} (it then matches nothing)."""
    return value if isinstance(value, dict) else {}


def options_from_config(data_config) -> PrepareOptions:
    """PrepareOptions from the config's `data` section (an option the config does not hold yet takes its
    default, as `_recorded_option` reads a cache recorded before the option existed)."""
    return PrepareOptions(
        **{
            field.name: data_config[field.name]
            for field in dataclasses.fields(PrepareOptions)
            if field.name in data_config
        }
    )


def prepare_from_config(data_config, log=print) -> motion_text.MotionTextDataset:
    """`launch.py --mode prepare`: raw BEAT at data.raw_root -> the prepared cache at data.root."""
    for field in ("raw_root", "root"):
        if not data_config[field]:
            raise UserError(f"data.{field} is empty; set --config.data.{field}=<folder>")
    return prepare_beat(data_config.raw_root, data_config.root, options_from_config(data_config), log=log)


def would_prepare(data_config) -> bool:
    """Whether `dataset_from_config` would prepare data.root before reading it (data.source synthetic or
    beat, data.root given and not prepared yet): eval refuses such a build where it cannot be what it asks."""
    root = str(data_config.root)
    return (
        bool(root)
        and data_config.source in ("synthetic", "beat")
        and not (Path(root) / "dataset.json").is_file()
    )


def dataset_from_config(config, log=print) -> motion_text.MotionTextDataset:
    """The dataset a run trains on, preparing it first where the config says how.

    data.source: `synthetic` writes the demo's raw BEAT-format set into data.raw_root (once) and prepares
    it; `beat` prepares data.raw_root if data.root is not prepared yet; `prepared` opens data.root as it
    is (our layout, or a HumanML3D-layout folder).
    """
    data = config.data
    if not data.root:
        raise UserError("data.root is empty; set --config.data.root=<prepared dataset folder>")
    prepared = (Path(data.root) / "dataset.json").is_file()
    if data.source in ("synthetic", "beat") and not prepared and not str(data.raw_root).strip():
        raise MissingInputError(
            f"data.raw_root is empty and data.root {data.root} is not prepared; set --config.data.raw_root "
            "to the folder of the raw recordings (for data.source=synthetic: where the demo set is written)"
        )
    if data.source == "synthetic" and not prepared:
        from motion_ddpm_jax.data import synthetic

        raw = Path(data.raw_root)
        if raw.is_dir() and any(raw.iterdir()):  # write_demo_dataset checks it and writes nothing there
            log(
                f"data.root {data.root} is not prepared: preparing it from data.raw_root {data.raw_root}, "
                "which is not empty (a demo set written there before is checked and read as it is, not "
                "rewritten)"
            )
        else:
            log(
                f"data.root {data.root} is not prepared: writing the demo set into data.raw_root "
                f"{data.raw_root}, then preparing it"
            )
        try:
            synthetic.write_demo_dataset(data.raw_root, seed=data.split_seed)
        except OSError as error:
            if isinstance(error, UserError):  # its own message names the folder already
                raise
            if isinstance(error, FileExistsError) and error.strerror is None:  # a folder of other files
                raise UserError(
                    f"data.raw_root {data.raw_root} (where data.source=synthetic writes the demo set): "
                    f"{error}. Set --config.data.raw_root to a new or empty folder, or data.root to the "
                    "prepared data (--config.data.source=beat prepares recordings of your own there)"
                ) from None
            where = "" if hasattr(error, "_written") else f"{error.filename or data.raw_root}: "  # (named)
            raise UserError(
                f"{where}cannot write the demo set there ({error.strerror}); "
                "point --config.data.raw_root and --config.data.root at writable folders (or data.root at "
                "the prepared demo set)"
            ) from None
    if data.source in ("synthetic", "beat") and not prepared:
        if data.source == "beat" and not (data.raw_root and Path(data.raw_root).is_dir()):
            raise MissingInputError(
                f"data.root {data.root} is not prepared and data.raw_root {data.raw_root!r} is not a folder; "
                "if the prepared data moved, give its new place with --config.data.root=<folder>; else "
                "download BEAT and run `python launch.py --mode prepare --config <config> "
                "--config.data.raw_root=<BEAT folder>`"
            )
        prepare_from_config(data, log=log)
    elif data.source in ("synthetic", "beat"):
        _check_prepared_options(Path(data.root), options_from_config(data))
    elif data.source != "prepared":
        raise UserError(f"data.source is {data.source!r}; expected synthetic, beat or prepared")
    dataset = motion_text.open_dataset(
        data.root,
        fps=data.fps,
        min_length=data.min_motion_length,
        max_length=data.max_clip_length or None,
        std_floor=data.std_floor,
    )
    _check_config_describes(dataset, data)
    if note := _unused_floor_note(dataset, data):
        log(note)
    if floored := dataset.info.get("std_floored"):
        log(
            f"data.std_floor ({data.std_floor:g}) raised {floored} of the {dataset.feature_size} entries of "
            f"{Path(data.root) / 'Std.npy'} to it (the features are standardized by the floored std)"
        )
    return dataset


def _check_config_describes(dataset: motion_text.MotionTextDataset, data) -> None:
    """Refuse a config whose data.representation or data.fps is not what data.root holds (for
    data.source=prepared nothing else compares them: the run would train on the folder's features while its
    config, saved with every checkpoint, named others)."""
    wrong = []
    if dataset.representation != data.representation:
        wrong.append(f"data.representation is {data.representation!r}, the data {dataset.representation!r}")
    if not np.isclose(float(dataset.fps), float(data.fps), rtol=1e-6, atol=0.0):
        wrong.append(f"data.fps is {float(data.fps):g}, the data {float(dataset.fps):g}")
    if wrong:
        record = "dataset.json" if dataset.layout == "prepared" else f"a {dataset.layout} layout"
        raise UserError(
            f"data.root {dataset.root} ({record}) does not hold what the config names: {'; '.join(wrong)}. "
            "Set those fields to the data's values, or point data.root at the data the config describes"
        )


def _unused_floor_note(dataset: motion_text.MotionTextDataset, data) -> str | None:
    """data.std_floor floors the statistics where they are computed: by --mode prepare (data.source beat or
    synthetic, whose cache made with another floor is refused) and from a HumanML3D folder's Std.npy. A
    folder of our layout opened with data.source=prepared (write_dataset's) is read as written, floored
    at its dataset.json's std_floor: a data.std_floor set to another value than that and the default
    (1e-2, which every config holds unless set) does nothing, which this note says."""
    written = dataset.info.get("std_floor")
    if dataset.layout != "prepared" or data.source != "prepared" or not isinstance(written, int | float):
        return None
    asked = float(data.std_floor)
    if np.isclose(asked, PrepareOptions().std_floor, rtol=1e-9, atol=0) or np.isclose(
        asked, float(written), rtol=1e-9, atol=0
    ):
        return None
    again = (
        "prepare it again (into a new data.root) with --config.data.source=beat "
        f"--config.data.std_floor={asked:g}"
        if dataset.info.get("source") == "beat"
        else f"write it again with motion_text.write_dataset(..., std_floor={asked:g})"
    )
    return (
        f"note: data.std_floor={asked:g} is not used: the statistics of data.root {dataset.root} (std.npy) "
        f"were floored at {float(written):g} when it was written (its dataset.json's std_floor), and a "
        f"prepared folder is read as written; to floor them at {asked:g}, {again}"
    )


def _check_prepared_options(root: Path, options: PrepareOptions) -> None:
    """Refuse a prepared cache made with other `data.*` options than the config's (its fps,
    representation, sentence split, dataset split or statistics would not be the ones the config names).
    A cache whose record holds no options (not made by `prepare_beat`) is taken as it is."""
    info = motion_text.read_dataset_info(root / "dataset.json")  # a damaged record: DatasetError names it
    recorded = _mapping(_mapping(info.get("fingerprint")).get("options"))
    if not recorded:
        return
    wanted = dataclasses.asdict(options)
    changed = _changed_options(recorded, wanted)
    if changed:
        shown = _both_values(recorded, wanted, changed)
        raise OccupiedFolderError(
            f"data.root {root} holds a dataset prepared with other options: {shown}; it is left as it is. "
            "Set those fields to the prepared values, or point data.root at a new folder to prepare the "
            "data again with these"
        )
