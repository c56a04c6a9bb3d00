"""Praat TextGrid reader (word alignments): long and short text forms, UTF-8 or UTF-16.

Both text forms carry the same values in the same order; the long form adds labels (`xmin =`,
`intervals [2]:`). One tokenizer reads strings (`"..."`, with `""` standing for a quote, possibly spanning
lines), numbers, flags (`<exists>`) and labels; the reader takes the values in order and, in the long form,
checks that each value follows its label and each interval its index. Encoding: a UTF-16 (LE/BE) or UTF-8
byte-order mark decides; without one, UTF-16 is recognised by its zero bytes, otherwise UTF-8 (Latin-1
where the bytes are not valid UTF-8).

Errors: every malformed input raises `TextGridError` (a `UserError`, hence a ValueError) whose message
starts `<file>:<line>:` and says what was expected. Intervals of a tier must be in time order and not
overlap (tolerance 1e-6 s); gaps are allowed.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from motion_ddpm_jax.errors import UserError
from motion_ddpm_jax.files import write_text_file

OVERLAP_TOLERANCE_S = 1e-6
# A silence this much shorter than a minimum still reaches it: times written with a few decimals differ
# in floating point (0.57 - 0.07 < 0.5).
PAUSE_TOLERANCE_S = 1e-6
# Labels aligners write on silent intervals instead of leaving them blank (Kaldi/MFA/HTK 'sil', 'sp', 'spn',
# Kaldi's epsilon '<eps>'; BAS MAUS '<p:>'; Festival 'pau'), compared in lower case: `load_words` takes them
# as words unless named.
SILENCE_MARKERS = frozenset(
    {
        "sil",
        "sp",
        "spn",
        "pau",
        "silence",
        "<sil>",
        "<sp>",
        "<spn>",
        "<p:>",
        "<p>",
        "<pau>",
        "<silence>",
        "<eps>",
    }
)
_TIER_CLASSES = ("IntervalTier", "TextTier")
_TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"]|"")*")
    | (?P<flag><[A-Za-z]+>)
    | (?P<index>\[\s*\d*\s*\])
    | (?P<punct>[=:?])
    | (?P<atom>[^\s"=:?\[\]<>]+)
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class TextGridError(UserError):
    """A malformed TextGrid. `source` and `line` (1-based; 0 when not tied to a line) say where."""

    def __init__(self, source: str, line: int, message: str):
        self.source, self.line, self.detail = source, line, message
        super().__init__(f"{source}:{line}: {message}")


class Interval(NamedTuple):
    """One interval of an IntervalTier, in seconds; `text` is "" for a pause."""

    start: float
    end: float
    text: str


class Point(NamedTuple):
    """One point of a TextTier (point tier)."""

    time: float
    text: str


@dataclasses.dataclass(frozen=True)
class Tier:
    """One tier. kind: 'IntervalTier' (`intervals` set, `points` empty) or 'TextTier' (the reverse)."""

    name: str
    kind: str
    xmin: float
    xmax: float
    intervals: tuple[Interval, ...] = ()
    points: tuple[Point, ...] = ()


@dataclasses.dataclass(frozen=True)
class TextGrid:
    """All tiers of a TextGrid, in file order, with every interval (pauses included)."""

    xmin: float
    xmax: float
    tiers: tuple[Tier, ...]
    source: str = "<string>"

    def tier(self, tier: str | int | None = None) -> Tier:
        """The word tier: by index or name (exact, else case-insensitive), or by default the interval tier
        named 'words' (any case), else the one tier named '<speaker> - words' (the Montreal Forced
        Aligner's name for a speaker's words), else the first interval tier. KeyError if there is none."""
        if isinstance(tier, int):
            if not -len(self.tiers) <= tier < len(self.tiers):
                raise KeyError(f"{self.source}: tier index {tier} out of range ({len(self.tiers)} tiers)")
            return self.tiers[tier]
        names = [t.name for t in self.tiers]
        if tier is not None:
            matches = [t for t in self.tiers if t.name == tier] or [
                t for t in self.tiers if t.name.lower() == tier.lower()
            ]
            if not matches:
                raise KeyError(f"{self.source}: no tier named {tier!r}; tiers are {names}")
            return matches[0]
        interval_tiers = [t for t in self.tiers if t.kind == "IntervalTier"]
        for t in interval_tiers:
            if t.name.strip().lower() == "words":
                return t
        speakers = [t for t in interval_tiers if is_word_tier_name(t.name)]
        if len(speakers) == 1:  # (several speakers' word tiers: the first interval tier, as for any name)
            return speakers[0]
        if not interval_tiers:
            raise KeyError(f"{self.source}: no IntervalTier to read words from; tiers are {names}")
        return interval_tiers[0]


def is_word_tier_name(name: str) -> bool:
    """'words' or '<speaker> - words' (MFA's multi-speaker naming), in any case: a tier named for words."""
    key = " ".join(name.split()).lower()
    return key == "words" or key.endswith(" - words")


# -------------------------------------------------------------------------------------------- decoding
def decode_textgrid_bytes(raw: bytes, source: str = "<bytes>") -> str:
    """Bytes of a TextGrid -> text: BOM first (UTF-16 LE/BE, UTF-8), then zero-byte sniffing for UTF-16
    without BOM, then UTF-8, then Latin-1."""
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return raw.decode("utf-16")
        if raw.startswith(codecs.BOM_UTF8):
            return raw[len(codecs.BOM_UTF8) :].decode("utf-8")
        if len(raw) >= 2 and raw[1] == 0 and raw[0] != 0:
            return raw.decode("utf-16-le")
        if len(raw) >= 2 and raw[0] == 0 and raw[1] != 0:
            return raw.decode("utf-16-be")
    except UnicodeDecodeError as error:
        raise TextGridError(source, 0, f"not valid UTF-16/UTF-8 text ({error})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ------------------------------------------------------------------------------------------- tokenizing
class _Token(NamedTuple):
    kind: str  # string, flag, number, label
    value: object
    line: int
    text: str


def _tokens(text: str, source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position, line = 0, 1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] == '"':
                raise TextGridError(source, line, "unterminated string: expected a closing '\"'")
            raise TextGridError(
                source,
                line,
                f"unexpected character {text[position]!r}; expected a number, a string or a label",
            )
        kind, raw = match.lastgroup, match.group()
        if kind == "string":
            tokens.append(_Token("string", raw[1:-1].replace('""', '"'), line, raw))
        elif kind == "atom" and _NUMBER.fullmatch(raw):
            tokens.append(_Token("number", float(raw), line, raw))
        elif kind == "flag":
            tokens.append(_Token("flag", raw, line, raw))
        elif kind != "space":
            tokens.append(_Token("label", raw, line, raw))
        line += raw.count("\n")
        position = match.end()
    return tokens


def _normalise_label(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _label_words(label: str) -> list[str]:
    """'intervals [2]: xmin =' -> ['intervals', '[2]', ':', 'xmin', '=']."""
    return [_normalise_label(m.group()) for m in _TOKEN.finditer(label) if m.lastgroup != "space"]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


class _Reader:
    """Takes values in order; in the long form, checks the label before each one."""

    def __init__(self, tokens: list[_Token], source: str):
        self.tokens, self.source = tokens, source
        self.last_line = tokens[-1].line if tokens else 1  # where a truncated file ends
        self.position = 0
        self.long = False

    def error(self, line: int, message: str) -> TextGridError:
        return TextGridError(self.source, line, message)

    def value(self, kind: str, what: str, label: str | tuple[str, ...] = ()) -> _Token:
        """Next value token of `kind` ('number', 'string' or 'flag'), after its labels.

        label: what the long form writes before the value, e.g. 'intervals [2]: xmin =' (a tuple lists
        alternatives); the short form has no labels at all.
        """
        labels = []
        while self.position < len(self.tokens) and self.tokens[self.position].kind == "label":
            labels.append(self.tokens[self.position])
            self.position += 1
        if self.position >= len(self.tokens):
            line = labels[-1].line if labels else self.last_line
            raise self.error(line, f"unexpected end of file; expected {what} (the file looks truncated)")
        token = self.tokens[self.position]
        self.position += 1
        alternatives = ((label,) if isinstance(label, str) else label) if self.long else ()
        options = [_label_words(text) for text in alternatives] or [[]]
        words = [_normalise_label(t.text) for t in labels]
        if words not in options:
            expected, text = max(
                ((option, text) for option, text in zip(options, alternatives or ("",), strict=True)),
                key=lambda pair: _common_prefix(words, pair[0]),
            )
            n = _common_prefix(words, expected)
            if n == len(expected):  # the labels are right but something sits where the value should be
                after = f" after '{text}'" if text else ""
                raise self.error(
                    labels[n].line, f"expected a {kind} ({what}){after}, found {labels[n].text!r}"
                )
            hint = "; does the declared count match the entries?" if "[" in text else ""
            if n < len(words):
                found = " ".join(t.text for t in labels[n : n + 4])
                raise self.error(labels[n].line, f"expected '{text}' ({what}), found {found!r}{hint}")
            raise self.error(token.line, f"expected '{text}' before {token.text!r} ({what}){hint}")
        if token.kind != kind:
            raise self.error(token.line, f"expected a {kind} ({what}), found {token.text!r}")
        if kind == "number" and not math.isfinite(token.value):  # 1e999
            raise self.error(token.line, f"expected a finite number ({what}), found {token.text!r}")
        return token

    def count(self, what: str, label: str) -> int:
        token = self.value("number", what, label)
        if token.value < 0 or token.value != int(token.value):
            raise self.error(
                token.line, f"expected a non-negative whole number ({what}), found {token.text!r}"
            )
        return int(token.value)

    def at_end(self) -> bool:
        return self.position >= len(self.tokens)


# ----------------------------------------------------------------------------------------------- parsing
def parse_textgrid(text: str, source: str = "<string>") -> TextGrid:
    """Parse the text of a TextGrid (long or short form). Raises TextGridError naming `source` and line."""
    text = text.lstrip("\ufeff")
    reader = _Reader(_tokens(text, source), source)
    reader.long = True  # both forms start with the labelled lines `File type = ...`, `Object class = ...`
    file_type = reader.value("string", 'the file type "ooTextFile"', "File type =")
    if file_type.value not in ("ooTextFile", "ooTextFile short"):
        raise reader.error(
            file_type.line, f'expected File type = "ooTextFile" (a Praat text file), found {file_type.text}'
        )
    # The old short form (`File type = "ooTextFile short"`, as p2fa and FAVE write it) gives the object
    # class as a bare string on the next line.
    bare = reader.position < len(reader.tokens) and reader.tokens[reader.position].kind != "label"
    reader.long = not (file_type.value == "ooTextFile short" and bare)
    object_class = reader.value("string", 'the object class "TextGrid"', "Object class =")
    if object_class.value != "TextGrid":
        raise reader.error(
            object_class.line, f'expected Object class = "TextGrid", found {object_class.text}'
        )
    reader.long = reader.position < len(reader.tokens) and reader.tokens[reader.position].kind == "label"

    xmin = reader.value("number", "the TextGrid's xmin", "xmin =").value
    xmax_token = reader.value("number", "the TextGrid's xmax", "xmax =")
    if xmax_token.value < xmin:
        raise reader.error(xmax_token.line, f"xmax {xmax_token.value} is before xmin {xmin}")
    tiers_flag = reader.value("flag", "'<exists>' or '<absent>'", "tiers?")
    tiers: list[Tier] = []
    if tiers_flag.value == "<exists>":
        num_tiers = reader.count("the number of tiers", "size =")
        for n in range(1, num_tiers + 1):
            tiers.append(_read_tier(reader, n, num_tiers))
    elif tiers_flag.value != "<absent>":
        raise reader.error(tiers_flag.line, f"expected '<exists>' or '<absent>', found {tiers_flag.text!r}")
    if not reader.at_end():
        extra = reader.tokens[reader.position]
        raise reader.error(
            extra.line,
            f"unexpected {extra.text!r} after the last of {len(tiers)} tiers; expected the end of the file "
            "(does the tier or interval count match the entries?)",
        )
    return TextGrid(xmin=xmin, xmax=xmax_token.value, tiers=tuple(tiers), source=source)


def _read_tier(reader: _Reader, n: int, num_tiers: int) -> Tier:
    where = f"tier {n} of {num_tiers}"
    item_label = f"item [{n}]: class ="
    if n == 1:  # the long form opens the list with 'item []:'
        item_label = (item_label, f"item []: {item_label}")
    kind = reader.value("string", f"the class of {where}", item_label)
    if kind.value not in _TIER_CLASSES:
        raise reader.error(
            kind.line, f"unknown tier class {kind.text} ({where}); expected one of {', '.join(_TIER_CLASSES)}"
        )
    name = reader.value("string", f"the name of {where}", "name =").value
    where = f"tier {n} ({name!r})"
    xmin = reader.value("number", f"xmin of {where}", "xmin =").value
    xmax_token = reader.value("number", f"xmax of {where}", "xmax =")
    if xmax_token.value < xmin:
        raise reader.error(xmax_token.line, f"{where}: xmax {xmax_token.value} is before xmin {xmin}")
    if kind.value == "TextTier":
        count = reader.count(f"the number of points of {where}", "points: size =")
        points = []
        for i in range(1, count + 1):
            time = reader.value(
                "number",
                f"the time of point {i} of {where}",
                (f"points [{i}]: number =", f"points [{i}]: time ="),
            )
            mark = reader.value("string", f"the mark of point {i} of {where}", "mark =")
            if points and time.value < points[-1].time:
                raise reader.error(time.line, f"{where}: point {i} at {time.value} s is before point {i - 1}")
            points.append(Point(time.value, mark.value))
        return Tier(name, kind.value, xmin, xmax_token.value, points=tuple(points))
    count = reader.count(f"the number of intervals of {where}", "intervals: size =")
    intervals: list[Interval] = []
    for i in range(1, count + 1):
        start = reader.value("number", f"xmin of interval {i} of {where}", f"intervals [{i}]: xmin =")
        end = reader.value("number", f"xmax of interval {i} of {where}", "xmax =")
        label = reader.value("string", f"the text of interval {i} of {where}", "text =")
        if end.value < start.value:
            raise reader.error(
                end.line, f"{where}, interval {i}: end {end.value} s is before its start {start.value} s"
            )
        if intervals and start.value < intervals[-1].end - OVERLAP_TOLERANCE_S:
            raise reader.error(
                start.line,
                f"{where}: interval {i} starts at {start.value} s, before interval {i - 1} ends "
                f"({intervals[-1].end} s); expected intervals in time order, not overlapping",
            )
        intervals.append(Interval(start.value, end.value, label.value))
    return Tier(name, kind.value, xmin, xmax_token.value, intervals=tuple(intervals))


# --------------------------------------------------------------------------------------------------- API
def load_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid file with all tiers and all intervals (pauses included)."""
    with open(path, "rb") as handle:
        raw = handle.read()
    source = os.fspath(path)
    return parse_textgrid(decode_textgrid_bytes(raw, source), source=source)


def load_words(
    path: str | os.PathLike, tier: str | int | None = None, pause_labels: Iterable[str] = ()
) -> list[tuple[float, float, str]]:
    """(start_s, end_s, word) of every non-empty interval of the word tier, in time order.

    tier: a name or index; by default the IntervalTier named 'words' (any case), else the first one.
    Words are stripped of surrounding whitespace, and whitespace inside one (a line break in a label) becomes
    a single space; intervals whose text is blank, or one of `pause_labels` (any case, e.g. 'sil'), are
    pauses and left out.
    """
    return tier_words(word_tier(load_textgrid(path), tier), pause_labels)


def word_tier(grid: TextGrid, tier: str | int | None = None) -> Tier:
    """`grid.tier(tier)` if it is an IntervalTier; TextGridError naming the file otherwise."""
    try:
        chosen = grid.tier(tier)
    except KeyError as error:
        message = str(error.args[0]).removeprefix(f"{grid.source}: ")
        raise TextGridError(grid.source, 0, message) from None
    if chosen.kind != "IntervalTier":
        raise TextGridError(
            grid.source, 0, f"tier {chosen.name!r} is a {chosen.kind}, expected an IntervalTier"
        )
    return chosen


def tier_words(tier: Tier, pause_labels: Iterable[str] = ()) -> list[tuple[float, float, str]]:
    """The words of an IntervalTier as `load_words` gives them (`pause_labels`: labels, or one label)."""
    labels = (pause_labels,) if isinstance(pause_labels, str) else pause_labels
    pause = {label_key(label) for label in labels}
    words = [(i.start, i.end, " ".join(i.text.split())) for i in tier.intervals]
    return [(s, e, w) for s, e, w in words if w and label_key(w) not in pause]


def label_key(label: str) -> str:
    """How a pause label is compared with an interval's text: blanks collapsed, any case."""
    return " ".join(label.split()).lower()


def pauses(
    intervals: Iterable[Sequence],
    min_duration: float = 0.5,
    start: float | None = None,
    end: float | None = None,
) -> list[tuple[float, float]]:
    """Silent spans of at least `min_duration` seconds (less `PAUSE_TOLERANCE_S`) between words, as
    (start_s, end_s), in time order.

    intervals: (start, end, text) items, e.g. a tier's `intervals` (empty texts are pauses) or the
      output of `load_words` (the gaps between words are pauses). Items with blank text are ignored, so
      adjacent empty intervals and gaps merge into one span.
    start, end: the recording's bounds (e.g. the tier's xmin/xmax), by default the first start and the
      last end among the items; silence between a bound and the nearest word counts too.
    """
    items = [(float(s), float(e), str(text)) for s, e, text in intervals]
    if start is None and items:
        start = min(s for s, _, _ in items)
    if end is None and items:
        end = max(e for _, e, _ in items)
    words = sorted((s, e) for s, e, text in items if text.strip())
    spans = []
    cursor = start
    for word_start, word_end in words:
        if word_start - cursor >= min_duration - PAUSE_TOLERANCE_S:
            spans.append((cursor, word_start))
        cursor = max(cursor, word_end)
    if cursor is not None and end is not None and end - cursor >= min_duration - PAUSE_TOLERANCE_S:
        spans.append((cursor, end))
    return spans


# --------------------------------------------------------------------------------------------------- writing
_GAP_SNAP_S = 1e-9  # gaps and overlaps up to this size join the neighbours instead of making an interval


def format_textgrid(
    intervals: Iterable[Sequence],
    xmin: float,
    xmax: float,
    tier_name: str = "words",
) -> str:
    """The long text form of a Praat TextGrid ("ooTextFile") with one IntervalTier, laid out as Praat
    writes it (less Praat's trailing spaces).

    intervals: (start_s, end_s, text) items in time order, each start < end, inside [xmin, xmax], not
      overlapping (by more than 1e-9 s, which is snapped). The gaps between them (and to xmin/xmax) are
      filled with empty intervals, as Praat requires a tier to cover its whole span. Quotes in texts are
      doubled. Times are written with the shortest digits that read back as the same float.
    """
    xmin, xmax = _checked_time(xmin, "xmin"), _checked_time(xmax, "xmax")
    if not xmin < xmax:
        raise ValueError(f"xmin ({xmin}) must be before xmax ({xmax})")
    filled: list[tuple[float, float, str]] = []
    cursor = xmin
    for n, item in enumerate(intervals):
        try:
            start, end, text = item
        except (TypeError, ValueError):
            raise ValueError(f"interval {n}: expected (start, end, text), got {item!r}") from None
        start, end = _checked_time(start, f"interval {n} start"), _checked_time(end, f"interval {n} end")
        if not isinstance(text, str):
            raise ValueError(f"interval {n}: text must be a string, got {text!r}")
        if not start < end:
            raise ValueError(f"interval {n} ({text!r}): start {start} s is not before its end {end} s")
        if start < cursor - _GAP_SNAP_S:
            before = "xmin" if not filled else "the previous interval's end"
            raise ValueError(
                f"interval {n} ({text!r}) starts at {start} s, before {before} ({cursor} s); expected "
                "intervals in time order, not overlapping"
            )
        if end > xmax + _GAP_SNAP_S:
            raise ValueError(f"interval {n} ({text!r}) ends at {end} s, after xmax ({xmax} s)")
        if start > cursor + _GAP_SNAP_S:
            filled.append((cursor, start, ""))
        else:
            start = cursor
        end = min(end, xmax)
        if not start < end:
            raise ValueError(f"interval {n} ({text!r}) is empty after joining it to its neighbour")
        filled.append((start, end, text))
        cursor = filled[-1][1]
    if xmax > cursor + _GAP_SNAP_S or not filled:
        filled.append((cursor, xmax, ""))
    elif filled[-1][1] != xmax:
        filled[-1] = (filled[-1][0], xmax, filled[-1][2])

    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        f"xmin = {_format_time(xmin)}",
        f"xmax = {_format_time(xmax)}",
        "tiers? <exists>",
        "size = 1",
        "item []:",
        "    item [1]:",
        '        class = "IntervalTier"',
        f"        name = {_quoted(tier_name)}",
        f"        xmin = {_format_time(xmin)}",
        f"        xmax = {_format_time(xmax)}",
        f"        intervals: size = {len(filled)}",
    ]
    for n, (start, end, text) in enumerate(filled, start=1):
        lines += [
            f"        intervals [{n}]:",
            f"            xmin = {_format_time(start)}",
            f"            xmax = {_format_time(end)}",
            f"            text = {_quoted(text)}",
        ]
    return "\n".join(lines) + "\n"


def write_textgrid(
    path: str | os.PathLike,
    intervals: Iterable[Sequence],
    xmin: float,
    xmax: float,
    tier_name: str = "words",
    overwrite: bool = False,
) -> str:
    """Write `format_textgrid(...)` to `path` (UTF-8) and return the path as a string.

    An existing file raises FileExistsError unless `overwrite` (then it is replaced atomically).
    """
    return write_text_file(path, format_textgrid(intervals, xmin, xmax, tier_name), overwrite)


def _checked_time(value, what: str) -> float:
    try:
        time = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(time):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return time


def _format_time(seconds: float) -> str:
    """The shortest digits that read back as the same float, as Praat writes them: 0 -> '0', 0.5 -> '0.5'."""
    text = repr(float(seconds))
    return text[:-2] if text.endswith(".0") else text


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
