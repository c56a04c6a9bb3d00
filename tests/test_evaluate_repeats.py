"""--mode eval with eval.repeats: the generated set sampled once per seed sample.seed + k (checked with the
real sampler of an untrained tiny model of test_evaluate's toy dataset against runs of one repeat), every
generated metric per repeat and the real column once; the mean, std and 95% confidence half-width
against float64 numpy, scipy and by hand."""

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from test_evaluate import FPS, FakeSampling, install, toy_config, toy_dataset  # noqa: F401 (a fixture)

from motion_ddpm_jax import evaluate, sampling, text
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.config import base_config, validate
from motion_ddpm_jax.errors import UserError

STEP = 5
SEED = 5  # sample.seed: the repeats sample with seeds 5, 6, 7
# The keys of a report before eval.repeats (and of every report of one repeat): nothing added or changed.
SINGLE_RUN_KEYS = [
    *("step", "workdir", "data_root", "data_trained_on", "split", "split_seed", "num_clips", "clips"),
    *("fps", "position_unit"),
    *("units", "metrics", "notes", "sample", "diffusion_steps", "eval", "fgd_autoencoder", "versions"),
    *("device", "software", "created_utc", "sample_seconds"),
]


def toy_model(dataset) -> sampling.LoadedModel:
    """An untrained tiny model of `dataset` (its statistics, skeleton, rate, and a tokenizer of its training
    captions) as sampling.load_model restores one, every weight perturbed so that the caption and the step
    change the output. (Built in memory: writing and restoring a checkpoint is test_sampling's concern.)"""
    config = base_config()
    config.data.source, config.data.root, config.data.fps = "prepared", str(dataset.root), FPS
    config.data.max_motion_length = 48  # the toy clips (30-49 frames) nearly whole
    m = config.model
    m.latent_dim, m.num_layers, m.ff_size, m.num_heads, m.compute_dtype = 16, 1, 32, 2, "float32"
    m.text_max_length, m.text_latent_dim, m.text_num_layers, m.text_num_heads = 8, 16, 1, 2
    m.text_ff_size = 32
    config.diffusion.steps, config.diffusion.schedule = 12, "cosine"
    tokenizer = text.Tokenizer.build([c[0] for c in dataset.split("train").captions])
    model = model_lib.model_from_config(
        config, input_feats=dataset.feature_size, text_vocab_size=tokenizer.vocab_size
    )
    rng = np.random.default_rng(3)
    params = jax.tree.map(
        lambda a: a + jnp.asarray(rng.normal(0, 0.2, a.shape), a.dtype) if a.ndim else a,
        model_lib.init_params(model, jax.random.key(1)),
    )
    metadata = {
        "config": config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "mean": np.asarray(dataset.mean, np.float32).tolist(),
        "std": np.asarray(dataset.std, np.float32).tolist(),
        "skeleton": dataset.skeleton.to_dict(),
        "representation": "positions",
        "feature_size": int(dataset.feature_size),
        "fps": FPS,
        "data_root": str(dataset.root),
    }
    return sampling.loaded_from_params(params, metadata, STEP, "the toy model")


def evaluate_with(sampler, dataset, tmp_path, repeats, seed, autoencoder_dir):
    """(the JSON report evaluate.run writes, the messages it logs) for eval.repeats=`repeats` from
    sample.seed=`seed`, with `sampler` standing in for motion_ddpm_jax.sampling's load_model and generate
    (test_evaluate.install), 4 trailing DDIM steps, and the FGD autoencoder of `autoencoder_dir`."""
    config = toy_config(dataset, tmp_path)
    config.eval.autoencoder_dir = str(autoencoder_dir)
    config.sample.steps, config.sample.ddim_spacing, config.sample.seed = 4, "trailing", seed
    config.eval.repeats = repeats
    messages = []
    with pytest.MonkeyPatch.context() as patch:
        install(patch, sampler)
        written = evaluate.run(config, tmp_path / "run", log=messages.append)["output"]
    with open(written, encoding="utf-8") as handle:
        return json.load(handle), messages


def notes_of(record):
    """A report's notes with its run's folder written `<run>` (the FGD note names the --workdir to train
    an autoencoder for, and the runs compared here lie in folders of their own)."""
    return [note.replace(record["workdir"], "<run>") for note in record["notes"]]


class RealSampler:
    """sampling.generate itself, of `loaded` (what load_model returns), keeping each call's seed and
    motion."""

    def __init__(self, loaded):
        self.loaded, self.sampled = loaded, []

    def load_model(self, workdir, step=None, use_ema=True):
        return self.loaded

    def generate(self, loaded, captions, num_frames, **options):
        result = sampling.generate(loaded, captions, num_frames, **options)
        self.sampled.append((options["seed"], result["motion"].copy()))
        return result


def test_repeat_k_samples_as_one_run_with_seed_plus_k(toy_dataset, tmp_path):  # noqa: F811
    """With the real sampler, repeat k of eval.repeats=3 samples with sample.seed + k: its motion and
    every generated metric are, bit for bit, those of a run of one repeat with that seed (repeat 0: the
    run of one repeat of the same config), or of sampling.generate called with it; the repeats differ;
    the real column is the one-repeat runs'."""
    loaded = toy_model(toy_dataset)
    runs = {}
    for name, repeats, seed in (("repeated", 3, SEED), ("first", 1, SEED), ("last", 1, SEED + 2)):
        sampler = RealSampler(loaded)
        record, _ = evaluate_with(sampler, toy_dataset, tmp_path / name, repeats, seed, tmp_path / "no_fgd")
        runs[name] = record, sampler.sampled
    (repeated, sampled), (first, first_sampled), (last, last_sampled) = runs.values()
    assert [seed for seed, _ in sampled] == [SEED, SEED + 1, SEED + 2] == repeated["repeats"]["seeds"]
    assert [seed for seed, _ in first_sampled + last_sampled] == [SEED, SEED + 2]
    np.testing.assert_array_equal(sampled[0][1], first_sampled[0][1])
    np.testing.assert_array_equal(sampled[2][1], last_sampled[0][1])
    val = toy_dataset.split("val")
    caption_of = {clip: captions[0] for clip, captions in zip(val.ids, val.captions, strict=True)}
    with warnings.catch_warnings():  # the toy captions take more tokens than the toy model reads
        warnings.simplefilter("ignore", sampling.CaptionCutWarning)
        direct = sampling.generate(
            loaded,
            [caption_of[clip] for clip in repeated["clips"]["ids"]],
            repeated["clips"]["lengths"],
            **{"sampler": "ddim", "steps": 4, "spacing": "trailing", "seed": SEED + 1},
        )
    np.testing.assert_array_equal(sampled[1][1], direct["motion"])
    assert not np.array_equal(sampled[0][1], sampled[1][1])  # another seed, other samples

    per_repeat = repeated["repeats"]["generated"]
    assert list(per_repeat) == list(first["metrics"]) == list(repeated["metrics"])
    for name, row in first["metrics"].items():
        assert per_repeat[name]["values"][0] == row["generated"], name
        assert per_repeat[name]["values"][2] == last["metrics"][name]["generated"], name
        assert repeated["metrics"][name]["real"] == row["real"] == last["metrics"][name]["real"], name
    assert per_repeat["diversity"]["values"][0] != per_repeat["diversity"]["values"][1]
    assert notes_of(first) == notes_of(repeated)[1:]  # the note on the interval comes first


class SeededFake(FakeSampling):
    """test_evaluate's stand-in sampler: the real clip of each caption, its joints plus noise of 0.5
    drawn with the seed it is given (FakeSampling's noise ignores the seed)."""

    def generate(self, loaded, captions, num_frames, **options):
        self.calls.append(("generate", list(captions), list(num_frames), options))
        rng = np.random.default_rng(options["seed"])
        motions = [self.by_caption[c][:n].copy() for c, n in zip(captions, num_frames, strict=True)]
        for m in motions:
            m[:, 3:] += 0.5 * rng.normal(size=m[:, 3:].shape)
        motion, lengths = evaluate._pad(motions)
        positions = evaluate.decode_positions(motion, loaded.skeleton, "positions")
        return {"motion": motion, "positions": positions, "lengths": lengths, "captions": list(captions)}


@pytest.fixture(scope="module")
def noisy_runs(toy_dataset, tmp_path_factory):  # noqa: F811
    """{'repeated' (eval.repeats=3 from sample.seed=SEED), 'single' (one repeat): (report, messages)} of
    evaluate.run with SeededFake (a few seconds: no model to compile)."""
    root = tmp_path_factory.mktemp("noisy")
    return {
        name: evaluate_with(SeededFake(toy_dataset), toy_dataset, root / name, repeats, SEED, root / "no_fgd")
        for name, repeats in (("repeated", 3), ("single", 1))
    }


def test_the_generated_column_is_the_mean_with_a_students_t_interval(noisy_runs):
    """metrics' generated column holds the mean over the repeats, and repeats' std (ddof=1) and ci95
    = t_{0.975, n-1} std / sqrt(n), all recomputed here in float64 numpy + scipy from each repeat's
    values; the table shows mean ± ci95 and a note says what ± means. The worst bone is the one named
    most often; the fgd row (no autoencoder) stays null."""
    record, messages = noisy_runs["repeated"]
    repeats = record["repeats"]
    assert repeats["count"] == 3 and repeats["confidence"] == 0.95
    quantile = scipy.stats.t.ppf(0.975, 2)
    assert repeats["t_quantile"] == pytest.approx(quantile, rel=1e-12)
    table = next(m for m in messages if m.startswith("metric "))
    spread = 0
    for name, row in repeats["generated"].items():
        if name in ("bone_error/worst_bone", "fgd"):
            continue
        values = np.asarray(row["values"], np.float64)
        mean, std = values.mean(), values.std(ddof=1)
        assert record["metrics"][name]["generated"] == pytest.approx(mean, rel=1e-12), name
        assert row["mean"] == pytest.approx(mean, rel=1e-12), name
        assert row["std"] == pytest.approx(std, rel=1e-12, abs=1e-300), name
        assert row["ci95"] == pytest.approx(quantile * std / np.sqrt(3), rel=1e-12, abs=1e-300), name
        line = next(line for line in table.splitlines() if line.startswith(f"{name} "))
        assert line.split("|")[2].strip() == f"{mean:.4g} ± {row['ci95']:.2g}", name
        spread += std > 0
    assert spread >= 8  # most metrics vary with the seed: the test sees real spreads, not zeros
    bones = repeats["generated"]["bone_error/worst_bone"]
    named = max(
        set(bones["values"]), key=lambda bone: (bones["values"].count(bone), -bones["values"].index(bone))
    )
    assert record["metrics"]["bone_error/worst_bone"]["generated"] == bones["mean"] == named
    assert bones["std"] is None and bones["ci95"] is None
    assert repeats["generated"]["fgd"] == {"values": [None] * 3, "mean": None, "std": None, "ci95": None}
    assert record["metrics"]["fgd"] == {"real": None, "generated": None}
    said = (
        f"generated = mean ± the half-width of its 95% confidence interval over 3 repeats of the sampling, "
        f"seeds {SEED}..{SEED + 2} (Student's t, 2 degrees of freedom: {quantile:.4g} x std / sqrt(3), "
        "std the sample standard deviation); the real column does not depend on the seed"
    )
    assert record["notes"][0] == said and f"note: {record['notes'][0]}" in messages


def test_repeat_statistics_by_hand():
    """1, 2, 3, 4: mean 2.5, std sqrt(5/3), and t_{0.975, 3} = 3.182446 (a t table's value), so the
    half-width is 3.182446 x sqrt(5/3) / 2 = 2.05426; a NaN value makes all three NaN; names: the most
    frequent, the earliest on a tie."""
    stats = evaluate.repeat_statistics([1, 2, 3, 4])
    assert stats["values"] == [1.0, 2.0, 3.0, 4.0] and stats["mean"] == 2.5
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert stats["ci95"] == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    assert stats["ci95"] == pytest.approx(2.05426, rel=1e-5)
    assert evaluate.t_quantile(20) == pytest.approx(2.093024, rel=1e-6)  # MDM's 20 repeats: not 1.96
    assert all(np.isnan(evaluate.repeat_statistics([1.0, float("nan")])[k]) for k in ("mean", "std", "ci95"))
    mixed = evaluate.repeat_statistics([1.0, None, 2.0])  # a None among numbers counts as NaN, not a mode
    assert all(np.isnan(mixed[k]) for k in ("mean", "std", "ci95")) and np.isnan(mixed["values"][1])
    assert evaluate.repeat_statistics(["a", "b", "b"])["mean"] == "b"
    assert evaluate.repeat_statistics(["c", "a", "a", "c"])["mean"] == "c"
    assert evaluate.repeat_statistics([None, None]) == {
        "values": [None, None],
        "mean": None,
        "std": None,
        "ci95": None,
    }
    with pytest.raises(ValueError, match="at least 2 values"):
        evaluate.repeat_statistics([1.0])


def test_one_repeat_writes_the_report_it_always_wrote(noisy_runs):
    """eval.repeats=1 (the default): the report's keys are those of before (no `repeats`), each metric a
    {real, generated} pair, sample_seconds one number; with repeats the only new key is `repeats`, whose
    sample_seconds has one entry per repeat, the first being the report's sample_seconds (the first
    sampling call's, compiling included where there is a model to compile)."""
    first, messages = noisy_runs["single"]
    assert list(first) == SINGLE_RUN_KEYS
    assert all(set(row) == {"real", "generated"} for row in first["metrics"].values())
    assert isinstance(first["sample_seconds"], float)
    assert first["eval"] == {"split": "val", "num_clips": 6}
    assert not any("confidence interval" in note for note in first["notes"])
    assert not any("±" in m or m.startswith("repeat ") for m in messages)
    repeated = noisy_runs["repeated"][0]
    assert list(repeated) == [*SINGLE_RUN_KEYS, "repeats"]
    assert notes_of(first) == notes_of(repeated)[1:]
    seconds = repeated["repeats"]["sample_seconds"]
    assert len(seconds) == 3 and seconds[0] == repeated["sample_seconds"]
    assert base_config().eval.repeats == 1


def test_eval_repeats_below_one_or_past_the_last_seed_is_refused(toy_dataset, tmp_path, monkeypatch):  # noqa: F811
    """eval.repeats=0: the config check names the field, and evaluate.run refuses it before loading
    anything; so it does a count whose last seed, sample.seed + repeats - 1, passes 2**32 - 1."""
    config = toy_config(toy_dataset, tmp_path)
    config.eval.repeats = 0
    with pytest.raises(UserError, match=r"config field eval.repeats is 0; expected an integer >= 1"):
        validate(config)
    fake = FakeSampling(toy_dataset)
    install(monkeypatch, fake)
    with pytest.raises(UserError, match=r"eval.repeats is 0; expected an integer >= 1"):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    config.eval.repeats, config.sample.seed = 3, 2**32 - 2
    validate(config)
    with pytest.raises(
        UserError, match=r"eval.repeats=3 with sample.seed=4294967294 would sample with seeds"
    ):
        evaluate.run(config, tmp_path / "run", log=lambda _: None)
    config.eval.repeats = 2  # seeds 2**32 - 2 and 2**32 - 1: allowed
    assert evaluate._repeat_seeds(config) == [2**32 - 2, 2**32 - 1]
    assert fake.calls == [] and not (tmp_path / "run").exists()
