"""Joining several processes (hosts) into one run with `jax.distributed.initialize`.

Call `initialize(config.distributed)` before anything touches a jax device. Where the settings come from,
first found wins, per field:
- the config: `distributed.coordinator_address`, `num_processes`, `process_id`, `local_device_ids`;
- the environment: `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`, `JAX_LOCAL_DEVICE_IDS` (e.g. "0,1");
- a cluster manager that jax detects by itself (SLURM's `srun`, Open MPI's `mpirun`): then nothing needs to
  be set. Where the installed jax cannot configure such a launch (Open MPI 5 needs a recent jax and
  mpi4py), the error names the settings to give instead.
`distributed.enabled`: `auto` joins when a coordinator address is given or a multi-process SLURM / Open MPI
launch is detected, refuses a process count above 1 or a process id above 0 given without a coordinator
address (naming what is missing), and otherwise trains as one process; `true` always joins (an error when
no setting says how); `false` never does.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from typing import Any

from motion_ddpm_jax.errors import UserError

ENABLED_VALUES = ("auto", "true", "false")


def _cluster_launch(environ: Mapping[str, str]) -> str | None:
    """The cluster manager that launched several processes of this run, if any: jax reads its variables
    (which ones depends on the jax release: Open MPI 5, for one, needs a recent jax and mpi4py)."""
    try:
        if int(environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in environ:
            return "SLURM"
        if int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
            return "Open MPI"
    except ValueError:
        return None
    return None


def _int_setting(configured: int, unset: int, env_name: str, environ) -> int | None:
    if int(configured) != unset:
        return int(configured)
    if env_name in environ:
        try:
            return int(environ[env_name])
        except ValueError:
            raise UserError(
                f"environment variable {env_name}={environ[env_name]!r} is not an integer"
            ) from None
    return None


def initialize_arguments(dist_config, environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The keyword arguments for `jax.distributed.initialize`, or None when this run is one process.

    Pure (reads `environ`, default os.environ): raises UserError naming the field or variable when the
    settings are incomplete or malformed.
    """
    environ = os.environ if environ is None else environ
    enabled = str(dist_config.enabled).lower()
    if enabled not in ENABLED_VALUES:
        raise UserError(f"distributed.enabled must be one of {ENABLED_VALUES}, got {dist_config.enabled!r}")
    if enabled == "false":
        return None
    address = str(dist_config.coordinator_address) or environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = _int_setting(dist_config.num_processes, 0, "JAX_NUM_PROCESSES", environ)
    process_id = _int_setting(dist_config.process_id, -1, "JAX_PROCESS_ID", environ)
    device_ids = str(dist_config.local_device_ids) or environ.get("JAX_LOCAL_DEVICE_IDS", "")
    cluster = _cluster_launch(environ)
    # auto: one process unless a coordinator or a cluster manager is named, or the settings ask for more
    # (JAX_NUM_PROCESSES=2 without an address had trained alone, as a second process 0, in silence)
    asks_for_more = (num_processes or 1) > 1 or (process_id or 0) > 0
    if enabled == "auto" and not address and cluster is None and not asks_for_more:
        return None
    if cluster is None:
        missing = [
            name
            for name, value in (
                ("distributed.coordinator_address or JAX_COORDINATOR_ADDRESS", address),
                ("distributed.num_processes or JAX_NUM_PROCESSES", num_processes),
                ("distributed.process_id or JAX_PROCESS_ID", process_id),
            )
            if value in ("", None)
        ]
        if missing:
            raise UserError(
                "a multi-process run needs the coordinator's host:port, the number of processes and this "
                "process's id, and no cluster manager (SLURM, Open MPI) was detected: set "
                f"{', '.join(missing)}"
            )
    if address and ":" not in address:
        raise UserError(f"the coordinator address {address!r} must be host:port (e.g. 10.0.0.1:1234)")
    if num_processes is not None and num_processes < 1:
        raise UserError(f"distributed.num_processes must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise UserError(f"distributed.process_id={process_id} must be in [0, num_processes={num_processes})")
    arguments: dict[str, Any] = {"initialization_timeout": int(dist_config.initialization_timeout_s)}
    if address:
        arguments["coordinator_address"] = address
    if num_processes is not None:
        arguments["num_processes"] = num_processes
    if process_id is not None:
        arguments["process_id"] = process_id
    if device_ids:
        arguments["local_device_ids"] = _device_ids(device_ids)
    return arguments


def _device_ids(device_ids: str) -> list[int]:
    try:
        return [int(part) for part in device_ids.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"distributed.local_device_ids / JAX_LOCAL_DEVICE_IDS must be comma-separated integers, "
            f"got {device_ids!r}"
        ) from None


def _one_process_devices(dist_config, log, environ: Mapping[str, str] | None = None) -> None:
    """A run of one process that names local_device_ids (or JAX_LOCAL_DEVICE_IDS) uses those GPUs only,
    as a joined process does (jax.distributed passes them on as the visible devices): they had been
    ignored, the run taking every GPU of the node. Before any backend starts."""
    environ = os.environ if environ is None else environ
    given = str(dist_config.local_device_ids) or environ.get("JAX_LOCAL_DEVICE_IDS", "")
    if not given:
        return
    ids = _device_ids(given)
    if not ids:
        return
    import jax

    visible = ",".join(str(i) for i in ids)
    for option in ("jax_cuda_visible_devices", "jax_rocm_visible_devices"):
        try:
            jax.config.update(option, visible)
        except AttributeError:  # an option this jax does not have
            pass
    log(
        f"one process on GPU(s) {visible} (distributed.local_device_ids / JAX_LOCAL_DEVICE_IDS); a CPU run "
        "is not affected"
    )


def _slurm_tasks_on_this_node(environ: Mapping[str, str]) -> int | None:
    """How many tasks of this SLURM job step run on this node: SLURM_STEP_TASKS_PER_NODE (or
    SLURM_TASKS_PER_NODE), e.g. '2(x3),1' for 2, 2, 2 and 1 on nodes 0-3, at SLURM_NODEID; None where
    they are not set or not understood."""
    listing = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    if not listing:
        return None
    counts: list[int] = []
    try:
        for part in listing.split(","):
            count, _, repeat = part.strip().partition("(x")
            counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
        node = int(environ.get("SLURM_NODEID", "0"))
    except ValueError:
        return None
    return counts[node] if 0 <= node < len(counts) else None


def _joining_note(arguments: dict[str, Any], cluster: str | None) -> str:
    """What this process is about to join, said before the join waits for the others."""
    given = {k: arguments.get(k) for k in ("coordinator_address", "num_processes", "process_id")}
    shown = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
    if cluster and None in given.values():
        shown = f"{shown}; the rest from {cluster}" if shown else cluster
    return (
        f"joining the run's processes ({shown}); waiting up to "
        f"{arguments['initialization_timeout']} s (distributed.initialization_timeout_s) for all of them: "
        "where it ends in DEADLINE_EXCEEDED, check that every process has the same coordinator address "
        "and number of processes, a process id of its own, and started"
    )


def _without_jax_preemption_notifier() -> None:
    """Keep JAX's preemption service off: joining starts it, and it catches SIGTERM in C++ from then on for
    `multihost_utils.reached_preemption_sync_point`, which this trainer does not call (train.run's own
    handler stops the run at a step the processes agree on). A SIGTERM after the join and before that
    handler was installed (the set-up's first seconds) was taken by JAX's and dropped: the run trained on
    to its end and a scheduler's SIGKILL then lost every step since the last checkpoint. Off, such an early
    SIGTERM goes to `hold_sigterm`'s handler, which launch.py installs after the join (during the join, the
    default ends the process at once, status 143). Before `jax.distributed.initialize`."""
    import jax

    try:
        jax.config.update("jax_enable_preemption_service", False)
    except AttributeError:  # a jax without the option (or without the service)
        pass


_held_sigterms: list[int] = []  # SIGTERMs `_hold_sigterm` took since `hold_sigterm`


def _hold_sigterm(signum, frame) -> None:
    _held_sigterms.append(signum)


def hold_sigterm() -> None:
    """Keep a SIGTERM from here until train.run installs its own handler, which then stops the run at its
    first step with a checkpoint and exit status 0, as a SIGTERM during train.run's set-up does
    (`take_held_sigterm`). Without it such a SIGTERM (a scheduler preempting a job whose processes have just
    joined) ended the process with status 143, and the others then stopped as when a process is killed.

    launch.py calls it right after `initialize`, not before: a Python handler runs only once the join's
    C++ call returns, so a SIGTERM while the processes wait for each other would have waited with them (up
    to distributed.initialization_timeout_s) and then been lost in the join's abort; before and during the
    join the default still ends the process at once. A SIGTERM ignored where the process started, or a
    handler the calling program set, is left as it is."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _hold_sigterm)


def take_held_sigterm() -> bool:
    """Whether `hold_sigterm`'s handler took a SIGTERM (forgotten once said: a later run in this process
    does not stop on it)."""
    taken = bool(_held_sigterms)
    _held_sigterms.clear()
    return taken


def is_sigterm_holder(handler) -> bool:
    """Whether `handler` (a signal.getsignal value) is `hold_sigterm`'s."""
    return handler is _hold_sigterm


def initialize(dist_config, log=print) -> bool:
    """Join the run's processes when the settings ask for it (see the module doc); True if it did.

    Call it before any jax computation. Joining twice is harmless. Under SLURM with one task on this node
    and no local_device_ids given, the process keeps every GPU of the node (jax would give it the one
    numbered SLURM_LOCALID, as for one task per GPU).
    """
    arguments = initialize_arguments(dist_config)
    if arguments is None:
        _one_process_devices(dist_config, log)
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    cluster = _cluster_launch(os.environ)
    log(_joining_note(arguments, cluster))
    _without_jax_preemption_notifier()
    try:
        jax.distributed.initialize(**arguments)
    except (RuntimeError, ValueError) as error:
        cluster = _cluster_launch(os.environ)
        hint = (
            f". This jax could not configure the {cluster} launch by itself (e.g. Open MPI 5 without "
            "mpi4py, or SLURM processes not started by srun): set distributed.coordinator_address or "
            "JAX_COORDINATOR_ADDRESS, distributed.num_processes or JAX_NUM_PROCESSES and "
            "distributed.process_id or JAX_PROCESS_ID, or --config.distributed.enabled=false to train as "
            "one process"
            if cluster is not None and "coordinator_address" not in arguments
            else ""
        )
        raise UserError(f"jax.distributed.initialize({arguments}) failed: {error}{hint}") from None
    if (
        cluster == "SLURM"
        and "local_device_ids" not in arguments
        and _slurm_tasks_on_this_node(os.environ) == 1
    ):
        for option in ("jax_cuda_visible_devices", "jax_rocm_visible_devices"):  # before any backend starts
            try:
                jax.config.update(option, "all")
            except AttributeError:  # an option this jax does not have
                pass
    log(
        f"process {jax.process_index()} of {jax.process_count()} joined "
        f"({jax.local_device_count()} local / {jax.device_count()} global devices)"
    )
    return True


# ------------------------------------------------------------------------------ host (CPU) devices
HOST_DEVICE_MODES = ("sample", "eval")  # launch.py modes that split over one host device per core
MAX_AUTO_HOST_DEVICES = 8  # each holds its own copy of the parameters


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_device_count(
    mode: str, requested: int | None, cores: int, environ: Mapping[str, str] | None = None
) -> int | None:
    """How many CPU devices this process exposes (jax's `jax_num_cpu_devices`); None leaves jax's default.

    XLA:CPU gains little from a second core on a sampler step's small operations (a 4 x 60 DDPM step:
    38-40 ms pinned to one core, 32-34 ms on two), so sampling on a CPU is faster with its samples split
    over one host device per core (`sampling.generate` splits over the local devices;
    benchmarks/RESULTS.md, session 12). Training over host devices was slower, so only `sample` and
    `eval` get them by default: min(cores, MAX_AUTO_HOST_DEVICES). `requested` (launch.py's
    `--host_devices`) overrides that for any mode; a count already set in the environment
    (`XLA_FLAGS=--xla_force_host_platform_device_count=N` or `JAX_NUM_CPU_DEVICES`) is left as it is.
    Where a GPU runs the program, the host devices go unused.
    """
    environ = os.environ if environ is None else environ
    forced = "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", "")
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UserError(f"--host_devices must be an integer >= 1, got {requested!r}")
        if forced:
            raise UserError(
                "--host_devices and XLA_FLAGS=--xla_force_host_platform_device_count both set the number "
                "of host devices: give one of them"
            )
        return requested
    if forced or environ.get("JAX_NUM_CPU_DEVICES", "").strip() or mode not in HOST_DEVICE_MODES:
        return None
    return max(1, min(int(cores), MAX_AUTO_HOST_DEVICES))


def use_host_devices(count: int | None, log=print) -> bool:
    """Expose `count` CPU devices (None: leave jax's default); True if it did. Call it before anything
    starts a backend. A jax without the `jax_num_cpu_devices` option keeps one device, and says so."""
    if count is None:
        return False
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except AttributeError:  # an option this jax does not know
        log(f"this jax ({jax.__version__}) cannot set the number of host devices; using its default")
        return False
    return True
