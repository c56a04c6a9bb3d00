"""Reliability of a training run (issue 7): exact resume after SIGKILL, SIGTERM preemption, a checkpoint
killed mid-write, non-finite batches. Runs go through launch.py in subprocesses, as a user's would."""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tiny_run import ROOT, TINY_MODEL, finish, launch_env, output, start_launch

from motion_ddpm_jax import checkpoint, train
from motion_ddpm_jax.data import beat, motion_text, pipeline, synthetic
from motion_ddpm_jax.errors import UserError

STEPS = 120

TINY = [
    *TINY_MODEL,
    f"--config.train.num_steps={STEPS}",
    "--config.train.log_every=5",
    "--config.train.save_every_steps=40",
    "--config.optim.warmup_steps=10",
]


@pytest.fixture(scope="module")
def data_args(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.write_demo_dataset(
        root / "raw", num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30
    )
    args = [
        "--config.data.source=beat",
        f"--config.data.raw_root={root / 'raw'}",
        f"--config.data.root={root / 'prepared'}",
    ]
    # Prepare once, here, so that the runs below only read the cache.
    subprocess.run(
        [sys.executable, "launch.py", "--mode", "prepare", "--config", "configs/demo.py", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return args


def start(workdir, data_args, *extra):
    """launch.py on the tiny model in the background (`tiny_run.start_launch`)."""
    return start_launch(workdir, [*TINY, *data_args, *extra], {**os.environ, "JAX_PLATFORMS": "cpu"})


def wait_for_step(workdir, step, process, timeout=300):
    """Block until metrics.jsonl has a row at `step` or later (the run is past it)."""
    path = Path(workdir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, output(process)[-3000:]
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
            if rows and rows[-1]["step"] >= step:
                return rows[-1]["step"]
        time.sleep(0.05)
    raise AssertionError(f"{workdir} did not reach step {step} in {timeout} s")


def saved_items(workdir, step=None):
    """Every array of the checkpoint (params, EMA, optimizer and train state) as a flat dict of numpy."""
    ckpt = checkpoint.Checkpointer(workdir, read_only=True)
    step = ckpt.latest_step() if step is None else step
    names = ("params", "ema_params", "train_state")
    restored = ckpt.manager.restore(
        step, args=ocp.args.Composite(**{n: ocp.args.StandardRestore() for n in names})
    )
    flat = {}
    for name in names:
        for path, leaf in _flatten(restored[name], name):
            flat[path] = np.asarray(leaf)
    return step, flat


def _flatten(tree, prefix):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}/{key}")
    elif isinstance(tree, list | tuple):
        for index, value in enumerate(tree):
            yield from _flatten(value, f"{prefix}/{index}")
    else:
        yield prefix, tree


def assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
    assert not different, f"not bitwise equal: {different[:5]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_args):
    workdir = tmp_path_factory.mktemp("reference")
    finish(start(workdir, data_args))
    step, items = saved_items(workdir)
    assert step == STEPS
    return workdir, items


def test_sigkill_then_restart_equals_an_uninterrupted_run_bitwise(tmp_path, data_args, reference):
    ref_dir, ref_items = reference
    # Saving every few steps, a kill may land inside a checkpoint write. (Killed at step 25, not later: each
    # save costs the run ~0.4 s, and the kill lands among the saves wherever it comes.)
    process = start(tmp_path, data_args, "--config.train.save_every_steps=3")
    wait_for_step(tmp_path, 25, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    ckpt_dir = tmp_path / "checkpoints"
    # Whether or not the kill hit a write, leave a half-written checkpoint for the restart to clean up.
    latest = checkpoint.Checkpointer(tmp_path, read_only=True).latest_step()
    partial = ckpt_dir / f"{latest + 1}.orbax-checkpoint-tmp"
    if not partial.exists():
        shutil.copytree(ckpt_dir / str(latest), partial)
        shutil.rmtree(partial / "train_state")
    # The restart saves as the reference run did (train.* may change on a resume): its ~30 saves every 3
    # steps would test nothing the kill above does not, and the bits must not depend on when it saves.
    out = finish(start(tmp_path, data_args))
    assert f"resumed from {ckpt_dir}/" in out
    assert not [p for p in ckpt_dir.iterdir() if "tmp" in p.name], sorted(os.listdir(ckpt_dir))
    step, items = saved_items(tmp_path)
    assert step == STEPS
    assert_bitwise_equal(items, ref_items)
    # The log reads like one run: every step once, in order (rows after the resumed step were re-logged).
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, STEPS + 1, 5))
    ref_rows = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_sigterm_saves_the_current_step_exits_0_and_the_restart_continues(tmp_path, data_args, reference):
    _, ref_items = reference
    process = start(tmp_path, data_args)
    reached = wait_for_step(tmp_path, 45, process)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    out = finish(process, timeout=60)
    assert time.time() - sent < 30
    stopped = checkpoint.Checkpointer(tmp_path, read_only=True).latest_step()
    assert reached <= stopped < STEPS, (stopped, reached)
    assert f"stopped by SIGTERM at step {stopped} of {STEPS}" in out
    out = finish(start(tmp_path, data_args))
    assert f"resumed from {tmp_path.resolve() / 'checkpoints'}/{stopped} (step {stopped} of {STEPS})" in out
    step, items = saved_items(tmp_path)
    assert step == STEPS
    assert_bitwise_equal(items, ref_items)


def test_train_without_config_goes_on_with_the_runs_recorded_config(tmp_path, data_args, reference):
    """`launch.py --workdir RUN --config.train.num_steps=N`, no --config: the run's own config (run.json)
    with that override, the same training as when every override is given again with --config; a
    folder that holds no run still asks for --config. The run given every override again is also the
    check that raising num_steps on a finished run continues it (one launch.py run serves both)."""
    ref_dir, _ = reference
    again, resumed = tmp_path / "again", tmp_path / "resumed"
    shutil.copytree(ref_dir, again)
    shutil.copytree(ref_dir, resumed)
    out = finish(start(again, data_args, f"--config.train.num_steps={STEPS + 10}"))
    # Raising num_steps on a finished run continues it.
    assert f"the run's length changed from {STEPS} to {STEPS + 10} steps" in out
    assert checkpoint.Checkpointer(again, read_only=True).latest_step() == STEPS + 10
    command = [sys.executable, "launch.py", f"--workdir={resumed}", f"--config.train.num_steps={STEPS + 10}"]
    env = launch_env()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    record = resumed / "run.json"
    assert f"config: the one {record} records, with train.num_steps={STEPS + 10}" in result.stdout
    assert f"the run's length changed from {STEPS} to {STEPS + 10} steps" in result.stdout
    step, items = saved_items(resumed)
    assert step == STEPS + 10
    assert_bitwise_equal(items, saved_items(again)[1])

    # The data moved: a resume given its new place records it in its checkpoints, and the next resume
    # without --config goes on there, not at run.json's first place.
    prepared = next(a for a in data_args if a.startswith("--config.data.root=")).split("=", 1)[1]
    moved = tmp_path / "moved"
    shutil.copytree(prepared, moved)
    onward = [*command[:3], f"--config.train.num_steps={STEPS + 11}"]
    result = subprocess.run(
        [*onward, f"--config.data.root={moved}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and saved_items(resumed)[0] == STEPS + 11, result.stderr[-2000:]
    result = subprocess.run(onward, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (
        f"config: as the latest checkpoint (step {STEPS + 11}) trained, data.root='{moved}'" in result.stdout
    )
    # Nothing given: the length the last resume set, not run.json's (which had trained on past its end).
    result = subprocess.run(command[:3], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"data.root='{moved}', train.num_steps={STEPS + 11}" in result.stdout
    assert f"already at step {STEPS + 11}, at or past its {STEPS + 11} steps" in result.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = subprocess.run(
        [sys.executable, "launch.py", f"--workdir={empty}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "needs --config configs/<name>.py (or --workdir of a run to resume" in refused.stderr
    (empty / "run.json").write_text('{"config": null}')  # damaged: a clear error, not a traceback
    damaged = subprocess.run(
        [sys.executable, "launch.py", f"--workdir={empty}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert damaged.returncode != 0 and "Traceback" not in damaged.stderr
    assert f"{empty / 'run.json'}: unreadable run record" in damaged.stderr


# ------------------------------------------------------------------ non-finite batches, in process


def tiny_config(tmp_path, data_args, **train_fields):
    from motion_ddpm_jax.config import base_config

    config = base_config()
    for arg in [*TINY, *data_args]:
        key, value = arg.removeprefix("--config.").split("=", 1)
        section, field = key.split(".")
        current = config[section][field]
        config[section][field] = type(current)(value) if not isinstance(current, str) else value
    config.data.fps = 30.0
    config.train.update(train_fields)
    return config


def test_nan_batches_are_skipped_and_a_diverging_run_stops_with_its_last_checkpoint_intact(
    tmp_path, data_args, monkeypatch
):
    real_batch = pipeline.BatchSource.batch
    poisoned = {7} | set(range(40, 10_000))

    def batch(self, step):
        out = real_batch(self, step)
        if step in poisoned:
            out = {**out, "motion": np.full_like(out["motion"], np.nan)}
        return out

    monkeypatch.setattr(pipeline.BatchSource, "batch", batch)
    config = tiny_config(
        tmp_path, data_args, num_steps=200, save_every_steps=20, max_consecutive_nonfinite=10
    )
    with pytest.raises(
        FloatingPointError,
        match=r"step 50: the last 10 steps had non-finite gradients.*\(the checkpoint of step 40 in .* is "
        r"intact\)\. A lower optim\.lr is a new run",
    ):
        train.run(config, tmp_path, log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows}
    assert by_step[5]["skipped_steps"] == 0 and by_step[10]["skipped_steps"] == 1  # step 7's batch
    assert all(np.isfinite(r["loss_mot_rec"]) for r in rows if r["step"] <= 40)
    # Checkpoints 20 and 40 hold good (finite) parameters; the first poisoned step was 41 (index 40).
    ckpt = checkpoint.Checkpointer(tmp_path, read_only=True)
    assert ckpt.all_steps() == [20, 40]
    _, items = saved_items(tmp_path)
    assert all(np.isfinite(v).all() for v in items.values() if v.dtype.kind == "f")


def test_a_run_diverging_before_its_first_checkpoint_says_there_is_none(tmp_path, data_args, monkeypatch):
    real_batch = pipeline.BatchSource.batch
    monkeypatch.setattr(
        pipeline.BatchSource,
        "batch",
        lambda self, step: {**real_batch(self, step), "motion": np.full((4, 16, 264), np.nan, np.float32)},
    )
    config = tiny_config(tmp_path, data_args, num_steps=50, save_every_steps=20, max_consecutive_nonfinite=3)
    with pytest.raises(FloatingPointError, match=r"step 5: .*\(no checkpoint was saved before them\)"):
        train.run(config, tmp_path, log=lambda *_: None)
    assert checkpoint.Checkpointer(tmp_path, read_only=True).all_steps() == []


def test_a_workdir_it_cannot_write_is_named_with_what_to_do(tmp_path, data_args, monkeypatch):
    """A read-only copy of a run (or a colleague's folder, or a read-only mount) given as --workdir: the
    error names the flag and the folder and says what to do, not a bare [Errno 13]. (The suite may run as
    root, whom file modes do not stop, so the lock's open is what fails here.) Other OS errors pass as
    they are."""
    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    workdir = tmp_path / "copy_of_a_run"

    def refuse(code):
        def lock(folder):
            raise OSError(code, os.strerror(code), str(folder / train.LOCK))

        return lock

    for code in (errno.EACCES, errno.EROFS):
        monkeypatch.setattr(train, "workdir_lock", refuse(code))
        with pytest.raises(
            UserError,
            match=r"--workdir .*copy_of_a_run: cannot write there \(.*\.train\.lock\)"
            r".*give a --workdir you can write to"
            # cp -a (as cp -r) keeps a read-only run's modes: the copy alone is refused as the original
            # was, so the advice names the chmod that makes the copy writable
            rf".*`cp -a {re.escape(str(workdir))} <copy> && chmod -R u\+w <copy>`",
        ):
            train.run(config, workdir, log=lambda *_: None)
    monkeypatch.setattr(train, "workdir_lock", refuse(errno.EIO))
    with pytest.raises(OSError) as raised:
        train.run(config, workdir, log=lambda *_: None)
    assert raised.value.errno == errno.EIO and not isinstance(raised.value, UserError)
    assert not list(workdir.glob("checkpoints/*"))


def test_a_run_whose_checkpoint_folder_was_renamed_is_not_restarted_from_an_earlier_step(tmp_path, data_args):
    """A run whose latest checkpoint was renamed (`mv checkpoints/4 checkpoints/best`, or copied in under
    another name) had resumed from the step before it, or started anew from step 0 where it was the only
    one, without a word, dropping its metrics.jsonl rows past that step: Orbax reads checkpoints/<step>
    alone. It is refused before anything is written, naming the folder, the step it holds and the
    renaming; a renamed copy of an earlier step is no matter; renamed as said, the run resumes from it."""
    config = tiny_config(tmp_path, data_args, num_steps=4, save_every_steps=2, log_every=2)
    workdir = tmp_path / "run"
    train.run(config, workdir, log=lambda *_: None)
    folder = workdir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["2", "4"]
    (folder / "4").rename(folder / "best")
    shutil.copytree(folder / "2", folder / "copy_of_2")
    rows = (workdir / "metrics.jsonl").read_bytes()
    assert [json.loads(line)["step"] for line in rows.splitlines()] == [2, 4]
    mv = rf"`mv {re.escape(str(folder))}/best {re.escape(str(folder))}/4`"
    with pytest.raises(
        UserError, match=rf"its latest checkpoint is step 2, but .*: best \(training step 4\); .*{mv}"
    ):
        train.run(config, workdir, log=lambda *_: None)
    (folder / "2").rename(folder / "old")  # now no step folder at all: it had started from step 0
    with pytest.raises(
        UserError, match=rf"no checkpoint to resume from, but .*best \(training step 4\).*{mv}"
    ):
        train.run(config, workdir, log=lambda *_: None)
    assert (workdir / "metrics.jsonl").read_bytes() == rows
    assert sorted(p.name for p in folder.iterdir()) == ["best", "copy_of_2", "old"]
    (folder / "best").rename(folder / "4")
    (folder / "old").rename(folder / "2")
    lines = []
    config.train.num_steps = 6
    train.run(config, workdir, log=lines.append)
    assert any("resumed from" in line and "step 4 of 6" in line for line in lines)


def test_a_checkpoint_like_folder_without_a_readable_step_is_noted_beside_a_readable_checkpoint(
    tmp_path, data_args
):
    """A folder of checkpoints/ under a name that is not a step, whose train_state's step cannot be read
    (a sampling copy without train_state here), cannot be resumed from, renamed or not: a resume from the
    run's readable checkpoint had been refused for it, with a 'rename it so' that names no step. It is
    noted and the run goes on; with no readable checkpoint the resume is still refused (it would start
    anew from step 0 beside it)."""
    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2, log_every=2)
    workdir = tmp_path / "run"
    train.run(config, workdir, log=lambda *_: None)
    folder = workdir / "checkpoints"
    shutil.copytree(folder / "2", folder / "for_sampling")
    shutil.rmtree(folder / "for_sampling" / "train_state")
    lines = []
    config.train.num_steps = 4
    train.run(config, workdir, log=lines.append)
    assert any("resumed from" in line and "step 2 of 4" in line for line in lines), lines
    assert any("note: " in line and "(for_sampling)" in line for line in lines), lines
    assert [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()] == [
        2,
        4,
    ]
    for step in ("2", "4"):
        shutil.move(folder / step, tmp_path / step)
    with pytest.raises(UserError, match=r"no checkpoint to resume from, but .*for_sampling"):
        train.run(config, workdir, log=lambda *_: None)


def test_steps_per_second_leaves_out_checkpoints_and_the_summary_holds_the_last_metrics_row(
    tmp_path, data_args, monkeypatch, capsys
):
    """steps/s (metrics.jsonl, the progress line) is the training's rate: a log window that holds a slow
    checkpoint (here 1.5 s, a network file system's) is not slower for it, nor the first for compiling.
    train.run's `final_metrics` is the last metrics.jsonl row (the means over its steps), not the one
    step's values that ended it: a notebook reading the summary sees the numbers the log shows. The
    progress line goes to run's `log` with its other lines (it was printed whatever `log` was). One run
    checks both (each had trained one of its own)."""
    saves = []
    real_save = checkpoint.Checkpointer.save

    def slow_save(self, step, *args, **kwargs):
        time.sleep(1.5)
        saves.append(step)
        return real_save(self, step, *args, **kwargs)

    losses = []
    real_means = train.window_means

    def recording_means(window):  # each step's own loss, as the train step returned it
        losses.append([float(np.asarray(metrics["loss"]).reshape(-1)[0]) for metrics in window])
        return real_means(window)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", slow_save)
    monkeypatch.setattr(train, "window_means", recording_means)
    config = tiny_config(tmp_path, data_args, num_steps=6, save_every_steps=2, log_every=2)
    capsys.readouterr()
    lines = []
    summary = train.run(config, tmp_path / "run", log=lines.append)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert saves == [2, 4, 6] and [r["step"] for r in rows] == [2, 4, 6]
    # Windows 2-4 and 4-6 each hold a 1.5 s save: counted, their rate could not exceed 2 / 1.5 = 1.33.
    assert all(r["steps_per_s"] > 2.0 for r in rows), rows
    assert all(r["samples_per_s"] == pytest.approx(4 * r["steps_per_s"]) for r in rows)

    assert "step 6/6" not in capsys.readouterr().out
    assert any(line.startswith("[####################] step 6/6 loss=") for line in lines), lines
    assert [len(window) for window in losses] == [2, 2, 2]
    final = summary["final_metrics"]
    assert all(type(value) is float for value in final.values()), final
    # The mean of the last window's two steps' losses, summed here in float64 (the last alone differs
    # from it).
    assert final["loss"] == pytest.approx(np.mean(np.array(losses[-1], np.float64)), rel=1e-6)
    assert final == pytest.approx({k: v for k, v in rows[-1].items() if k != "step"}, rel=1e-12)


def test_resuming_checks_the_data_and_says_what_changed(tmp_path, data_args, monkeypatch):
    """A run resumes on its own data wherever it lies now (a moved copy of the prepared folder), refuses
    other data behind the same fields (its parameters were trained under the first data's statistics),
    says when the warmup follows a new epoch length, how far the learning rate jumps with a new length,
    where a new batch size reads in the data order and that other devices end its bitwise equality, and
    trains nothing past its end."""
    workdir, lines = tmp_path / "run", []
    config = tiny_config(tmp_path, data_args, num_steps=10, save_every_steps=10)
    config.optim.warmup_steps = -1  # min(500, steps per epoch): the batch size decides it
    train.run(config, workdir, log=lines.append)
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [10]
    metadata = checkpoint.Checkpointer(workdir, read_only=True).restore_metadata()
    assert metadata["data_root"] == str(Path(config.data.root).resolve())  # for an eval given no config
    record, metrics = (workdir / train.RUN_RECORD).read_bytes(), (workdir / "metrics.jsonl").read_bytes()

    other_raw = tmp_path / "other_raw"
    synthetic.write_demo_dataset(
        other_raw, num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30, seed=5
    )
    other = tiny_config(tmp_path, data_args, num_steps=12, save_every_steps=10)
    other.optim.warmup_steps = -1
    other.data.raw_root, other.data.root = str(other_raw), str(tmp_path / "other_prepared")
    with pytest.raises(checkpoint.CheckpointError, match=r"trained on other data.*normalisation statistics"):
        train.run(other, workdir, log=lambda *_: None)
    assert (workdir / train.RUN_RECORD).read_bytes() == record
    assert (workdir / "metrics.jsonl").read_bytes() == metrics

    moved = tmp_path / "moved_prepared"
    shutil.copytree(config.data.root, moved)
    again = tiny_config(tmp_path, data_args, num_steps=12, save_every_steps=10, batch_size=2)
    again.optim.warmup_steps = -1
    again.data.root, again.data.raw_root = str(moved), str(tmp_path / "raw_gone")
    lines.clear()
    monkeypatch.setattr(train, "_topology", lambda: {"process_count": 1, "device_count": 3})
    train.run(again, workdir, log=lines.append)
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [10, 12]
    warmup = [line for line in lines if line.startswith("the warmup changed from ")]
    assert len(warmup) == 1, lines
    # The schedule's jump, against the schedule's formula: the 10-step run had ended its cosine at min_lr;
    # step 11 of 12 (index 10) lies 10 - w of 12 - w steps into the new one's cosine (warmup w, capped at 11).
    new_warmup = min(int(re.search(r"and (\d+) now", warmup[0]).group(1)), 11)
    length = next(line for line in lines if line.startswith("the run's length changed from 10 to 12 steps"))
    now, then = (
        float(v)
        for v in re.search(r"trains at lr (\S+) where the run's schedule gave (\S+);", length).groups()
    )
    lr, min_lr = again.optim.lr, again.optim.min_lr
    assert then == pytest.approx(min_lr, rel=5e-3)
    cosine = min_lr + (lr - min_lr) * 0.5 * (1 + np.cos(np.pi * (10 - new_warmup) / (12 - new_warmup)))
    assert now == pytest.approx(cosine, rel=5e-3) and "will not equal one started with 12 steps" in length
    # The data order follows step x batch size: step 11 at batch 2 reads where the run (batch 4) was at
    # step 6, i.e. half as far into the epochs as the run had come.
    batch = next(line for line in lines if line.startswith("train.batch_size changed from 4 to 2"))
    reads, reached = (
        float(v) for v in re.search(r"reads from epoch (\S+) of .* reached epoch (\S+)$", batch).groups()
    )
    lengths = [len(m) for m in motion_text.open_dataset(moved).split("train").motions]
    clips = sum(n >= again.data.min_motion_length for n in lengths)  # the clips the batches draw from
    assert reached == pytest.approx(10 * 4 / clips, rel=5e-3) and reads == pytest.approx(
        10 * 2 / clips, rel=5e-3
    )
    assert any(
        "the devices changed since checkpoint 10 was saved: 1 process(es), 1 device(s) -> 1, 3" in line
        for line in lines
    ), lines

    lines.clear()
    metrics = (workdir / "metrics.jsonl").read_bytes()
    again.train.num_steps, again.train.batch_size = 8, 4
    summary = train.run(again, workdir, log=lines.append)
    assert any("already at step 12, at or past its 8 steps: nothing to train" in line for line in lines), (
        lines
    )
    # No step trains, so nothing is said of how step 13 would (it had said "step 13 trains at lr ...").
    said = ("the run's length changed", "train.batch_size changed", "the warmup changed", "the devices")
    assert not [line for line in lines if line.startswith(said)], lines
    assert summary["final_metrics"] is None
    assert (workdir / "metrics.jsonl").read_bytes() == metrics
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [10, 12]


def test_a_config_refused_against_the_data_leaves_the_workdir_to_the_corrected_one(tmp_path, data_args):
    """A config the data refuses (no clip long enough, a vocabulary the captions do not give) is one
    clear error, and writes no run record: the corrected config then trains in the same workdir. The
    corrected config trains once, after both refusals (each field had its own test and its own run of
    the same corrected config; each refusal leaves the empty folder asserted after it)."""
    workdir = tmp_path / "run"
    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    for field, value in [("data.min_motion_length", 100_000), ("model.text_vocab_size", 300)]:
        section, name = field.split(".")
        wrong = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
        wrong[section][name] = value
        shutil.rmtree(workdir, ignore_errors=True)
        with pytest.raises(UserError, match=rf"the config does not fit the data at .*{name}"):
            train.run(wrong, workdir, log=lambda *_: None)
        assert not workdir.exists(), field  # nor its lock file or an empty checkpoint folder
        workdir.mkdir()
        (workdir / "checkpoints").mkdir()  # as an older refused start left them
        (workdir / train.LOCK).touch()
        with pytest.raises(UserError, match=rf"the config does not fit the data at .*{name}"):
            train.run(wrong, workdir, log=lambda *_: None)
        assert sorted(p.name for p in workdir.iterdir()) == [], field  # a folder it found, kept
    lines = []
    train.run(config, workdir, log=lines.append)
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2]
    assert not [line for line in lines if "is more than the" in line]
    clips = len(beat.dataset_from_config(config).split("train").ids)
    bigger = tiny_config(tmp_path, data_args, num_steps=1, save_every_steps=1, batch_size=4 * clips)
    train.run(bigger, tmp_path / "bigger", log=lines.append)
    assert (
        f"train.batch_size={4 * clips} is more than the {clips} clips of the training split: every batch "
        "holds each clip about 4 times" in "\n".join(lines)
    )


def test_a_run_an_earlier_version_let_start_with_none_in_a_field_resumes(tmp_path, data_args, monkeypatch):
    """A run whose config holds None in an integer field (a config file's "unset": earlier versions read
    data.max_clip_length=None as 0 and trained) resumes through launch.py, without --config and with
    its run.json; a new run from that run.json is refused, naming the field."""
    from motion_ddpm_jax import config as config_lib

    workdir = tmp_path / "run"
    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    config.data.max_clip_length = None  # what validate now refuses: the earlier version, which did not
    with monkeypatch.context() as earlier:
        earlier.setattr(config_lib, "validate", lambda *args, **kwargs: None)
        train.run(config, workdir, log=lambda *_: None)
    env = launch_env()
    resumed = subprocess.run(
        [sys.executable, "launch.py", f"--workdir={workdir}", "--config.train.num_steps=3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resumed from {workdir / 'checkpoints' / '2'} (step 2 of 3)" in resumed.stdout
    assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() == 3
    new = subprocess.run(
        [sys.executable, "launch.py", "--mode=config", f"--config={workdir / 'run.json'}",
         f"--workdir={tmp_path / 'new'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert new.returncode != 0
    assert "config field data.max_clip_length is None; expected an integer" in new.stderr


def test_a_run_an_earlier_version_let_start_with_a_seed_past_32_bits_resumes_saying_its_seed(
    tmp_path, data_args, monkeypatch
):
    """seed 2**32 + 5 (which validate now refuses for a new run) trained, under an earlier version, with
    the JAX keys of seed 5 while its batches followed the whole seed; a resume says so."""
    import jax

    from motion_ddpm_jax import config as config_lib

    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    config.seed = 2**32 + 5
    with monkeypatch.context() as earlier:
        earlier.setattr(config_lib, "validate", lambda *args, **kwargs: None)
        train.run(config, tmp_path / "run", log=lambda *_: None)
    # What the claim rests on, here: the keys of both seeds are one key.
    assert np.array_equal(
        jax.random.key_data(jax.random.key(2**32 + 5)), jax.random.key_data(jax.random.key(5))
    )
    config.train.num_steps = 3
    said = []
    train.run(config, tmp_path / "run", log=said.append)
    assert any(
        line.startswith("seed 4294967301 draws the JAX keys") and "of seed 5:" in line for line in said
    )


HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
handle.write("pid 4242 on the-other-host\\n")
handle.flush()
fcntl.flock(handle, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_training_process_in_the_same_workdir_is_refused_until_the_first_ends(tmp_path, data_args):
    """Two runs in one workdir would write the same checkpoints (and the second would remove the first's
    checkpoint in progress): while a process holds the workdir's lock, training there is refused, naming
    it; once that process is gone (here killed: the kernel releases its lock), training proceeds."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(workdir / train.LOCK)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
        with pytest.raises(train.WorkdirError, match=r"in use by another training process \(pid 4242 on"):
            train.run(config, workdir, log=lambda *_: None)
        assert sorted(p.name for p in workdir.iterdir()) == [train.LOCK]  # nothing else written
    finally:
        holder.kill()
        holder.wait()
    train.run(config, workdir, log=lambda *_: None)
    assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [2]
    assert (workdir / train.LOCK).read_text().startswith(f"pid {os.getpid()} on ")


def test_a_lock_file_removed_between_its_open_and_its_lock_is_opened_again(tmp_path, monkeypatch):
    """A refused start removes its own lock file while it still holds the lock; a process that opened that
    file just before would otherwise lock the removed file, and a third then the new one: two trainers in
    one workdir. workdir_lock checks that the file it locked is the one the path names, else opens again."""
    import fcntl

    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_left(handle, operation):
        calls.append(operation)
        if len(calls) == 1:  # the holder removes the file this process has opened, then lets go
            (tmp_path / train.LOCK).unlink()
        return real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    with train.workdir_lock(tmp_path):
        assert (tmp_path / train.LOCK).read_text().startswith(f"pid {os.getpid()} on ")
        with open(tmp_path / train.LOCK) as other, pytest.raises(BlockingIOError):
            real_flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the file at the path is the one held
    assert len([c for c in calls if c & fcntl.LOCK_EX]) == 2


SIGTERM_IN_SETUP = """
import os, signal, sys
# as started from a terminal: a suite started in the background (`pytest &` in a script) passes SIGINT on
# ignored, and a Ctrl-C ignored where a run starts stays so (test_ctrl_c_while_training_...)
signal.signal(signal.SIGINT, signal.SIG_DFL)
sys.path.insert(0, {root!r})
from motion_ddpm_jax import train
real = train._dataset_once_per_run
def dataset_after_a_sigterm(config, log):
    os.kill(os.getpid(), signal.{signal})  # preempted (or Ctrl-C) while it loads its data
    return real(config, log)
train._dataset_once_per_run = dataset_after_a_sigterm
sys.path.insert(0, {tests!r})
import test_resume
config = test_resume.tiny_config(None, {data_args!r}, num_steps=10, save_every_steps=10)
summary = train.run(config, {workdir!r})
print("SUMMARY", summary["stopped_at"])
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_sigterm_during_set_up_stops_cleanly_at_step_0(tmp_path, data_args, signal_name):
    """Preempted before its first step (while loading data, restoring or compiling), a run stops at the
    first step boundary with a checkpoint of step 0 and exit status 0, as later on; not killed by the
    signal with status 143. A Ctrl-C there stops at once (a user stopping a wrong start), leaving the
    workdir to the corrected config: no run record, no checkpoint."""
    script = SIGTERM_IN_SETUP.format(
        root=str(ROOT), tests=str(ROOT / "tests"), data_args=data_args, workdir=str(tmp_path / "run"),
        signal=signal_name,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env=launch_env(), cwd=ROOT,
    )  # fmt: skip
    if signal_name == "SIGINT":
        assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr, done.stderr[-3000:]
        assert not (tmp_path / "run").exists()  # made by this start, removed again
        return
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped by SIGTERM at step 0 of 10" in done.stdout and "SUMMARY 0" in done.stdout, done.stdout
    assert checkpoint.Checkpointer(tmp_path / "run", read_only=True).all_steps() == [0]


SIGTERM_AFTER_THE_JOIN = """
import os, signal, sys
sys.path.insert(0, {root!r})
from motion_ddpm_jax import compile_cache
real = compile_cache.enable
def enable_after_a_sigterm(*args, **kwargs):  # launch.py's next call after the join
    os.kill(os.getpid(), signal.SIGTERM)  # the scheduler preempts the job as its processes have joined
    return real(*args, **kwargs)
compile_cache.enable = enable_after_a_sigterm
"""


def test_a_sigterm_between_the_join_and_the_trainer_stops_cleanly_at_step_0(tmp_path, data_args):
    """A SIGTERM after launch.py's join (jax.distributed) and before train.run installs its handler ended
    the process with status 143 (the others of the run then stopped as when a process is killed): it is
    held from the join on, and the run stops at its first step with a checkpoint and status 0, as on a
    SIGTERM during train.run's set-up. One process here: launch.py takes the same path with or without
    others to join."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(SIGTERM_AFTER_THE_JOIN.format(root=str(ROOT)))
    given = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "inject"), *([given] if given else [])]),
    }
    process = start_launch(tmp_path / "run", [*TINY, *data_args], env)
    process.wait(timeout=300)
    out = output(process)
    assert process.returncode == 0, out[-3000:]
    assert f"stopped by SIGTERM at step 0 of {STEPS}, before training a step" in out, out[-3000:]
    assert checkpoint.Checkpointer(tmp_path / "run", read_only=True).all_steps() == [0]


def test_ctrl_c_while_training_saves_a_checkpoint_and_a_second_stops_at_once(monkeypatch):
    """The flag's handling of SIGINT, driven directly: once the loop runs, a first Ctrl-C asks for a
    checkpoint and a stop (it had raised wherever it came, once inside a callback that swallowed it);
    the second raises. A SIGINT ignored where the process started (`cmd &` in a script) stays ignored."""
    import signal

    flag = train._PreemptionFlag()
    try:
        flag.training = True
        flag._handle(signal.SIGINT, None)
        assert flag.raised and flag.name == "Ctrl-C" and flag.agreed(7, 10)
        with pytest.raises(KeyboardInterrupt):
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    finally:
        flag.restore()
    monkeypatch.setattr(signal, "getsignal", lambda sig: signal.SIG_IGN if sig == signal.SIGINT else None)
    installed = []
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig))
    train._PreemptionFlag()
    assert installed == [signal.SIGTERM]


def test_progress_samples_and_curves_are_rendered_during_training(tmp_path, data_args, monkeypatch):
    from PIL import Image

    from motion_ddpm_jax import render

    titles = []
    real_animate = render.animate_skeletons

    def animate(*args, **kwargs):
        titles.append(kwargs["titles"])
        return real_animate(*args, **kwargs)

    monkeypatch.setattr(render, "animate_skeletons", animate)
    config = tiny_config(tmp_path, data_args, num_steps=4, sample_every=2, save_every_steps=0, log_every=1)
    config.train.sample_captions = "wave both hands|point to the left"
    config.model.text_max_length = 12  # the demo's: 10 tokens for a caption's words (see below)
    config.sample.num_frames = 12
    config.sample.steps = 5
    logged = []
    train.run(config, tmp_path, log=logged.append)
    assert not [line for line in logged if "rendering progress samples failed" in line], logged
    progress = tmp_path / "progress"
    assert sorted(p.name for p in progress.iterdir()) == [
        "curves.png",
        "step_0000002.gif",
        "step_0000004.gif",
    ]
    with Image.open(progress / "step_0000004.gif") as gif:
        assert gif.n_frames == 12
    assert titles == [  # each panel says the step it shows (a GIF copied into a figure keeps no file name)
        ["step 2: wave both hands", "step 2: point to the left"],
        ["step 4: wave both hands", "step 4: point to the left"],
    ]
    with Image.open(progress / "curves.png") as png:
        assert png.format == "PNG"
    # Killed while drawing step 4's samples (after its checkpoint): resuming from step 4 draws them, and
    # leaves step 2's as they were.
    (progress / "step_0000004.gif").unlink()
    logged_first = list(logged)
    before = (progress / "step_0000002.gif").stat().st_mtime_ns
    config.train.num_steps = 5
    config.sample.num_frames = 40  # more than the model's 16 frames: drawn at 16, and said
    # Progress captions longer than the model reads (text_max_length 12: 10 tokens for words): each
    # GIF silences generate's warning, so the run says it once, at its start (nothing had). Words the
    # vocabulary lacks take 1 + their bytes: "both hands" alone takes 11, "to the left" 12 (the demo's
    # captions are gesture and filler words), so the first run's two captions were cut; here one made-up
    # word of 10 letters takes 11 tokens, and "wave" fits whether the vocabulary has it or not (1 or 5).
    (said,) = [line for line in logged_first if "progress caption" in line]
    assert said.startswith("train.sample_every: progress caption 0 ('wave both hands') takes "), said
    assert "; caption 1 ('point to the left') takes " in said and said.endswith(
        "; the progress samples read the first 10 (model.text_max_length 12 less bos and eos)"
    ), said
    config.train.sample_captions = "wave|qwxzvbnmkj"
    logged.clear()
    train.run(config, tmp_path, log=logged.append)
    assert [line for line in logged if "progress caption" in line] == [
        "train.sample_every: progress caption 1 ('qwxzvbnmkj') takes 11 tokens; the progress samples read "
        "the first 10 (model.text_max_length 12 less bos and eos)"
    ], logged
    assert (progress / "step_0000004.gif").is_file() and (progress / "step_0000005.gif").is_file()
    assert (progress / "step_0000002.gif").stat().st_mtime_ns == before
    with Image.open(progress / "step_0000005.gif") as gif:
        assert gif.n_frames == 16
    assert "train.sample_every: progress samples are 16 frames long" in " ".join(logged)


def test_the_renderers_missing_glyph_message_is_logged_for_the_first_progress_gif_only(tmp_path):
    """Its text holds the GIF's path and the titles, which start with the step: a key of the text had
    logged it again for every progress GIF."""
    logged = []
    renderer = train.ProgressRenderer(None, tmp_path, {}, ["挥手 wave"], log=logged.append)
    for step in (100, 200, 300):
        renderer._log_once(f"{tmp_path}/step_{step:07d}.gif: panel 1 'step {step}: 挥手 wave': 挥 手")
    assert len(logged) == 1 and logged[0].startswith(f"{tmp_path}/step_0000100.gif: panel 1 'step 100")


def test_a_checkpoint_copied_in_from_another_run_or_renamed_is_named_not_resumed(tmp_path, data_args):
    """Another run's checkpoint copied into checkpoints/ is named (the folder, not the whole workdir) as
    a run of another config, possibly copied; a checkpoint renamed to another step (its train_state says
    step 2, its folder 3) is refused as not the checkpoint its name says, rather than resumed at the
    wrong step of the schedule and the data order."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    config = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    train.run(config, mine, log=lambda *_: None)
    other = tiny_config(tmp_path, data_args, num_steps=2, save_every_steps=2)
    other.seed = 1
    train.run(other, theirs, log=lambda *_: None)
    shutil.copytree(theirs / "checkpoints" / "2", mine / "checkpoints" / "4")
    config.train.num_steps = 6
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"checkpoints/4 holds a checkpoint of a run whose config differs in seed \(1 -> 0\) \(copied",
    ):
        train.run(config, mine, log=lambda *_: None)
    shutil.rmtree(mine / "checkpoints" / "4")
    (mine / "checkpoints" / "2").rename(mine / "checkpoints" / "3")
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"checkpoints/3: is not the checkpoint its folder's name says \(ValueError: its train_state "
        r"is at step 2\)",
    ):
        train.run(config, mine, log=lambda *_: None)
    assert checkpoint.Checkpointer(mine, read_only=True).all_steps() == [3]  # nothing removed


def test_a_schedule_problem_is_refused_at_a_first_start_and_told_on_a_resume(tmp_path, data_args, reference):
    """A warmup not shorter than the run (less one) is refused before a new run writes anything; a run
    that has one on a resume (a shorter train.num_steps, or a run an earlier version let start so: its
    optim.* cannot change) is told and goes on."""
    fresh = tmp_path / "fresh"
    result = subprocess.run(
        [sys.executable, "launch.py", "--config", "configs/demo.py", f"--workdir={fresh}", *TINY, *data_args,
         "--config.train.num_steps=10"],
        cwd=ROOT, capture_output=True, text=True, env=launch_env({**os.environ, "JAX_PLATFORMS": "cpu"}),
    )  # fmt: skip
    assert result.returncode == 1 and not fresh.exists(), result.stderr[-2000:]
    assert "optim.warmup_steps is 10, not shorter than train.num_steps (10) less one" in result.stderr
    ref_dir, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    out = finish(start(workdir, data_args, "--config.train.num_steps=11"))
    assert "optim.warmup_steps is 10, not shorter than train.num_steps (11) less one" in out
    assert "this resume goes on so (optim.* cannot change on resume)" in out
    assert f"already at step {STEPS}" in out


def write_humanml3d_clips(root, listed):
    """A HumanML3D folder of 9 clips (263 features, 60 + 5 i frames, one whole-clip caption each) whose
    train.txt lists the first `listed`; Mean.npy and Std.npy do not depend on it, as HumanML3D's."""
    (root / "new_joint_vecs").mkdir(parents=True, exist_ok=True)
    (root / "texts").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(9):
        motion = 0.1 * rng.normal(size=(60 + 5 * i, 263))
        np.save(root / "new_joint_vecs" / f"{i:06d}.npy", motion.astype(np.float32))
        (root / "texts" / f"{i:06d}.txt").write_text(f"a person moves {i}#a/DET#0.0#0.0\n")
    mean = np.zeros(263, np.float32)
    mean[3] = 0.95  # a standing root's height in metres
    np.save(root / "Mean.npy", mean)
    np.save(root / "Std.npy", np.ones(263, np.float32))
    (root / "train.txt").write_text("".join(f"{i:06d}\n" for i in range(listed)))
    (root / "val.txt").write_text("000008\n")


def test_a_resume_on_other_clips_behind_the_same_statistics_says_the_data_order_changed(tmp_path):
    """A HumanML3D folder normalises with its Mean.npy and Std.npy, which an edited train.txt leaves as
    they are, so check_same_data lets the resume go on: it says that the clips, counted here by hand, and
    so the data order differ from the checkpoint's run; a resume on the same clips says nothing of it."""
    data = tmp_path / "hml"
    write_humanml3d_clips(data, listed=6)
    config = tiny_config(tmp_path, [], num_steps=2, save_every_steps=2, log_every=1)
    config.data.source, config.data.root, config.data.representation = "prepared", str(data), "humanml3d"
    config.data.fps, config.data.min_motion_length, config.data.std_floor = 20.0, 1, 1e-6
    config.loss.use_velocity_loss = config.loss.use_acceleration_loss = False
    config.loss.use_geometric_loss = False
    workdir, lines = tmp_path / "run", []
    train.run(config, workdir, log=lines.append)
    assert not [line for line in lines if "training clips changed" in line], lines

    write_humanml3d_clips(data, listed=7)
    config.train.num_steps = 4
    lines.clear()
    train.run(config, workdir, log=lines.append)
    changed = [line for line in lines if line.startswith("the training clips changed")]
    assert len(changed) == 1 and "(6 clips then, 7 now:" in changed[0] and "from step 3 " in changed[0], lines
    # The same count of other clips, and the same clips (the record as the checkpoint holds it): by the
    # note's function alone, which the run above calls.
    reader = checkpoint.Checkpointer(workdir, read_only=True)
    saved = reader.restore_metadata()
    reader.close()
    now = dict(saved["train_clips"])
    assert train.train_clips_note(saved, now, 4) is None
    now["sha256"] = "0" * 64
    assert "(7 clips then and now, not the same ones:" in train.train_clips_note(saved, now, 4)
