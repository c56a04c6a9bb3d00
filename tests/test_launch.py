"""launch.py end to end, as a user runs it: a subprocess from the repository root."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from tiny_run import run_launch

ROOT = Path(__file__).resolve().parents[1]


launch = run_launch


def table(stdout):
    rows = re.findall(r"^  (.+?)\s{2,}(\S+)$", stdout, flags=re.MULTILINE)
    return {name: float(value) for name, value in rows}


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["--config.data.representation=axis_angle", "--config.diffusion.prediction=v"],
        # fewer diffusion steps than the check's 50 DDIM steps (it had asked for 50 of 30)
        ["--config.diffusion.schedule=cosine", "--config.diffusion.steps=30", "--config.sample.steps=20"],
    ],
    ids=["positions-epsilon", "axis_angle-v", "cosine-30-steps"],
)
def test_demo_smoke_runs_the_core_end_to_end(overrides):
    result = launch("--mode", "smoke", "--config", "configs/demo.py", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    values = table(result.stdout)
    assert values["oracle loss (should be ~0)"] < 1e-6
    assert values["perturbed loss (should be > 0)"] > 1e-3
    assert values["perturbed loss_geom"] > 0
    assert values["DDIM-50 oracle max |x0 error| (std units)"] < 1e-4
    assert values["max bone length error after decode (cm)"] < 1e-2


def test_the_smoke_check_under_jax_enable_x64_draws_what_it_draws_without():
    """`smoke.run` from a notebook with jax_enable_x64 on drew its noise, t and x_T in 64 bits (jax.random's
    defaults there): other numbers for the same seed (perturbed loss 0.0913 for 0.0956 here). Drawn in
    float32 and int32 as training draws them, the same table."""
    from motion_ddpm_jax import smoke
    from motion_ddpm_jax.config import base_config, small_model

    config = small_model(base_config())
    config.data.max_motion_length = 24
    config.diffusion.steps = 50
    results = smoke.run(config)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        wide = smoke.run(config)
    finally:
        jax.config.update("jax_enable_x64", previous)
    for name, value in results.items():
        if name != "seconds":
            assert wide[name] == value, (name, wide[name], value)


def test_unknown_config_field_is_refused():
    result = launch("--mode", "smoke", "--config", "configs/demo.py", "--config.loss.velocity_wieght=1.0")
    assert result.returncode != 0
    assert (
        "--config.loss.velocity_wieght names no config field (did you mean --config.loss.velocity_weight?)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_user_mistakes_in_the_mode_and_config_are_one_clean_message(tmp_path):
    """--mode train without --config asks for one; --mode eval without one reads the checkpoint's, and
    where the workdir has none says so; the smoke check on a config whose representation has no skeleton
    (HumanML3D's) says what it needs."""
    no_config = launch("--mode", "train", "--workdir", str(tmp_path / "run"))
    assert no_config.returncode != 0 and "needs --config" in no_config.stderr
    assert "Traceback" not in no_config.stderr
    no_checkpoint = launch("--mode", "eval", "--workdir", str(tmp_path / "run"))
    assert no_checkpoint.returncode != 0 and "no checkpoint folder" in no_checkpoint.stderr
    assert "Traceback" not in no_checkpoint.stderr and not (tmp_path / "run").exists()
    smoke = launch("--mode", "smoke", "--config", "configs/humanml3d.py")
    assert smoke.returncode != 0 and "data.representation is 'humanml3d'" in smoke.stderr
    assert "Traceback" not in smoke.stderr
    # A user's own config file: each mistake one line naming the file (these had been tracebacks or
    # said "a --config override" where none was given).
    files = {
        "syntax.py": "def get_config(:\n    pass\n",
        "noget.py": "x = 1\n",
        "dict.py": "from motion_ddpm_jax.config import base_config\n\n\ndef get_config():\n"
        "    return base_config().to_dict()\n",
        "nosection.py": "from motion_ddpm_jax.config import base_config\n\n\ndef get_config():\n"
        "    config = base_config()\n    del config['loss']\n    return config\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    expected = {
        "syntax.py": f"--config {tmp_path / 'syntax.py'}, line 1: invalid syntax",
        "noget.py": f"--config {tmp_path / 'noget.py'} defines no get_config()",
        "dict.py": f"{tmp_path / 'dict.py'}: get_config() returned a dict; it must return an ml_collections",
        "nosection.py": "config lacks field(s) loss.acceleration_weight, loss.aux_weighting",
    }
    for name, message in expected.items():
        result = launch("--mode", "smoke", "--config", str(tmp_path / name))
        assert result.returncode != 0 and message in result.stderr, (name, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, name
    section = launch("--mode", "smoke", "--config", "configs/demo.py", "--config.nosuch.field=3")
    assert "--config.nosuch.field names no config field (the sections are data, diffusion" in section.stderr
    # ml_collections' own words had named the last part alone, or a section in unbalanced quotes:
    # `txt Did you mean "text" instead of "txt"?`, `no config section or field 'sampel Did you mean ...?'`
    for override, meant in (("sample.txt", "sample.text"), ("sampel.text", "sample.text")):
        result = launch("--mode", "smoke", "--config", "configs/demo.py", f"--config.{override}=walk")
        assert result.stderr.strip() == (
            f"launch.py: --config.{override} names no config field (did you mean --config.{meant}?); "
            "the fields are motion_ddpm_jax/config.py's"
        ), result.stderr[-2000:]


def test_prepare_mode_writes_and_prepares_the_synthetic_demo_set(tmp_path):
    """`--mode prepare` with configs/demo.py (data.source synthetic) does what training would do first:
    writes the demo set into data.raw_root and prepares it; run again, it changes nothing.

    data.raw_root is an empty folder: prepare had said 'no .bvh files under' it, where training in the
    same state writes the demo set there; now prepare does as training does. (A raw_root that does not
    exist yet, the other state training writes the demo into, is test_cli_paths' `~/raw`, prepared by
    test_a_leading_tilde_in_the_workdir_and_the_config_paths_is_the_home_folder: one demo set written and
    prepared per case, each a few seconds.)"""
    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    raw.mkdir()
    args = ["--mode", "prepare", "--config", "configs/demo.py", f"--config.data.raw_root={raw}"]
    result = launch(*args, f"--config.data.root={prepared}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = (prepared / "dataset.json").read_bytes()
    assert json.loads(record)["fps"] == 30 and any(raw.rglob("*.bvh"))
    again = launch(*args, f"--config.data.root={prepared}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (prepared / "dataset.json").read_bytes() == record
    counts = json.loads(record)["counts"]
    summary = f"{prepared}: {counts['train']} train / {counts['val']} val / {counts['test']} test clips"
    assert summary in result.stdout and summary in again.stdout  # run again, it says what is there


def test_prepare_mode_prepares_raw_beat_and_reports_bad_input(tmp_path):
    from motion_ddpm_jax.data import synthetic

    synthetic.write_demo_dataset(
        tmp_path / "raw", num_speakers=3, recordings_per_speaker=1, sentences_per_recording=3
    )
    args = ["--mode", "prepare", "--config", "configs/beat.py", f"--config.data.raw_root={tmp_path / 'raw'}"]
    result = launch(*args, f"--config.data.root={tmp_path / 'prepared'}")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "prepared" / "dataset.json").read_text())
    assert info["feature_size"] == 264 and info["representation"] == "positions"
    assert sum(info["counts"].values()) == 9

    again = launch(*args, f"--config.data.root={tmp_path / 'prepared'}", "--config.data.fps=30")
    assert again.returncode != 0 and "data.fps" in again.stderr
    missing = launch(
        "--mode", "prepare", "--config", "configs/beat.py", f"--config.data.raw_root={tmp_path / 'x'}"
    )
    assert missing.returncode != 0 and "data.raw_root" in missing.stderr and "Traceback" not in missing.stderr

    # data.source=prepared: the folder prepared above (our layout) is read as it is, with no raw_root
    # (none is needed), and a config whose fps is not the data's is refused (HumanML3D's layout: below)
    ours = ["--mode", "prepare", "--config", "configs/beat.py", f"--config.data.root={tmp_path / 'prepared'}"]
    as_is = launch(*ours, "--config.data.source=prepared")
    assert as_is.returncode == 0, as_is.stderr[-3000:]
    assert f"{tmp_path / 'prepared'}: " in as_is.stdout and "264 positions features at 60 fps" in as_is.stdout
    other = launch(*ours, "--config.data.source=prepared", "--config.data.fps=30")
    assert other.returncode != 0 and "data.fps is 30, the data 60" in other.stderr


def test_prepare_mode_reads_a_prepared_or_humanml3d_folder_as_it_is(tmp_path):
    """data.source=prepared: `--mode prepare` asks for no raw data; it opens data.root (our layout or
    HumanML3D's), says what it holds, and refuses a config whose representation or fps is not the data's.
    Our layout is read as it is, and its fps checked, on the folder that
    test_prepare_mode_prepares_raw_beat_and_reports_bad_input prepares (one raw BEAT set prepared by
    launch.py, not two)."""
    import numpy as np
    from test_motion_text import write_humanml3d

    humanml3d = tmp_path / "HumanML3D"
    write_humanml3d(humanml3d, np.random.default_rng(0))
    before = sorted(p.relative_to(humanml3d) for p in humanml3d.rglob("*"))
    args = ["--mode", "prepare", "--config", "configs/humanml3d.py", f"--config.data.root={humanml3d}"]
    result = launch(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    # train.txt: 000001 (100 frames) and its 50-frame sub-clip; 30 and 250 frames are outside [40, 200)
    assert f"{humanml3d}: 2 train / no val / no test clips, 263 humanml3d features at 20 fps" in result.stdout
    assert (  # what was left out, and why
        "train: 2 clips kept; left out 1 listed id with no motion file in new_joint_vecs/ (000404); 1 clip "
        "shorter than 40 frames, sub-clips and all (000002); 1 clip of 200 frames or more" in result.stdout
    )
    assert (
        "of these, clips of a caption's time span (id#from-to: each span a clip of its own" in result.stdout
    )
    assert "its whole recording where other captions describe that): 1 train\n" in result.stdout
    assert sorted(p.relative_to(humanml3d) for p in humanml3d.rglob("*")) == before  # nothing written
    (humanml3d / "val.txt").write_text("\n")  # a split that lists nothing is counted, and said why
    empty = launch(*args)
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert "2 train / 0 val / no test clips" in empty.stdout and "val: " in empty.stdout
    assert "the val split lists no clips" in empty.stdout
    (humanml3d / "val.txt").unlink()
    captions = humanml3d / "texts" / "000001.txt"
    kept = captions.read_text()
    captions.write_text("a person waves.#a/DET#soon#3.5\n")  # a malformed file is an error, not "0 clips"
    damaged = launch(*args)
    assert damaged.returncode != 0 and "from/to must be finite" in damaged.stderr
    captions.write_text(kept)
    wrong = launch(*args, "--config.data.representation=positions")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert "data.representation is 'positions', the data 'humanml3d'" in wrong.stderr


def test_a_resume_without_config_takes_distributed_from_this_process_not_the_record(tmp_path, monkeypatch):
    """run.json holds process 0's distributed.* (its process_id, its coordinator): a requeue without
    --config had every process join as process 0, and a lone resume waited for a coordinator that was
    gone; the command line and the environment say those now, as at a fresh start."""
    monkeypatch.syspath_prepend(str(ROOT))
    import launch as launch_module
    from motion_ddpm_jax import train
    from motion_ddpm_jax.config import base_config

    started = base_config()
    started.distributed.coordinator_address, started.distributed.num_processes = "10.0.0.1:1234", 2
    started.distributed.process_id, started.train.num_steps = 0, 77
    train.write_run_record(tmp_path, started)
    resumed = launch_module._resumed_config(tmp_path / train.RUN_RECORD, {}, note=lambda _: None)
    defaults = base_config().distributed
    assert [resumed.distributed[name] for name in launch_module.PER_PROCESS] == [
        defaults[name] for name in launch_module.PER_PROCESS
    ]
    assert resumed.distributed.num_processes == defaults.num_processes  # a requeue's allocation may differ
    assert resumed.train.num_steps == 77  # the rest as recorded
    given = launch_module._resumed_config(
        tmp_path / train.RUN_RECORD, {"distributed.process_id": 1}, note=lambda _: None
    )
    assert given.distributed.process_id == 1 and given.distributed.coordinator_address == ""


def test_a_resume_without_config_trains_as_the_latest_checkpoint_did(tmp_path, monkeypatch, capsys):
    """run.json keeps the config a run started with; a resume given --config.data.root=<new> or
    --config.train.* records them in its checkpoints, and the next resume without them goes on so (it had
    gone back to run.json's: the data's first place, moved away, or a shorter train.num_steps), unless
    the command line names them again. distributed.* belongs to the machine, the rest must not change."""
    import ml_collections
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT))
    import launch as launch_module
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax.config import base_config

    workdir = tmp_path / "run"
    started = base_config()
    started.data.root, started.data.raw_root = "/old/prepared", "/old/raw"
    saved = ml_collections.ConfigDict(started.to_dict())
    saved.data.root = str(tmp_path / "moved")
    saved.train.num_steps, saved.train.batch_size, saved.sample.steps = 900, 8, 20
    saved.distributed.num_processes = 4
    tree = {"w": np.zeros(2, np.float32)}
    writer = checkpoint.Checkpointer(workdir)
    writer.save(7, tree, tree, tree, {"config": saved.to_dict()})
    writer.close()

    def resumed(overrides, where=workdir):
        config = ml_collections.ConfigDict(started.to_dict())
        for name, value in overrides.items():
            section, field = name.split(".")
            config[section][field] = value
        return launch_module._latest_settings(config, str(where), overrides)

    config = resumed({})
    assert (config.data.root, config.data.raw_root) == (str(tmp_path / "moved"), "/old/raw")
    assert (config.train.num_steps, config.train.batch_size, config.sample.steps) == (900, 8, 20)
    assert config.distributed.num_processes == started.distributed.num_processes
    out = capsys.readouterr().out
    assert out.startswith("config: as the latest checkpoint (step 7) trained, ") and out.count("\n") == 1
    for shown in (f"data.root='{tmp_path / 'moved'}'", "train.num_steps=900", "train.batch_size=8"):
        assert shown in out
    given = resumed({"data.root": "/mine", "train.num_steps": 1000})
    assert (given.data.root, given.train.num_steps, given.train.batch_size) == ("/mine", 1000, 8)
    fresh = resumed({}, where=tmp_path)  # no checkpoint: run.json's
    assert (fresh.data.root, fresh.train.num_steps) == ("/old/prepared", started.train.num_steps)

    # The absolute folder the run trained in (its metadata's data_root) stands in for a relative data.root
    # only where that does not exist from here: a project copied elsewhere trains on its own copy.
    copied = tmp_path / "copied"
    (copied / "data" / "demo").mkdir(parents=True)
    (tmp_path / "trained_in").mkdir()
    relative = ml_collections.ConfigDict(started.to_dict())
    relative.data.root = "data/demo"
    for name, trained_root in (("gone", "/no/such/folder"), ("moved", str(tmp_path / "trained_in"))):
        writer = checkpoint.Checkpointer(tmp_path / name)
        writer.save(5, tree, tree, tree, {"config": relative.to_dict(), "data_root": trained_root})
        writer.close()
    monkeypatch.chdir(copied)
    assert resumed({}, where=tmp_path / "gone").data.root == "data/demo"
    assert resumed({}, where=tmp_path / "moved").data.root == "data/demo"  # exists here
    monkeypatch.chdir(tmp_path)  # no data/demo here: the folder it trained in
    assert resumed({}, where=tmp_path / "moved").data.root == str(tmp_path / "trained_in")


def test_sample_and_eval_refuse_overrides_the_checkpoint_overrules(tmp_path):
    """--mode sample reads only sample.* (eval also eval.* and data.*): an override of the model or the
    diffusion that differs from the checkpoint's had been ignored silently; now it is refused, naming
    the checkpoint's value. One equal to it (a training command line repeated) is accepted, and not
    checked against the defaults' other fields (model.num_heads=6 of a 384-wide model)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax.config import base_config

    trained = base_config()
    trained.model.latent_dim, trained.model.num_heads, trained.diffusion.steps = 384, 6, 100
    tree = {"w": np.zeros(2, np.float32)}
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(3, tree, tree, tree, {"config": trained.to_dict()})
    writer.close()
    run = ["--workdir", str(tmp_path / "run"), "--config.sample.text=wave"]
    result = launch("--mode", "sample", *run, "--config.diffusion.steps=1000", "--config.model.num_heads=6")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        "--mode sample takes everything but sample.* from the checkpoint "
        f"{tmp_path / 'run' / 'checkpoints'}/3, so these overrides would be ignored: "
        "--config.diffusion.steps=1000 (it has 100). Drop them"
    ) in result.stderr
    result = launch("--mode", "eval", *run, "--config.loss.velocity_weight=2.0", "--config.data.fps=30")
    assert "--mode eval takes everything but sample.*, eval.*, data.* from the checkpoint" in result.stderr
    assert "--config.loss.velocity_weight=2.0 (it has 0.1)" in result.stderr
    assert "data.fps" not in result.stderr
    same = launch("--mode", "sample", *run, "--config.diffusion.steps=100", "--config.model.num_heads=6")
    assert same.returncode != 0  # this checkpoint holds no model: what fails is reading it
    assert "would be ignored" not in same.stderr and "must be divisible" not in same.stderr
    assert f"{tmp_path / 'run' / 'checkpoints'}/3" in same.stderr, same.stderr[-2000:]


def test_eval_refuses_a_longest_length_other_than_the_checkpoints(tmp_path):
    """--mode eval reads data.* for its real clips but cuts each at the model's data.max_motion_length:
    --config.data.max_motion_length=50 had evaluated the clips at up to 360 frames without a word. One
    that differs from the checkpoint's is refused, naming it; one equal to it is not."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax.config import base_config

    tree = {"w": np.zeros(2, np.float32)}
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(3, tree, tree, tree, {"config": base_config().to_dict()})  # data.max_motion_length 360
    writer.close()
    run = ["--mode", "eval", "--workdir", str(tmp_path / "run")]
    result = launch(*run, "--config.data.max_motion_length=50")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert (
        f"from the checkpoint {tmp_path / 'run' / 'checkpoints'}/3 (and its data.max_motion_length, which "
        "the model was built for), so these overrides would be ignored: "
        "--config.data.max_motion_length=50 (it has 360)"
    ) in result.stderr, result.stderr[-2000:]
    same = launch(*run, "--config.data.max_motion_length=360")
    assert same.returncode != 0  # this checkpoint holds no model: what fails is reading it
    assert "would be ignored" not in same.stderr, same.stderr[-2000:]


def test_sample_with_a_config_file_says_which_of_its_model_fields_the_checkpoint_overrules(tmp_path):
    """--mode sample --config FILE: the file's model.* and diffusion.* that differ from the checkpoint's are
    named, with the checkpoint's values, as not used (the first four, and how many more); a file that
    agrees with the checkpoint, or fields given on the command line, add no note."""
    import importlib.util

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import checkpoint
    from motion_ddpm_jax.config import flatten

    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    file_values = flatten(demo.get_config())
    trained = demo.get_config()
    trained.model.latent_dim = file_values["model.latent_dim"] * 2
    trained.diffusion.steps = file_values["diffusion.steps"] + 7
    trained.data.fps = file_values["data.fps"] * 2  # the rate its animations play at: the checkpoint's
    tree = {"w": np.zeros(2, np.float32)}
    for name, config in (("other", trained), ("same", demo.get_config())):
        writer = checkpoint.Checkpointer(tmp_path / name)
        writer.save(3, tree, tree, tree, {"config": config.to_dict()})
        writer.close()
    run = ["--mode", "sample", "--config", "configs/demo.py", "--config.sample.text=wave"]
    other = launch(*run, "--workdir", str(tmp_path / "other"))
    where = f"{tmp_path / 'other' / 'checkpoints'}/3"
    expected = (
        "note: --mode sample takes the model, the diffusion and the motion's frame rate, representation and "
        f"longest length from the checkpoint {where}, not from configs/demo.py, whose "
        f"data.fps={file_values['data.fps']!r} (checkpoint: {trained.data.fps!r}), "
        f"diffusion.steps={file_values['diffusion.steps']!r} (checkpoint: {trained.diffusion.steps!r}), "
        f"model.latent_dim={file_values['model.latent_dim']!r} (checkpoint: {trained.model.latent_dim!r}) "
        "are not used"
    )
    assert expected in other.stdout, other.stdout[-2000:] + other.stderr[-2000:]
    assert other.returncode != 0  # the checkpoint holds no model: what fails is reading it
    given = launch(
        *run, "--workdir", str(tmp_path / "other"), f"--config.diffusion.steps={trained.diffusion.steps}"
    )
    assert ", model.latent_dim=" in given.stdout and "diffusion.steps=" not in given.stdout
    same = launch(*run, "--workdir", str(tmp_path / "same"))
    assert "note: --mode sample takes" not in same.stdout + same.stderr


def test_sample_steps_are_checked_against_the_checkpoints_diffusion_not_the_config_files(tmp_path):
    """--mode sample --config FILE takes the diffusion from the checkpoint: 120 DDIM steps of a checkpoint
    trained with 150 diffusion steps were refused because configs/demo.py has 100 (a check of training's
    progress samples), right after the note that the file's diffusion.steps is not used."""
    import importlib.util

    import numpy as np

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import checkpoint

    spec = importlib.util.spec_from_file_location("demo_config", ROOT / "configs" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    trained = demo.get_config()
    assert trained.train.sample_every > 0 and trained.diffusion.steps < 120
    trained.diffusion.steps = 150
    tree = {"w": np.zeros(2, np.float32)}
    writer = checkpoint.Checkpointer(tmp_path / "run")
    writer.save(3, tree, tree, tree, {"config": trained.to_dict()})
    writer.close()
    run = ["--config", "configs/demo.py", "--workdir", str(tmp_path / "run"), "--config.sample.text=wave"]
    for mode in ("sample", "eval"):
        result = launch("--mode", mode, *run, "--config.sample.steps=120")
        assert "progress samples" not in result.stderr, result.stderr[-2000:]
        # (this checkpoint holds no model: what fails is reading it, past the config's checks)
        assert f"{tmp_path / 'run' / 'checkpoints'}/3" in result.stderr, result.stderr[-2000:]
    trains = launch("--mode", "config", "--config", "configs/demo.py", "--config.sample.steps=120")
    assert trains.returncode != 0 and "train.sample_every's progress samples" in trains.stderr  # kept


def test_eval_names_the_sample_overrides_it_does_not_read(monkeypatch):
    """--mode eval draws one sample per clip, of its caption and length: --config.sample.num_samples=4
    (or num_frames, text, output_dir) had been dropped without a word. The fields eval reads are those
    sampling.sampler_settings reads, use_ema and checkpoint_step."""
    sys.path.insert(0, str(ROOT))
    import launch
    from motion_ddpm_jax import sampling

    class Reads:
        def __init__(self):
            self.names = []

        def __getattr__(self, name):
            self.names.append(name)
            return "auto" if name == "group_lengths" else 1

    reads = Reads()
    sampling.sampler_settings(reads)
    assert set(launch._EVAL_READS) == {*reads.names, "use_ema", "checkpoint_step"}
    assert launch._eval_unread_sample({"sample.steps": 5, "eval.num_clips": 3}) is None
    line = launch._eval_unread_sample({"sample.num_samples": 4, "sample.seed": 2, "sample.num_frames": 30})
    assert line == (
        "note: --mode eval draws one sample per clip (eval.repeats times), of its caption and length, and "
        "writes no sample files: sample.num_samples=4, sample.num_frames=30 are not used (they are --mode "
        "sample's)"
    )


def test_mode_config_prints_the_checked_config_and_writes_nothing(tmp_path):
    """--mode config prints every field as training would use it (the file and the overrides), refuses
    what validate refuses, and writes nothing: no workdir, no compilation cache."""
    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax.config import base_config, flatten

    home = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "launch.py", "--mode", "config", "--config", "configs/demo.py",
         "--config.model.latent_dim=64", f"--workdir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **home},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "model.latent_dim = 64" in lines and "data.source = 'synthetic'" in lines
    assert {line.split(" = ")[0] for line in lines} == set(flatten(base_config()))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    refused = launch("--mode", "config", "--config", "configs/demo.py", "--config.model.latent_dim=63")
    assert refused.returncode != 0 and "model.latent_dim=63 must be divisible" in refused.stderr


def test_mode_config_refuses_the_schedules_that_training_refuses(tmp_path):
    """--mode config promises the checks training makes before it loads data: a learning rate below
    optim.min_lr (the cosine would climb) or a warmup as long as the run had been printed with exit 0,
    while --mode train refused the same command line at once."""
    demo = ["--config", "configs/demo.py", f"--workdir={tmp_path / 'run'}"]
    low = launch("--mode", "config", *demo, "--config.optim.lr=1e-7")
    assert low.returncode != 0 and "Traceback" not in low.stderr, low.stderr[-2000:]
    assert (
        "launch.py --mode config: config field optim.min_lr is 1e-06, above optim.lr (1e-07): the cosine "
        "would climb from lr to min_lr; set --config.optim.min_lr to at most optim.lr"
    ) in low.stderr
    long = launch("--mode", "config", *demo, "--config.optim.warmup_steps=2000")
    assert long.returncode != 0 and "set --config.optim.warmup_steps below 1999" in long.stderr
    fixed = launch("--mode", "config", *demo, "--config.optim.lr=1e-7", "--config.optim.min_lr=1e-8")
    assert fixed.returncode == 0, fixed.stderr[-2000:]  # the fix the message gives is taken
    assert not (tmp_path / "run").exists()


def fake_run(workdir, **changes):
    """A workdir as a run leaves it: run.json of base_config and a checkpoint (no parameters of a model)
    whose metadata holds the config with `changes` ({"train.num_steps": 900, ...})."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import checkpoint, train
    from motion_ddpm_jax.config import base_config

    workdir.mkdir(parents=True)
    started = base_config()
    train.write_run_record(workdir, started)
    saved = base_config()
    for name, value in changes.items():
        section, _, field = name.rpartition(".")
        (saved[section] if section else saved)[field] = value
    tree = {"w": np.zeros(2, np.float32)}
    writer = checkpoint.Checkpointer(workdir)
    writer.save(3, tree, tree, tree, {"config": saved.to_dict()})
    writer.close()


def test_a_small_config_has_a_default_workdir_of_its_own(tmp_path):
    """Without --workdir, `--config configs/kit.py:small` (the README's pipeline check before a GPU run)
    and `--config configs/kit.py` had both defaulted to runs/kit: the full-size run was refused there
    ("belongs to a run whose config differs in ...") and --mode sample --config FILE read the other one's
    checkpoint. The small one's folder is runs/kit_small."""
    from tiny_run import launch_env

    fake_run(tmp_path / "runs" / "kit")  # a run of another config in runs/kit
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--mode", "config", "--config",
         f"{ROOT}/configs/kit.py:small"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=launch_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.latent_dim = 128" in result.stdout.splitlines()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["kit"]  # --mode config writes nothing


def test_a_resume_reads_its_checkpoint_after_setting_the_host_devices(tmp_path):
    """Reading the latest checkpoint's settings starts jax: done before --host_devices (or
    jax.distributed, a multi-host requeue) had set up the devices, it had crashed every resume without
    --config. --mode config resumes the same way, and prints only fields on stdout."""
    fake_run(tmp_path / "run", **{"train.num_steps": 900})
    result = launch("--mode", "config", f"--workdir={tmp_path / 'run'}", "--host_devices=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train.num_steps = 900" in result.stdout.splitlines()
    assert all(" = " in line for line in result.stdout.splitlines())
    assert "config: as the latest checkpoint (step 3) trained, train.num_steps=900" in result.stderr
    other = launch("--mode", "config", "--config", "configs/demo.py", f"--workdir={tmp_path / 'run'}")
    assert other.returncode != 0 and "belongs to a run whose config differs in" in other.stderr


def test_train_autoencoder_given_a_run_takes_what_the_autoencoder_depends_on_from_it(tmp_path, monkeypatch):
    """--mode train_autoencoder --workdir RUN: data.*, eval.autoencoder_* and seed as the run had them (so
    the same autoencoder as with that run's --config), but for those given on the command line."""
    import ml_collections

    monkeypatch.syspath_prepend(str(ROOT))
    import launch as launch_module
    from motion_ddpm_jax.config import base_config

    changes = {"eval.autoencoder_steps": 2000, "eval.autoencoder_latent": 16, "seed": 3, "data.fps": 20.0}
    fake_run(tmp_path / "run", **changes)
    config = launch_module._checkpoint_data(base_config(), str(tmp_path / "run"), {})
    assert (config.eval.autoencoder_steps, config.eval.autoencoder_latent, config.seed) == (2000, 16, 3)
    assert config.data.fps == 20.0 and config.eval.num_clips == base_config().eval.num_clips
    given = ml_collections.ConfigDict(base_config().to_dict())
    given.eval.autoencoder_steps, given.data.fps = 5, 30.0
    config = launch_module._checkpoint_data(
        given, str(tmp_path / "run"), {"eval.autoencoder_steps": 5, "data.fps": 30.0}
    )
    assert (config.eval.autoencoder_steps, config.eval.autoencoder_latent, config.data.fps) == (5, 16, 30.0)


def test_eval_without_config_reads_the_autoencoder_where_train_autoencoder_of_the_run_saves_it(
    tmp_path, monkeypatch
):
    """A run trained with eval.autoencoder_dir: `--mode train_autoencoder --workdir RUN` (the fix the
    FGD-skipped note gives) saved the autoencoder there, while `--mode eval --workdir RUN` looked in
    <data.root>/fgd_autoencoder and skipped the FGD again. Both now take the run's folder; one given on
    the command line wins."""
    monkeypatch.syspath_prepend(str(ROOT))
    import ml_collections

    import launch as launch_module
    from motion_ddpm_jax.config import base_config

    fake_run(tmp_path / "run", **{"eval.autoencoder_dir": "/shared/fgd/demo"})
    run = str(tmp_path / "run")
    trains = launch_module._checkpoint_data(base_config(), run, {}).eval.autoencoder_dir
    reads = launch_module._checkpoint_autoencoder(base_config(), run, {}).eval.autoencoder_dir
    assert trains == reads == "/shared/fgd/demo"
    given = ml_collections.ConfigDict(base_config().to_dict())
    given.eval.autoencoder_dir = "/mine"
    mine = launch_module._checkpoint_autoencoder(given, run, {"eval.autoencoder_dir": "/mine"})
    assert mine.eval.autoencoder_dir == "/mine"
    fake_run(tmp_path / "plain")  # a run that named none: <data.root>/fgd_autoencoder, as before
    assert (
        launch_module._checkpoint_autoencoder(base_config(), str(tmp_path / "plain"), {}).eval.autoencoder_dir
        == ""
    )


def test_a_full_disk_and_an_interruption_are_one_line(monkeypatch):
    """'[Errno 28] No space left on device' named no file and said nothing to do; SIGTERM outside training
    killed a mode without its clean-up (it now raises KeyboardInterrupt, as Ctrl-C, which each mode's
    clean-up sees)."""
    import errno
    import signal

    monkeypatch.syspath_prepend(str(ROOT))
    import launch as launch_module

    full = OSError(errno.ENOSPC, "No space left on device", "/data/prepared/motions/a.npy")
    assert launch_module._described(full) == (
        "no space left on the device writing /data/prepared/motions/a.npy ([Errno 28] No space left on "
        "device: '/data/prepared/motions/a.npy'); free some space and run it again"
    )
    assert launch_module._described(OSError(errno.ENOSPC, "No space left on device")).startswith(
        "no space left on the device ([Errno 28]"
    )
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        launch_module._interrupt(signal.SIGTERM, None)


def test_the_projects_warnings_are_lines_of_the_runs_output(tmp_path):
    """The warning for a HumanML3D-layout folder read at another fps than its layout's (a ProjectWarning)
    is said through the run's output as `warning: ...`, which a log kept from stdout keeps; any other
    warning keeps Python's display, even one raised on a line of the package (numpy's RuntimeWarning in
    evaluate.py, say). End to end: `--mode prepare` says it on stdout, nothing on stderr."""
    import warnings

    from test_motion_text import write_layout_folder

    import launch as launch_module
    from motion_ddpm_jax import evaluate
    from motion_ddpm_jax.config import base_config
    from motion_ddpm_jax.data import beat

    write_layout_folder(tmp_path / "h3d", 263, frames=40)
    config = base_config()
    config.data.update(source="prepared", root=str(tmp_path / "h3d"), representation="humanml3d")
    config.data.update(min_motion_length=10, std_floor=1e-6)
    said, shown = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda *args, **kwargs: shown.append((str(args[0]), args[1]))
        warnings.showwarning = launch_module._warnings_to(said.append)
        for fps in (12.5, 20.0):  # HumanML3D's own rate: no warning
            config.data.fps = fps
            assert beat.dataset_from_config(config, log=said.append).fps == fps
        warnings.warn_explicit("another library's", UserWarning, str(tmp_path / "elsewhere.py"), 3)
        warnings.warn_explicit("numpy's", RuntimeWarning, evaluate.__file__, 408)
    assert len(said) == 1 and said[0].startswith(f"warning: {tmp_path / 'h3d'}: data.fps is 12.5"), said
    assert "1.6x too slow" in said[0]
    assert shown == [("another library's", UserWarning), ("numpy's", RuntimeWarning)]

    result = launch(
        "--mode", "prepare", "--config", "configs/humanml3d.py", f"--config.data.root={tmp_path / 'h3d'}",
        "--config.data.fps=12.5", "--config.data.min_motion_length=10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"warning: {tmp_path / 'h3d'}: data.fps is 12.5" in result.stdout
    assert "Warning" not in result.stderr, result.stderr[-2000:]


def test_a_config_files_argument_that_its_get_config_refuses_is_one_line(tmp_path):
    """`--config FILE:ARG`: an argument get_config refuses, or one given to a get_config that takes none,
    had been absl's 'FATAL Flags parsing error' with ml_collections' traceback; now one line naming the
    --config value and what is wrong."""
    from absl import flags

    import launch as launch_module

    parser = flags.FLAGS["config"].parser  # ml_collections' config-file parser, within launch's
    assert isinstance(parser, launch_module.ConfigSourceParser)
    with pytest.raises(launch_module.ConfigSourceError) as refused:
        parser.parse(str(ROOT / "configs" / "humanml3d.py") + ":big")
    assert str(refused.value) == (
        f"--config {ROOT / 'configs' / 'humanml3d.py'}:big: configs/humanml3d.py takes ':small' (the demo's "
        "small model) or nothing, not ':big'"
    )
    with pytest.raises(launch_module.ConfigSourceError) as refused:
        parser.parse(str(ROOT / "configs" / "demo.py") + ":small")
    assert str(refused.value).startswith(
        f"--config {ROOT / 'configs' / 'demo.py'}:small: its get_config() takes no argument, so ':small' "
        "names nothing (TypeError: get_config() takes 0 positional arguments but 1 was given)"
    )
    assert parser.parse(str(ROOT / "configs" / "kit.py") + ":small").model.latent_dim == 128
