"""launch.py's paths as a user gives them: a --config that names no file (one line: which path, relative to
which folder, what was probably meant), a run's run.json as --config (a new run with the config that run
started with), `~` in --workdir and the config's path fields (a shell leaves it after `=`), and a resume
with --config saying which of the run's settings it changes."""

import json
import re
import subprocess
import sys
from pathlib import Path

from test_launch import fake_run
from tiny_run import launch_env

ROOT = Path(__file__).resolve().parents[1]


def launch(*args, cwd=ROOT, home=None):
    """launch.py as a user runs it, from `cwd`; with `home`, HOME is that folder (the compilation cache
    off: nothing is written there but what the test asks for)."""
    env = launch_env()
    if home is not None:
        env["HOME"] = str(home)
        args = (*args, "--compile_cache=off")
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=cwd, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def one_line(result) -> str:
    """The one line a refused command printed: no traceback, no usage text."""
    assert result.returncode != 0, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_a_config_path_that_names_no_file_is_one_line_saying_what_was_meant(tmp_path):
    """It had printed 46 lines of usage text and then 'get_config() returned a _ErrorConfig' (with an
    override as well: a 40-line traceback ending in FileNotFoundError)."""
    names = ("base", "beat", "beat_rot", "demo", "humanml3d", "kit")
    listed = "the repository's config files are " + ", ".join(f"configs/{name}.py" for name in names)
    here = f"no such file (relative to the current directory, {ROOT})"
    expected = {
        ("configs/nonexist.py",): f"--config configs/nonexist.py: {here}; {listed}",
        ("configs/nonexist.py", "--config.data.fps=3"): f"--config configs/nonexist.py: {here}; {listed}",
        ("configs/demo",): f"--config configs/demo: {here}; did you mean configs/demo.py?",
        ("configs/dmeo.py",): f"--config configs/dmeo.py: {here}; did you mean configs/demo.py?",
        ("configs",): "--config configs: is a folder, not a config file (configs/<name>.py, or a run's "
        "run.json)",
    }  # fmt: skip
    for (path, *more), message in expected.items():
        assert one_line(launch("--mode", "config", "--config", path, *more)) == f"launch.py: {message}"
    # The README's relative path, run from another folder: the repository's file is named, and why the
    # folder matters (the configs' data paths are relative too).
    elsewhere = one_line(launch("--mode", "smoke", "--config", "configs/demo.py", cwd=tmp_path))
    assert elsewhere == (
        f"launch.py: --config configs/demo.py: no such file (relative to the current directory, {tmp_path}); "
        f"did you mean {ROOT / 'configs' / 'demo.py'}? (the repository's configs name their data relative to "
        f"the current directory too: run launch.py from {ROOT})"
    )
    assert sorted(tmp_path.iterdir()) == []
    gone = one_line(launch("--mode", "config", f"--config={tmp_path / 'mine.py'}"))
    assert gone == f"launch.py: --config {tmp_path / 'mine.py'}: no such file; {listed}"  # absolute
    (tmp_path / "mine.py").write_text("def get_config():\n    return open('missing.txt')\n")
    inside = one_line(launch("--mode", "config", "--config", str(tmp_path / "mine.py")))
    assert inside.startswith(f"launch.py: --config {tmp_path / 'mine.py'}: loading it failed: ")
    assert "missing.txt" in inside


def test_a_runs_record_starts_a_new_run_with_the_config_that_run_started_with(tmp_path):
    """--config <run>/run.json had been run as Python (NameError: name 'true' is not defined). It is the
    config that run started with (per-process distributed.* at their defaults, as a resume takes them),
    overridden and checked as a config file is; the new run needs its own --workdir, and what the run's
    later resumes changed (its checkpoints' train.*, not in run.json) is named."""
    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import train
    from motion_ddpm_jax.config import base_config

    source = tmp_path / "source"
    later = {"train.num_steps": 900, "train.log_every": 5, "train.batch_size": 8}  # a resume's checkpoint
    fake_run(source, **later)
    started = base_config()
    started.model.latent_dim, started.model.num_heads, started.train.batch_size = 64, 4, 8
    started.distributed.process_id, started.distributed.coordinator_address = 3, "10.0.0.1:1234"
    started.distributed.num_processes = 4
    train.write_run_record(source, started)
    record = source / train.RUN_RECORD
    result = launch("--mode", "config", "--config", str(record), f"--workdir={tmp_path / 'new'}",
                    "--config.train.log_every=7")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    fields = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    assert [fields[f"model.{name}"] for name in ("latent_dim", "num_heads")] == ["64", "4"]
    assert fields["train.batch_size"] == "8"
    assert (fields["train.log_every"], fields["train.num_steps"]) == ("7", "0")
    assert (fields["distributed.process_id"], fields["distributed.coordinator_address"]) == ("-1", "''")
    assert fields["distributed.num_processes"] == str(
        base_config().distributed.num_processes
    )  # the allocation's
    assert result.stderr.splitlines() == [
        f"config: the one {record} records (the config its run started with), with train.log_every=7",
        f"config: {record} holds the config its run started with; that run's latest checkpoint (step 3) "
        "trained with train.num_steps=900 (here 0): give --config.<field>=<value> for those to take",
    ]
    assert not (tmp_path / "new").exists()

    # Checked as a config file is; refused in one line where it is no run record or has no --workdir.
    bad = launch("--mode", "config", "--config", str(record), f"--workdir={tmp_path / 'new'}",
                 "--config.model.latent_dim=63")  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines()[-1] == (
        "launch.py --mode config: model.latent_dim=63 must be divisible by model.num_heads=4"
    )
    nowhere = one_line(launch("--mode", "train", "--config", str(record)))
    assert nowhere == (
        f"launch.py --mode train: --config {record} starts a new run with the config its run started with: "
        f"give it a --workdir (--workdir {source} without --config resumes that run instead)"
    )
    (tmp_path / "other.json").write_text(json.dumps({"model": {}}))
    other = one_line(launch("--mode", "config", "--config", str(tmp_path / "other.json")))
    assert (
        f"--config {tmp_path / 'other.json'}: a .json config is a run's record (<workdir>/run.json)" in other
    )
    folder = one_line(launch("--mode", "config", "--config", str(source)))
    assert folder == (
        f"launch.py: --config {source}: is a run's folder, not a config: --workdir {source} resumes that "
        f"run, --config {record} starts a new run (its own --workdir) with the config it started with"
    )


def test_a_leading_tilde_in_the_workdir_and_the_config_paths_is_the_home_folder(tmp_path):
    """bash expands `~` at the start of a word only: `--workdir=~/x` and `--config.data.root=~/x` reached
    launch.py as they are, and a folder named `~` was made in the working directory. Every path field of
    the config (a file's or an override's) and --workdir expand it, as --compile_cache did."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "mine.py").write_text(
        "from motion_ddpm_jax.config import base_config\n\n\ndef get_config():\n    config = base_config()\n"
        "    config.eval.autoencoder_dir = '~/fgd'\n    return config\n"
    )
    overrides = [
        "--config.data.root=~/prepared",
        "--config.data.raw_root=~/raw",
        "--config.sample.text_file=~/t.txt",
        "--config.sample.output_dir=~/out",
        "--config.eval.output=~/eval.json",
    ]
    result = launch("--mode", "config", "--config=~/mine.py", "--workdir=~/run", *overrides, home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    fields = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
    names = ("data.root", "data.raw_root", "sample.text_file", "sample.output_dir", "eval.output")
    assert [fields[name] for name in names] == [
        repr(str(home / name)) for name in ("prepared", "raw", "t.txt", "out", "eval.json")
    ]
    assert fields["eval.autoencoder_dir"] == repr(str(home / "fgd"))  # the file's own
    assert sorted(p.name for p in home.iterdir()) == ["mine.py"]  # --mode config writes nothing

    fake_run(home / "run", **{"train.num_steps": 900})  # found through `~`: resumed without --config
    resumed = launch("--mode", "config", "--workdir=~/run", home=home)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "train.num_steps = 900" in resumed.stdout.splitlines()

    # What writes: --mode prepare of the demo set, into the home folder and not into ./~
    demo = [
        "--mode",
        "prepare",
        "--config",
        str(ROOT / "configs" / "demo.py"),
        "--config.data.raw_root=~/raw",
    ]
    prepared = launch(*demo, "--config.data.root=~/prepared", cwd=tmp_path, home=home)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    assert (home / "prepared" / "dataset.json").is_file() and any((home / "raw").rglob("*.bvh"))
    assert not (tmp_path / "~").exists() and not (ROOT / "~").exists()


def test_every_path_field_of_the_config_expands_a_tilde(monkeypatch):
    """PATH_FIELDS names each field of base_config that names a file or folder (by its name's ending): a
    path field added later without it would take `~` literally."""
    monkeypatch.syspath_prepend(str(ROOT))
    import launch as launch_module
    from motion_ddpm_jax.config import base_config, flatten

    paths = {
        name for name in flatten(base_config()) if re.search(r"(root|_dir|_file|output|path|_from)$", name)
    }
    assert paths == set(launch_module.PATH_FIELDS)


def test_a_resume_with_a_config_names_the_settings_it_changes(tmp_path):
    """The first run had --config.train.batch_size=8 (and log_every, sample.steps); a resume given
    --config configs/base.py and another train.num_steps trained on with the file's values, silently. Each
    train.* / sample.* / eval.* field whose value differs from the run's latest checkpoint (or, with no
    checkpoint yet, its run record) is said, old -> new, by train and by --mode config alike."""
    changes = {"train.batch_size": 8, "train.log_every": 5, "sample.steps": 20, "train.num_steps": 900}
    fake_run(tmp_path / "run", **changes, **{"distributed.num_processes": 2})
    args = ["--mode", "config", "--config", "configs/base.py", f"--workdir={tmp_path / 'run'}"]
    result = launch(*args, "--config.train.num_steps=40")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        "config: changed from the run's latest checkpoint (step 3): sample.steps 20 -> 50, train.batch_size "
        "8 -> 32, train.log_every 5 -> 50, train.num_steps 900 -> 40"
    ]
    assert "train.batch_size = 32" in result.stdout.splitlines()  # a resume may change it: not refused

    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import train
    from motion_ddpm_jax.config import base_config

    started = base_config()
    started.train.batch_size = 8
    (tmp_path / "fresh").mkdir()
    train.write_run_record(tmp_path / "fresh", started)  # a run stopped before its first checkpoint
    fresh = launch("--mode", "config", "--config", "configs/base.py", f"--workdir={tmp_path / 'fresh'}")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stderr.splitlines() == [
        "config: changed from the run's run record (run.json; no checkpoint yet): train.batch_size 8 -> 32"
    ]


def test_changed_settings_are_the_resumable_ones_that_differ(tmp_path, monkeypatch):
    """Only what a resume may change and does: not distributed.* (the machine's), not a data path spelled
    otherwise that names the same folder; a field the saved config lacks counts as its default."""
    sys.path.insert(0, str(ROOT))
    from motion_ddpm_jax import train
    from motion_ddpm_jax.config import base_config

    monkeypatch.chdir(tmp_path)
    saved = base_config().to_dict()
    saved["data"]["root"], saved["data"]["raw_root"] = "data/x", "raw"
    saved["distributed"]["process_id"] = 5
    saved["eval"]["num_clips"] = 12
    del saved["sample"]["ddim_spacing"]  # added later: its default
    now = base_config()
    now.data.root, now.data.raw_root = str(tmp_path / "data" / "x"), "other"
    assert train.changed_settings(saved, now) == [
        ("data.raw_root", "raw", "other"),
        ("eval.num_clips", 12, now.eval.num_clips),
    ]
    assert train.changes_line("latest checkpoint (step 4)", [("train.batch_size", 8, 32)]) == (
        "config: changed from the run's latest checkpoint (step 4): train.batch_size 8 -> 32"
    )


def test_a_mode_given_too_little_is_one_line_not_the_usage_text(tmp_path):
    """`--mode smoke` (or sample) without --config or --workdir had printed absl's 50-odd lines of usage
    text before the line that said what was missing."""
    line = one_line(launch("--mode", "smoke", cwd=tmp_path))
    assert line == (
        "launch.py: --mode smoke needs --config configs/<name>.py (launch.py --help lists the flags)"
    )
    line = one_line(launch("--mode", "sample", cwd=tmp_path))
    assert line.startswith("launch.py: --mode sample needs --workdir (the run folder) or --config")


def test_an_override_of_no_field_without_config_is_one_line(tmp_path):
    """Without --config, ml_collections applies the overrides to the default config as launch.py defines
    the flag: one naming no field had been a traceback there (AttributeError: 'num_steps')."""
    line = one_line(launch("--mode", "sample", "--workdir", str(tmp_path), "--config.sample.num_step=3"))
    assert line.startswith("launch.py: --config.sample.num_step names no config field (did you mean")
