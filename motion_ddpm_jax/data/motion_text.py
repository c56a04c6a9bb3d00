"""The prepared motion-text layout, and the MotionDiffuse / HumanML3D layout as published.

Our layout (written by `write_dataset`, read by `open_dataset`):
```
<root>/motions/<id>.npy      float32 [T, D], physical (not standardized) features
<root>/texts/<id>.txt        one caption per line (an empty file = one empty caption)
<root>/train.txt val.txt test.txt   one clip id per line
<root>/mean.npy std.npy      float32 [D], statistics of the training split (std floored)
<root>/skeleton.json         the skeleton (positions / axis_angle / rotation_6d data)
<root>/dataset.json          format, representation, fps, feature_size, counts, and what made it
<root>/inputs_seen.json      (a prepared BEAT cache) times of inputs matched by content; safe to delete
```
The HumanML3D layout (`new_joint_vecs/<id>.npy`, `texts/<id>.txt` with lines
`caption#word/POS ...#from#to`, `Mean.npy`, `Std.npy`, `train.txt` ...) is read as it is: a caption
with non-zero `from`/`to` (seconds) makes a sub-clip `<id>#<from>-<to>` of frames
int(from * 20):int(to * 20), as MotionDiffuse does (a NaN `from`/`to`, in any spelling, reads as 0).
Captions whose spans cut the same frames describe the same sub-motion: they make one sub-clip holding
each of them, as a clip's whole-motion captions make one clip (MotionDiffuse makes a clip per caption line,
named with a random letter; here every id is unique and the same on every load), and a span that cuts the
whole motion is one of the whole clip's captions. The spans are seconds at HumanML3D's 20 fps, so a split
with a span is refused under another `fps` (data.fps); a folder whose captions have none (KIT-ML's, 12.5
fps) is read at the fps given, with a warning where its feature size names a layout of another frame rate
(`humanml3d.layout`: 263 features at 20 fps, 251 at 12.5): a KIT-ML folder read at the default 20 fps
would play 1.6x too fast, its seconds all wrong, and nothing else would say so (resampled data may
mean it, so it is not refused). What it leaves out (listed ids without a motion file, clips whose motion
holds NaN or inf, clips and sub-clips outside the length limits, clips without a caption, spans written
backwards or starting past their clip's end) is recorded in `Split.dropped`, the spans that run past their
clip's end (cut there, as HumanML3D's loaders slice them) in `Split.spans_past_end`, and `describe_dropped`
words both for a log.
Opening the folder checks `Mean.npy` / `Std.npy` against the clips' feature size, refuses a clip id that
train.txt lists and val.txt or test.txt lists too (eval would score motion the model trained on), and
warns of a clip in train.txt whose mirrored copy (HumanML3D's `M<id>`) is in val.txt or test.txt:
HumanML3D's own split files keep the two in one split (its repository's test.txt lists its ids, then the
same ids as `M<id>`, as train_val.txt does), but a folder split by hand may not.

Errors: a missing, unreadable, malformed or inconsistent file raises `DatasetError` (a `UserError`) naming
the file (and line, where there is one) and what was expected. Arrays are read with `allow_pickle=False`:
an object array or a pickle is refused, never unpickled (unpickling can run code).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import tokenize
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax import files, humanml3d
from motion_ddpm_jax import representation as representation_lib
from motion_ddpm_jax.errors import ProjectWarning, UserError
from motion_ddpm_jax.skeleton import Skeleton

FORMAT = "motion-ddpm-jax/1"
SPLITS = ("train", "val", "test")
# What a dataset's `representation` may be: the feature layouts of representation.py, and HumanML3D's own.
REPRESENTATIONS = (*representation_lib.REPRESENTATIONS, "humanml3d")
# Why the HumanML3D loader leaves out something its split file lists (the keys of `Split.dropped`), with
# what `describe_dropped` counts and how it words the reason ({min} / {max}: the length limits in frames).
DROP_REASONS = {
    "no_motion": ("listed id", "with no motion file in new_joint_vecs/"),
    "non_finite": (
        "clip",
        "whose motion in new_joint_vecs/ holds NaN, inf or values beyond float32, sub-clips and all",
    ),
    "no_captions": ("clip", "with no caption (an empty caption file, or captions without words)"),
    "empty_caption": ("caption line", "with no words before its first '#' (the unconditional caption)"),
    "too_short": ("clip", "shorter than {min} frames, sub-clips and all"),
    "too_long": ("clip", "of {max} frames or more, sub-clips and all"),
    "short_sub_clip": ("sub-clip", "shorter than {min} frames"),
    "backwards_span": ("sub-clip", "whose span runs backwards, its from after its to"),
    "span_after_end": ("sub-clip", "whose span starts at or after its clip's end"),
}
# The frame rate of HumanML3D's motions, at which its caption spans (seconds) are cut into frames.
HUMANML3D_FPS = 20.0
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class DatasetError(UserError):
    """A dataset folder or one of its files is missing, malformed or inconsistent."""


class EmptySplitError(DatasetError):
    """A well-formed split that holds no clip: its file lists none, or loading left out every one."""


@dataclasses.dataclass(frozen=True)
class Split:
    """The clips of one split, in memory.

    motions: float32 [T_i, D] per clip, physical features; captions: one or more per clip.
    dropped: what loading left out, reason (a key of DROP_REASONS) -> the ids, in the split file's order
    (a sub-clip as `<id>#<from>-<to>`, once for all the spans that cut its frames); empty where nothing was
    (the prepared layout is loaded whole).
    spans_past_end: the caption spans (`<id>#<from>-<to>`, in the split file's order) whose `to` lies past
    their clip's last frame: cut at it, as HumanML3D's loaders slice motion[int(from * 20):int(to * 20)],
    and kept (a span from 0 becomes one of the whole clip's captions).
    drop_notes: what `describe_dropped` says of a dropped id besides its reason, where there is more to say
    (a motion holding NaN or inf: the first such value and where it lies), by id.
    """

    name: str
    ids: tuple[str, ...]
    motions: tuple[np.ndarray, ...]
    captions: tuple[tuple[str, ...], ...]
    dropped: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    spans_past_end: tuple[str, ...] = ()
    drop_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class MotionTextDataset:
    """An opened dataset folder: metadata and statistics in memory, clips loaded per split."""

    root: Path
    layout: str  # "prepared" | "humanml3d"
    representation: str  # positions | axis_angle | rotation_6d | humanml3d
    fps: float
    feature_size: int
    mean: np.ndarray
    std: np.ndarray
    skeleton: Skeleton | None
    info: Mapping[str, Any]
    min_length: int = 1  # HumanML3D layout: shorter clips are left out (the prepared layout: by training)
    max_length: int | None = None  # HumanML3D layout: clips of this many frames or more are left out

    def split(self, name: str) -> Split:
        """Load the clips of split `name` (train | val | test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        if self.layout == "humanml3d":
            return _load_humanml3d_split(self, name)
        path = self.root / f"{name}.txt"
        ids = _read_ids(path)
        if not ids:
            raise _empty_split_error(self, path, name)
        motions, captions = [], []
        for clip_id in ids:
            motions.append(_load_motion(self.root / "motions" / f"{clip_id}.npy", self.feature_size))
            captions.append(_read_captions(self.root / "texts" / f"{clip_id}.txt", clip_id))
        return Split(name, tuple(ids), tuple(motions), tuple(captions))

    def check_feature_size(self, expected: int, field: str = "model.input_feats") -> None:
        """Clear error when a configured feature size does not match the data (before any training)."""
        if int(expected) != self.feature_size:
            raise DatasetError(
                f"{field} is {expected} but the dataset at {self.root} has {self.feature_size} features per "
                f"frame ({self.representation}); set --config.{field}={self.feature_size} or use the dataset "
                f"the config was written for"
            )


def _empty_split_error(dataset: MotionTextDataset, path: Path, name: str) -> EmptySplitError:
    """The error for split file `path` listing no clips, with what fills it for the folder's layout: a
    raw BEAT preparation's split fractions, or ids to list (a HumanML3D or `write_dataset` folder)."""
    other = "" if name == "train" else "; or use another split (for --mode eval: --config.eval.split=train)"
    if dataset.layout == "prepared" and dataset.info.get("source") == "beat":
        fingerprint = dataset.info.get("fingerprint")
        options = fingerprint.get("options") if isinstance(fingerprint, dict) else None
        fraction = options.get(f"{name}_fraction") if isinstance(options, dict) else None
        recordings = dataset.info.get("recordings")
        if name == "train":
            hint = (
                "Prepared from raw BEAT, the train split is never empty (the file was changed since); "
                "prepare the dataset again into a new data.root"
            )
        elif fraction == 0:
            hint = (
                f"It was prepared from raw BEAT with data.{name}_fraction=0: prepare it again into a new "
                f"data.root with a non-zero data.{name}_fraction"
            )
        elif fraction is None or not isinstance(recordings, int):  # a record without its options
            hint = (
                f"Prepared from raw BEAT, a split gets whole recordings through a non-zero "
                f"data.{name}_fraction (at least one from 3 recordings or more): prepare it again into a new "
                "data.root"
            )
        elif recordings < 3:
            hint = (
                f"It was prepared from {recordings} raw BEAT recording(s), and a split gets whole "
                f"recordings: with fewer than 3, data.{name}_fraction may give it none. Prepare it again "
                "from more recordings"
            )
        else:
            hint = (
                f"It was prepared from raw BEAT, and the recordings data.{name}_fraction gave this split "
                "have no sentence of at least data.min_clip_s; prepare it again with another "
                "data.split_seed or a lower data.min_clip_s"
            )
    else:
        files = "new_joint_vecs/<id>.npy" if dataset.layout == "humanml3d" else "motions/<id>.npy"
        hint = f"List the ids of its clips in {path.name} (each with {files} and texts/<id>.txt)"
    return EmptySplitError(
        f"{path}: the {name} split lists no clips; expected one clip id per line. {hint}{other}"
    )


# ---------------------------------------------------------------- small readers


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of `path` (without a byte-order mark); DatasetError naming the file if it cannot be
    read or decoded."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.reason}); expected {what} in UTF-8"
        ) from None
    except OSError as error:
        raise DatasetError(f"{path}: cannot read {what} ({error.strerror or error})") from None


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file missing (expected one clip id per line)")
    return [line.strip() for line in _read_text(path, "the split file").splitlines() if line.strip()]


def _read_captions(path: Path, clip_id: str) -> tuple[str, ...]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: caption file missing for clip {clip_id!r} (expected this file, one caption a line)"
        )
    lines = [line.strip() for line in _read_text(path, f"the captions of clip {clip_id!r}").splitlines()]
    captions = tuple(line for line in lines if line)
    return captions or ("",)


def _load_array(path: Path, what: str) -> np.ndarray:
    """One array from a .npy file, never unpickling: DatasetError names the file and what is wrong.

    The header is read and checked first (signature, version, dtype, and that the data fill exactly the
    bytes its shape needs), so a damaged file gives a message here instead of whatever numpy's header
    parser or allocator would raise (TokenError, OverflowError, MemoryError for a garbled shape, ...).
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
            if magic == _NPY_MAGIC:
                handle.seek(0)
                shape, dtype, data_bytes = _read_npy_header(handle)
    except OSError as error:
        raise DatasetError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    except _HEADER_ERRORS as error:
        raise DatasetError(
            f"{path}: not a readable .npy array (damaged header: {error}); expected {what} saved by "
            "numpy.save"
        ) from None
    if magic.startswith(_ZIP_MAGIC):
        raise DatasetError(
            f"{path}: an .npz archive, not a .npy array; expected {what} saved by numpy.save (not savez)"
        )
    if magic != _NPY_MAGIC:
        if not magic:
            found = "the file is empty"
        elif magic[:1] == b"\x80":
            found = "it looks like a Python pickle, never loaded here: unpickling can run code"
        else:
            found = "it lacks the .npy signature"
        raise DatasetError(
            f"{path}: not a readable .npy array ({found}); expected {what} saved by numpy.save"
        )
    if dtype.hasobject:
        raise DatasetError(
            f"{path}: holds an array of Python objects (dtype {dtype}), which only unpickling could read; "
            f"arrays are loaded with allow_pickle=False (unpickling can run code). Expected {what} as a "
            "numeric array: save it with numpy.save(path, array.astype(numpy.float32))"
        )
    needed = math.prod(shape) * dtype.itemsize if all(n >= 0 for n in shape) else -1
    if needed != data_bytes:
        problem = "truncated" if 0 <= data_bytes < needed else "damaged"
        raise DatasetError(
            f"{path}: not a readable .npy array (its header says shape {shape} of {dtype}, {needed} bytes of "
            f"data, but the file holds {data_bytes}: it looks {problem}); expected {what} saved by numpy.save"
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # not expected after the checks above
        raise DatasetError(f"{path}: not a readable .npy array ({error}); the file looks damaged") from None


# What numpy's .npy header reader raises on garbled bytes (it parses the header as a Python literal).
_HEADER_ERRORS = (ValueError, TypeError, SyntaxError, OverflowError, EOFError, tokenize.TokenError)


def _read_npy_header(handle) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of data after the header) of the .npy file open in `handle`."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"format version {version}, expected 1.0 or 2.0")
    return tuple(shape), dtype, os.fstat(handle.fileno()).st_size - handle.tell()


@dataclasses.dataclass(frozen=True)
class _NonFinite:
    """The entries of an array that are not finite in float32 (NaN, inf, float32 overflow): how many, the
    first one's place ("frame 7, feature 4" / "feature 4") and its value as read."""

    count: int
    where: str
    value: Any


def _float32(
    path: Path, values: np.ndarray, what: str, expected: str
) -> tuple[np.ndarray, _NonFinite | None]:
    """`values` as float32 and its non-finite entries (None where every one is finite); DatasetError unless
    `values` is floating-point."""
    if not np.issubdtype(values.dtype, np.floating):
        raise DatasetError(f"{path}: {what} has dtype {values.dtype}; expected floating-point {expected}")
    with np.errstate(over="ignore"):
        result = values.astype(np.float32)
    bad = ~np.isfinite(result)
    if not bad.any():
        return result, None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    where = f"frame {first[0]}, feature {first[1]}" if len(first) == 2 else f"feature {first[0]}"
    return result, _NonFinite(int(bad.sum()), where, values[first])


def _finite_float32(path: Path, values: np.ndarray, what: str, expected: str, remedy: str = "") -> np.ndarray:
    """`values` as float32, or DatasetError naming the first non-finite entry (NaN, inf, float32 overflow),
    and then `remedy` where one is given."""
    result, bad = _float32(path, values, what, expected)
    if bad is not None:
        raise DatasetError(
            f"{path}: {what} has {bad.count} non-finite values (NaN, inf or beyond float32), the first "
            f"at {bad.where} ({bad.value}); expected finite {expected}{remedy and f'; {remedy}'}"
        )
    return result


def _read_motion(path: Path, feature_size: int, said_by: str) -> np.ndarray:
    """The motion [T, feature_size] of `path` in the dtype it was saved in (`_float32` checks that and its
    values); `said_by` names where feature_size comes from."""
    if not path.is_file():
        raise DatasetError(f"{path}: motion file missing")
    motion = _load_array(path, f"a motion [frames, {feature_size}]")
    if motion.ndim != 2 or motion.shape[1] != feature_size:
        raise DatasetError(
            f"{path}: motion has shape {motion.shape}; expected [frames, {feature_size}] {said_by}"
        )
    return motion


def _load_motion(path: Path, feature_size: int) -> np.ndarray:
    """The motion [T, feature_size] of a prepared dataset's `path`, float32; DatasetError where a value is
    not finite (the prepared layout is loaded whole, as its record counts it; the HumanML3D layout leaves
    such a clip out instead)."""
    motion = _read_motion(path, feature_size, "as dataset.json says")
    expected = f"values [frames, {feature_size}]"
    remedy = "to leave this clip out, remove its id from the split file that lists it"
    return _finite_float32(path, motion, "motion", expected, remedy)


def _load_stats(path: Path, feature_size: int, positive: bool = False) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: normalisation statistics missing")
    values = _load_array(path, f"{feature_size} normalisation statistics")
    if values.shape != (feature_size,):
        raise DatasetError(
            f"{path}: expected {feature_size} values (shape [{feature_size}]), got shape {values.shape}"
        )
    values = _finite_float32(path, values, "the statistics", f"values [{feature_size}]")
    if positive and not np.all(values > 0):
        feature = int(np.argmin(values > 0))
        raise DatasetError(
            f"{path}: standard deviation {values[feature]} at feature {feature}; expected positive values "
            "(write_dataset floors them at data.std_floor)"
        )
    return values


# ---------------------------------------------------------------- opening


def open_dataset(
    root: str | os.PathLike,
    fps: float | None = None,
    min_length: int = 1,
    max_length: int | None = None,
    std_floor: float = 1e-2,
) -> MotionTextDataset:
    """Open a prepared dataset folder, or a HumanML3D-layout folder as published.

    fps, min_length, max_length: for the HumanML3D layout, which does not record them (HumanML3D: 20 fps,
    MotionDiffuse keeps 40 <= T < 200; KIT: 12.5 fps); None: 20 fps. Its caption spans are seconds at 20
    fps, so loading a split with a span under another fps raises DatasetError (data.fps); a folder without
    spans (KIT-ML's) loads at any, with a UserWarning where the feature size names a layout recorded at
    another rate (`humanml3d.layout`: 20 fps for 263 features, 12.5 for 251). A prepared dataset records
    its fps and is loaded whole: min_length / max_length are kept only for `describe_dropped` to say what
    training leaves out.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found (data.root); if the data moved, give its new place with "
            "--config.data.root=<folder>"
        )
    if (root / "dataset.json").is_file():
        return dataclasses.replace(_open_prepared(root), min_length=min_length, max_length=max_length)
    if (root / "new_joint_vecs").is_dir():
        return _open_humanml3d(root, fps, min_length, max_length, std_floor)
    raise DatasetError(
        f"{root}: neither a prepared dataset (dataset.json) nor a HumanML3D-layout folder (new_joint_vecs/); "
        f"prepare raw BEAT with `python launch.py --mode prepare --config configs/beat.py`"
    )


def read_dataset_info(path: Path) -> dict[str, Any]:
    """The record of a prepared dataset (`dataset.json`), with format, representation, fps and feature_size
    checked; DatasetError names the file and the field."""
    try:
        info = json.loads(_read_text(path, "the dataset record"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); the prepared dataset looks damaged") from None
    if not isinstance(info, dict):
        raise DatasetError(f"{path}: expected a JSON object of dataset fields, found a {type(info).__name__}")
    for key in ("format", "representation", "fps", "feature_size"):
        if key not in info:
            raise DatasetError(f"{path}: missing field {key!r}")
    if info["format"] != FORMAT:
        raise DatasetError(f"{path}: format {info['format']!r}, expected {FORMAT!r}")
    if info["representation"] not in REPRESENTATIONS:
        raise DatasetError(
            f"{path}: field 'representation' is {info['representation']!r}; expected one of {REPRESENTATIONS}"
        )
    fps, feature_size = info["fps"], info["feature_size"]
    if not _is_frame_rate(fps):
        raise DatasetError(f"{path}: field 'fps' is {fps!r}; expected a positive number of frames per second")
    if isinstance(feature_size, bool) or not isinstance(feature_size, int) or feature_size < 1:
        raise DatasetError(f"{path}: field 'feature_size' is {feature_size!r}; expected a positive integer")
    return info


def _open_prepared(root: Path) -> MotionTextDataset:
    info = read_dataset_info(root / "dataset.json")
    feature_size = info["feature_size"]
    skeleton = None
    skeleton_path = root / "skeleton.json"
    if skeleton_path.is_file():
        try:
            skeleton = Skeleton.load_json(skeleton_path)
        except (ValueError, OSError) as error:
            message = str(error)
            prefix = "" if message.startswith(str(skeleton_path)) else f"{skeleton_path}: "
            raise DatasetError(
                f"{prefix}{message} (expected the skeleton written with the dataset)"
            ) from None
    return MotionTextDataset(
        root=root,
        layout="prepared",
        representation=info["representation"],
        fps=float(info["fps"]),
        feature_size=feature_size,
        mean=_load_stats(root / "mean.npy", feature_size),
        std=_load_stats(root / "std.npy", feature_size, positive=True),
        skeleton=skeleton,
        info=info,
    )


def _open_humanml3d(root: Path, fps, min_length, max_length, std_floor) -> MotionTextDataset:
    mean_path, std_path = root / "Mean.npy", root / "Std.npy"
    missing = [path for path in (mean_path, std_path) if not path.is_file()]
    if missing:
        raise DatasetError(_missing_stats_message(root, missing))
    mean = _load_humanml3d_stats(mean_path, "means")
    given = _load_humanml3d_stats(std_path, "standard deviations")
    if np.any(given < 0):  # (a floor would make it 1e-6: that feature scaled up a million times)
        feature = int(np.argmax(given < 0))
        raise DatasetError(
            f"{std_path}: standard deviation {given[feature]:g} at feature {feature}; expected values >= 0 "
            "(a zero, a constant feature's, is raised to data.std_floor)"
        )
    listed = _listed_ids(root)
    feature_size = _check_stats_size(root, mean, given, _first_listed_clip(root, listed))
    std = np.maximum(given, std_floor)
    floored = int((given < std_floor).sum())  # said by the caller: the normalisation is not Std.npy's there
    _check_splits_apart(root, listed)
    used = HUMANML3D_FPS if fps is None else float(fps)
    _warn_of_another_fps(root, feature_size, fps, used)
    _warn_of_another_unit(root, feature_size, mean)
    return MotionTextDataset(
        root=root,
        layout="humanml3d",
        representation="humanml3d",
        fps=used,
        feature_size=feature_size,
        mean=mean,
        std=std.astype(np.float32),
        skeleton=None,
        info={"format": "humanml3d", "feature_size": feature_size, "std_floored": floored},
        min_length=min_length,
        max_length=max_length,
    )


def _stats_recipe(root: Path, names: Sequence[str]) -> str:
    """A shell command that writes `names` (Mean.npy and/or Std.npy) into `root`: the per-feature mean /
    standard deviation over every frame of the training split's clips."""
    saves = {"Mean.npy": "x.mean(0)", "Std.npy": "x.std(0)"}
    save = "; ".join(f"np.save(r / '{name}', {saves[name]})" for name in names)
    return (
        f'python -c "import numpy as np, pathlib; r = pathlib.Path({str(root)!r}); '
        "x = np.concatenate([np.load(p) for i in (r / 'train.txt').read_text().split() "
        f"if (p := r / 'new_joint_vecs' / f'{{i}}.npy').is_file()]); {save}\""
    )


def _missing_stats_message(root: Path, missing: Sequence[Path]) -> str:
    """What to say when Mean.npy and/or Std.npy (`missing`) are not in HumanML3D-layout folder `root`."""
    names = [path.name for path in missing]
    what = " and ".join(names)
    return (
        f"{missing[0]}: missing{f' (and {missing[1].name})' if len(missing) > 1 else ''}; the HumanML3D "
        "layout needs Mean.npy and Std.npy, the per-feature mean and standard deviation [D] of its motions, "
        f"which standardize the features. Nothing here writes them into this folder: make {what} over "
        f"every frame of the training split's clips with `{_stats_recipe(root, names)}` (HumanML3D's own "
        "cal_mean_variance.py takes every clip in new_joint_vecs/ and averages Std within each feature "
        "group; data.std_floor floors tiny values either way)"
    )


def _load_humanml3d_stats(path: Path, what: str) -> np.ndarray:
    """The float32 vector [D] of Mean.npy / Std.npy (`what`: means / standard deviations)."""
    values = _load_array(path, f"the feature {what} [D]")
    if values.ndim != 1 or values.size == 0:
        raise DatasetError(f"{path}: shape {values.shape}; expected the feature {what}, shape [D]")
    return _finite_float32(path, values, "the statistics", f"values [{values.size}]")


def _listed_ids(root: Path) -> dict[str, list[str]]:
    """The ids of each split file of `root` that reads; one that does not is left to loading that split,
    which says what is wrong with it."""
    listed = {}
    for name in SPLITS:
        path = root / f"{name}.txt"
        if path.is_file():
            try:
                listed[name] = _read_ids(path)
            except DatasetError:
                continue
    return listed


def _first_listed_clip(
    root: Path, listed: Mapping[str, Sequence[str]]
) -> tuple[Path, tuple[int, ...]] | None:
    """(path, shape) of the first listed clip (train.txt's first, then val.txt's, test.txt's) whose
    new_joint_vecs/<id>.npy is there and reads as a .npy header; None if none does (loading says why)."""
    for ids in listed.values():
        for clip_id in ids:
            path = root / "new_joint_vecs" / f"{clip_id}.npy"
            if not path.is_file():
                continue
            try:
                with open(path, "rb") as handle:
                    shape, _, _ = _read_npy_header(handle)
            except (OSError, *_HEADER_ERRORS):
                continue
            return path, shape
    return None


def _check_stats_size(
    root: Path, mean: np.ndarray, std: np.ndarray, clip: tuple[Path, tuple[int, ...]] | None
) -> int:
    """The feature size D: the first listed clip's, which Mean.npy and Std.npy must have as many values as
    (Mean.npy's where no clip reads); DatasetError naming the file that disagrees, and with what."""
    sizes = {"Mean.npy": mean.size, "Std.npy": std.size}
    if clip is None or len(clip[1]) != 2:  # nothing to compare with (loading the clip says what is wrong)
        if std.size != mean.size:
            raise DatasetError(
                f"{root / 'Std.npy'}: {std.size} values, but Mean.npy has {mean.size}; expected one value "
                f"per feature in each. {_stats_remedy(root, ['Mean.npy', 'Std.npy'])}"
            )
        return int(mean.size)
    path, shape = clip
    size = int(shape[1])
    wrong = [name for name, n in sizes.items() if n != size]
    if not wrong:
        return size

    def named(n: int) -> str:
        found = humanml3d.layout("humanml3d", n)
        return f"{n} values ({found.dataset}'s layout)" if found else f"{n} values"

    shown = path.relative_to(root) if path.is_relative_to(root) else path
    clips = f"the clips have {size} features per frame ({shown}: shape {shape})"
    if len(wrong) == 1:
        other = "Std.npy" if wrong[0] == "Mean.npy" else "Mean.npy"
        where, have = root / wrong[0], f"{named(sizes[wrong[0]])}, where {other} has {size}"
    elif mean.size == std.size:
        where, have = root / "Mean.npy", f"{named(mean.size)}, as Std.npy has"
    else:
        where, have = root / "Mean.npy", f"{named(mean.size)}, and Std.npy {named(std.size)}"
    raise DatasetError(
        f"{where}: {have}, but {clips}; expected {size} values in {' and '.join(wrong)}, the per-feature "
        f"statistics of these clips. {_stats_remedy(root, wrong)}"
    )


def _stats_remedy(root: Path, names: Sequence[str]) -> str:
    """How to replace `names` (statistics of other data) by the clips' own."""
    return (
        f"If the clips are the data you mean, replace {' and '.join(names)} by their statistics over the "
        f"training split (nothing here writes or replaces them), e.g. `{_stats_recipe(root, names)}`"
    )


def _mirror_id(clip_id: str) -> str:
    """The id HumanML3D gives the mirrored copy of clip `clip_id` (M000001 for 000001), or the original's
    id for a mirrored copy's."""
    return clip_id[1:] if clip_id.startswith("M") else f"M{clip_id}"


def _check_splits_apart(root: Path, listed: Mapping[str, Sequence[str]], examples: int = 5) -> None:
    """DatasetError where train.txt lists an id that val.txt or test.txt lists too: eval would score a
    clip the model trained on. A UserWarning where train.txt lists a clip whose mirrored copy (`M<id>`, or
    the original of an `M<id>`) another split lists: motion the model trained on, in mirror image.
    HumanML3D's own split files never do either. (val.txt and test.txt sharing a clip trains on neither;
    it is let be.)"""
    train = listed.get("train")
    if not train:
        return

    def some(clip_ids: Sequence[str]) -> str:
        shown = ", ".join(clip_ids[:examples])
        return f"{shown}, ... ({len(clip_ids)} in all)" if len(clip_ids) > examples else shown

    others = {name: set(listed[name]) for name in ("val", "test") if listed.get(name)}
    shared = {name: [i for i in dict.fromkeys(train) if i in ids] for name, ids in others.items()}
    shared = {name: ids for name, ids in shared.items() if ids}
    if shared:
        said = "; ".join(f"{len(ids)} in {name}.txt too ({some(ids)})" for name, ids in shared.items())
        raise DatasetError(
            f"{root / 'train.txt'}: lists clip ids that another split file lists: {said}; expected each clip "
            "in one split (eval on a clip the model trained on scores what it memorised). Remove each from "
            "train.txt or from the other file"
        )
    mirrored = {
        name: [f"{i} / {_mirror_id(i)}" for i in dict.fromkeys(train) if _mirror_id(i) in ids]
        for name, ids in others.items()
    }
    said = "; ".join(
        f"{len(pairs)} in {name}.txt ({some(pairs)})" for name, pairs in mirrored.items() if pairs
    )
    if said:
        warnings.warn(
            f"{root}: train.txt lists clips whose mirrored copy (HumanML3D's M<id> for <id>, or <id> for "
            f"M<id>) another split file lists: {said}; HumanML3D's own split files keep a clip and its "
            "mirror in one split, and here eval scores motion the model trained on, in mirror image. If "
            "these are mirrored copies, move each pair into one split file",
            ProjectWarning,
            stacklevel=4,  # this, _open_humanml3d, open_dataset, its caller
        )


def _warn_of_another_fps(root: Path, feature_size: int, fps: float | None, used: float) -> None:
    """A UserWarning (attributed to open_dataset's caller) where a HumanML3D-layout folder whose
    `feature_size` names a layout (HumanML3D's 263, KIT-ML's 251) is read at `used` fps, not that layout's:
    every duration in seconds (animations, eval's rates, the clock) would be off by their ratio, while
    the per-frame losses train as before. Not an error: the clips may have been resampled to `used`."""
    if (other := humanml3d.other_rate("humanml3d", feature_size, used)) is None:
        return
    found, speed = other
    given = f"data.fps is {used:g}" if fps is not None else f"no data.fps was given (the default {used:g})"
    warnings.warn(
        f"{root}: {given}, but its {feature_size} features per frame are {found.dataset}'s layout, whose "
        f"motions are {found.fps:g} fps: its clips are read as {used:g} fps motion, so animations play them "
        f"{speed} and every time in seconds (eval's rates, clip durations) is off by that factor. Set "
        f"--config.data.fps={found.fps:g} for {found.dataset}'s own rate, or keep {used:g} if the clips "
        "were resampled to it",
        ProjectWarning,
        stacklevel=4,  # this, _open_humanml3d, open_dataset, its caller
    )


# A standing root's height in a layout's unit lies within these (HumanML3D's ~0.9-1 m, KIT-ML's ~1000 mm);
# a mean root height 10x outside them is another unit.
_ROOT_HEIGHTS = {"m": (0.3, 3.0), "mm": (300.0, 3000.0)}


def _warn_of_another_unit(root: Path, feature_size: int, mean: np.ndarray) -> None:
    """A UserWarning (attributed to open_dataset's caller) where Mean.npy's root height (feature 3, the
    mean over the training frames) is 10x or more off what a standing person's is in the unit of the layout
    the feature size names: KIT-ML's layout in metres (a root at 0.98) would be labelled millimetres by
    eval and the pictures, every distance and speed 1000x off, and nothing else would say so."""
    found = humanml3d.layout("humanml3d", feature_size)
    if found is None or found.unit not in _ROOT_HEIGHTS:
        return
    height = abs(float(mean[found.root_height.start]))
    low, high = _ROOT_HEIGHTS[found.unit]
    if height == 0.0 or low / 10 <= height <= high * 10:  # (0: statistics not of motion, nothing to judge)
        return
    if height < low / 10:
        looks = "metres" if found.unit == "mm" else "a unit larger than metres"
    else:
        looks = "millimetres or centimetres" if found.unit == "m" else "a unit smaller than millimetres"
    warnings.warn(
        f"{root / 'Mean.npy'}: the mean root height (feature 3) is {height:.3g}, but {feature_size} features "
        f"per frame are {found.dataset}'s layout, in {found.unit} (a standing root at {low:g}-{high:g} "
        f"{found.unit}): these clips look like {looks}. Eval's distances, speeds and jitter and the sampled "
        f"positions are labelled {found.unit}, and would be off by that factor; convert the clips (and "
        f"Mean.npy / Std.npy) to {found.unit} if so",
        ProjectWarning,
        stacklevel=4,  # this, _open_humanml3d, open_dataset, its caller
    )


def _parse_humanml3d_caption(line: str, path: Path, number: int) -> tuple[str, float, float]:
    """`caption#tokens#from#to` -> (caption, from_s, to_s); a bare caption has no sub-clip.

    An empty or NaN `from` / `to` (any spelling float() reads as NaN: nan, NaN, NAN, ...) is 0, as in
    MotionDiffuse's loader, which tests the parsed float with isnan.
    """
    parts = line.split("#")
    if len(parts) == 1:
        return parts[0].strip(), 0.0, 0.0
    if len(parts) != 4:
        raise DatasetError(f"{path}:{number}: expected 'caption#tokens#from#to', found {line!r:.120}")
    try:
        start, end = (float(p) if p.strip() else 0.0 for p in parts[2:])
    except ValueError:
        start = end = -1.0  # refused below
    start, end = (0.0 if math.isnan(value) else value for value in (start, end))
    if not (0 <= start < math.inf and 0 <= end < math.inf):
        raise DatasetError(
            f"{path}:{number}: from/to must be finite, non-negative numbers of seconds, found {line!r:.120}"
        )
    return parts[0].strip(), start, end


def _span_id(clip_id: str, start: float, end: float) -> str:
    """`<id>#<from>-<to>`, the seconds as short as they read back exactly (1 s as `1`, not `1.0`), so that
    spans that differ give ids that differ."""

    def seconds(value: float) -> str:
        short = f"{value:g}"
        return short if float(short) == value else repr(value)

    return f"{clip_id}#{seconds(start)}-{seconds(end)}"


def _check_span_fps(dataset: MotionTextDataset, path: Path, number: int, start: float, end: float) -> None:
    """DatasetError unless `dataset.fps` is HumanML3D's 20, at which the span of caption line `number`
    (seconds) is cut into frames."""
    if math.isclose(dataset.fps, HUMANML3D_FPS, rel_tol=1e-6):
        return
    raise DatasetError(
        f"{path}:{number}: data.fps is {dataset.fps:g}, but this caption spans {start:g}-{end:g} s of its "
        f"motion; expected data.fps={HUMANML3D_FPS:g} for the HumanML3D layout: the spans of its caption "
        f"files are seconds at HumanML3D's {HUMANML3D_FPS:g} fps (its loaders cut frames int(from * 20) to "
        f"int(to * 20)). Set --config.data.fps={HUMANML3D_FPS:g} (a folder whose captions all describe whole "
        "clips, `#0.0#0.0`, as KIT-ML's at 12.5 fps, loads at its own data.fps)"
    )


def _check_listed_ids(path: Path, listed: Sequence[str]) -> None:
    """DatasetError unless every id of split file `path` is listed once and holds no '#' (sub-clip ids are
    `<id>#<from>-<to>`): the split's clip ids are then unique."""
    counts: dict[str, int] = {}
    for clip_id in listed:
        if "#" in clip_id:
            raise DatasetError(
                f"{path}: clip id {clip_id!r} holds '#', which names sub-clips in this layout "
                "(<id>#<from>-<to>); expected HumanML3D's ids, the names of new_joint_vecs/<id>.npy"
            )
        counts[clip_id] = counts.get(clip_id, 0) + 1
    repeated = [f"{clip_id!r} ({n} times)" for clip_id, n in counts.items() if n > 1]
    if repeated:
        raise DatasetError(
            f"{path}: lists {', '.join(repeated[:3])}{', ...' if len(repeated) > 3 else ''}; expected each "
            "clip id once (a repeat would load the clip twice under one id)"
        )


def _load_humanml3d_split(dataset: MotionTextDataset, name: str) -> Split:
    root = dataset.root
    ids, motions, captions = [], [], []
    dropped: dict[str, list[str]] = {reason: [] for reason in DROP_REASONS}
    notes: dict[str, str] = {}
    past_end: list[str] = []
    said_by = f"(the {dataset.feature_size} values of Mean.npy and Std.npy: a folder's clips share one size)"

    def too_long(motion: np.ndarray) -> bool:
        return dataset.max_length is not None and len(motion) >= dataset.max_length

    split_path = root / f"{name}.txt"
    listed = _read_ids(split_path)
    if not listed:
        raise _empty_split_error(dataset, split_path, name)
    _check_listed_ids(split_path, listed)
    _check_no_npy_suffix(split_path, listed)
    for clip_id in listed:
        motion_path = root / "new_joint_vecs" / f"{clip_id}.npy"
        if not motion_path.is_file():
            dropped["no_motion"].append(clip_id)  # the published split lists clips the processing dropped
            continue
        saved = _read_motion(motion_path, dataset.feature_size, said_by)
        motion, bad = _float32(motion_path, saved, "motion", f"values [frames, {dataset.feature_size}]")
        if bad is not None:  # locally built HumanML3D copies hold some (007975, M007975)
            dropped["non_finite"].append(clip_id)
            notes[clip_id] = f"{bad.value} at {bad.where}{f', {bad.count - 1} more' if bad.count > 1 else ''}"
            continue
        # as MotionDiffuse: a motion outside the limits goes with its sub-clips
        if len(motion) < dataset.min_length:
            dropped["too_short"].append(clip_id)
            continue
        if too_long(motion):
            dropped["too_long"].append(clip_id)
            continue
        text_path = root / "texts" / f"{clip_id}.txt"
        if not text_path.is_file():
            raise DatasetError(
                f"{text_path}: caption file missing for clip {clip_id!r} (expected this file, one "
                "'caption#tokens#from#to' a line)"
            )
        lines = _read_text(text_path, f"the captions of clip {clip_id!r}").splitlines()
        if not any(line.strip() for line in lines):
            dropped["no_captions"].append(clip_id)
            continue
        whole: list[str] = []
        # The sub-clips by the frames they cut, in the order the file first names them: (id, captions),
        # or None for one shorter than min_length (dropped, and counted once).
        subs: dict[tuple[int, int], tuple[str, list[str]] | None] = {}
        odd_spans: set[str] = set()  # backwards, after the end or past it: each counted once
        frames = len(motion)
        wordless: list[str] = []  # caption lines with no words: training them would train the unconditional
        for number, line in enumerate(lines, start=1):  # caption of guidance, under a caption of its own
            if not line.strip():
                continue
            caption, start, end = _parse_humanml3d_caption(line, text_path, number)
            if not caption:
                wordless.append(f"texts/{clip_id}.txt:{number}")
                continue
            if start == 0.0 and end == 0.0:
                whole.append(caption)
                continue
            _check_span_fps(dataset, text_path, number, start, end)
            span_id = _span_id(clip_id, start, end)
            if start > end or int(start * HUMANML3D_FPS) >= frames:  # (T2M's loaders: an empty slice)
                if span_id not in odd_spans:
                    odd_spans.add(span_id)
                    dropped["backwards_span" if start > end else "span_after_end"].append(span_id)
                continue
            if int(end * HUMANML3D_FPS) > frames and span_id not in odd_spans:
                odd_spans.add(span_id)
                past_end.append(span_id)  # cut at the motion's end, as T2M's loaders slice
            first = int(start * HUMANML3D_FPS)  # motion[first:last], as sliced
            last = max(first, min(int(end * HUMANML3D_FPS), frames))
            if (first, last) == (0, frames):  # the whole motion: one of the whole clip's captions
                whole.append(caption)
                continue
            if (first, last) not in subs:
                if last - first < dataset.min_length:  # (never too long: the motion it is cut from is not)
                    dropped["short_sub_clip"].append(span_id)
                    subs[first, last] = None
                else:
                    subs[first, last] = (span_id, [])
            if (sub := subs[first, last]) is not None:
                sub[1].append(caption)
        if wordless and len(wordless) == sum(1 for line in lines if line.strip()):
            dropped["no_captions"].append(clip_id)
            continue
        dropped["empty_caption"].extend(wordless)
        for (first, last), sub in subs.items():
            if sub is not None:
                ids.append(sub[0])
                motions.append(motion[first:last])
                captions.append(tuple(sub[1]))
        if whole:
            ids.append(clip_id)
            motions.append(motion)
            captions.append(tuple(whole))
    if not ids:
        limit = "" if dataset.max_length is None else f" and fewer than {dataset.max_length}"
        without_motion = dropped["no_motion"]
        looked = ""
        if without_motion:
            paths = [str(root / "new_joint_vecs" / f"{i}.npy") for i in without_motion[:2]]
            looked = f" (no {', no '.join(paths)}{', ...' if len(without_motion) > 2 else ''})"
        others = {reason: clips for reason, clips in dropped.items() if clips and reason != "no_motion"}
        limits = {"min": dataset.min_length, "max": dataset.max_length}
        why = f". Left out: {'; '.join(_dropped_parts(others, notes, limits))}" if others else ""
        raise EmptySplitError(
            f"{split_path}: the {name} split has no clips: of the {len(listed)} it lists, "
            f"{len(without_motion)} have no motion in {root / 'new_joint_vecs'}{looked} and none of the "
            f"others gives a captioned clip of at least {dataset.min_length}{limit} frames; expected at "
            "least one clip (check the folder and data.min_motion_length / data.max_clip_length)"
            f"{why}{_npy_suffix_hint(split_path, without_motion)}"
        )
    left_out = {reason: tuple(clips) for reason, clips in dropped.items() if clips}
    return Split(name, tuple(ids), tuple(motions), tuple(captions), left_out, tuple(past_end), notes)


def _npy_suffix_hint(path: Path, clip_ids: Sequence[str]) -> str:
    """A sentence for ids of split file `path` that end in '.npy' ("" if none does)."""
    suffixed = [clip_id for clip_id in clip_ids if clip_id.endswith(".npy")]
    if not suffixed:
        return ""
    return (
        f". {len(suffixed)} of the ids {path.name} lists end in '.npy' ({suffixed[0]!r}, ...): expected bare "
        f"ids ({suffixed[0][: -len('.npy')]!r}), the names of new_joint_vecs/<id>.npy without '.npy', which "
        "the loader adds"
    )


def _check_no_npy_suffix(path: Path, listed: Sequence[str]) -> None:
    """DatasetError where split file `path` lists a clip with its file's '.npy' suffix, `<id>.npy`, whose
    new_joint_vecs/<id>.npy is there: the loader adds '.npy' and would look for <id>.npy.npy."""
    folder = path.parent / "new_joint_vecs"
    suffixed = [
        clip_id
        for clip_id in listed
        if clip_id.endswith(".npy")
        and not (folder / f"{clip_id}.npy").is_file()
        and (folder / clip_id).is_file()
    ]
    if suffixed:
        first = suffixed[0]
        more = f" and {len(suffixed) - 1} more ids" if len(suffixed) > 1 else ""
        raise DatasetError(
            f"{path}: lists {first!r}{more} with the motion file's '.npy' suffix; expected bare ids "
            f"({first[: -len('.npy')]!r}): the loader adds '.npy' and looks for {folder / f'{first}.npy'}, "
            f"which is not there. Remove '.npy' from the ids of {path.name}"
        )


def _some(clip_ids: Sequence[str], examples: int, notes: Mapping[str, str] | None = None) -> str:
    """The first `examples` of `clip_ids`, each with its note where `notes` has one, for a log."""
    notes = notes or {}
    shown = ", ".join(f"{i} ({notes[i]})" if i in notes else i for i in clip_ids[:examples])
    return f"e.g. {shown}, ..." if len(clip_ids) > examples else shown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _dropped_parts(
    dropped: Mapping[str, Sequence[str]],
    notes: Mapping[str, str],
    limits: Mapping[str, Any],
    examples: int = 3,
) -> list[str]:
    """What `dropped` (reason -> ids, as `Split.dropped`) left out, a phrase per reason: how many, why
    (DROP_REASONS, with the length `limits` min / max) and the first `examples` ids with their `notes`."""
    parts = []
    for reason, clip_ids in dropped.items():
        noun, why = DROP_REASONS[reason]
        parts.append(
            f"{_count(len(clip_ids), noun)} {why.format(**limits)} ({_some(clip_ids, examples, notes)})"
        )
    return parts


def describe_dropped(
    dataset: MotionTextDataset, splits: Sequence[Split] | None = None, examples: int = 3
) -> str:
    """What loading left out of `dataset`'s splits, for a log: one line per split with something to say,
    "" when none has.

    splits: splits already loaded from `dataset` (nothing is loaded again); None loads every split the
    folder lists (the prepared layout: the train split only, the one with something to say). The HumanML3D
    layout reports `Split.dropped`, `examples` ids a reason, and `Split.spans_past_end`; the prepared
    layout is loaded whole, and its train split reports the clips shorter than min_length that training
    leaves out, and the clips of max_length frames or more that it keeps (that limit is the HumanML3D
    layout's).
    """
    if splits is None:
        names = SPLITS if dataset.layout == "humanml3d" else ("train",)
        splits = [dataset.split(n) for n in names if (dataset.root / f"{n}.txt").is_file()]

    limits = {"min": dataset.min_length, "max": dataset.max_length}
    lines = []
    for split in splits:
        parts = _dropped_parts(split.dropped, split.drop_notes, limits, examples)
        line = f"{split.name}: {_count(len(split), 'clip')} kept"
        if parts:
            line += f"; left out {'; '.join(parts)}"
        if split.spans_past_end:
            n = len(split.spans_past_end)
            line += (
                f". {_count(n, 'caption span')} ran past {'its' if n == 1 else 'their'} clip's end and "
                f"{'was' if n == 1 else 'were'} cut there, as HumanML3D's loaders slice "
                f"({_some(split.spans_past_end, examples)})"
            )
        if parts or split.spans_past_end:
            lines.append(line)
        if dataset.layout != "prepared" or split.name != "train":
            continue
        lengths = [len(motion) for motion in split.motions]
        short = [i for i, n in zip(split.ids, lengths, strict=True) if n < dataset.min_length]
        long = [
            i
            for i, n in zip(split.ids, lengths, strict=True)
            if dataset.max_length is not None and n >= dataset.max_length
        ]
        notes = []
        if short:
            notes.append(
                f"leaves out {len(short)} shorter than {dataset.min_length} frames (data.min_motion_length: "
                f"{_some(short, examples)})"
            )
        if long:
            notes.append(
                f"keeps {len(long)} of {dataset.max_length} frames or more (data.max_clip_length applies to "
                f"the HumanML3D layout only: {_some(long, examples)})"
            )
        if notes:
            lines.append(f"{split.name}: of {_count(len(split), 'clip')}, training {' and '.join(notes)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- writing


def _is_frame_rate(fps: Any) -> bool:
    """A finite, positive real number (not a bool)."""
    return not isinstance(fps, bool) and isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0


def _check_info(root: Path, info: Mapping[str, Any]) -> None:
    """DatasetError unless `info` gives a known representation and a positive fps (what reading and training
    check later, once the folder is written), and leaves `format` to write_dataset."""
    where = f"{root}: write_dataset's info"
    if info.get("representation") not in REPRESENTATIONS:
        found = f"is {info['representation']!r}" if "representation" in info else "lacks it"
        raise DatasetError(
            f"{where} field 'representation' {found}; expected one of {REPRESENTATIONS} (positions / "
            "axis_angle / rotation_6d: the layouts of motion_ddpm_jax.representation; humanml3d: HumanML3D's "
            "new_joint_vecs features)"
        )
    fps = info.get("fps")
    if not _is_frame_rate(fps):
        found = f"is {fps!r}" if "fps" in info else "lacks it"
        raise DatasetError(f"{where} field 'fps' {found}; expected a positive number of frames per second")
    if info.get("format", FORMAT) != FORMAT:
        raise DatasetError(
            f"{where} field 'format' is {info['format']!r}; leave it out (write_dataset records {FORMAT!r})"
        )


def _check_clip_ids(splits: Mapping[str, Split]) -> None:
    """DatasetError unless every split has one motion and caption group (a tuple of one or more strings:
    a bare string would be read as one caption per letter) per id, and every id is a plain file name (it
    names motions/<id>.npy and texts/<id>.txt, and is one line of the split file) used once
    across the splits (a second clip of the same id would overwrite the first one's files)."""
    seen: dict[str, tuple[str, str]] = {}  # casefolded id -> (id, split)
    for name, split in splits.items():
        if not len(split.ids) == len(split.motions) == len(split.captions):
            raise DatasetError(
                f"the {name} split has {len(split.ids)} ids, {len(split.motions)} motions and "
                f"{len(split.captions)} caption groups; expected one of each per clip"
            )
        for clip_id, group in zip(split.ids, split.captions, strict=True):
            if (
                not isinstance(clip_id, str)
                or not clip_id
                or clip_id != clip_id.strip()
                or len(clip_id.splitlines()) != 1
                or any(c in clip_id for c in "/\\")
                or clip_id.startswith(".")
            ):
                raise DatasetError(
                    f"the {name} split's clip id {clip_id!r}: expected a file name (it names "
                    "motions/<id>.npy and texts/<id>.txt) without surrounding spaces, line breaks, slashes "
                    "or a leading dot"
                )
            if clip_id.casefold() in seen:
                first_id, first_split = seen[clip_id.casefold()]
                if first_id == clip_id:
                    raise DatasetError(
                        f"clip id {clip_id!r} is in the {first_split} split and again in the {name} split; "
                        "expected each id once (it names the clip's files)"
                    )
                raise DatasetError(
                    f"clip ids {first_id!r} ({first_split} split) and {clip_id!r} ({name} split) differ only "
                    "in case; expected ids that differ otherwise too (they name files, which a "
                    "case-insensitive file system, e.g. macOS's or Windows', would make one)"
                )
            seen[clip_id.casefold()] = (clip_id, name)
            if isinstance(group, str) or not group or not all(isinstance(c, str) for c in group):
                raise DatasetError(
                    f"the {name} split's clip {clip_id!r}: captions {group!r:.80}; expected a tuple of one "
                    "or more caption strings, e.g. ('a person waves',)"
                )


# Whole figures under this many units across are taken to be in metres, over the other in millimetres: the
# geometric loss (units^2) and data.std_floor are set for centimetres (a human figure spans 150-200 cm).
METRES_BELOW, MILLIMETRES_ABOVE = 10.0, 1000.0
CM_FLOOR_IN_METRES = 1e-2 / 100  # data.std_floor's default, 1e-2 (a centimetre), in metres
# A rest pose less deep along y than this fraction of its widest extent, and than its other extents, lies
# in y: y is not its up axis (a standing figure's height is at least about half its arm span; BEAT's: 175 cm
# high, 194 cm wide). Its upper body alone in a T-pose is less high (BEAT's: 87 cm), but still higher than
# it is deep (13 cm): a figure lying in y is thinnest along y.
SHALLOW_UP_FRACTION = 0.5


def rest_pose(skeleton: Skeleton) -> np.ndarray:
    """The skeleton's rest-pose joint positions [J, 3] (float64; the root at the origin)."""
    rest = np.zeros((skeleton.num_joints, 3))
    for joint in skeleton.parents_first_order.tolist():
        if skeleton.parents[joint] >= 0:
            rest[joint] = rest[skeleton.parents[joint]] + skeleton.offsets[joint]
    return rest


def lying_spans(skeleton: Skeleton) -> np.ndarray | None:
    """The rest pose's extents along x, y, z [3] where it lies in y (less deep along y than
    `SHALLOW_UP_FRACTION` of its widest extent, and than along x and z: y is then probably not its up
    axis), else None."""
    spans = np.ptp(rest_pose(skeleton), axis=0)
    lying = spans.max() > 0 and spans[1] < SHALLOW_UP_FRACTION * spans.max() and spans[1] <= spans.min()
    return spans if lying else None


def figure_unit(skeleton: Skeleton) -> tuple[float, str | None, str | None]:
    """(the rest pose's widest extent, "metres" or "millimetres" where that extent is under
    `METRES_BELOW` or over `MILLIMETRES_ABOVE` units, else None; the loss.geometric_weight, as written on
    the command line, that weighs its geometric loss (units^2) as the default 0.01 weighs centimetres)."""
    extent = float(np.ptp(rest_pose(skeleton), axis=0).max())
    if extent <= 0 or METRES_BELOW <= extent <= MILLIMETRES_ABOVE:
        return extent, None, None
    return (extent, "metres", "100") if extent < METRES_BELOW else (extent, "millimetres", "0.0001")


def unit_warnings(
    skeleton: Skeleton,
    train_motions: Sequence[np.ndarray],
    std_floor: float,
    floor_name: str,
    floor_fix: str,
    representation: str,
) -> list[str]:
    """For a figure in metres or millimetres (its rest pose under `METRES_BELOW` or over `MILLIMETRES_ABOVE`
    units across): the loss.geometric_weight that weighs its geometric loss (units^2) as in centimetres,
    and in metres the features in the data's unit whose std a `std_floor` above `CM_FLOOR_IN_METRES` raised
    (every feature of `positions`, the root's 3 translation steps of a rotation layout, whose rotation
    features have no unit and are floored alike in any; a feature that does not vary at all is floored in
    any unit, and not counted; at 1e-4 or below it is floored as much as in centimetres, and not warned
    of). floor_name: how the floor is set (`data.std_floor`); floor_fix: the advice, with `{floor}` for the
    floor to use."""
    extent, unit, weight = figure_unit(skeleton)
    if unit is None:
        return []
    metres = unit == "metres"
    warnings_ = [
        f"the skeleton's rest pose spans {extent:.3g} units, as a figure in {unit} would: the geometric "
        "loss (bone lengths, or FK positions for rotation data) is in units^2 and loss.geometric_weight's "
        f"default (0.01) is set for centimetres: train with --config.loss.geometric_weight={weight} to weigh "
        "it as in centimetres"
    ]
    if not metres or std_floor <= CM_FLOOR_IN_METRES * (1 + 1e-9):
        return warnings_
    _, spread = compute_stats(train_motions, 0.0)
    if representation != "positions":  # (the root's translation steps; the rotations have no unit)
        spread = spread[:3]
    floored = int(((spread > 0) & (spread < std_floor)).sum())
    if floored:
        which = "features" if representation == "positions" else "root translation features"
        warnings_.append(
            f"the skeleton's rest pose spans {extent:.3g} units (metres?) and {floor_name} "
            f"({std_floor:g}, in the data's unit) raised the std of {floored} of the {spread.size} "
            f"{which} to it; for motion in metres {floor_fix.format(floor=f'{CM_FLOOR_IN_METRES:g}')}"
        )
    return warnings_


def compute_stats(motions: Sequence[np.ndarray], std_floor: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [D] over every frame of `motions` (float64 accumulation), std floored at `std_floor`."""
    if not motions:
        raise DatasetError("cannot compute normalisation statistics: the training split has no clips")
    count = sum(len(m) for m in motions)
    total = sum(m.astype(np.float64).sum(0) for m in motions)
    mean = total / count
    var = sum(np.square(m.astype(np.float64) - mean).sum(0) for m in motions) / count
    return mean.astype(np.float32), np.maximum(np.sqrt(var), std_floor).astype(np.float32)


def _skeleton_warnings(kind: str, skeleton: Skeleton | None) -> list[str]:
    """What a dataset written with this skeleton (or none) will lack, though it trains."""
    if kind not in representation_lib.REPRESENTATIONS:
        return []
    if skeleton is None:
        return [
            f"{kind} features without a skeleton: no joint positions, pictures, BVH files, position "
            "metrics or geometric loss (loss.use_geometric_loss=false) for this data; give write_dataset "
            "the skeleton the features were encoded on"
        ]
    if kind in representation_lib.ROTATION_REPRESENTATIONS:
        from motion_ddpm_jax.data import bvh

        try:
            bvh.check_writable(skeleton)
        except ValueError as error:
            return [f"motion generated from this data cannot be written as BVH files: {error}"]
    return []


def write_dataset(
    root: str | os.PathLike,
    splits: Mapping[str, Split],
    info: Mapping[str, Any],
    skeleton: Skeleton | None = None,
    std_floor: float = 1e-2,
    *,
    unit_check: bool = True,
) -> MotionTextDataset:
    """Write `splits` in our layout into `root`, which must not exist or be empty.

    splits: by name, among SPLITS; clip ids are unique across them (each names its clip's files).
    info: representation (one of REPRESENTATIONS), fps (positive) and anything else worth recording
    (options, source fingerprint), as JSON; the feature size and counts are added here. Statistics come
    from the `train` split only. Everything is checked before anything is written; the folder is written
    under a hidden temporary name beside `root` and renamed into place at the end, so an interrupted write
    never leaves a half-written dataset where a complete one is expected. A failed or interrupted write
    (a full disk: an OSError naming the file; Ctrl-C) removes that temporary folder, and one left by a
    killed process of this host is removed at the start of the next write of `root`.

    std_floor is in the data's unit (its default, 1e-2, suits centimetres): a skeleton spanning a figure in
    metres or millimetres is warned of (`unit_warnings`: the loss.geometric_weight to train with, and in
    metres the features a std_floor above 1e-4 raised), unless `unit_check` is False (a caller that says
    so itself: `--mode prepare`); so is one whose rest pose lies in y (Y is the up axis here).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: already exists and is not empty; refusing to write a dataset over it")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DatasetError(
            f"{root}: write_dataset was given splits {unknown}, which would not be written; expected names "
            f"among {SPLITS}"
        )
    _check_info(root, info)
    _check_clip_ids(splits)
    for split in splits.values():  # one caption a line: a line break inside one would split it on reading
        for clip_id, captions in zip(split.ids, split.captions, strict=True):
            broken = [c for c in captions if len(c.splitlines()) > 1]
            if broken:
                raise DatasetError(
                    f"clip {clip_id!r}: caption {broken[0]!r} holds a line break; expected one line per "
                    "caption (join its lines with spaces)"
                )
    feature_sizes = {m.shape[1] for split in splits.values() for m in split.motions}
    if len(feature_sizes) != 1:
        raise DatasetError(f"clips disagree on the feature size: {sorted(feature_sizes)}")
    for split in splits.values():  # a value that is not finite would make the statistics NaN (train), or
        # stop the reading of its split later: refused before anything is written
        shape = f"features [frames, {next(iter(feature_sizes))}]"
        for clip_id, motion in zip(split.ids, split.motions, strict=True):
            what = f"clip {clip_id!r} of the {split.name} split"
            _finite_float32(root, np.asarray(motion), what, shape, "leave the clip out or correct its source")
    kind = info["representation"]
    if skeleton is not None and kind in representation_lib.REPRESENTATIONS:
        expected = representation_lib.feature_size(skeleton, kind)
        if next(iter(feature_sizes)) != expected:
            raise DatasetError(
                f"{root}: the clips have {next(iter(feature_sizes))} features per frame, but {kind} on the "
                f"skeleton's {skeleton.num_joints} joints has {expected}; expected features encoded on that "
                f"skeleton (representation.encode_{kind})"
            )
    for warning in _skeleton_warnings(kind, skeleton):
        warnings.warn(f"{root}: {warning}", ProjectWarning, stacklevel=2)
    if unit_check and skeleton is not None and kind in representation_lib.REPRESENTATIONS:
        if (spans := lying_spans(skeleton)) is not None:  # (Z-up data: AMASS's, say)
            warnings.warn(
                f"{root}: the skeleton's rest pose spans {spans[0]:.3g} x {spans[1]:.3g} x {spans[2]:.3g} "
                "units along x, y, z: it lies in y, so y is probably not its up axis. Samples are stood on "
                "the ground along y and animations draw y upwards: turn the data to Y up and write it again "
                "(with M the turn, e.g. Z up to Y up (x, y, z) -> (x, z, -y): every offset and the root's "
                "translation v -> M v, positions alike, every local rotation R -> M R M^T)",
                ProjectWarning,
                stacklevel=2,
            )
        fix = "write it with write_dataset(..., std_floor={floor})"
        for warning in unit_warnings(skeleton, splits["train"].motions, std_floor, "std_floor", fix, kind):
            warnings.warn(f"{root}: {warning}", ProjectWarning, stacklevel=2)
    mean, std = compute_stats(splits["train"].motions, std_floor)
    record = {
        "format": FORMAT,
        **info,
        "fps": float(info["fps"]),  # a numpy scalar is not JSON
        "feature_size": int(feature_sizes.pop()),
        "std_floor": std_floor,
        "counts": {name: len(splits.get(name, ())) for name in SPLITS},
    }
    try:
        record_text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    except (TypeError, ValueError) as error:
        raise DatasetError(
            f"{root}: write_dataset's info cannot be recorded in dataset.json ({error}); expected JSON "
            "values (numbers, strings, lists, dicts with string keys)"
        ) from None
    # Staged in `.<name>.partial-<host>-<pid>-<random>` beside root (files.staged_folder), removed if the
    # write fails or is interrupted (a full disk, Ctrl-C); one left by a killed process of this host is
    # removed when root is next written. An OSError names the file of root that failed.
    with files.staged_folder(root, "partial") as staging, files.writing(root, staging):
        (staging / "motions").mkdir()
        (staging / "texts").mkdir()
        for name in SPLITS:
            split = splits.get(name, Split(name, (), (), ()))
            for clip_id, motion, captions in zip(split.ids, split.motions, split.captions, strict=True):
                files.save_npy(staging / "motions" / f"{clip_id}.npy", motion.astype(np.float32))
                text = "\n".join(captions) + "\n"
                (staging / "texts" / f"{clip_id}.txt").write_text(text, encoding="utf-8")
            (staging / f"{name}.txt").write_text("".join(f"{i}\n" for i in split.ids), encoding="utf-8")
        files.save_npy(staging / "mean.npy", mean)
        files.save_npy(staging / "std.npy", std)
        if skeleton is not None:
            skeleton.save_json(staging / "skeleton.json")
        (staging / "dataset.json").write_text(record_text, encoding="utf-8")
        if root.exists():
            root.rmdir()  # empty, checked above
        staging.rename(root)
    return _open_prepared(root)
