"""Specification of the TextGrid writer: Praat's long text form, read back by load_words/load_textgrid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motion_ddpm_jax.data.textgrid import (
    Interval,
    format_textgrid,
    load_textgrid,
    load_words,
    parse_textgrid,
    write_textgrid,
)

WORDS = [(0.5, 1.0, "now"), (1.0, 1.25, "wave"), (2.0, 2.5, 'say "hi"')]
EXPECTED = '''\
File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 3
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = ""
        intervals [2]:
            xmin = 0.5
            xmax = 1
            text = "now"
        intervals [3]:
            xmin = 1
            xmax = 1.25
            text = "wave"
        intervals [4]:
            xmin = 1.25
            xmax = 2
            text = ""
        intervals [5]:
            xmin = 2
            xmax = 2.5
            text = "say ""hi"""
        intervals [6]:
            xmin = 2.5
            xmax = 3
            text = ""
'''


def test_long_text_form_as_praat_writes_it():
    assert format_textgrid(WORDS, 0.0, 3.0) == EXPECTED


def test_round_trip_through_the_readers(tmp_path):
    path = write_textgrid(tmp_path / "take.TextGrid", WORDS, 0.0, 3.0)
    assert load_words(path) == WORDS  # exact times, quotes restored, pauses left out
    grid = load_textgrid(path)
    (tier,) = grid.tiers
    assert (grid.xmin, grid.xmax, tier.name, tier.kind) == (0.0, 3.0, "words", "IntervalTier")
    assert tier.intervals == (
        Interval(0.0, 0.5, ""),
        Interval(0.5, 1.0, "now"),
        Interval(1.0, 1.25, "wave"),
        Interval(1.25, 2.0, ""),
        Interval(2.0, 2.5, 'say "hi"'),
        Interval(2.5, 3.0, ""),
    )


def test_frame_times_unicode_and_tier_name_survive(tmp_path):
    words = [(121 / 120, 250 / 120, "día"), (251 / 120, 1 / 3 + 2, "naïve “quoted”")]
    path = write_textgrid(tmp_path / "t.TextGrid", words, 0.0, 1e4 / 120, tier_name="transcript")
    assert load_words(path, tier="transcript") == words
    assert load_textgrid(path).tiers[0].name == "transcript"


def test_no_words_is_one_silent_interval():
    grid = parse_textgrid(format_textgrid([], 1.0, 2.0))
    assert grid.tiers[0].intervals == (Interval(1.0, 2.0, ""),)


def test_words_touching_both_ends_need_no_filler():
    grid = parse_textgrid(format_textgrid([(0.0, 1.0, "a"), (1.0, 2.0, "b")], 0.0, 2.0))
    assert [i.text for i in grid.tiers[0].intervals] == ["a", "b"]


def test_rounding_noise_between_neighbours_is_joined():
    words = [(0.1, 0.30000000000000004, "a"), (0.3, 0.6, "b"), (0.6000000000000001, 0.9, "c")]
    intervals = parse_textgrid(format_textgrid(words, 0.0, 1.0)).tiers[0].intervals
    assert [i.text for i in intervals] == ["", "a", "b", "c", ""]
    assert all(a.end == b.start for a, b in zip(intervals, intervals[1:], strict=False))


@pytest.mark.parametrize(
    "words, xmin, xmax, message",
    [
        ([(1.0, 1.5, "a"), (1.2, 2.0, "b")], 0, 3, r"interval 1 \('b'\) starts at 1.2 s, before the previ"),
        ([(2.0, 2.5, "a"), (1.0, 1.5, "b")], 0, 3, "expected intervals in time order"),
        ([(1.0, 1.0, "a")], 0, 3, "start 1.0 s is not before its end"),
        ([(0.5, 3.5, "a")], 0, 3, r"ends at 3.5 s, after xmax \(3.0 s\)"),
        ([(-0.5, 0.5, "a")], 0, 3, r"before xmin \(0.0 s\)"),
        ([(0.5, 1.0, 7)], 0, 3, "text must be a string"),
        ([(0.5, 1.0)], 0, 3, r"expected \(start, end, text\)"),
        ([(0.5, float("nan"), "a")], 0, 3, "interval 0 end must be finite"),
        ([], 2, 2, r"xmin \(2.0\) must be before xmax"),
    ],
)
def test_bad_intervals_are_refused(words, xmin, xmax, message):
    with pytest.raises(ValueError, match=message):
        format_textgrid(words, xmin, xmax)


def test_write_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "take.TextGrid"
    path.write_text("a user's file")
    with pytest.raises(FileExistsError, match="take.TextGrid exists; pass overwrite=True"):
        write_textgrid(path, WORDS, 0.0, 3.0)
    assert path.read_text() == "a user's file"
    write_textgrid(path, WORDS, 0.0, 3.0, overwrite=True)
    assert load_words(path) == WORDS
    assert [p.name for p in tmp_path.iterdir()] == ["take.TextGrid"]


@st.composite
def word_lists(draw):
    times = sorted(set(draw(st.lists(st.floats(0, 1000, allow_nan=False), min_size=0, max_size=20))))
    xmax = draw(st.floats(1000.5, 2000))
    words = []
    for start, end in zip(times[::2], times[1::2], strict=False):
        text = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8))
        if text.strip():
            words.append((start, end, text))
    return words, xmax


@settings(max_examples=100, deadline=None)
@given(case=word_lists())
def test_any_word_list_round_trips(case):
    words, xmax = case
    grid = parse_textgrid(format_textgrid(words, 0.0, xmax))
    tier = grid.tiers[0]
    written = [(i.start, i.end, i.text) for i in tier.intervals if i.text]
    assert [w[2] for w in written] == [w[2] for w in words]
    # Exact, except that gaps of at most 1e-9 s are closed (the start joins the previous end).
    assert written == [(pytest.approx(s, abs=1e-9), e, text) for s, e, text in words]
    assert tier.intervals[0].start == 0.0 and tier.intervals[-1].end == xmax
