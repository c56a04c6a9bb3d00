"""Input pipeline: standardization, windows, masks, captions, determinism, sharding over processes/devices."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from motion_ddpm_jax import text
from motion_ddpm_jax.data import pipeline
from motion_ddpm_jax.data.motion_text import Split
from motion_ddpm_jax.data.pipeline import BatchSource
from motion_ddpm_jax.text import Tokenizer

D = 6
KEYS = ("motion", "mask", "length", "tokens", "text_mask", "clip_index")


def make_split(lengths, num_features=D, seed=0, captions_per_clip=None) -> Split:
    rng = np.random.default_rng(seed)
    motions = tuple((rng.standard_normal((n, num_features)) * 3 + 5).astype(np.float32) for n in lengths)
    counts = captions_per_clip or [1 + i % 3 for i in range(len(lengths))]
    captions = tuple(tuple(f"clip {i} caption {j}" for j in range(k)) for i, k in enumerate(counts))
    ids = tuple(f"clip{i:03d}" for i in range(len(lengths)))
    return Split("train", ids, motions, captions)


def stats(split: Split) -> tuple[np.ndarray, np.ndarray]:
    frames = np.concatenate(split.motions)
    return frames.mean(0).astype(np.float32), np.maximum(frames.std(0), 0.1).astype(np.float32)


def make_source(split: Split, **overrides) -> BatchSource:
    mean, std = stats(split)
    tokenizer = Tokenizer.build(c for group in split.captions for c in group)
    options = dict(global_batch_size=8, max_motion_length=20, max_text_length=12, seed=3)
    return BatchSource(split, mean, std, tokenizer, **(options | overrides))


LENGTHS = [5, 12, 20, 21, 33, 50, 7, 19, 40, 64, 1, 25, 30, 18, 22, 9, 100]


def assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_standardize_and_destandardize_are_float32_inverses():
    rng = np.random.default_rng(0)
    motion = rng.standard_normal((4, 10, D))
    mean, std = rng.standard_normal(D), rng.uniform(0.5, 2, D)
    z = pipeline.standardize(motion, mean, std)
    assert z.dtype == np.float32
    reference = (motion.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)
    np.testing.assert_array_equal(z, reference)
    back = pipeline.destandardize(z, mean, std)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, motion, rtol=1e-5, atol=1e-5)


def test_standardize_rejects_bad_statistics():
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        pipeline.standardize(np.zeros((3, D)), np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="feature 2 has mean 0.0 and std 0.0"):
        pipeline.standardize(np.zeros((3, D)), np.zeros(D), np.array([1, 1, 0, 1, 1, 1]))


def test_batch_has_the_documented_shapes_and_dtypes():
    source = make_source(make_split(LENGTHS))
    batch = source.batch(0)
    expected = {
        "motion": (np.float32, (8, 20, D)),
        "mask": (np.bool_, (8, 20)),
        "length": (np.int32, (8,)),
        "tokens": (np.int32, (8, 12)),
        "text_mask": (np.bool_, (8, 12)),
        "clip_index": (np.int32, (8,)),
    }
    assert {key: (value.dtype, value.shape) for key, value in batch.items()} == expected
    assert source.steps_per_epoch == len(LENGTHS) // 8


def test_same_seed_and_step_give_identical_batches_in_any_order():
    split = make_split(LENGTHS)
    first, second = make_source(split), make_source(split)
    forward = [first.batch(step) for step in range(6)]
    for step in [5, 2, 0, 4, 1, 3, 2]:
        assert_batches_equal(second.batch(step), forward[step])


def test_different_steps_and_seeds_differ():
    split = make_split(LENGTHS)
    source = make_source(split)
    assert not np.array_equal(source.batch(0)["motion"], source.batch(1)["motion"])
    other = make_source(split, seed=4)
    assert not np.array_equal(source.batch(0)["clip_index"], other.batch(0)["clip_index"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_split_the_global_batch_without_overlap(process_count):
    split = make_split(LENGTHS)
    single = make_source(split)
    for step in range(5):
        whole = single.batch(step)
        parts = [
            make_source(split, process_index=p, process_count=process_count).batch(step)
            for p in range(process_count)
        ]
        joined = {key: np.concatenate([part[key] for part in parts]) for key in KEYS}
        assert_batches_equal(joined, whole)  # same clips in the same order, and the same windows and captions
        assert all(len(part["clip_index"]) == 8 // process_count for part in parts)
    # Within one epoch (steps 0 and 1 of 17 clips) no clip is in two processes' shares.
    for step in (0, 1):
        shares = [
            set(
                make_source(split, process_index=p, process_count=process_count)
                .batch(step)["clip_index"]
                .tolist()
            )
            for p in range(process_count)
        ]
        assert sum(map(len, shares)) == len(set.union(*shares)) == 8


def test_each_epoch_shows_every_clip_exactly_once():
    split = make_split(LENGTHS[:16])
    source = make_source(split, global_batch_size=4)
    assert source.steps_per_epoch == 4
    epochs = [np.concatenate([source.batch(e * 4 + s)["clip_index"] for s in range(4)]) for e in range(3)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(16))
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh permutation per epoch


def test_epochs_run_on_across_batches_when_clips_do_not_divide():
    split = make_split(LENGTHS)  # 17 clips, batch 8: a batch straddles two epochs
    source = make_source(split)
    seen = np.concatenate([source.batch(step)["clip_index"] for step in range(17)])  # 136 = 8 epochs
    for epoch in range(8):
        assert sorted(seen[epoch * 17 : (epoch + 1) * 17].tolist()) == list(range(17))


def test_mask_length_and_padding_agree():
    source = make_source(make_split(LENGTHS))
    for step in range(4):
        batch = source.batch(step)
        lengths = np.array([len(make_split(LENGTHS).motions[c]) for c in batch["clip_index"]])
        np.testing.assert_array_equal(batch["length"], np.minimum(lengths, 20))
        np.testing.assert_array_equal(batch["mask"].sum(1), batch["length"])
        np.testing.assert_array_equal(batch["mask"], np.arange(20) < batch["length"][:, None])
        assert np.all(batch["motion"][~batch["mask"]] == 0)


def test_window_is_a_contiguous_standardized_slice_of_its_clip():
    split = make_split(LENGTHS)
    mean, std = stats(split)
    source = make_source(split)
    starts = set()
    for step in range(20):
        batch = source.batch(step)
        for motion, n, clip in zip(batch["motion"], batch["length"], batch["clip_index"], strict=True):
            reference = (split.motions[clip] - mean) / std  # numpy reference of the whole clip
            matches = [
                s for s in range(len(reference) - n + 1) if np.array_equal(reference[s : s + n], motion[:n])
            ]
            assert matches, f"window of clip {clip} is not a slice of it"
            if len(reference) == 100:
                starts.add(matches[0])
    assert len(starts) > 3  # long clips get varying starts


def test_window_starts_cover_the_clip_uniformly():
    split = make_split([40, 40, 40, 40])  # 21 possible starts per clip for T = 20
    mean, std = stats(split)
    source = make_source(split, global_batch_size=4)
    starts = []
    for step in range(600):
        batch = source.batch(step)
        for motion, clip in zip(batch["motion"], batch["clip_index"], strict=True):
            first = (split.motions[clip] - mean) / std
            starts.append(int(np.nonzero(np.all(first == motion[0], axis=1))[0][0]))
    counts = np.bincount(starts, minlength=21)
    assert counts.size == 21 and counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()


def test_captions_come_from_their_clip_and_cover_all_of_them():
    split = make_split(LENGTHS)
    source = make_source(split, max_text_length=16)
    tokenizer = Tokenizer.build(c for group in split.captions for c in group)
    seen = set()
    for step in range(60):
        batch = source.batch(step)
        for tokens, mask, clip in zip(batch["tokens"], batch["text_mask"], batch["clip_index"], strict=True):
            caption = tokenizer.decode(tokens)
            assert caption in {text.normalize(c) for c in split.captions[clip]}
            np.testing.assert_array_equal(mask, tokens != 0)
            seen.add(caption)
    assert seen == {text.normalize(c) for group in split.captions for c in group}


def test_short_clips_are_left_out_below_min_motion_length():
    split = make_split(LENGTHS)
    source = make_source(split, min_motion_length=10)
    kept = [i for i, n in enumerate(LENGTHS) if n >= 10]
    np.testing.assert_array_equal(source.clip_indices, kept)
    seen = np.concatenate([source.batch(step)["clip_index"] for step in range(2 * len(kept))])
    assert set(seen.tolist()) == set(kept)
    with pytest.raises(ValueError, match="min_motion_length=1000"):
        make_source(split, min_motion_length=1000)


def test_global_batch_must_divide_over_processes():
    with pytest.raises(ValueError, match="not divisible by process_count 3"):
        make_source(make_split(LENGTHS), process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        make_source(make_split(LENGTHS), process_index=2, process_count=2)


@pytest.mark.parametrize(
    "split, message",
    [
        (
            Split("train", ("a",), (np.zeros((4, D), np.float32),), ("one caption",)),
            "tuple of one or more captions",
        ),
        (Split("train", ("a",), (np.zeros((4, D), np.float32),), ((),)), "tuple of one or more captions"),
        (Split("train", ("a", "b"), (np.zeros((4, D), np.float32),), (("x",),)), "expected one of each"),
        (Split("train", ("a",), (np.zeros((4, D + 1), np.float32),), (("x",),)), r"must have shape \(7,\)"),
        (
            Split("train", ("a", "b"), (np.zeros((4, D)), np.zeros((4, D + 1))), (("x",), ("y",))),
            "clip 'b' has 7 features, the others 6",
        ),
        (Split("train", ("a",), (np.full((4, D), np.nan, np.float32),), (("x",),)), "'a' has non-finite"),
        (Split("train", ("a",), (np.zeros(4, np.float32),), (("x",),)), "expected \\[T, D\\]"),
    ],
)
def test_malformed_splits_are_named_in_the_error(split, message):
    with pytest.raises(ValueError, match=message):
        BatchSource(split, np.zeros(D), np.ones(D), Tokenizer.build([]), 1, 8, 8, seed=0)


def test_empty_captions_give_bos_eos():
    split = make_split([10, 10], captions_per_clip=[1, 1])
    split = Split("train", split.ids, split.motions, (("",), ("",)))
    batch = make_source(split, global_batch_size=2).batch(0)
    np.testing.assert_array_equal(batch["text_mask"].sum(1), [2, 2])


def test_iterate_and_prefetch_match_batch():
    source = make_source(make_split(LENGTHS))
    iterator = source.iterate(start_step=3)
    for step in range(3, 6):
        assert_batches_equal(next(iterator), source.batch(step))
    with pipeline.prefetch(source, start_step=7, depth=2) as prefetched:
        for step in range(7, 12):
            assert_batches_equal(next(prefetched), source.batch(step))
    with pytest.raises(StopIteration):
        next(prefetched)


def test_prefetch_raises_the_error_of_batch():
    class Failing:
        def batch(self, step):
            if step == 2:
                raise RuntimeError("bad step 2")
            return {"step": np.array([step])}

    prefetched = pipeline.prefetch(Failing())
    assert [next(prefetched)["step"][0] for _ in range(2)] == [0, 1]
    with pytest.raises(RuntimeError, match="bad step 2"):
        next(prefetched)


def test_shard_for_devices_splits_the_leading_axis():
    batch = make_source(make_split(LENGTHS)).batch(0)
    sharded = pipeline.shard_for_devices(batch, 4)
    assert sharded["motion"].shape == (4, 2, 20, D) and sharded["length"].shape == (4, 2)
    np.testing.assert_array_equal(sharded["tokens"].reshape(8, -1), batch["tokens"])
    with pytest.raises(ValueError, match=r"batch\['motion'\] has shape \(8, 20, 6\).*n_devices=3"):
        pipeline.shard_for_devices(batch, 3)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    processes=st.sampled_from([1, 2, 4]),
    per_process=st.integers(1, 5),
    max_motion_length=st.integers(1, 40),
    step=st.integers(0, 10**6),
)
def test_masks_lengths_and_shapes_hold_for_any_clips(
    lengths, processes, per_process, max_motion_length, step
):
    split = make_split(lengths, num_features=3)
    global_batch = processes * per_process
    parts = [
        make_source(
            split,
            global_batch_size=global_batch,
            max_motion_length=max_motion_length,
            process_index=p,
            process_count=processes,
        ).batch(step)
        for p in range(processes)
    ]
    for batch in parts:
        b = per_process
        assert batch["motion"].shape == (b, max_motion_length, 3) and batch["tokens"].shape == (b, 12)
        clip_lengths = np.array([lengths[c] for c in batch["clip_index"]])
        np.testing.assert_array_equal(batch["length"], np.minimum(clip_lengths, max_motion_length))
        np.testing.assert_array_equal(batch["mask"], np.arange(max_motion_length) < batch["length"][:, None])
        assert np.all(batch["motion"][~batch["mask"]] == 0) and np.all(np.isfinite(batch["motion"]))
    single = make_source(split, global_batch_size=global_batch, max_motion_length=max_motion_length)
    joined = np.concatenate([part["clip_index"] for part in parts])
    np.testing.assert_array_equal(joined, single.batch(step)["clip_index"])


def test_spelled_words_are_drawn_at_spell_prob_and_decode_to_the_caption():
    """spell_prob: each caption word is given in bytes with that probability (a binomial count over 6,400
    words, within 4 standard deviations), every row still decodes to one of its clip's captions, and the
    byte ids, which no training batch held before, now appear; at 0 no word is spelled."""
    split = make_split(LENGTHS)  # captions "clip i caption j": four vocabulary words each
    tokenizer = Tokenizer.build(c for group in split.captions for c in group)
    plain = make_source(split, max_text_length=32)
    spelled = make_source(split, max_text_length=32, spell_prob=0.3)
    words = hits = 0
    for step in range(200):
        batch, reference = spelled.batch(step), plain.batch(step)
        for key in ("motion", "mask", "length", "clip_index"):  # spelling draws from a stream of its own
            np.testing.assert_array_equal(batch[key], reference[key])
        assert not np.any(reference["tokens"] == text.SPELL_ID)
        np.testing.assert_array_equal(batch["text_mask"], batch["tokens"] != text.PAD_ID)
        for tokens, clip in zip(batch["tokens"], batch["clip_index"], strict=True):
            assert tokenizer.decode(tokens) in {text.normalize(c) for c in split.captions[clip]}
            words, hits = words + 4, hits + int(np.sum(tokens == text.SPELL_ID))
    p, spread = 0.3, 4 * np.sqrt(words * 0.3 * 0.7)
    assert abs(hits - p * words) < spread, (hits, words)


def test_spelling_never_cuts_a_caption_that_fits_in_vocabulary_ids():
    """A caption "clip i caption j" is 4 vocabulary ids; spelled, "caption" alone takes 8 (spell + 7
    bytes, counted by hand). At max_text_length 12 (10 ids besides bos and eos) spelling "i", "j" or
    "clip" fits and is given, spelling "caption" would cut the caption and is not: every row decodes to a
    whole caption of its clip. At 6 (4 ids, the caption exactly) no spelling fits, so every row is the
    unspelled one; at 4 the caption is cut anyway (as cut_captions_note says), and words are spelled."""
    split = make_split(LENGTHS)
    tokenizer = Tokenizer.build(c for group in split.captions for c in group)
    assert len(tokenizer.ids("clip 1 caption 0", [False, False, True, False])) == 11  # 3 + 8
    spelled_rows = 0
    for step in range(100):
        batch = make_source(split, max_text_length=12, spell_prob=0.5).batch(step)
        for tokens, clip in zip(batch["tokens"], batch["clip_index"], strict=True):
            assert tokenizer.decode(tokens) in {text.normalize(c) for c in split.captions[clip]}
            spelled_rows += int(np.any(tokens == text.SPELL_ID))
    assert spelled_rows > 100
    for step in range(20):
        exact = make_source(split, max_text_length=6, spell_prob=0.5).batch(step)
        assert_batches_equal(exact, make_source(split, max_text_length=6).batch(step))
    cut = [make_source(split, max_text_length=4, spell_prob=0.5).batch(step)["tokens"] for step in range(5)]
    assert np.any(np.asarray(cut) == text.SPELL_ID)


@pytest.mark.parametrize("process_count", [2, 4])
def test_spelled_words_are_a_function_of_the_global_slot_and_step(process_count):
    """The processes' shares of a batch with spelled words join into the single-process batch, and a step
    gives the same batch in any order (a resumed run sees the same spellings)."""
    split = make_split(LENGTHS)
    single = make_source(split, spell_prob=0.5)
    for step in [3, 0, 2]:
        parts = [
            make_source(split, spell_prob=0.5, process_index=p, process_count=process_count).batch(step)
            for p in range(process_count)
        ]
        joined = {key: np.concatenate([part[key] for part in parts]) for key in KEYS}
        assert_batches_equal(joined, single.batch(step))
    assert np.any(single.batch(0)["tokens"] == text.SPELL_ID)


def test_spell_prob_outside_0_1_or_without_byte_fallback_is_refused():
    split = make_split(LENGTHS)
    with pytest.raises(ValueError, match=r"data\.spell_prob"):
        make_source(split, spell_prob=1.5)
    mean, std = stats(split)
    words = Tokenizer.build(c for group in split.captions for c in group).words
    with pytest.raises(ValueError, match="byte fallback"):
        BatchSource(
            split, mean, std, Tokenizer(words, byte_fallback=False), 8, 20, 12, seed=3, spell_prob=0.1
        )
