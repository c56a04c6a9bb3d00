"""What the tests that run launch.py as a user does (resume, preemption, multi-host, workdir ownership)
share: command-line overrides of configs/demo.py that make a model small enough to train in seconds, and
launch.py started in the background and awaited."""

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
]


def start_launch(workdir: Path, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    """`launch.py --config configs/demo.py --workdir=WORKDIR ARGS` in the background, in the repository
    root with exactly `env`. Its output goes to a log file beside the workdir, not to a pipe: a pipe that
    nobody reads while the test waits (on this process or another) fills up and blocks the run."""
    command = [sys.executable, "launch.py", "--config", "configs/demo.py", f"--workdir={workdir}", *args]
    log_path = Path(f"{workdir}.launch-{time.monotonic_ns()}.log")
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
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
