"""What software made a run (provenance.py): versions as importlib.metadata has them, the git commit as git
itself names it, run.json and every checkpoint holding the record, and the line a resume logs when jax,
jaxlib or the device kind changed since its checkpoint was saved."""

import importlib.metadata
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from motion_ddpm_jax import checkpoint, provenance, train
from motion_ddpm_jax.data import synthetic

HAS_GIT = shutil.which("git") is not None
needs_git = pytest.mark.skipif(not HAS_GIT, reason="no git on the PATH")


def git(folder: Path, *args: str) -> str:
    """`git ARGS` in folder, with an identity for commits (the reference the reader is checked against)."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


# ------------------------------------------------------------------------------------------- the record
def test_versions_are_those_importlib_metadata_reports():
    record = provenance.software()
    for name in provenance.PACKAGES:
        assert record[name] == importlib.metadata.version(name), name
    assert record["jax"] == jax.__version__  # the distribution is the module imported here
    assert record["python"] == ".".join(str(part) for part in sys.version_info[:3])
    assert provenance.package_versions(["numpy", "no-such-distribution-xyz"]) == {
        "numpy": importlib.metadata.version("numpy"),
        "no-such-distribution-xyz": None,
    }


def test_the_device_is_the_callers_and_none_without_one():
    device = jax.devices()[0]
    record = provenance.software(device)
    assert (record["backend"], record["device_kind"]) == (jax.default_backend(), device.device_kind)
    assert provenance.software()["backend"] is None and provenance.software()["device_kind"] is None


def test_the_command_line_splits_back_into_its_words():
    argv = ["launch.py", "--config", "configs/demo.py", "--config.sample.text=wave hello|it's me"]
    assert provenance.command_line(argv) == (
        "launch.py --config configs/demo.py '--config.sample.text=wave hello|it'\"'\"'s me'"
    )
    assert shlex.split(provenance.command_line(argv)) == argv
    assert shlex.split(provenance.command_line()) == sys.argv


# ------------------------------------------------------------------------------------------------- git


def steady(record: dict) -> dict:
    """A software record but for git_dirty, which the suite's own files (written while it runs, beside
    other tests) may change between a run's record and the test's."""
    return {key: value for key, value in record.items() if key != "git_dirty"}


@needs_git
def test_the_git_commit_of_this_checkout_is_git_rev_parse_head():
    if not (provenance.SOURCE / ".git").exists():
        pytest.skip(f"{provenance.SOURCE} is not a git checkout")
    record = provenance.software()
    assert record["git_commit"] == git(provenance.SOURCE, "rev-parse", "HEAD")
    # (whether the tree is dirty can change while the suite runs: tests write files; a temporary
    # repository's below is checked both ways)
    assert record["git_dirty"] in (True, False)


@needs_git
def test_a_commit_is_read_from_loose_and_packed_refs_a_detached_head_and_a_worktree(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    assert provenance.git_commit(repo) is None  # a branch with no commit yet
    (repo / "a.txt").write_text("one\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "one")
    assert provenance.git_commit(repo) == git(repo, "rev-parse", "HEAD")  # a loose ref
    assert provenance.git_dirty(repo) is False
    # The user's GIT_DIR / GIT_INDEX_FILE (another repository, e.g. a dotfiles one) do not reach git here.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "untracked.txt").write_text("x\n")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert provenance.git_dirty(repo) is False
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    (repo / "a.txt").write_text("two\n")
    assert provenance.git_dirty(repo) is True
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert provenance.git_commit(repo) == git(repo, "rev-parse", "HEAD")  # from packed-refs
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "checkout", "-q", "--detach", first)
    assert provenance.git_commit(repo) == first
    git(repo, "checkout", "-q", "main")
    git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "side"), first)
    assert (tmp_path / "side" / ".git").is_file()  # `gitdir: ...`, with its refs in the main .git
    assert provenance.git_commit(tmp_path / "side") == first == git(tmp_path / "side", "rev-parse", "HEAD")
    assert provenance.git_dirty(tmp_path / "side") is False


def test_a_copy_of_the_package_outside_git_records_no_commit(tmp_path):
    shutil.copytree(
        provenance.SOURCE / "motion_ddpm_jax",
        tmp_path / "motion_ddpm_jax",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    script = (
        "import json; from motion_ddpm_jax import provenance; "
        "print(json.dumps([provenance.__file__, provenance.software()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
    )
    where, record = json.loads(done.stdout)
    assert Path(where).parent == tmp_path / "motion_ddpm_jax"  # the copy, not the checkout's
    assert record["git_commit"] is None and record["git_dirty"] is None
    assert record["jax"] == importlib.metadata.version("jax")


def test_a_git_that_fails_or_hangs_gives_none(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()

    def hangs(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    def missing(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    for git_run in (hangs, missing):
        monkeypatch.setattr(subprocess, "run", git_run)
        assert provenance.git_dirty(tmp_path) is None
    assert provenance.git_commit(tmp_path) is None  # .git without HEAD: unreadable, not an error
    (tmp_path / ".git" / "HEAD").write_bytes(b"\xff\xfe")
    assert provenance.git_commit(tmp_path) is None


# -------------------------------------------------------------------------------------- resume's line
def test_changed_software_names_jax_jaxlib_the_device_kind_and_xla_flags_old_to_new():
    old = {"jax": "0.10.2", "jaxlib": "0.10.2", "device_kind": "cpu", "numpy": "2.3.0", "git_commit": "a"}
    same = {**old, "numpy": "2.4.0", "git_commit": "b"}  # not what changes a step's arithmetic
    assert provenance.changed_software(old, same) is None
    assert provenance.changed_software(None, same) is None  # a checkpoint from before the record
    assert provenance.changed_software({**old, "jaxlib": None}, {**same, "jaxlib": "0.11.0"}) is None
    line = provenance.changed_software(
        old, {**same, "jaxlib": "0.11.0", "device_kind": "NVIDIA H100 80GB HBM3"}, "checkpoint 40"
    )
    assert line.startswith(
        "the software changed since checkpoint 40 was saved: jaxlib 0.10.2 -> 0.11.0, "
        "device_kind cpu -> NVIDIA H100 80GB HBM3; "
    )
    assert "may differ in the last bits from an uninterrupted one" in line and "jax " not in line
    # XLA's options change its roundings as its version does (O0 failed three tolerance tests, session 34)
    flagged = provenance.changed_software(
        {**old, "xla_flags": ""}, {**same, "xla_flags": "--xla_backend_optimization_level=0"}
    )
    assert "xla_flags (none) -> --xla_backend_optimization_level=0" in flagged


# ---------------------------------------------------------------------------------- a run's files
TINY = {
    "model": dict(
        latent_dim=16,
        num_layers=1,
        ff_size=32,
        num_heads=2,
        text_latent_dim=8,
        text_ff_size=16,
        text_num_heads=2,
        text_num_layers=1,
    ),
    "diffusion": dict(steps=50),
    "train": dict(batch_size=2, log_every=1, save_every_steps=2, save_every_epochs=0),
    "optim": dict(warmup_steps=0),
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    from motion_ddpm_jax.config import base_config

    root = tmp_path_factory.mktemp("data")
    synthetic.write_demo_dataset(
        root / "raw", num_speakers=2, recordings_per_speaker=2, sentences_per_recording=4, fps=30
    )
    config = base_config()
    config.data.update(
        source="beat", raw_root=str(root / "raw"), root=str(root / "prepared"), fps=30.0, max_motion_length=16
    )
    for section, fields in TINY.items():
        config[section].update(fields)
    return config


def test_run_json_and_the_checkpoint_record_the_software_and_a_resume_under_another_jax_says_so(
    tmp_path, tiny_config, monkeypatch
):
    """The record is in run.json and the checkpoint's metadata; a resume under another jax version names
    it, old -> new, and a checkpoint from before the record says nothing. The resumes ask for no more
    steps than the checkpoint's: they stop after the resume's lines, before compiling a train step."""
    config, workdir = tiny_config.copy_and_resolve_references(), tmp_path / "run"
    config.train.num_steps = 2
    train.run(config, workdir, log=lambda _: None)
    expected = provenance.software(jax.local_devices()[0])
    record = json.loads((workdir / train.RUN_RECORD).read_text())
    assert steady(record["software"]) == steady(expected) and record["command"] == shlex.join(sys.argv)
    metadata = checkpoint.Checkpointer(workdir, read_only=True).restore_metadata(2)
    assert steady(metadata["software"]) == steady(expected) and metadata["command"] == shlex.join(sys.argv)

    real_software = provenance.software
    monkeypatch.setattr(provenance, "software", lambda *a, **k: {**real_software(*a, **k), "jax": "9.9.9"})
    lines = []
    train.run(config, workdir, log=lines.append)
    said = [line for line in lines if "software changed" in line]
    assert said == [provenance.changed_software(expected, {**expected, "jax": "9.9.9"}, "checkpoint 2")]
    assert f"checkpoint 2 was saved: jax {expected['jax']} -> 9.9.9;" in said[0]
    assert lines.index(said[0]) == 1 + next(i for i, s in enumerate(lines) if s.startswith("resumed from "))

    real_restore = checkpoint.Checkpointer.restore_metadata
    monkeypatch.setattr(  # the checkpoint as a run from before the record saved it
        checkpoint.Checkpointer,
        "restore_metadata",
        lambda self, step=None: {k: v for k, v in real_restore(self, step).items() if k != "software"},
    )
    lines.clear()
    train.run(config, workdir, log=lines.append)
    assert any(line.startswith("resumed from ") for line in lines), lines
    assert not [line for line in lines if "software changed" in line], lines
