"""The metrics of motion, pure numpy (float64 inside): what `evaluate` reports, apart from the FGD.

Here because they need no model, no checkpoint and no jax of their own (jax loads with the HumanML3D
layout's decoder they import; sampling reads `position_unit` without importing the evaluation, and a
user can score arrays of their own). Those on joint positions take
`positions [N, T, J, 3]` (global, the data's unit: BEAT centimetres, HumanML3D metres, KIT-ML
millimetres) and `lengths [N]`; frames at and past a clip's length are ignored, so padded batches can be
passed as they are. Those that need the joints' hierarchy take a `Skeleton` or a `JointTree` (names and
parents alone: the trees of the HumanML3D layout, HumanML3D's 22 T2M joints and KIT-ML's 21 MMM joints,
have no offsets).

- `jitter`: mean acceleration and jerk magnitude (finite differences, units/s^2 and units/s^3).
- `bone_length_error`: per bone the mean relative deviation from a reference length; mean and worst bone.
- `effector_speed`: mean and 95th percentile speed of end effectors (`end_effectors` picks them by name).
- `diversity`: mean pairwise distance of fixed-length, root-relative pose sequences.
- `fit_classifier` / `LinearClassifier.accuracy`: text-conditioning accuracy of a ridge classifier trained
  on real clips' `motion_features`, for datasets whose captions name one of a finite set of classes.
- `frechet_distance`: between Gaussians fitted to real and generated features (`fgd.fgd` fits them to the
  latents of the FGD autoencoder).
- `position_unit` / `units_text`: the unit of the decoded positions, and what a report says of it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from motion_ddpm_jax import humanml3d, kinematics
from motion_ddpm_jax import representation as layouts
from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton

HAND_NAMES = re.compile(r"hand|wrist|finger|thumb|pinky", re.IGNORECASE)
FOOT_NAMES = re.compile(r"foot|toe|ankle|heel", re.IGNORECASE)
DIVERSITY_FRAMES = 32  # every clip is resampled to this many frames before pairwise distances
MAX_PAIRS = 20_000  # diversity: beyond this many pairs, a deterministic random subset of pairs
MAX_CLASSES = 64  # captions as classes only when there are at most this many distinct ones


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


def valid_mask(lengths: np.ndarray, num: int, order: int) -> np.ndarray:
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
        out[name] = _masked_mean(magnitude, valid_mask(lengths, magnitude.shape[1], order))
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
    features, KIT-ML's 21 MMM joints for 251), the data's skeleton for the positions and rotation
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
    return frame_bone_lengths(p, skeleton)[valid_mask(lengths, p.shape[1], 0)].mean(axis=0)


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
    mask = valid_mask(lengths, p.shape[1], 0)
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
    pooled = speed[valid_mask(lengths, speed.shape[1], 1)].ravel()
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
        mask = valid_mask(lengths, series.shape[1], order)[..., None]
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


# ------------------------------------------------------------------------------------------ units
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
