"""Specification of the Praat TextGrid reader: both text forms, encodings, errors, pauses, fuzzing."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motion_ddpm_jax.data.textgrid import (
    Interval,
    Point,
    TextGridError,
    decode_textgrid_bytes,
    is_word_tier_name,
    load_textgrid,
    load_words,
    parse_textgrid,
    pauses,
)

LONG = '''\
File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 3.5
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 3.5
            text = "x"
    item [2]:
        class = "IntervalTier"
        name = "Words"
        xmin = 0
        xmax = 3.5
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.62
            text = ""
        intervals [2]:
            xmin = 0.62
            xmax = 1.1
            text = "so"
        intervals [3]:
            xmin = 1.1
            xmax = 1.75
            text = "he said ""hello"""
        intervals [4]:
            xmin = 1.75
            xmax = 2.4
            text = ""
        intervals [5]:
            xmin = 2.4
            xmax = 3.5
            text = "café"
'''

SHORT = '''\
File type = "ooTextFile"
Object class = "TextGrid"

0
3.5
<exists>
2
"IntervalTier"
"Words"
0
3.5
5
0
0.62
""
0.62
1.1
"so"
1.1
1.75
"he said ""hello"""
1.75
2.4
""
2.4
3.5
"café"
"TextTier"
"beats"
0
3.5
2
1.0
"b1"
2.0
"b2"
'''

WORDS = [(0.62, 1.1, "so"), (1.1, 1.75, 'he said "hello"'), (2.4, 3.5, "café")]


def write(tmp_path, text: str, name: str = "take.TextGrid", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the `occurrence`-th line containing `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


# ------------------------------------------------------------------------------------------------ values
def test_long_form_gives_the_words_of_the_words_tier(tmp_path):
    assert load_words(write(tmp_path, LONG)) == WORDS


def test_short_form_gives_the_same_words(tmp_path):
    assert load_words(write(tmp_path, SHORT)) == WORDS


def test_the_old_short_form_with_a_bare_object_class_gives_the_same_grid(tmp_path):
    """`File type = "ooTextFile short"` followed by a bare "TextGrid" line (older Praat, p2fa, FAVE)."""
    old = SHORT.replace(
        'File type = "ooTextFile"\nObject class = "TextGrid"', 'File type = "ooTextFile short"\n"TextGrid"'
    )
    assert old != SHORT
    assert parse_textgrid(old) == parse_textgrid(SHORT)
    assert load_words(write(tmp_path, old)) == WORDS
    labelled = SHORT.replace('"ooTextFile"', '"ooTextFile short"')  # the same header with its label
    assert parse_textgrid(labelled) == parse_textgrid(SHORT)
    with pytest.raises(TextGridError, match="Object class"):  # the modern header's label stays required
        parse_textgrid(SHORT.replace('Object class = "TextGrid"', '"TextGrid"'))


def test_textgrid_keeps_all_tiers_and_empty_intervals(tmp_path):
    grid = load_textgrid(write(tmp_path, SHORT))
    assert (grid.xmin, grid.xmax) == (0.0, 3.5)
    assert [(t.name, t.kind) for t in grid.tiers] == [("Words", "IntervalTier"), ("beats", "TextTier")]
    words = grid.tiers[0]
    assert len(words.intervals) == 5
    assert words.intervals[0] == Interval(0.0, 0.62, "")
    assert words.intervals[3] == Interval(1.75, 2.4, "")
    assert grid.tiers[1].points == (Point(1.0, "b1"), Point(2.0, "b2"))


def test_long_and_short_forms_parse_to_the_same_word_tier():
    assert parse_textgrid(LONG).tier("words") == parse_textgrid(SHORT).tier("words")


def test_tier_choice_by_name_index_and_default():
    grid = parse_textgrid(LONG)
    assert grid.tier().name == "Words"  # 'words' in any case wins over the first tier
    assert grid.tier("phones").name == "phones"
    assert grid.tier("PHONES").name == "phones"
    assert grid.tier(0).name == "phones"
    with pytest.raises(KeyError, match="no tier named 'nope'"):
        grid.tier("nope")
    no_words = parse_textgrid(LONG.replace('"Words"', '"ortho"'))
    assert no_words.tier().name == "phones"  # no 'words' tier: the first interval tier
    # The Montreal Forced Aligner names a speaker's tiers '<speaker> - words' / '<speaker> - phones'
    mfa = parse_textgrid(LONG.replace('"Words"', '"spk01 - words"').replace('"phones"', '"spk01 - phones"'))
    assert mfa.tier().name == "spk01 - words"
    two = parse_textgrid(LONG.replace('"Words"', '"b - words"').replace('"phones"', '"a - words"'))
    assert two.tier().name == "a - words"  # two speakers' word tiers: the first, as for any names
    assert is_word_tier_name(" Spk 1 -  WORDS ") and not is_word_tier_name("swords")


def test_load_words_with_an_explicit_tier(tmp_path):
    path = write(tmp_path, LONG)
    assert load_words(path, tier="phones") == [(0.0, 3.5, "x")]
    assert load_words(path, tier=1) == WORDS
    with pytest.raises(TextGridError, match="no tier named 'nope'"):
        load_words(path, tier="nope")


def test_a_missing_tier_names_the_file_once_and_the_tiers_there(tmp_path):
    path = write(tmp_path, LONG)
    with pytest.raises(TextGridError) as error:
        load_words(path, tier="ORT-MAU")
    assert str(error.value) == f"{path}:0: no tier named 'ORT-MAU'; tiers are ['phones', 'Words']"


def test_labels_named_as_pauses_are_left_out_like_blank_ones(tmp_path):
    """Aligners that label silences ('sil', 'SP', '<p:>') instead of leaving them blank: the labels named
    are pauses in any case and with surrounding space; other words, and words merely containing one, stay."""
    text = LONG.replace('text = ""', 'text = "SIL"', 1).replace('text = ""', 'text = " <p:> "', 1)
    text = text.replace('"so"', '"sp"').replace('"café"', '"sil café"')
    path = write(tmp_path, text)
    assert [w for _, _, w in load_words(path)] == ["SIL", "sp", 'he said "hello"', "<p:>", "sil café"]
    got = load_words(path, pause_labels=["sil", " Sp ", "<P:>"])
    assert got == [(1.1, 1.75, 'he said "hello"'), (2.4, 3.5, "sil café")]
    assert [w for _, _, w in load_words(path, pause_labels="sp")][:2] == [
        "SIL",
        'he said "hello"',
    ]  # not s, p


def test_load_words_rejects_a_point_tier(tmp_path):
    with pytest.raises(TextGridError, match="'beats' is a TextTier, expected an IntervalTier"):
        load_words(write(tmp_path, SHORT), tier="beats")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_utf16_and_bom_files_read_the_same(tmp_path, encoding):
    # "utf-16" writes a BOM; the -le/-be variants have none and are recognised by their zero bytes.
    assert load_words(write(tmp_path, LONG, encoding=encoding)) == WORDS


def test_crlf_line_endings_and_praat_trailing_spaces(tmp_path):
    assert load_words(write(tmp_path, SHORT.replace("\n", "\r\n"))) == WORDS
    assert load_words(write(tmp_path, LONG.replace("\n", " \n"))) == WORDS


def test_old_praat_point_tier_labels_number_and_time():
    long_points = (
        LONG.replace("size = 2", "size = 3", 1)
        + """\
    item [3]:
        class = "TextTier"
        name = "beats"
        xmin = 0
        xmax = 3.5
        points: size = 2
        points [1]:
            number = 1
            mark = "a"
        points [2]:
            time = 2
            mark = "b"
"""
    )
    assert parse_textgrid(long_points).tier("beats").points == (Point(1.0, "a"), Point(2.0, "b"))


def test_a_string_may_span_lines_and_line_numbers_stay_right():
    text = SHORT.replace('"so"', '"so\nthen"')
    assert parse_textgrid(text).tiers[0].intervals[1].text == "so\nthen"
    bad = text.replace("2.4\n3.5", "2.4\nthree", 1)
    with pytest.raises(TextGridError, match=rf"^<string>:{line_of(bad, 'three')}: "):
        parse_textgrid(bad)


def test_load_words_turns_a_line_break_inside_a_label_into_a_space(tmp_path):
    """A prepared dataset keeps one caption a line: a word label spanning lines is one word of one line."""
    path = tmp_path / "take.TextGrid"
    path.write_text(SHORT.replace('"so"', '"so\n  then"'))
    texts = [word for _, _, word in load_words(path)]
    assert "so then" in texts and not any("\n" in word for word in texts)


def test_no_tiers():
    grid = parse_textgrid('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<absent>\n')
    assert grid.tiers == ()


# ------------------------------------------------------------------------------------------------ pauses
def test_pauses_from_all_intervals_include_leading_empty_interval():
    intervals = parse_textgrid(LONG).tier().intervals
    assert pauses(intervals, min_duration=0.5) == [(0.0, 0.62), (1.75, 2.4)]
    assert pauses(intervals, min_duration=0.63) == [(1.75, 2.4)]


def test_pauses_from_words_are_the_gaps_and_the_bounds_when_given():
    assert pauses(WORDS, min_duration=0.5) == [(1.75, 2.4)]
    assert pauses(WORDS, min_duration=0.5, start=0.0, end=4.5) == [(0.0, 0.62), (1.75, 2.4), (3.5, 4.5)]


def test_a_pause_written_as_exactly_the_minimum_is_one_whatever_the_rounding():
    """Gaps written with two decimals as 0.50 s: in floating point some fall short of 0.5 (0.57 - 0.07 =
    0.49999999999999994); every one of them is a pause of at least 0.5 s, and 0.49 s gaps are none."""
    starts = [k / 100 for k in range(1000)]
    short = [s for s in starts if (s + 0.5) - s < 0.5]
    assert short, "the rounding case this test is about"
    for gap, expected in ((0.5, True), (0.49, False)):
        for s in starts:
            words = [(s - 0.05, s, "a"), (round(s + gap, 2), round(s + gap, 2) + 0.1, "b")]
            assert bool(pauses(words, min_duration=0.5)) == expected, (s, gap)


def test_pauses_merge_adjacent_empty_intervals_and_gaps():
    items = [(0.0, 1.0, "a"), (1.0, 1.3, ""), (1.5, 1.7, " "), (1.7, 2.0, "b")]
    assert pauses(items, min_duration=0.5) == [(1.0, 1.7)]
    assert pauses([], min_duration=0.5) == []
    assert pauses([], min_duration=0.5, start=0.0, end=1.0) == [(0.0, 1.0)]


# ------------------------------------------------------------------------------------------------ errors
def _short_replace(old: str, new: str, needle: str | None = None, occurrence: int = 1):
    text = SHORT.replace(old, new, 1)
    return text, line_of(text, needle or new.strip(), occurrence)


MALFORMED = {
    "truncated long": (
        lambda: (LONG[: LONG.index("intervals [5]:")], line_of(LONG, "intervals [4]") + 3),
        "unexpected end of file; expected xmin of interval 5 of tier 2 .*truncated",
    ),
    "truncated short": (
        lambda: (SHORT[: SHORT.index('"TextTier"')] + '"TextT', line_of(SHORT, '"TextTier"')),
        "unterminated string",
    ),
    "truncated short at a value": (
        lambda: (SHORT[: SHORT.index('"b2"')], line_of(SHORT, '"b2"') - 1),
        "unexpected end of file; expected the mark of point 2",
    ),
    "non-numeric time long": (
        lambda: (LONG.replace("xmax = 1.1\n", "xmax = 1.1x\n", 1), line_of(LONG, "xmax = 1.1")),
        r"expected a number \(xmax of interval 2 of tier 2 \('Words'\)\) after 'xmax =', found '1.1x'",
    ),
    "non-numeric time short": (
        lambda: _short_replace("0.62\n1.1\n", "0.62\nabc\n", needle="abc"),
        r"expected a number \(xmax of interval 2 of tier 1 \('Words'\)\), found 'abc'",
    ),
    "string instead of time": (
        lambda: _short_replace("1.1\n1.75\n", '1.1\n"1.75"\n', needle='"1.75"'),
        r"expected a number \(xmax of interval 3 .*found '\"1.75\"'",
    ),
    "end before start": (
        lambda: _short_replace("1.75\n2.4\n", "1.75\n1.5\n", needle="1.5"),
        r"interval 4: end 1.5 s is before its start 1.75 s",
    ),
    "overlapping intervals": (
        lambda: (LONG.replace("xmin = 1.75", "xmin = 1.7", 1), line_of(LONG, "xmin = 1.75")),
        r"interval 4 starts at 1.7 s, before interval 3 ends \(1.75 s\)",
    ),
    "fewer intervals than declared (long)": (
        lambda: (LONG.replace("intervals: size = 1", "intervals: size = 2", 1), line_of(LONG, "item [2]:")),
        r"expected 'intervals \[2\]: xmin =' .*found 'item \[2\] :.*declared count",
    ),
    "more intervals than declared (long)": (
        lambda: (
            LONG.replace("intervals: size = 5", "intervals: size = 4", 1),
            line_of(LONG, "intervals [5]"),
        ),
        r"unexpected 'intervals' after the last of 2 tiers",
    ),
    "fewer intervals than declared (short)": (
        lambda: _short_replace("3.5\n5\n", "3.5\n6\n", needle='"TextTier"'),
        r"expected a number \(xmin of interval 6 of tier 1 .*found '\"TextTier\"'",
    ),
    "fewer tiers than declared": (
        lambda: (SHORT.replace("<exists>\n2\n", "<exists>\n3\n", 1), SHORT.count("\n")),
        r"unexpected end of file; expected the class of tier 3 of 3",
    ),
    "unknown tier class": (
        lambda: _short_replace('"TextTier"', '"PitchTier"'),
        r"unknown tier class \"PitchTier\" \(tier 2 of 2\); expected one of IntervalTier, TextTier",
    ),
    "not a TextGrid": (
        lambda: _short_replace('Object class = "TextGrid"', 'Object class = "Sound"'),
        r'expected Object class = "TextGrid", found "Sound"',
    ),
    "binary file type": (
        lambda: _short_replace('File type = "ooTextFile"', 'File type = "ooBinaryFile"'),
        r'expected File type = "ooTextFile"',
    ),
    "negative count": (
        lambda: _short_replace("3.5\n5\n", "3.5\n-5\n", needle="-5"),
        r"expected a non-negative whole number \(the number of intervals",
    ),
    "missing label long": (
        lambda: (LONG.replace('name = "Words"', '"Words"', 1), line_of(LONG, 'name = "Words"')),
        r"expected 'name =' before '\"Words\"'",
    ),
    "stray character": (
        lambda: _short_replace("0.62\n1.1\n", "0.62\n1.1 ;\n", needle="1.1 ;"),
        r"expected a string \(the text of interval 2 of tier 1 \('Words'\)\), found ';'",
    ),
    "stray angle bracket": (
        lambda: _short_replace("0.62\n1.1\n", "0.62\n1.1 <\n", needle="1.1 <"),
        r"unexpected character '<'",
    ),
    "missing tiers flag": (
        lambda: _short_replace("<exists>\n", "", needle="2"),
        r"expected a flag \('<exists>' or '<absent>'\), found '2'",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_textgrid_raises_error_naming_file_and_line(case, tmp_path):
    make, expected = MALFORMED[case]
    text, line = make()
    path = write(tmp_path, text, name="broken.TextGrid")
    with pytest.raises(TextGridError) as info:
        load_textgrid(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert info.value.line == line and info.value.source == str(path)
    assert re.search(expected, message), message


def test_textgrid_error_is_a_value_error():
    with pytest.raises(ValueError, match=r"^<string>:1: unexpected end of file"):
        parse_textgrid("")


def test_undecodable_utf16_raises_textgrid_error():
    with pytest.raises(TextGridError, match="not valid UTF-16"):
        decode_textgrid_bytes(b"\xff\xfe\x00\xd8", source="odd.TextGrid")


# ---------------------------------------------------------------------------------------------- fuzzing
_ALPHABET = st.sampled_from(
    list('0123456789.-+eE "\n\t\r=:[]<>?!;abcxyz\x00\u00e9') + ['""', "<exists>", "item", "intervals", "size"]
)


@st.composite
def mutated_textgrid(draw) -> str:
    text = draw(st.sampled_from([LONG, SHORT]))
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(keepends=True) or [""]
        n = draw(st.integers(0, len(lines) - 1))
        line = lines[n]
        at = draw(st.integers(0, len(line)))
        kind = draw(st.sampled_from(["truncate", "delete", "insert", "duplicate_line", "drop_line"]))
        if kind == "truncate":
            lines, line = lines[:n], line[:at]
            lines.append(line)
        elif kind == "delete":
            lines[n] = line[:at] + line[at + draw(st.integers(1, 8)) :]
        elif kind == "insert":
            lines[n] = line[:at] + "".join(draw(st.lists(_ALPHABET, min_size=1, max_size=3))) + line[at:]
        elif kind == "duplicate_line":
            lines.insert(n, line)
        else:
            del lines[n]
        text = "".join(lines)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_textgrid())
def test_fuzzed_textgrids_parse_or_raise_textgrid_error(text):
    try:
        grid = parse_textgrid(text, source="fuzz.TextGrid")
    except TextGridError as error:
        assert str(error).startswith("fuzz.TextGrid:")
        assert 0 < error.line <= text.count("\n") + 1
        return
    for tier in grid.tiers:
        for before, after in zip(tier.intervals, tier.intervals[1:], strict=False):
            assert after.start >= before.end - 1e-6 and after.end >= after.start


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf"]))
def test_fuzzed_bytes_decode_or_raise_textgrid_error(raw, bom):
    try:
        parse_textgrid(decode_textgrid_bytes(bom + raw, "fuzz.TextGrid"), "fuzz.TextGrid")
    except TextGridError:
        pass
