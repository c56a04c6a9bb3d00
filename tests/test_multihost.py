"""Multi-host training on the real jax.distributed runtime: 2 processes x 2 CPU devices == 1 process x 4.

The two processes join through `jax.distributed.initialize` on 127.0.0.1 (gloo collectives on CPU), read
their settings from the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), each feed
their half of every global batch, and write one checkpoint into the shared workdir. The reference is one
process with 4 devices on the same global batches. Their checkpoints then restore in this process.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from ml_collections import ConfigDict
from tiny_run import ROOT, finish, output, start_launch

from motion_ddpm_jax import checkpoint, distributed
from motion_ddpm_jax.config import base_config
from motion_ddpm_jax.data import synthetic
from motion_ddpm_jax.errors import UserError

STEPS = 3

TINY = [
    "--config.model.latent_dim=32",
    "--config.model.num_layers=1",
    "--config.model.ff_size=64",
    "--config.model.num_heads=2",
    "--config.model.text_latent_dim=16",
    "--config.model.text_ff_size=32",
    "--config.model.cond_drop_prob=0.3",
    "--config.data.max_motion_length=24",
    "--config.train.batch_size=8",
    f"--config.train.num_steps={STEPS}",
    "--config.train.log_every=1",
    "--config.optim.warmup_steps=1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def joining(port: int, rank: int, count: int = 2) -> dict[str, str]:
    """The environment of process `rank` of `count` joining at 127.0.0.1:`port`."""
    return dict(
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(rank)
    )


def launch(workdir, data_args, devices, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_"))}
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        **(extra_env or {}),
    )
    return start_launch(workdir, [*TINY, *data_args], env)


def demo_data(folder, recordings_per_speaker: int = 2, sentences_per_recording: int = 4) -> list[str]:
    """The demo set written raw under `folder`, as the arguments of data.source=beat: the run prepares it
    (process 0, while the others wait at a barrier)."""
    synthetic.write_demo_dataset(
        folder / "raw",
        num_speakers=2,
        recordings_per_speaker=recordings_per_speaker,
        sentences_per_recording=sentences_per_recording,
        fps=30,
    )
    return [
        "--config.data.source=beat",
        f"--config.data.raw_root={folder / 'raw'}",
        f"--config.data.root={folder / 'prepared'}",
    ]


def test_two_processes_with_two_devices_each_equal_one_process_with_four(tmp_path):
    data = demo_data(tmp_path)
    cache = [f"--compile_cache={tmp_path / 'cache'}"]
    port = free_port()
    joined = [
        launch(tmp_path / "multi", [*data, *cache], devices=2, extra_env=joining(port, rank))
        for rank in (0, 1)
    ]
    outputs = [finish(p) for p in joined]
    assert "process 0 of 2 joined (2 local / 4 global devices)" in outputs[0]
    assert "process 1 of 2 joined (2 local / 4 global devices)" in outputs[1]
    # No persistent cache in a multi-process CPU run: a program process 0 loaded from one hung in the first
    # collective with jax 0.12.1 (compile_cache.py). So the same run again, on the same cache, trains too.
    assert "is not used by a run of 2 processes on the CPU" in outputs[0]
    assert not (tmp_path / "cache").exists()
    port = free_port()
    twice = [
        launch(tmp_path / "multi_again", [*data, *cache], devices=2, extra_env=joining(port, rank))
        for rank in (0, 1)
    ]
    try:
        for process in twice:
            finish(process, timeout=240)
    finally:  # not left waiting in gloo for 30 min where it hangs
        for process in twice:
            process.kill()
            process.wait()
    # Only process 0 logs metrics.
    assert (tmp_path / "multi" / "metrics.jsonl").is_file()
    assert "loss" not in outputs[1].split("joined", 1)[1]
    # Started again at its end: process 0 alone says where it resumed and that nothing is left to train.
    port = free_port()
    again = [launch(tmp_path / "multi", data, devices=2, extra_env=joining(port, rank)) for rank in (0, 1)]
    again = [finish(p) for p in again]
    assert f"already at step {STEPS}" in again[0] and "resumed from" in again[0]
    assert "already at step" not in again[1] and "resumed from" not in again[1]

    finish(launch(tmp_path / "single", data, devices=4))

    # Both checkpoints restore here, in one process with however many devices this test runs on.
    single = checkpoint.Checkpointer(tmp_path / "single", read_only=True)
    for name in ("multi", "multi_again"):
        multi = checkpoint.Checkpointer(tmp_path / name, read_only=True)
        assert multi.all_steps() == single.all_steps() == [STEPS]
        for use_ema in (False, True):
            got, meta = multi.restore_params(use_ema=use_ema)
            want, _ = single.restore_params(use_ema=use_ema)
            flat_got = {k: np.asarray(v) for k, v in _flatten(got)}
            flat_want = {k: np.asarray(v) for k, v in _flatten(want)}
            assert flat_got.keys() == flat_want.keys()
            for key in flat_want:
                np.testing.assert_allclose(
                    flat_got[key], flat_want[key], rtol=1e-4, atol=1e-6, err_msg=f"{name}: {key}"
                )
    assert meta["total_steps"] == STEPS
    # The steps really changed the parameters (the comparison is not between two initialisations).
    init_like, _ = multi.restore_params(use_ema=False)
    assert any(np.abs(np.asarray(v)).sum() > 0 for _, v in _flatten(init_like["out"]))


def test_a_set_up_error_of_one_process_ends_that_process_at_once(tmp_path):
    """Process 1 given a data.root that does not exist said so at once, then waited at jax's shutdown
    barrier for process 0, which waited for it in a collective, until both aborted after 5 minutes."""
    synthetic.write_demo_dataset(
        tmp_path / "raw", num_speakers=2, recordings_per_speaker=1, sentences_per_recording=2, fps=30
    )
    good = ["--config.data.source=beat", f"--config.data.raw_root={tmp_path / 'raw'}"]
    good.append(f"--config.data.root={tmp_path / 'prepared'}")
    bad = ["--config.data.source=prepared", f"--config.data.root={tmp_path / 'nowhere'}"]
    port = free_port()
    processes = [
        launch(tmp_path / "run", data, devices=1, extra_env=joining(port, rank))
        for rank, data in ((0, good), (1, bad))
    ]
    try:
        processes[1].wait(timeout=120)  # (the join itself takes seconds; the barrier had waited 300 s)
        said = output(processes[1])
        assert processes[1].returncode == 1, said[-3000:]
        assert "nowhere" in said and "launch.py --mode train:" in said
    finally:
        for process in processes:
            process.kill()
            process.wait()


# Loaded into one process of a run (its PYTHONPATH): it dies (SIGKILL) as soon as checkpoint DIE_AT is
# complete, before the barrier that ends Orbax's save. The others had waited there for JAX's heartbeat
# timeout (80-100 s) and stopped with its error; a process killed as the test saw that checkpoint's folder
# appear did the same now and then (the "Gloo flake": 1 run in 7 outwaited 60 s).
DIE_AT = 4
DIE_AFTER_SAVE = f"""
import os, signal, sys

from orbax.checkpoint import checkpoint_manager

finalize = checkpoint_manager.CheckpointManager._finalize_checkpoint


def _finalize_checkpoint(self, step):
    finalize(self, step)
    if step == {DIE_AT}:
        print("test: dying as checkpoint {DIE_AT} is complete", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


checkpoint_manager.CheckpointManager._finalize_checkpoint = _finalize_checkpoint
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGKILL as a save ends", "two Ctrl-Cs"])
def test_a_process_killed_mid_run_ends_the_others_at_once(tmp_path, how):
    """A process of the run killed (SIGKILL, a crashed node), or stopped at once by a second Ctrl-C: the
    others' next collective fails. They had then waited about 90 s at jax's shutdown barrier and aborted
    with a page of C++ and no word of what was kept; now each prints the error, says where it stopped and
    what is kept, and exits 1 at once. The process given two Ctrl-Cs exits 130 at once (its own exit would
    wait at that barrier); its first Ctrl-C alone would stop both at the next step they compare the flag
    at, every train.log_every steps: far away here. Killed as a checkpoint is complete, before the barrier
    that ends Orbax's save: that barrier had been the JAX coordination service's, which notices a dead
    process only by its heartbeat timeout (100 s)."""
    data = [
        *demo_data(tmp_path, recordings_per_speaker=1, sentences_per_recording=2),
        "--config.train.num_steps=100000",
        "--config.train.save_every_steps=4",
        "--config.train.log_every=50000",
    ]
    port = free_port()
    extra = [joining(port, rank) for rank in (0, 1)]
    if how == "SIGKILL as a save ends":
        (tmp_path / "inject").mkdir()
        (tmp_path / "inject" / "sitecustomize.py").write_text(DIE_AFTER_SAVE)
        given = os.environ.get("PYTHONPATH")
        extra[1]["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "inject"), *([given] if given else [])])
    # (SIGINT as a terminal gives it: a test run started in the background, `pytest &`, starts its children
    # with SIGINT ignored, which launch.py keeps.)
    with _sigint_default():
        processes = [launch(tmp_path / "run", data, devices=1, extra_env=extra[rank]) for rank in (0, 1)]
    try:
        deadline = time.monotonic() + 300
        if how == "SIGKILL as a save ends":
            try:
                processes[1].wait(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"process 1 did not die:\n{output(processes[1])[-3000:]}") from None
            said = output(processes[1])
            assert processes[1].returncode == -signal.SIGKILL, said[-3000:]
            assert f"test: dying as checkpoint {DIE_AT} is complete" in said
        while not (tmp_path / "run" / "checkpoints" / "4").is_dir():  # training is under way
            assert time.monotonic() < deadline and processes[1].poll() is None, output(processes[1])[-3000:]
            time.sleep(0.2)
        if how == "SIGKILL":
            processes[1].kill()
        elif how == "two Ctrl-Cs":
            processes[1].send_signal(signal.SIGINT)
            time.sleep(1.0)
            processes[1].send_signal(signal.SIGINT)
        killed = time.monotonic()
        if how == "two Ctrl-Cs":
            processes[1].wait(timeout=30)
            said = output(processes[1])
            assert processes[1].returncode == 128 + signal.SIGINT, said[-3000:]
            assert "Ctrl-C again stops at once" in said and "launch.py --mode train: interrupted" in said
            assert time.monotonic() - killed < 20  # not the barrier's ~90 s
        try:
            processes[0].wait(timeout=60)
        except subprocess.TimeoutExpired:
            processes[0].kill()
            processes[0].wait()
            raise AssertionError(f"process 0 still ran 60 s on:\n{output(processes[0])[-4000:]}") from None
        said = output(processes[0])
        assert processes[0].returncode == 1, said[-3000:]
        assert time.monotonic() - killed < 30  # not the heartbeat's 100 s nor the barrier's ~90 s
        assert "launch.py --mode train: stopped by the error above" in said
        assert "its checkpoints up to step " in said and "start it again to resume" in said
        assert "heartbeat" not in said, said[-3000:]
    finally:
        for process in processes:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _sigint_default():
    """SIGINT at its default while children are started, as a terminal starts them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("failing", [None, 0, 1])
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), UserError("data.root missing")])
def test_every_process_goes_through_the_same_collectives_when_one_cannot_open_the_data(
    monkeypatch, failing, error
):
    """Process 0 caught only a UserError: a full disk while it wrote the cache (an OSError) left the
    others in the broadcast until JAX aborted. Each process now calls the same collectives, in order, and
    raises when any of them failed. Simulated per process: the collectives are recorded, not run."""
    import jax
    from jax.experimental import multihost_utils

    from motion_ddpm_jax import train

    outcomes, flags = {}, np.array([failing == 0, failing == 1], np.int32)
    for rank in (0, 1):
        calls = []
        first = str(error) if failing == 0 else ""  # what process 0 broadcasts

        def broadcast(text, calls=calls, first=first):
            calls.append("broadcast")
            return first

        def opened(config, log, rank=rank):
            if failing == rank:
                raise error
            return "dataset"

        monkeypatch.setattr(jax, "process_count", lambda: 2)
        monkeypatch.setattr(jax, "process_index", lambda rank=rank: rank)
        monkeypatch.setattr(train, "_broadcast_text", broadcast)
        monkeypatch.setattr(train.beat, "dataset_from_config", opened)
        monkeypatch.setattr(
            multihost_utils, "process_allgather", lambda x, calls=calls: calls.append("allgather") or flags
        )
        try:
            outcomes[rank] = train._dataset_once_per_run(None, log=lambda _: None)
        except (UserError, OSError) as raised:
            outcomes[rank] = raised
        assert calls == ["broadcast", "allgather"], (rank, calls)
    if failing is None:
        assert outcomes == {0: "dataset", 1: "dataset"}
    else:
        assert outcomes[failing] is error
        other = outcomes[1 - failing]
        assert isinstance(other, UserError) and "could not open the data" in str(other), other


def test_a_shared_check_file_left_by_a_kill_leaves_the_workdir_free(tmp_path):
    from motion_ddpm_jax import train

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / f"{train.SHARED_CHECK}4242-1").write_bytes(b"")  # a kill between write and removal
    assert train.claim_workdir(tmp_path / "w", base_config())  # free (it had been "not empty")


@pytest.mark.parametrize("case", ["another config", "unshared workdir", "undecodable workdir name"])
def test_processes_given_another_config_or_workdir_are_refused_before_training(tmp_path, case):
    """A process started with another --config.seed trained a different model beside process 0's, and
    workdirs that were not one shared folder left process 1's checkpoints nowhere (a requeue then called
    process 0's damaged): both are refused by every process at start, naming the field or the folder."""
    data = ["--config.data.source=prepared", f"--config.data.root={tmp_path / 'data'}"]
    port = free_port()
    processes = []
    for rank in (0, 1):
        workdir = tmp_path / (f"w{rank}" if case == "unshared workdir" else "w")
        if case == "undecodable workdir name":  # (its name crossed the collectives: process 0 had raised)
            workdir = tmp_path / os.fsdecode(b"w\xff")
        extra = ["--config.seed=1"] if case == "another config" and rank == 1 else []
        processes.append(launch(workdir, [*data, *extra], devices=1, extra_env=joining(port, rank)))
    try:
        for process in processes:
            process.wait(timeout=120)
        said = [output(p) for p in processes]
        assert [p.returncode for p in processes] == [1, 1], said
        if case == "undecodable workdir name":  # through the check, then both refused the missing data
            assert all("dataset folder not found" in s and "UnicodeEncodeError" not in s for s in said), said
            assert "process 0 could not open the data: " in said[1]
        elif case == "another config":
            assert "process(es) 1 of this run were given another config than process 0" in said[0]
            assert "seed: 0 on process 0, 1 here" in said[1]
        else:
            assert "is not one folder shared by the run's processes: process(es) 1 do not see" in said[0]
            given = f"(process 0 was given --workdir {tmp_path / 'w0'}, this process {tmp_path / 'w1'}: give"
            assert given in said[1], said[1][-3000:]
        assert not [p for p in tmp_path.iterdir() if p.suffix != ".log"]
        assert not list(tmp_path.glob(".shared-check-*"))
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


# ------------------------------------------------------------------ the settings, without processes


def dist(**values):
    config = base_config().distributed
    config.update(values)
    return config


def test_single_process_unless_something_asks_for_more():
    assert distributed.initialize_arguments(dist(), environ={}) is None
    assert (
        distributed.initialize_arguments(dist(enabled="false"), environ={"JAX_COORDINATOR_ADDRESS": "a:1"})
        is None
    )
    assert (
        distributed.initialize_arguments(dist(), environ={"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    )


def test_settings_come_from_the_environment_or_the_config_first():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    args = distributed.initialize_arguments(dist(), environ=env)
    assert args == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
        "initialization_timeout": 300,
    }
    args = distributed.initialize_arguments(
        dist(coordinator_address="h:9", num_processes=2, process_id=0, local_device_ids="0,1"), environ=env
    )
    assert args["coordinator_address"] == "h:9" and args["num_processes"] == 2 and args["process_id"] == 0
    assert args["local_device_ids"] == [0, 1]


def test_a_cluster_manager_launch_needs_no_settings():
    slurm = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}
    assert distributed.initialize_arguments(dist(), environ=slurm) == {"initialization_timeout": 300}
    assert distributed.initialize_arguments(dist(), environ={"OMPI_COMM_WORLD_SIZE": "2"}) is not None


@pytest.mark.parametrize(
    "environ,cluster",
    [
        ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "1"}, "Open MPI"),
        ({"SLURM_NTASKS": "8", "SLURM_PROCID": "5"}, "SLURM"),
    ],
    ids=["open-mpi-5", "slurm-without-srun"],
)
def test_a_cluster_launch_jax_cannot_configure_names_the_settings_to_give(environ, cluster, monkeypatch):
    """Where the installed jax cannot read the launch (Open MPI 5 before jax's mpi4py route, or without
    mpi4py; SLURM processes not started by srun), its error ("coordinator_address should be defined")
    named none of our settings: the UserError now names them, and how to train as one process."""
    import jax

    def refuse(**_):
        raise ValueError("coordinator_address should be defined.")

    for name in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "JAX_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    with pytest.raises(UserError) as refused:
        distributed.initialize(dist(), log=lambda *_: None)
    message = str(refused.value)
    assert "coordinator_address should be defined" in message
    assert f"could not configure the {cluster} launch" in message and "JAX_COORDINATOR_ADDRESS" in message
    assert "--config.distributed.enabled=false to train as one process" in message


@pytest.mark.parametrize(
    "listing, node, expected",
    [("1(x4)", "2", 1), ("2(x3),1", "3", 1), ("2(x3),1", "0", 2), ("8", "0", 8), ("2(x2)", "5", None),
     ("", "0", None), ("two", "0", None)],
)  # fmt: skip
def test_the_slurm_tasks_of_this_node_are_read_from_the_step_listing(listing, node, expected):
    environ = {"SLURM_STEP_TASKS_PER_NODE": listing, "SLURM_NODEID": node} if listing else {}
    assert distributed._slurm_tasks_on_this_node(environ) == expected


@pytest.mark.parametrize("tasks_per_node, visible", [("1(x2)", "all"), ("4(x2)", "2")])
def test_one_srun_task_per_node_keeps_every_gpu_of_the_node(tasks_per_node, visible, monkeypatch):
    """jax's SLURM detection sets local_device_ids = [SLURM_LOCALID], one GPU per task: with one task per
    node (the README's srun line) every process drove GPU 0 alone. One task per GPU keeps jax's choice."""
    import jax

    def as_jax_does(**_):  # what jax.distributed.initialize does under SLURM without local_device_ids
        jax.config.update("jax_cuda_visible_devices", "2")

    for name in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "JAX_"))]:
        monkeypatch.delenv(name)
    slurm = {"SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "2", "SLURM_NODEID": "1"}
    for name, value in {**slurm, "SLURM_STEP_TASKS_PER_NODE": tasks_per_node}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(jax.distributed, "initialize", as_jax_does)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    before, said = jax.config.values["jax_cuda_visible_devices"], []
    try:
        assert distributed.initialize(dist(), log=said.append)
        assert jax.config.values["jax_cuda_visible_devices"] == visible
    finally:
        jax.config.update("jax_cuda_visible_devices", before)
    assert said[0].startswith("joining the run's processes (SLURM); waiting up to 300 s"), said


def test_joining_leaves_sigterm_to_the_trainer(monkeypatch):
    """jax.distributed.initialize started JAX's preemption service, whose C++ handler took a SIGTERM sent
    after the join and before train.run installed its own, and dropped it: the run trained on to its end."""
    import jax

    for name in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "JAX_"))]:
        monkeypatch.delenv(name)
    seen = []
    monkeypatch.setattr(
        jax.distributed,
        "initialize",
        lambda **_: seen.append(jax.config.values["jax_enable_preemption_service"]),
    )
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    before = jax.config.values["jax_enable_preemption_service"]
    try:
        assert distributed.initialize(
            dist(coordinator_address="h:1", num_processes=2, process_id=1), log=lambda *_: None
        )
    finally:
        jax.config.update("jax_enable_preemption_service", before)
    assert seen == [False]


@pytest.mark.parametrize(
    "config, environ", [({"local_device_ids": "0, 2"}, {}), ({}, {"JAX_LOCAL_DEVICE_IDS": "0,2"})]
)
def test_a_single_process_run_uses_the_gpus_local_device_ids_names(config, environ, monkeypatch):
    """local_device_ids of a run of one process had been read only when joining others: the run took
    every GPU of the node. It restricts the visible GPUs as jax.distributed does for a joined process."""
    import jax

    for name in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_", "JAX_"))]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    before, said = dict(jax.config.values), []
    try:
        assert not distributed.initialize(dist(**config), log=said.append)
        assert jax.config.values["jax_cuda_visible_devices"] == "0,2"
        assert jax.config.values["jax_rocm_visible_devices"] == "0,2"
    finally:
        for option in ("jax_cuda_visible_devices", "jax_rocm_visible_devices"):
            jax.config.update(option, before[option])
    assert said and "GPU(s) 0,2" in said[0], said
    with pytest.raises(UserError, match="local_device_ids.*comma-separated integers"):
        distributed.initialize(dist(local_device_ids="0;2"), log=said.append)


def test_the_join_says_what_it_joins_and_how_long_it_waits_before_waiting():
    """A wrong address, a repeated id or a missing process ended in a SIGABRT after 300 s naming nothing."""
    arguments = {
        "initialization_timeout": 20,
        "coordinator_address": "h:1",
        "num_processes": 2,
        "process_id": 1,
    }
    note = distributed._joining_note(arguments, None)
    assert note.startswith(
        "joining the run's processes (coordinator_address=h:1, num_processes=2, process_id=1)"
    )
    assert "waiting up to 20 s (distributed.initialization_timeout_s)" in note and "DEADLINE_EXCEEDED" in note


@pytest.mark.parametrize(
    "config,environ,named",
    [
        (dict(enabled="yes"), {}, "distributed.enabled"),
        (dict(enabled="true"), {}, "JAX_COORDINATOR_ADDRESS"),
        (dict(coordinator_address="h:1"), {}, "JAX_NUM_PROCESSES"),
        ({}, {"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, "JAX_COORDINATOR_ADDRESS"),  # not alone
        (dict(num_processes=2), {}, "JAX_COORDINATOR_ADDRESS"),
        ({}, {"JAX_PROCESS_ID": "1"}, "JAX_COORDINATOR_ADDRESS"),
        (dict(coordinator_address="h:1", num_processes=2), {}, "JAX_PROCESS_ID"),
        (dict(coordinator_address="nohostport", num_processes=2, process_id=0), {}, "host:port"),
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), {}, "process_id=2"),
        (
            dict(coordinator_address="h:1"),
            {"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "JAX_NUM_PROCESSES",
        ),
        (
            dict(coordinator_address="h:1", num_processes=2, process_id=0, local_device_ids="0;1"),
            {},
            "local_device",
        ),
    ],
)
def test_incomplete_or_malformed_settings_name_what_is_missing(config, environ, named):
    with pytest.raises(UserError, match=named):
        distributed.initialize_arguments(dist(**config), environ=environ)


def test_the_config_section_is_complete():
    assert isinstance(base_config().distributed, ConfigDict)


# ------------------------------------------------------------------------------ host (CPU) devices
@pytest.mark.parametrize(
    "mode, requested, cores, environ, expected",
    [
        ("sample", None, 2, {}, 2),  # one per core where samples split over them
        ("eval", None, 6, {}, 6),
        ("sample", None, 64, {}, distributed.MAX_AUTO_HOST_DEVICES),  # each holds a copy of the params
        ("sample", None, 1, {}, 1),
        ("train", None, 8, {}, None),  # training over host devices was slower: jax's default (1)
        ("smoke", None, 8, {}, None),
        ("train", 4, 2, {}, 4),  # asked for: any mode, any count
        ("sample", 1, 8, {}, 1),
        ("sample", None, 8, {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}, None),  # left as set
        ("sample", None, 8, {"JAX_NUM_CPU_DEVICES": "3"}, None),
        ("sample", None, 8, {"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=true"}, 8),  # another flag
    ],
)
def test_host_devices_split_sampling_by_default_and_follow_what_is_asked(
    mode, requested, cores, environ, expected
):
    assert distributed.host_device_count(mode, requested, cores, environ) == expected


@pytest.mark.parametrize("requested", [0, -2, True, 1.5])
def test_a_bad_host_device_count_names_the_flag(requested):
    with pytest.raises(UserError, match=r"--host_devices must be an integer >= 1"):
        distributed.host_device_count("sample", requested, 2, {})


def test_host_devices_asked_twice_is_refused():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    with pytest.raises(
        UserError, match=r"--host_devices and XLA_FLAGS=--xla_force_host_platform_device_count"
    ):
        distributed.host_device_count("sample", 2, 2, environ)


def test_launch_refuses_a_bad_host_device_count_before_starting():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "launch.py", "--mode", "smoke", "--config", "configs/demo.py", "--host_devices=0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "--host_devices must be an integer >= 1, got 0" in result.stderr


def test_a_jax_without_the_host_device_option_keeps_its_default_and_says_so(monkeypatch):
    import jax

    def unknown(name, value):
        raise AttributeError(f"Unrecognized config option: {name}")

    monkeypatch.setattr(jax.config, "update", unknown)
    lines = []
    assert distributed.use_host_devices(2, log=lines.append) is False
    assert len(lines) == 1 and "cannot set the number of host devices" in lines[0]
    assert distributed.use_host_devices(None, log=lines.append) is False and len(lines) == 1
