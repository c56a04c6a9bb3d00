"""Word-level caption tokenizer with a byte fallback: offline, deterministic, saved with data and checkpoints.

Normalisation: Unicode NFKC, lowercase, then split into words (`\\w+`, with inner apostrophes kept:
"don't") and single punctuation/symbol characters; whitespace only separates. Combining marks (Unicode
category M: a Devanagari vowel sign or virama, an Arabic harakat) and zero-width (non-)joiners are part
of words, so 'नमस्ते' and Persian 'می‌خواهم' are one word each (version 2; version 1, which split words
at their marks into 'नमस ् त े', is kept for the tokenizers saved with it). `normalize(text)` is the
words joined by single spaces, and `decode(encode(text))` gives exactly that when nothing was truncated.

Token ids (fixed by `FORMAT_VERSION`):
    0 pad, 1 bos, 2 eos, 3 unk, 4 spell, 5..260 the bytes 0x00..0xff, 261.. the vocabulary words
    (most frequent first; equal counts in alphabetical order, so the vocabulary does not depend on the
    order of the captions).
An unseen word is spelled as `spell, b_1, ..., b_n`: the marker starts a word and its UTF-8 bytes follow,
so the model sees a word boundary, two unseen words in a row stay apart, similar spellings get similar
inputs, and the exact word comes back from `decode`. `unk` stands for an unseen word only in a tokenizer
built with `byte_fallback=False`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motion_ddpm_jax.files import save_json_once

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3
SPELL_ID = 4
BYTE_OFFSET = 5
NUM_RESERVED = BYTE_OFFSET + 256  # the first word id
FORMAT = "motion_ddpm_jax.text.Tokenizer"
FORMAT_VERSION = 2  # of new tokenizers; `load` / `from_dict` read VERSIONS
VERSIONS = (1, 2)  # 1: words split at combining marks (split_words)
_REQUIRED_KEYS = ("format", "version", "words", "byte_fallback")
_SPECIAL_NAMES = {PAD_ID: "<pad>", BOS_ID: "<bos>", EOS_ID: "<eos>", UNK_ID: "<unk>"}
_WORD_PATTERN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


@functools.cache
def _word_pattern_v2() -> re.Pattern:
    """Version 2's words: runs of word characters (\\w), combining marks (Unicode category M, which `re`
    does not count as \\w) and the zero-width (non-)joiners that Persian and Indic words hold, with inner
    apostrophes; else single punctuation/symbol characters. Built once (every mark of Unicode: ~10 ms)."""
    marks = [c for c in (*range(0x20000), *range(0xE0000, 0xE1000)) if unicodedata.category(chr(c))[0] == "M"]
    runs: list[list[int]] = []
    for code in [*marks, 0x200C, 0x200D]:
        if runs and code == runs[-1][1] + 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    inside = "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in runs)
    word = rf"[\w{inside}]"
    return re.compile(rf"{word}+(?:'{word}+)*|[^\w\s]")


def split_words(text: str, version: int = FORMAT_VERSION) -> list[str]:
    """The normalised words and punctuation marks of `text`, in order, as tokenizer `version` splits."""
    normalized = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).lower())
    if version == 1:
        return _WORD_PATTERN.findall(normalized)
    if version not in VERSIONS:
        raise ValueError(f"tokenizer version {version!r} is not one of {VERSIONS}")
    return _word_pattern_v2().findall(normalized)


def normalize(text: str, version: int = FORMAT_VERSION) -> str:
    """`text` as the tokenizer sees it: its words and punctuation marks joined by single spaces."""
    return " ".join(split_words(text, version))


def _utf8(word: str) -> bytes:
    return word.encode("utf-8", errors="surrogatepass")  # a lone surrogate is spelled, never an error


def _from_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:  # bytes cut by truncation or invented by a model
        return data.decode("utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Vocabulary words (id = NUM_RESERVED + position) and whether unseen words are spelled in bytes.

    Equal and hashable by content; build one with `Tokenizer.build`.
    """

    words: tuple[str, ...]
    byte_fallback: bool = True
    version: int = FORMAT_VERSION  # how text is split into words (split_words)
    _ids: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.words, str) or not all(isinstance(word, str) for word in self.words):
            raise ValueError(f"words must be a sequence of strings, got {self.words!r:.200}")
        if self.version not in VERSIONS or isinstance(self.version, bool):
            raise ValueError(f"tokenizer version {self.version!r} is not one of {VERSIONS}")
        words = tuple(self.words)
        ids: dict[str, int] = {}
        for position, word in enumerate(words):
            if self.split(word) != [word]:
                raise ValueError(f"vocabulary entry {position} ({word!r}) is not one normalised word")
            if word in ids:
                raise ValueError(
                    f"vocabulary entry {word!r} appears twice (positions {ids[word]} and {position})"
                )
            ids[word] = position
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "byte_fallback", bool(self.byte_fallback))
        object.__setattr__(self, "_ids", {word: NUM_RESERVED + p for word, p in ids.items()})

    def split(self, text: str) -> list[str]:
        """The words of `text` as this tokenizer splits them (`split_words` of its version)."""
        return split_words(text, self.version)

    @classmethod
    def build(
        cls,
        captions: Iterable[str],
        max_words: int = 8000,
        min_count: int = 1,
        byte_fallback: bool = True,
        version: int = FORMAT_VERSION,
    ) -> Tokenizer:
        """The `max_words` most frequent words seen at least `min_count` times in `captions`."""
        if isinstance(captions, str):
            raise TypeError("captions must be an iterable of strings, not one string")
        if max_words < 0 or min_count < 1:
            raise ValueError(f"need max_words >= 0 and min_count >= 1, got {max_words} and {min_count}")
        counts = collections.Counter(word for caption in captions for word in split_words(caption, version))
        ranked = sorted(
            (word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(tuple(ranked[:max_words]), byte_fallback, version)

    @property
    def vocab_size(self) -> int:
        return NUM_RESERVED + len(self.words)

    def ids(self, text: str, spell: Sequence[bool] | np.ndarray | None = None) -> list[int]:
        """The ids of `text` without bos/eos, padding or truncation.

        spell: per word of `self.split(text)` (missing entries: False), True to spell that word in bytes
        even where the vocabulary has it: training shows the model spelled words this way, so that the
        byte fallback an unseen word takes at sampling is trained (`BatchSource`'s spell_prob).
        """
        words = self.split(text)
        forced = np.zeros(len(words), bool) if spell is None else np.asarray(spell, bool)[: len(words)]
        if forced.any() and not self.byte_fallback:
            raise ValueError("spelling words in bytes needs a tokenizer with byte_fallback=True")
        out: list[int] = []
        for position, word in enumerate(words):
            word_id = None if position < len(forced) and forced[position] else self._ids.get(word)
            if word_id is not None:
                out.append(word_id)
            elif self.byte_fallback:
                out.append(SPELL_ID)
                out.extend(BYTE_OFFSET + byte for byte in _utf8(word))
            else:
                out.append(UNK_ID)
        return out

    def unseen_words(self, text: str) -> list[str]:
        """The words of `text` that the vocabulary lacks (spelled in bytes, or unk), each once, in order."""
        return list(dict.fromkeys(word for word in self.split(text) if word not in self._ids))

    def overlong(self, texts: Sequence[str], max_length: int) -> list[tuple[int, int]]:
        """(index, token count) of each text whose ids do not all fit `max_length` beside bos and eos:
        `encode` keeps its first max_length - 2 (the notes of training, sampling and progress pictures)."""
        counts = ((index, len(self.ids(text))) for index, text in enumerate(texts))
        return [(index, count) for index, count in counts if count > max_length - 2]

    def encode(
        self, texts: Sequence[str], max_length: int, spell: Sequence[Sequence[bool] | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """tokens int32 [N, max_length] and mask bool [N, max_length] (True on bos..eos).

        Each row is bos, ids, eos, then pad. A long text loses its last ids and keeps its eos; "" gives
        bos, eos (the unconditional input of classifier-free guidance). `spell`: per text, `ids`'s.
        """
        if spell is not None and len(spell) != len(texts):
            raise ValueError(f"spell must hold one entry per text ({len(texts)}), got {len(spell)}")
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings; wrap a single text as [text]")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (room for bos and eos), got {max_length}")
        tokens = np.full((len(texts), max_length), PAD_ID, dtype=np.int32)
        for row, text in enumerate(texts):
            body = self.ids(text, None if spell is None else spell[row])[: max_length - 2]
            tokens[row, : len(body) + 2] = [BOS_ID, *body, EOS_ID]
        return tokens, tokens != PAD_ID

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str | list[str]:
        """Ids [L] -> the normalised text (up to the first eos; pad and bos skipped); [N, L] -> N texts."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 2:
            return [self.decode(row) for row in tokens]
        if tokens.ndim != 1 or not (tokens.size == 0 or np.issubdtype(tokens.dtype, np.integer)):
            raise ValueError(f"decode takes integer ids [L] or [N, L], got {tokens.dtype} {tokens.shape}")
        bad = tokens[(tokens < 0) | (tokens >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"id {int(bad[0])} is outside the vocabulary [0, {self.vocab_size})")
        pieces: list[str] = []
        spelled: bytearray | None = None
        for token in tokens.tolist():
            if BYTE_OFFSET <= token < NUM_RESERVED:
                if spelled is None:
                    spelled = bytearray()
                spelled.append(token - BYTE_OFFSET)
                continue
            if spelled is not None:
                pieces.append(_from_utf8(bytes(spelled)))
                spelled = None
            if token == EOS_ID:
                break
            if token == SPELL_ID:
                spelled = bytearray()
            elif token == UNK_ID:
                pieces.append(_SPECIAL_NAMES[UNK_ID])
            elif token >= NUM_RESERVED:
                pieces.append(self.words[token - NUM_RESERVED])
        if spelled is not None:
            pieces.append(_from_utf8(bytes(spelled)))
        return " ".join(piece for piece in pieces if piece)

    # ------------------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "words": list(self.words),
            "byte_fallback": self.byte_fallback,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "tokenizer dict") -> Tokenizer:
        """Inverse of `to_dict`; `source` (e.g. a file path) prefixes every error message."""
        if not isinstance(d, Mapping):
            raise ValueError(
                f"{source}: expected a mapping with keys {', '.join(_REQUIRED_KEYS)}, got {type(d)}"
            )
        missing = [key for key in _REQUIRED_KEYS if key not in d]
        if missing:
            raise ValueError(
                f"{source}: missing key(s) {missing}; a tokenizer dict has {list(_REQUIRED_KEYS)}"
            )
        if d["format"] != FORMAT or d["version"] not in VERSIONS or isinstance(d["version"], bool):
            raise ValueError(
                f"{source}: format {d['format']!r} version {d['version']!r} is not {FORMAT!r} "
                f"version {' or '.join(map(str, VERSIONS))} (a newer motion_ddpm_jax wrote it?)"
            )
        words = d["words"]
        if isinstance(words, str) or not isinstance(words, Sequence):
            raise ValueError(f"{source}: 'words' must be a list of strings")
        if not isinstance(d["byte_fallback"], bool):
            raise ValueError(f"{source}: 'byte_fallback' must be true or false, got {d['byte_fallback']!r}")
        try:
            return cls(tuple(words), d["byte_fallback"], d["version"])
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write `to_dict()` as JSON. An existing file holding an equal tokenizer is left as is; one holding
        anything else raises FileExistsError unless `overwrite`. Returns the path."""
        same = lambda p: Tokenizer.load(p) == self  # noqa: E731
        return save_json_once(path, self.to_dict(), same, "tokenizer", overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a valid JSON tokenizer file ({error})") from None
        return cls.from_dict(d, source=str(path))
