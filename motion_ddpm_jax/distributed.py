"""Joining several processes (hosts) into one run with `jax.distributed.initialize`.

Call `initialize(config.distributed)` before anything touches a jax device. Where the settings come from,
first found wins, per field:
- the config: `distributed.coordinator_address`, `num_processes`, `process_id`, `local_device_ids`;
- the environment: `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`, `JAX_LOCAL_DEVICE_IDS` (e.g. "0,1");
- a cluster manager that jax detects by itself (SLURM's `srun`, Open MPI's `mpirun` up to version 4): then
  nothing needs to be set. A launch of several processes that jax cannot detect (Open MPI 5) is refused
  with the settings it needs named, never trained as several unrelated single-process runs.
`distributed.enabled`: `auto` joins when a coordinator address is given or a multi-process SLURM / Open MPI
launch is detected, and otherwise trains as one process; `true` always joins (an error when no setting says
how); `false` never does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from motion_ddpm_jax.errors import UserError

ENABLED_VALUES = ("auto", "true", "false")


# The variables by which jax itself detects a cluster manager (jax/_src/clusters/slurm_cluster.py and
# ompi_cluster.py; the same in jax 0.10 to 0.12): a launch it cannot detect must be given the settings.
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
OPEN_MPI_URI = "OMPI_MCA_orte_hnp_uri"  # set by Open MPI's mpirun up to version 4, no longer by 5


def _cluster_launch(environ: Mapping[str, str]) -> str | None:
    """The cluster manager that launched several processes of this run, if jax can read it, else None."""
    try:
        if all(name in environ for name in SLURM_VARIABLES) and int(environ["SLURM_NTASKS"]) > 1:
            return "SLURM"
        if OPEN_MPI_URI in environ and int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
            return "Open MPI"
    except ValueError:
        return None
    return None


def _undetected_launch(environ: Mapping[str, str]) -> str:
    """Words on a launch of several processes that jax cannot detect (its variables incomplete), else ""."""

    def count(name: str) -> int:
        try:
            return int(environ.get(name, "1"))
        except ValueError:
            return 1

    if OPEN_MPI_URI not in environ and count("OMPI_COMM_WORLD_SIZE") > 1:
        return f"an Open MPI launch without {OPEN_MPI_URI} (Open MPI 5 sets none), which jax does not detect"
    if "SLURM_PROCID" in environ and count("SLURM_NTASKS") > 1:
        absent = [name for name in SLURM_VARIABLES if name not in environ]
        if absent:
            return f"a SLURM launch without {', '.join(absent)}, which jax needs to detect it"
    return ""


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
    undetected = "" if cluster is not None else _undetected_launch(environ)
    if enabled == "auto" and not address and cluster is None and not undetected:
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
                f"process's id, and no cluster manager (SLURM, Open MPI) was detected"
                f"{f' ({undetected})' if undetected else ''}: set {', '.join(missing)}"
                + ("; or --config.distributed.enabled=false to train as one process" if undetected else "")
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
        try:
            arguments["local_device_ids"] = [int(part) for part in device_ids.split(",") if part.strip()]
        except ValueError:
            raise UserError(
                f"distributed.local_device_ids / JAX_LOCAL_DEVICE_IDS must be comma-separated integers, "
                f"got {device_ids!r}"
            ) from None
    return arguments


def initialize(dist_config, log=print) -> bool:
    """Join the run's processes when the settings ask for it (see the module doc); True if it did.

    Call it before any jax computation. Joining twice is harmless.
    """
    arguments = initialize_arguments(dist_config)
    if arguments is None:
        return False
    import jax

    if jax.distributed.is_initialized():
        return True
    try:
        jax.distributed.initialize(**arguments)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"jax.distributed.initialize({arguments}) failed: {error}") from None
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
