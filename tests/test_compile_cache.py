"""launch.py's persistent compilation cache (motion_ddpm_jax/compile_cache.py): which folder each
`--compile_cache` value picks, its errors, and a second run that loads its programs from the cache and
computes exactly what the first one computed."""

import json
import os
import re
from pathlib import Path

import jax
import pytest
from tiny_run import TINY_MODEL, finish, start_launch

from motion_ddpm_jax import compile_cache
from motion_ddpm_jax.errors import UserError


@pytest.mark.parametrize(
    ("value", "environ", "expected", "source"),
    [
        (
            "auto",
            {},
            Path("~").expanduser() / ".cache/motion_ddpm_jax/jax",
            "--compile_cache=auto",
        ),
        ("auto", {"XDG_CACHE_HOME": "/x/c"}, Path("/x/c/motion_ddpm_jax/jax"), "--compile_cache=auto"),
        (
            "auto",
            {"XDG_CACHE_HOME": ""},
            Path("~").expanduser() / ".cache/motion_ddpm_jax/jax",
            "--compile_cache=auto",
        ),
        # The user's own cache folder wins over ours.
        (
            "auto",
            {"JAX_COMPILATION_CACHE_DIR": "/j", "XDG_CACHE_HOME": "/x"},
            Path("/j"),
            "JAX_COMPILATION_CACHE_DIR",
        ),
        ("off", {"JAX_COMPILATION_CACHE_DIR": "/j"}, None, "--compile_cache=off"),
        # In any case (it had made a folder named OFF); a folder of that name is ./off.
        ("OFF", {}, None, "--compile_cache=off"),
        ("Auto", {"XDG_CACHE_HOME": "/x"}, Path("/x/motion_ddpm_jax/jax"), "--compile_cache=auto"),
        ("./off", {}, Path("off"), "--compile_cache"),
        (" /some/where ", {}, Path("/some/where"), "--compile_cache"),
        ("~/cc", {}, Path("~").expanduser() / "cc", "--compile_cache"),
        # A relative XDG_CACHE_HOME is ignored, as the XDG specification says (it put the cache in the cwd).
        (
            "auto",
            {"XDG_CACHE_HOME": "rel"},
            Path("~").expanduser() / ".cache/motion_ddpm_jax/jax",
            "--compile_cache=auto",
        ),
        # Remote addresses stay as written (a Path made gs://b/c a local folder gs:/b/c).
        ("auto", {"JAX_COMPILATION_CACHE_DIR": "gs://b/c"}, "gs://b/c", "JAX_COMPILATION_CACHE_DIR"),
        ("gs://bucket/jax", {}, "gs://bucket/jax", "--compile_cache"),
    ],
)
def test_resolve(value, environ, expected, source):
    assert compile_cache.resolve(value, environ) == (expected, source)


def test_an_empty_value_is_refused():
    with pytest.raises(UserError, match=r"--compile_cache is empty: expected auto, off or a folder"):
        compile_cache.resolve("  ", {})


def test_a_folder_that_cannot_be_made_is_an_error_naming_the_flag(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(UserError, match=r"--compile_cache=.*a_file/cache: cannot use .* as the cache folder"):
        compile_cache.enable(str(blocker / "cache"))
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize(
    "value,environ",
    [("gs://bucket/jax-cache", {}), ("auto", {"JAX_COMPILATION_CACHE_DIR": "gs://bucket/jax-cache"})],
)
def test_a_remote_cache_address_reaches_jax_as_written_and_makes_no_local_folder(
    tmp_path, monkeypatch, value, environ
):
    monkeypatch.chdir(tmp_path)
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, v: updates.__setitem__(name, v))
    described = compile_cache.enable(value, environ)
    assert updates["jax_compilation_cache_dir"] == "gs://bucket/jax-cache"
    assert described.startswith("compilation cache: gs://bucket/jax-cache (")
    assert list(tmp_path.iterdir()) == []  # no ./gs:/bucket/jax-cache


def test_auto_goes_on_without_a_cache_where_its_folder_cannot_be_made(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    updates = []
    monkeypatch.setattr(jax.config, "update", lambda *args: updates.append(args))
    described = compile_cache.enable("auto", {"XDG_CACHE_HOME": str(blocker)})
    assert described.startswith("compilation cache: none (none: ") and "cannot be made" in described
    assert updates == [("jax_compilation_cache_dir", None)]
    assert blocker.read_text() == "mine"


def _metrics(workdir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith("_per_s")} for row in rows]


def test_a_second_run_loads_the_programs_and_computes_the_same_bits(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # the tiny model compiles in well under 1 s
    args = [
        *TINY_MODEL,
        f"--compile_cache={cache}",
        "--config.train.num_steps=6",
        "--config.train.log_every=2",
        "--config.train.save_every_steps=6",
    ]
    lines = []
    for name in ("first", "second"):
        out = finish(start_launch(tmp_path / name, args, env))
        lines.append(next(line for line in out.splitlines() if line.startswith("compilation cache: ")))
    counts = [re.search(r"(\d+) program\(s\) loaded .*, (\d+) stored", line).groups() for line in lines]
    assert counts[0][0] == "0" and int(counts[0][1]) > 0, lines  # the first run compiles and stores
    # The second loads every program it runs (none is new to store). It may run fewer than the first:
    # on a fresh checkout the first also prepared the demo dataset.
    assert int(counts[1][0]) > 0 and counts[1][1] == "0", lines
    assert f"compilation cache: {cache} (--compile_cache)" in lines[1]
    assert any(cache.iterdir())
    first, second = _metrics(tmp_path / "first"), _metrics(tmp_path / "second")
    assert len(first) == 3 and first == second


@pytest.mark.parametrize(
    ("value", "environ", "bounded"),
    [
        ("auto", {}, True),  # our own folder: bounded
        ("auto", {"JAX_COMPILATION_CACHE_MAX_SIZE": "-1"}, False),  # the user's setting wins
        ("auto", {"JAX_COMPILATION_CACHE_DIR": "THEIRS"}, False),  # their folder: jax's own setting
        ("GIVEN", {}, False),
    ],
)
def test_only_our_own_folder_is_bounded(tmp_path, monkeypatch, value, environ, bounded):
    environ = {"XDG_CACHE_HOME": str(tmp_path / "xdg")} | {
        k: v.replace("THEIRS", str(tmp_path / "theirs")) for k, v in environ.items()
    }
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, v: updates.__setitem__(name, v))
    compile_cache.enable(value.replace("GIVEN", str(tmp_path / "given")), environ)
    assert Path(updates["jax_compilation_cache_dir"]).is_dir()
    assert updates.get("jax_compilation_cache_max_size") == (compile_cache.MAX_BYTES if bounded else None)


@pytest.mark.parametrize(
    ("backend", "index", "kept", "said"),
    [("cpu", 0, False, True), ("cpu", 1, False, False), ("gpu", 0, True, False), ("gpu", 1, True, False)],
)
def test_only_a_multi_process_cpu_run_keeps_no_cache_and_only_its_process_0_says_so(
    tmp_path, monkeypatch, backend, index, kept, said
):
    """jax.distributed joined by 2 processes: on CPUs (gloo) no cache, process 0 says so once and process 1
    says nothing (each would print it); on GPUs the folder is used as in one process."""
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, v: updates.__setitem__(name, v))
    notes = []
    folder = tmp_path / "given"
    described = compile_cache.enable(str(folder), {}, note=notes.append)
    assert updates["jax_compilation_cache_dir"] == (str(folder) if kept else None)
    assert folder.is_dir() == kept
    expected = f"compilation cache: none ({compile_cache.FLAG} is not used by a run of 2 processes on the CPU"
    assert described.startswith(f"compilation cache: {folder} (" if kept else expected)
    assert notes == ([described] if said else [])
