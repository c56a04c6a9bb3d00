"""Skeleton(names, parents, offsets, end_sites): structure, bones, depth order, (de)serialisation.

A Skeleton is immutable, validated on construction, and hashable/comparable by content, so it can be a
static argument of `jax.jit` or a static field of a flax struct. Joints may be listed in any order
(`parents_first_order` gives a topological one) for everything but BVH files: generated motion is written
as BVH only for a skeleton listed depth-first whose end sites (at most one per joint, its last child) are
named `<parent>_Nub`, as BVH files are read back (`data.bvh.check_writable`; `--mode sample` says when it
writes none). Offsets are in the data's own unit (BEAT: centimetres).

File I/O happens only in the explicit helpers `save_json`, `load_json` and `beat_skeleton`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax import kinematics
from motion_ddpm_jax.files import save_json_once

_REQUIRED_KEYS = ("names", "parents", "offsets")


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Skeleton:
    """A joint hierarchy.

    names: J unique joint names.
    parents: int32 [J], parent index of each joint, -1 for a root.
    offsets: float32 [J, 3], rest offset of each joint in its parent's frame (a root's offset is added to
      the root translation in forward kinematics).
    end_sites: bool [J], True for BVH end sites (leaves without a rotation channel); default all False.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    end_sites: np.ndarray | None = None

    def __post_init__(self):
        if isinstance(self.names, str) or not all(isinstance(name, str) for name in self.names):
            raise ValueError(f"names must be a sequence of strings, got {self.names!r:.200}")
        names = tuple(str(name) for name in self.names)
        num_joints = len(names)
        if num_joints == 0:
            raise ValueError("a skeleton needs at least one joint (names is empty)")

        parents = np.asarray(self.parents)
        if parents.shape != (num_joints,):
            raise ValueError(f"parents has shape {parents.shape} but there are {num_joints} names")
        if not np.issubdtype(parents.dtype, np.integer):
            raise ValueError(f"parents must be integers (-1 for a root), got dtype {parents.dtype}")
        offsets = np.asarray(self.offsets)
        if offsets.shape != (num_joints, 3):
            raise ValueError(
                f"offsets has shape {offsets.shape}, expected ({num_joints}, 3) for {num_joints} names"
            )
        if not (np.issubdtype(offsets.dtype, np.floating) or np.issubdtype(offsets.dtype, np.integer)):
            raise ValueError(f"offsets must be numbers, got dtype {offsets.dtype}")
        if self.end_sites is None:
            end_sites = np.zeros(num_joints, dtype=bool)
        else:
            end_sites = np.asarray(self.end_sites)
            if end_sites.shape != (num_joints,) or end_sites.dtype != np.bool_:
                raise ValueError(
                    f"end_sites must be bool of shape ({num_joints},), "
                    f"got {end_sites.dtype} of shape {end_sites.shape}"
                )

        seen: dict[str, int] = {}
        for index, name in enumerate(names):
            if name in seen:
                raise ValueError(f"duplicate joint name {name!r} at indices {seen[name]} and {index}")
            seen[name] = index
        for index, parent in enumerate(parents.tolist()):
            if not -1 <= parent < num_joints:
                raise ValueError(
                    f"joint {index} ({names[index]!r}) has parent index {parent}, "
                    f"expected -1 (root) or an index in [0, {num_joints})"
                )
            if parent == index:
                raise ValueError(f"joint {index} ({names[index]!r}) is its own parent (a cycle)")
        try:
            kinematics.joint_depths(parents)
        except ValueError:
            cyclic = _joints_on_cycles(parents)
            described = ", ".join(f"{j} ({names[j]!r})" for j in cyclic[:10])
            raise ValueError(f"parents contain a cycle through joints {described}; no root reached") from None
        offsets = offsets.astype(np.float32) + np.float32(0.0)  # also turns -0.0 into 0.0 for hashing
        not_finite = np.nonzero(~np.all(np.isfinite(offsets), axis=1))[0]
        if not_finite.size:
            j = int(not_finite[0])
            raise ValueError(f"offset of joint {j} ({names[j]!r}) is not finite: {offsets[j].tolist()}")
        has_children = np.zeros(num_joints, dtype=bool)
        has_children[parents[parents >= 0]] = True
        bad_end_sites = np.nonzero(end_sites & has_children)[0]
        if bad_end_sites.size:
            j = int(bad_end_sites[0])
            raise ValueError(f"joint {j} ({names[j]!r}) is marked as an end site but has children")

        object.__setattr__(self, "names", names)
        object.__setattr__(self, "parents", _frozen(parents.astype(np.int32)))
        object.__setattr__(self, "offsets", _frozen(offsets))
        object.__setattr__(self, "end_sites", _frozen(end_sites))

    # ------------------------------------------------------------------------------ identity by content
    def _key(self) -> tuple:
        return (self.names, self.parents.tobytes(), self.offsets.tobytes(), self.end_sites.tobytes())

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Skeleton):
            return NotImplemented
        return self._key() == other._key()

    def __reduce__(self):
        # Unpickling goes through the constructor: validated, and the arrays read-only again.
        return (Skeleton, (self.names, self.parents, self.offsets, self.end_sites))

    def __repr__(self) -> str:
        return (
            f"Skeleton({self.num_joints} joints, root {self.names[self.roots[0]]!r}, "
            f"{int(self.end_sites.sum())} end sites)"
        )

    # ------------------------------------------------------------------------------------- structure
    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def roots(self) -> np.ndarray:
        """Indices of all joints whose parent is -1, int [R]."""
        return np.nonzero(self.parents < 0)[0]

    @property
    def root(self) -> int:
        """Index of the single root joint; ValueError if the skeleton is a forest."""
        roots = self.roots
        if roots.size != 1:
            described = ", ".join(f"{j} ({self.names[j]!r})" for j in roots[:10])
            raise ValueError(f"the skeleton has {roots.size} roots ({described}); expected exactly one")
        return int(roots[0])

    @property
    def bones(self) -> list[tuple[int, int]]:
        """(parent, child) of every non-root joint, in increasing child index (matches `bone_lengths`)."""
        return [(int(self.parents[child]), int(child)) for child in kinematics.bone_children(self.parents)]

    @property
    def depths(self) -> np.ndarray:
        """Depth of each joint (roots 0), int32 [J]."""
        return kinematics.joint_depths(self.parents)

    @property
    def parents_first_order(self) -> np.ndarray:
        """A topological order: joint indices sorted by depth (stable), int [J]."""
        return np.argsort(self.depths, kind="stable")

    @property
    def depth_first_order(self) -> np.ndarray:
        """The joints in the order a BVH file lists them (`data.bvh.check_writable`): the root, then each of
        its children's subtrees in turn, children in index order but an end site last; int [J]. A skeleton
        listed otherwise (SMPL's and HumanML3D's 22 joints, children by depth) is written as BVH once
        `reordered(depth_first_order)`, its features' or rotations' joint axis taken in the same order.
        ValueError for a skeleton of several roots."""
        children: list[list[int]] = [[] for _ in self.names]
        for joint, parent in enumerate(self.parents.tolist()):
            if parent >= 0:
                children[parent].append(joint)
        order, visit = [], [self.root]
        while visit:
            joint = visit.pop()
            order.append(joint)
            kids = sorted(children[joint], key=lambda kid: bool(self.end_sites[kid]))  # stable: sites last
            visit.extend(reversed(kids))
        return np.array(order, dtype=np.int64)

    def reordered(self, order: Sequence[int] | np.ndarray) -> Skeleton:
        """This skeleton with its joints listed in `order` (a permutation of its indices): joint i of the
        result is joint order[i] here, its parent renumbered. Rotations, positions or offsets of this
        skeleton take the same order along their joint axis (`rotations[..., order, :, :]`)."""
        order = np.asarray(order)
        integral = np.issubdtype(order.dtype, np.integer)  # (sorted([0.0, 1.0]) == [0, 1] too)
        if (
            not integral
            or order.shape != (self.num_joints,)
            or sorted(order.tolist()) != list(range(self.num_joints))
        ):
            raise ValueError(
                f"reordered: expected a permutation of the {self.num_joints} joint indices, got "
                f"{order.tolist()!r:.200}"
            )
        new_index = np.argsort(order)
        parents = np.array([-1 if self.parents[j] < 0 else new_index[self.parents[j]] for j in order])
        return Skeleton(
            tuple(self.names[j] for j in order), parents, self.offsets[order], self.end_sites[order]
        )

    @property
    def rotation_joints(self) -> np.ndarray:
        """Joints that carry a rotation (not end sites), increasing, int [J_rot] (BEAT: 75 of 88)."""
        return np.nonzero(~self.end_sites)[0]

    def bone_lengths(self) -> np.ndarray:
        """Rest-pose bone lengths, float32 [B], B = number of non-root joints, in `bones` order."""
        return np.linalg.norm(self.offsets[kinematics.bone_children(self.parents)], axis=-1)

    def index(self, name: str) -> int:
        """Index of the joint called `name`."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no joint named {name!r} in the skeleton ({self.num_joints} joints)") from None

    # -------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict with keys names, parents, offsets, end_sites (offsets rounded-trip exactly)."""
        return {
            "names": list(self.names),
            "parents": [int(p) for p in self.parents],
            # str() of a float32 is its shortest repr, which parses back to the same float32.
            "offsets": [[float(str(v)) for v in row] for row in self.offsets],
            "end_sites": [bool(e) for e in self.end_sites],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "skeleton dict") -> Skeleton:
        """Build from a dict with names, parents, offsets and optionally end_sites (other keys ignored).

        `source` (e.g. a file path) prefixes every error message.
        """
        if not isinstance(d, Mapping):
            raise ValueError(
                f"{source}: expected a mapping with keys {', '.join(_REQUIRED_KEYS)}, got {type(d)}"
            )
        missing = [key for key in _REQUIRED_KEYS if key not in d]
        if missing:
            raise ValueError(
                f"{source}: missing key(s) {missing}; a skeleton needs names, parents, offsets "
                "(end_sites optional)"
            )
        names = d["names"]
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ValueError(f"{source}: 'names' must be a list of strings")
        for key in ("parents", "offsets", "end_sites"):
            value = d.get(key)
            if value is not None and (isinstance(value, str | Mapping) or not isinstance(value, Sequence)):
                raise ValueError(f"{source}: {key!r} must be a list with one entry per joint")
            if value is not None and len(value) != len(names):
                raise ValueError(f"{source}: {key!r} has {len(value)} entries but 'names' has {len(names)}")
        # Element by element: numpy would read a JSON true as the index 1, and "1.5" or true as offsets.
        for j, parent in enumerate(d["parents"]):
            if not _is_number(parent, integer=True):
                raise ValueError(
                    f"{source}: 'parents' must be a list of integers (-1 for a root); entry {j}: {parent!r}"
                )
        for j, row in enumerate(d["offsets"]):
            # A row may be a 1-D array: `list(offsets)` of an [J, 3] array, as a Python caller builds one.
            listlike = (isinstance(row, Sequence) and not isinstance(row, str)) or (
                isinstance(row, np.ndarray) and row.ndim == 1
            )
            is_triple = listlike and len(row) == 3
            if not (is_triple and all(_is_number(v) for v in row)):
                raise ValueError(f"{source}: 'offsets' must be a list of [x, y, z] numbers; entry {j}: {row}")
        parents = np.asarray(d["parents"], dtype=np.int64) if len(d["parents"]) else np.zeros(0, np.int64)
        offsets = np.asarray(d["offsets"], dtype=np.float64)
        end_sites = d.get("end_sites")
        if end_sites is not None:
            if not all(isinstance(e, bool | np.bool_) for e in end_sites):
                raise ValueError(f"{source}: 'end_sites' must be a list of booleans")
            end_sites = np.asarray(end_sites, dtype=bool)
        try:
            return cls(tuple(names), parents, offsets, end_sites)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    def save_json(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write `to_dict()` as JSON. An existing file holding an equal skeleton is left as is; one holding
        anything else raises FileExistsError unless `overwrite`. Returns the path."""
        same = lambda p: Skeleton.load_json(p) == self  # noqa: E731
        return save_json_once(path, self.to_dict(), same, "skeleton", overwrite)

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> Skeleton:
        """Read a skeleton written by `save_json` (or any JSON object with names, parents, offsets)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(d, source=str(path))


def _is_number(value: Any, integer: bool = False) -> bool:
    """Whether a JSON value is a number (an integer where `integer`): not a bool, a string or null."""
    if isinstance(value, bool | np.bool_):
        return False
    if integer:
        return isinstance(value, int | np.integer) and -(2**31) <= value < 2**31
    return isinstance(value, int | float | np.integer | np.floating)


def _joints_on_cycles(parents: np.ndarray) -> list[int]:
    """Joints that lie on a cycle of the parent graph (for error messages)."""
    on_cycle: set[int] = set()
    for start in range(parents.size):
        path, joint = [], start
        while joint >= 0 and joint not in path and joint not in on_cycle:
            path.append(joint)
            joint = int(parents[joint])
        if joint in path:
            on_cycle.update(path[path.index(joint) :])
    return sorted(on_cycle)


def end_sites_from_suffix(names: Sequence[str], suffix: str = "_Nub") -> np.ndarray:
    """bool [J], True where a name ends with `suffix`: marks end sites in files that lack an `end_sites`
    key (BEAT-style exports name them `<parent>_Nub`). Never applied implicitly; use it as
    `dataclasses.replace(skeleton, end_sites=end_sites_from_suffix(skeleton.names))`."""
    return np.array([name.endswith(suffix) for name in names], dtype=bool)


@functools.cache
def beat_skeleton() -> Skeleton:
    """The BEAT BVH skeleton shipped with the package: 88 joints (75 BVH joints + 13 '_Nub' end sites,
    marked as end sites), root 'Hips', offsets in centimetres, Y up."""
    resource = importlib.resources.files("motion_ddpm_jax").joinpath("assets", "beat_skeleton.json")
    skeleton = Skeleton.from_dict(json.loads(resource.read_text()), source=f"package asset {resource}")
    return dataclasses.replace(skeleton, end_sites=end_sites_from_suffix(skeleton.names))
