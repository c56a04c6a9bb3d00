"""Starting a new run from another run's weights (`train.init_from`, fine-tuning): the new run's first
parameters are the source checkpoint's (read here straight from its files), it normalises with the
source's statistics and reads captions with its tokenizer, records where it started from, resumes on its
own data, and refuses a source that does not fit, naming train.init_from."""

import hashlib
import itertools
import json
import shutil
import types

import numpy as np
import pytest
from test_resume import tiny_config

from motion_ddpm_jax import checkpoint, errors, evaluate, lineage, sampling, train
from motion_ddpm_jax.data import motion_text, pipeline, synthetic
from motion_ddpm_jax.errors import UserError


def _data_args(root, seed):
    synthetic.write_demo_dataset(
        root / "raw", num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30, seed=seed
    )
    return [
        "--config.data.source=beat",
        f"--config.data.raw_root={root / 'raw'}",
        f"--config.data.root={root / 'prepared'}",
    ]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 6-step run on one synthetic dataset (its checkpoint at step 6), and the arguments of another
    dataset, recorded by other speakers (other statistics) for the runs that start from it."""
    root = tmp_path_factory.mktemp("init_from")
    args_a, args_b = _data_args(root / "a", seed=0), _data_args(root / "b", seed=5)
    workdir = root / "source"
    train.run(tiny_config(root, args_a, num_steps=6, save_every_steps=6), workdir, log=lambda *_: None)
    return types.SimpleNamespace(workdir=workdir, args_a=args_a, args_b=args_b, root=root)


def _read(workdir, item):
    """A checkpoint's `item` (params or ema_params) and metadata, from its files as sampling reads them."""
    reader = checkpoint.Checkpointer(workdir, read_only=True)
    try:
        return reader.restore_params(use_ema=item == "ema_params")
    finally:
        reader.close()


def _leaves(tree):
    import jax

    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("weights", ["ema", "params"])
def test_a_run_starts_at_the_source_weights_with_its_statistics_and_tokenizer(
    tmp_path, source, monkeypatch, weights
):
    """At lr 0 the new run's parameters stay its first ones: they equal, bit for bit, the source
    checkpoint's EMA (or raw) parameters as its files hold them. Batches and the geometric loss are
    normalised with the source's statistics, not the new data's; the checkpoints record the source and
    the new data's own statistics, by which the run then resumes on its data."""
    config = tiny_config(tmp_path, source.args_b, num_steps=2, save_every_steps=2)
    config.optim.update(lr=0.0, min_lr=0.0)
    config.train.init_from, config.train.init_weights = str(source.workdir), weights
    if weights == "params":
        config.diffusion.prediction = "v"  # another output: the run is told, not refused
    given = {}
    real_source, real_geometry = pipeline.BatchSource, train.make_geometry

    def batch_source(split, mean, std, *args, **kwargs):
        given["batches"] = (np.asarray(mean), np.asarray(std))
        return real_source(split, mean, std, *args, **kwargs)

    def make_geometry(config, dataset, statistics=None):
        geometry = real_geometry(config, dataset, statistics)
        given["geometry"] = (np.asarray(geometry.mean), np.asarray(geometry.std))
        return geometry

    monkeypatch.setattr(train.pipeline, "BatchSource", batch_source)
    monkeypatch.setattr(train, "make_geometry", make_geometry)
    lines = []
    workdir = tmp_path / "finetune"
    train.run(config, workdir, log=lines.append)

    start, source_metadata = _read(source.workdir, "ema_params" if weights == "ema" else "params")
    trained, metadata = _read(workdir, "params")
    start, trained = _leaves(start), _leaves(trained)
    assert start.keys() == trained.keys()
    for name in start:
        np.testing.assert_array_equal(trained[name], start[name], err_msg=name)

    data_b = motion_text.open_dataset(config.data.root)
    source_mean, source_std = np.asarray(source_metadata["mean"]), np.asarray(source_metadata["std"])
    assert np.max(np.abs(data_b.mean - source_mean) / source_std) > 1e-3  # the two datasets' differ
    for mean, std in (given["batches"], given["geometry"], (metadata["mean"], metadata["std"])):
        np.testing.assert_array_equal(np.asarray(mean, np.float32), source_mean.astype(np.float32))
        np.testing.assert_array_equal(np.asarray(std, np.float32), source_std.astype(np.float32))
    assert metadata["tokenizer"] == source_metadata["tokenizer"]
    record = metadata["init_from"]
    assert record["workdir"] == str(source.workdir.resolve()) and record["step"] == 6
    assert record["weights"] == weights
    digest = hashlib.sha256()  # of the source checkpoint's chosen arrays, as its files hold them
    for name, array in start.items():
        digest.update(f"{name}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    assert record["weights_sha256"] == digest.hexdigest()
    np.testing.assert_allclose(record["data_statistics"]["mean"], data_b.mean, rtol=0, atol=0)
    np.testing.assert_allclose(record["data_statistics"]["std"], data_b.std, rtol=0, atol=0)
    said = " ".join(lines)
    assert f"starting from the {weights} weights of checkpoint 6 of {source.workdir.resolve()}" in said
    assert "normalisation statistics differ from the source run's" in said
    if weights == "params":
        assert "differs from the source run's in diffusion.prediction ('epsilon' -> 'v')" in said
        return

    # Resumed on its own data (whose statistics are not the ones its checkpoints normalise with), with
    # init_from now naming a checkpoint folder: it goes on from its own checkpoint, and keeps its record.
    config.train.num_steps = 4
    config.train.init_from = str(source.workdir / "checkpoints" / "6")
    lines.clear()
    train.run(config, workdir, log=lines.append)
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2, 4]
    assert any("read at a run's first start only" in line for line in lines), lines
    assert not any(line.startswith("starting from") for line in lines)
    _, resumed = _read(workdir, "params")
    assert resumed["init_from"] == record and resumed["mean"] == metadata["mean"]

    # Sampling it names a word its tokenizer lacks as the source's vocabulary's, not its own captions'.
    config.sample.update(
        text="wave zzqx", num_frames=8, steps=2, render=False, output_dir=str(tmp_path / "s")
    )
    lines.clear()
    sampling.run(config, workdir, log=lines.append)
    assert any(
        line.startswith(f"words the vocabulary lacks (that of {source.workdir.resolve()}, the run this one")
        and "zzqx" in line
        for line in lines
    ), lines
    # its config names the source it started from, not the one this resume was given and did not read
    assert resumed["config"]["train"]["init_from"] == str(source.workdir)


@pytest.mark.parametrize("case", ["own workdir", "no folder", "no such step", "other width"])
def test_a_source_that_does_not_fit_is_refused_naming_init_from(tmp_path, source, case):
    """Each refusal names train.init_from and what would fit, and leaves the new workdir to a corrected
    config (no run record, no checkpoint)."""
    config = tiny_config(tmp_path, source.args_b, num_steps=2, save_every_steps=2)
    workdir = tmp_path / "finetune"
    config.train.init_from = {
        "own workdir": str(workdir),
        "no folder": str(tmp_path / "nowhere"),
        "no such step": str(source.workdir / "checkpoints" / "7"),
        "other width": str(source.workdir),
    }[case]
    expected = {
        "own workdir": r"is this run's own --workdir",
        "no folder": r"no such folder; expected a run's workdir",
        "no such step": r"no checkpoint at step 7; available: \[6\]",
        "other width": r"do not fit this run's model .*model\.latent_dim \(16 -> 32\)",
    }[case]
    if case == "other width":
        config.model.latent_dim = 32
    with pytest.raises(UserError, match=expected) as refused:
        train.run(config, workdir, log=lambda *_: None)
    assert "train.init_from=" in str(refused.value)
    assert not (workdir / train.RUN_RECORD).exists() and not (workdir / "checkpoints").exists()


def test_eval_compares_a_fine_tuned_runs_own_data_statistics():
    """An evaluation of a run started from another's weights compares the dataset with the statistics of
    the data that run trained on (its record), not with the source's it normalises with."""
    rng = np.random.default_rng(0)
    source_mean, source_std = rng.normal(size=6), rng.uniform(0.5, 2.0, size=6)
    own_mean, own_std = source_mean + 0.5, source_std * 1.3
    dataset = types.SimpleNamespace(
        mean=own_mean.astype(np.float32), std=own_std.astype(np.float32), info={}, root="data"
    )
    config = types.SimpleNamespace(
        eval=types.SimpleNamespace(split="val"), data=types.SimpleNamespace(split_seed=0, std_floor=0.01)
    )
    started = {"init_from": {"data_statistics": {"mean": own_mean.tolist(), "std": own_std.tolist()}}}
    loaded = types.SimpleNamespace(mean=source_mean, std=source_std, metadata=started)
    assert lineage.check_same_statistics(loaded, dataset, config, "run") == 0  # its own data
    with pytest.raises(errors.EvaluationError, match="trained on other data") as refused:
        lineage.check_same_statistics(
            types.SimpleNamespace(mean=source_mean, std=source_std, metadata={}), dataset, config, "run"
        )
    # The gap in units of the run's std, as resume's refusal gives it (it had been in the data's units).
    gap = np.max(np.abs(own_mean.astype(np.float32) - source_mean) / source_std)
    assert f"means by up to {gap:.3g} std" in str(refused.value)
    # The source's data (a forgetting check): its statistics are those the run normalises with.
    source_data = types.SimpleNamespace(
        mean=source_mean.astype(np.float32), std=source_std.astype(np.float32), info={}, root="data"
    )
    assert lineage.check_same_statistics(loaded, source_data, config, "run") == 1  # its source's data
    third = types.SimpleNamespace(mean=source_data.mean + 0.1, std=source_data.std, info={}, root="data")
    with pytest.raises(errors.EvaluationError, match="trained on other data"):
        lineage.check_same_statistics(loaded, third, config, "run")


def test_a_refused_source_is_refused_before_the_new_workdir_is_opened(tmp_path, source, monkeypatch):
    """A source that does not fit is refused before the new workdir's checkpoint manager opens: opened
    first, its background clean-up listed the folder after the refusal had removed it (an Orbax traceback
    under the refusal, in 2 of 10 starts)."""
    opened, real_init = [], checkpoint.Checkpointer.__init__

    def spy(self, workdir, *args, **kwargs):
        opened.append(str(workdir))
        real_init(self, workdir, *args, **kwargs)

    monkeypatch.setattr(checkpoint.Checkpointer, "__init__", spy)
    config = tiny_config(tmp_path, source.args_b, num_steps=2, save_every_steps=2)
    config.train.init_from = str(tmp_path / "nowhere")
    workdir = tmp_path / "finetune"
    with pytest.raises(UserError, match="train.init_from="):
        train.run(config, workdir, log=lambda *_: None)
    assert str(workdir) not in opened and not workdir.exists()


def test_a_source_named_by_its_checkpoint_folder_or_run_record_is_its_workdir(source):
    """<workdir>/checkpoints and <workdir>/run.json name the run (its latest checkpoint): they had been
    read as workdirs, refused with a hint about --workdir, or as 'no such folder'."""
    for named in (source.workdir / "checkpoints", source.workdir / train.RUN_RECORD):
        assert train.init_source(f"{named}") == (source.workdir, None)
    assert train.init_source(f"{source.workdir}/checkpoints/6/") == (source.workdir, 6)


def test_a_damaged_source_checkpoint_names_the_intact_one_to_start_from(tmp_path, source):
    """A source whose latest checkpoint is damaged: the refusal names the intact one as a value of
    train.init_from (it had read '--config.train.init_from=<workdir>/checkpoints/<step>=3')."""
    copy = tmp_path / "source"
    shutil.copytree(source.workdir, copy)
    shutil.copytree(copy / "checkpoints" / "6", copy / "checkpoints" / "3")  # an intact earlier one
    (copy / "checkpoints" / "6" / "metadata" / "metadata").unlink()  # a copy cut short
    config = tiny_config(tmp_path, source.args_b, num_steps=2, save_every_steps=2)
    config.train.init_from = str(copy)
    with pytest.raises(UserError, match="damaged or incomplete") as refused:
        train.run(config, tmp_path / "finetune", log=lambda *_: None)
    assert f"(--config.train.init_from={copy.resolve()}/checkpoints/3)" in str(refused.value)


def test_eval_names_the_source_runs_clips_only_where_it_trained_on_other_data(tmp_path, source):
    """Fine-tuned on the source's own prepared folder, the run shares its splits: its val clips were never
    the source's training clips (the note had said they might be, of every fine-tuned run). Fine-tuned on
    another dataset (other recordings, split by their own names), the note is given."""
    note = "clips here may be clips that run trained on"
    for name, args, said in (("same", source.args_a, False), ("other", source.args_b, True)):
        config = tiny_config(tmp_path, args, num_steps=2, save_every_steps=2)
        config.train.init_from = str(source.workdir)
        train.run(config, tmp_path / name, log=lambda *_: None)
        config.sample.update(steps=2, render=False)
        config.eval.update(num_clips=2, output=str(tmp_path / f"{name}.json"))
        lines = []
        evaluate.run(config, tmp_path / name, log=lines.append)
        assert any(note in line for line in lines) == said, (name, lines)
    # The run fine-tuned on the other data, evaluated on the source's (a forgetting check): evaluated,
    # said so, without the note (the source held these val clips out).
    config = tiny_config(tmp_path, source.args_a, num_steps=2, save_every_steps=2)
    config.sample.update(steps=2, render=False)
    config.eval.update(num_clips=2, output=str(tmp_path / "forgetting.json"))
    lines = []
    evaluate.run(config, tmp_path / "other", log=lines.append)
    assert any("what the fine-tuned run kept of that data" in line for line in lines), lines
    assert not any(note in line for line in lines), lines
    assert not any("data_trained_on:" in line for line in lines), lines  # other recordings: none trained on
    assert json.loads((tmp_path / "forgetting.json").read_text())["data_trained_on"] == "init_from source's"
    assert json.loads((tmp_path / "other.json").read_text())["data_trained_on"] == "this run's"
    assert any("its val clips were held out of that run's training" in line for line in lines), lines
    # On the source's training clips (eval.split=train) the log had said they were held out of its training.
    config.eval.update(split="train", output=str(tmp_path / "forgetting_train.json"))
    lines = []
    evaluate.run(config, tmp_path / "other", log=lines.append)
    said = [line for line in lines if "what the fine-tuned run kept of that data" in line]
    assert (
        said and "held out" not in said[0] and "its train clips are those that run trained on" in said[0]
    ), lines


def test_a_forgetting_check_names_the_clips_the_fine_tuned_run_trained_on(tmp_path):
    """The source's held-out clips may be training clips of the fine-tuned run where its data split the
    same recordings otherwise (the demo prepared with split_seed 0 and 2: 12 of 12); such a forgetting
    check scores what the run learned, not what it kept, and said nothing. A clip counts by its motion:
    a HumanML3D sub-clip by its clip, a clip by its mirrored copy (M<id>) in the training split."""
    (tmp_path / "train.txt").write_text("a_000\nb_001\n\n000004\nM000007\n", encoding="utf-8")
    evaluated = ["a_000", "a_001", "000004#0.5-3", "000007", "c_000"]
    seen, listed = lineage.fine_tuned_on([str(tmp_path)], evaluated)
    assert seen == ["a_000", "000004#0.5-3", "000007"] and listed == [tmp_path / "train.txt"]
    assert lineage.fine_tuned_on([str(tmp_path), str(tmp_path / "gone")], evaluated) == (
        None,
        [tmp_path / "gone" / "train.txt"],
    )
    assert lineage.fine_tuned_on([None], evaluated) == (None, [])  # a data_root not recorded
    # Several fine-tuned runs since (a chain of init_from): each one's training split counts, in
    # `evaluated`'s order, and only the split files that list one are named.
    for name, ids in (("b", "c_000\na_001\n"), ("c", "zz\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.txt").write_text(ids, encoding="utf-8")
    assert lineage.fine_tuned_on([tmp_path, tmp_path / "b", tmp_path / "c"], evaluated) == (
        ["a_000", "a_001", "000004#0.5-3", "000007", "c_000"],
        [tmp_path / "train.txt", tmp_path / "b" / "train.txt"],
    )


def test_a_forgetting_check_tells_another_recording_of_the_same_name_from_a_clip_trained_on(tmp_path):
    """Two datasets that number their clips alike (one's own data fine-tuned from a HumanML3D run, the demo
    written with another seed) share ids, not motions: the note had called every evaluated clip whose id
    the fine-tuned run's train.txt lists a clip it trained on. A clip whose motion file reads in both
    folders and differs is another recording; one of equal motion, or with no file to compare, counts."""
    rng = np.random.default_rng(0)
    tuned, here = tmp_path / "tuned", tmp_path / "here"
    for root, sub in ((tuned, "motions"), (here, "new_joint_vecs")):  # either layout's motion folder
        (root / sub).mkdir(parents=True)
    (tuned / "train.txt").write_text("000001\n000002\nM000003\n000004\n", encoding="utf-8")
    same, other = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    np.save(tuned / "motions" / "000001.npy", same)
    np.save(here / "new_joint_vecs" / "000001.npy", same)  # the same recording: trained on
    np.save(tuned / "motions" / "000002.npy", other)
    np.save(here / "new_joint_vecs" / "000002.npy", same)  # another recording named alike
    np.save(tuned / "motions" / "M000003.npy", same)
    np.save(here / "new_joint_vecs" / "M000003.npy", same)  # its mirror trained on, as the mirror here
    evaluated = ["000001#0.5-2", "000002", "000003", "000004", "000005"]  # 000004: nothing to compare
    seen, _ = lineage.fine_tuned_on([str(tuned)], evaluated, here)
    assert seen == ["000001#0.5-2", "000003", "000004"]
    assert lineage.fine_tuned_on([str(tuned)], evaluated)[0] == evaluated[:4]  # by id alone


def test_a_chain_of_fine_tuning_keeps_every_source_and_evaluates_on_each_ones_data(tmp_path, source):
    """A run fine-tuned from a fine-tuned run (A -> B -> C) had recorded B alone: its checkpoints now
    hold the whole chain (B's record inside C's), and eval takes the data of any run of it: C on B's data
    (refused before: neither C's statistics nor the A statistics it normalises with) and on A's, whose
    held-out clips B's data may hold for training (its split of A's recordings under another
    split_seed: A's test recording is a training one of split_seed 2): the note names them, from B's
    split file, as the split files and motion files say."""
    args_a2 = [*source.args_a[:2], f"--config.data.root={tmp_path / 'a2'}", "--config.data.split_seed=2"]
    runs = {"b": (args_a2, source.workdir), "c": (source.args_b, tmp_path / "b")}
    for name, (args, start) in runs.items():
        config = tiny_config(tmp_path, args, num_steps=2, save_every_steps=2)
        config.train.init_from = str(start)
        train.run(config, tmp_path / name, log=lambda *_: None)
    _, b_metadata = _read(tmp_path / "b", "params")
    _, c_metadata = _read(tmp_path / "c", "params")
    assert c_metadata["init_from"]["workdir"] == str((tmp_path / "b").resolve())
    assert c_metadata["init_from"]["init_from"] == b_metadata["init_from"]  # A, as B recorded it
    assert b_metadata["init_from"]["workdir"] == str(source.workdir.resolve())

    def evaluated(args, name):
        config = tiny_config(tmp_path, args, num_steps=2)
        config.sample.update(steps=2, render=False)
        config.eval.update(num_clips=3, split="test", output=str(tmp_path / f"{name}.json"))
        lines = []
        evaluate.run(config, tmp_path / "c", log=lines.append)
        return lines, json.loads((tmp_path / f"{name}.json").read_text())

    lines, report = evaluated(args_a2, "on_b")
    assert report["data_trained_on"] == "init_from source's", report["data_trained_on"]
    said = [line for line in lines if "what the fine-tuned run kept of that data" in line]
    assert said and f"the run whose weights it started from ({(tmp_path / 'b').resolve()}, step 2)" in said[0]
    assert "those its checkpoints record of that run's data" in said[0], said

    lines, report = evaluated(source.args_a, "on_a")
    assert report["data_trained_on"] == (
        f"an earlier run's in its init_from chain: {source.workdir.resolve()}"
    ), report["data_trained_on"]
    said = [line for line in lines if "what the fine-tuned run kept of that data" in line]
    assert said and f"({source.workdir.resolve()}, step 6), by way of {(tmp_path / 'b').resolve()}" in said[0]
    # The reference: the evaluated test clips of A's data (the report's ids) that B's or C's split files
    # list with the same motion (C's data, other recordings, may reuse the names).
    test_ids, a_root = report["clips"]["ids"], source.root / "a" / "prepared"
    expected = [
        clip_id
        for clip_id in test_ids
        if any(
            clip_id in (root / "train.txt").read_text().split()
            and np.array_equal(
                np.load(root / "motions" / f"{clip_id}.npy"), np.load(a_root / "motions" / f"{clip_id}.npy")
            )
            for root in (tmp_path / "a2", source.root / "b" / "prepared")
        )
    ]
    assert expected, "the split seeds chosen give no overlap: the test would not test the note"
    notes = [line for line in lines if "data_trained_on:" in line]
    assert len(notes) == 1 and f"{len(expected)} of the {len(test_ids)} test clips evaluated" in notes[0]
    assert (
        "the 2 fine-tuned runs since trained on" in notes[0]
        and str(tmp_path / "a2" / "train.txt") in notes[0]
    )


def _swapped_siblings(skeleton):
    """`skeleton` with the names of two sibling subtrees of the same shape exchanged (their joints listed
    depth-first, as a BVH file lists them): what an exporter that writes the second sibling first gives,
    read in file order. The parents are the same; the joints at those places are others."""
    from motion_ddpm_jax.skeleton import Skeleton

    parents = [int(p) for p in skeleton.parents]

    def subtree(root):  # the depth-first range of `root`'s subtree, as parents relative to its start
        end = root + 1
        while end < len(parents) and parents[end] >= root and parents[end] < end:
            end += 1
        return range(root, end), [p - root for p in parents[root + 1 : end]]

    for parent in range(len(parents)):
        children = [j for j, p in enumerate(parents) if p == parent]
        for a, b in itertools.pairwise(children):
            (span_a, shape_a), (span_b, shape_b) = subtree(a), subtree(b)
            if shape_a == shape_b and len(span_a) == len(span_b):
                names = list(skeleton.names)
                for i, k in zip(span_a, span_b, strict=True):
                    names[i], names[k] = names[k], names[i]
                return Skeleton(tuple(names), skeleton.parents, skeleton.offsets, skeleton.end_sites)
    raise AssertionError("no two sibling subtrees of one shape")


def test_a_source_whose_joints_this_data_lists_in_another_order_is_refused(tmp_path, source):
    """Data prepared from recordings that list sibling joints in another order than the source's (the
    right hand's fingers before the left's, say) have the same parents, joint for joint: the check of the
    parents alone had let a run fine-tune reading one joint's features as another's, with only a gap in
    the statistics (13.7 std where the same speaker in the source's order gave 0.22) to show it. The
    refusal names the first joint out of place; a skeleton renamed alone, every joint in its place, starts
    with a note."""
    loaded = sampling.load_model(source.workdir)
    swapped = _swapped_siblings(loaded.skeleton)
    assert tuple(swapped.parents) == tuple(loaded.skeleton.parents)
    assert sorted(swapped.names) == sorted(loaded.skeleton.names) and swapped.names != loaded.skeleton.names
    config = tiny_config(tmp_path, source.args_a, num_steps=2, save_every_steps=2)
    config.train.init_from = str(source.workdir)

    def data(skeleton):
        return types.SimpleNamespace(
            representation=loaded.representation,
            feature_size=int(loaded.metadata["feature_size"]),
            skeleton=skeleton,
            root=tmp_path / "data",
            mean=loaded.mean,
            std=loaded.std,
            fps=loaded.fps,
        )

    j = next(j for j, (a, b) in enumerate(zip(swapped.names, loaded.skeleton.names, strict=True)) if a != b)
    with pytest.raises(UserError, match="lists the source's joints in another order") as refused:
        train.load_init_from(config, data(swapped), [], tmp_path / "finetune", log=lambda *_: None)
    assert f"joint {j} is {swapped.names[j]!r} here, {loaded.skeleton.names[j]!r}" in str(refused.value)
    assert "train.init_from=" in str(refused.value)
    listed = f"{loaded.metadata['data_root']}/skeleton.json"  # the way on: the data in the source's order
    assert f"--mode prepare with --config.data.joint_order={listed} " in str(refused.value), refused.value

    from motion_ddpm_jax.skeleton import Skeleton

    renamed = Skeleton(
        tuple(f"mine:{name}" for name in loaded.skeleton.names),
        loaded.skeleton.parents,
        loaded.skeleton.offsets,
        loaded.skeleton.end_sites,
    )
    lines = []
    train.load_init_from(config, data(renamed), [], tmp_path / "finetune", log=lines.append)
    assert any("the joints' names differ from the source's" in line for line in lines), lines
    lines.clear()
    train.load_init_from(config, data(loaded.skeleton), [], tmp_path / "finetune", log=lines.append)
    assert not any("names differ" in line for line in lines), lines
