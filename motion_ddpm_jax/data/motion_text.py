"""The prepared motion-text layout, and the MotionDiffuse / HumanML3D layout as published.

Our layout (written by `write_dataset`, read by `open_dataset`):
```
<root>/motions/<id>.npy      float32 [T, D], physical (not standardized) features
<root>/texts/<id>.txt        one caption per line (an empty file = one empty caption)
<root>/train.txt val.txt test.txt   one clip id per line
<root>/mean.npy std.npy      float32 [D], statistics of the training split (std floored)
<root>/skeleton.json         the skeleton (positions / axis_angle data)
<root>/dataset.json          format, representation, fps, feature_size, counts, and what made it
```
The HumanML3D layout (`new_joint_vecs/<id>.npy`, `texts/<id>.txt` with lines
`caption#word/POS ...#from#to`, `Mean.npy`, `Std.npy`, `train.txt` ...) is read as it is: a caption
with non-zero `from`/`to` (seconds) makes a sub-clip of its own, as MotionDiffuse does.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax.skeleton import Skeleton

FORMAT = "motion-ddpm-jax/1"
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset folder or one of its files is missing, malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Split:
    """The clips of one split, in memory.

    motions: float32 [T_i, D] per clip, physical features; captions: one or more per clip.
    """

    name: str
    ids: tuple[str, ...]
    motions: tuple[np.ndarray, ...]
    captions: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass(frozen=True)
class MotionTextDataset:
    """An opened dataset folder: metadata and statistics in memory, clips loaded per split."""

    root: Path
    layout: str  # "prepared" | "humanml3d"
    representation: str  # positions | axis_angle | humanml3d
    fps: float
    feature_size: int
    mean: np.ndarray
    std: np.ndarray
    skeleton: Skeleton | None
    info: Mapping[str, Any]
    min_length: int = 1
    max_length: int | None = None

    def split(self, name: str) -> Split:
        """Load the clips of split `name` (train | val | test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        if self.layout == "humanml3d":
            return _load_humanml3d_split(self, name)
        ids = _read_ids(self.root / f"{name}.txt")
        motions, captions = [], []
        for clip_id in ids:
            motions.append(_load_motion(self.root / "motions" / f"{clip_id}.npy", self.feature_size))
            captions.append(_read_captions(self.root / "texts" / f"{clip_id}.txt"))
        return Split(name, tuple(ids), tuple(motions), tuple(captions))

    def check_feature_size(self, expected: int, field: str = "model.input_feats") -> None:
        """Clear error when a configured feature size does not match the data (before any training)."""
        if int(expected) != self.feature_size:
            raise DatasetError(
                f"{field} is {expected} but the dataset at {self.root} has {self.feature_size} features per "
                f"frame ({self.representation}); set --config.{field}={self.feature_size} or use the dataset "
                f"the config was written for"
            )


# ---------------------------------------------------------------- small readers


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: split file missing (expected one clip id per line)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_captions(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise DatasetError(
            f"{path}: caption file missing for clip {path.stem!r} (expected one caption a line)"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    captions = tuple(line for line in lines if line)
    return captions or ("",)


def _load_motion(path: Path, feature_size: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: motion file missing")
    try:
        motion = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable .npy array ({error})") from None
    if motion.ndim != 2 or motion.shape[1] != feature_size:
        raise DatasetError(
            f"{path}: motion has shape {motion.shape}; expected [frames, {feature_size}] as dataset.json says"
        )
    if not np.issubdtype(motion.dtype, np.floating) or not np.all(np.isfinite(motion)):
        raise DatasetError(f"{path}: motion must be finite floating-point values (dtype {motion.dtype})")
    return motion.astype(np.float32, copy=False)


def _load_stats(path: Path, feature_size: int) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: normalisation statistics missing")
    values = np.load(path, allow_pickle=False)
    if values.shape != (feature_size,) or not np.all(np.isfinite(values)):
        raise DatasetError(f"{path}: expected {feature_size} finite values, got shape {values.shape}")
    return values.astype(np.float32)


# ---------------------------------------------------------------- opening


def open_dataset(
    root: str | os.PathLike,
    fps: float | None = None,
    min_length: int = 1,
    max_length: int | None = None,
    std_floor: float = 1e-2,
) -> MotionTextDataset:
    """Open a prepared dataset folder, or a HumanML3D-layout folder as published.

    fps, min_length, max_length: only for the HumanML3D layout, which does not record them
    (HumanML3D: 20 fps, MotionDiffuse keeps 40 <= T < 200; KIT: 12.5 fps).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / "dataset.json").is_file():
        return _open_prepared(root)
    if (root / "new_joint_vecs").is_dir():
        return _open_humanml3d(root, fps, min_length, max_length, std_floor)
    raise DatasetError(
        f"{root}: neither a prepared dataset (dataset.json) nor a HumanML3D-layout folder (new_joint_vecs/); "
        f"prepare raw BEAT with `python launch.py --mode prepare --config configs/beat.py`"
    )


def _open_prepared(root: Path) -> MotionTextDataset:
    path = root / "dataset.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: not valid JSON ({error})") from None
    for key in ("format", "representation", "fps", "feature_size"):
        if key not in info:
            raise DatasetError(f"{path}: missing field {key!r}")
    if info["format"] != FORMAT:
        raise DatasetError(f"{path}: format {info['format']!r}, expected {FORMAT!r}")
    feature_size = int(info["feature_size"])
    skeleton = None
    if (root / "skeleton.json").is_file():
        skeleton = Skeleton.load_json(root / "skeleton.json")
    return MotionTextDataset(
        root=root,
        layout="prepared",
        representation=info["representation"],
        fps=float(info["fps"]),
        feature_size=feature_size,
        mean=_load_stats(root / "mean.npy", feature_size),
        std=_load_stats(root / "std.npy", feature_size),
        skeleton=skeleton,
        info=info,
    )


def _open_humanml3d(root: Path, fps, min_length, max_length, std_floor) -> MotionTextDataset:
    mean_path, std_path = root / "Mean.npy", root / "Std.npy"
    if not mean_path.is_file():
        raise DatasetError(f"{mean_path}: HumanML3D layout needs Mean.npy and Std.npy")
    feature_size = int(np.load(mean_path, mmap_mode="r", allow_pickle=False).shape[-1])
    mean = _load_stats(mean_path, feature_size)
    std = np.maximum(_load_stats(std_path, feature_size), std_floor)
    return MotionTextDataset(
        root=root,
        layout="humanml3d",
        representation="humanml3d",
        fps=20.0 if fps is None else float(fps),
        feature_size=feature_size,
        mean=mean,
        std=std.astype(np.float32),
        skeleton=None,
        info={"format": "humanml3d", "feature_size": feature_size},
        min_length=min_length,
        max_length=max_length,
    )


def _parse_humanml3d_caption(line: str, path: Path, number: int) -> tuple[str, float, float]:
    """`caption#tokens#from#to` -> (caption, from_s, to_s); a bare caption has no sub-clip."""
    parts = line.split("#")
    if len(parts) == 1:
        return parts[0].strip(), 0.0, 0.0
    if len(parts) != 4:
        raise DatasetError(f"{path}:{number}: expected 'caption#tokens#from#to', found {line!r:.120}")
    try:
        start, end = (0.0 if not p.strip() or p.strip() == "nan" else float(p) for p in parts[2:])
    except ValueError:
        raise DatasetError(
            f"{path}:{number}: from/to must be numbers of seconds, found {line!r:.120}"
        ) from None
    return parts[0].strip(), start, end


def _load_humanml3d_split(dataset: MotionTextDataset, name: str) -> Split:
    root = dataset.root
    ids, motions, captions = [], [], []

    def keep(motion: np.ndarray) -> bool:
        return dataset.min_length <= len(motion) and (
            dataset.max_length is None or len(motion) < dataset.max_length
        )

    for clip_id in _read_ids(root / f"{name}.txt"):
        motion_path = root / "new_joint_vecs" / f"{clip_id}.npy"
        if not motion_path.is_file():
            continue  # the published split lists clips that the processing dropped
        motion = _load_motion(motion_path, dataset.feature_size)
        text_path = root / "texts" / f"{clip_id}.txt"
        if not text_path.is_file():
            raise DatasetError(f"{text_path}: caption file missing for clip {clip_id!r}")
        whole = []
        lines = text_path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            caption, start, end = _parse_humanml3d_caption(line, text_path, number)
            if start == 0.0 and end == 0.0:
                whole.append(caption)
                continue
            sub = motion[int(start * dataset.fps) : int(end * dataset.fps)]
            if keep(sub):
                ids.append(f"{clip_id}#{start:g}-{end:g}")
                motions.append(sub)
                captions.append((caption,))
        if whole and keep(motion):
            ids.append(clip_id)
            motions.append(motion)
            captions.append(tuple(whole))
    return Split(name, tuple(ids), tuple(motions), tuple(captions))


# ---------------------------------------------------------------- writing


def compute_stats(motions: Sequence[np.ndarray], std_floor: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [D] over every frame of `motions` (float64 accumulation), std floored at `std_floor`."""
    if not motions:
        raise DatasetError("cannot compute normalisation statistics: the training split has no clips")
    count = sum(len(m) for m in motions)
    total = sum(m.astype(np.float64).sum(0) for m in motions)
    mean = total / count
    var = sum(np.square(m.astype(np.float64) - mean).sum(0) for m in motions) / count
    return mean.astype(np.float32), np.maximum(np.sqrt(var), std_floor).astype(np.float32)


def write_dataset(
    root: str | os.PathLike,
    splits: Mapping[str, Split],
    info: Mapping[str, Any],
    skeleton: Skeleton | None = None,
    std_floor: float = 1e-2,
) -> MotionTextDataset:
    """Write `splits` in our layout into `root`, which must not exist or be empty.

    info: representation, fps and anything else worth recording (options, source fingerprint); the
    feature size and counts are added here. Statistics come from the `train` split only. The folder is
    written under a temporary name and renamed into place at the end, so an interrupted write never
    leaves a half-written dataset where a complete one is expected.
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: already exists and is not empty; refusing to write a dataset over it")
    feature_sizes = {m.shape[1] for split in splits.values() for m in split.motions}
    if len(feature_sizes) != 1:
        raise DatasetError(f"clips disagree on the feature size: {sorted(feature_sizes)}")
    mean, std = compute_stats(splits["train"].motions, std_floor)
    staging = root.with_name(f".{root.name}.partial-{os.getpid()}")
    if staging.exists():
        raise DatasetError(f"{staging}: a partial write from this process already exists")
    (staging / "motions").mkdir(parents=True)
    (staging / "texts").mkdir()
    for name in SPLITS:
        split = splits.get(name, Split(name, (), (), ()))
        for clip_id, motion, captions in zip(split.ids, split.motions, split.captions, strict=True):
            np.save(staging / "motions" / f"{clip_id}.npy", motion.astype(np.float32))
            (staging / "texts" / f"{clip_id}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
        (staging / f"{name}.txt").write_text("".join(f"{i}\n" for i in split.ids), encoding="utf-8")
    np.save(staging / "mean.npy", mean)
    np.save(staging / "std.npy", std)
    if skeleton is not None:
        skeleton.save_json(staging / "skeleton.json")
    record = {
        "format": FORMAT,
        **info,
        "feature_size": feature_sizes.pop(),
        "std_floor": std_floor,
        "counts": {name: len(splits.get(name, ())) for name in SPLITS},
    }
    (staging / "dataset.json").write_text(
        json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    if root.exists():
        root.rmdir()  # empty, checked above
    staging.rename(root)
    return _open_prepared(root)
