"""What the tests that run launch.py as a user does (resume, preemption, multi-host, workdir ownership)
share: command-line overrides of configs/demo.py that make a model small enough to train in seconds,
launch.py started in the background and awaited, and the environment those runs get."""

import functools
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = [
    "--config.model.latent_dim=16",
    "--config.model.num_layers=1",
    "--config.model.ff_size=32",
    "--config.model.num_heads=2",
    "--config.model.text_latent_dim=8",
    "--config.model.text_ff_size=16",
    "--config.model.text_num_heads=2",
    "--config.data.max_motion_length=16",
    "--config.diffusion.steps=50",
    "--config.train.batch_size=4",
    # no progress GIF at the end of each run (3 s of a 10 s run); the demo's run through launch.py in
    # test_train_step draws them, test_resume's in-process runs check them
    "--config.train.sample_every=0",
]


# The tests check what the code computes and what a run does (its files, resumes, messages and bits, set
# against float64 references and against other runs), not how fast its compiled code runs, on models so
# small that compiling is most of their time. So every process of the suite (the tests' own, which
# tests/conftest.py sets up, and each run of launch.py or of a benchmark started from a test) compiles with
# LLVM's optimisations off and with XLA:CPU's older elemental emitters for its fusions (the MLIR fusion
# emitters took twice as long to compile a tiny train step: 5.4 s against 2.7 s, session 34); XLA's HLO
# passes, which choose the fusions and their arithmetic, run as ever. A tiny run of launch.py took 12.9 s
# from an empty compilation cache, against 21.5 s with XLA's defaults; the whole suite on a 2-core Zen 3
# EPYC, from empty caches, 738 s of tests against 946 s with the tests' own process at XLA's defaults
# (session 36). MOTION_DDPM_JAX_TEST_XLA_DEFAULTS=1 runs every process with XLA's defaults, as users'
# runs compile (the suite passes either way).
FAST_COMPILE = "--xla_backend_optimization_level=0"
OLDER_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
XLA_DEFAULTS = "MOTION_DDPM_JAX_TEST_XLA_DEFAULTS"


@functools.cache
def fast_compile_flags() -> str:
    """FAST_COMPILE, and OLDER_EMITTERS where this jaxlib's XLA knows the option (XLA stops a process
    whose XLA_FLAGS name an option it does not know: one that a later XLA drops is left out); empty where
    MOTION_DDPM_JAX_TEST_XLA_DEFAULTS asks for XLA's defaults. A process whose XLA_FLAGS hold them already
    (set by tests/conftest.py, which probed this XLA) keeps those."""
    if os.environ.get(XLA_DEFAULTS, "").strip() not in ("", "0"):
        return ""
    inherited = os.environ.get("XLA_FLAGS", "").split()
    if FAST_COMPILE in inherited:
        return " ".join(flag for flag in (FAST_COMPILE, OLDER_EMITTERS) if flag in inherited)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"],
            env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": OLDER_EMITTERS},
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:  # a stalled machine: LLVM's optimisations off alone, and go on
        return FAST_COMPILE
    unknown = probe.returncode != 0 and "Unknown flag" in probe.stderr
    return FAST_COMPILE if unknown else f"{FAST_COMPILE} {OLDER_EMITTERS}"


def with_fast_compile(xla_flags: str) -> str:
    """`xla_flags` with those of `fast_compile_flags()` that it lacks added."""
    present = xla_flags.split()
    missing = [flag for flag in fast_compile_flags().split() if flag not in present]
    return " ".join([*present, *missing])


def launch_env(environ: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a launch.py run: `environ` (default: this process's), on the CPU, compiling
    with `fast_compile_flags()` added to its XLA_FLAGS, and `extra` (which may set XLA_FLAGS: the flags
    are added to it too)."""
    env = {**(os.environ if environ is None else environ), "JAX_PLATFORMS": "cpu", **extra}
    env["XLA_FLAGS"] = with_fast_compile(env.get("XLA_FLAGS", ""))
    return env


def run_launch(*args: str) -> subprocess.CompletedProcess:
    """`launch.py ARGS` run to its end in the repository root, in `launch_env()`: its exit code and its
    output (stdout and stderr apart, as text)."""
    return subprocess.run(
        [sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=launch_env(),
    )  # fmt: skip


def start_launch(workdir: Path, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """`launch.py --config configs/demo.py --workdir=WORKDIR ARGS` in the background, in the repository
    root with `env` (`launch_env` adds the fast-compile flags). Its output goes to a log file beside the
    workdir, not to a pipe: a pipe that nobody reads while the test waits (on this process or another)
    fills up and blocks the run."""
    command = [sys.executable, "launch.py", "--config", "configs/demo.py", f"--workdir={workdir}", *args]
    log_path = Path(f"{workdir}.launch-{time.monotonic_ns()}.log")
    with log_path.open("w") as log:
        env = launch_env(env)
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path
    return process


def output(process: subprocess.Popen) -> str:
    """Everything a `start_launch` process has written so far."""
    return process.log_path.read_text()


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a `start_launch` process; its output, after asserting that it exited with 0."""
    process.wait(timeout=timeout)
    out = output(process)
    assert process.returncode == 0, out[-4000:]
    return out
