"""Train-step time: our jitted step vs the PyTorch twin (benchmarks/torch_twin.py), side by side.

    .venv/bin/python benchmarks/bench_train_step.py [--batch 32] [--frames 196] [--features 263,264]
        [--impls jax-fp32,torch-fp32,torch-bf16] [--geometric off|on|both] [--repeats 5] [--warmup 2]
        [--memory main|all|none] [--json out.json]

Implementations (--impls): `jax-fp32`, `jax-bf16` (our `train.make_train_step`, jitted, the state donated,
compute dtype float32 / bfloat16), `torch-fp32` (the twin, eager), `torch-bf16` (eager under bf16
autocast), `torch-compile-fp32`, `torch-compile-bf16` (the twin's model + loss under torch.compile).
Defaults: jax-fp32,torch-fp32,torch-bf16 on a CPU; jax-fp32,jax-bf16,torch-fp32,torch-bf16 on a GPU.

For each feature size, one train state serves all our variants and one twin serves all the torch ones
(same initial weights: ours copied into the twin). Every case is compiled (time reported apart) and
called once; then, all cases prepared, the --warmup rounds (untimed) and the repeats are interleaved:
round r runs every case once, starting at a rotating case, so a change of load hits all of them alike; the
table shows medians. By default (`--processes shared`) every case runs in this process.
`--processes separate` runs ours and the twin each in a worker process of its own, which prepares its
cases (the twin from its own initial weights: same shapes, same work) and times each step it is asked
for, while the other waits on a pipe: the two share no heap and no thread pool, as when a user runs
either. On a 2-core EPYC the ratios came out within 3% of those measured in one process
(benchmarks/RESULTS.md), and the two processes together needed more memory than one: each keeps its own
peak (at T = 360, 15.7 + 8.4 GB, past that machine's 24 GB). Not on an accelerator: two processes would
both claim its memory.
`--pipeline K` makes each timed call K steps dispatched back to back and waited for once (ours: K calls
of the compiled step, then one wait; the twin: K steps, then one synchronize), the time per step being the
call's over K. With 1 (the default) every step is waited for, so on an accelerator its time includes the
host's work between steps (dispatch, the wait, reading the loss), which a training loop that waits only
at each log (launch.py's) overlaps with the device's work.
Each timed call's minor page faults go to the log and the JSON (`minor_page_faults`):
a step that still faults memory in has not reached its steady state. The losses are the base config's (MSE +
velocity 0.1 + acceleration 0.05); `--geometric on|both` adds the bone-length term (0.01) where the
features are BEAT positions (264 = 88 joints x 3), and the table then gives its overhead. FLOP/s use the
analytic count of `common.model_flops` (checked against XLA's cost analysis, printed), and each is
compared with one large matmul of the same framework and dtype measured in the same run (the floor,
`%floor`), and with the card's bf16 matmul rate, the faster of the two bf16 floors (jax's, torch's; on a
CPU the fastest floor): `MFU%`, the model FLOP utilisation.
Peak host memory comes from one subprocess per case (`--memory main`: the cases without the geometric
term; `all`; `none`): its resident high-water mark while it runs two steps after compiling and warming
up (see `memory_worker`), and the accelerator's peak where there is one.

Columns of the table: `case` the implementation, the feature size D and `+geom` with the bone-length
term; `s/step` the median seconds per step; `samples/s` the batch over that; `x twin32`, `x twin16` and
`x tc16` the twin's median time over this row's (above 1: this row is faster) for the twin's float32
eager step (`torch-fp32`), its eager bf16 autocast step (`torch-bf16`) and its bf16 autocast step under
torch.compile (`torch-compile-bf16`), where that implementation ran at the same D and term ("-" where
it did not); `FLOP/s` the analytic count over s/step; `%floor` that over the floor of the row's
framework and dtype; `MFU%` over the card's bf16 rate (above); `compile` ours' compile seconds (the twin
under torch.compile: its first call, compilation included); `peak RSS` and `dev peak` the host's
resident and the accelerator's peak memory (--memory; "-" where not measured). A row ending in
`(no warm-up)` was timed with --warmup 0: its first timed step may not be at steady state (memory
still faulted in: see its page faults in the JSON), so take more repeats or a warm-up. The header
warns when the machine is busy (the 1-minute load average beside this benchmark's own CPU use above
the usable cores, at the start or at the end; `busy` and `warnings` in the JSON's machine): on a busy
machine the times and ratios are not meaningful.

Output streams: the machine and the floor first, each case's compile time and every round's times in the
log (stderr), each feature size's rows as soon as its repeats are done, each peak memory as measured; the
JSON (`complete: false` until the end) is rewritten at each of those points, so a run cut short keeps
what it finished. The full table comes again at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: I001 - first: sets the allocator before jax starts
import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import diffusion, losses, train
from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.skeleton import beat_skeleton

IMPLS = ("jax-fp32", "jax-bf16", "torch-fp32", "torch-bf16", "torch-compile-fp32", "torch-compile-bf16")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
_RESULT_TAG = "WORKER_RESULT "


@dataclasses.dataclass(frozen=True)
class Case:
    impl: str
    features: int
    geometric: bool

    @property
    def name(self) -> str:
        return f"{self.impl} D{self.features}{' +geom' if self.geometric else ''}"

    @property
    def framework(self) -> str:
        return self.impl.split("-")[0]

    @property
    def dtype(self) -> str:
        return _DTYPES[self.impl.rsplit("-", 1)[1]]


def geometry_for(features: int) -> losses.Geometry:
    """The bone-length term's data for BEAT positions: the BEAT skeleton and made-up statistics (cm)."""
    skeleton = beat_skeleton()
    if features != 3 * skeleton.num_joints:
        raise ValueError(f"the geometric term needs BEAT positions ({3 * skeleton.num_joints} features)")
    rng = np.random.default_rng(1)
    mean = (10 * rng.standard_normal(features)).astype(np.float32)
    std = rng.uniform(1.0, 20.0, features).astype(np.float32)
    return losses.Geometry(mean=jnp.asarray(mean), std=jnp.asarray(std), skeleton=skeleton)


class OurStep:
    """Our step for one feature size: one train state (float32, shared by every variant) on the default
    device, and a compiled step per (compute dtype, geometric term)."""

    def __init__(self, args, features: int, seed: int = 0):
        self.args, self.features = args, features
        self.config = common.bench_config(args, args.frames)
        self.model = model_lib.model_from_config(
            self.config, input_feats=features, text_vocab_size=args.vocab
        )
        start = time.perf_counter()
        params = model_lib.init_params(self.model, jax.random.key(seed))
        self.init_s = time.perf_counter() - start
        self.num_params = sum(p.size for p in jax.tree.leaves(params))
        self.lr = train.learning_rate_schedule(self.config.optim, 10_000, 500)
        self.optimizer, self.ema = (
            train.make_optimizer(self.config.optim, self.lr),
            train.make_ema(self.config.optim),
        )
        self.state = train.create_train_state(params, self.optimizer, self.ema, seed)
        self.rng = jnp.array(self.state.rng)  # a copy: the state is donated
        self.schedule = diffusion.make_schedule("linear", self.config.diffusion.steps)
        host = common.random_batch(args.batch, args.frames, features, args.text_length, args.vocab, seed)
        self.batch = jax.device_put(host)

    def step_function(self, dtype: str, geometric: bool):
        """The train step (not jitted) in compute dtype `dtype`, with or without the bone-length term."""
        config = common.bench_config(self.args, self.args.frames, dtype)
        config.loss.use_geometric_loss = geometric
        model = model_lib.model_from_config(
            config, input_feats=self.features, text_vocab_size=self.args.vocab
        )
        empty = common.empty_caption(self.args.text_length)
        geometry = geometry_for(self.features) if geometric else None
        return train.make_train_step(
            model, config, self.schedule, self.lr, self.optimizer, self.ema, empty, geometry, axis_name=None
        )

    def compile(self, dtype: str, geometric: bool, compiler_options: dict | None = None):
        """(compiled step, compile seconds, XLA's FLOP count or None); `compiler_options`: XLA options for
        this compilation alone (as XLA_FLAGS names them, without the dashes)."""
        step = self.step_function(dtype, geometric)
        start = time.perf_counter()
        lowered = jax.jit(step, donate_argnums=0).lower(self.state, self.batch, self.rng)
        compiled = (
            lowered.compile(compiler_options=compiler_options) if compiler_options else lowered.compile()
        )
        return compiled, time.perf_counter() - start, common.xla_flops(compiled)

    def runner(self, compiled, steps: int = 1):
        """One call: `steps` steps dispatched back to back, then one wait for the last (and its loss)."""

        def run():
            for _ in range(steps):
                self.state, metrics = compiled(self.state, self.batch, self.rng)
            jax.block_until_ready((self.state, metrics))
            return float(metrics["loss"])

        return run


class TwinStep:
    """The PyTorch twin for one feature size: one model and trainer shared by every torch variant."""

    def __init__(self, args, features: int, device, flax_model, params=None, seed: int = 0):
        import torch_twin

        self.torch_twin, self.device = torch_twin, device
        self.config = common.bench_config(args, args.frames)
        self.config.loss.use_geometric_loss = False
        twin = torch_twin.twin_of(flax_model, device=device)
        if params is not None:
            torch_twin.load_flax_params(twin, params)
        self.num_params = torch_twin.parameter_count(twin)
        has_skeleton = features == 3 * beat_skeleton().num_joints
        self.trainer = torch_twin.Trainer(
            twin.train(),
            self.config,
            diffusion.make_schedule("linear", self.config.diffusion.steps),
            common.empty_caption(args.text_length),
            geometry=geometry_for(features) if has_skeleton else None,
            seed=seed,
        )
        self.trainer.compile_mode = args.torch_compile_mode
        if args.torch_tf32:
            import torch

            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        host = common.random_batch(args.batch, args.frames, features, args.text_length, args.vocab, seed)
        self.batch = torch_twin.to_torch(host, device)

    def runner(self, case: Case, steps: int = 1):
        import torch

        autocast = torch.bfloat16 if case.dtype == "bfloat16" else None
        compiled = case.impl.startswith("torch-compile")

        def run():
            for _ in range(steps):
                metrics = self.trainer.step(self.batch, autocast, compiled=compiled, geometric=case.geometric)
            common.torch_sync(self.device)
            return float(metrics["loss"])

        return run


def prepare(args, features: int, cases: list[Case], device, with_params: bool = True):
    """{case: (run, info)} for one feature size, every case compiled and called once."""
    ours = twin = None
    if any(c.framework == "jax" for c in cases) or with_params:
        ours = OurStep(args, features)
    if any(c.framework == "torch" for c in cases):
        if ours is None:  # a torch-only memory worker: torch's own init, no jax parameters in memory
            config = common.bench_config(args, args.frames)
            flax_model = model_lib.model_from_config(config, input_feats=features, text_vocab_size=args.vocab)
            twin = TwinStep(args, features, device, flax_model)
        else:
            host_params = jax.device_get(ours.state.params)
            twin = TwinStep(args, features, device, ours.model, host_params)
            del host_params
        if ours is not None and not any(c.framework == "jax" for c in cases):
            ours = None
    prepared = {}
    for case in cases:
        log(f"preparing {case.name}")
        steps = getattr(args, "pipeline", 1)
        info = {"num_params": (ours or twin).num_params, "process_id": os.getpid(), "steps_per_call": steps}
        if case.framework == "jax":
            compiled, info["compile_s"], info["xla_flops"] = ours.compile(case.dtype, case.geometric)
            run = ours.runner(compiled, steps)
        else:
            run = twin.runner(case, steps)
        start = time.perf_counter()
        info["first_loss"] = run()
        info["first_call_s"] = time.perf_counter() - start  # torch.compile compiles here
        if case.impl.startswith("torch-compile"):
            info["compile_s"] = info["first_call_s"]
        log(
            f"{case.name}: "
            + (f"compiled in {info['compile_s']:.1f} s, " if "compile_s" in info else "")
            + f"first call {info['first_call_s']:.2f} s, loss {info['first_loss']:.4f}"
        )
        prepared[case] = (run, info)
    return prepared


def interleaved(prepared: dict, repeats: int, warmup: int = 0) -> dict[Case, list[float]]:
    """`warmup` untimed rounds, then `repeats` timed ones; round r runs every case once, starting at case
    r mod n: seconds per step of each case (a call's time over its info's `steps_per_call`). Each case's
    minor page faults per timed call go into its info (`minor_page_faults`): a step that still faults its
    memory in is not yet in its steady state.

    The warm-up rounds come after every case has been prepared, not right after each case's own first
    call: preparing the next cases (the twin, its weights, torch.compile) changes the shared heap, and a
    case warmed up before that could page-fault new memory in its first timed round (ours beside the
    twin: 4.4 against 2.6 s in bf16, 6.1 against 5.1 s in fp32; benchmarks/RESULTS.md, session 15)."""
    cases = list(prepared)
    seconds = {case: [] for case in cases}
    for info in (prepared[case][1] for case in cases):
        info["minor_page_faults"] = []
    for r in range(warmup + repeats):
        timed = r >= warmup
        for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
            run, info = prepared[case]
            info["last_loss"], elapsed, faults = timed_call(run)
            if timed:
                seconds[case].append(elapsed / info.get("steps_per_call", 1))
                info["minor_page_faults"].append(faults)
        if timed:
            log(
                f"round {r - warmup + 1} of {repeats}: "
                + ", ".join(
                    f"{c.name} {seconds[c][-1]:.4f} s ({prepared[c][1]['minor_page_faults'][-1]} page faults)"
                    for c in cases
                )
            )
    return seconds


class Timed(tuple):
    """(loss, seconds, minor page faults) of one step."""


def timed_call(run) -> Timed:
    """Run one step and time it here, unless it was timed where it ran (a worker's step returns Timed)."""
    faults = common.minor_page_faults()
    start = time.perf_counter()
    result = run()
    elapsed, faults = time.perf_counter() - start, common.minor_page_faults() - faults
    return result if isinstance(result, Timed) else Timed((result, elapsed, faults))


def serve_worker(args) -> None:
    """A worker process (--serve): prepare the cases given as JSON [[impl, features, geometric], ...]
    (one framework's), report their infos as a tagged JSON line, then run one step per `run I` line on
    stdin and answer each with its loss, seconds and minor page faults (all measured here), until EOF.

    Between its steps the process waits on a read, so the other framework's steps run alone on the
    machine; the two share no heap and no thread pool."""
    cases = [
        Case(impl, int(features), bool(geometric)) for impl, features, geometric in json.loads(args.serve)
    ]
    uses_torch = any(case.framework == "torch" for case in cases)
    device = common.torch_device(args.torch_device, args.torch_threads) if uses_torch else None
    prepared = prepare(args, cases[0].features, cases, device, with_params=False)
    print(_RESULT_TAG + json.dumps([prepared[case][1] for case in cases]), flush=True)
    for line in sys.stdin:
        loss, seconds, faults = timed_call(prepared[cases[int(line.split()[1])]][0])
        print(_RESULT_TAG + json.dumps({"loss": loss, "seconds": seconds, "faults": faults}), flush=True)


class Worker:
    """The parent's end of a `serve_worker` process."""

    def __init__(self, args, cases: list[Case]):
        command = [
            sys.executable,
            __file__,
            "--serve",
            json.dumps([[c.impl, c.features, c.geometric] for c in cases]),
        ]
        command += worker_flags(args)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.infos = self._reply()

    def _reply(self):
        for line in self.process.stdout:
            if line.startswith(_RESULT_TAG):
                return json.loads(line[len(_RESULT_TAG) :])
        code = self.process.wait()
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        hint = (
            " (signal 9 is often the kernel's out-of-memory killer: try --processes shared)"
            if code == -9
            else ""
        )
        raise SystemExit(
            f"a benchmark worker process ended ({how}) before it answered{hint}; its log is above"
        )

    def runner(self, index: int):
        def run():
            try:
                self.process.stdin.write(f"run {index}\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                pass  # it has ended: _reply says how
            reply = self._reply()
            return Timed((reply["loss"], reply["seconds"], reply["faults"]))

        return run

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=120)


def prepare_in_processes(args, cases: list[Case]) -> tuple[dict, list[Worker]]:
    """{case: (run, info)} like `prepare`, each framework's cases prepared and run in a worker process of
    their own (`serve_worker`); the workers, to close when done. The twin then starts from its own
    initial weights, not ours: the same shapes and work, other values."""
    prepared, workers = {}, []
    for framework in dict.fromkeys(case.framework for case in cases):
        members = [case for case in cases if case.framework == framework]
        log(f"starting a worker process for {', '.join(case.name for case in members)}")
        worker = Worker(args, members)
        workers.append(worker)
        for index, (case, info) in enumerate(zip(members, worker.infos, strict=True)):
            prepared[case] = (worker.runner(index), info)
    return prepared, workers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- memory: one subprocess per case


def memory_worker(args) -> None:
    """Run one case (--worker IMPL:D:GEOM) and print its peak memory as a tagged JSON line.

    Peaks are VmHWM (this process's resident high-water mark): ru_maxrss would not do, Linux carries the
    parent's peak into a child through fork + exec. The mark is reset (/proc/self/clear_refs) after
    the set-up (init, compilation, first steps), so `peak_rss_mb` is the peak while two more steps run
    and `setup_peak_rss_mb` the peak before, compiler included.
    """
    impl, features, geometric = args.worker.split(":")
    case = Case(impl, int(features), geometric == "1")
    device = common.torch_device(args.torch_device, args.torch_threads) if case.framework == "torch" else None
    start_rss = common.current_rss_mb()
    prepared = prepare(args, case.features, [case], device, with_params=False)
    run, info = prepared[case]
    for _ in range(args.warmup):
        run()
    setup_peak = common.rss_high_water_mb()
    reset = common.reset_rss_high_water()
    before_steps = common.current_rss_mb()
    run()
    run()
    result = {
        "peak_rss_mb": common.rss_high_water_mb() if reset else None,
        "setup_peak_rss_mb": setup_peak,
        "rss_before_steps_mb": before_steps,
        "rss_at_start_mb": start_rss,
        "compile_s": info.get("compile_s"),
    }
    if case.framework == "jax" and jax.default_backend() != "cpu":
        stats = jax.devices()[0].memory_stats() or {}
        result["device_peak_mb"] = stats.get("peak_bytes_in_use", 0) / 1e6 or None
    if device is not None and device.type == "cuda":
        import torch

        result["device_peak_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
    print(_RESULT_TAG + json.dumps(result), flush=True)


def worker_flags(args) -> list[str]:
    """The flags a worker process needs to build the same cases."""
    flags = []
    for flag in ("batch", "frames", "warmup", "pipeline", "torch_device", "torch_threads",
                 "torch_compile_mode", *common.MODEL_SIZE_FLAGS, "text_length", "vocab"):  # fmt: skip
        flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return flags + (["--torch-tf32"] if args.torch_tf32 else [])


def measure_memory(args, case: Case) -> dict:
    log(f"peak memory of {case.name} (a subprocess)")
    command = [sys.executable, __file__, "--worker", f"{case.impl}:{case.features}:{int(case.geometric)}"]
    command += worker_flags(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.memory_timeout)
    for line in done.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG) :])
    return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]}


# ---------------------------------------------------------------- the table


def gigabytes(megabytes: float | None) -> str:
    return "-" if not megabytes else f"{megabytes / 1e3:.2f} GB"


def floor_key(case: Case) -> str:
    return f"{case.framework}_{case.dtype}"


def card_rate(floors: dict[str, float]) -> tuple[str | None, float | None]:
    """The reference of the model FLOP utilisation (key, FLOP/s): on an accelerator the card's bf16 matmul
    rate, the faster of the bf16 floors measured in this run (jax's, torch's); on a CPU (often without
    bf16 units) the fastest floor of any dtype."""
    rates = {k: v for k, v in floors.items() if not k.endswith("_n")}
    if jax.default_backend() != "cpu":
        rates = {k: v for k, v in rates.items() if k.endswith("bfloat16")}
    if not rates:
        return None, None
    key = max(rates, key=rates.get)
    return key, rates[key]


def build_rows(args, results: dict[Case, dict], floors: dict[str, float]) -> list[dict]:
    rows = []
    card_key, card_flops = card_rate(floors)
    for case, r in results.items():
        median = statistics.median(r["seconds"])
        flops = r["flops"]["train_step"]
        row = {
            "case": case.name,
            **dataclasses.asdict(case),
            "median_s": median,
            "seconds": r["seconds"],
            "samples_per_s": args.batch / median,
            "flops_per_step": flops,
            "achieved_flops_per_s": flops / median,
            "floor_flops_per_s": floors.get(floor_key(case)),
            "warmup_rounds": args.warmup,
            **{k: v for k, v in r.items() if k not in ("seconds", "flops")},
        }
        if row["floor_flops_per_s"]:
            row["fraction_of_floor"] = row["achieved_flops_per_s"] / row["floor_flops_per_s"]
        if card_flops:
            row["mfu"] = row["achieved_flops_per_s"] / card_flops
            row["mfu_reference"] = card_key
        if r.get("xla_flops"):
            row["xla_flops_over_analytic"] = r["xla_flops"] / flops
        rows.append(row)
    by_key = {(row["impl"], row["features"], row["geometric"]): row for row in rows}
    for row in rows:
        for reference in ("torch-fp32", "torch-bf16", "torch-compile-bf16"):
            other = by_key.get((reference, row["features"], row["geometric"]))
            if other:
                row[f"speedup_vs_{reference}"] = other["median_s"] / row["median_s"]
        if row["geometric"]:
            off = by_key.get((row["impl"], row["features"], False))
            if off:
                row["geometric_overhead"] = row["median_s"] / off["median_s"] - 1
    return rows


def describe(args, machine: dict) -> str:
    device = machine.get("torch_device_name") or machine["jax_device"]
    return (
        f"train step: B={args.batch} T={args.frames} L={args.text_length}, "
        f"{common.counted(args.layers, 'layer')} x {args.latent} (vocab {args.vocab}); median of "
        f"{common.counted(args.repeats, 'interleaved repeat')} after "
        f"{common.counted(args.warmup, 'warm-up step')}, "
        + (f"{args.pipeline} steps per timed call (waited for once), " if args.pipeline > 1 else "")
        + ("each framework in a process of its own" if args.processes == "separate" else "all in one process")
        + "\n"
        f"machine: {machine['host_cpus']} CPUs ({machine['processor']}), {device}, jax {machine['jax']}"
        f"{', torch ' + machine['torch'] if 'torch' in machine else ''}; "
        f"load {machine['load_average_1m']:.1f}; host malloc: {machine['host_malloc']}"
        + (f"\nnote: --warmup 0: {NO_WARMUP_NOTE}" if args.warmup == 0 else "")
        + common.warning_lines(machine)
    )


NO_WARMUP_NOTE = (
    "no untimed round before the timed ones, so a case's first timed step may not be at steady state "
    "(memory still faulted in: see minor_page_faults in the JSON); its rows end in '(no warm-up)'"
)


def describe_floors(floors: dict[str, float]) -> str:
    card_key, card_flops = card_rate(floors)
    return (
        "matmul floor: "
        + ", ".join(
            f"{k} {common.human(v, 'FLOP/s')} (n={floors[k + '_n']})"
            for k, v in floors.items()
            if not k.endswith("_n")
        )
        + f"\nMFU% = analytic FLOPs / s / {common.human(card_flops, 'FLOP/s')} ({card_key}: "
        "on an accelerator the faster bf16 floor, on a CPU the fastest)"
    )


HEADER = (
    f"{'case':<28}{'s/step':>9}{'samples/s':>10}{'x twin32':>9}{'x twin16':>9}{'x tc16':>8}{'FLOP/s':>12}"
    f"{'%floor':>7}{'MFU%':>6}{'compile':>9}{'peak RSS':>10}{'dev peak':>10}"
)


def format_row(row: dict) -> str:
    memory = row.get("memory") or {}
    return (
        f"{row['case']:<28}{row['median_s']:>9.3f}{row['samples_per_s']:>10.1f}"
        f"{common.fmt(row.get('speedup_vs_torch-fp32'), '.2f'):>9}"
        f"{common.fmt(row.get('speedup_vs_torch-bf16'), '.2f'):>9}"
        f"{common.fmt(row.get('speedup_vs_torch-compile-bf16'), '.2f'):>8}"
        f"{common.human(row['achieved_flops_per_s']):>12}"
        f"{common.fmt(100 * row['fraction_of_floor'] if 'fraction_of_floor' in row else None, '.0f'):>7}"
        f"{common.fmt(100 * row['mfu'] if 'mfu' in row else None, '.1f'):>6}"
        f"{common.fmt(row.get('compile_s'), '.1f'):>9}"
        f"{gigabytes(memory.get('peak_rss_mb')):>10}{gigabytes(memory.get('device_peak_mb')):>10}"
        + ("  (no warm-up)" if row.get("warmup_rounds") == 0 else "")
    )


def print_rows(rows: list[dict]) -> None:
    print(HEADER)
    for row in rows:
        print(format_row(row))
    for row in rows:
        if "geometric_overhead" in row:
            print(
                f"geometric term overhead, {row['impl']} D{row['features']}: "
                f"{100 * row['geometric_overhead']:+.1f}%"
            )
    for row in rows:
        if "xla_flops_over_analytic" in row:
            print(
                f"XLA cost analysis / analytic FLOPs, {row['case']}: {row['xla_flops_over_analytic']:.3f} "
                f"({common.human(row['xla_flops'])} vs {common.human(row['flops_per_step'])})"
            )
    sys.stdout.flush()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=196, help="T (also the positional table's size)")
    parser.add_argument("--features", default="263,264", help="comma-separated D values")
    parser.add_argument("--impls", default="", help=f"comma-separated, of {', '.join(IMPLS)}")
    parser.add_argument("--geometric", choices=("off", "on", "both"), default="both",
                        help="the bone-length term (only where D = 264; default: both, each case with "
                        "and without it)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        help="steps per timed call, dispatched back to back and waited for once, as launch.py's loop "
        "waits only at each log (the time per step is the call's over this); 1: each step waited for",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed rounds of every case, after all are prepared (default: 2; with 0 the first timed "
        "step of a case may not be at steady state: its rows are marked '(no warm-up)')",
    )
    parser.add_argument(
        "--memory",
        default="main",
        help="peak memory subprocesses: main (cases without the geometric term), all, none, or a "
        "comma-separated list of impls (their cases without the geometric term); default: main",
    )
    parser.add_argument("--memory-timeout", type=float, default=900)
    parser.add_argument("--matmul-size", type=int, default=0, help="floor matmul n (0: 4096 CPU, 8192 GPU)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    parser.add_argument("--torch-device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument(
        "--torch-compile-mode",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        default="default",
        help="torch.compile's mode for the torch-compile-* impls (reduce-overhead: CUDA graphs on a GPU)",
    )
    parser.add_argument(
        "--torch-tf32",
        action="store_true",
        help="let the twin's float32 products use TF32 on a GPU, as jax's default precision does",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--processes",
        choices=("shared", "separate"),
        default="shared",
        help="shared: every case in this process; separate: ours and the twin each in a worker process "
        "of its own (more memory: each keeps its own peak; not on an accelerator)",
    )
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--serve", default="", help=argparse.SUPPRESS)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    if args.pipeline < 1:
        parser.error(f"--pipeline must be at least 1, got {args.pipeline}")
    # `on` where no --features count is BEAT's positions would time every case without the term, each
    # row named as a plain step: refused, so that a run asked for the term's overhead never lacks it.
    skeleton_features = 3 * beat_skeleton().num_joints
    if args.geometric == "on" and str(skeleton_features) not in args.features.replace(" ", "").split(","):
        parser.error(
            f"--geometric on: the bone-length term needs BEAT positions (--features {skeleton_features}, "
            f"88 joints x 3); --features {args.features} has none"
        )
    common.check_new_json(parser, args.json)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        memory_worker(args)
        return
    if args.serve:
        serve_worker(args)
        return
    on_accelerator = jax.default_backend() != "cpu"
    if args.processes == "separate" and on_accelerator:
        raise SystemExit(
            "--processes separate: not on an accelerator (two processes would both claim its memory)"
        )
    default = (
        "jax-fp32,jax-bf16,torch-fp32,torch-bf16" if on_accelerator else "jax-fp32,torch-fp32,torch-bf16"
    )
    impls = (args.impls or default).split(",")
    unknown = sorted(set(impls) - set(IMPLS))
    if unknown:
        raise SystemExit(f"unknown --impls {unknown}; choose from {IMPLS}")
    uses_torch = any(i.startswith("torch") for i in impls)
    device = common.torch_device(args.torch_device, args.torch_threads) if uses_torch else None
    machine = common.machine_info(device)
    print(describe(args, machine), flush=True)
    size = args.matmul_size or (8192 if on_accelerator else 4096)
    floors = common.matmul_floor(
        size, 20 if on_accelerator else 3, {"torch"} if uses_torch else set(), device
    )
    print(describe_floors(floors), flush=True)
    skeleton_features = 3 * beat_skeleton().num_joints
    results: dict[Case, dict] = {}
    record = {
        "benchmark": "train_step",
        "complete": False,
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "serve")},
        "machine": machine,
        "matmul_floor_flops_per_s": floors,
        "matmul_size": size,
        "rows": [],
    }
    common.write_json(args.json, record, quiet=True)  # rewritten as results come in: a killed run keeps them
    for features in (int(d) for d in args.features.split(",")):
        geometric = {"off": [False], "on": [True], "both": [False, True]}[args.geometric]
        if features != skeleton_features:
            geometric = [False]
        cases = [Case(impl, features, g) for g in geometric for impl in impls]
        workers = []
        if args.processes == "separate":
            prepared, workers = prepare_in_processes(args, cases)
        else:
            prepared = prepare(args, features, cases, device)
        seconds = interleaved(prepared, args.repeats, args.warmup)
        for worker in workers:
            worker.close()
        config = common.bench_config(args, args.frames)
        flops = common.model_flops(args.batch, args.frames, features, args.text_length, config.model)
        for case in cases:
            results[case] = {**prepared[case][1], "seconds": seconds[case], "flops": flops}
        del prepared
        gc.collect()
        record["rows"] = rows = build_rows(args, results, floors)
        print(f"\nD={features}: {rows[-1]['num_params'] / 1e6:.1f}M params", flush=True)
        print_rows([row for row in rows if row["features"] == features])
        common.write_json(args.json, record, quiet=True)
    if args.memory != "none":
        chosen = None if args.memory in ("main", "all") else set(args.memory.split(","))
        for case in results:
            if (args.memory == "all" or not case.geometric) and (chosen is None or case.impl in chosen):
                memory = results[case]["memory"] = measure_memory(args, case)
                print(
                    f"peak memory, {case.name}: host {gigabytes(memory.get('peak_rss_mb'))}, "
                    f"device {gigabytes(memory.get('device_peak_mb'))}"
                    f"{'; ' + str(memory['error']) if 'error' in memory else ''}",
                    flush=True,
                )
                record["rows"] = build_rows(args, results, floors)
                common.write_json(args.json, record, quiet=True)
    record["rows"] = rows = build_rows(args, results, floors)
    record["complete"] = True
    common.check_load_at_end(machine)
    print(f"\n{describe(args, machine)}\n{describe_floors(floors)}")
    print(f"{rows[0]['num_params'] / 1e6:.1f}M params")
    print_rows(rows)
    common.write_json(args.json, record)


if __name__ == "__main__":
    main()
