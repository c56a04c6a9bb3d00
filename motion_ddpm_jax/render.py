"""Stick-figure animations (GIF, or MP4 where ffmpeg exists) of joint positions, and training-curve plots.

MP4 is H.264 written by ffmpeg: the `ffmpeg` on the PATH, else the static binary bundled with the optional
`imageio-ffmpeg` package (`pip install imageio-ffmpeg`, part of the `video` and `test` extras).

Everything draws with matplotlib's object-oriented API on an Agg canvas: no screen, no pyplot, no global
backend switch. Nothing here overwrites a file by accident: an animation never replaces an existing file,
and a curve plot does so only when asked (`overwrite=True`).

Plot coordinates: matplotlib's 3D axes keep their vertical axis on z, so data whose up axis is y (BEAT) are
turned by a proper rotation, (x, y, z) -> (x, -z, y); a BEAT character facing +Z then faces the camera.
Positions that are a mirror image of the motion (KIT-ML's, `humanml3d.Layout.mirrored`) are drawn with the
plot's x negated (`mirrored=True`: the data's x, or y where x is up), so that the picture shows the motion
as performed; everything else (camera, ground, bounds) is computed from the reflected figures. The arrays
passed in are never changed.

Panels share one scale. By default (`camera="auto"`) every panel shows one cube of the world, unless a
sample travels so far that this cube would draw the figures at 2/3 of their size or less: then each panel's
camera follows its own figure's root over the ground (the grid scrolls beneath it, in cells large enough
never to seem to run backwards), so that one sample walking far does not shrink the others. Titles and the
note draw characters their font lacks (CJK, emoji) from other installed fonts (`title_fonts`); characters
no installed font has are reported once, naming the caption.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import numbers
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib import font_manager, ft2font
from matplotlib.animation import FFMpegWriter, PillowWriter
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from mpl_toolkits.mplot3d.art3d import Line3D, Poly3DCollection
from PIL import Image

from motion_ddpm_jax import files
from motion_ddpm_jax.errors import ProjectWarning, UserError

UP_AXES = ("x", "y", "z")
# Rows of the rotation taking data coordinates to plot coordinates (z up); each has determinant +1.
_TO_PLOT = {
    "x": np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
    "y": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
    "z": np.eye(3),
}
VIEW_ELEVATION, VIEW_AZIMUTH = 15.0, -70.0  # degrees; the camera sits in front of a BEAT character
PANEL_INCHES, TITLE_INCHES, CLOCK_INCHES, DPI = 3.0, 0.5, 0.2, 100  # even pixel sizes for MP4
TITLE_FONT_SIZE, TITLE_MIN_FONT_SIZE, TITLE_MAX_LINES = 9.0, 7.0, 3
TITLE_SIDE_INCHES = 0.04  # kept clear at each side of a title, so neighbouring titles never touch
GROUND_CELLS = 8  # cells along a side of the ground square, where no camera scrolls it
# A scrolling grid's cell is at least this many times the largest step its camera makes between shown
# frames (along x or y): a grid moving by more than half a cell a frame seems to move backwards or stand still
# (the wagon-wheel effect; a planted foot then looks as if it slides), and 2.5 keeps every step within 0.4.
GROUND_CELL_STEPS = 2.5
# camera="auto" follows the figures where one cube of the world holding every sample's whole path would be
# more than this many times the side of the cube that holds every pose about its root (about the tallest
# figure's height): the figures would be drawn at about 1/1.5 = 2/3 of the size that following gives them,
# or smaller (measured: 0.69 of it just below, 0.62 just above). Beside a figure 1.7 m tall that is another
# one walking some 2 m (1.2 heights, 1.5 s at 1.4 m/s); a speaker gesturing on the spot stays well below.
AUTO_FOLLOW_RATIO = 1.5
BONE_COLOR, JOINT_COLOR, GROUND_COLOR, GROUND_FILL = "#1f4e8c", "#c0392b", "#9aa5b1", "#eef1f4"
ANIMATION_SUFFIXES = (".gif", ".mp4")
CAMERAS = ("auto", "follow", "fixed")


# ------------------------------------------------------------------------------------------ geometry
def to_plot_coordinates(points: np.ndarray, up_axis: str = "y") -> np.ndarray:
    """[..., 3] data coordinates -> [..., 3] plot coordinates, whose third axis is `up_axis`."""
    if up_axis not in _TO_PLOT:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    return np.asarray(points, dtype=np.float64) @ _TO_PLOT[up_axis].T


def scene_bounds(
    positions: Sequence[np.ndarray], up_axis: str = "y", margin: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The axis limits shared by every panel: a cube in plot coordinates.

    positions: arrays [..., 3] in data coordinates (e.g. [T_i, J, 3] per sample).
    Returns (lo [3], hi [3]): a cube centred on the bounding box of all points, its side the longest
    extent times (1 + 2 * margin) (1 when every point coincides), so equal limits give equal aspect.
    """
    points = np.concatenate([to_plot_coordinates(p, up_axis).reshape(-1, 3) for p in positions])
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float(np.max(high - low))
    side = extent * (1.0 + 2.0 * margin) if extent > 0 else 1.0
    centre = (low + high) / 2.0
    return centre - side / 2.0, centre + side / 2.0


def bone_polyline(points: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """[..., J, 3] joint positions -> [..., 3 * B, 3]: for each bone (joint j with parents[j] >= 0, in joint
    order) the points child, parent, NaN; the NaN breaks the line between bones, so one line draws all."""
    children = np.nonzero(parents >= 0)[0]
    child, parent = points[..., children, :], points[..., parents[children], :]
    gap = np.full_like(child, np.nan)
    stacked = np.stack([child, parent, gap], axis=-2)  # [..., B, 3, 3]
    return stacked.reshape(*points.shape[:-2], 3 * len(children), 3)


def wrap_title(
    text: str, width: float, max_lines: int = TITLE_MAX_LINES, measure: Callable[[str], float] = len
) -> str:
    """`text` wrapped to lines at most `width` wide, cut to `max_lines` (the last ending in '...').

    Widths are `measure(line)`: characters by default, or a renderer's pixels (`_fit_title`), which is what
    keeps wide letters (W, m, CJK) inside a panel. A word wider than a line is broken across lines."""
    return "\n".join(_cut_lines(_wrap_lines(text, width, measure, max_lines), max_lines, width, measure))


def _wrap_lines(text: str, width: float, measure: Callable[[str], float], max_lines: int) -> list[str]:
    """The lines of `text` (words split at whitespace) at most `width` wide, each holding as many words as
    fit, a word wider than a line broken across lines; [""] for a blank `text`. Stops after max_lines + 1
    lines: those past max_lines are only ever cut."""
    words, lines = str(text).split(), []
    while words and len(lines) <= max_lines:
        count = _longest_fit(len(words), lambda n: measure(" ".join(words[:n])) <= width)
        if count == 0:  # a line of part of the first word: at least one character, so that wrapping ends
            count = max(1, _longest_fit(len(words[0]), lambda n: measure(words[0][:n]) <= width))
            lines.append(words[0][:count])
            words[0] = words[0][count:]
        else:
            lines.append(" ".join(words[:count]))
            del words[:count]
    return lines or [""]


def _longest_fit(count: int, fits: Callable[[int], bool]) -> int:
    """The largest n <= count with fits(n), 0 if not even fits(1), for `fits` true up to some n and false
    past it. Found by doubling n, then halving the gap: few measurements, none much longer than a line."""
    low, high = 0, 1  # fits(low), or low == 0
    while high <= count and fits(high):
        low, high = high, 2 * high
    high = min(high, count + 1)  # fits(high) fails, or high is past count
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _cut_lines(lines: list[str], max_lines: int, width: float, measure: Callable[[str], float]) -> list[str]:
    """`lines`, or where there are more than `max_lines` the first ones, the last cut to end in '...'."""
    if len(lines) <= max_lines:
        return lines
    last = lines[max_lines - 1]
    kept = _longest_fit(len(last), lambda n: measure(last[:n] + "...") <= width)
    return [*lines[: max_lines - 1], last[:kept].rstrip() + "..."]


# ------------------------------------------------------------------------------------------ title fonts
# Font families tried first, in this order, for caption characters that the title font (matplotlib's
# rcParams["font.family"]: DejaVu Sans by default) lacks; matplotlib (>= 3.6) draws each character from the
# first font of a family list that has it. Only installed ones are used, and after them any other installed
# font that has the characters. Chinese, Japanese and Korean first (Simplified Chinese forms first), then
# fonts of symbols and emoji: monochrome ones, as matplotlib cannot draw colour emoji fonts.
FALLBACK_FAMILIES = (
    *(f"Noto Sans CJK {region}" for region in ("SC", "JP", "TC", "KR", "HK")),
    *("Source Han Sans SC", "Source Han Sans CN", "Source Han Sans", "WenQuanYi Zen Hei"),
    *("WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC", "Hiragino Sans GB", "Hiragino Sans"),
    *("Microsoft YaHei", "SimHei", "Yu Gothic", "Malgun Gothic", "Arial Unicode MS"),
    *("Noto Sans Symbols", "Noto Sans Symbols 2", "Noto Emoji", "Symbola", "Segoe UI Symbol", "STIXGeneral"),
)
# Fonts of matplotlib's own that are no fallback for free text: TeX's (their character codes are TeX's),
# STIX's size variants and private-use glyphs, and Last Resort (a box for every character).
_NOT_FALLBACKS = re.compile(r"cm[a-z]+10|STIXNonUnicode.*|STIXSize.*|Last Resort.*")
_FT_SCALABLE, _FT_COLOR = 1 << 0, 1 << 14  # FreeType's FT_FACE_FLAG_SCALABLE and FT_FACE_FLAG_COLOR
MAX_LISTED_TITLES, MAX_LISTED_CHARACTERS = 4, 12  # in the message about characters no font has


class MissingGlyphWarning(ProjectWarning):
    """Titles hold characters that no installed font (that matplotlib can draw with) has: they are drawn
    as boxes. Issued, once per picture, where the caller passes no `log`."""


@dataclasses.dataclass(frozen=True)
class TitleFonts:
    """families: the font family list for the titles: rcParams["font.family"], then the installed fonts
    that have the captions' other characters. unshown: caption index -> its characters (in order, each
    once) that no installed font matplotlib can draw with has; drawn as boxes."""

    families: tuple[str, ...]
    unshown: dict[int, str]


def title_fonts(captions: Sequence[str]) -> TitleFonts:
    """The fonts to draw `captions` with: the title font, then, for the characters it lacks, installed
    fonts that have them (those of FALLBACK_FAMILIES first, in order, then any other font matplotlib
    lists, font_manager.fontManager.ttflist), each added only for characters not covered yet. Fonts
    matplotlib cannot draw with (bitmap-only or colour ones: Noto Color Emoji) are passed over.
    Whitespace and invisible format characters (joiners, variation selectors) are not looked for."""
    main = tuple(mpl.rcParams["font.family"])
    wanted = [_drawn_characters(caption) for caption in captions]
    main_faces = [_face_characters(path, index) for path, index in _main_faces(main)]
    lacking = "".join(dict.fromkeys(c for characters in wanted for c in characters))
    for covered in main_faces:
        lacking = _lacking(lacking, covered)
    families = list(main)
    if lacking:
        faces = _installed_faces()
        others = sorted(
            (name for name in faces if name not in FALLBACK_FAMILIES), key=lambda n: ("Mono" in n, n)
        )
        for name in [name for name in FALLBACK_FAMILIES if name in faces] + others:
            still = _lacking(lacking, _face_characters(*faces[name]))
            if len(still) < len(lacking) and name not in families:
                families.append(name)
                lacking = still
            if not lacking:
                break
    unshown = {i: "".join(c for c in characters if c in lacking) for i, characters in enumerate(wanted)}
    return TitleFonts(tuple(families), {i: chars for i, chars in unshown.items() if chars})


def _drawn_characters(caption: str) -> str:
    """The characters of `caption` a title draws, each once, in order: no whitespace (titles break lines
    there), controls, format characters (zero-width joiners) or variation selectors."""
    return "".join(
        dict.fromkeys(
            c
            for c in str(caption)
            if not c.isspace()
            and unicodedata.category(c) not in ("Cc", "Cf")
            and not (0xFE00 <= ord(c) <= 0xFE0F or 0xE0100 <= ord(c) <= 0xE01EF)
        )
    )


def _lacking(characters: str, covered: np.ndarray | None) -> str:
    """The characters of `characters` whose code points `covered` (sorted) does not hold (all for None)."""
    if covered is None or not characters:
        return characters
    codes = np.fromiter(map(ord, characters), dtype=np.int64, count=len(characters))
    found = np.isin(codes, covered, assume_unique=True)
    return "".join(c for c, has in zip(characters, found, strict=True) if not has)


@functools.lru_cache(maxsize=128)
def _face_characters(path: str, index: int = 0) -> np.ndarray | None:
    """The code points (sorted int64) the font face at `path` (`index` in a collection) has glyphs for;
    None for a face matplotlib cannot draw text with: bitmap-only (it cannot scale Noto Color Emoji's),
    colour (drawn without its colours: blank or wrong), or one that does not open."""
    try:
        face = ft2font.FT2Font(path, face_index=index) if index else ft2font.FT2Font(path)
        flags = int(getattr(face.face_flags, "value", face.face_flags))
        if not flags & _FT_SCALABLE or flags & _FT_COLOR:
            return None
        return np.array(sorted(face.get_charmap()), dtype=np.int64)
    except Exception:  # noqa: BLE001 -- a font that does not open is a font not used, never a failure
        return None


def _main_faces(families: Sequence[str]) -> list[tuple[str, int]]:
    """The font files (path, face index) matplotlib draws text of `families` with, as its renderer finds
    them (each family's best match; its default font where none is found)."""
    prop = font_manager.FontProperties(family=list(families))
    find = getattr(font_manager.fontManager, "_find_fonts_by_props", None)  # matplotlib >= 3.6
    try:
        paths = find(prop) if find is not None else [font_manager.findfont(prop)]
    except Exception:  # noqa: BLE001 -- then every character is looked for in the other fonts
        return []
    return [(str(getattr(path, "path", path)), int(getattr(path, "face_index", 0))) for path in paths]


def _installed_faces() -> dict[str, tuple[str, int]]:
    """Each font family matplotlib lists (font_manager.fontManager.ttflist) -> (path, face index) of its
    most regular face (upright, weight nearest 400, normal width); not matplotlib's _NOT_FALLBACKS."""
    best: dict[str, tuple[tuple, tuple[str, int]]] = {}
    for entry in font_manager.fontManager.ttflist:
        if _NOT_FALLBACKS.fullmatch(entry.name):
            continue
        weight = entry.weight
        if not isinstance(weight, int | float):
            weight = font_manager.weight_dict.get(str(weight).lower(), 400)
        rank = (entry.style != "normal", abs(float(weight) - 400.0), entry.stretch != "normal")
        face = (str(entry.fname), int(getattr(entry, "index", 0)))
        if entry.name not in best or rank < best[entry.name][0]:
            best[entry.name] = (rank, face)
    return {name: face for name, (_, face) in best.items()}


@contextlib.contextmanager
def _quiet_glyph_warnings(characters: str) -> Iterator[None]:
    """Within the block matplotlib's warnings that glyphs of `characters` are missing from its fonts are
    dropped (they come dozens of times, one per measurement; `unshown_message` says it once instead).
    Every other warning, one about another character included, passes."""
    with warnings.catch_warnings():
        if characters:
            codes = "|".join(str(ord(c)) for c in sorted(set(characters)))
            warnings.filterwarnings("ignore", message=rf"Glyph ({codes}) \(", category=UserWarning)
        yield


def unshown_message(titles: Sequence[str], unshown: dict[int, str], note: str = "") -> str:
    """One message about titles with characters no installed font has (`TitleFonts.unshown`): which titles
    (by panel number, from 1, and text), which characters, that they show as boxes, and what to install.
    Key len(titles) of `unshown`, where present, is the `note` (`skeleton_scene`)."""
    panels: dict[str, list[int]] = {}  # a caption drawn several times is named once
    for i in sorted(i for i in unshown if i < len(titles)):
        panels.setdefault(titles[i], []).append(i + 1)
    listed = []
    for title, panel_numbers in list(panels.items())[:MAX_LISTED_TITLES]:
        where = f"panel{'s' if len(panel_numbers) > 1 else ''} {', '.join(map(str, panel_numbers))}"
        listed.append(f"{where} {_shown(title)!r}: {_describe_characters(unshown[panel_numbers[0] - 1])}")
    if len(panels) > MAX_LISTED_TITLES:
        listed.append(f"and {len(panels) - MAX_LISTED_TITLES} more caption(s)")
    if len(titles) in unshown:
        listed.append(f"the note {_shown(note)!r}: {_describe_characters(unshown[len(titles)])}")
    characters = "".join(dict.fromkeys("".join(unshown.values())))
    texts = " and the ".join([*(["titles"] if panels else []), *(["note"] if len(titles) in unshown else [])])
    return (
        f"no installed font that matplotlib can draw with has these characters of the {texts}, so the "
        f"picture shows them as boxes: {'; '.join(listed)}. Only the picture lacks them: the "
        f"{'captions are' if panels else 'note is'} kept as written. To draw them, install a font that has "
        f"them ({_font_advice(characters)}), then "
        f"delete matplotlib's font list cache ({Path(mpl.get_cachedir()) / 'fontlist-v*.json'}) so that "
        "it finds the new font."
    )


def _shown(text: str) -> str:
    """`text`, cut to 40 characters (the last an ellipsis) for a message."""
    return text if len(text) <= 40 else text[:39] + "\u2026"


def _describe_characters(characters: str) -> str:
    """'你 好' for letters; 'U+270B RAISED HAND' added for symbols (emoji), which a terminal may not show."""

    def one(c: str) -> str:
        if unicodedata.category(c).startswith("S") or ord(c) >= 0x1F000:
            return f"{c} (U+{ord(c):04X} {unicodedata.name(c, 'unnamed')})"
        return c

    text = " ".join(one(c) for c in characters[:MAX_LISTED_CHARACTERS])
    more = len(characters) - MAX_LISTED_CHARACTERS
    return text + (f" and {more} more" if more > 0 else "")


def _font_advice(characters: str) -> str:
    """Which fonts to install for `characters`: CJK, symbols and emoji, other scripts."""
    cjk = ("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "FULLWIDTH", "HALFWIDTH")
    kinds = set()
    for c in characters:
        name = unicodedata.name(c, "")
        if any(word in name for word in cjk):
            kinds.add("cjk")
        elif unicodedata.category(c).startswith("S") or ord(c) >= 0x1F000:
            kinds.add("symbols")
        else:
            kinds.add("script")
    advice = {
        "cjk": "for Chinese, Japanese and Korean: Noto Sans CJK, Debian/Ubuntu package fonts-noto-cjk, or "
        "WenQuanYi Zen Hei, fonts-wqy-zenhei",
        "symbols": "for emoji and symbols: a monochrome font such as Symbola, package fonts-symbola, or Noto "
        "Emoji; matplotlib cannot draw colour emoji fonts such as Noto Color Emoji",
        "script": "for other scripts: the Noto font of the script, package fonts-noto-core",
    }
    return "; ".join(advice[kind] for kind in ("cjk", "symbols", "script") if kind in kinds)


def _say(message: str, log: Callable[[str], None] | None) -> None:
    """`log(message)`, or where there is no log a MissingGlyphWarning, attributed to the first caller
    outside this module."""
    if log is not None:
        log(message)
        return
    frame, level = sys._getframe(), 1
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, MissingGlyphWarning, stacklevel=level)


# ------------------------------------------------------------------------------------- validation
def _check_positions(positions) -> list[np.ndarray]:
    """A list of float64 [T_i, J, 3] arrays (one J for all), or ValueError naming `positions`."""
    if isinstance(positions, np.ndarray) or hasattr(positions, "__array__"):
        array = np.asarray(positions)
        if array.ndim != 4:
            raise ValueError(
                f"positions must be a list of [T_i, J, 3] arrays or one [N, T, J, 3] array, got an array of "
                f"shape {array.shape} (wrap a single [T, J, 3] sample in a list)"
            )
        positions = list(array)
    if not isinstance(positions, Sequence) or len(positions) == 0:
        raise ValueError(f"positions must be a non-empty list of [T_i, J, 3] arrays, got {positions!r:.100}")
    checked = []
    for i, sample in enumerate(positions):
        array = np.asarray(sample)
        if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"positions[{i}] must have shape [T, J, 3] with T, J >= 1, got {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"positions[{i}] must hold numbers, got dtype {array.dtype}")
        if checked and array.shape[1] != checked[0].shape[1]:
            raise ValueError(
                f"positions[{i}] has {array.shape[1]} joints but positions[0] has {checked[0].shape[1]}; "
                f"all samples must share one skeleton"
            )
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:
            t, j, _ = bad[0]
            raise ValueError(
                f"positions[{i}] has {len(bad)} non-finite values, the first at frame {t}, joint {j}: "
                f"{array[t, j].tolist()}"
            )
        checked.append(array.astype(np.float64))
    return checked


def _check_parents(parents, num_joints: int) -> np.ndarray:
    array = np.asarray(parents)
    if array.shape != (num_joints,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"parents must be {num_joints} integers (one per joint of positions, -1 for a root), got "
            f"{array.dtype} of shape {array.shape}"
        )
    bad = np.nonzero((array < -1) | (array >= num_joints) | (array == np.arange(num_joints)))[0]
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"parents[{j}] = {int(array[j])}; expected -1 or another joint index in [0, {num_joints})"
        )
    return array.astype(np.int64)


def _check_options(fps, titles, num_samples: int, up_axis: str, max_columns, camera) -> list[str]:
    if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS}, got {camera!r}")
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 1:
        raise ValueError(f"max_columns must be a positive integer, got {max_columns!r}")
    if titles is None:
        return [""] * num_samples
    if isinstance(titles, str) or len(titles) != num_samples:
        raise ValueError(
            f"titles must be a list of {num_samples} strings (one per sample), got {titles!r:.200}"
        )
    return [str(title) for title in titles]


# ------------------------------------------------------------------------------------------- scene
@dataclasses.dataclass
class SkeletonScene:
    """N stick figures on one figure, one 3D panel each, ready to show any frame.

    samples: plot coordinates, [T_i, J, 3] each (reflected where `mirrored`); a sample shorter than
        `num_frames` holds its last frame.
    offsets: [T_i, 3] each, what frame t of a sample is drawn shifted by (minus): its root's horizontal
        position where the camera follows it (`camera="follow"`), else zeros; the ground grid is drawn
        shifted by as much, so that it stays put under the figure's feet.
    bounds: (lo, hi) [3] each, the cube every panel shows; ground_height: the ground grid's height.
    camera: "follow" or "fixed" (what "auto" chose). ground_cell: the side of the ground grid's cells.
    unshown: panel index -> the characters of its title no installed font has (drawn as boxes); index N
        (the number of panels): those of the note.
    Drawing a frame redraws only what moves (bones, joints, clock, and a followed sample's ground grid) over
    a cached image of the rest (panels, titles, ground): the same pixels as a full draw, several times faster.
    """

    figure: Figure
    axes: list
    bones: list[Line3D]
    joints: list[Line3D]
    ground: list[Line3D]
    clock: Text
    samples: list[np.ndarray]
    parents: np.ndarray
    fps: float
    offsets: list[np.ndarray]
    bounds: tuple[np.ndarray, np.ndarray]
    ground_height: float
    camera: str = "follow"
    unshown: dict[int, str] = dataclasses.field(default_factory=dict)
    ground_cell: float | None = None  # None: the side of the cube / GROUND_CELLS
    mirrored: bool = False  # samples were reflected (plot x -> -x) from the positions given
    _background: object = dataclasses.field(default=None, init=False, repr=False)

    @property
    def num_frames(self) -> int:
        return max(len(sample) for sample in self.samples)

    @property
    def moving_artists(self) -> list[Artist]:
        """What changes from frame to frame, in drawing order (each panel's grid under its figure)."""
        grids = self.ground if self.camera == "follow" else []
        return [*grids, *self.bones, *self.joints, self.clock]

    def show_frame(self, t: int) -> None:
        """Move every artist to frame `t` (samples that ended hold their last frame); nothing is drawn."""
        parts = zip(self.samples, self.offsets, self.bones, self.joints, self.ground, strict=True)
        for sample, offsets, bones, joints, ground in parts:
            k = min(t, len(sample) - 1)
            frame = sample[k] - offsets[k]
            bones.set_data_3d(*bone_polyline(frame, self.parents).T)
            joints.set_data_3d(*frame.T)
            if self.camera == "follow":
                grid = _ground_polyline(*self.bounds, self.ground_height, offsets[k], self.ground_cell)
                ground.set_data_3d(*grid.T)
        self.clock.set_text(f"{t / self.fps:6.2f} s  ({t + 1}/{self.num_frames})")

    def draw(self) -> np.ndarray:
        """The frame shown now as an image, uint8 [H, W, 4] (RGBA, row 0 at the top)."""
        canvas = self.figure.canvas
        if self._background is None:
            for artist in self.moving_artists:
                artist.set_visible(False)
            with _quiet_glyph_warnings("".join(self.unshown.values())):  # said once, by skeleton_scene
                canvas.draw()  # also fixes each panel's projection, which the moving artists reuse
            self._background = canvas.copy_from_bbox(self.figure.bbox)
            for artist in self.moving_artists:
                artist.set_visible(True)
        canvas.restore_region(self._background)
        for artist in self.moving_artists:
            (artist.axes or self.figure).draw_artist(artist)
        return np.array(canvas.buffer_rgba())

    def render(self, t: int) -> np.ndarray:
        """Frame `t` as an image, uint8 [H, W, 4] (RGBA, row 0 at the top)."""
        self.show_frame(t)
        return self.draw()


def skeleton_scene(
    positions,
    parents,
    *,
    fps: float,
    titles: Sequence[str] | None = None,
    up_axis: str = "y",
    max_columns: int = 4,
    camera: str = "auto",
    note: str = "",
    log: Callable[[str], None] | None = None,
    mirrored: bool = False,
) -> SkeletonScene:
    """Lay out `positions` (a list of [T_i, J, 3] arrays, or one [N, T, J, 3] array; data coordinates with
    `up_axis` up) as stick figures in a grid of at most `max_columns` panels a row, each titled with its
    entry of `titles`, all seen from the same angle at the same scale, over a ground grid at the lowest
    point of all samples and frames. Shows frame 0.

    camera: "fixed": every panel shows one cube of the world that holds all samples' whole paths (where
        each went; a sample that travels far then makes every figure small), over a still grid.
        "follow": each panel's camera moves with its figure's root (the first joint without a parent) over
        the ground, horizontally: the figure stays in the middle while the grid scrolls beneath it, at the
        speed it travels. The shared cube holds every sample's pose about its root, so a sample that walks
        5 m is drawn as large as one standing still, and heights compare across panels. The grid's cells
        are at least GROUND_CELL_STEPS times the largest step of any root between the frames a GIF shows
        (`gif_timing`), so that it never seems to move backwards (and 1/GROUND_CELLS of the cube at least).
        "auto" (default): "follow" where the "fixed" cube would be more than AUTO_FOLLOW_RATIO times the
        side of the "follow" one (the figures drawn at ~2/3 of their size or less), else "fixed": figures that
        stay near where they started (a speaker gesturing) get a still grid, which also keeps a GIF small
        (a frame whose grid scrolls differs everywhere from the one before it: several times the bytes).
    note: a short text at the bottom left, beside the clock (e.g. "step 2000"), cut with '...' to fit;
        its characters are drawn from fallback fonts as the titles' are.
    log: where the one message about title (or note) characters no installed font has goes
        (`unshown_message`); None: a MissingGlyphWarning. Characters the title font lacks are drawn from
        other installed fonts (`title_fonts`).
    mirrored: the positions are a mirror image of the motion performed (KIT-ML's decoded joints:
        `humanml3d.is_mirrored`); they are drawn reflected across the vertical plane x = 0 of the plot (the
        data's x, for up_axis "x" its y), so that a figure's left limbs show on its left. The camera, its
        following and the ground are those of the reflected figures; `positions` are not changed."""
    samples = _check_positions(positions)
    parents = _check_parents(parents, samples[0].shape[1])
    titles = _check_options(fps, titles, len(samples), up_axis, max_columns, camera)
    if not isinstance(mirrored, bool | np.bool_):
        raise ValueError(f"mirrored must be True or False, got {mirrored!r:.100}")
    reflection = np.array([-1.0, 1.0, 1.0]) if mirrored else np.ones(3)
    samples = [to_plot_coordinates(sample, up_axis) * reflection for sample in samples]
    camera, offsets, (lo, hi), cell = _camera(samples, parents, camera, float(fps))
    ground_height = min(float(sample[..., 2].min()) for sample in samples)
    note = " ".join(str(note).split())
    fonts = title_fonts([*titles, note] if note else titles)
    if fonts.unshown:
        _say(unshown_message(titles, fonts.unshown, note), log)

    columns = min(len(samples), max_columns)
    rows = math.ceil(len(samples) / columns)
    width, height = columns * PANEL_INCHES, rows * (PANEL_INCHES + TITLE_INCHES) + CLOCK_INCHES
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    panels = []
    strip = dict(y=CLOCK_INCHES / 2 / height, va="center", fontsize=7, color="#555")
    with _quiet_glyph_warnings("".join(fonts.unshown.values())):  # said once, above
        for i, title in enumerate(titles):  # each row: a title band over a square panel; the clock below
            row, column = divmod(i, columns)
            bottom = CLOCK_INCHES + (rows - 1 - row) * (PANEL_INCHES + TITLE_INCHES)
            rect = (column / columns, bottom / height, 1.0 / columns, PANEL_INCHES / height)
            panels.append(_add_panel(figure, rect, title, fonts.families, lo, hi, ground_height, cell))
        if note:
            num_frames = max(len(sample) for sample in samples)
            _add_note(figure, note, fonts.families, strip, num_frames, float(fps))
    axes, bones, joints, ground = (list(artists) for artists in zip(*panels, strict=True))
    clock = figure.text(0.995, s="", ha="right", **strip)
    scene = SkeletonScene(
        figure,
        axes,
        bones,
        joints,
        ground,
        clock,
        samples,
        parents,
        float(fps),
        offsets,
        (lo, hi),
        ground_height,
        camera,
        fonts.unshown,
        cell,
        bool(mirrored),
    )
    scene.show_frame(0)
    return scene


def _camera(
    samples: list[np.ndarray], parents: np.ndarray, camera: str, fps: float
) -> tuple[str, list[np.ndarray], tuple[np.ndarray, np.ndarray], float | None]:
    """For samples in plot coordinates: (camera, offsets, bounds, ground cell) of `skeleton_scene`, the
    camera "follow" or "fixed" ("auto" decided); ground cell None where the grid does not scroll."""
    root = int(np.argmax(parents < 0))  # the first joint without a parent (joint 0 if none)
    follows = [np.zeros((len(sample), 3)) for sample in samples]
    for sample, offset in zip(samples, follows, strict=True):
        offset[:, :2] = sample[:, root, :2]
    about_root = scene_bounds([s - o[:, None] for s, o in zip(samples, follows, strict=True)], up_axis="z")
    if camera != "follow":
        world = scene_bounds(samples, up_axis="z")
        side_world, side_root = world[1][0] - world[0][0], about_root[1][0] - about_root[0][0]
        if camera == "fixed" or side_world <= AUTO_FOLLOW_RATIO * side_root:
            return "fixed", [np.zeros((len(sample), 3)) for sample in samples], world, None
    num_frames = max(len(sample) for sample in samples)
    shown = np.arange(0, num_frames, gif_timing(num_frames, fps)[0])  # an MP4 shows more: smaller steps
    largest_step = max(
        float(np.abs(np.diff(offset[np.minimum(shown, len(offset) - 1), :2], axis=0)).max(initial=0.0))
        for offset in follows
    )
    side = about_root[1][0] - about_root[0][0]
    return "follow", follows, about_root, max(side / GROUND_CELLS, GROUND_CELL_STEPS * largest_step)


def _add_note(figure: Figure, note: str, families, strip: dict, num_frames: int, fps: float) -> None:
    """`note` at the left of the clock strip (in the font `families`), cut with '...' to the width the
    longest clock leaves."""
    renderer = figure.canvas.get_renderer()
    text = figure.text(0.005, s="", ha="left", parse_math=False, fontfamily=list(families), **strip)
    font = text.get_fontproperties()

    def measure(line: str) -> float:
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0]

    longest_clock = f"{(num_frames - 1) / fps:6.2f} s  ({num_frames}/{num_frames})"
    width = figure.bbox.width * 0.99 - measure(longest_clock) - 2 * TITLE_SIDE_INCHES * figure.dpi
    line = note
    if measure(line) > width:
        line = line[: _longest_fit(len(line), lambda n: measure(line[:n] + "...") <= width)].rstrip() + "..."
    text.set_text(line)


def _add_panel(
    figure: Figure,
    rect,
    title: str,
    families,
    lo: np.ndarray,
    hi: np.ndarray,
    ground_height: float,
    cell: float | None = None,
):
    """One 3D panel at `rect` (figure fractions) with limits [lo, hi], the common camera, its title (in the
    font `families`), the ground (a shaded square and a grid of `cell`s at z = ground_height) and empty
    bone and joint lines. Returns (axes, bones, joints, ground grid)."""
    ax = figure.add_axes(rect, projection="3d", computed_zorder=False)
    ax.set_proj_type("persp")
    ax.view_init(elev=VIEW_ELEVATION, azim=VIEW_AZIMUTH)
    ax.set_xlim3d(lo[0], hi[0])
    ax.set_ylim3d(lo[1], hi[1])
    ax.set_zlim3d(lo[2], hi[2])
    ax.set_box_aspect((1.0, 1.0, 1.0), zoom=1.25)
    ax.set_axis_off()
    # The title sits in the band above the panel, its bottom on the panel's top edge: an explicit y keeps
    # matplotlib from re-measuring the (hidden) axes for it on every frame, and set_y undoes the 0.92 that
    # 3D axes apply to a title's y (which pushed titles ~28 px into the panel). Captions are free text: a
    # '$' must not start mathtext, which would also be measured differently (or fail to parse).
    ax.set_title("", y=1.0, pad=0.0, va="bottom", parse_math=False, usetex=False, fontfamily=list(families))
    ax.title.set_y(1.0)
    width = (PANEL_INCHES - 2 * TITLE_SIDE_INCHES) * figure.dpi
    _fit_title(ax.title, title, figure.canvas.get_renderer(), width, TITLE_INCHES * figure.dpi)
    corners = [(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])]
    quad = Poly3DCollection([[(x, y, ground_height) for x, y in corners]], facecolor=GROUND_FILL, zorder=0)
    ax.add_collection3d(quad)
    grid = _ground_polyline(lo, hi, ground_height, cell=cell)
    (ground,) = ax.plot(*grid.T, color=GROUND_COLOR, lw=0.6, zorder=1)
    (bones,) = ax.plot([], [], [], color=BONE_COLOR, linewidth=2.0, solid_capstyle="round", zorder=2)
    (joints,) = ax.plot([], [], [], linestyle="none", marker="o", markersize=2.5, color=JOINT_COLOR, zorder=3)
    return ax, bones, joints, ground


def _fit_title(title: Text, caption: str, renderer, width: float, height: float) -> None:
    """Set `title` to `caption`, wrapped by its rendered width to at most TITLE_MAX_LINES lines in a block at
    most `width` x `height` pixels: at TITLE_FONT_SIZE, else at the largest size down to TITLE_MIN_FONT_SIZE
    (in half points) that shows all of it, else at that size cut to the lines that fit, ending in '...'.
    Runs once, when the scene is built (a few dozen measurements of ~1 ms); frames reuse the result."""

    def fit(size: float) -> tuple[str, bool]:
        """The title's text at `size`, and whether it shows the whole caption."""
        title.set_fontsize(size)
        font = title.get_fontproperties()

        def measure(text: str) -> float:
            return renderer.get_text_width_height_descent(text, font, ismath=False)[0]

        lines = _wrap_lines(caption, width, measure, TITLE_MAX_LINES)
        for count in range(min(len(lines), TITLE_MAX_LINES), 0, -1):  # fewer lines where glyphs are tall
            title.set_text("\n".join(_cut_lines(lines, count, width, measure)))
            fits = title.get_window_extent(renderer).height <= height
            if fits:
                break
        return title.get_text(), fits and count == len(lines)

    sizes = np.arange(TITLE_FONT_SIZE, TITLE_MIN_FONT_SIZE - 0.25, -0.5).tolist()
    if fit(sizes[0])[1]:
        return
    texts = {}
    large, small = 0, len(sizes) - 1  # bisect: the whole caption fits at sizes[small], not at sizes[large]
    texts[small], whole = fit(sizes[small])
    if not whole:
        return  # cut, at the smallest size
    while small - large > 1:
        middle = (large + small) // 2
        texts[middle], whole = fit(sizes[middle])
        large, small = (large, middle) if whole else (middle, small)
    title.set_fontsize(sizes[small])
    title.set_text(texts[small])


def _ground_polyline(
    lo: np.ndarray, hi: np.ndarray, height: float, shift=(0.0, 0.0), cell: float | None = None
) -> np.ndarray:
    """[P, 3] grid lines over the square [lo, hi] (x, y) at z = height, NaN between lines: the lines, within
    the square, of a grid of square `cell`s (default: GROUND_CELLS a side) fixed on the ground, one line
    through lo, seen shifted by -shift (x, y) (a camera following a figure that has moved by `shift`); no
    shift and the default cell: GROUND_CELLS + 1 lines each way, the square's edges included."""
    points = []
    for axis in (0, 1):
        size = (hi[axis] - lo[axis]) / GROUND_CELLS if cell is None else cell
        phase = float(np.mod(-shift[axis], size))
        if size - phase <= 1e-9 * size:  # a line on the far edge, by rounding: on the near one
            phase = 0.0
        for k in range(int(np.floor((hi[axis] - lo[axis] - phase) / size + 1e-9)) + 1):
            at = lo[axis] + phase + k * size
            ends = [(at, lo[1]), (at, hi[1])] if axis == 0 else [(lo[0], at), (hi[0], at)]
            points += [*ends, (np.nan, np.nan)]
    xy = np.array(points, dtype=np.float64).reshape(-1, 2)  # no lines where a cell is wider than the square
    return np.column_stack([xy, np.where(np.isnan(xy[:, 0]), np.nan, height)])


# ------------------------------------------------------------------------------------------ writing
def _claim_path(path, suffixes: Sequence[str], overwrite: bool) -> Path:
    """`path` as a Path after checking its suffix and (unless `overwrite`) that it does not exist yet."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise UserError(
            f"{path}: unsupported file type {path.suffix!r}; expected one of {', '.join(suffixes)}"
        )
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; choose another path (or remove it) instead of overwriting it")
    return path


@contextlib.contextmanager
def _temporary_twin(path: Path) -> Iterator[Path]:
    """A hidden file beside `path` with its suffix (writers choose the format from it),
    `.<stem>.tmp-<host>-<pid>-<random><suffix>`, removed when the block ends (moved into place, or not:
    a full disk, Ctrl-C), where an OSError comes out naming `path`. Makes the folder, and first removes
    the temporary twins of `path` that a killed process of this host left (a run killed while it drew its
    progress GIF): files.staged_file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.staged_file(path, "tmp", keep_suffix=True) as temporary, files.writing(path, temporary):
        yield temporary


def _publish(temporary: Path, path: Path, overwrite: bool) -> None:
    """Move a finished `temporary` to `path` atomically; replace an existing file only if `overwrite`."""
    try:
        if overwrite:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)  # fails if path exists, even if it appeared while we rendered
        except FileExistsError:
            raise FileExistsError(f"{path} appeared while it was being written; left it as it is") from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise FileExistsError(
                    f"{path} appeared while it was being written; left it as it is"
                ) from None
            os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# A GIF stores each frame's delay in whole hundredths of a second, and players do not honour delays under
# two: browsers show them as 10 hundredths, others as fast as they can.
GIF_MIN_DELAY_CS = 2


def gif_timing(num_frames: int, fps: float) -> tuple[int, list[int]]:
    """How a GIF shows `num_frames` time steps at `fps`: (step, delays), the frames of every `step`-th
    time step (the fewest steps apart whose time is at least GIF_MIN_DELAY_CS hundredths of a second: 1
    up to 50 fps, 2 at BEAT's 60 fps) and each kept frame's delay in milliseconds, whole hundredths of a
    second rounded so that the k-th frame starts at the hundredth nearest its time step's time. The
    delays add up to the kept frames' span, step x (kept frames) / fps, within half a hundredth.

    (matplotlib's PillowWriter gives every frame int(1000 / fps) ms, which Pillow truncates to hundredths:
    at 60 fps 1 hundredth per frame, played 1.7x too fast or, in a browser, 6x too slow.)"""
    hundredths_per_step = 100.0 / fps
    step = max(1, math.ceil(GIF_MIN_DELAY_CS / hundredths_per_step - 1e-9))
    kept = len(range(0, num_frames, step))
    starts = [math.floor(k * step * hundredths_per_step + 0.5) for k in range(kept + 1)]
    return step, [10 * (b - a) for a, b in zip(starts[:-1], starts[1:], strict=True)]


class _SharedPaletteGifWriter(PillowWriter):
    """PillowWriter for a SkeletonScene, showing the time steps `gif_timing` picks at its delays. Its frames
    share one palette, taken from the first, middle and last frames: mapping each frame to it is ~30x faster
    than Pillow's per-frame median cut, and a stick figure's few colours survive it. (Pillow merges a frame
    identical to the one before; the scene's clock keeps every frame distinct, so the GIF has one frame per
    time step it shows.)"""

    def __init__(self, scene: SkeletonScene, fps: float):
        super().__init__(fps=fps)
        self.scene = scene
        self.step, self.delays_ms = gif_timing(scene.num_frames, fps)
        self.abandoned = False  # set where drawing the frames failed: finish then writes nothing

    def grab_frame(self, **savefig_kwargs):
        """Take the frame the scene shows now (drawn by the scene, faster than a full savefig)."""
        self._frames.append(Image.fromarray(self.scene.draw()[..., :3]))

    def finish(self):
        if self.abandoned:  # matplotlib finishes a writer even then: the drawing's error goes on, unmasked
            self._frames.clear()
            return
        picks = [self._frames[i] for i in sorted({0, len(self._frames) // 2, len(self._frames) - 1})]
        strip = Image.new("RGB", (picks[0].width, picks[0].height * len(picks)))
        for i, frame in enumerate(picks):
            strip.paste(frame, (0, i * frame.height))
        palette = strip.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        frames = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in self._frames]
        if len(frames) != len(self.delays_ms):
            raise RuntimeError(f"{len(frames)} frames grabbed for {len(self.delays_ms)} delays")
        frames[0].save(self.outfile, save_all=True, append_images=frames[1:], duration=self.delays_ms, loop=0)


class _SceneMp4Writer(FFMpegWriter):
    """FFMpegWriter for a SkeletonScene: H.264 in yuv420p (codec "h264" makes matplotlib ask for yuv420p, the
    pixel format browsers and phones play; ffmpeg picks its H.264 encoder, libx264 where it has one). Frames
    go down the pipe as the raw RGBA the scene draws, faster than a savefig per frame. The ffmpeg executable
    is matplotlib's rcParams["animation.ffmpeg_path"] when `saving` starts."""

    def __init__(self, scene: SkeletonScene, fps: float):
        super().__init__(fps=fps, codec="h264")
        self.scene = scene

    def grab_frame(self, **savefig_kwargs):
        """Send the frame the scene shows now to ffmpeg."""
        frame = self.scene.draw()
        if frame.shape[1::-1] != tuple(self.frame_size):
            raise RuntimeError(f"frame of {frame.shape[1::-1]} pixels, ffmpeg expects {self.frame_size}")
        self._proc.stdin.write(frame.tobytes())


def find_ffmpeg() -> str | None:
    """The ffmpeg executable MP4 files are written with: `ffmpeg` on the PATH, else the static binary bundled
    with the `imageio-ffmpeg` package where that is installed (it also honours IMAGEIO_FFMPEG_EXE); None
    when there is neither."""
    on_path = shutil.which("ffmpeg")
    if on_path is not None:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # installed without a binary for this platform
        return None


def _tail(text, lines: int = 5) -> str:
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _cut_to_lengths(positions, lengths) -> list:
    """positions (as `animate_skeletons` takes them) cut to `lengths`, checked against them."""
    samples = _check_positions(positions)
    counts = np.asarray(lengths)
    if counts.shape != (len(samples),) or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(
            f"lengths must be {len(samples)} integers, one per sample of positions; got {lengths!r:.100}"
        )
    for i, (sample, count) in enumerate(zip(samples, counts.tolist(), strict=True)):
        if not 1 <= count <= len(sample):
            raise ValueError(
                f"lengths[{i}] is {count}; positions[{i}] has {len(sample)} frames (expected 1 to that)"
            )
    return [sample[:count] for sample, count in zip(samples, counts.tolist(), strict=True)]


def animate_skeletons(
    positions,
    parents,
    path: str | os.PathLike,
    *,
    fps: float,
    titles: Sequence[str] | None = None,
    up_axis: str = "y",
    max_columns: int = 4,
    camera: str = "auto",
    note: str = "",
    log: Callable[[str], None] | None = None,
    mirrored: bool = False,
    lengths: Sequence[int] | None = None,
) -> Path:
    """Write an animation of N stick figures side by side to `path` (.gif, or .mp4 where ffmpeg exists:
    see `find_ffmpeg`).

    positions: a list of [T_i, J, 3] arrays or one [N, T, J, 3] array, data coordinates with `up_axis` up.
    lengths: N frame counts, sample i drawn from its first lengths[i] frames (1 <= lengths[i] <= T_i), as
        `sampling.generate` returns them beside its padded [N, T, J, 3] positions, whose frames past a
        sample's length are zeros (drawn, they would shrink the figure to a point); None: every frame.
    parents: int [J], parent of each joint, -1 for a root; a bone is drawn from each joint to its parent.
    titles: N captions (wrapped to fit above their panels, in a smaller font or cut with '...' where too
        long), or None. Characters the title font lacks are drawn from other installed fonts; those no
        installed font has show as boxes, said in one message, `"{path}: ..."`, to `log` (where None, a
        MissingGlyphWarning).
    camera, note: as `skeleton_scene` says (all panels at one scale; by default one cube of the world,
        unless a sample travels so far that it would shrink the figures: then each panel's camera follows
        its figure's root).
    mirrored: the positions are a mirror image of the motion (KIT-ML's: `humanml3d.is_mirrored`): drawn
        reflected in x, as `skeleton_scene` says, so that the animation shows the motion as performed.
    The animation has max_i T_i frames at `fps` (a GIF: every frame up to 50 fps, above that every
    `gif_timing` step-th, since a GIF stores whole hundredths of a second per frame and players honour no
    delay under 2); shorter samples hold their last frame. Never overwrites: an existing `path` raises
    FileExistsError. MP4 without any ffmpeg, or one that fails, raises UserError naming `path`.
    """
    if lengths is not None:
        positions = _cut_to_lengths(positions, lengths)
    path = _claim_path(path, ANIMATION_SUFFIXES, overwrite=False)
    mp4 = path.suffix.lower() == ".mp4"
    ffmpeg = find_ffmpeg() if mp4 else None
    if mp4 and ffmpeg is None:
        raise UserError(
            f"{path}: writing MP4 needs ffmpeg, and there is none: install ffmpeg (on the PATH) or the "
            "Python package that bundles it (pip install imageio-ffmpeg), or ask for a .gif instead"
        )
    scene = skeleton_scene(
        positions,
        parents,
        fps=fps,
        titles=titles,
        up_axis=up_axis,
        max_columns=max_columns,
        camera=camera,
        note=note,
        log=lambda message: _say(f"{path}: {message}", log),
        mirrored=mirrored,
    )
    writer = _SceneMp4Writer(scene, fps=fps) if mp4 else _SharedPaletteGifWriter(scene, fps=fps)
    step = 1 if mp4 else writer.step
    with _temporary_twin(path) as temporary:
        try:
            with (
                mpl.rc_context({"animation.ffmpeg_path": ffmpeg} if mp4 else {}),
                writer.saving(scene.figure, str(temporary), dpi=DPI),
            ):
                try:
                    for t in range(0, scene.num_frames, step):
                        scene.show_frame(t)
                        writer.grab_frame()
                except BaseException:  # (out of memory, Ctrl-C): not masked by the GIF writer's own error
                    writer.abandoned = True
                    raise
        except subprocess.CalledProcessError as error:  # only the MP4 writer runs a process
            raise UserError(
                f"{path}: {ffmpeg} failed (exit status {error.returncode}) writing the MP4: "
                f"{_tail(error.stderr) or 'it said nothing'}; ask for a .gif instead"
            ) from error
        _publish(temporary, path, overwrite=False)
    return path


# --------------------------------------------------------------------------------- training curves
def read_metrics(metrics_path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl (one JSON object per line, each with a numeric "step"; blank lines are
    skipped). A malformed line raises ValueError naming the file and the line number."""
    metrics_path = Path(metrics_path)
    rows = []
    with metrics_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{metrics_path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict) or not _is_number(row.get("step")):
                raise ValueError(
                    f"{metrics_path}, line {number}: expected a JSON object with a numeric 'step', "
                    f"got {line.strip()!r:.120}"
                )
            rows.append(row)
    return rows


def _is_number(value) -> bool:
    """A real number (numpy's included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows holding a finite number under `key`."""
    pairs = [(row["step"], row[key]) for row in rows if _is_number(row.get(key)) and math.isfinite(row[key])]
    steps, values = zip(*pairs, strict=True) if pairs else ((), ())
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def training_curves_figure(
    metrics_path: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = DPI,
) -> Figure:
    """The figure of `plot_training_curves` (Agg canvas): panels (losses, learning rate)."""
    metrics_path = Path(metrics_path)
    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path} holds no metrics rows yet; nothing to plot")
    present = list(dict.fromkeys(key for row in rows for key, value in row.items() if _is_number(value)))
    if keys is None:
        keys = [key for key in present if key.startswith("loss")]
    elif isinstance(keys, str) or [key for key in keys if key not in present]:
        raise ValueError(
            f"keys must be a list of numeric metrics of {metrics_path}, one of {present}; got {keys!r}"
        )

    figure = Figure(figsize=figsize, dpi=dpi, facecolor="white")
    FigureCanvasAgg(figure)
    losses_ax, lr_ax = figure.subplots(1, 2, width_ratios=(2, 1))
    all_positive = True
    for key in keys:
        steps, values = _series(rows, key)
        losses_ax.plot(steps, values, linewidth=1.0, label=key)
        all_positive = all_positive and bool(np.all(values > 0))
    if keys and all_positive:
        losses_ax.set_yscale("log")
    if keys:
        losses_ax.legend(fontsize=7)
    losses_ax.set(xlabel="step", title="losses")
    steps, values = _series(rows, "lr")
    lr_ax.plot(steps, values, color="C3", linewidth=1.0)
    lr_ax.set(xlabel="step", title="learning rate" if len(values) else "learning rate (not logged)")
    for ax in (losses_ax, lr_ax):
        ax.grid(alpha=0.3)
    figure.suptitle(str(metrics_path), fontsize=8)
    figure.tight_layout()
    return figure


def plot_training_curves(
    metrics_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
    overwrite: bool = False,
    figsize: tuple[float, float] = (10.0, 4.0),
    dpi: int = DPI,
) -> Path:
    """Plot a metrics.jsonl (rows {"step": ..., "loss": ..., "lr": ..., ...}) to a PNG of figsize * dpi
    pixels: the loss terms against step on the left (log y where every value is positive), lr on the right.

    keys: the terms of the left panel; default every numeric key starting with "loss", in order of first
    appearance. An existing `png_path` raises FileExistsError unless `overwrite` (then it is replaced
    atomically, so a viewer never sees half a file).
    """
    png_path = _claim_path(png_path, (".png",), overwrite)
    figure = training_curves_figure(metrics_path, keys=keys, figsize=figsize, dpi=dpi)
    with _temporary_twin(png_path) as temporary:
        figure.savefig(temporary, dpi=dpi)
        _publish(temporary, png_path, overwrite)
    return png_path
