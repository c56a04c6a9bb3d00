"""Nothing a user made is lost: a workdir is never silently reused, and preparing data, training, sampling
and evaluating write only inside the folders they own (data.root and the workdir)."""

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_motion_text import write_humanml3d
from tiny_run import ROOT, TINY_MODEL, run_launch

from motion_ddpm_jax import train
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import synthetic
from motion_ddpm_jax.errors import UserError

TINY = [
    *TINY_MODEL,
    "--config.train.sample_every=500",  # progress GIFs as the demo's (at the run's end): inside the workdir
    "--config.train.num_steps=6",
    "--config.train.log_every=3",
    "--config.train.save_every_steps=3",
    "--config.optim.warmup_steps=2",
    "--config.sample.num_frames=12",
    "--config.sample.steps=4",
    "--config.eval.num_clips=3",
]


def test_a_fresh_workdir_is_claimed_with_a_run_record(tmp_path):
    config, workdir = base_config(), tmp_path / "run"
    assert train.claim_workdir(workdir, config) is True
    assert not workdir.exists()  # the check writes nothing
    workdir.mkdir()
    train.write_run_record(workdir, config)
    assert json.loads((workdir / train.RUN_RECORD).read_text())["config"] == config.to_dict()
    assert train.claim_workdir(workdir, config) is False  # the same run, restarted


def test_a_workdir_that_is_a_file_is_refused_and_left_alone(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(train.WorkdirError, match=r"--workdir .*run is a file, not a folder"):
        train.claim_workdir(tmp_path / "run", base_config())
    assert (tmp_path / "run").read_text() == "mine"


def test_a_folder_of_the_users_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(train.WorkdirError, match=r"notes\.txt"):
        train.run(base_config(), tmp_path)
    assert os.listdir(tmp_path) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_another_runs_workdir_is_refused_even_before_its_first_checkpoint(tmp_path):
    config = base_config()
    train.write_run_record(tmp_path, config)
    (tmp_path / "metrics.jsonl").write_text('{"step": 50}\n')
    other = copy.deepcopy(config)
    other.model.latent_dim = 256
    with pytest.raises(
        train.WorkdirError,
        match=r"model\.latent_dim.*holds no checkpoint.*left nothing to resume; move .* away",
    ):
        train.claim_workdir(tmp_path, other)
    longer = copy.deepcopy(config)
    longer.train.num_steps = 10 * config.train.num_steps + 1  # a change a resumed run may make
    assert train.claim_workdir(tmp_path, longer) is False


def test_a_run_whose_config_file_changed_since_is_refused_with_the_way_to_resume_it(tmp_path):
    """configs/beat_rot.py named axis_angle when a run started and names rotation_6d now: resuming with
    that file is refused naming the field, and says that launch.py without --config resumes the run with
    its own config (the one run.json records)."""
    from motion_ddpm_jax import checkpoint

    started = base_config()
    started.data.representation = "axis_angle"
    train.write_run_record(tmp_path, started)
    now = copy.deepcopy(started)
    now.data.representation = "rotation_6d"
    (checkpoint.checkpoint_dir(tmp_path) / "30").mkdir(parents=True)  # a complete step
    with pytest.raises(train.WorkdirError) as refused:
        train.claim_workdir(tmp_path, now)
    said = str(refused.value)
    assert "data.representation ('axis_angle' -> 'rotation_6d')" in said
    assert f"launch.py --workdir {tmp_path} without --config resumes it with its own" in said


def test_a_field_added_to_the_config_after_a_run_started_counts_as_its_default(tmp_path):
    """A run record (or checkpoint) written before a config field existed names no value for it: it
    counts as the field's default, which keeps the behaviour of before, so the run stays resumable;
    a value other than the default is still a change."""
    saved = base_config().to_dict()
    del saved["model"]["kernels"]  # added in session 23, default "xla"
    assert train.incompatible_fields(saved, base_config()) == []
    (tmp_path / train.RUN_RECORD).write_text(json.dumps({"config": saved}))
    assert train.claim_workdir(tmp_path, base_config()) is False
    pallas = base_config()
    pallas.model.kernels = "pallas"
    assert train.incompatible_fields(saved, pallas) == ["model.kernels"]


def test_a_config_refused_at_startup_leaves_the_workdir_unclaimed(tmp_path):
    """The checks of the config against the data (feature size, the geometric loss's skeleton) run
    before anything is written into the workdir: the corrected config may then use the same workdir."""
    raw, prepared, workdir = tmp_path / "raw", tmp_path / "prepared", tmp_path / "run"
    synthetic.write_demo_dataset(
        raw, num_speakers=2, recordings_per_speaker=2, sentences_per_recording=2, fps=30
    )
    config = base_config()
    config.data.raw_root, config.data.root, config.data.fps = str(raw), str(prepared), 30.0
    config.model.input_feats = 7
    with pytest.raises(UserError, match="model.input_feats is 7"):
        train.run(config, workdir, log=lambda *_: None)
    assert not workdir.exists()
    humanml3d = tmp_path / "humanml3d"
    write_humanml3d(humanml3d, np.random.default_rng(0))
    config.data.source, config.data.root, config.model.input_feats = "prepared", str(humanml3d), 0
    config.data.representation, config.data.fps = "humanml3d", 20.0
    with pytest.raises(UserError, match="use_geometric_loss"):
        train.run(config, workdir, log=lambda *_: None)
    assert not workdir.exists()
    config.loss.use_geometric_loss = False
    assert train.claim_workdir(workdir, config) is True


def test_an_unreadable_run_record_is_refused(tmp_path):
    (tmp_path / train.RUN_RECORD).write_text("{")
    with pytest.raises(train.WorkdirError, match=r"run\.json"):
        train.claim_workdir(tmp_path, base_config())


def test_checkpoints_from_before_run_records_are_still_resumable(tmp_path):
    (tmp_path / "checkpoints" / "40").mkdir(parents=True)
    assert train.claim_workdir(tmp_path, base_config()) is True
    (tmp_path / "checkpoints" / "40").rmdir()
    (tmp_path / "checkpoints" / "40.orbax-checkpoint-tmp").mkdir()  # no complete checkpoint: not a run's
    with pytest.raises(train.WorkdirError, match="checkpoints"):
        train.claim_workdir(tmp_path, base_config())


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file under root: (size, mtime_ns, sha256)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            found[str(path.relative_to(root))] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return found


launch = run_launch


EVAL_RECORDS = ("metrics_step6.json", "metrics_step6_1.json")  # the second never overwrites the first
EVAL_SETTINGS = [flag for flag in TINY if flag.startswith(("--config.eval.", "--config.sample."))]


def test_no_mode_touches_files_outside_the_folders_it_owns(tmp_path):
    home = tmp_path / "home"
    raw = home / "raw"  # the user's recordings: read, never written
    synthetic.write_demo_dataset(
        raw, num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30
    )
    (home / "notes.txt").write_text("my notes")
    shutil.copy(ROOT / "configs" / "demo.py", home / "my_config.py")
    (home / "data").mkdir()
    np.save(home / "data" / "another_dataset.npy", np.arange(5.0))
    (home / "runs").mkdir()
    (home / "runs" / "keep.txt").write_text("an older run's notes")
    prepared, workdir = home / "data" / "prepared", home / "runs" / "mine"
    common = [
        "--config",
        str(home / "my_config.py"),
        f"--config.data.raw_root={raw}",
        f"--config.data.root={prepared}",
        *TINY,
    ]
    before, repo_configs = snapshot(home), snapshot(ROOT / "configs")

    steps = [
        ("prepare", ["--mode", "prepare", *common]),
        ("train", ["--workdir", str(workdir), *common]),
        # complete: nothing to do; train.* / sample.* may change, and the log says which changed
        (
            "train again",
            ["--workdir", str(workdir), *common, "--config.train.log_every=2", "--config.sample.steps=5"],
        ),
        (
            "sample",
            ["--mode", "sample", "--workdir", str(workdir), *common, "--config.sample.text=wave|clap"],
        ),
        (
            "sample again",
            ["--mode", "sample", "--workdir", str(workdir), *common, "--config.sample.text=wave"],
        ),
        ("eval", ["--mode", "eval", "--workdir", str(workdir), *common]),
        # without --config: the data the checkpoint's run trained on (data.root above); eval.* and
        # sample.* as given
        ("eval without --config", ["--mode", "eval", "--workdir", str(workdir), *EVAL_SETTINGS]),
        # the FGD autoencoder of the data the run trained on, beside that data (data.root above)
        (
            "train_autoencoder without --config",
            ["--mode", "train_autoencoder", "--workdir", str(workdir), "--config.eval.autoencoder_steps=2"],
        ),
    ]
    outputs = {}
    for name, args in steps:
        result = launch(*args)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        outputs[name] = result.stdout
    changed = "sample.steps 4 -> 5, train.log_every 3 -> 2"
    assert f"config: changed from the run's latest checkpoint (step 6): {changed}" in outputs["train again"]
    after = snapshot(home)
    changed = [path for path, signature in before.items() if after.get(path) != signature]
    assert not changed, f"files the user had were changed or removed: {changed}"
    owned = (prepared, workdir)
    outside = [
        path for path in set(after) - set(before) if not any((home / path).is_relative_to(o) for o in owned)
    ]
    assert not outside, f"written outside data.root and the workdir: {sorted(outside)}"
    assert snapshot(ROOT / "configs") == repo_configs
    samples = sorted(p.name for p in (workdir / "samples").iterdir())
    assert samples == ["step_6", "step_6_2"], samples  # the second sampling run did not replace the first
    assert (workdir / train.RUN_RECORD).is_file()
    # the run's progress GIF, drawn at its end (a failed drawing is only logged)
    assert (workdir / "progress" / "step_0000006.gif").is_file(), outputs["train"][-3000:]
    assert "rendering progress samples failed" not in outputs["train"]
    autoencoder = json.loads((prepared / "fgd_autoencoder" / "autoencoder.json").read_text())
    assert autoencoder["settings"]["steps"] == 2
    with_config, without = (json.loads((workdir / "eval" / n).read_text()) for n in EVAL_RECORDS)
    assert with_config["data_root"] == without["data_root"] == str(prepared)
    assert without["metrics"] == with_config["metrics"]  # the same clips, checkpoint and sampler settings

    # Another experiment pointed at this workdir is refused and changes nothing.
    result = launch("--workdir", str(workdir), *common, "--config.model.latent_dim=32")
    assert result.returncode != 0
    assert "model.latent_dim" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert snapshot(home) == after
    # So is a folder of the user's that no run made.
    result = launch("--workdir", str(home / "runs"), *common)
    assert result.returncode != 0 and "keep.txt" in result.stderr, result.stderr[-2000:]
    assert snapshot(home) == after
