"""Whether the machine was quiet enough for a benchmark's timings to mean something: the 1-minute load
average, less the benchmark's own CPU use, against the cores it may use. Every benchmark records it and
warns (stderr, its table's header, its JSON's `busy` / `warnings`) when other work took turns with it.

Standard library only: the benchmarks that do not load jax (bench_bvh.py, bench_pipeline.py) use it too.
Import it at a benchmark's start: its own CPU use is counted from then (`own_load`).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process and of its children waited for so far."""
    usage = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


_STARTED = (time.monotonic(), cpu_seconds())  # wall and CPU time when this module loaded (`own_load`)


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup's CPU quota (a container's
    `--cpus`) where one is set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def own_load() -> float:
    """This process's own share of the 1-minute load average, roughly: its CPU use per second since this
    module loaded (its threads' and its finished children's), weighted as the load average weighs a
    stretch of that length (1 - exp(-seconds / 60)): about 0 at a benchmark's start, its CPU use after a
    minute or more."""
    start_wall, start_cpu = _STARTED
    wall = time.monotonic() - start_wall
    if wall <= 0:
        return 0.0
    return (cpu_seconds() - start_cpu) / wall * (1 - math.exp(-wall / 60))


def load_check(when: str = "") -> dict:
    """The 1-minute load average now, less this process's own share (`own_load`), against the usable
    cores: {"load_average_1m", "load_beside_own_1m", "usable_cpus", "warning"}; the warning (None on a
    quiet machine) when the load beside ours exceeds the cores: other work then takes turns with the
    timed steps (or more threads run than there are cores), and ratios between implementations timed
    in turn swing by large factors (a run at load 5-9 on 2 cores gave 260x)."""
    load = os.getloadavg()[0]
    beside = max(0.0, load - own_load())
    cpus = usable_cpus()
    warning = None
    if beside > cpus:
        warning = (
            f"WARNING: busy machine{' ' + when if when else ''}: 1-minute load average {load:.1f} "
            f"({beside:.1f} beside this benchmark's own CPU use) on {cpus} usable cores: the timings and "
            "the ratios between implementations are not meaningful; rerun on a quiet machine"
        )
    return {"load_average_1m": load, "load_beside_own_1m": beside, "usable_cpus": cpus, "warning": warning}


def record_at_start() -> dict:
    """The load check at a benchmark's start, as its record's fields (load_average_1m, load_beside_own_1m,
    usable_cpus, busy, warnings); the warning printed to stderr."""
    check = load_check()
    if check["warning"]:
        print(check["warning"], file=sys.stderr, flush=True)
    return {
        "load_average_1m": check["load_average_1m"],
        "load_beside_own_1m": check["load_beside_own_1m"],
        "usable_cpus": check["usable_cpus"],
        "busy": check["warning"] is not None,
        "warnings": [check["warning"]] if check["warning"] else [],
    }


def check_load_at_end(machine: dict) -> str | None:
    """The load check again at a benchmark's end, into its record's `machine`: load_average_1m_end and
    load_beside_own_1m_end, and on a busy machine busy = True and the warning added to its "warnings"
    and printed to stderr. Returns the warning (None on a quiet machine)."""
    check = load_check("at the end")
    machine["load_average_1m_end"] = check["load_average_1m"]
    machine["load_beside_own_1m_end"] = check["load_beside_own_1m"]
    if check["warning"]:
        machine["busy"] = True
        machine.setdefault("warnings", []).append(check["warning"])
        print(check["warning"], file=sys.stderr, flush=True)
    return check["warning"]


def warning_lines(machine: dict) -> str:
    """The record's warnings (a busy machine: `load_check`), one per line, each after a newline: to end a
    printed header with ("" when there are none)."""
    return "".join(f"\n{warning}" for warning in machine.get("warnings", []))
