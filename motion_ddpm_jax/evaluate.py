"""Metrics of generated motion against real motion: `launch.py --mode eval` and `--mode train_autoencoder`.

The metric functions are pure numpy (float64 inside). Those on joint positions take `positions [N, T, J, 3]`
(global, the data's unit: BEAT centimetres, HumanML3D metres, KIT-ML millimetres) and `lengths [N]`; frames at
and past a clip's length are ignored, so padded batches can be passed as they are. Those that need the
joints' hierarchy take a `Skeleton` or a `JointTree` (names and parents alone: the trees of the HumanML3D
layout, HumanML3D's 22 T2M joints and KIT-ML's 21 MMM joints, have no offsets).

- `jitter`: mean acceleration and jerk magnitude (finite differences, units/s^2 and units/s^3).
- `bone_length_error`: per bone the mean relative deviation from a reference length; mean and worst bone.
- `effector_speed`: mean and 95th percentile speed of end effectors (`end_effectors` picks them by name).
- `diversity`: mean pairwise distance of fixed-length, root-relative pose sequences.
- `fit_classifier` / `LinearClassifier.accuracy`: text-conditioning accuracy of a ridge classifier trained
  on real clips' `motion_features`, for datasets whose captions name one of a finite set of classes.
- `frechet_distance`: between Gaussians fitted to real and generated features; `fgd` is the Fréchet
  Gesture Distance (as BEAT's) on the latents of a small convolutional motion autoencoder.

`run(config, workdir)` restores a checkpoint, refuses data whose training-split statistics are not the
checkpoint's (its eval split could hold clips it trained on), generates one sample per real clip of
`config.eval.split` (its caption, its length) and writes the table of metrics (real | generated) as JSON,
with what identifies the evaluation: the clips, the sampler settings used, the FGD autoencoder, versions,
the unit of the positions; the real column of the Fréchet distances compares training clips of the real
clips' classes and lengths (never the real clips themselves) with them. Positions are those of the data's
skeleton (positions, axis_angle) or, for the HumanML3D layout, the joints `humanml3d.recover_from_ric`
decodes (real and generated alike): HumanML3D's 22 for its 263 features, KIT-ML's 21 for its 251; the
humanml3d representation of another size gets no position metrics. With eval.repeats > 1 it samples
the generated clips that many times (seeds sample.seed + k) against one real column (`prepare_comparison`
once, `Comparison.score` per repeat) and reports each generated metric's mean, std and 95% confidence
half-width (`repeat_statistics`).
`train_autoencoder(config)` trains the FGD autoencoder on the training split and saves it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
import zipfile
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from motion_ddpm_jax import __version__, files, humanml3d, kinematics, provenance
from motion_ddpm_jax import representation as layouts
from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.sampling import _is_number  # a real number, not a bool
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

HAND_NAMES = re.compile(r"hand|wrist|finger|thumb|pinky", re.IGNORECASE)
FOOT_NAMES = re.compile(r"foot|toe|ankle|heel", re.IGNORECASE)
DIVERSITY_FRAMES = 32  # every clip is resampled to this many frames before pairwise distances
MAX_PAIRS = 20_000  # diversity: beyond this many pairs, a deterministic random subset of pairs
MAX_CLASSES = 64  # captions as classes only when there are at most this many distinct ones
FEATURE_CHUNK = 64  # clips decoded and summarised at a time (bounds memory on large splits)

AUTOENCODER_FORMAT = "motion-ddpm-jax/fgd-autoencoder/1"
AUTOENCODER_WINDOW_S = 1.0  # window length in seconds (rounded down to a multiple of 4 frames)
AUTOENCODER_HIDDEN = 64
AUTOENCODER_BATCH = 32
AUTOENCODER_LR = 1e-3


class EvaluationError(UserError):
    """An evaluation input (checkpoint, dataset, autoencoder folder, config.eval field) is unusable."""


# ------------------------------------------------------------------------------------------ helpers
def _batch(positions, lengths) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 positions [N, T, J, 3] and int lengths [N]."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 4 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be [N, T, J, 3], got shape {positions.shape}")
    lengths = np.asarray(lengths)
    if lengths.shape != positions.shape[:1] or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be {positions.shape[0]} integers, got {lengths.dtype} {lengths.shape}"
        )
    if np.any(lengths < 0) or np.any(lengths > positions.shape[1]):
        raise ValueError(f"lengths must lie in [0, {positions.shape[1]}], got {lengths.tolist()[:8]}...")
    return positions, lengths.astype(np.int64)


def _rate(fps, where: str) -> float:
    """`fps` checked: a metric per second of a rate of 0 (or NaN) would read as still motion, not an error.
    A number of any kind float() takes (a 0-d array as np.load gives one, a jax scalar: the metrics had
    taken them), not a bool."""
    value = None if isinstance(fps, bool) else np.asarray(fps)
    if (
        value is None
        or value.ndim
        or value.dtype.kind not in "iuf"
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{where}: fps must be a positive number of frames per second, got {fps!r}")
    return float(value)


def _joint_count(positions: np.ndarray, skeleton: Skeleton | JointTree, where: str) -> None:
    """positions [..., J, 3] must hold the skeleton's J joints: with more, the bones would be measured
    between the first J of them without a word."""
    joints = len(skeleton.parents)
    if positions.ndim < 2 or positions.shape[-2:] != (joints, 3):
        raise ValueError(
            f"{where}: positions must be [..., {joints}, 3], the skeleton's {joints} joints; got shape "
            f"{positions.shape}"
        )


def _valid(lengths: np.ndarray, num: int, order: int) -> np.ndarray:
    """bool [N, num]: entry t of an order-`order` difference is valid when frames t..t+order all are."""
    return np.arange(num)[None, :] < (lengths - order)[:, None]


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of values [N, T', ...] over the entries where mask [N, T'] holds (nan when none does)."""
    selected = values[mask]
    return float(selected.mean()) if selected.size else float("nan")


# ------------------------------------------------------------------------------------------ metrics
def jitter(positions, lengths, fps: float) -> dict[str, float]:
    """Mean magnitude of joint acceleration (units/s^2) and jerk (units/s^3) over joints and valid frames.

    positions: [N, T, J, 3]; acceleration = second difference * fps^2, jerk = third difference * fps^3.
    """
    p, lengths = _batch(positions, lengths)
    fps = _rate(fps, "jitter")
    out = {}
    for name, order in (("acceleration", 2), ("jerk", 3)):
        magnitude = np.linalg.norm(np.diff(p, n=order, axis=1), axis=-1) * fps**order
        out[name] = _masked_mean(magnitude, _valid(lengths, magnitude.shape[1], order))
    return out


@dataclasses.dataclass(frozen=True)
class JointTree:
    """The joints of decoded positions as the position metrics need them, without offsets: names (J) and
    parents (J, -1 for the root). A `Skeleton` serves wherever a JointTree does."""

    names: tuple[str, ...]
    parents: tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        object.__setattr__(self, "parents", tuple(int(parent) for parent in self.parents))
        if len(self.names) != len(self.parents):
            raise ValueError(f"{len(self.names)} joint names but {len(self.parents)} parents")
        kinematics.joint_depths(np.asarray(self.parents))  # ValueError on a cycle

    @property
    def root(self) -> int:
        """Index of the single root joint; ValueError for a forest."""
        roots = [j for j, parent in enumerate(self.parents) if parent < 0]
        if len(roots) != 1:
            raise ValueError(f"the joint tree has {len(roots)} roots ({roots[:10]}); expected exactly one")
        return roots[0]


# The trees of the HumanML3D layout by feature size (263: HumanML3D's T2M joints; 251: KIT-ML's MMM joints).
_LAYOUT_TREES = {size: JointTree(lay.names, lay.parents) for size, lay in humanml3d.LAYOUTS.items()}
HUMANML3D_TREE = _LAYOUT_TREES[humanml3d.T2M.features]
KIT_TREE = _LAYOUT_TREES[humanml3d.KIT.features]


def joint_tree(skeleton: Skeleton | None, representation: str, feature_size: int) -> JointTree | None:
    """The joints of `decode_positions`' positions for data of `representation` with `feature_size`
    features: for the HumanML3D layout its tree (`humanml3d.layout`: HumanML3D's 22 T2M joints for 263
    features, KIT-ML's 21 MMM joints for 251), the data's skeleton for the positions and axis_angle
    layouts, None where nothing decodes them (no skeleton, or the humanml3d representation of another
    size)."""
    found = humanml3d.layout(representation, feature_size)
    if found is not None:
        return _LAYOUT_TREES[found.features]
    if skeleton is None or representation not in layouts.REPRESENTATIONS:
        return None
    return JointTree(skeleton.names, skeleton.parents)


def _bones(skeleton: Skeleton | JointTree) -> tuple[np.ndarray, np.ndarray, list[str]]:
    all_parents = np.asarray(skeleton.parents)
    children = kinematics.bone_children(all_parents)
    parents = all_parents[children]
    names = [f"{skeleton.names[p]}->{skeleton.names[c]}" for p, c in zip(parents, children, strict=True)]
    return parents, children, names


def frame_bone_lengths(positions, skeleton: Skeleton | JointTree) -> np.ndarray:
    """Bone lengths [..., B] of positions [..., J, 3], one per non-root joint in increasing joint order
    (`skeleton.bones` order), float64."""
    parents, children, _ = _bones(skeleton)
    p = np.asarray(positions, dtype=np.float64)
    _joint_count(p, skeleton, "frame_bone_lengths")
    return np.linalg.norm(p[..., children, :] - p[..., parents, :], axis=-1)


def mean_bone_lengths(positions, lengths, skeleton: Skeleton | JointTree) -> np.ndarray:
    """Mean length of every bone [B] over the valid frames of positions [N, T, J, 3] (a data reference)."""
    p, lengths = _batch(positions, lengths)
    return frame_bone_lengths(p, skeleton)[_valid(lengths, p.shape[1], 0)].mean(axis=0)


def bone_length_error(positions, lengths, skeleton: Skeleton | JointTree, reference=None) -> dict[str, Any]:
    """Relative bone-length error: per bone the mean over valid frames of |length - ref| / ref.

    reference: [B] lengths in `frame_bone_lengths` order; default the skeleton's offsets (`bone_lengths()`;
    a JointTree has none: pass the data's, e.g. `mean_bone_lengths` of real clips).
    Bones whose reference length is ~0 (below 1e-6 of the longest) have no relative error and are left out
    (all of them, NaN: a reference of zero lengths).
    Returns mean (over bones), worst (the largest), worst_bone ('Parent->Child') and per_bone {name: error}.
    """
    p, lengths = _batch(positions, lengths)
    _, _, names = _bones(skeleton)
    if reference is None and not hasattr(skeleton, "bone_lengths"):
        raise ValueError("a JointTree has no rest bone lengths: pass the reference lengths")
    reference = np.asarray(skeleton.bone_lengths() if reference is None else reference, dtype=np.float64)
    if reference.shape != (len(names),):
        raise ValueError(f"reference must hold {len(names)} bone lengths, got shape {reference.shape}")
    kept = reference > 1e-6 * reference.max()
    deviation = np.abs(frame_bone_lengths(p, skeleton)[..., kept] / reference[kept] - 1.0)
    mask = _valid(lengths, p.shape[1], 0)
    if not mask.any() or not kept.any():  # no frame, or no bone of any length (every offset 0)
        return {"mean": float("nan"), "worst": float("nan"), "worst_bone": None, "per_bone": {}}
    per_bone = deviation[mask].mean(axis=0)
    kept_names = [name for name, keep in zip(names, kept, strict=True) if keep]
    worst = int(np.argmax(per_bone))
    return {
        "mean": float(per_bone.mean()),
        "worst": float(per_bone[worst]),
        "worst_bone": kept_names[worst],
        "per_bone": dict(zip(kept_names, per_bone.tolist(), strict=True)),
    }


def end_effectors(names: Sequence[str], parents) -> dict[str, np.ndarray]:
    """Joint indices of the end effectors by group: `hands` (names with hand/wrist/finger/thumb/pinky) and
    `feet` (foot/toe/ankle/heel); the leaf joints as `leaves` when no name matches either."""
    groups = {
        "hands": [j for j, name in enumerate(names) if HAND_NAMES.search(name)],
        "feet": [j for j, name in enumerate(names) if FOOT_NAMES.search(name)],
    }
    found = {group: np.asarray(joints) for group, joints in groups.items() if joints}
    if found:
        return found
    parents = np.asarray(parents)
    return {"leaves": np.setdiff1d(np.arange(len(names)), parents[parents >= 0])}


def effectors_note(names: Sequence[str], groups: dict[str, np.ndarray]) -> str | None:
    """What `end_effectors` took as hands and feet, where it is not both groups: a skeleton of one's own
    whose hands are named otherwise (e.g. `L_Palm`) had no `speed/hands_*` row, and nothing said why.
    None where both groups were found by name (BEAT's skeleton, the HumanML3D and KIT-ML joints)."""
    if set(groups) == {"hands", "feet"}:
        return None
    from motion_ddpm_jax.config import listed as listed_names

    def listed(joints) -> str:
        return listed_names([names[j] for j in joints])

    patterns = {"hands": HAND_NAMES.pattern.replace("|", "/"), "feet": FOOT_NAMES.pattern.replace("|", "/")}
    if "leaves" in groups:
        return (
            f"speed: no joint name contains {patterns['hands']} (hands) or {patterns['feet']} (feet), so "
            f"speed/leaves_* is the speed of the skeleton's {len(groups['leaves'])} leaf joints "
            f"({listed(groups['leaves'])}); name a hand or foot joint so to have its own row"
        )
    found, missing = next(iter(groups)), ({"hands", "feet"} - set(groups)).pop()
    return (
        f"speed: {found} = the joints whose names contain {patterns[found]} ({listed(groups[found])}); no "
        f"joint name contains {patterns[missing]}, so there is no speed/{missing}_* row"
    )


def effector_speed(positions, lengths, fps: float, joints) -> dict[str, float]:
    """Speed (units/s) of `joints` between consecutive valid frames: its mean and 95th percentile, pooled
    over clips, frames and joints. positions: [N, T, J, 3]."""
    p, lengths = _batch(positions, lengths)
    fps = _rate(fps, "effector_speed")
    joints = np.asarray(joints) if np.size(joints) else np.zeros(0, np.int64)
    if (
        joints.ndim != 1
        or not np.issubdtype(joints.dtype, np.integer)
        or np.any(joints < 0)
        or np.any(joints >= p.shape[2])
    ):
        raise ValueError(
            f"effector_speed: joints must be joint indices in [0, {p.shape[2]}) (positions' J axis), got "
            f"{joints.tolist()!r:.100}"
        )
    speed = np.linalg.norm(np.diff(p[:, :, joints], axis=1), axis=-1) * fps  # [N, T-1, K]
    pooled = speed[_valid(lengths, speed.shape[1], 1)].ravel()
    if not pooled.size:
        return {"mean": float("nan"), "p95": float("nan")}
    return {"mean": float(pooled.mean()), "p95": float(np.percentile(pooled, 95))}


def resampled_poses(positions, lengths, root: int = 0, num_frames: int = DIVERSITY_FRAMES) -> np.ndarray:
    """Root-relative poses [N, num_frames, J, 3]: each clip's valid frames linearly resampled."""
    p, lengths = _batch(positions, lengths)
    if np.any(lengths < 1):
        raise ValueError("every clip needs at least one frame")
    out = np.empty((p.shape[0], num_frames, p.shape[2], 3))
    for i, (clip, length) in enumerate(zip(p, lengths, strict=True)):
        times = np.linspace(0.0, length - 1, num_frames)
        lower = np.floor(times).astype(np.int64)
        upper = np.minimum(lower + 1, length - 1)
        weight = (times - lower)[:, None, None]
        frames = (1.0 - weight) * clip[lower] + weight * clip[upper]
        out[i] = frames - frames[:, root : root + 1]
    return out


def _pairs(count: int, max_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j, or `max_pairs` random ordered pairs i != j drawn with `seed` when there are more."""
    if count * (count - 1) // 2 <= max_pairs:
        return np.triu_indices(count, k=1)
    rng = np.random.default_rng(seed)
    first = rng.integers(count, size=max_pairs)
    return first, (first + rng.integers(1, count, size=max_pairs)) % count


def diversity(
    positions,
    lengths,
    root: int = 0,
    num_frames: int = DIVERSITY_FRAMES,
    max_pairs: int = MAX_PAIRS,
    seed: int = 0,
) -> float:
    """Mean pairwise distance between clips: the RMS over time of the distance between root-relative
    poses (the Euclidean norm over joints and coordinates), after resampling each clip to `num_frames`.
    Units of the positions; nan for fewer than two clips."""
    poses = resampled_poses(positions, lengths, root, num_frames).reshape(len(lengths), -1)
    if len(poses) < 2:
        return float("nan")
    first, second = _pairs(len(poses), max_pairs, seed)
    # 1024 pairs at a time (same values, bit for bit): all 20,000 at once held 3 x 1.35 GB at 88 joints
    distances = [
        np.linalg.norm(poses[first[i : i + 1024]] - poses[second[i : i + 1024]], axis=-1)
        for i in range(0, len(first), 1024)
    ]
    return float(np.mean(np.concatenate(distances)) / np.sqrt(num_frames))


def summary_features(values, lengths, fps: float) -> np.ndarray:
    """Per-channel mean and std over valid frames of values [N, T, ...] and of their velocity (units/s):
    [N, 4 * C] with C the channels after the time axis (zeros where a clip has too few frames)."""
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(*values.shape[:2], -1)
    lengths = np.asarray(lengths, dtype=np.int64)
    parts = []
    for series, order in ((values, 0), (np.diff(values, axis=1) * float(fps), 1)):
        mask = _valid(lengths, series.shape[1], order)[..., None]
        count = np.maximum(mask.sum(axis=1), 1)
        mean = np.where(mask, series, 0.0).sum(axis=1) / count
        var = np.where(mask, np.square(series - mean[:, None]), 0.0).sum(axis=1) / count
        parts += [mean, np.sqrt(var)]
    return np.concatenate(parts, axis=-1)


def motion_features(positions, lengths, fps: float, root: int = 0) -> np.ndarray:
    """Summary features [N, 4 * 3 * (J + 1)] of a clip's motion: `summary_features` of the root-relative
    joint positions and of the root's trajectory (relative to its first frame)."""
    p, lengths = _batch(positions, lengths)
    relative = p - p[:, :, root : root + 1]
    trajectory = p[:, :, root : root + 1] - p[:, :1, root : root + 1]
    return summary_features(np.concatenate([relative, trajectory], axis=2), lengths, fps)


# ------------------------------------------------------------------------------------------ classifier
@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    """A ridge (least-squares one-vs-rest) classifier on standardized features.

    classes: K names; mean, scale: [F] standardization; weights: [F, K]; bias: [K].
    """

    classes: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def predict(self, features) -> np.ndarray:
        """Class names [N] of features [N, F]."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.asarray(self.classes, dtype=object)[np.argmax(z @ self.weights + self.bias, axis=-1)]

    def accuracy(self, features, labels: Sequence[str]) -> float:
        """Fraction of features [N, F] predicted as their label (nan for none)."""
        if len(labels) == 0:
            return float("nan")
        return float(np.mean(self.predict(features) == np.asarray(labels, dtype=object)))


def fit_classifier(features, labels: Sequence[str], ridge: float = 0.1) -> LinearClassifier:
    """Fit a `LinearClassifier` to features [N, F] with string labels [N].

    Least squares onto centred one-hot targets with an L2 penalty of `ridge * N` (the standardized features
    have unit variance, so the penalty is relative to the average eigenvalue of their covariance); solved
    in the smaller of the primal and dual forms.
    """
    x = np.asarray(features, dtype=np.float64)
    classes = tuple(sorted(set(labels)))
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ValueError(f"features must be [{len(labels)}, F], got shape {x.shape}")
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least two classes, got {classes}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 1e-8 * max(float(std.max()), 1e-300), std, 1.0)
    z = (x - mean) / scale
    targets = (np.asarray(labels, dtype=object)[:, None] == np.asarray(classes, dtype=object)[None]).astype(
        np.float64
    )
    bias = targets.mean(axis=0)
    targets = targets - bias
    penalty = ridge * len(z)
    if z.shape[1] <= z.shape[0]:
        weights = np.linalg.solve(z.T @ z + penalty * np.eye(z.shape[1]), z.T @ targets)
    else:
        weights = z.T @ np.linalg.solve(z @ z.T + penalty * np.eye(z.shape[0]), targets)
    return LinearClassifier(classes, mean, scale, weights, bias)


def label_function(train_captions: Sequence[str]) -> tuple[Callable[[str], str | None], str] | None:
    """How a caption names its class, for the conditioning accuracy, decided from the training captions.

    The demo's gesture word when every training caption names exactly one gesture; else the caption
    itself when there are at most MAX_CLASSES distinct ones; None for free text (no finite set of classes).
    Returns (caption -> class or None, a description).
    """
    from motion_ddpm_jax.data.synthetic import GESTURES

    def gesture(caption: str) -> str | None:
        named = {word for word in re.findall(r"[a-z]+", caption.lower()) if word in GESTURES}
        return named.pop() if len(named) == 1 else None

    if train_captions and all(gesture(c) is not None for c in train_captions):
        return gesture, "the gesture word in the caption"
    distinct = {c.strip().lower() for c in train_captions}
    if 2 <= len(distinct) <= MAX_CLASSES:
        return (lambda c: c.strip().lower() if c.strip().lower() in distinct else None), "the caption"
    return None


# ------------------------------------------------------------------------------------------ Fréchet
def sqrtm_psd(matrix) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (eigendecomposition; negative rounding
    errors in the eigenvalues are clipped to 0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1^1/2 sigma2 sigma1^1/2)^1/2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    size = mu1.shape[0]
    shapes = {"mu1": mu1.shape, "mu2": mu2.shape, "sigma1": sigma1.shape, "sigma2": sigma2.shape}
    if mu1.ndim != 1 or mu2.shape != (size,) or sigma1.shape != (size, size) or sigma2.shape != (size, size):
        raise ValueError(
            "frechet_distance: expected means [F] and covariances [F, F] of one F; got "
            + ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        )
    root = sqrtm_psd(sigma1)
    middle = root @ sigma2 @ root
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None)).sum()
    value = np.sum(np.square(mu1 - mu2)) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross
    return float(max(value, 0.0))


def frechet_distance_of(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to features_a [N, F] and features_b [M, F] (nan when
    either has fewer than two rows)."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"frechet_distance_of: features_a and features_b must be [N, F] and [M, F] of one F; got "
            f"{list(a.shape)} and {list(b.shape)}"
        )
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# ------------------------------------------------------------------------------------------ FGD autoencoder
def _leaky(x):
    return nn.leaky_relu(x, 0.2)


class TemporalConv(nn.Module):
    """1-D convolution over time [B, W, C] -> [B, ceil(W / stride), features], 'same' zero padding, written
    as one matmul over stacked shifted frames (XLA:CPU runs that about twice as fast as its convolution)."""

    features: int
    kernel: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        length = x.shape[1]
        x = jnp.pad(x, ((0, 0), ((self.kernel - 1) // 2, self.kernel // 2), (0, 0)))
        patches = [x[:, i : i + length : self.stride] for i in range(self.kernel)]
        return nn.Dense(self.features)(jnp.concatenate(patches, axis=-1))


class Upsample(nn.Module):
    """Twice the frames: [B, W, C] -> [B, 2W, features] (a kernel-3 convolution to 2 * features, each
    output frame split into two)."""

    features: int

    @nn.compact
    def __call__(self, x):
        batch, length, _ = x.shape
        return TemporalConv(2 * self.features)(x).reshape(batch, 2 * length, self.features)


class ConvEncoder(nn.Module):
    """Windows [B, W, F] (standardized) -> latents [B, W / 4, latent]."""

    hidden: int
    latent: int

    @nn.compact
    def __call__(self, x):
        x = _leaky(nn.Dense(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden, 4, 2)(x))
        x = _leaky(TemporalConv(2 * self.hidden, 4, 2)(x))
        return TemporalConv(self.latent)(x)


class ConvDecoder(nn.Module):
    """Latents [B, W / 4, latent] -> windows [B, W, F]."""

    hidden: int
    features: int

    @nn.compact
    def __call__(self, z):
        x = _leaky(TemporalConv(2 * self.hidden)(z))
        x = _leaky(Upsample(self.hidden)(x))
        x = _leaky(Upsample(self.hidden)(x))
        x = _leaky(TemporalConv(self.hidden)(x))
        return nn.Dense(self.features)(x)


class MotionAutoencoder(nn.Module):
    """The FGD motion autoencoder (as BEAT's): per-frame projections and 1-D temporal convolutions, time
    downsampled by 4 in the latent. Windows [B, W, F], W a multiple of 4."""

    features: int
    hidden: int = AUTOENCODER_HIDDEN
    latent: int = 32

    def setup(self):
        self.encoder = ConvEncoder(self.hidden, self.latent)
        self.decoder = ConvDecoder(self.hidden, self.features)

    def __call__(self, x):
        return self.decoder(self.encoder(x))

    def encode(self, x):
        return self.encoder(x)


def window_frames(fps: float) -> int:
    """Autoencoder window: AUTOENCODER_WINDOW_S at `fps`, rounded down to a multiple of 4 (at least 4)."""
    return max(4, 4 * int(fps * AUTOENCODER_WINDOW_S // 4))


def motion_windows(motions: Sequence[np.ndarray], window: int, stride: int | None = None) -> np.ndarray:
    """Windows [M, window, D] cut from clips [T_i, D] every `stride` frames (default window // 2); clips
    shorter than `window` give none."""
    stride = stride or max(window // 2, 1)
    windows = [
        motion[start : start + window]
        for motion in motions
        for start in range(0, len(motion) - window + 1, stride)
    ]
    if not windows:
        depth = motions[0].shape[-1] if len(motions) else 0
        return np.zeros((0, window, depth), np.float32)
    return np.stack(windows).astype(np.float32)


@functools.partial(jax.jit, static_argnames="model")
def _latent_means(params, windows, model: MotionAutoencoder):
    return model.apply({"params": params}, windows, method=MotionAutoencoder.encode).mean(axis=1)


class FgdEncoder:
    """A trained FGD autoencoder: `encode` maps physical feature windows [N, W, D] to latent means [N, L]."""

    def __init__(
        self,
        params,
        mean: np.ndarray,
        std: np.ndarray,
        settings: dict[str, Any],
        *,
        trained: dict[str, Any] | None = None,
        weights_sha256: str | None = None,
    ):
        self.params = params
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.settings = dict(settings)
        self.trained = dict(trained or {})  # autoencoder.json's training summary (final_loss, ...)
        self.weights_sha256 = weights_sha256  # of the autoencoder.npz read, where it was read from a folder
        self.model = MotionAutoencoder(
            int(settings["feature_size"]), int(settings["hidden"]), int(settings["latent"])
        )

    @property
    def window(self) -> int:
        return int(self.settings["window"])

    def encode(self, windows, chunk: int = 256) -> np.ndarray:
        """Latent means (over time) [N, latent], float64, of windows [N, W, D] of physical features."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 3 or windows.shape[1:] != (self.window, self.mean.size):
            raise ValueError(
                f"windows must be [N, {self.window}, {self.mean.size}] for this autoencoder, "
                f"got {windows.shape}"
            )
        out = np.zeros((len(windows), self.model.latent))
        for i in range(0, len(windows), chunk):  # chunks of one shape: one compilation
            part = (windows[i : i + chunk] - self.mean) / self.std
            part = np.pad(part, ((0, chunk - len(part)), (0, 0), (0, 0)))
            out[i : i + chunk] = np.asarray(_latent_means(self.params, part, self.model))[: len(windows) - i]
        return out


def fgd(encoder: FgdEncoder, real_windows, generated_windows) -> float:
    """Fréchet Gesture Distance: the Fréchet distance between the autoencoder's latent means of real and
    generated windows [N, W, D] (physical features)."""
    return frechet_distance_of(encoder.encode(real_windows), encoder.encode(generated_windows))


def init_autoencoder(model: MotionAutoencoder, window: int, seed: int) -> dict[str, Any]:
    """Parameters of `model` drawn with numpy (LeCun-normal kernels, zero biases): compiling flax's
    initialisers would cost more than the whole default training on a CPU."""
    example = jnp.zeros((1, window, model.features))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), example))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key == "kernel":
            return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnames=("model", "learning_rate"))
def _autoencoder_step(params, opt_state, batch, model: MotionAutoencoder, learning_rate: float):
    """One Adam step on the reconstruction MSE of batch [B, W, F] (standardized)."""

    def loss_fn(p):
        return jnp.mean(jnp.square(model.apply({"params": p}, batch) - batch))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def fit_autoencoder(
    motions: Sequence[np.ndarray],
    mean,
    std,
    *,
    window: int,
    latent: int,
    steps: int,
    hidden: int = AUTOENCODER_HIDDEN,
    batch_size: int = AUTOENCODER_BATCH,
    learning_rate: float = AUTOENCODER_LR,
    seed: int = 0,
    log=print,
) -> tuple[Any, np.ndarray]:
    """Train a `MotionAutoencoder` on random windows of clips [T_i, D] (standardized with mean/std) by
    reconstruction MSE with Adam. Returns (params, the loss of every step [steps])."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    clips = [(np.asarray(m, np.float32) - mean) / std for m in motions if len(m) >= window]
    if not clips:
        raise EvaluationError(f"no training clip is at least {window} frames long (the autoencoder's window)")
    starts = np.array([len(c) - window + 1 for c in clips])
    model = MotionAutoencoder(int(mean.size), hidden, latent)
    params = init_autoencoder(model, window, seed)
    opt_state = optax.adam(learning_rate).init(params)
    rng = np.random.default_rng(seed)
    losses = np.zeros(steps)
    log_every = max(steps // 10, 1)
    for step in range(steps):
        which = rng.choice(len(clips), size=batch_size, p=starts / starts.sum())
        offsets = (rng.random(batch_size) * starts[which]).astype(np.int64)
        batch = np.stack([clips[c][o : o + window] for c, o in zip(which, offsets, strict=True)])
        params, opt_state, loss = _autoencoder_step(params, opt_state, batch, model, learning_rate)
        losses[step] = float(loss)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log(f"autoencoder step {step + 1}/{steps}: reconstruction MSE {losses[step]:.4f}")
    return jax.device_get(params), losses


def dataset_fingerprint(dataset) -> str:
    """A short hash of a dataset's record (dataset.json or its equivalent) and statistics."""
    digest = hashlib.sha256(json.dumps(dict(dataset.info), sort_keys=True, default=str).encode())
    digest.update(np.asarray(dataset.mean, np.float32).tobytes())
    digest.update(np.asarray(dataset.std, np.float32).tobytes())
    return digest.hexdigest()[:16]


def autoencoder_dir(config) -> Path:
    """config.eval.autoencoder_dir, or <data.root>/fgd_autoencoder."""
    if config.eval.autoencoder_dir:
        return Path(config.eval.autoencoder_dir)
    if not config.data.root:
        raise EvaluationError("eval.autoencoder_dir and data.root are both empty; set one of them")
    return Path(config.data.root) / "fgd_autoencoder"


def autoencoder_settings(config, dataset) -> dict[str, Any]:
    """What decides an autoencoder: identical settings mean an identical autoencoder."""
    return {
        "format": AUTOENCODER_FORMAT,
        "feature_size": int(dataset.feature_size),
        "window": window_frames(dataset.fps),
        "hidden": AUTOENCODER_HIDDEN,
        "latent": int(config.eval.autoencoder_latent),
        "steps": int(config.eval.autoencoder_steps),
        "batch_size": AUTOENCODER_BATCH,
        "learning_rate": AUTOENCODER_LR,
        "seed": int(config.seed),
        "dataset_fingerprint": dataset_fingerprint(dataset),
        "representation": dataset.representation,
        "fps": float(dataset.fps),
    }


def _flatten(params) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *outer, last = key.split("/")
        node = tree
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


def _read_settings(directory: Path) -> dict[str, Any]:
    path = directory / "autoencoder.json"
    if not path.is_file():
        raise EvaluationError(
            f"{directory}: not an FGD autoencoder folder (no autoencoder.json); train one with "
            f"`python launch.py --mode train_autoencoder --workdir <run>` (or --config <config>), or set "
            "eval.autoencoder_dir"
        )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise EvaluationError(
            f"{path}: expected a JSON object with a 'settings' object, as --mode train_autoencoder writes"
        )
    if record["settings"].get("format") != AUTOENCODER_FORMAT:
        raise EvaluationError(f"{path}: format is not {AUTOENCODER_FORMAT!r}")
    return record


def save_autoencoder(directory, params, mean, std, settings: dict[str, Any], trained: dict[str, Any]) -> Path:
    """Write `autoencoder.npz` (params, mean, std) and `autoencoder.json` (settings, training summary) into
    `directory`, which must not exist or be empty. They are written into a hidden folder beside it,
    `.<name>.partial-<host>-<pid>-<random>`, renamed to `directory` when complete; a failed or interrupted
    write (a full disk: an OSError naming the file; Ctrl-C) removes that folder, and one left by a killed
    process of this host is removed when `directory` is next written (files.staged_folder)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise EvaluationError(
            f"{directory}: exists and is not empty; refusing to write an autoencoder over it"
        )
    arrays = {f"params/{k}": v for k, v in _flatten(params).items()}
    record = {"settings": settings, "trained": trained}
    with files.staged_folder(directory, "partial") as staging, files.writing(directory, staging):
        with files.writing(staging / "autoencoder.npz"):
            np.savez(
                staging / "autoencoder.npz",
                mean=np.asarray(mean, np.float32),
                std=np.asarray(std, np.float32),
                **arrays,
            )
        (staging / "autoencoder.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        if directory.exists():
            directory.rmdir()  # empty, checked above
        staging.rename(directory)
    return directory


def load_autoencoder(directory) -> FgdEncoder:
    """The FgdEncoder saved in `directory` by `save_autoencoder`, with its training summary (`trained`)
    and the sha256 of the very bytes of autoencoder.npz its weights were read from (`weights_sha256`)."""
    directory = Path(directory)
    record = _read_settings(directory)
    path = directory / "autoencoder.npz"
    redo = (
        "train the autoencoder again into a new folder (--mode train_autoencoder with "
        "--config.eval.autoencoder_dir=<new folder>), or copy the whole folder it was saved in"
    )
    if not path.is_file():
        raise EvaluationError(f"{path}: missing (autoencoder.json is there without its weights); {redo}")
    weights = path.read_bytes()
    try:  # a damaged or foreign file had said "pickled (object) data", or a bare KeyError
        with np.load(io.BytesIO(weights), allow_pickle=False) as data:
            flat = {key[len("params/") :]: data[key] for key in data.files if key.startswith("params/")}
            mean, std = data["mean"], data["std"]
    except (ValueError, KeyError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise EvaluationError(
            f"{path}: not the weights --mode train_autoencoder writes (an .npz of params/*, mean and std): "
            f"{error}; {redo}"
        ) from None
    trained = record.get("trained")
    return FgdEncoder(
        _unflatten(flat),
        mean,
        std,
        record["settings"],
        trained=trained if isinstance(trained, dict) else None,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
    )


def train_autoencoder(config, log=print) -> Path:
    """`launch.py --mode train_autoencoder`: train the FGD autoencoder on the training split for
    eval.autoencoder_steps steps and save it to `autoencoder_dir(config)`. An existing folder is never
    overwritten: with identical settings there is nothing to do, otherwise an error names it."""
    from motion_ddpm_jax.data import beat

    dataset = beat.dataset_from_config(config, log=log)
    directory = autoencoder_dir(config)
    settings = autoencoder_settings(config, dataset)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        if not (directory / "autoencoder.json").is_file():  # someone else's folder, or a file
            what = "a folder of other files" if directory.is_dir() else "a file"
            raise EvaluationError(
                f"{directory} is {what} (no autoencoder.json: not an FGD autoencoder); it is left as it is. "
                "Set eval.autoencoder_dir to a new or empty folder for the autoencoder"
            )
        saved = _read_settings(directory)["settings"]
        if saved == json.loads(json.dumps(settings)):
            log(f"{directory}: an FGD autoencoder with these settings exists already; nothing to do")
            return directory
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise EvaluationError(
            f"{directory} holds an FGD autoencoder with other settings ({', '.join(changed)}); it is left as "
            f"it is. Set eval.autoencoder_dir to a new folder, or delete that one yourself"
        )
    if settings["steps"] < 1:
        raise EvaluationError(f"eval.autoencoder_steps must be >= 1, got {settings['steps']}")
    start = time.perf_counter()
    motions = dataset.split("train").motions
    if not any(len(m) >= settings["window"] for m in motions):
        longest = max((len(m) for m in motions), default=0)
        raise EvaluationError(
            f"no training clip of data.root={dataset.root} is at least {settings['window']} frames long, "
            f"the FGD autoencoder's window ({AUTOENCODER_WINDOW_S:g} s at {float(dataset.fps):g} fps; the "
            f"longest of its {len(motions)} training clips has {longest}): FGD needs data of clips of a "
            "second or more"
        )
    log(
        f"training the FGD autoencoder on {len(motions)} clips ({settings['window']}-frame windows, "
        f"latent {settings['latent']}) for {settings['steps']} steps, to be saved in {directory} "
        "(eval.autoencoder_dir)"
    )
    params, losses = fit_autoencoder(
        motions,
        dataset.mean,
        dataset.std,
        window=settings["window"],
        latent=settings["latent"],
        steps=settings["steps"],
        hidden=settings["hidden"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        seed=settings["seed"],
        log=log,
    )
    seconds = time.perf_counter() - start
    tail = max(len(losses) // 20, 1)
    trained = {
        "initial_loss": float(losses[:tail].mean()),
        "final_loss": float(losses[-tail:].mean()),
        "seconds": round(seconds, 2),
        "dataset_root": str(dataset.root),
        "train_clips": len(motions),
    }
    save_autoencoder(directory, params, dataset.mean, dataset.std, settings, trained)
    log(
        f"saved the FGD autoencoder to {directory} ({seconds:.1f}s; reconstruction MSE "
        f"{trained['final_loss']:.4f} over its last {tail} steps, {trained['initial_loss']:.4f} over its "
        "first)"
    )
    return directory


# ------------------------------------------------------------------------------------------ --mode eval
@dataclasses.dataclass(frozen=True)
class Clips:
    """Clips of one side of the comparison.

    motion: [N, T, D] physical features, zero past each length; lengths: [N]; captions: N;
    positions: [N, T, J, 3] global joint positions (the joints of `joint_tree`), or None where the data
    decode to none (`decode_positions`).
    """

    motion: np.ndarray
    lengths: np.ndarray
    captions: tuple[str, ...]
    positions: np.ndarray | None

    def clip_motions(self) -> list[np.ndarray]:
        return [m[:n] for m, n in zip(self.motion, self.lengths, strict=True)]


def _pad(motions: Sequence[np.ndarray], rows: int = 0, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clips [T_i, D] -> zero-padded [max(N, rows), T, D] with T the longest rounded up to `multiple`,
    and lengths [N]."""
    lengths = np.array([len(m) for m in motions], np.int64)
    frames = -(-int(lengths.max(initial=1)) // multiple) * multiple
    out = np.zeros((max(len(motions), rows), frames, motions[0].shape[-1]), np.float32)
    for i, m in enumerate(motions):
        out[i, : len(m)] = m
    return out, lengths


@functools.partial(jax.jit, static_argnames=("skeleton", "representation"))
def _decode(motion, skeleton: Skeleton | None, representation: str):
    if representation == "humanml3d":
        return humanml3d.recover_from_ric(motion)
    return layouts.decode(motion, skeleton, representation)


def decode_positions(motion, skeleton: Skeleton | None, representation: str) -> np.ndarray | None:
    """Global joint positions [N, T, J, 3] of physical features [N, T, D] (the joints of `joint_tree`:
    the skeleton's, or for the HumanML3D layout HumanML3D's 22 or KIT-ML's 21, decoded by
    `humanml3d.recover_from_ric` as sampling decodes generated motion), or None where `joint_tree` is
    None."""
    if joint_tree(skeleton, representation, np.shape(motion)[-1]) is None:
        return None
    if representation == "humanml3d":
        skeleton = None  # (the layout decodes without one: one compiled program whatever it is)
    return np.asarray(_decode(jnp.asarray(motion, jnp.float32), skeleton, representation))


def chosen_indices(split, num_clips: int) -> np.ndarray:
    """Indices of `num_clips` clips of `split` (0 or more than it has: all), evenly spaced through it."""
    count = len(split)
    if count == 0:
        raise EvaluationError(f"the {split.name} split has no clips; set eval.split to a split with clips")
    if num_clips < 0:
        raise EvaluationError(f"eval.num_clips must be >= 0 (0 = the whole split), got {num_clips}")
    take = count if num_clips == 0 or num_clips >= count else num_clips
    return np.unique(np.linspace(0, count - 1, take).round().astype(np.int64))


def clips_fingerprint(ids: Sequence[str], lengths: Sequence[int]) -> dict[str, Any]:
    """What identifies the evaluated clips in the report: their ids and evaluated lengths (frames, after
    the cut at the model's max_motion_length) in order, and the sha256 of the JSON list of [id, length]
    pairs (compact separators), equal between two reports exactly when both lists are."""
    pairs = [[str(i), int(n)] for i, n in zip(ids, lengths, strict=True)]
    digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    return {"sha256": digest, "ids": [p[0] for p in pairs], "lengths": [p[1] for p in pairs]}


def matched_reference(
    real_lengths: Sequence[int],
    real_classes: Sequence[str | None],
    train_lengths: Sequence[int],
    train_classes: Sequence[str | None],
) -> np.ndarray:
    """Indices of training clips that stand in for the real clips in the real column of the Fréchet
    distances: for each real clip in turn, an unused training clip of its class (where it has one and
    such a clip is left) nearest to its length, the lowest index on ties. The generated clips copy the
    real clips' captions and lengths, so a reference drawn without regard to them (as this once was:
    evenly through the training split) compared another mix of classes and lengths and overstated the
    floor. Once every training clip is used, they are used again."""
    train_lengths = np.asarray(train_lengths, np.int64)
    codes: dict[str, int] = {}
    train_codes = np.array([-1 if c is None else codes.setdefault(c, len(codes)) for c in train_classes])
    unused = np.ones(len(train_lengths), bool)
    chosen = []
    for length, label in zip(real_lengths, real_classes, strict=True):
        if not unused.any():
            unused[:] = True
        same = unused & (train_codes == codes.get(label, -2))  # no class (None) or an unseen one: none
        pool = same if same.any() else unused
        distance = np.where(pool, np.abs(train_lengths - int(length)), np.iinfo(np.int64).max)
        index = int(np.argmin(distance))
        unused[index] = False
        chosen.append(index)
    return np.asarray(chosen, np.int64)


def _metrics_of(clips: Clips, tree: JointTree, fps: float, effectors, bone_reference) -> dict[str, Any]:
    """The position metrics of `clips` (none where they have no positions); bone_reference: [B] lengths."""
    out: dict[str, Any] = {}
    if clips.positions is None:
        return out
    p, n = clips.positions, clips.lengths
    for name, value in jitter(p, n, fps).items():
        out[f"jitter/{name}"] = value
    bones = bone_length_error(p, n, tree, bone_reference)
    out["bone_error/mean"], out["bone_error/worst"] = bones["mean"], bones["worst"]
    out["bone_error/worst_bone"] = bones["worst_bone"]
    for group, joints in effectors.items():
        speed = effector_speed(p, n, fps, joints)
        out[f"speed/{group}_mean"], out[f"speed/{group}_p95"] = speed["mean"], speed["p95"]
    out["diversity"] = diversity(p, n, root=tree.root)
    return out


def _features(
    motions: Sequence[np.ndarray], skeleton, representation: str, fps: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """`motion_features` (or, where `joint_tree` is None, `summary_features` of the raw features) of clips
    [T_i, D], decoded a chunk at a time, and the mean length of every bone [B] over all their frames
    (as `mean_bone_lengths`; None without a joint tree)."""
    tree = joint_tree(skeleton, representation, motions[0].shape[-1])
    parts, bone_sums, frames = [], 0.0, 0
    for i in range(0, len(motions), FEATURE_CHUNK):
        chunk = motions[i : i + FEATURE_CHUNK]
        motion, lengths = _pad(chunk, rows=FEATURE_CHUNK, multiple=32)  # few shapes: few compilations
        positions = decode_positions(motion, skeleton, representation)
        if positions is None:
            parts.append(summary_features(motion[: len(chunk)], lengths, fps))
            continue
        positions = positions[: len(chunk)]
        parts.append(motion_features(positions, lengths, fps, tree.root))
        valid = _valid(lengths, positions.shape[1], 0)
        bone_sums = bone_sums + frame_bone_lengths(positions, tree)[valid].sum(axis=0)
        frames += int(valid.sum())
    bones = None if tree is None or frames == 0 else np.asarray(bone_sums) / frames
    return np.concatenate(parts), bones


def position_unit(skeleton: Skeleton | None, representation: str, feature_size: int) -> str | None:
    """The unit of the decoded positions where it is known: the HumanML3D layout's (`humanml3d.Layout.unit`:
    'm' for HumanML3D's 263 features, 'mm' for KIT-ML's 251), 'cm' for BEAT's skeleton (its BVH files and
    the demo's are in centimetres); None otherwise (the data's own unit, as its offsets or arrays hold it)."""
    found = humanml3d.layout(representation, feature_size)
    if found is not None:
        return found.unit
    if skeleton is not None and representation in layouts.REPRESENTATIONS:
        return "cm" if skeleton.names == beat_skeleton().names else None
    return None


def units_text(unit: str | None) -> str:
    """What the report's `units` says for positions in `unit` (`position_unit`; None: the data's own)."""
    where = {"m": "metres (m)", "cm": "centimetres (cm)", "mm": "millimetres (mm)"}.get(
        unit or "", "the data's own unit"
    )
    u = unit or "unit"
    return (
        f"positions and diversity in {where}; speeds in {u}/s, jitter/acceleration in {u}/s^2 and "
        f"jitter/jerk in {u}/s^3; bone errors relative (fractions of the reference bone lengths, no unit)"
    )


MORE_CLIPS = "evaluate 2 or more clips (eval.num_clips; 0 = the whole split)"


def _fit_notes(metric: str, dims: int, counts: dict[str, int], what: str) -> list[str]:
    """A note where a Fréchet distance fits a Gaussian to no more samples than its dimensions (n <= d:
    the covariance has rank at most n - 1 < d), naming the metric, the dimension and the counts; and one
    where a side has a single sample, which makes it NaN (none: the caller says why)."""
    notes = []
    single = [side for side, n in counts.items() if n == 1]
    if single:
        # real and generated: both columns compare the real clips' Gaussian; the reference: the real column
        columns = (
            {"real", "generated"}
            if "real" in single
            else {
                column
                for side, column in (("reference", "real"), ("generated", "generated"))
                if side in single
            }
        )
        which = "" if len(columns) == 2 else f"the {next(iter(columns))} column of "
        notes.append(
            f"{which}{metric} is NaN: a Gaussian needs 2 or more {what} a side, and {', '.join(single)} "
            f"{'has' if len(single) == 1 else 'have'} 1; {MORE_CLIPS}"
        )
    few = {side: n for side, n in counts.items() if 2 <= n <= dims}
    if not few:
        return notes
    shown = ", ".join(f"{n} {side}" for side, n in few.items())
    return notes + [
        f"{metric}: Gaussians in {dims} dimensions fitted to {shown} {what}, no more samples than "
        "dimensions (each covariance has rank at most n - 1 < d): the value depends strongly on the "
        "sample count; compare it only between evaluations of the same number of clips"
    ]


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What `compare` computes once of the real clips, to score generated clips of their captions and
    lengths (`score`) as often as they are sampled: eval.repeats scores several generated sets against
    one real column, which does not depend on the sampling seed.

    real_column: {metric: value} of the real clips; real_features: [N, F] (`_features`); tree and
    effectors: the joints of the position metrics (None without positions); bone_reference: [B];
    classifier / to_class: the conditioning classifier and caption -> class (None where skipped);
    real_latents: [W, latent] FGD latents of the real clips' windows (None without an autoencoder);
    head_notes / class_notes: the notes that precede the generated side's Fréchet note / FGD notes.
    """

    real: Clips
    real_column: dict[str, Any]
    skeleton: Skeleton | None
    representation: str
    fps: float
    tree: JointTree | None
    effectors: dict[str, np.ndarray] | None
    bone_reference: np.ndarray | None
    real_features: np.ndarray
    reference_count: int
    classifier: LinearClassifier | None
    to_class: Callable[[str], str | None]
    encoder: FgdEncoder | None
    real_latents: np.ndarray | None
    reference_windows: int
    head_notes: tuple[str, ...]
    class_notes: tuple[str, ...]

    def score(self, generated: Clips) -> tuple[dict[str, Any], list[str]]:
        """The generated column ({metric: value}, in the real column's order) of `generated` (the real
        clips' captions and lengths), and every note of the comparison in `compare`'s order."""
        column: dict[str, Any] = {}
        if self.tree is not None:
            column.update(_metrics_of(generated, self.tree, self.fps, self.effectors, self.bone_reference))
        features = _features(generated.clip_motions(), self.skeleton, self.representation, self.fps)[0]
        column["frechet/features"] = frechet_distance_of(self.real_features, features)
        notes = list(self.head_notes)
        notes += _fit_notes(
            "frechet/features",
            self.real_features.shape[1],
            {"real": len(self.real_features), "generated": len(features), "reference": self.reference_count},
            "clips",
        )
        if self.classifier is not None:
            classes = [self.to_class(c) for c in generated.captions]
            known = [i for i, label in enumerate(classes) if label in self.classifier.classes]
            column["conditioning_accuracy"] = self.classifier.accuracy(
                features[known], [classes[i] for i in known]
            )
        notes += self.class_notes
        if self.encoder is None:
            column["fgd"] = None
            return column, notes
        windows = motion_windows(generated.clip_motions(), self.encoder.window)
        column["fgd"] = frechet_distance_of(self.real_latents, self.encoder.encode(windows))
        notes.append(f"FGD on {len(self.real_latents)} real / {len(windows)} generated windows")
        notes += _fit_notes(
            "fgd",
            int(self.encoder.model.latent),
            {"real": len(self.real_latents), "generated": len(windows), "reference": self.reference_windows},
            "windows",
        )
        if not len(self.real_latents) or not len(windows):
            longest = max((len(m) for m in self.real.clip_motions()), default=0)
            notes.append(
                f"FGD is NaN: its autoencoder reads windows of {self.encoder.window} frames, and the "
                f"compared clips are shorter (the longest real clip here: {longest} frames; clips are capped "
                "at the model's data.max_motion_length)"
            )
        return column, notes

    def table(self, generated_column: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """{metric: {"real": v, "generated": v}} of the real column and a generated one (a metric missing
        from a side is None there)."""
        names = list(dict.fromkeys([*self.real_column, *generated_column]))
        return {
            name: {"real": self.real_column.get(name), "generated": generated_column.get(name)}
            for name in names
        }

    def below_real_notes(self, table: dict[str, dict[str, Any]]) -> list[str]:
        """A note for each Fréchet distance whose generated value is below the real column's: real motion
        of the clips' kind (the matched training clips) scores the real column, which a generator of motion
        as real as the data's matches on average; below it, at these counts the two differ by the
        estimate's noise, or the samples vary less than real motion (a half-trained model had ranked
        better than the data by FGD on 11 clips)."""
        counts = {"frechet/features": (len(self.real_features), "clips")}
        if self.real_latents is not None:
            counts["fgd"] = (len(self.real_latents), "real windows")
        notes = []
        for metric, (count, what) in counts.items():
            real, generated = (
                (table.get(metric) or {}).get("real"),
                (table.get(metric) or {}).get("generated"),
            )
            if not (_is_number(real) and _is_number(generated)) or not generated < real:
                continue
            notes.append(
                f"{metric}: the generated clips score {generated:.4g}, below the real column's {real:.4g} "
                f"(other real clips of their kind, which motion as real as the data's matches on average): "
                f"at {count} {what} that is the estimate's noise, or samples of less variety than real "
                "motion, not a model better than the data; compare models on more clips (eval.num_clips=0: "
                "the whole split) and over eval.repeats"
            )
        return notes


def prepare_comparison(
    real: Clips,
    train_motions: Sequence[np.ndarray],
    train_captions: Sequence[str],
    *,
    skeleton: Skeleton | None,
    representation: str,
    fps: float,
    encoder: FgdEncoder | None = None,
    reference_pool: Sequence[int] | None = None,
) -> Comparison:
    """The real side of `compare` (its arguments but the generated clips), computed once."""
    notes: list[str] = []
    tree = joint_tree(skeleton, representation, real.motion.shape[-1])
    train_features, train_bones = _features(list(train_motions), skeleton, representation, fps)
    effectors, bone_reference = None, None
    if tree is None or real.positions is None:
        if representation == "humanml3d" and tree is None:
            sizes = " and ".join(f"{lay.dataset}'s {f}" for f, lay in humanml3d.LAYOUTS.items())
            notes.append(
                f"no joint tree for the humanml3d representation's {real.motion.shape[-1]} features: only "
                f"{sizes} decode to joint positions here, so the position metrics (jitter, bones, speed, "
                "diversity) are skipped and frechet/features compares statistics of the raw features"
            )
        else:
            notes.append(
                f"no skeleton for {representation} data: position metrics (jitter, bones, speed, "
                "diversity) skipped"
            )
        tree, column = None, {}
    else:
        effectors = end_effectors(tree.names, tree.parents)
        if note := effectors_note(tree.names, effectors):
            notes.append(note)
        found = humanml3d.layout(representation, real.motion.shape[-1])
        if found is not None:
            bone_reference, counted = train_bones, len(train_motions)
            kept = set() if reference_pool is None else {int(i) for i in reference_pool}
            if 0 < len(kept) < len(train_motions):  # (none left: all of them, as before)
                # eval.split=train: the evaluated clips (and their relatives) left out, as for the Fréchet
                # distances' pool: the real column is not measured against a mean it is part of. The
                # frame-weighted mean of all, less the few left out (decoding those alone, not the split)
                out = [train_motions[i] for i in range(len(train_motions)) if i not in kept]
                gone, total = sum(len(m) for m in out), sum(len(m) for m in train_motions)
                out_bones = _features(out, skeleton, representation, fps)[1]
                bone_reference = (np.asarray(train_bones) * total - np.asarray(out_bones) * gone) / (
                    total - gone
                )
                counted = len(kept)
            notes.append(
                f"bone_error: relative to the mean bone lengths of the {counted} training clips "
                f"({found.dataset}'s {found.joints} joints come without skeleton offsets"
                + (
                    f"; the {len(train_motions) - counted} evaluated ones and their relatives left out)"
                    if counted < len(train_motions)
                    else ")"
                )
            )
        else:
            bone_reference = skeleton.bone_lengths()
        column = _metrics_of(real, tree, fps, effectors, bone_reference)
        if len(real.lengths) < 2:
            notes.append(
                "diversity is NaN: the mean distance between pairs of clips, and 1 clip makes no pair; "
                + MORE_CLIPS
            )

    labels = label_function(list(train_captions))
    to_class = labels[0] if labels is not None else (lambda caption: None)
    train_labels = [to_class(c) for c in train_captions]
    real_labels = [to_class(c) for c in real.captions]  # the generated clips share these captions
    real_features = _features(real.clip_motions(), skeleton, representation, fps)[0]
    pool = (
        np.arange(len(train_motions), dtype=np.int64)
        if reference_pool is None
        else np.unique(np.asarray(list(reference_pool), np.int64))
    )
    reference = np.zeros(0, np.int64)
    if len(pool):
        picks = matched_reference(
            real.lengths, real_labels, [len(train_motions[i]) for i in pool], [train_labels[i] for i in pool]
        )
        reference = pool[picks]
    column["frechet/features"] = frechet_distance_of(real_features, train_features[reference])
    matched = (
        "of its real clip's class and nearest its length" if labels else "nearest its real clip's length"
    )
    notes.append(
        "frechet/features and fgd: generated = real vs generated clips; real = real vs as many training "
        f"clips, each {matched} (what two sets of real motion differ by at this sample size)"
    )
    left_out = len(train_motions) - len(pool)
    outside = f" outside the {left_out} evaluated ones" if left_out else ""
    if not len(pool):
        notes.append(
            f"the real column of frechet/features and fgd is NaN: no training clip is left{outside} to "
            "compare the real clips with (evaluate fewer clips with eval.num_clips, or another eval.split)"
        )
    elif len(np.unique(reference)) < len(reference):
        notes.append(
            f"the real column of frechet/features and fgd reuses training clips: {len(pool)} training clips"
            f"{outside} stand in for {len(reference)} real clips"
        )
    if labels and len(pool):
        # matched_reference takes a clip of any class where none of the real clip's is left (or it has
        # none): the note above says "of its real clip's class", so say where that did not hold.
        paired = zip(reference, real_labels, strict=True)
        other = sum(label is None or train_labels[i] != label for i, label in paired)
        if other:
            notes.append(
                f"the real column of frechet/features and fgd: for {other} of the {len(reference)} real "
                f"clips no unused training clip of their class was left{outside} (or the caption names "
                "no class), so a training clip of another class stands in for it: that real column "
                "compares another mix of classes than the generated one"
            )

    class_notes: list[str] = []
    classifier = None
    if labels is None:
        distinct = sorted({c.strip().lower() for c in train_captions})
        class_notes.append(
            f"every training clip has the caption {distinct[0]!r}: one class, conditioning accuracy skipped"
            if len(distinct) == 1
            else f"captions are free text ({len(distinct)} distinct training captions, more than the "
            f"{MAX_CLASSES} classes a caption may name): conditioning accuracy skipped"
            if distinct
            else "no training captions: conditioning accuracy skipped"
        )
    else:
        how = labels[1]
        keep = [i for i, label in enumerate(train_labels) if label is not None]
        if len({train_labels[i] for i in keep}) < 2:
            class_notes.append(
                "fewer than two caption classes in the training split: conditioning accuracy skipped"
            )
        else:
            classifier = fit_classifier(train_features[keep], [train_labels[i] for i in keep])
            known = [i for i, label in enumerate(real_labels) if label in classifier.classes]
            column["conditioning_accuracy"] = classifier.accuracy(
                real_features[known], [real_labels[i] for i in known]
            )
            compared = [label for label in real_labels if label in classifier.classes]
            if not compared:
                class_notes.append(
                    f"conditioning accuracy is NaN: none of the {len(real_labels)} compared clips has a "
                    f"caption class ({how}) of the training split's {len(classifier.classes)}, so there "
                    "is nothing to score (captions that are sentences rather than a small set of labels "
                    "rarely repeat across splits)"
                )
            majority = max(collections.Counter(compared).values(), default=0) / max(len(compared), 1)
            scored = (
                f"; scored on the {len(compared)} of the {len(real_labels)} compared clips whose class "
                "the training split has"
                if len(compared) < len(real_labels)
                else ""
            )
            class_notes.append(
                f"conditioning accuracy: a ridge classifier of motion features trained on {len(keep)} "
                f"training clips, class = {how} ({len(classifier.classes)} classes, chance "
                f"{1 / len(classifier.classes):.3f}; naming the most frequent class of the compared clips "
                f"scores {majority:.3f}){scored}"
            )
            real_accuracy, chance = column["conditioning_accuracy"], 1 / len(classifier.classes)
            if compared and real_accuracy < chance:
                # Seen on one's own mocap: real 0.0, generated 1.0 (4 clips of a speaker the 20 training
                # clips lack, one of them the only clip of its class): read as a model beating the data.
                counts = collections.Counter(train_labels[i] for i in keep)
                fewest = min(counts, key=lambda label: (counts[label], label))
                class_notes.append(
                    f"conditioning accuracy: the real clips score {real_accuracy:.3f}, below chance "
                    f"({chance:.3f}): the classifier does not recognise this split's real motion (other "
                    "recordings or performers than the training split's, or too few training clips per "
                    f"class: {fewest!r} has {counts[fewest]}), so the generated column says how closely "
                    "the samples resemble the training clips, not how well they follow their captions"
                )

    real_latents, reference_windows = None, 0
    if encoder is not None:
        real_latents = encoder.encode(motion_windows(real.clip_motions(), encoder.window))
        train_windows = motion_windows([train_motions[i] for i in reference], encoder.window)
        reference_windows = len(train_windows)
        column["fgd"] = (
            frechet_distance_of(real_latents, encoder.encode(train_windows))
            if len(train_windows)
            else math.nan
        )
    else:  # a row all the same (null in the JSON, '-' in the table), so that every report has the key
        column["fgd"] = None
    return Comparison(
        real=real,
        real_column=column,
        skeleton=skeleton,
        representation=representation,
        fps=fps,
        tree=tree,
        effectors=effectors,
        bone_reference=bone_reference,
        real_features=real_features,
        reference_count=len(reference),
        classifier=classifier,
        to_class=to_class,
        encoder=encoder,
        real_latents=real_latents,
        reference_windows=reference_windows,
        head_notes=tuple(notes),
        class_notes=tuple(class_notes),
    )


def compare(
    real: Clips,
    generated: Clips,
    train_motions: Sequence[np.ndarray],
    train_captions: Sequence[str],
    *,
    skeleton: Skeleton | None,
    representation: str,
    fps: float,
    encoder: FgdEncoder | None = None,
    reference_pool: Sequence[int] | None = None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every metric of real and generated clips: ({metric: {"real": v, "generated": v}}, notes).

    The classifier is trained on the training clips; its accuracy on the real clips is the ceiling the
    generated ones are measured against. The Fréchet distances compare each side with the real clips; their
    real column compares as many training clips, matched to the real clips' classes and lengths
    (`matched_reference`), with the real clips: what other real motion of the same kind scores.
    reference_pool: the indices of the training clips that real column may take (default all; without
    the real clips themselves when they come from the training split).
    The position metrics take the joints of `joint_tree` (the skeleton's, or those of the HumanML3D layout:
    HumanML3D's 22, KIT-ML's 21); the bone-length error is relative to the skeleton's offsets, or without
    offsets (the HumanML3D layout) to the mean bone lengths of the training clips (`mean_bone_lengths`
    over all their frames).
    `prepare_comparison` computes the real side once and `Comparison.score` the generated one: this is
    the two for one generated set.
    """
    comparison = prepare_comparison(
        real,
        train_motions,
        train_captions,
        skeleton=skeleton,
        representation=representation,
        fps=fps,
        encoder=encoder,
        reference_pool=reference_pool,
    )
    column, notes = comparison.score(generated)
    table = comparison.table(column)
    return table, notes + comparison.below_real_notes(table)


def format_table(table: dict[str, dict[str, Any]], half_widths: dict[str, float | None] | None = None) -> str:
    """The metrics as an aligned text table: metric | real | generated. half_widths: {metric: the half-width
    of the generated value's confidence interval} (eval.repeats > 1), shown as `mean ± half-width`."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, str):
            return value
        return f"{value:.4g}"

    def generated(name: str, value) -> str:
        half = (half_widths or {}).get(name)
        return cell(value) if half is None else f"{cell(value)} ± {half:.2g}"

    rows = [("metric", "real", "generated")] + [
        (name, cell(v.get("real")), generated(name, v.get("generated"))) for name, v in table.items()
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [" | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


CONFIDENCE = 0.95  # eval.repeats > 1: the level of the generated column's confidence intervals


def t_quantile(count: int, confidence: float = CONFIDENCE) -> float:
    """Student's t quantile of a two-sided `confidence` interval of the mean of `count` values:
    t_{(1 + confidence) / 2, count - 1}."""
    import scipy.stats

    return float(scipy.stats.t.ppf((1.0 + confidence) / 2.0, count - 1))


def repeat_statistics(values: Sequence[Any], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """One metric of the generated column over n >= 2 repeats: {"values": the n values, "mean", "std",
    "ci95"}. Numbers (float64): their mean, sample standard deviation (ddof=1) and the half-width of the
    `confidence` interval of the mean, t_quantile(n) * std / sqrt(n) (a NaN value makes all three NaN).
    Other values (bone_error/worst_bone's bone name; None where a metric is not computed): "mean" is the
    most frequent value (the earliest repeat's on a tie), "std" and "ci95" None. Numbers mixed with other
    values: those count as NaN."""
    values = list(values)
    if len(values) < 2:
        raise ValueError(f"repeat_statistics needs at least 2 values, got {len(values)}")
    if not any(_is_number(v) for v in values):
        mode = collections.Counter(values).most_common(1)[0][0]
        return {"values": values, "mean": mode, "std": None, "ci95": None}
    # Numbers with a None among them (a metric one repeat could not compute): NaN, as a NaN value is.
    x = np.asarray([v if _is_number(v) else math.nan for v in values], np.float64)
    std = float(np.std(x, ddof=1))
    half = t_quantile(len(x), confidence) * std / math.sqrt(len(x))
    return {"values": [float(v) for v in x], "mean": float(np.mean(x)), "std": std, "ci95": half}


def _refuse_a_folder(path: Path) -> None:
    if path.is_dir():
        raise EvaluationError(f"eval.output {path} is a folder; eval.output names the metrics file (a .json)")


def _check_output(path: Path) -> None:
    """EvaluationError unless the metrics file can be written at `path` (a folder there, or a folder of
    it that cannot be made or written: a read-only workdir): checked before the sampling, not after,
    and without making anything."""
    _refuse_a_folder(path)
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:  # the folder that would hold what is made
        folder = folder.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        why = "permission denied or a read-only file system" if folder.is_dir() else "not a folder"
        raise EvaluationError(
            f"{folder}: cannot write the metrics there ({why}); set --config.eval.output to a .json file in "
            "a writable folder"
        )


def write_new_json(path: Path, payload: Any) -> Path:
    """Write `payload` to `path`, or to `<stem>_1<suffix>`, `_2`, ... when that exists (never overwrite).

    The JSON is written to a hidden file beside `path` (`.<name>.tmp-<host>-<pid>-<random>`, removed
    afterwards, and one left by a killed process of this host at the next write) and then linked to the
    first free name (files.link_new: a link never replaces a file): a full disk or a kill never leaves a
    partial file under these names. A failure is an OSError naming `path`."""
    path = Path(os.path.abspath(path))
    _refuse_a_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(files.json_safe(payload), indent=1, allow_nan=False) + "\n"
    with files.staged_file(path) as temporary, files.writing(path, temporary):
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
        for attempt in range(10_000):
            candidate = path if attempt == 0 else path.with_name(f"{path.stem}_{attempt}{path.suffix}")
            try:
                files.link_new(temporary, candidate)
                return candidate
            except FileExistsError:
                continue
    raise EvaluationError(f"{path}: too many files of this name already; set eval.output to a new file")


def _fgd_encoder(config, dataset) -> tuple[FgdEncoder | None, list[str]]:
    """The FGD autoencoder trained on `dataset`, or None and a note that says why not."""
    directory = autoencoder_dir(config)
    if not (directory / "autoencoder.json").is_file() and directory.exists():
        if not directory.is_dir() or any(directory.iterdir()):
            # (the note below had advised training into it, which train_autoencoder refuses)
            what = "a folder of other files" if directory.is_dir() else "a file"
            return None, [
                f"FGD skipped: eval.autoencoder_dir {directory} is {what}, not an FGD autoencoder (no "
                "autoencoder.json); set --config.eval.autoencoder_dir to the folder `python launch.py --mode "
                "train_autoencoder` saved one in, or train one into a new folder (that mode with "
                "--config.eval.autoencoder_dir=<a new folder>) and evaluate with that folder"
            ]
    if not (directory / "autoencoder.json").is_file():
        return None, [
            f"FGD skipped: no autoencoder in {directory}; train one with `python launch.py --mode "
            f"train_autoencoder --workdir <run>` (or --config <config>; eval.autoencoder_steps steps"
            + (
                f"; with --config.eval.autoencoder_dir={directory}, as here"
                if config.eval.autoencoder_dir
                else ""
            )
            + ")"
        ]
    encoder = load_autoencoder(directory)
    here = dataset_fingerprint(dataset)
    if encoder.settings.get("dataset_fingerprint") != here:
        # (the fingerprint hashes dataset.json and the statistics: another preparation of the same
        # recordings, elsewhere, differs too; the note says which data and what to do)
        return None, [
            f"FGD skipped: the autoencoder in {directory} was trained on other data (data.root="
            f"{encoder.trained.get('dataset_root') or '(not recorded)'}, dataset fingerprint "
            f"{encoder.settings.get('dataset_fingerprint')}) than data.root={dataset.root} (fingerprint "
            f"{here}: its dataset.json or mean/std differ); train one for this data with `python launch.py "
            "--mode train_autoencoder` and --config.eval.autoencoder_dir=<a new folder>, then evaluate "
            "with that eval.autoencoder_dir"
        ]
    return encoder, []


def autoencoder_record(directory, encoder: FgdEncoder) -> dict[str, Any]:
    """What identifies the FGD autoencoder a report used: its folder (absolute), the settings and training
    summary stored with it (seed, steps, latent size, window; final_loss where stored, else None) and the
    sha256 of its weights file, autoencoder.npz."""
    return {
        "directory": os.path.abspath(directory),
        "settings": dict(encoder.settings),
        "final_loss": encoder.trained.get("final_loss"),
        "trained": dict(encoder.trained),
        "weights_sha256": encoder.weights_sha256,
    }


STATS_TOLERANCE = 1e-5  # relative: the same data gives the same float32 statistics, bit for bit


def _split_seed(dataset) -> int | None:
    """The data.split_seed the dataset was prepared with, as its dataset.json records it (`--mode
    prepare`); None where it records none (a folder written otherwise: its splits are its own)."""
    fingerprint = dataset.info.get("fingerprint")
    options = fingerprint.get("options") if isinstance(fingerprint, dict) else None
    seed = options.get("split_seed") if isinstance(options, dict) else None
    return None if seed is None else int(seed)


def _same_statistics(mean_here, std_here, mean_run, std_run) -> tuple[bool, float, float]:
    """(equal to a relative STATS_TOLERANCE, largest mean gap in units of the run's std, largest relative
    std change) of a dataset's statistics against a run's. The mean gap is that of the features whose
    means differ (0 where none does): a mean within the tolerance of its value (a feature far from 0 with
    a small std) had been named as a gap of several std beside stds that did differ."""
    mean_run, std_run = np.asarray(mean_run, np.float64), np.asarray(std_run, np.float64)
    mean_gap = np.abs(mean_here - mean_run)  # within the tolerance of the std or of the value
    mean_ok = mean_gap <= STATS_TOLERANCE * np.maximum(std_run, np.abs(mean_run))
    std_ratio = np.abs(std_here / std_run - 1.0)
    same = bool(mean_ok.all() and (std_ratio <= STATS_TOLERANCE).all())
    return same, float(np.max(np.where(mean_ok, 0.0, mean_gap / std_run))), float(np.max(std_ratio))


def init_chain(metadata: dict[str, Any], mean, std) -> list[dict[str, Any]]:
    """The runs whose weights led to a checkpoint, newest first: its own run, the run its train.init_from
    named, that run's own source, and so on (as far as the checkpoints record: versions before 2026-12-07
    recorded the first source only), each {"workdir", "step", "data_root", "mean", "std"}: where it is (None
    for the checkpoint's own run), the data it trained on and that data's training-split statistics. A
    fine-tuned run's own data's statistics are in its record (`data_statistics`, or where a record lacks
    them the checkpoint's); the first run's are those every later one normalises with (`mean`, `std`: the
    checkpoint's)."""
    runs = []
    here = {"workdir": None, "step": None, "data_root": metadata.get("data_root")}
    record = metadata.get("init_from")
    while isinstance(record, dict):
        own = record.get("data_statistics") or {"mean": mean, "std": std}
        runs.append({**here, "mean": own["mean"], "std": own["std"]})
        here = {key: record.get(key) for key in ("workdir", "step", "data_root")}
        record = record.get("init_from")
    runs.append({**here, "mean": mean, "std": std})
    return runs


def check_same_statistics(loaded, dataset, config, workdir) -> int:
    """EvaluationError unless the dataset's training-split statistics (mean / std, as the dataset gives
    them) are the ones the checkpoint trained with (its metadata's mean / std), to a relative
    STATS_TOLERANCE. Other statistics mean another training split (another data.root, data.split_seed
    or dataset), so the clips of eval.split may be clips the checkpoint trained on. A run started from
    another's weights (train.init_from) normalises with that run's statistics: its own data's, which its
    checkpoints record apart, are compared, and those of the data of the runs it descends from
    (`init_chain`) are accepted too: evaluating a fine-tuned run on the data it started from shows what it
    kept of it (a forgetting check), on clips that the source's run held out as well. Returns the
    position in `init_chain` of the run whose data matched: 0 for the checkpoint's own."""
    mean_here, std_here = np.asarray(dataset.mean, np.float64), np.asarray(dataset.std, np.float64)
    metadata = getattr(loaded, "metadata", None) or {}
    chain = init_chain(metadata, loaded.mean, loaded.std)
    for position, run in enumerate(chain):
        same, gap, change = _same_statistics(mean_here, std_here, run["mean"], run["std"])
        if same:
            return position
        if position == 0:
            mean_gap, std_change = gap, change
    from motion_ddpm_jax.train import statistics_change

    gaps = statistics_change(mean_gap, std_change, STATS_TOLERANCE)
    saved = metadata.get("config") if isinstance(metadata.get("config"), dict) else {}
    saved_data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    trained_root = metadata.get("data_root") or saved_data.get("root") or "(not recorded)"
    trained_seed = saved_data.get("split_seed", "(not recorded)")
    trained_floor = saved_data.get("std_floor", "(not recorded)")
    seed_here = _split_seed(dataset)
    seed_here = (
        f"{int(config.data.split_seed)} (the config's; the dataset records none)"
        if seed_here is None
        else seed_here
    )
    raise EvaluationError(
        f"the checkpoint in {workdir} trained on other data than data.root={dataset.root} holds: that "
        f"dataset's training-split statistics differ from the checkpoint's ({gaps}), "
        "so its "
        f"{config.eval.split} split may hold clips the checkpoint trained on. The checkpoint's run trained "
        f"on data.root={trained_root} with data.split_seed={trained_seed} and data.std_floor="
        f"{trained_floor}; here data.root={dataset.root}, data.split_seed={seed_here}, data.std_floor="
        f"{config.data.std_floor:g}. Evaluate without --config and --config.data.* overrides (the data the "
        f"checkpoint's run trained on), or set --config.data.root (and --config.data.split_seed, "
        f"--config.data.std_floor) to that run's values"
    )


def with_checkpoint_data(
    config, saved: dict[str, Any], keep: Collection[str] = (), trained_root: str | None = None
):
    """A copy of `config` whose data.* are those the checkpoint's run trained on (`saved`: its config, as
    the checkpoint's metadata holds it), but for the data fields named in `keep` (those a user set on the
    command line: config's values stay). A data field the saved config lacks counts as its default, as
    when the run resumes (`config.with_defaults`). A relative data.root becomes `trained_root` (the
    absolute folder the run trained on, as its checkpoint records it) where that exists, unless the
    relative one names that same folder from here: evaluating from another folder reads the run's data,
    rather than preparing it anew there, or reading another folder of the same relative name there (a
    demo set prepared in another clone had been read, without its FGD autoencoder). The relative one
    stays where the trained folder is gone (data moved, or an older checkpoint that records none)."""
    import ml_collections

    from motion_ddpm_jax import config as config_lib

    data = config_lib.with_defaults(saved)["data"]
    root = Path(str(data["root"]))
    if trained_root and not root.is_absolute() and Path(trained_root).is_dir():
        same = root.exists() and root.resolve() == Path(trained_root).resolve()
        if not same:
            data["root"] = str(trained_root)
    data.update({name: config.data[name] for name in keep})
    out = ml_collections.ConfigDict(config.to_dict())
    out.data = ml_collections.ConfigDict(data)
    return out


def _recording_of(clip_id: str, ids: Collection[str]) -> str:
    """The motion a HumanML3D-layout clip id comes from: its sub-clip tag cut (`000004#0.5-3`) and its
    mirror's 'M' (`M000004`, where `000004` is a clip of the split too)."""
    base = clip_id.split("#", 1)[0]
    return base[1:] if base.startswith("M") and base[1:] in ids else base


def fine_tuned_on(
    roots: Sequence[str | os.PathLike | None],
    evaluated: Sequence[str],
    here: str | os.PathLike | None = None,
) -> tuple[list[str] | None, list[Path]]:
    """(the clips of `evaluated` that runs trained on the data at `roots` trained on, by their split files
    `<root>/train.txt`; the split files that list any) for eval of a fine-tuned run on the data of a run it
    descends from (a forgetting check): that run held those clips out, but the later runs' data (`roots`:
    the fine-tuned run's, and those of the runs between) may split the same recordings otherwise (on 12 of
    12 here: the demo prepared with split_seed 0 and 2), and the metrics would then say what they learned
    of them, not what was kept. A clip counts by its motion (`_recording_of`: a sub-clip's or mirrored
    copy's id is its clip's). `here`: the evaluated data's folder; an id of both whose motion file reads in
    both folders and differs is another recording of the same name (two datasets that number their clips
    alike: one's own data fine-tuned from HumanML3D), not counted. (None, [the file]) where a split file
    cannot be read; (None, []) where a root is not recorded (None)."""
    seen: set[str] = set()
    files = []
    for root in roots:
        if not root:
            return None, []
        path = Path(str(root)) / "train.txt"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None, [path]
        trained = {line.strip() for line in text.splitlines() if line.strip()}
        bases = {clip_id.split("#", 1)[0] for clip_id in trained} | {c.split("#", 1)[0] for c in evaluated}
        motions: dict[str, list[str]] = {}
        for clip_id in sorted(trained):
            motions.setdefault(_recording_of(clip_id, bases), []).append(clip_id)
        found = {
            clip_id
            for clip_id in evaluated
            if any(
                here is None or _same_motion(Path(str(root)), Path(here), other)
                for other in motions.get(_recording_of(clip_id, bases), [])
            )
        }
        if found:
            files.append(path)
        seen |= found
    return [clip_id for clip_id in evaluated if clip_id in seen], files


def _same_motion(root: Path, here: Path, clip_id: str) -> bool:
    """Whether clip `clip_id` of the datasets at `root` and `here` may be one motion: False only where its
    motion file (the prepared layout's motions/<id>.npy, HumanML3D's new_joint_vecs/<id>.npy) reads in both
    and the arrays differ."""
    arrays = []
    for folder in (root, here):
        for sub in ("motions", "new_joint_vecs"):
            file = folder / sub / f"{clip_id}.npy"
            if file.is_file():
                try:
                    arrays.append(np.load(file, allow_pickle=False))
                except (OSError, ValueError):
                    return True
                break
        else:
            return True
    return arrays[0].shape == arrays[1].shape and bool(np.array_equal(arrays[0], arrays[1]))


def related_clips(ids: Sequence[str], chosen: Sequence[int]) -> np.ndarray:
    """Indices of the clips of `ids` that show the motion of a `chosen` one: itself, and in the
    HumanML3D layout its sub-clips and its mirrored copy ('M' ids), which would otherwise stand in for it
    in the real column's reference of an eval on the training split."""
    bases = {clip_id.split("#", 1)[0] for clip_id in ids}
    recordings = [_recording_of(clip_id, bases) for clip_id in ids]
    wanted = {recordings[i] for i in chosen}
    return np.array([i for i, r in enumerate(recordings) if r in wanted], np.int64)


def _repeat_seeds(config) -> list[int]:
    """The sampling seeds of eval.repeats repeats: sample.seed + k for repeat k. EvaluationError naming
    eval.repeats for a count below 1, or a last seed past the sampler's 2**32 - 1."""
    repeats, seed = config.eval.repeats, config.sample.seed
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise EvaluationError(f"eval.repeats is {repeats!r}; expected an integer >= 1 (1 = one sampling)")
    last = int(seed) + repeats - 1
    if last >= 2**32:
        raise EvaluationError(
            f"eval.repeats={repeats} with sample.seed={seed} would sample with seeds up to {last}, past "
            f"the largest, 2**32 - 1; lower sample.seed or eval.repeats"
        )
    return [int(seed) + k for k in range(repeats)]


def rotations_posed_on_the_data(loaded, dataset) -> tuple[bool, str | None]:
    """(whether to pose the generated motion on the evaluated data's skeleton, a note saying so) for
    axis_angle data. Rotations carry no bone lengths: sampling poses them on the skeleton of the data the
    checkpoint's run trained on, and the real clips are posed on the evaluated data's. Those differ in a
    forgetting check (a run fine-tuned on a taller speaker, evaluated on its source's data), where the
    generated column had measured the two skeletons' difference as the model's: a 5.5% bone error where
    rotations can have none, and speeds and distances scaled by the other figure's size. Posed on the
    data's skeleton, both columns measure the motion on one figure. (False, None) for other data, or
    where the skeletons are the same."""
    mine, theirs = getattr(loaded, "skeleton", None), dataset.skeleton
    if dataset.representation != "axis_angle" or mine is None or theirs is None or mine == theirs:
        return False, None
    if tuple(mine.parents) != tuple(theirs.parents):  # (train.load_init_from refuses these)
        return False, None
    lengths, reference = mine.bone_lengths(), theirs.bone_lengths()
    gap = float(np.max(np.abs(lengths - reference) / np.maximum(reference, 1e-12)))
    return True, (
        f"the generated rotations are posed on this data's skeleton ({dataset.root}), as its real clips "
        f"are, not on that of the data the checkpoint's run trained on (bones differ by up to {gap:.1%}; "
        "the samples of --mode sample stand on that one): both columns measure the motion on one figure"
    )


def run(
    config,
    workdir: str | os.PathLike,
    log=print,
    data_from_checkpoint: bool = False,
    data_set: Collection[str] = (),
) -> dict[str, Any]:
    """`launch.py --mode eval`: metrics of a checkpoint's samples against real clips of eval.split.

    One sample per chosen real clip, with its first caption and its length (capped at the model's
    max_motion_length), sampled with config.sample.*: eval.repeats times, repeat k with seed
    sample.seed + k, the real column computed once. Prints the table (with repeats, the generated
    column's mean ± the half-width of its 95% confidence interval) and writes it as JSON to eval.output
    (default <workdir>/eval/metrics_step<step>.json; never overwritten: a suffix is added); with repeats,
    `metrics` holds the means and `repeats` each repeat's values (`repeat_statistics`).
    The real clips come from config.data.*, or with `data_from_checkpoint` (launch.py without --config)
    from the data the checkpoint's run trained on, but for the data fields named in `data_set` (set on
    the command line: `with_checkpoint_data`).
    """
    from motion_ddpm_jax import sampling
    from motion_ddpm_jax.data import beat

    if config.eval.split not in ("train", "val", "test"):
        raise EvaluationError(f"eval.split is {config.eval.split!r}; expected train, val or test")
    seeds = _repeat_seeds(config)
    if config.eval.output:
        _refuse_a_folder(Path(config.eval.output))  # before loading, as every check of the request
    step = int(config.sample.checkpoint_step)
    loaded = sampling.load_model(workdir, step=None if step < 0 else step, use_ema=config.sample.use_ema)
    sampling.check_settings(loaded, sampling.sampler_settings(config.sample))  # before the data, not after
    output = (
        Path(config.eval.output)
        if config.eval.output
        else Path(workdir) / "eval" / f"metrics_step{loaded.step}.json"
    )
    if jax.process_index() == 0:
        _check_output(output)  # before the sampling, not after it
    if data_from_checkpoint:
        trained_root = loaded.metadata.get("data_root")
        config = with_checkpoint_data(config, loaded.metadata["config"], data_set, trained_root)
        log(
            f"real clips from data.root={config.data.root} (--config.data.root; the checkpoint's run trained "
            f"on {trained_root or '(not recorded)'})"
            if "root" in data_set
            else f"real clips from the data the checkpoint's run trained on: data.root={config.data.root}"
        )
    dataset = beat.dataset_from_config(config, log=log)
    # Both refusals name the data the run trained on and how to evaluate on it: "point data.root at the
    # data it was trained on" had left the user to find which that was.
    trained_root = (getattr(loaded, "metadata", None) or {}).get("data_root") or "(not recorded)"
    trained_on = f"its run trained on data.root={trained_root}"
    way_on = (
        "evaluate without --config and --config.data.* overrides (the data the checkpoint's run trained "
        "on), or set --config.data.root to data of its skeleton, representation and rate"
    )
    size, representation = np.asarray(loaded.mean).size, getattr(loaded, "representation", "")
    if dataset.feature_size != size:
        raise EvaluationError(
            f"the checkpoint in {workdir} takes {size} {representation} features per frame "
            f"({trained_on}) but the dataset at data.root={dataset.root} holds {dataset.feature_size} "
            f"{dataset.representation} features per frame (data of another skeleton or representation); "
            f"{way_on}"
        )
    if not math.isclose(float(loaded.fps), float(dataset.fps), rel_tol=1e-6):
        raise EvaluationError(
            f"the checkpoint in {workdir} was trained on motion at {float(loaded.fps):g} fps ({trained_on}) "
            f"but the dataset at data.root={dataset.root} is at {float(dataset.fps):g} fps (every "
            f"per-second metric would be scaled by the wrong rate); {way_on}"
        )
    matched = check_same_statistics(loaded, dataset, config, workdir)  # before sampling: other data refused
    chain = init_chain(getattr(loaded, "metadata", None) or {}, loaded.mean, loaded.std)
    split = dataset.split(config.eval.split)
    indices = chosen_indices(split, int(config.eval.num_clips))
    forgetting_notes = []
    if matched:  # the data of a run it descends from: a forgetting check
        evaluated = [split.ids[i] for i in indices]
        # The runs since that one trained on their own data, which may hold these clips.
        seen, files = fine_tuned_on([run["data_root"] for run in chain[:matched]], evaluated, dataset.root)
        runs = "the fine-tuned run" if matched == 1 else f"the {matched} fine-tuned runs since"
        if seen is None:
            forgetting_notes.append(
                f"data_trained_on: the training split of data {runs} trained on "
                f"({files[0] if files else 'a data.root not recorded'}) cannot be read here, so whether "
                f"it fine-tuned on some of these {len(evaluated)} {config.eval.split} clips (data that "
                "split the same recordings otherwise) is not known"
            )
        elif seen:
            from motion_ddpm_jax.config import listed

            forgetting_notes.append(
                f"data_trained_on: {len(seen)} of the {len(evaluated)} {config.eval.split} clips evaluated "
                f"({listed(seen, 3)}) are clips {runs} trained on ({' and '.join(map(str, files))} "
                f"list{'s' * (len(files) == 1)} them: data that split the recordings otherwise): on those "
                "the metrics say what was learned of them, not what was kept; evaluate a forgetting check "
                "on recordings its fine-tuning data left out"
            )
        held = (
            "its train clips are those that run trained on (eval.split=train)"
            if config.eval.split == "train"
            else f"its {config.eval.split} clips were held out of that run's training"
        )
        run = chain[matched]
        who = (
            f"the run whose weights it started from ({run['workdir']}, step {run['step']})"
            if matched == 1
            else f"a run it descends from through train.init_from ({run['workdir']}, step {run['step']}), "
            f"by way of {chain[1]['workdir']}, the run it started from"
        )
        statistics = (
            "those the checkpoint normalises with"
            if matched == len(chain) - 1
            else "those its checkpoints record of that run's data"
        )
        log(
            f"data.root={dataset.root} is not the data the checkpoint's run trained on but that of {who}: "
            f"its training-split statistics are {statistics}, and {held}. The metrics say what the "
            "fine-tuned run kept of that data"
            + (" (but see the note on data_trained_on below)" if forgetting_notes else "")
        )
    else:
        # A run on this very folder split it as here: its eval.split clips were not its training clips.
        here = Path(dataset.root).resolve()
        elsewhere = [
            run
            for run in chain[1:]
            if not (run["data_root"] and Path(str(run["data_root"])).resolve() == here)
        ]
        if elsewhere:
            first, *before = elsewhere
            more = "".join(
                f" (and before it {run['workdir']}, step {run['step']}, on data.root={run['data_root']})"
                for run in before
            )
            log(
                f"the checkpoint's run started from the weights of {first['workdir']} (step "
                f"{first['step']}), trained on data.root={first['data_root']}{more}: the "
                f"{config.eval.split} clips here may be clips {'that run' if not before else 'those runs'} "
                "trained on, unless the datasets split their recordings alike"
            )
    motions = [split.motions[i][: int(loaded.max_motion_length)] for i in indices]
    captions = [split.captions[i][0] for i in indices]
    lengths = [len(m) for m in motions]
    settings = sampling.sampler_settings(config.sample)
    used = sampling.settings_used(settings, loaded, bool(config.sample.use_ema))
    times = "" if len(seeds) == 1 else f", {len(seeds)} times: seeds {seeds[0]}..{seeds[-1]}"
    log(
        f"evaluating step {loaded.step}: {len(motions)} {config.eval.split} clips, one sample each{times} "
        f"({sampling.settings_text(used)})"
    )
    for note in (sampling.spacing_note(loaded, settings), sampling.unread_settings_note(settings, loaded)):
        if note:
            log(note)
    real_motion, real_lengths = _pad(motions)
    real = Clips(
        real_motion,
        real_lengths,
        tuple(captions),
        decode_positions(real_motion, dataset.skeleton, dataset.representation),
    )
    train = dataset.split("train")
    encoder, notes = _fgd_encoder(config, dataset)
    notes = forgetting_notes + notes
    other_rate = humanml3d.other_rate(dataset.representation, dataset.feature_size, float(dataset.fps))
    if other_rate is not None:  # (a load-time warning alone had not reached the report)
        found, _ = other_rate
        notes.append(
            f"the data were read at data.fps={float(dataset.fps):g}, but {found.dataset}-layout features "
            f"are {found.fps:g} fps motion: every per-second metric (speeds, jitter) is scaled by "
            f"{float(dataset.fps) / found.fps:g}, its square or its cube, in both columns, unless the clips "
            "were resampled to that rate"
        )
    pool = None
    if config.eval.split == "train":  # the real column's reference: training clips other than these
        pool = np.setdiff1d(np.arange(len(train)), related_clips(train.ids, indices))
        notes.append(
            "eval.split=train: the conditioning classifier was trained on the training split, these clips "
            "among them, so the real column's accuracy is its accuracy on its own training clips"
        )
    comparison = prepare_comparison(  # the real column: once, whatever the seed
        real,
        [m[: int(loaded.max_motion_length)] for m in train.motions],
        [c[0] for c in train.captions],
        skeleton=dataset.skeleton,
        representation=dataset.representation,
        fps=float(dataset.fps),
        encoder=encoder,
        reference_pool=pool,
    )
    quantile = t_quantile(len(seeds)) if len(seeds) > 1 else None  # (scipy) before the sampling, not after
    posed_here, posing_note = rotations_posed_on_the_data(loaded, dataset)
    if posing_note:
        notes.append(posing_note)
    columns, sample_seconds, compare_notes = [], [], []
    for repeat, seed in enumerate(seeds):
        start = time.perf_counter()
        with warnings.catch_warnings():  # the real clips' captions, cut as training cut them
            warnings.simplefilter("ignore", sampling.CaptionCutWarning)
            out = sampling.generate(loaded, captions, lengths, num_samples=1, **{**settings, "seed": seed})
        sample_seconds.append(time.perf_counter() - start)
        sampling.check_finite(out, loaded, workdir)
        generated_lengths = np.asarray(out["lengths"], np.int64)
        if not np.array_equal(generated_lengths, lengths):
            raise RuntimeError(
                f"sampling returned lengths {generated_lengths[:8]}..., asked for {lengths[:8]}..."
            )
        generated_positions = out.get("positions")
        if posed_here and generated_positions is not None:
            generated_positions = decode_positions(out["motion"], dataset.skeleton, dataset.representation)
        generated = Clips(
            np.asarray(out["motion"], np.float32),
            generated_lengths,
            tuple(captions),
            None
            if real.positions is None or generated_positions is None
            else np.asarray(generated_positions),
        )
        column, repeat_notes = comparison.score(generated)
        columns.append(column)
        compare_notes += [note for note in repeat_notes if repeat == 0 or note not in compare_notes]
        if len(seeds) > 1:
            log(f"repeat {repeat + 1}/{len(seeds)} (seed {seed}): sampled in {sample_seconds[-1]:.1f}s")
    notes += compare_notes
    repeats = None
    if len(seeds) == 1:
        table, half_widths = comparison.table(columns[0]), None
    else:
        names = list(dict.fromkeys(name for column in columns for name in column))
        statistics = {name: repeat_statistics([c.get(name) for c in columns]) for name in names}
        table = comparison.table({name: stats["mean"] for name, stats in statistics.items()})
        half_widths = {name: stats["ci95"] for name, stats in statistics.items()}
        freedom = len(seeds) - 1
        notes.insert(
            0,
            f"generated = mean ± the half-width of its {100 * CONFIDENCE:g}% confidence interval over "
            f"{len(seeds)} repeats of the sampling, seeds {seeds[0]}..{seeds[-1]} (Student's t, {freedom} "
            f"degree{'s' * (freedom != 1)} of freedom: {quantile:.4g} x std / sqrt({len(seeds)}), std the "
            "sample standard deviation); the real column does not depend on the seed",
        )
        repeats = {
            "count": len(seeds),
            "seeds": seeds,
            "confidence": CONFIDENCE,
            "t_quantile": quantile,
            "sample_seconds": [round(s, 2) for s in sample_seconds],
            "generated": statistics,
        }
    notes += comparison.below_real_notes(table)  # (of the means, with repeats)
    unit, units = None, "no joint positions: no position metrics"
    if real.positions is not None:
        unit = position_unit(dataset.skeleton, dataset.representation, dataset.feature_size)
        units = units_text(unit)
    log(format_table(table, half_widths))
    log(f"units: {units}")
    for note in notes:
        log(f"note: {note}")
    record = {
        "step": int(loaded.step),
        "workdir": os.path.abspath(workdir),
        "data_root": os.path.abspath(dataset.root),
        # not "this run's": the data of a run it descends from through train.init_from (a forgetting check)
        "data_trained_on": (
            {0: "this run's", 1: "init_from source's"}.get(matched)
            or f"an earlier run's in its init_from chain: {chain[matched]['workdir']}"
        ),
        "split": config.eval.split,
        "split_seed": _split_seed(dataset),
        "num_clips": len(motions),
        "clips": clips_fingerprint([split.ids[i] for i in indices], lengths),
        "fps": float(dataset.fps),
        "position_unit": unit,
        "units": units,
        "metrics": table,
        "notes": notes,
        "sample": used,
        "diffusion_steps": int(loaded.schedule.num_steps),
        "eval": {"split": config.eval.split, "num_clips": int(config.eval.num_clips)},
        "fgd_autoencoder": None if encoder is None else autoencoder_record(autoencoder_dir(config), encoder),
        "versions": {"motion_ddpm_jax": __version__, "jax": jax.__version__, "numpy": np.__version__},
        "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}",
        "software": provenance.software(jax.devices()[0]),  # all of it, as run.json and checkpoints hold
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "sample_seconds": round(sample_seconds[0], 2),  # the first sampling: compiling included
    }
    if repeats is not None:
        record["repeats"] = repeats
    if jax.process_index() != 0:
        return record
    log(comparable_line(record))
    written = write_new_json(output, record)
    # (written is absolute: a relative workdir's first eval had been said to keep a file that did not exist)
    if Path(written) != Path(os.path.abspath(output)):  # as --mode sample says of a folder that holds files
        log(f"{output} exists already (kept as it is); writing the metrics to {written} instead")
    log(f"wrote {written}")
    return {**record, "output": str(written)}


def comparable_line(record: dict[str, Any]) -> str:
    """What two evaluations must share for their numbers to compare, as one line of the log: the clips
    (their list's sha256) and the FGD autoencoder (folder, weights' sha256, steps, seed), as the report
    holds them, so that two printed tables can be matched without opening their JSON."""
    fgd = record.get("fgd_autoencoder")
    if fgd is None:
        used = "no FGD autoencoder"
    else:
        settings = fgd.get("settings", {})
        used = (
            f"FGD autoencoder {fgd['directory']} (weights sha256 {fgd['weights_sha256'][:12]}, "
            f"{settings.get('steps', '?')} steps, seed {settings.get('seed', '?')})"
        )
    return f"compare with evaluations of the same clips (sha256 {record['clips']['sha256'][:12]}) and {used}"
