"""Tests of render.py: stick-figure animations and training-curve plots, on tiny skeletons and few frames."""

import errno
import json
import math
import re
import shutil
import subprocess
import sys
import warnings

import matplotlib as mpl
import numpy as np
import pytest
from matplotlib import font_manager
from PIL import Image

from motion_ddpm_jax import render

# A tiny Y-up figure: root (hips), spine, head, and one arm off the spine.
PARENTS = np.array([-1, 0, 1, 1])
REST = np.array([[0.0, 90.0, 0.0], [0.0, 140.0, 0.0], [0.0, 170.0, 0.0], [-40.0, 130.0, 5.0]])


def walking(num_frames: int, speed: float = 3.0) -> np.ndarray:
    """[T, 4, 3]: the rest pose moving along +x and swinging its arm."""
    t = np.arange(num_frames, dtype=np.float64)
    positions = np.repeat(REST[None], num_frames, axis=0)
    positions[:, :, 0] += speed * t[:, None]
    positions[:, 3, 1] += 20.0 * np.sin(t)
    return positions


def standing(num_frames: int) -> np.ndarray:
    return np.repeat(REST[None], num_frames, axis=0) + np.array([100.0, -5.0, 30.0])


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """(x, y, z) -> (x, -z, y), written out by hand."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([x, -z, y], axis=-1)


def crop(image: np.ndarray, ax) -> np.ndarray:
    """The pixels of `image` [H, W, 4] inside the axes `ax` (display coordinates start bottom-left)."""
    box = ax.get_window_extent()
    height = image.shape[0]
    return image[height - int(box.y1) : height - int(box.y0), int(box.x0) : int(box.x1)]


def drawn_height(image: np.ndarray, ax) -> int:
    """The height in pixels of the stick figure drawn in panel `ax` of `image`: the rows holding bone-blue
    pixels (not the grey ground, nor the red joints)."""
    pixels = crop(image, ax)[..., :3].astype(np.int64)
    bone = (pixels[..., 2] - pixels[..., 0] > 60) & (pixels[..., 0] < 120)
    rows = np.nonzero(bone.any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def root_shift(sample: np.ndarray, t: int, up_axis: str = "y") -> np.ndarray:
    """[3]: the horizontal position (plot coordinates, z up) of the root of `sample` at frame t: what a
    camera following it moves by."""
    root = y_up_to_z_up(sample[t, 0]) if up_axis == "y" else sample[t, 0].astype(np.float64)
    return np.array([root[0], root[1], 0.0])


# ------------------------------------------------------------------------------------------ geometry
def test_to_plot_coordinates_puts_the_up_axis_on_z():
    point = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(render.to_plot_coordinates(point, "y"), [1.0, -3.0, 2.0])
    np.testing.assert_array_equal(render.to_plot_coordinates(point, "x"), [2.0, 3.0, 1.0])
    np.testing.assert_array_equal(render.to_plot_coordinates(point, "z"), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="up_axis"):
        render.to_plot_coordinates(point, "w")


def test_scene_bounds_is_a_cube_centred_on_all_points():
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(5, 4, 3)) * [10.0, 50.0, 3.0], rng.normal(size=(2, 4, 3)) + 40.0]
    lo, hi = render.scene_bounds(samples, up_axis="y", margin=0.1)

    points = np.concatenate([y_up_to_z_up(s).reshape(-1, 3) for s in samples])
    low, high = points.min(axis=0), points.max(axis=0)
    side = (high - low).max() * 1.2
    np.testing.assert_allclose(hi - lo, [side] * 3)
    np.testing.assert_allclose((lo + hi) / 2, (low + high) / 2)
    assert np.all(lo <= low) and np.all(high <= hi)


def test_scene_bounds_of_one_point_is_a_unit_cube():
    lo, hi = render.scene_bounds([np.full((1, 1, 3), 7.0)], up_axis="z")
    np.testing.assert_allclose(lo, [6.5] * 3)
    np.testing.assert_allclose(hi, [7.5] * 3)


def test_bone_polyline_draws_each_bone_child_to_parent_with_gaps():
    line = render.bone_polyline(REST, PARENTS)
    expected = []
    for child in range(len(PARENTS)):
        if PARENTS[child] >= 0:
            expected += [REST[child], REST[PARENTS[child]], [np.nan] * 3]
    np.testing.assert_array_equal(line, np.array(expected))


def test_wrap_title_keeps_every_word_within_width_and_cuts_long_captions():
    caption = "a person raises both hands above the head and then waves them slowly from side to side"
    wrapped = render.wrap_title(caption, width=20, max_lines=10)
    assert all(len(line) <= 20 for line in wrapped.split("\n"))
    assert wrapped.replace("\n", " ") == caption
    cut = render.wrap_title(caption, width=20, max_lines=2).split("\n")
    assert len(cut) == 2 and cut[-1].endswith("...") and len(cut[-1]) <= 20


def test_wrap_title_by_measured_width_breaks_words_wider_than_a_line():
    def measure(text):  # capitals twice as wide as other characters
        return sum(2 if c.isupper() else 1 for c in text)

    wrapped = render.wrap_title("ab " + "W" * 9 + " cd efg", width=6, max_lines=10, measure=measure)
    assert wrapped.split("\n") == ["ab", "WWW", "WWW", "WWW", "cd efg"]
    cut = render.wrap_title("W" * 20, width=6, max_lines=2, measure=measure).split("\n")
    assert cut == ["WWW", "W..."]
    assert render.wrap_title("  ", width=6, measure=measure) == ""


# --------------------------------------------------------------------------------------------- scene
def test_scene_has_one_panel_per_sample_titled_with_its_caption():
    captions = ["walk", "stand still", "wave", "walk again", "the fifth one"]
    samples = [walking(3), standing(2), walking(4), walking(2), standing(3)]
    scene = render.skeleton_scene(samples, PARENTS, fps=10, titles=captions, max_columns=2)

    assert len(scene.axes) == len(scene.figure.axes) == 5
    assert [ax.get_title().replace("\n", " ") for ax in scene.axes] == captions
    lefts = sorted({round(ax.get_position().x0, 6) for ax in scene.axes})
    bottoms = sorted({round(ax.get_position().y0, 6) for ax in scene.axes})
    assert len(lefts) == 2 and len(bottoms) == 3  # a grid of 2 columns, 3 rows
    assert scene.num_frames == 4


@pytest.mark.parametrize("camera", ["follow", "fixed"])
def test_panels_share_one_camera_and_limits_that_hold_every_point(camera):
    """fixed: one cube of the world holds every point; follow: every point about its root at that frame."""
    samples = [walking(6), standing(3) * 2.0]
    scene = render.skeleton_scene(samples, PARENTS, fps=10, up_axis="y", camera=camera)

    points = []
    for sample in samples:
        shifts = [root_shift(sample, t) if camera == "follow" else np.zeros(3) for t in range(len(sample))]
        points.append((y_up_to_z_up(sample) - np.array(shifts)[:, None]).reshape(-1, 3))
    points = np.concatenate(points)
    limits = [np.array([ax.get_xlim3d(), ax.get_ylim3d(), ax.get_zlim3d()]) for ax in scene.axes]
    for other, ax in zip(limits[1:], scene.axes[1:], strict=True):
        np.testing.assert_array_equal(other, limits[0])
        assert (ax.elev, ax.azim) == (scene.axes[0].elev, scene.axes[0].azim)
    lo, hi = limits[0][:, 0], limits[0][:, 1]
    assert np.all(lo <= points.min(axis=0)) and np.all(points.max(axis=0) <= hi)
    np.testing.assert_allclose(hi - lo, [(hi - lo)[0]] * 3)  # a cube...
    for ax in scene.axes:
        np.testing.assert_allclose(ax.get_box_aspect(), [ax.get_box_aspect()[0]] * 3)  # ...drawn as one


def test_ground_grid_lies_at_the_lowest_point_of_all_samples():
    low = standing(2)
    low[1, 0, 1] = -12.5  # one joint of one frame of the second sample dips lowest
    scene = render.skeleton_scene([walking(3), low], PARENTS, fps=10, up_axis="y")
    for ground in scene.ground:
        heights = np.asarray(ground.get_data_3d()[2], dtype=np.float64)
        heights = heights[np.isfinite(heights)]
        assert heights.size > 0
        np.testing.assert_array_equal(heights, -12.5)


@pytest.mark.parametrize("camera", ["follow", "fixed"])
def test_each_frame_draws_its_bones_and_short_samples_hold_their_last_frame(camera):
    long, short = walking(5), walking(2, speed=-1.0)
    scene = render.skeleton_scene([long, short], PARENTS, fps=10, up_axis="z", camera=camera)
    for t in (0, 1, 4):
        scene.show_frame(t)
        for sample, bones in zip((long, short), scene.bones, strict=True):
            shown = min(t, len(sample) - 1)
            frame = sample[shown] - (root_shift(sample, shown, "z") if camera == "follow" else 0.0)
            drawn = np.stack(bones.get_data_3d(), axis=-1)
            finite = drawn[np.isfinite(drawn[:, 0])]
            expected = [frame[j] if k == 0 else frame[PARENTS[j]] for j in (1, 2, 3) for k in (0, 1)]
            np.testing.assert_allclose(finite, expected)


def heights_beside_a_walker(speed: float, camera: str) -> tuple[int, int]:
    """The drawn heights (pixels) of a figure standing still and of one walking `speed` cm a frame beside
    it, at the last of 11 frames."""
    scene = render.skeleton_scene([standing(11), walking(11, speed)], PARENTS, fps=10, camera=camera)
    image = scene.render(10)
    return drawn_height(image, scene.axes[0]), drawn_height(image, scene.axes[1])


def test_a_sample_walking_far_does_not_shrink_the_figure_beside_it():
    """A figure standing still beside one that walks 5 m is drawn as tall as beside one walking on the
    spot (180 pixels); one cube of the world for all panels (camera="fixed") drew it 24 pixels tall."""
    reference = heights_beside_a_walker(0.0, "follow")
    far = heights_beside_a_walker(50.0, "follow")  # 5 m along x in 10 steps
    assert reference[0] > 150  # pixels, of a 300-pixel panel
    assert far == pytest.approx(reference, rel=0.02)
    assert heights_beside_a_walker(50.0, "fixed")[0] < 0.4 * reference[0]
    assert heights_beside_a_walker(50.0, "auto") == far


def test_a_followed_panel_keeps_the_scale_of_the_others():
    """Following each figure keeps one scale for all panels: a figure twice as tall is drawn twice as tall."""
    scene = render.skeleton_scene([standing(2), standing(2) * 2.0], PARENTS, fps=10, camera="follow")
    image = scene.render(0)
    ratio = drawn_height(image, scene.axes[1]) / drawn_height(image, scene.axes[0])
    assert ratio == pytest.approx(2.0, rel=0.1)


def test_a_followed_figures_ground_grid_stays_on_the_ground():
    """The camera moves with the walker; the grid lines, shifted back by its root, lie where they lay."""
    walker = walking(6, speed=7.0)
    scene = render.skeleton_scene([walker, standing(6)], PARENTS, fps=10, up_axis="y", camera="follow")
    lo, hi = scene.bounds
    cell = scene.ground_cell
    assert cell == pytest.approx(render.GROUND_CELL_STEPS * 7.0)  # 7 cm a frame: more than the cube's 1/8
    lines = []
    for t in range(6):
        scene.show_frame(t)
        points = np.stack([np.asarray(a, dtype=np.float64) for a in scene.ground[0].get_data_3d()], axis=-1)
        segments = points.reshape(-1, 3, 3)[:, :2]  # each line: two ends, then NaN
        across = segments[:, 0, 0] == segments[:, 1, 0]  # lines of constant x (and those of constant y)
        for axis, chosen in ((0, across), (1, ~across)):
            at = segments[chosen, 0, axis]
            assert np.all((lo[axis] - 1e-9 <= at) & (at <= hi[axis] + 1e-9))
            assert len(at) >= math.floor((hi[axis] - lo[axis]) / cell)
            on_ground = (at + root_shift(walker, t)[axis] - lo[axis]) / cell
            np.testing.assert_allclose(on_ground, np.round(on_ground), atol=1e-6)
        lines.append(points)
    assert not np.array_equal(lines[0], lines[1], equal_nan=True)  # it scrolled


def walker(num_frames: int, velocity, fps: float = 10.0) -> np.ndarray:
    """[T, 4, 3]: the rest pose swinging its arm, its root moving `velocity` (x, z: data units a second)."""
    t = np.arange(num_frames, dtype=np.float64) / fps
    positions = np.repeat(REST[None], num_frames, axis=0)
    positions[:, :, 0] += velocity[0] * t[:, None]
    positions[:, :, 2] += velocity[1] * t[:, None]
    positions[:, 3, 1] += 20.0 * np.sin(2 * np.pi * t)
    return positions


def grid_lines(scene, panel: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The drawn ground grid of a panel: (x of its lines of constant x, y of its lines of constant y)."""
    points = np.stack([np.asarray(a, dtype=np.float64) for a in scene.ground[panel].get_data_3d()], axis=-1)
    segments = points.reshape(-1, 3, 3)[:, :2, :2]  # each line: two ends, then NaN
    across = segments[:, 0, 0] == segments[:, 1, 0]
    return np.sort(segments[across, 0, 0]), np.sort(segments[~across, 0, 1])


def test_a_scrolling_grid_seems_to_move_as_far_and_the_way_the_ground_does():
    """Walkers of several speeds, directions and frame rates: between the frames an animation shows (every
    other one at 60 fps), the grid seems to move (its lines to their nearest lines before) by the root's step
    backwards, never less, nor the wrong way (as a wheel in a film does). A grid of 1/8 of the cube (the old
    one) showed several of these walkers moving backwards or standing still: a step over half its cell."""
    cases = [  # (fps, data units a second along x and z); the figure is 80 units tall
        (12.5, (50.0, 0.0)),
        (12.5, (150.0, 0.0)),
        (12.5, (-140.0, 140.0)),
        (20.0, (0.0, -200.0)),
        (60.0, (150.0, 0.0)),
        (60.0, (0.0, 300.0)),
    ]
    aliased_before = 0
    for fps, velocity in cases:
        sample = walker(24, velocity, fps)
        scene = render.skeleton_scene([sample, standing(24)], PARENTS, fps=fps, camera="follow")
        lo, hi = scene.bounds
        step = render.gif_timing(scene.num_frames, fps)[0]
        shown = list(range(0, scene.num_frames, step))
        for a, b in zip(shown[:-1], shown[1:], strict=True):
            scene.show_frame(a)
            before = grid_lines(scene)
            scene.show_frame(b)
            after = grid_lines(scene)
            moved = root_shift(sample, b) - root_shift(sample, a)  # the root, so the camera, in plot axes
            for axis in (0, 1):
                assert len(before[axis]) >= 2, (fps, velocity)
                cell = np.diff(before[axis])[0]  # as drawn
                apparent = (after[axis][0] - before[axis][0] + cell / 2) % cell - cell / 2  # to the nearest
                assert apparent == pytest.approx(-moved[axis], abs=1e-6), (fps, velocity, a, axis)
                aliased_before += abs(moved[axis]) > (hi - lo)[axis] / render.GROUND_CELLS / 2
    assert aliased_before > 10


def test_a_still_grid_keeps_its_cells_and_ground_cells_are_shared():
    """camera="fixed" keeps the grid of GROUND_CELLS cells a side; following, every panel's grid has the
    same cells, sized by the fastest root."""
    fixed = render.skeleton_scene([walking(4, 30.0), standing(4)], PARENTS, fps=10, camera="fixed")
    lo, hi = fixed.bounds
    assert fixed.ground_cell is None and fixed.camera == "fixed"
    xs, ys = grid_lines(fixed, 1)
    np.testing.assert_allclose(xs, np.linspace(lo[0], hi[0], render.GROUND_CELLS + 1))
    np.testing.assert_allclose(ys, np.linspace(lo[1], hi[1], render.GROUND_CELLS + 1))
    follow = render.skeleton_scene([walking(4, 30.0), walking(4, 10.0)], PARENTS, fps=10, camera="follow")
    assert follow.ground_cell == pytest.approx(render.GROUND_CELL_STEPS * 30.0)
    for panel in (0, 1):
        np.testing.assert_allclose(np.diff(grid_lines(follow, panel)[0]), follow.ground_cell)


def test_a_root_leaping_further_than_the_panel_each_frame_is_drawn(tmp_path):
    """Cells sized by such leaps (an untrained model's samples) are wider than the panel: no grid line, or
    one, at a frame; drawn without a failure."""
    leaping = walking(5) + np.array([[300.0, 0.0, 0.0], [-200.0, 0.0, 250.0]] * 2 + [[0.0] * 3])[:, None]
    scene = render.skeleton_scene([leaping], PARENTS, fps=20, camera="follow")
    assert scene.ground_cell > scene.bounds[1][0] - scene.bounds[0][0]
    for t in range(5):
        scene.render(t)
        assert sum(map(len, grid_lines(scene))) <= 2
    render.animate_skeletons([leaping], PARENTS, tmp_path / "leaps.gif", fps=20, camera="follow")


def test_the_camera_follows_the_first_joint_without_a_parent_wherever_it_is():
    """Joints in another order (the hips, the root, third) and a second parentless joint (a prop) after it."""
    order = [3, 1, 0, 2]  # arm, spine, hips, head
    parents = np.array([1, 2, -1, 1, -1])
    base = walking(5, speed=20.0)
    sample = np.concatenate([base[:, order], base[:, :1] + [30.0, -60.0, 10.0]], axis=1)
    scene = render.skeleton_scene([sample], parents, fps=10, camera="follow")
    for t in range(5):
        scene.show_frame(t)
        root = y_up_to_z_up(sample[t, 2])
        np.testing.assert_allclose(scene.offsets[0][t], [root[0], root[1], 0.0])
        drawn = np.stack(scene.joints[0].get_data_3d(), axis=-1)
        np.testing.assert_allclose(drawn, y_up_to_z_up(sample[t]) - [root[0], root[1], 0.0])


def cube_ratio(samples) -> float:
    """The side of one world cube holding `samples` over that of the cube holding their poses about the
    root (joint 0), as render.scene_bounds draws them."""
    lo, hi = render.scene_bounds(samples)
    about = [s - np.array([1.0, 0.0, 1.0]) * s[:, :1] for s in samples]
    lo_root, hi_root = render.scene_bounds(about)
    return (hi - lo)[0] / (hi_root - lo_root)[0]


def test_auto_follows_only_where_one_world_cube_would_shrink_the_figures():
    """Beside a walker going further and further, the figure standing still stays at its size (one cube of
    the world: a still grid) until that cube would be AUTO_FOLLOW_RATIO times the one about the roots; then
    each camera follows its root. The standing figure is never drawn at less than 0.6 of its size."""
    alone = render.skeleton_scene([walking(9, 0.0)] * 2, PARENTS, fps=10, camera="follow")
    full = drawn_height(alone.render(8), alone.axes[0])
    chosen = []
    for speed in (0.0, 3.0, 6.0, 9.0, 9.5, 10.5, 13.0, 15.0, 30.0, 60.0):  # cm a frame, 8 frames
        samples = [walking(9, 0.0), walking(9, speed)]  # both start at the same place
        scene = render.skeleton_scene(samples, PARENTS, fps=10)
        ratio = cube_ratio([y_up_to_z_up(s) for s in samples])
        assert scene.camera == ("follow" if ratio > render.AUTO_FOLLOW_RATIO else "fixed"), speed
        assert drawn_height(scene.render(8), scene.axes[0]) >= 0.6 * full, speed
        chosen.append(scene.camera)
    assert chosen == ["fixed"] * 5 + ["follow"] * 5  # fixed up to a walk of 76 cm (the figure: 80 cm tall)


def test_auto_draws_figures_that_stay_put_as_a_fixed_camera_does(tmp_path):
    """The default for figures near their place (a speaker gesturing) is one still cube of the world: the
    same GIF, byte for byte, as camera="fixed", whose frames differ only where the figures move."""
    samples = [walking(4, 0.0), walking(4, 3.0)]
    auto = render.animate_skeletons(samples, PARENTS, tmp_path / "auto.gif", fps=10)
    fixed = render.animate_skeletons(samples, PARENTS, tmp_path / "fixed.gif", fps=10, camera="fixed")
    assert auto.read_bytes() == fixed.read_bytes()
    scene = render.skeleton_scene(samples, PARENTS, fps=10)
    assert scene.camera == "fixed" and scene.ground_cell is None
    assert not any(ground in scene.moving_artists for ground in scene.ground)


def test_moving_figure_changes_pixels_and_a_static_one_does_not():
    scene = render.skeleton_scene([walking(4), standing(4)], PARENTS, fps=10)
    first, later = scene.render(0), scene.render(3)
    moving_ax, static_ax = scene.axes
    assert np.any(crop(first, moving_ax) != crop(later, moving_ax))
    np.testing.assert_array_equal(crop(first, static_ax), crop(later, static_ax))
    assert crop(first, static_ax).min() < 128  # and something was drawn there


def test_fast_frame_drawing_matches_a_full_redraw():
    scene = render.skeleton_scene([walking(4), standing(2)], PARENTS, fps=10, titles=["a", "b"])
    fast = scene.render(2)
    scene.figure.canvas.draw()
    np.testing.assert_array_equal(fast, np.asarray(scene.figure.canvas.buffer_rgba()))


# ------------------------------------------------------------------------- mirrored data (KIT-ML)
# Where each body part of a figure facing +z with y up lies: (distance to the body's side, height, ahead),
# in metres; "left_"/"right_" joints take the part after the prefix. Both layouts' joints are named here.
BODY_PARTS = {
    "pelvis": (0.0, 0.95, 0.0), "lower_spine": (0.0, 1.05, -0.01), "spine1": (0.0, 1.05, -0.01),
    "spine2": (0.0, 1.18, -0.01), "upper_spine": (0.0, 1.25, -0.02), "spine3": (0.0, 1.25, -0.02),
    "neck": (0.0, 1.45, -0.02), "lower_neck": (0.0, 1.45, -0.02), "upper_neck": (0.0, 1.5, 0.0),
    "head": (0.0, 1.6, 0.03), "collar": (0.07, 1.37, -0.01), "shoulder": (0.18, 1.4, -0.02),
    "elbow": (0.2, 1.1, -0.04), "wrist": (0.22, 0.85, -0.01), "hip": (0.09, 0.9, 0.0),
    "knee": (0.1, 0.5, 0.01), "ankle": (0.1, 0.08, -0.03), "midfoot": (0.1, 0.04, 0.02),
    "foot": (0.1, 0.02, 0.12),
}  # fmt: skip
RAISED = {"elbow": (0.22, 1.65, -0.02), "wrist": (0.25, 1.9, 0.0)}  # the left arm straight up


def left_arm_raised(names, left_at: float, frames: int = 3, step=(0.0, 0.0, 0.0)) -> np.ndarray:
    """[frames, J, 3]: joints `names` standing, the left arm raised, facing +z with y up, the joints named
    left_* at x = left_at * their side distance (+1: HumanML3D's right-handed data, -1: KIT-ML's mirrored
    data, MMM's left joints at -x), moving `step` (x, y, z) a frame."""
    pose = []
    for name in names:
        side, part = name.split("_", 1) if name.startswith(("left_", "right_")) else ("", name)
        x, y, z = RAISED[part] if side == "left" and part in RAISED else BODY_PARTS[part]
        pose.append([{"left": left_at, "right": -left_at, "": 1.0}[side] * x, y, z])
    return np.asarray(pose)[None] + np.arange(frames)[:, None, None] * np.asarray(step)


def drawn_sides(scene, names) -> tuple[float, float, float]:
    """For panel 0's figure (joints `names`) at the frame shown: (screen x of its left wrist minus that of
    its right wrist, in pixels; the same for the left and right shoulders; how far its toes point at the
    camera). The screen x are of the 2-D points matplotlib projected the joints to when it drew them; the
    toes' direction is the drawn 3D data's toe minus ankle (both feet) dotted with the horizontal part of
    the direction from the scene to the camera, written out from the view angles."""
    scene.draw()
    ax, joints = scene.axes[0], scene.joints[0]
    screen = ax.transData.transform(np.column_stack(joints.get_data()))[:, 0]
    drawn = np.stack(joints.get_data_3d(), axis=-1)
    index = {name: i for i, name in enumerate(names)}
    elevation, azimuth = np.radians(render.VIEW_ELEVATION), np.radians(render.VIEW_AZIMUTH)
    to_camera = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), 0.0])
    toes = sum(drawn[index[f"{s}_foot"]] - drawn[index[f"{s}_ankle"]] for s in ("left", "right"))
    return (
        screen[index["left_wrist"]] - screen[index["right_wrist"]],
        screen[index["left_shoulder"]] - screen[index["right_shoulder"]],
        float(toes @ to_camera),
    )


def sides_drawn(names, parents, positions, **options) -> tuple[float, float, float]:
    """`drawn_sides` of the figure `positions` [T, J, 3] (joints `names`, `parents`) at frame 0."""
    return drawn_sides(render.skeleton_scene([positions], np.asarray(parents), fps=10, **options), names)


def test_kit_figures_are_drawn_as_performed_with_the_left_arm_on_their_left():
    """KIT-ML's positions are a mirror image of the motion (MMM's left joints at -x, facing +z): drawn as
    they are, a figure raising its left arm faces the camera with that arm on the viewer's left, its right
    side. Drawn `mirrored` as its layout says (humanml3d.is_mirrored), it faces the camera with the arm
    on the viewer's right, the figure's own left, as HumanML3D's right-handed figure is drawn."""
    from motion_ddpm_jax import humanml3d

    assert humanml3d.is_mirrored("humanml3d", humanml3d.KIT.features)
    kit = left_arm_raised(humanml3d.KIT_NAMES, left_at=-1.0)
    wrists, shoulders, facing = sides_drawn(humanml3d.KIT_NAMES, humanml3d.KIT_PARENTS, kit, mirrored=True)
    assert facing > 0.1 and wrists > 20 and shoulders > 20  # pixels, of a 300-pixel panel
    wrists, shoulders, facing = sides_drawn(humanml3d.KIT_NAMES, humanml3d.KIT_PARENTS, kit)
    assert facing > 0.1 and wrists < -20 and shoulders < -20  # drawn as stored: the mirror image

    assert not humanml3d.is_mirrored("humanml3d", humanml3d.T2M.features)
    t2m = left_arm_raised(humanml3d.NAMES, left_at=1.0)
    wrists, shoulders, facing = sides_drawn(humanml3d.NAMES, humanml3d.PARENTS, t2m)
    assert facing > 0.1 and wrists > 20 and shoulders > 20


def test_mirrored_draws_the_reflected_motion_camera_and_ground_and_leaves_the_positions_alone(tmp_path):
    """A KIT figure walking (far enough for the camera to follow it) drawn `mirrored` is the animation of
    its positions with x negated by hand, byte for byte: the figure, the camera following its root and the
    scrolling ground all reflected. The arrays passed in are not changed (sampling writes them as they
    are, after drawing them or not)."""
    from motion_ddpm_jax import humanml3d

    kit = left_arm_raised(humanml3d.KIT_NAMES, -1.0, frames=6, step=(0.6, 0.0, 0.3)) * 1000.0  # millimetres
    given = kit.copy()
    mirrored = render.animate_skeletons(
        [kit], humanml3d.KIT_PARENTS, tmp_path / "mirrored.gif", fps=12.5, mirrored=True
    )
    np.testing.assert_array_equal(kit, given)
    by_hand = render.animate_skeletons(
        [kit * [-1.0, 1.0, 1.0]], humanml3d.KIT_PARENTS, tmp_path / "by_hand.gif", fps=12.5
    )
    assert mirrored.read_bytes() == by_hand.read_bytes()
    scene = render.skeleton_scene([kit], np.asarray(humanml3d.KIT_PARENTS), fps=12.5, mirrored=True)
    assert scene.camera == "follow" and scene.mirrored
    np.testing.assert_allclose(scene.samples[0], y_up_to_z_up(kit * [-1.0, 1.0, 1.0]))
    np.testing.assert_allclose(scene.offsets[0][:, 0], -kit[:, 0, 0])  # the camera follows the reflected root
    np.testing.assert_array_equal(kit, given)


def test_humanml3ds_drawing_is_what_it_was():
    """HumanML3D's data are not mirrored: its figures are drawn as before, pixel for pixel."""
    from motion_ddpm_jax import humanml3d

    t2m = left_arm_raised(humanml3d.NAMES, 1.0, frames=4, step=(0.2, 0.0, 0.1))
    flag = humanml3d.is_mirrored("humanml3d", 263)
    drawn = render.skeleton_scene([t2m], np.asarray(humanml3d.PARENTS), fps=20, mirrored=flag)
    before = render.skeleton_scene([t2m], np.asarray(humanml3d.PARENTS), fps=20)
    assert not drawn.mirrored
    np.testing.assert_array_equal(drawn.render(3), before.render(3))


# Captions that once ran out of their title band: into the neighbouring title, the panel, or the row above.
HOSTILE_CAPTIONS = {
    "long sentence": (
        "a person walks forward slowly, then turns around to the left, raises both arms high above the head, "
        "waves them from side to side, sits down on a chair, crosses the legs and finally stands up again"
    ),
    "200 W": "W" * 200,
    "one 120-character word": "mw" * 60,
    "upper case": "THE PERSON MOVES WIDELY, WOBBLING WITH MOMENTUM: A WARM-UP WORKOUT AT MAXIMUM WIDTH " * 2,
    "cyrillic": "Человек широко шагает вперёд, машет обеими руками и приседает: ЩЖШЮЫ МЫШЬ " * 2,
    "cjk": "一个人向前走了几步，然后转身举起双手在头顶上方挥动" * 3,
    "dollar signs": r"costs $5 or $6, a $\oops$ step, a $\frac{1}{2}$ turn",  # free text, not mathtext
    "empty": "",
}


def layout_bounds(num_panels: int, columns: int):
    """For each panel, in pixels from the figure's bottom left: its column (x0, x1) and its title band
    (y0, y1), from the layout's constants: rows of a title band over a square panel, a clock strip below."""
    panel, band, clock = (
        inches * render.DPI for inches in (render.PANEL_INCHES, render.TITLE_INCHES, render.CLOCK_INCHES)
    )
    rows = math.ceil(num_panels / columns)
    size = (columns * panel, rows * (panel + band) + clock)
    bounds = []
    for i in range(num_panels):
        row, column = divmod(i, columns)
        band_bottom = clock + (rows - 1 - row) * (panel + band) + panel
        bounds.append(((column * panel, (column + 1) * panel), (band_bottom, band_bottom + band)))
    return size, bounds


def assert_titles_inside_their_bands(captions: list[str], columns: int) -> None:
    """Draw a scene titled `captions`; each title must lie in its column and title band, clear of the others,
    and show the start of its caption (all of it, or cut with '...') at a legible size."""
    samples = [walking(2) if i % 2 else standing(2) for i in range(len(captions))]
    said = []  # characters no font here has are drawn as boxes, which have widths too
    scene = render.skeleton_scene(
        samples, PARENTS, fps=10, titles=captions, max_columns=columns, log=said.append
    )
    scene.render(1)
    size, bounds = layout_bounds(len(captions), columns)
    assert scene.figure.canvas.get_width_height() == size
    renderer = scene.figure.canvas.get_renderer()
    boxes = []
    for caption, ax, ((left, right), (bottom, top)) in zip(captions, scene.axes, bounds, strict=True):
        title = ax.title
        shown, words = re.sub(r"\s", "", title.get_text()), re.sub(r"\s", "", caption)
        assert shown == words or (shown.endswith("...") and words.startswith(shown[:-3])), title.get_text()
        if not caption:
            continue  # nothing drawn (an empty Text's extent is a unit box at the origin)
        assert shown != "..." and title.get_fontsize() >= 7.0
        box = title.get_window_extent(renderer)
        overflow = (left - box.x0, box.x1 - right, bottom - box.y0, box.y1 - top)
        assert max(overflow) <= 1e-6, (
            f"{caption[:30]!r} overflows (left, right, below, above) by {overflow} px"
        )
        boxes.append(box)
    for i, box in enumerate(boxes):
        for other in boxes[i + 1 :]:
            assert not box.overlaps(other)


@pytest.mark.parametrize("name", HOSTILE_CAPTIONS)
def test_every_title_stays_in_its_column_and_title_band(name):
    assert_titles_inside_their_bands([HOSTILE_CAPTIONS[name]] * 3, columns=2)  # two side by side, one below


def test_titles_of_all_kinds_side_by_side_stay_apart():
    assert_titles_inside_their_bands(list(HOSTILE_CAPTIONS.values()), columns=3)


def test_a_note_sits_left_of_the_clock_and_is_cut_to_fit():
    scene = render.skeleton_scene([walking(3)], PARENTS, fps=10, note="step 2000")
    renderer = scene.figure.canvas.get_renderer()
    (note,) = [text for text in scene.figure.texts if text is not scene.clock]
    assert note.get_text() == "step 2000"
    long = render.skeleton_scene([walking(300)], PARENTS, fps=60, note="step 2000 " + "x" * 200)
    (note,) = [text for text in long.figure.texts if text is not long.clock]
    assert note.get_text().startswith("step 2000 x") and note.get_text().endswith("...")
    long.show_frame(299)  # the widest clock
    assert note.get_window_extent(renderer).x1 < long.clock.get_window_extent(renderer).x0
    assert note.get_window_extent(renderer).x0 >= 0


def test_an_ordinary_caption_is_shown_whole_at_the_title_font_size():
    caption = "a person walks forward, turns around to the left and then walks back to where they started"
    scene = render.skeleton_scene([walking(2)], PARENTS, fps=10, titles=[caption])
    assert scene.axes[0].get_title().replace("\n", " ") == caption
    assert scene.axes[0].title.get_fontsize() == render.TITLE_FONT_SIZE


# ---------------------------------------------------------------------------------------- title fonts
def font_entry(name: str, path: str, **properties) -> font_manager.FontEntry:
    return font_manager.FontEntry(fname=path, name=name, **properties)


def test_fallback_fonts_are_chosen_from_what_font_manager_lists(monkeypatch):
    """Families matplotlib lists, the preferred ones first, each only for characters still lacking; not
    one that cannot be drawn with, nor TeX's fonts; characters none has are said per caption."""
    covers = {  # font file -> the characters it has (None: one matplotlib cannot draw with)
        "/fonts/main.ttf": "abcdefghijklmnopqrstuvwxyz",
        "/fonts/cjk.ttc": "你好世界",
        "/fonts/wqy.ttc": "你好世界挥手",
        "/fonts/symbols.ttf": "✋",
        "/fonts/color.ttf": None,
        "/fonts/cmsy10.ttf": "✋ɐ",
        "/fonts/zeta.ttf": "ɐ",
        "/fonts/zeta-bold.ttf": "ɐ你",
    }
    listed = [
        font_entry("Zeta Sans", "/fonts/zeta-bold.ttf", weight=700),
        font_entry("Zeta Sans", "/fonts/zeta.ttf"),
        font_entry("cmsy10", "/fonts/cmsy10.ttf"),
        font_entry("Noto Color Emoji", "/fonts/color.ttf"),
        font_entry("Symbola", "/fonts/symbols.ttf"),
        font_entry("WenQuanYi Zen Hei", "/fonts/wqy.ttc"),
        font_entry("Noto Sans CJK JP", "/fonts/cjk.ttc", index=2),
    ]
    looked_up = []

    def face_characters(path, index=0):
        looked_up.append((path, index))
        chars = covers[path]
        return None if chars is None else np.array(sorted(map(ord, chars)), dtype=np.int64)

    monkeypatch.setattr(font_manager.fontManager, "ttflist", listed)
    monkeypatch.setattr(render, "_face_characters", face_characters)
    monkeypatch.setattr(render, "_main_faces", lambda families: [("/fonts/main.ttf", 0)])
    fonts = render.title_fonts(["wave ✋", "你好 世界 挥手", "walk", "sit \U00013000 ɐ\u200d\ufe0f"])

    main = tuple(mpl.rcParams["font.family"])
    assert fonts.families == (*main, "Noto Sans CJK JP", "WenQuanYi Zen Hei", "Symbola", "Zeta Sans")
    assert fonts.unshown == {3: "\U00013000"}  # not the joiner nor the variation selector
    assert ("/fonts/cjk.ttc", 2) in looked_up and ("/fonts/zeta-bold.ttf", 0) not in looked_up

    monkeypatch.setattr(font_manager.fontManager, "ttflist", [])  # nothing else installed: no failure
    fonts = render.title_fonts(["wave ✋", "walk"])
    assert fonts == render.TitleFonts(main, {0: "✋"})


def without_glyphs(monkeypatch):
    """Make every font report only ASCII letters, as on a machine without fonts for anything else."""
    ascii_only = np.arange(0x20, 0x7F, dtype=np.int64)
    monkeypatch.setattr(render, "_face_characters", lambda path, index=0: ascii_only)


def test_characters_no_font_has_are_said_once_naming_the_captions(tmp_path, monkeypatch):
    """One message from the project, to the caller's log, instead of matplotlib's warnings per glyph."""
    without_glyphs(monkeypatch)
    captions = ["walk", "wave ✋", "你好 世界 挥手", "wave ✋"]
    said, path = [], tmp_path / "samples.gif"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render.animate_skeletons([standing(3)] * 4, PARENTS, path, fps=10, titles=captions, log=said.append)
    assert [str(warning.message) for warning in caught] == []
    assert len(said) == 1
    message = said[0]
    assert message.startswith(f"{path}: ")
    assert "panels 2, 4 'wave ✋': ✋ (U+270B RAISED HAND)" in message
    assert "panel 3 '你好 世界 挥手': 你 好 世 界 挥 手" in message
    assert "'walk'" not in message
    assert "boxes" in message and "captions are kept as written" in message
    assert "fonts-noto-cjk" in message and "Symbola" in message and "fontlist-v*.json" in message
    with Image.open(path) as gif:
        assert gif.n_frames == 3


def test_without_a_log_characters_no_font_has_raise_one_warning(monkeypatch):
    without_glyphs(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = render.skeleton_scene([standing(2)], PARENTS, fps=10, titles=["挥手"])
        scene.render(1)
        scene.render(0)
    assert [(warning.category, str(warning.message)[:36]) for warning in caught] == [
        (render.MissingGlyphWarning, "no installed font that matplotlib ca")
    ]
    assert scene.unshown == {0: "挥手"}


def make_font(path, family: str, characters: str) -> None:
    """A TrueType font of `family` whose every glyph (for `characters` and a space) is a filled square."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.ttGlyphPen import TTGlyphPen

    def square(size: int):
        pen = TTGlyphPen(None)
        if size:
            pen.moveTo((50, -50))
            pen.lineTo((50, size))
            pen.lineTo((size, size))
            pen.lineTo((size, -50))
            pen.closePath()
        return pen.glyph()

    names = {ord(c): f"uni{ord(c):04X}" for c in characters}
    order = [".notdef", "space", *names.values()]
    builder = FontBuilder(1000, isTTF=True)
    builder.setupGlyphOrder(order)
    builder.setupCharacterMap({0x20: "space", **names})
    builder.setupGlyf({name: square(0 if name == "space" else 850) for name in order})
    builder.setupHorizontalMetrics({name: (900, 50) for name in order})
    builder.setupHorizontalHeader(ascent=900, descent=-100)
    builder.setupNameTable({"familyName": family, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=900, sTypoDescender=-100, usWinAscent=900, usWinDescent=100)
    builder.setupPost()
    builder.save(str(path))


def install_font(tmp_path, monkeypatch, family: str, characters: str) -> None:
    """A font `family` with filled squares for `characters`, listed by font_manager for this test only."""
    path = tmp_path / f"{family.replace(' ', '')}.ttf"
    make_font(path, family, characters)
    monkeypatch.setattr(font_manager.fontManager, "ttflist", list(font_manager.fontManager.ttflist))
    font_manager.fontManager.addfont(str(path))


def test_a_font_that_has_the_characters_draws_them(tmp_path, monkeypatch):
    """Installed (here: listed by font_manager), a font with the title's CJK and emoji is drawn with: no
    message, no warning of matplotlib's, and its glyphs (filled squares) in the title band."""
    install_font(tmp_path, monkeypatch, "Caption Test Glyphs", "你好✋")
    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = render.skeleton_scene([standing(2)], PARENTS, fps=10, titles=["你好 ✋"], log=said.append)
        image = scene.render(1)
    assert said == [] and scene.unshown == {}
    assert [str(warning.message) for warning in caught] == []
    assert "Caption Test Glyphs" in scene.axes[0].title.get_fontfamily()
    box = scene.axes[0].title.get_window_extent(scene.figure.canvas.get_renderer())
    title = image[image.shape[0] - int(box.y1) : image.shape[0] - int(box.y0), int(box.x0) : int(box.x1)]
    dark = title[..., :3].max(axis=-1) < 100
    assert dark.mean() > 0.5  # three filled squares, not the outlines of boxes


def note_ink(scene, image: np.ndarray) -> int:
    """How many pixels of the note's box in `image` are dark."""
    (note,) = [text for text in scene.figure.texts if text is not scene.clock]
    box = note.get_window_extent(scene.figure.canvas.get_renderer())
    drawn = image[image.shape[0] - int(box.y1) : image.shape[0] - int(box.y0), int(box.x0) : int(box.x1)]
    return int((drawn[..., :3].max(axis=-1) < 100).sum())


def test_the_note_draws_from_fallback_fonts_too(tmp_path, monkeypatch):
    """A note's characters the title font lacks come from an installed font that has them (filled squares,
    no warning); where none has them, one message names the note, and matplotlib's warnings stay quiet."""
    install_font(tmp_path, monkeypatch, "Note Test Glyphs", "第步")
    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = render.skeleton_scene([standing(2)], PARENTS, fps=10, note="第 2000 步", log=said.append)
        image = scene.render(1)
    assert said == [] and scene.unshown == {}
    assert [str(warning.message) for warning in caught] == []
    (note,) = [text for text in scene.figure.texts if text is not scene.clock]
    assert "Note Test Glyphs" in note.get_fontfamily()
    filled = note_ink(scene, image)

    without_glyphs(monkeypatch)
    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = render.skeleton_scene(
            [standing(2)] * 2, PARENTS, fps=10, titles=["walk", "挥手"], note="第 2000 步", log=said.append
        )
        boxed = note_ink(scene, scene.render(1))
    assert filled > 2 * boxed  # filled squares, not the outlines of boxes
    assert [str(warning.message) for warning in caught] == []
    assert scene.unshown == {1: "挥手", 2: "第步"}
    (message,) = said
    assert "of the titles and the note" in message
    assert "panel 2 '挥手': 挥 手" in message and "the note '第 2000 步': 第 步" in message


def test_other_warnings_while_drawing_reach_the_caller(monkeypatch):
    """Only matplotlib's warnings about the glyphs no font has (said once instead) are dropped: one about
    another character, or any other warning, raised while the scene is built or drawn, passes."""
    without_glyphs(monkeypatch)
    fit_title = render._fit_title

    def noisy_fit_title(*args):
        warnings.warn(
            f"Glyph {ord('挥')} (\\N{{CJK UNIFIED IDEOGRAPH-6325}}) missing from font(s) X.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn(
            f"Glyph {ord('あ')} (\\N{{HIRAGANA LETTER A}}) missing from font(s) X.", UserWarning, stacklevel=1
        )
        warnings.warn("something else, while building", UserWarning, stacklevel=1)
        fit_title(*args)

    monkeypatch.setattr(render, "_fit_title", noisy_fit_title)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = render.skeleton_scene([standing(2)], PARENTS, fps=10, titles=["挥手"], log=lambda _: None)
        draw_title = scene.axes[0].title.draw

        def noisy_draw(renderer):
            warnings.warn("something else, while drawing", RuntimeWarning, stacklevel=1)
            return draw_title(renderer)

        scene.axes[0].title.draw = noisy_draw
        scene.render(1)
    assert [str(warning.message)[:29] for warning in caught] == [
        f"Glyph {ord('あ')} (\\N{{HIRAGANA LETT",
        "something else, while buildin",
        "something else, while drawing",
    ]


def test_a_colour_font_is_never_a_fallback(tmp_path, monkeypatch):
    """matplotlib draws a colour font (COLR, as Noto Color Emoji's bitmaps) without its colours: a font
    listed first that has the character, but in colour, is passed over for a monochrome one."""
    from fontTools.colorLib.builder import buildCOLR, buildCPAL
    from fontTools.ttLib import TTFont

    character = "\U00013000"  # an Egyptian hieroglyph: not in DejaVu Sans
    colour, plain = tmp_path / "colour.ttf", tmp_path / "plain.ttf"
    make_font(colour, "Aaa Colour Test", character)
    font = TTFont(str(colour))
    font["COLR"] = buildCOLR({"uni13000": [("uni13000", 0)]})
    font["CPAL"] = buildCPAL([[(1.0, 0.0, 0.0, 1.0)]])
    font.save(str(colour))
    make_font(plain, "Zzz Plain Test", character)
    listed = [font_entry("Aaa Colour Test", str(colour)), font_entry("Zzz Plain Test", str(plain))]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", listed)
    fonts = render.title_fonts([f"sit {character}"])
    assert fonts.families == (*mpl.rcParams["font.family"], "Zzz Plain Test")
    assert fonts.unshown == {}
    monkeypatch.setattr(font_manager.fontManager, "ttflist", listed[:1])
    assert render.title_fonts([f"sit {character}"]).unshown == {0: character}


# ----------------------------------------------------------------------------------------- animation
def test_gif_has_one_frame_per_step_of_the_longest_sample(tmp_path):
    path = tmp_path / "out" / "samples.gif"
    samples = [walking(5), standing(2), walking(3)]
    assert render.animate_skeletons(samples, PARENTS, path, fps=10, titles=["a", "b", "c"]) == path

    scene = render.skeleton_scene(samples, PARENTS, fps=10, titles=["a", "b", "c"])
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
        assert gif.size == scene.figure.canvas.get_width_height()
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    moving_ax = scene.axes[0]
    for t in range(1, 5):
        assert np.any(crop(frames[t - 1], moving_ax) != crop(frames[t], moving_ax))
    assert not list(tmp_path.glob("out/.*"))  # no temporary left behind


@pytest.mark.parametrize(
    ("fps", "frames", "step", "delays_cs"),
    [
        (10, 4, 1, [10, 10, 10, 10]),
        (20, 3, 1, [5, 5, 5]),
        (30, 6, 1, [3, 4, 3, 3, 4, 3]),  # frame k starts at the hundredth nearest k * 3.33
        (60, 12, 2, [3, 4, 3, 3, 4, 3]),  # BEAT: every other frame, at 30 fps
        (60, 5, 2, [3, 4, 3]),  # time steps 0, 2, 4
        (120, 6, 3, [3, 2]),  # every third, 2.5 hundredths each
        (50, 3, 1, [2, 2, 2]),
    ],
)
def test_gif_timing_keeps_delays_a_player_honours_and_the_real_duration(fps, frames, step, delays_cs):
    got_step, delays_ms = render.gif_timing(frames, fps)
    assert (got_step, delays_ms) == (step, [10 * d for d in delays_cs])
    kept = len(range(0, frames, step))
    assert abs(sum(delays_ms) / 1000 - kept * step / fps) <= 0.005 + 1e-12
    assert min(delays_ms) >= 20


def test_a_60_fps_gif_plays_at_the_motions_own_speed(tmp_path):
    """BEAT's 60 fps: Pillow reads back every other time step, each shown for 30 or 40 ms, 1 s in all for
    60 time steps (matplotlib's writer stored 10 ms a frame: 1.7x too fast, or 6x too slow in a browser)."""
    path = render.animate_skeletons([walking(60)], PARENTS, tmp_path / "beat.gif", fps=60)
    with Image.open(path) as gif:
        assert gif.n_frames == 30
        delays = []
        for i in range(gif.n_frames):
            gif.seek(i)
            delays.append(gif.info["duration"])
    assert set(delays) <= {30, 40} and sum(delays) == 1000


def test_gif_keeps_every_frame_even_when_nothing_moves(tmp_path):
    # Pillow merges a GIF frame identical to the one before; the clock keeps each frame distinct.
    path = render.animate_skeletons([standing(4)], PARENTS, tmp_path / "still.gif", fps=10)
    with Image.open(path) as gif:
        assert gif.n_frames == 4


def test_stacked_array_of_samples_is_accepted(tmp_path):
    stacked = np.stack([walking(3), standing(3)])
    path = render.animate_skeletons(stacked, PARENTS, tmp_path / "a.gif", fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == 3


def test_an_error_while_drawing_the_frames_comes_out_as_it_is(tmp_path, monkeypatch):
    """Out of memory at the third frame of a GIF: that error, not one of the writer's about the frames it
    lacks (a caller handles running out of memory), and no file."""
    show_frame = render.SkeletonScene.show_frame

    def failing(scene, t):
        if t == 2:
            raise MemoryError("no room for frame 2")
        show_frame(scene, t)

    monkeypatch.setattr(render.SkeletonScene, "show_frame", failing)
    with pytest.raises(MemoryError, match="frame 2"):
        render.animate_skeletons([walking(5)], PARENTS, tmp_path / "a.gif", fps=10)
    assert list(tmp_path.iterdir()) == []


def test_animation_never_overwrites(tmp_path):
    path = tmp_path / "taken.gif"
    path.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=re.escape(str(path))):
        render.animate_skeletons([walking(2)], PARENTS, path, fps=10)
    assert path.read_bytes() == b"mine"


# MP4 is checked by ffmpeg itself, found here without render.py: on the PATH, else imageio-ffmpeg's binary.
def independent_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except ImportError:
        bundled = None
    return shutil.which("ffmpeg") or bundled


FFMPEG = independent_ffmpeg()
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="MP4 needs ffmpeg on the PATH or imageio-ffmpeg (pip install -e '.[test]')"
)
MP4_FPS = 8
MP4_SAMPLES = (walking(10), standing(6))


def ffmpeg_report(path) -> str:
    """What ffmpeg says about `path` while copying its video stream: the stream line and `frame=N`."""
    copy_to_nothing = ["-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    command = [FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), *copy_to_nothing]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def frames_counted(report: str) -> int:
    """The last `frame=N` of an ffmpeg report: the number of frames it copied."""
    counts = re.findall(r"frame=\s*(\d+)", report)
    assert counts, report
    return int(counts[-1])


def decoded_frames(path, width: int, height: int) -> np.ndarray:
    """[T, H, W, 3] uint8: every frame of `path` decoded by ffmpeg."""
    command = [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert len(done.stdout) % (width * height * 3) == 0, "decoded frames are not of the figure's size"
    return np.frombuffer(done.stdout, np.uint8).reshape(-1, height, width, 3)


@pytest.fixture(scope="module")
def mp4_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("mp4") / "out" / "samples.mp4"
    assert render.animate_skeletons(MP4_SAMPLES, PARENTS, path, fps=MP4_FPS, titles=["a", "b"]) == path
    return path


@needs_ffmpeg
def test_mp4_is_h264_with_one_frame_per_step_at_fps(mp4_path):
    report = ffmpeg_report(mp4_path)
    scene = render.skeleton_scene(MP4_SAMPLES, PARENTS, fps=MP4_FPS, titles=["a", "b"])
    width, height = scene.figure.canvas.get_width_height()
    stream = re.search(r"Stream #0:0.*Video: (\w+).*", report)
    assert stream is not None, report
    assert stream.group(1) == "h264"
    assert "yuv420p" in stream.group(0)  # what browsers and phones play (not libx264's default yuv444p)
    assert f" {width}x{height}" in stream.group(0)
    assert re.search(rf"\b{MP4_FPS} fps\b", stream.group(0)), stream.group(0)
    assert frames_counted(report) == 10
    duration = re.search(r"Duration: (\d+):(\d+):([\d.]+)", report)
    assert duration is not None, report
    hours, minutes, seconds = (float(part) for part in duration.groups())
    assert 3600 * hours + 60 * minutes + seconds == pytest.approx(10 / MP4_FPS, abs=0.01)
    assert not list(mp4_path.parent.glob(".*"))  # no temporary left behind


@needs_ffmpeg
def test_mp4_frame_t_shows_the_scene_at_step_t(mp4_path):
    scene = render.skeleton_scene(MP4_SAMPLES, PARENTS, fps=MP4_FPS, titles=["a", "b"])
    width, height = scene.figure.canvas.get_width_height()
    frames = decoded_frames(mp4_path, width, height).astype(np.float64)
    assert len(frames) == 10
    drawn = [scene.render(t)[..., :3].astype(np.float64) for t in range(10)]
    for t, frame in enumerate(frames):
        errors = [np.abs(frame - image).mean() for image in drawn]
        assert np.argmin(errors) == t, errors
        assert errors[t] < 1.0, errors  # lossy, but close to the drawn frame (out of 255)


@needs_ffmpeg
def test_mp4_uses_imageio_ffmpeg_when_the_path_has_no_ffmpeg(tmp_path, monkeypatch):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert render.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    path = render.animate_skeletons([walking(3)], PARENTS, tmp_path / "a.mp4", fps=10)
    monkeypatch.undo()
    assert frames_counted(ffmpeg_report(path)) == 3


def test_find_ffmpeg_prefers_the_one_on_the_path(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/video/bin/{name}")
    assert render.find_ffmpeg() == "/opt/video/bin/ffmpeg"


def test_mp4_without_ffmpeg_names_the_file_and_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes `import imageio_ffmpeg` fail
    assert render.find_ffmpeg() is None
    path = tmp_path / "a.mp4"
    with pytest.raises(ValueError, match=re.escape(str(path))) as raised:
        render.animate_skeletons([walking(2)], PARENTS, path, fps=10)
    message = str(raised.value)
    assert "install ffmpeg" in message and "pip install imageio-ffmpeg" in message and ".gif" in message
    assert not list(tmp_path.iterdir())


def test_mp4_when_ffmpeg_fails_reports_what_it_said(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"Unknown encoder 'h264'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    path = tmp_path / "out" / "a.mp4"
    with pytest.raises(ValueError, match=re.escape(str(path))) as raised:
        render.animate_skeletons([walking(3)], PARENTS, path, fps=10)
    assert "Unknown encoder 'h264'" in str(raised.value) and str(fake) in str(raised.value)
    assert not list(path.parent.iterdir())  # neither the file nor a temporary


@pytest.mark.parametrize(
    ("positions", "parents", "options", "named"),
    [
        ([walking(3)[..., :2]], PARENTS, {}, r"positions\[0\]"),
        ([walking(3), walking(3)[:, :3]], PARENTS, {}, r"positions\[1\]"),
        (walking(3), PARENTS, {}, "positions"),
        ([], PARENTS, {}, "positions"),
        (
            [np.where(np.arange(3)[:, None, None] == 1, np.nan, walking(3))],
            PARENTS,
            {},
            r"positions\[0\].*frame 1",
        ),
        ([walking(3)], PARENTS[:3], {}, "parents"),
        ([walking(3)], np.array([-1, 0, 1, 9]), {}, r"parents\[3\]"),
        ([walking(3)], PARENTS, {"titles": ["one", "two"]}, "titles"),
        ([walking(3)], PARENTS, {"up_axis": "up"}, "up_axis"),
        ([walking(3)], PARENTS, {"fps": 0}, "fps"),
        ([walking(3)], PARENTS, {"fps": np.float32(-30)}, "fps"),
        ([walking(3)], PARENTS, {"fps": True}, "fps"),
        ([walking(3)], PARENTS, {"max_columns": 0}, "max_columns"),
        ([walking(3)], PARENTS, {"camera": "orbit"}, "camera"),
        ([walking(3)], PARENTS, {"mirrored": "yes"}, "mirrored must be True or False, got 'yes'"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(tmp_path, positions, parents, options, named):
    path = tmp_path / "bad.gif"
    with pytest.raises(ValueError, match=named):
        render.animate_skeletons(positions, parents, path, **{"fps": 10, **options})
    assert not path.exists()


def test_lengths_cut_padded_samples_as_generate_returns_them(tmp_path, monkeypatch):
    """generate's positions are [N, T, J, 3] with zeros past each sample's length: lengths= draws each
    from its own frames only (a 2-frame sample holds its last pose, not a point at the origin)."""
    drawn = {}
    real_scene = render.skeleton_scene

    def scene(positions, *args, **kwargs):
        drawn["samples"] = [np.asarray(p) for p in positions]
        return real_scene(positions, *args, **kwargs)

    monkeypatch.setattr(render, "skeleton_scene", scene)
    short, long = walking(2), walking(4)
    padded = np.zeros((2, 4, *long.shape[1:]))
    padded[0, :2], padded[1] = short, long
    render.animate_skeletons(padded, PARENTS, tmp_path / "a.gif", fps=10, lengths=np.array([2, 4]))
    assert [s.shape[0] for s in drawn["samples"]] == [2, 4]
    np.testing.assert_array_equal(drawn["samples"][0], short)
    for bad, named in (
        ([2], "lengths must be 2 integers"),
        ([2, 5], r"lengths\[1\] is 5; positions\[1\] has 4"),
        ([0, 4], r"lengths\[0\] is 0"),
        ([2.0, 4.0], "integers"),
    ):
        with pytest.raises(ValueError, match=named):
            render.animate_skeletons(padded, PARENTS, tmp_path / "b.gif", fps=10, lengths=bad)
    assert not (tmp_path / "b.gif").exists()


def test_a_numpy_frame_rate_is_a_number(tmp_path):
    """fps=np.float32(30) (a rate read from a numpy array, as a notebook passes it) was refused as not a
    number."""
    path = render.animate_skeletons([walking(2)], PARENTS, tmp_path / "a.gif", fps=np.float32(30))
    assert path.is_file()


def test_unknown_animation_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.avi.*\.gif"):
        render.animate_skeletons([walking(2)], PARENTS, tmp_path / "a.avi", fps=10)


# ---------------------------------------------------------------------------------- training curves
def write_metrics(path, rows, extra_lines=()):
    lines = [json.dumps(row) for row in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def metrics_rows(losses_positive=True):
    sign = 1.0 if losses_positive else -1.0
    return [
        {"step": s, "loss": 1.0 / s, "loss_mot_rec": sign * 0.5 / s, "lr": 1e-4 * s, "grad_norm": 2.0}
        for s in range(1, 6)
    ]


def test_training_curves_png_has_the_requested_size(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", metrics_rows(), extra_lines=["", "  "])
    png = render.plot_training_curves(metrics, tmp_path / "curves.png", figsize=(6.0, 3.0), dpi=50)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (300, 150)


def test_training_curves_plot_each_loss_term_and_lr_against_step(tmp_path):
    rows = metrics_rows()
    figure = render.training_curves_figure(write_metrics(tmp_path / "metrics.jsonl", rows))
    losses_ax, lr_ax = figure.axes
    assert [line.get_label() for line in losses_ax.get_lines()] == ["loss", "loss_mot_rec"]
    np.testing.assert_allclose(
        losses_ax.get_lines()[1].get_xydata(), [[r["step"], r["loss_mot_rec"]] for r in rows]
    )
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_xydata(), [[r["step"], r["lr"]] for r in rows])
    assert losses_ax.get_yscale() == "log"

    chosen = render.training_curves_figure(tmp_path / "metrics.jsonl", keys=["grad_norm"])
    assert [line.get_label() for line in chosen.axes[0].get_lines()] == ["grad_norm"]


def test_training_curves_use_a_linear_scale_when_a_loss_is_not_positive(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", metrics_rows(losses_positive=False))
    assert render.training_curves_figure(metrics).axes[0].get_yscale() == "linear"


def test_malformed_metrics_line_is_reported_with_its_number(tmp_path):
    metrics = write_metrics(
        tmp_path / "metrics.jsonl", metrics_rows()[:2], extra_lines=["", '{"step": 3, "loss"']
    )
    with pytest.raises(ValueError, match=re.escape(f"{metrics}, line 4")):
        render.plot_training_curves(metrics, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


def test_unknown_metric_key_is_refused(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", metrics_rows())
    with pytest.raises(ValueError, match="keys.*loss_geo"):
        render.plot_training_curves(metrics, tmp_path / "curves.png", keys=["loss_geo"])


def test_training_curves_overwrite_only_when_asked(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl", metrics_rows())
    png = tmp_path / "curves.png"
    png.write_bytes(b"not a plot")
    with pytest.raises(FileExistsError, match=re.escape(str(png))):
        render.plot_training_curves(metrics, png)
    assert png.read_bytes() == b"not a plot"
    render.plot_training_curves(metrics, png, overwrite=True)
    with Image.open(png) as image:
        assert image.format == "PNG"


# ------------------------------------------------------------------------- a full disk, Ctrl-C, a kill
def draw(kind: str, folder, **options):
    """Write the picture of `kind` (a GIF of a stick figure, or training curves) into `folder`."""
    if kind == "gif":
        return render.animate_skeletons([walking(3)], PARENTS, folder / "step_0001000.gif", fps=10)
    metrics = write_metrics(folder.parent / "metrics.jsonl", metrics_rows())
    return render.plot_training_curves(metrics, folder / "curves.png", dpi=30, **options)


@pytest.mark.parametrize("kind", ["gif", "png"])
def test_a_picture_on_a_full_disk_leaves_no_temporary_file_and_names_the_file(tmp_path, monkeypatch, kind):
    from test_files import ENOSPC_TEXT, full_disk

    (tmp_path / "progress").mkdir()
    full_disk(monkeypatch, tmp_path / "progress", room=500)
    with pytest.raises(OSError) as caught:
        draw(kind, tmp_path / "progress")
    name = "step_0001000.gif" if kind == "gif" else "curves.png"
    assert list((tmp_path / "progress").iterdir()) == []
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).endswith(f"writing {tmp_path / 'progress' / name}: {ENOSPC_TEXT}")
    monkeypatch.undo()
    assert draw(kind, tmp_path / "progress").name == name


@pytest.mark.parametrize("kind", ["gif", "png"])
def test_a_picture_removes_the_temporary_file_a_killed_process_left(tmp_path, kind):
    """A training run killed while it drew its progress GIF or curves leaves a hidden temporary file;
    the next picture of that name removes it (and no other process's, nor another picture's)."""
    from test_files import assert_only_the_dead_ones_removed, leftover_names, make_leftovers

    (tmp_path / "progress").mkdir()
    stem, suffix = ("step_0001000", ".gif") if kind == "gif" else ("curves", ".png")
    names = leftover_names(stem, "tmp", suffix)
    make_leftovers(tmp_path / "progress", names, as_folders=False)
    path = draw(kind, tmp_path / "progress", **({} if kind == "gif" else {"overwrite": True}))
    assert_only_the_dead_ones_removed(tmp_path / "progress", names)
    with Image.open(path) as image:
        assert image.format == kind.upper()
