"""skeleton: validation, structure, identity by content and (de)serialisation."""

import dataclasses
import json
import pickle
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motion_ddpm_jax.skeleton import Skeleton, beat_skeleton, end_sites_from_suffix

SHARED_BEAT_FILE = Path(__file__).parents[1] / ".." / "shared" / "beat_skeleton.json"
PACKAGE_BEAT_FILE = Path(__file__).parents[1] / "motion_ddpm_jax" / "assets" / "beat_skeleton.json"


def small_skeleton(**changes) -> Skeleton:
    """pelvis -> spine -> head, pelvis -> leg -> foot_Nub; listed not parents-first."""
    fields = {
        "names": ("spine", "pelvis", "head", "foot_Nub", "leg"),
        "parents": np.array([1, -1, 0, 4, 1]),
        "offsets": np.array([[0, 10, 0], [0, 0, 0], [0, 20, 0], [0, -40, 5], [8, -3, 0]], np.float64),
        "end_sites": np.array([False, False, False, True, False]),
    }
    fields.update(changes)
    return Skeleton(**fields)


# ------------------------------------------------------------------------------------- BEAT skeleton
def test_beat_skeleton_from_the_package_has_88_joints_13_end_sites_and_one_root():
    skeleton = beat_skeleton()
    assert skeleton.num_joints == 88
    assert skeleton.root == 0 and skeleton.names[0] == "Hips"
    assert int(skeleton.end_sites.sum()) == 13
    assert all(skeleton.names[j].endswith("_Nub") for j in np.nonzero(skeleton.end_sites)[0])
    assert skeleton.rotation_joints.size == 75
    assert len(skeleton.bones) == 87 and skeleton.bone_lengths().shape == (87,)
    assert skeleton.offsets.dtype == np.float32 and skeleton.parents.dtype == np.int32
    np.testing.assert_array_equal(skeleton.offsets[0], 0.0)


def test_package_asset_is_the_shared_beat_file():
    if not SHARED_BEAT_FILE.exists():
        pytest.skip(f"{SHARED_BEAT_FILE} is not present")
    assert PACKAGE_BEAT_FILE.read_bytes() == SHARED_BEAT_FILE.read_bytes()
    from_shared = Skeleton.load_json(SHARED_BEAT_FILE)
    assert not from_shared.end_sites.any()  # the file has no end_sites key; nothing is applied implicitly
    marked = dataclasses.replace(from_shared, end_sites=end_sites_from_suffix(from_shared.names))
    assert marked == beat_skeleton()


def test_beat_skeleton_matches_the_raw_json():
    raw = json.loads(PACKAGE_BEAT_FILE.read_text())
    skeleton = beat_skeleton()
    assert list(skeleton.names) == raw["names"]
    np.testing.assert_array_equal(skeleton.parents, raw["parents"])
    np.testing.assert_array_equal(skeleton.offsets, np.asarray(raw["offsets"], np.float32))


def test_end_sites_from_suffix():
    np.testing.assert_array_equal(end_sites_from_suffix(["a", "a_Nub", "b_End"]), [False, True, False])
    np.testing.assert_array_equal(
        end_sites_from_suffix(["a", "a_Nub", "b_End"], suffix="_End"), [False, False, True]
    )


# ----------------------------------------------------------------------------------------- structure
def test_structure_of_a_skeleton_listed_children_first():
    skeleton = small_skeleton()
    assert skeleton.num_joints == 5 and skeleton.root == 1
    assert skeleton.bones == [(1, 0), (0, 2), (4, 3), (1, 4)]  # increasing child index
    np.testing.assert_array_equal(skeleton.depths, [1, 0, 2, 2, 1])
    order = list(skeleton.parents_first_order)
    assert sorted(order) == list(range(5))
    assert all(order.index(parent) < order.index(child) for parent, child in skeleton.bones)
    np.testing.assert_array_equal(skeleton.rotation_joints, [0, 1, 2, 4])
    np.testing.assert_allclose(
        skeleton.bone_lengths(), [10.0, 20.0, np.hypot(40, 5), np.hypot(8, 3)], rtol=1e-6
    )
    assert skeleton.index("leg") == 4
    with pytest.raises(KeyError, match="arm"):
        skeleton.index("arm")


def test_end_sites_default_to_none_marked():
    skeleton = small_skeleton(end_sites=None)
    assert skeleton.end_sites.dtype == bool and not skeleton.end_sites.any()
    assert skeleton.rotation_joints.size == 5


def test_root_of_a_forest_is_an_error_naming_the_roots():
    skeleton = small_skeleton(parents=np.array([1, -1, 0, 4, -1]))
    np.testing.assert_array_equal(skeleton.roots, [1, 4])
    with pytest.raises(ValueError, match="2 roots.*'pelvis'.*'leg'"):
        _ = skeleton.root


def test_skeleton_is_immutable_and_does_not_alias_its_inputs():
    offsets = np.zeros((5, 3))
    skeleton = small_skeleton(offsets=offsets)
    offsets[0, 0] = 99.0
    assert skeleton.offsets[0, 0] == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        skeleton.names = ("x",)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        skeleton.offsets[0, 0] = 1.0


# -------------------------------------------------------------------------------------------- identity
def test_equal_content_means_equal_and_same_hash():
    a, b = small_skeleton(), small_skeleton(offsets=small_skeleton().offsets.astype(np.float64))
    assert a is not b and a == b and hash(a) == hash(b)
    negative_zero = small_skeleton(offsets=np.where(a.offsets == 0, -0.0, a.offsets))
    assert negative_zero == a and hash(negative_zero) == hash(a)
    assert small_skeleton(offsets=a.offsets + 1) != a
    assert small_skeleton(end_sites=None) != a
    assert small_skeleton(names=("spine", "pelvis", "head", "foot_Nub", "knee")) != a
    assert a != "not a skeleton"
    assert len({a, b, small_skeleton(end_sites=None)}) == 2


def test_skeleton_is_a_static_argument_of_jit_compiled_once_per_content():
    traces = []

    def rest_height(x, skeleton):
        traces.append(skeleton)
        return x + jnp.asarray(skeleton.offsets)[:, 1].sum()

    compiled = jax.jit(rest_height, static_argnums=1)
    assert float(compiled(1.0, small_skeleton())) == pytest.approx(1.0 + 10 + 20 - 40 - 3)
    assert float(compiled(2.0, small_skeleton())) == pytest.approx(2.0 + 10 + 20 - 40 - 3)  # equal -> cached
    assert len(traces) == 1
    compiled(1.0, beat_skeleton())
    assert len(traces) == 2


def test_pickle_round_trip():
    skeleton = beat_skeleton()
    restored = pickle.loads(pickle.dumps(skeleton))
    assert restored == skeleton and not restored.offsets.flags.writeable


# ---------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parents": np.array([2, -1, 0, 4, 1])}, r"cycle through joints 0 \('spine'\), 2 \('head'\)"),
        ({"parents": np.array([1, -1, 2, 4, 1])}, r"joint 2 \('head'\) is its own parent"),
        ({"parents": np.array([1, -1, 0, 7, 1])}, r"joint 3 \('foot_Nub'\) has parent index 7"),
        ({"parents": np.array([1, -1, 0, -3, 1])}, r"joint 3 \('foot_Nub'\) has parent index -3"),
        ({"parents": np.array([1, -1, 0, 4])}, r"parents has shape \(4,\) but there are 5 names"),
        ({"parents": np.array([1.0, -1, 0, 4, 1])}, "parents must be integers"),
        ({"offsets": np.zeros((4, 3))}, r"offsets has shape \(4, 3\), expected \(5, 3\)"),
        ({"offsets": np.zeros((5, 2))}, r"offsets has shape \(5, 2\)"),
        ({"offsets": np.where(np.eye(5, 3, k=-1) == 1, np.nan, 0.0)}, r"joint 1 \('pelvis'\) is not finite"),
        ({"end_sites": np.array([False] * 4)}, "end_sites must be bool of shape"),
        (
            {"end_sites": np.array([False, False, False, False, True])},
            r"joint 4 \('leg'\) is marked as an end site",
        ),
        (
            {"names": ("spine", "pelvis", "spine", "foot_Nub", "leg")},
            "duplicate joint name 'spine' at indices 0 and 2",
        ),
        ({"names": "spine"}, "names must be a sequence of strings"),
        ({"names": (), "parents": np.zeros(0, int), "offsets": np.zeros((0, 3))}, "at least one joint"),
    ],
)
def test_validation_errors_say_what_and_where(changes, message):
    with pytest.raises(ValueError, match=message):
        small_skeleton(**changes)


# ------------------------------------------------------------------------------------- serialisation
def test_dict_round_trip_is_json_able_and_exact():
    skeleton = beat_skeleton()
    d = json.loads(json.dumps(skeleton.to_dict()))
    assert set(d) == {"names", "parents", "offsets", "end_sites"}
    restored = Skeleton.from_dict(d)
    assert restored == skeleton
    np.testing.assert_array_equal(restored.offsets, skeleton.offsets)  # bit-exact float32
    assert json.dumps(d["offsets"][1]) == "[0.0, 6.269896, -2.264934]"  # shortest float32 text


def test_from_dict_without_end_sites_and_with_extra_keys():
    d = small_skeleton().to_dict()
    del d["end_sites"]
    d["source"] = "somewhere"
    assert Skeleton.from_dict(d) == small_skeleton(end_sites=None)


def test_from_dict_takes_offset_rows_of_an_array_as_the_numbers_they_hold():
    """`list(offsets)` of an [J, 3] float array (rows are 1-D arrays, parents numpy integers), as a Python
    caller builds a dict: the entry checks of the skeleton.json fields had refused each such row as "not a
    list of [x, y, z] numbers" (numpy had read them before). A row of booleans or strings stays refused."""
    offsets = np.array([[0.0, 0.0, 0.0], [0.0, 1.5, 0.0], [0.25, 0.0, -2.0]])
    d = {"names": ["root", "spine", "head"], "parents": list(np.array([-1, 0, 1])), "offsets": list(offsets)}
    skeleton = Skeleton.from_dict(d)
    assert skeleton.parents.tolist() == [-1, 0, 1]
    np.testing.assert_array_equal(skeleton.offsets, [[0, 0, 0], [0, 1.5, 0], [0.25, 0, -2]])
    for bad in (np.array([True, False, True]), np.array(["1", "0", "0"]), np.zeros(4)):
        with pytest.raises(ValueError, match=r"my.json: 'offsets' must be .*; entry 1"):
            Skeleton.from_dict({**d, "offsets": [offsets[0], bad, offsets[2]]}, source="my.json")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("offsets"), r"my.json: missing key\(s\) \['offsets'\]"),
        (lambda d: d["parents"].pop(), "my.json: 'parents' has 4 entries but 'names' has 5"),
        (lambda d: d["end_sites"].append(True), "my.json: 'end_sites' has 6 entries"),
        (lambda d: d.update(parents="01234"), "my.json: 'parents' must be a list"),
        (lambda d: d["offsets"].__setitem__(2, [1.0, "x", 0.0]), "my.json: 'offsets' must be a list of"),
        (lambda d: d["end_sites"].__setitem__(0, 1), "my.json: 'end_sites' must be a list of booleans"),
        (lambda d: d["parents"].__setitem__(0, 0), r"my.json: joint 0 \('spine'\) is its own parent"),
        (lambda d: d["parents"].__setitem__(0, 0.5), "my.json: 'parents' must be a list of integers"),
        # JSON true, "1.5" and null are no numbers (numpy had read them as 1, 1.5 and NaN)
        (lambda d: d["parents"].__setitem__(2, True), "my.json: 'parents' must be .*; entry 2: True"),
        (lambda d: d["offsets"].__setitem__(1, ["1.5", 0, 0]), "my.json: 'offsets' must be .*; entry 1"),
        (lambda d: d["offsets"].__setitem__(1, [True, 0, 0]), "my.json: 'offsets' must be .*; entry 1"),
        (lambda d: d["offsets"].__setitem__(4, [None, 0, 0]), "my.json: 'offsets' must be .*; entry 4"),
        (lambda d: d["offsets"].__setitem__(3, [1.0, 2.0]), "my.json: 'offsets' must be .*; entry 3"),
    ],
)
def test_from_dict_errors_name_the_source(edit, message):
    d = small_skeleton().to_dict()
    edit(d)
    with pytest.raises(ValueError, match=message):
        Skeleton.from_dict(d, source="my.json")


def test_from_dict_rejects_a_non_mapping():
    with pytest.raises(ValueError, match="my.json: expected a mapping"):
        Skeleton.from_dict([1, 2, 3], source="my.json")


def test_json_file_round_trip(tmp_path):
    skeleton = beat_skeleton()
    path = skeleton.save_json(tmp_path / "nested" / "skeleton.json")
    assert path == tmp_path / "nested" / "skeleton.json"
    assert Skeleton.load_json(path) == skeleton
    assert [p.name for p in path.parent.iterdir()] == ["skeleton.json"]  # no temporary file left behind


def test_save_json_never_overwrites_a_different_file_silently(tmp_path):
    path = tmp_path / "skeleton.json"
    small_skeleton().save_json(path)
    before = path.stat().st_mtime_ns
    small_skeleton().save_json(path)  # same content: nothing to do
    assert path.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small_skeleton(end_sites=None).save_json(path)
    assert Skeleton.load_json(path) == small_skeleton()
    small_skeleton(end_sites=None).save_json(path, overwrite=True)
    assert Skeleton.load_json(path) == small_skeleton(end_sites=None)
    path.write_text("a user's notes")
    with pytest.raises(FileExistsError):
        small_skeleton().save_json(path)
    assert path.read_text() == "a user's notes"


def test_load_json_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        Skeleton.load_json(path)
    path.write_text(json.dumps({"names": ["a"], "parents": [-1]}))
    with pytest.raises(ValueError, match=r"broken.json: missing key\(s\) \['offsets'\]"):
        Skeleton.load_json(path)


# SMPL's (and HumanML3D's) 22 joints, listed by depth as their parents say: not depth-first
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]


def _fk64(rotations, offsets, parents):
    """Float64 forward kinematics, each joint after its parent in any listing: positions [T, J, 3]."""
    frames, joints = rotations.shape[:2]
    positions, world = np.zeros((frames, joints, 3)), np.zeros((frames, joints, 3, 3))
    done = set()
    while len(done) < joints:
        for j in range(joints):
            p = parents[j]
            if j in done or (p >= 0 and p not in done):
                continue
            if p < 0:
                world[:, j], positions[:, j] = rotations[:, j], offsets[j]
            else:
                world[:, j] = world[:, p] @ rotations[:, j]
                positions[:, j] = positions[:, p] + world[:, p] @ offsets[j]
            done.add(j)
    return positions


def test_depth_first_order_and_reordered_give_a_bvh_writable_skeleton_posing_the_same_figure():
    """An MDM user's SMPL-ordered skeleton is refused as BVH (not depth-first); its depth-first order, as
    BVH lists the joints (worked by hand below), and `reordered` give a skeleton that is writable and, its
    rotations taken in that order, poses each joint where the original poses it (float64 FK here)."""
    from motion_ddpm_jax.data import bvh

    names = tuple(f"j{j}" for j in range(22))
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.2, (22, 3))
    smpl = Skeleton(names, np.array(SMPL_PARENTS), offsets)
    with pytest.raises(ValueError, match=r"not where a depth-first listing puts it.*\[0, 1, 4, 7, 10, 2,"):
        bvh.check_writable(smpl)
    expected = [0, 1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12, 15, 13, 16, 18, 20, 14, 17, 19, 21]
    assert smpl.depth_first_order.tolist() == expected
    ordered = smpl.reordered(expected)
    bvh.check_writable(ordered)
    assert ordered.names == tuple(f"j{j}" for j in expected)
    parents = [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 12, 11, 14, 15, 16, 11, 18, 19, 20]  # by hand
    assert ordered.parents.tolist() == parents
    axes = rng.normal(size=(5, 22, 3))
    angles = np.linalg.norm(axes, axis=-1)[..., None, None]
    k = axes / np.linalg.norm(axes, axis=-1, keepdims=True)
    cross = np.zeros((5, 22, 3, 3))
    cross[..., 0, 1], cross[..., 0, 2], cross[..., 1, 2] = -k[..., 2], k[..., 1], -k[..., 0]
    cross[..., 1, 0], cross[..., 2, 0], cross[..., 2, 1] = k[..., 2], -k[..., 1], k[..., 0]
    rotations = np.eye(3) + np.sin(angles) * cross + (1 - np.cos(angles)) * cross @ cross
    original = _fk64(rotations, smpl.offsets.astype(np.float64), SMPL_PARENTS)
    moved = _fk64(rotations[:, expected], ordered.offsets.astype(np.float64), ordered.parents.tolist())
    np.testing.assert_allclose(moved, original[:, expected], rtol=0, atol=1e-12)


def test_depth_first_order_lists_an_end_site_last_among_its_siblings():
    """A BVH end site is its parent's last child: one listed before a sibling joint is moved after it."""
    from motion_ddpm_jax.data import bvh

    skeleton = Skeleton(
        ("hips", "hips_Nub", "spine", "spine_Nub"),
        np.array([-1, 0, 0, 2]),
        np.ones((4, 3)),
        np.array([False, True, False, True]),
    )
    assert skeleton.depth_first_order.tolist() == [0, 2, 3, 1]
    bvh.check_writable(skeleton.reordered(skeleton.depth_first_order))
    with pytest.raises(ValueError, match="expected a permutation of the 4 joint indices"):
        skeleton.reordered([0, 1, 1, 2])
    with pytest.raises(ValueError, match="expected a permutation of the 4 joint indices"):
        skeleton.reordered(np.array([0.0, 2.0, 3.0, 1.0]))


def test_a_bvh_order_error_for_a_late_root_or_an_early_end_site_gives_the_order_that_writes():
    """A skeleton of one root listed after its child, or whose end site is listed before a sibling joint,
    is refused as BVH with the depth-first order (worked by hand) that `reordered` writes, as the error
    for children out of depth-first order gives it."""
    from motion_ddpm_jax.data import bvh

    late_root = Skeleton(
        ("spine", "hips", "spine_Nub"), np.array([1, -1, 0]), np.ones((3, 3)), np.array([False, False, True])
    )
    sites = np.array([False, True, False, True])
    early_site = Skeleton(
        ("hips", "hips_Nub", "spine", "spine_Nub"), np.array([-1, 0, 0, 2]), np.ones((4, 3)), sites
    )
    for skeleton, order in ((late_root, [1, 0, 2]), (early_site, [0, 2, 3, 1])):
        with pytest.raises(ValueError, match=re.escape("skeleton.reordered(skeleton.depth_first_order)")):
            bvh.check_writable(skeleton)
        with pytest.raises(ValueError, match=re.escape(f"in that order, {order} ")):
            bvh.check_writable(skeleton)
        bvh.check_writable(skeleton.reordered(order))
    forest = Skeleton(("a", "b"), np.array([-1, -1]), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"has roots at \[0, 1\]$"):  # no order to give
        bvh.check_writable(forest)
