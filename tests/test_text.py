"""Tokenizer: vocabulary, encoding layout, byte fallback, (de)serialisation."""

import json
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motion_ddpm_jax import text
from motion_ddpm_jax.text import (
    BOS_ID,
    BYTE_OFFSET,
    EOS_ID,
    NUM_RESERVED,
    PAD_ID,
    SPELL_ID,
    UNK_ID,
    Tokenizer,
)

CAPTIONS = [
    "A person waves with the right hand.",
    "The person waves, then sits down.",
    "someone sits and waves",
    "The man claps.",
]


def test_normalisation_lowercases_applies_nfkc_and_splits_punctuation():
    assert text.split_words("Don't  WAVE,\tnow!") == ["don't", "wave", ",", "now", "!"]
    assert text.split_words("ﬁne Ｈello") == ["fine", "hello"]  # NFKC: ligature and full-width letters
    assert text.normalize("  Hello,   world. ") == "hello , world ."
    assert text.split_words("") == []


@pytest.mark.parametrize(
    "caption, words",
    [("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]), ("مَرْحَبًا بِكَ", ["مَرْحَبًا", "بِكَ"]), ("สวัสดี ครับ", ["สวัสดี", "ครับ"]),
     ("wave नमस्ते!", ["wave", "नमस्ते", "!"]), ("e\u0301t\u0327e", ["\u00e9\u0163e"]),
     ("می\u200cخواهم", ["می\u200cخواهم"]), ("क्\u200dष", ["क्\u200dष"]), ("dox\u0303't", ["dox\u0303't"])],
)  # fmt: skip
def test_combining_marks_stay_in_their_word(caption, words):
    """Version 1 split 'नमस्ते' into 'नमस ् त े' (a mark is no \\w for `re`), so scripts that write vowels
    and viramas as marks got letter-sized tokens; version 2 keeps each word whole."""
    assert text.split_words(caption) == words
    assert all(unicodedata.category(c)[0] in "LMP" or c in "\u200c\u200d" for word in words for c in word)
    tokenizer = Tokenizer.build([caption])
    assert tokenizer.version == 2 and set(tokenizer.words) == set(words)
    assert tokenizer.decode(tokenizer.encode([caption], 32)[0][0]) == " ".join(words)


def test_a_version_1_tokenizer_splits_and_saves_as_it_did():
    """Checkpoints written before version 2 keep their tokenization: the ids a model trained on."""
    old = Tokenizer.from_dict(
        {"format": text.FORMAT, "version": 1, "words": ["नमस", "wave"], "byte_fallback": True}
    )
    assert old.version == 1 and old.split("नमस्ते") == ["नमस", "्", "त", "े"]
    assert old.ids("wave नमस्ते")[:2] == [NUM_RESERVED + 1, NUM_RESERVED]
    assert old.to_dict()["version"] == 1 and Tokenizer.from_dict(old.to_dict()) == old
    assert old != Tokenizer(old.words, version=2)
    with pytest.raises(ValueError, match="version 3 is not one of"):
        Tokenizer(("wave",), version=3)


@settings(max_examples=300, deadline=None)
@given(caption=st.text(alphabet=st.characters(categories=["L", "M", "P", "Zs", "Nd", "Cf"]), max_size=30))
def test_every_word_of_either_version_is_one_word_of_its_own(caption):
    """What a tokenizer's vocabulary may hold: each piece splits back to itself (Tokenizer checks it)."""
    for version in text.VERSIONS:
        for word in text.split_words(caption, version):
            assert text.split_words(word, version) == [word]
        Tokenizer.build([caption], version=version)


def test_vocabulary_is_ordered_by_count_then_alphabetically():
    tokenizer = Tokenizer.build(["b a c", "c b", "c d"])
    assert tokenizer.words == ("c", "b", "a", "d")
    assert tokenizer.vocab_size == NUM_RESERVED + 4


def test_build_is_deterministic_and_independent_of_caption_order():
    forward = Tokenizer.build(CAPTIONS)
    backward = Tokenizer.build(list(reversed(CAPTIONS)))
    assert forward == backward
    assert forward.words == backward.words
    assert hash(forward) == hash(backward)


def test_build_respects_max_words_and_min_count():
    tokenizer = Tokenizer.build(["a a a b b c"], max_words=2)
    assert tokenizer.words == ("a", "b")
    tokenizer = Tokenizer.build(["a a a b b c"], min_count=2)
    assert tokenizer.words == ("a", "b")
    with pytest.raises(TypeError, match="not one string"):
        Tokenizer.build("a caption")


def test_encode_decode_round_trip_of_seen_words():
    tokenizer = Tokenizer.build(CAPTIONS)
    tokens, mask = tokenizer.encode(CAPTIONS, max_length=16)
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_ and tokens.shape == (4, 16)
    assert tokenizer.decode(tokens) == [text.normalize(caption) for caption in CAPTIONS]
    assert np.all(tokens[mask] != PAD_ID) and np.all(tokens[~mask] == PAD_ID)
    assert not np.any((tokens >= BYTE_OFFSET) & (tokens < NUM_RESERVED))  # no word needed spelling


def test_a_vocabulary_word_asked_to_be_spelled_takes_the_unseen_words_bytes():
    """`spell` (training's spelling of words, so that the byte fallback is trained): the chosen words come
    out exactly as an unseen word of the same letters would, the others as their ids; decoding is the same."""
    tokenizer = Tokenizer.build(CAPTIONS)
    waves = [SPELL_ID, *(BYTE_OFFSET + byte for byte in b"waves")]
    assert tokenizer.ids("the person waves", spell=[False, False, True]) == [
        tokenizer.ids("the")[0], tokenizer.ids("person")[0], *waves
    ]  # fmt: skip
    the = [SPELL_ID, *(BYTE_OFFSET + byte for byte in b"the")]
    assert tokenizer.ids("the person waves", spell=[True]) == [
        *the,
        *tokenizer.ids("person waves"),
    ]  # one entry
    tokens, mask = tokenizer.encode(["the man claps .", "someone sits"], 24, spell=[[1, 0, 1, 1], None])
    assert tokenizer.decode(tokens) == ["the man claps .", "someone sits"]
    assert (tokens[0] == SPELL_ID).sum() == 3 and (tokens[1] == SPELL_ID).sum() == 0
    np.testing.assert_array_equal(mask, tokens != PAD_ID)
    with pytest.raises(ValueError, match="one entry per text"):
        tokenizer.encode(["a", "b"], 8, spell=[None])
    with pytest.raises(ValueError, match="byte_fallback=True"):
        Tokenizer(tokenizer.words, byte_fallback=False).ids("the person", spell=[True])


def test_unseen_word_is_spelled_in_bytes_and_decodes_back():
    tokenizer = Tokenizer.build(CAPTIONS)
    tokens, _ = tokenizer.encode(["the person juggles", "naïve"], max_length=16)
    juggles = [SPELL_ID, *(BYTE_OFFSET + byte for byte in b"juggles")]
    assert tokens[0, :12].tolist() == [
        BOS_ID,
        tokenizer.ids("the")[0],
        tokenizer.ids("person")[0],
        *juggles,
        EOS_ID,
    ]
    assert tokenizer.decode(tokens[0]) == "the person juggles"
    assert tokenizer.decode(tokens[1]) == "naïve"  # multi-byte UTF-8


def test_unseen_words_in_a_row_stay_apart_and_differ():
    tokenizer = Tokenizer.build(CAPTIONS)
    assert tokenizer.decode(tokenizer.encode(["jump hop"], 32)[0][0]) == "jump hop"
    assert tokenizer.ids("jump") != tokenizer.ids("hop")


def test_without_byte_fallback_unseen_words_are_unk():
    tokenizer = Tokenizer.build(CAPTIONS, byte_fallback=False)
    assert tokenizer.ids("the juggler") == [tokenizer.ids("the")[0], UNK_ID]
    assert tokenizer.decode(tokenizer.encode(["the juggler"], 8)[0][0]) == "the <unk>"


def test_empty_caption_is_bos_eos():
    tokenizer = Tokenizer.build(CAPTIONS)
    tokens, mask = tokenizer.encode(["", "   "], max_length=5)
    assert tokens.tolist() == [[BOS_ID, EOS_ID, PAD_ID, PAD_ID, PAD_ID]] * 2
    assert mask.tolist() == [[True, True, False, False, False]] * 2
    assert tokenizer.decode(tokens[0]) == ""


def test_truncation_keeps_eos_at_the_end():
    tokenizer = Tokenizer.build(CAPTIONS)
    tokens, mask = tokenizer.encode(["the person waves with the right hand"], max_length=4)
    assert tokens[0].tolist() == [BOS_ID, *tokenizer.ids("the person"), EOS_ID]
    assert mask.all()
    assert tokenizer.decode(tokens[0]) == "the person"
    with pytest.raises(ValueError, match="at least 2"):
        tokenizer.encode(["x"], max_length=1)


def test_encode_rejects_a_bare_string_and_decode_rejects_foreign_ids():
    tokenizer = Tokenizer.build(CAPTIONS)
    with pytest.raises(TypeError, match="wrap a single text"):
        tokenizer.encode("the person", 8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([BOS_ID, tokenizer.vocab_size])


def test_decode_stops_at_eos_and_survives_cut_spellings():
    tokenizer = Tokenizer.build(CAPTIONS)
    the = tokenizer.ids("the")[0]
    assert tokenizer.decode([BOS_ID, the, EOS_ID, the, PAD_ID]) == "the"
    cut = [BOS_ID, SPELL_ID, BYTE_OFFSET + 0xC3, EOS_ID]  # the first byte of a two-byte character
    assert tokenizer.decode(cut) == "\ufffd"
    assert tokenizer.encode(["x"], 2)[0].tolist() == [[BOS_ID, EOS_ID]]
    assert tokenizer.decode(np.zeros((0,), np.int32)) == ""


def test_control_characters_and_lone_surrogates_are_spelled_and_come_back():
    tokenizer = Tokenizer.build(CAPTIONS)
    odd = "wave \x00 \ud800 ok"
    tokens, _ = tokenizer.encode([odd], 32)
    assert tokenizer.decode(tokens[0]) == text.normalize(odd) == "wave \x00 \ud800 ok"


def test_dict_round_trip_and_equality_by_content():
    tokenizer = Tokenizer.build(CAPTIONS)
    d = json.loads(json.dumps(tokenizer.to_dict()))
    assert Tokenizer.from_dict(d) == tokenizer
    assert Tokenizer.build(CAPTIONS[:2]) != tokenizer
    assert Tokenizer(tokenizer.words, byte_fallback=False) != tokenizer


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("words"), r"missing key\(s\) \['words'\]"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(words="abc"), "'words' must be a list"),
        (lambda d: d.update(words=["a", "a"]), "appears twice"),
        (lambda d: d.update(words=["Two Words"]), "not one normalised word"),
        (lambda d: d.update(byte_fallback="yes"), "'byte_fallback' must be true or false"),
    ],
)
def test_from_dict_names_what_is_wrong_and_the_source(change, message):
    d = Tokenizer.build(CAPTIONS).to_dict()
    change(d)
    with pytest.raises(ValueError, match=message) as info:
        Tokenizer.from_dict(d, source="ckpt/tokenizer.json")
    assert str(info.value).startswith("ckpt/tokenizer.json: ")
    with pytest.raises(ValueError, match="expected a mapping"):
        Tokenizer.from_dict(["not", "a", "dict"])


def test_save_load_round_trip_and_overwrite_protection(tmp_path):
    tokenizer = Tokenizer.build([*CAPTIONS, "naïve café"])
    path = tokenizer.save(tmp_path / "sub" / "tokenizer.json")
    assert Tokenizer.load(path) == tokenizer
    before = path.stat().st_mtime_ns
    assert tokenizer.save(path) == path  # identical content: a no-op
    assert path.stat().st_mtime_ns == before

    other = Tokenizer.build(CAPTIONS[:1])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        other.save(path)
    assert Tokenizer.load(path) == tokenizer
    other.save(path, overwrite=True)
    assert Tokenizer.load(path) == other

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(FileExistsError):
        tokenizer.save(garbage)
    with pytest.raises(ValueError, match="garbage.json: not a valid JSON"):
        Tokenizer.load(garbage)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=40), max_size=6), max_length=st.integers(2, 24))
def test_encode_never_fails_and_keeps_its_invariants(texts, max_length):
    tokenizer = Tokenizer.build(CAPTIONS)
    tokens, mask = tokenizer.encode(texts, max_length)
    assert tokens.shape == mask.shape == (len(texts), max_length)
    assert np.all((tokens >= 0) & (tokens < tokenizer.vocab_size))
    np.testing.assert_array_equal(mask, tokens != PAD_ID)
    lengths = mask.sum(1)
    assert np.all(mask == (np.arange(max_length) < lengths[:, None]))  # real tokens first, then padding
    assert np.all(tokens[:, 0] == BOS_ID) and np.all(tokens[np.arange(len(texts)), lengths - 1] == EOS_ID)
    for row, original in zip(tokens, texts, strict=True):
        if len(tokenizer.ids(original)) <= max_length - 2:
            assert tokenizer.decode(row) == text.normalize(original)


def test_training_says_how_many_captions_the_text_length_cuts():
    """train.cut_captions_note counts the captions whose tokens (a known word one, an unseen word spelled:
    one marker and one per UTF-8 byte) exceed model.text_max_length less bos and eos: counted by hand."""
    from motion_ddpm_jax import train

    tokenizer = Tokenizer.build(["a b c d e"])
    assert train.cut_captions_note(["a b c", "e d"], tokenizer, 5) is None  # 3 and 2 tokens: room 3
    # "a b c d e": 5 tokens; "a b zz": 2 + (1 + 2) = 5; "a b c": 3
    note = train.cut_captions_note(["a b c", "a b c d e", "a b zz"], tokenizer, 5)
    assert note.startswith("2 of the 3 training captions take more than the 3 tokens")
    assert "model.text_max_length=5" in note and "(e.g. 'a b c d e')" in note
    assert note.endswith("raise --config.model.text_max_length to train on them whole")
    tuned = train.cut_captions_note(["a b zz"], tokenizer, 5, fine_tuning=True)
    assert tuned.endswith(
        "is the source run's (train.init_from), and each word its vocabulary lacks takes 1 + its UTF-8 bytes"
    )
