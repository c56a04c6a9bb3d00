"""Deterministic host batches of (motion window, caption) pairs, sharded over processes and devices.

The global batch at step k holds the examples at positions k*B .. k*B+B-1 of an endless sequence of
epochs; epoch e is a permutation of the clips drawn from (seed, e), so every clip is seen once per epoch.
Process p of P takes the contiguous slice [p*b, (p+1)*b) of it (b = B/P). Each example's window start and
caption come from uniforms drawn for the whole global batch from (seed, step), so slot j's randomness
depends only on (seed, step, j): a batch is a pure function of (seed, step, process index, process count),
the processes together see exactly the batch a single process would, and a resumed run, or calls in any
order, reproduce it. (NumPy does not promise identical Generator streams across its versions.)

Everything heavy happens once at construction: the clips are standardized into one float32 array with a
zero row at its end, and all captions are tokenized into one [num_captions, L] array, so a batch is a few
vectorised gathers.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np

from motion_ddpm_jax.text import Tokenizer

if TYPE_CHECKING:
    from motion_ddpm_jax.data.motion_text import Split

_PERMUTATION_STREAM = 0  # SeedSequence([seed, stream, epoch or step]): independent streams per purpose
_EXAMPLE_STREAM = 1
_SPELL_STREAM = 2


def _check_stats(mean: np.ndarray, std: np.ndarray, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    if mean.shape != (num_features,) or std.shape != (num_features,):
        raise ValueError(
            f"mean and std must have shape ({num_features},) to match the motion features, "
            f"got {mean.shape} and {std.shape}"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        bad = np.nonzero(~(np.isfinite(mean) & np.isfinite(std) & (std > 0)))[0]
        raise ValueError(
            f"mean must be finite and std finite and positive; feature {int(bad[0])} has "
            f"mean {mean[bad[0]]} and std {std[bad[0]]}"
        )
    return mean, std


def standardize(motion: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 (motion - mean) / std; motion [..., D], mean and std [D]."""
    motion = np.asarray(motion, dtype=np.float32)
    mean, std = _check_stats(mean, std, motion.shape[-1])
    return (motion - mean) / std


def destandardize(motion: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 motion * std + mean; motion [..., D] standardized, mean and std [D]."""
    motion = np.asarray(motion, dtype=np.float32)
    mean, std = _check_stats(mean, std, motion.shape[-1])
    return motion * std + mean


class BatchSource:
    """Batches of one split for one process: `batch(step)` is a dict of numpy arrays (b = local batch):

        motion f32[b, T, D]  standardized window, zero past its length (T = max_motion_length)
        mask bool[b, T]      True exactly on the window's frames
        length i32[b]        frames in the window: min(clip length, T)
        tokens i32[b, L]     one caption of the clip, drawn uniformly (L = max_text_length)
        text_mask bool[b, L] True on bos..eos
        clip_index i32[b]    index of the clip in `split`

    A clip longer than T gives a window with a uniformly random start; a shorter one is taken whole.
    Clips with fewer than `min_motion_length` frames are left out. With `spell_prob` > 0 each word of a
    drawn caption is, with that probability, given spelled in bytes (`Tokenizer.ids`'s spell) rather than
    as its vocabulary id: an unseen word at sampling is spelled so, and without this the byte ids would
    never reach a training batch and their embeddings would stay as initialised.
    """

    def __init__(
        self,
        split: Split,
        mean: np.ndarray,
        std: np.ndarray,
        tokenizer: Tokenizer,
        global_batch_size: int,
        max_motion_length: int,
        max_text_length: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        min_motion_length: int = 1,
        spell_prob: float = 0.0,
    ):
        if global_batch_size < 1 or process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"need global_batch_size >= 1 and 0 <= process_index < process_count, got "
                f"{global_batch_size}, {process_index}, {process_count}"
            )
        if global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size {global_batch_size} is not divisible by process_count {process_count}; "
                f"use a multiple of {process_count}"
            )
        if max_motion_length < 1 or min_motion_length < 1:
            raise ValueError(
                f"need max_motion_length >= 1 and min_motion_length >= 1, got {max_motion_length} "
                f"and {min_motion_length}"
            )
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 <= spell_prob <= 1.0 or (spell_prob > 0 and not tokenizer.byte_fallback):
            raise ValueError(
                f"spell_prob (data.spell_prob) must be in [0, 1], and 0 for a tokenizer without byte "
                f"fallback; got {spell_prob!r}"
            )
        name = getattr(split, "name", "split")
        if not len(split.ids) == len(split.motions) == len(split.captions):
            raise ValueError(
                f"{name}: {len(split.ids)} ids, {len(split.motions)} motions and {len(split.captions)} "
                "caption groups; expected one of each per clip"
            )

        kept: list[int] = []
        for i, (clip_id, motion, captions) in enumerate(
            zip(split.ids, split.motions, split.captions, strict=True)
        ):
            if np.ndim(motion) != 2:
                raise ValueError(f"{name}: clip {clip_id!r} has shape {np.shape(motion)}, expected [T, D]")
            if isinstance(captions, str) or len(captions) == 0:
                raise ValueError(
                    f"{name}: clip {clip_id!r} needs a tuple of one or more captions, got {captions!r:.100}"
                )
            if len(motion) >= min_motion_length:
                kept.append(i)
        if not kept:
            raise ValueError(
                f"{name}: none of its {len(split.ids)} clips has at least min_motion_length="
                f"{min_motion_length} frames"
            )
        num_features = np.shape(split.motions[kept[0]])[1]
        mean, std = _check_stats(mean, std, num_features)

        lengths = np.array([len(split.motions[i]) for i in kept], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        frames = np.zeros((int(lengths.sum()) + 1, num_features), dtype=np.float32)  # last row: padding
        for i, offset, length in zip(kept, offsets.tolist(), lengths.tolist(), strict=True):
            motion = split.motions[i]
            if np.shape(motion)[1] != num_features:
                raise ValueError(
                    f"{name}: clip {split.ids[i]!r} has {np.shape(motion)[1]} features, "
                    f"the others {num_features}"
                )
            frames[offset : offset + length] = standardize(motion, mean, std)
            if not np.all(np.isfinite(frames[offset : offset + length])):
                raise ValueError(f"{name}: clip {split.ids[i]!r} has non-finite values")

        caption_groups = [tuple(split.captions[i]) for i in kept]
        caption_counts = np.array([len(group) for group in caption_groups], dtype=np.int64)
        captions = [c for group in caption_groups for c in group]
        tokens, text_mask = tokenizer.encode(captions, max_text_length)

        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = self.global_batch_size // process_count
        self.max_motion_length = int(max_motion_length)
        self.seed = int(seed)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.clip_indices = np.asarray(kept, dtype=np.int32)  # kept clip k is split clip clip_indices[k]
        self.clip_indices.flags.writeable = False
        self._lengths = lengths
        self._offsets = offsets
        self._frames = frames
        self._caption_offsets = np.concatenate([[0], np.cumsum(caption_counts)[:-1]]).astype(np.int64)
        self._caption_counts = caption_counts
        self._tokens = tokens
        self._text_mask = text_mask
        self.spell_prob = float(spell_prob)
        self._tokenizer, self._captions = tokenizer, captions
        self._caption_words = np.array([len(tokenizer.split(c)) for c in captions], dtype=np.int64)
        self._permutation = functools.lru_cache(maxsize=4)(self._draw_permutation)

    @property
    def num_clips(self) -> int:
        return len(self.clip_indices)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.num_clips // self.global_batch_size)

    def _draw_permutation(self, epoch: int) -> np.ndarray:
        permutation = np.random.default_rng([self.seed, _PERMUTATION_STREAM, epoch]).permutation(
            self.num_clips
        )
        permutation.flags.writeable = False
        return permutation

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's share of the global batch at `step` (see the class docstring)."""
        if int(step) != step or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        step = int(step)
        b, first = self.local_batch_size, self.process_index * self.local_batch_size
        positions = step * self.global_batch_size + first + np.arange(b, dtype=np.int64)
        epochs, within = np.divmod(positions, self.num_clips)
        clips = np.empty(b, dtype=np.int64)
        for epoch in np.unique(epochs).tolist():
            selected = epochs == epoch
            clips[selected] = self._permutation(epoch)[within[selected]]

        uniforms = np.random.default_rng([self.seed, _EXAMPLE_STREAM, step]).random(
            (self.global_batch_size, 2)
        )
        window_u, caption_u = uniforms[first : first + b].T

        lengths = self._lengths[clips]
        length = np.minimum(lengths, self.max_motion_length)
        choices = lengths - length + 1  # possible window starts
        start = np.minimum((window_u * choices).astype(np.int64), choices - 1)
        frame = np.arange(self.max_motion_length)
        mask = frame < length[:, None]
        rows = np.where(mask, (self._offsets[clips] + start)[:, None] + frame, len(self._frames) - 1)

        counts = self._caption_counts[clips]
        caption = self._caption_offsets[clips] + np.minimum((caption_u * counts).astype(np.int64), counts - 1)
        tokens, text_mask = self._tokens[caption], self._text_mask[caption]  # copies
        if self.spell_prob > 0:
            self._spell_some_words(step, first, caption, tokens, text_mask)
        return {
            "motion": np.take(self._frames, rows, axis=0),
            "mask": mask,
            "length": length.astype(np.int32),
            "tokens": tokens,
            "text_mask": text_mask,
            "clip_index": self.clip_indices[clips],
        }

    def _spell_some_words(self, step: int, first: int, caption, tokens, text_mask) -> None:
        """Re-encode in place the rows whose caption has words drawn for spelling: word w of global slot j
        is spelled where uniform [j, w] of (seed, step) is below spell_prob (words past the token length,
        which truncation drops anyway, draw nothing). A caption that fits in vocabulary ids but would not
        once spelled keeps its ids: spelled, it would lose its last words and end inside a word's bytes,
        a cut that `cut_captions_note`, which counts vocabulary ids, never reports."""
        width = tokens.shape[1]
        draws = np.random.default_rng([self.seed, _SPELL_STREAM, step]).random(
            (self.global_batch_size, width)
        )
        words = np.arange(width) < self._caption_words[caption][:, None]
        spelled = (draws[first : first + len(caption)] < self.spell_prob) & words
        for row in np.nonzero(spelled.any(axis=1))[0].tolist():
            text = self._captions[caption[row]]
            room = width - 2  # besides bos and eos
            if len(self._tokenizer.ids(text, spelled[row])) > room >= len(self._tokenizer.ids(text)):
                continue
            row_tokens, row_mask = self._tokenizer.encode([text], width, [spelled[row]])
            tokens[row], text_mask[row] = row_tokens[0], row_mask[0]

    def iterate(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """batch(start_step), batch(start_step + 1), ... without end."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1


class _HasBatch(Protocol):
    def batch(self, step: int) -> dict[str, np.ndarray]: ...


class Prefetcher:
    """Iterator over source.batch(start_step), source.batch(start_step + 1), ..., computed up to `depth`
    batches ahead on a daemon thread. An error in `batch` is raised by `next`. Call `close()` (or use it as
    a context manager) to stop the thread."""

    def __init__(self, source: _HasBatch, start_step: int = 0, depth: int = 2):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(source, start_step), daemon=True)
        self._thread.start()

    def _work(self, source: _HasBatch, step: int) -> None:
        while not self._stop.is_set():
            try:
                item = (source.batch(step), None)
            except Exception as error:  # handed to the consumer
                item = (None, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if item[1] is not None:
                return
            step += 1

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._stop.is_set():
            raise StopIteration
        batch, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def prefetch(source: _HasBatch, start_step: int = 0, depth: int = 2) -> Prefetcher:
    """`source.iterate(start_step)` computed `depth` batches ahead on a background thread."""
    return Prefetcher(source, start_step, depth)


def shard_for_devices(batch: Mapping[str, np.ndarray], n_devices: int) -> dict[str, np.ndarray]:
    """Reshape every array [b, ...] to [n_devices, b / n_devices, ...] for pmap."""
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    sharded = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] % n_devices:
            raise ValueError(
                f"batch[{key!r}] has shape {value.shape}; its leading axis must be divisible by "
                f"n_devices={n_devices}"
            )
        sharded[key] = value.reshape(n_devices, value.shape[0] // n_devices, *value.shape[1:])
    return sharded
