"""Sampling time: our compiled sampler loop vs the PyTorch twin's Python loop, side by side.

    .venv/bin/python benchmarks/bench_sampling.py [--sizes 4x60,32x196] [--samplers ddpm,ddim]
        [--cases ddpm:4x60,ddim:32x196] [--ddpm-steps 1000] [--ddim-steps 50]
        [--impls jax-fp32,torch-fp32] [--repeats 3] [--warmup 1] [--json out.json]

Ours: `diffusion.ddpm_sample_loop` / `ddim_sample_loop` inside one jitted function that first encodes
the captions once (`model.encode_text`) and then runs the sampler's denoiser
(`sampling.conditioned_denoiser`: the captions' cross-attention keys/values once, the step embeddings
and block modulations once per 50 steps, `denoise` per step); compiled ahead of time (compile time
reported apart). `jax-*-stepwise` rows call the whole model (`encoded_text=`) at every step instead: the
same function without the hoisting, to show what it buys. `jax-*-split` rows run the same sampler under
`jax.pmap` with the batch split over the local devices, as `sampling.generate` does; on a CPU that takes
host devices, one per core: `XLA_FLAGS=--xla_force_host_platform_device_count=2` (set before starting;
their compile column is the first call's time, compile included). The twin: `torch_twin.ddpm_sample` /
`ddim_sample`, a Python loop over the steps under inference mode, captions encoded once too, after a
two-step warm-up. `torch-*-hoisted` rows: the twin's loop with what ours hoists hoisted the same way
(the captions' context and pooled embedding once, the step embeddings and block modulations 50 steps at
a time, `denoise` per step; `torch_twin._denoiser`), and under bf16 its Linear weights cast to bf16 once
(autocast casts them at every call): the like-for-like comparison, in the `x hoisted` column, where
`x twin` also counts what the hoisting buys. Same weights (ours, copied), same sizes, epsilon
prediction, no guidance, DDIM eta 0.
Repeats are interleaved (round r runs every implementation once, starting at a rotating one).
The cases run in order (--cases, else every size with every sampler); each case's rows are printed as
soon as its repeats are done and the JSON is rewritten after every case, so a run cut short keeps the
cases it finished (each timed call is logged to stderr too); the full table is printed again at the end.
Columns: `impl` the implementation (above), `sampler` ddpm or ddim, `BxT` samples x frames, `steps` the
denoiser calls of the sampler, `s` the median steady-state time of the whole sampler in seconds (captions
encoded once included), `ms/step` that over `steps` in milliseconds, `est 1000 s` (DDPM only) the
per-step time times 1000 in seconds: the full 1000-step sampler's time, measured where --ddpm-steps is
1000 and estimated where it is less (below), `x twin` the twin's loop of the same precision (torch-fp32
or torch-bf16) over this row's time (above 1: this row is faster), `x hoisted` the same against the
hoisted twin (torch-*-hoisted), `FLOP/s` the analytic matmul FLOPs of this row's own sampler call
(`common.model_flops`: the forward pass at every step, and the captions' cross-attention sources once
where the row hoists them, every step where it does not) over `s`, `compile` ours' ahead-of-time
compilation in seconds, `1st call` compile + the first execution in seconds (with --warmup >= 1, which
also keeps that first execution out of the timed repeats); "-" where a column does not apply. The
header warns when the machine is busy (the 1-minute load average beside this benchmark's own CPU use
above the usable cores, at the start or at the end; `busy` and `warnings` in the JSON's machine): on a
busy machine the times and ratios are not meaningful.

`--ddpm-steps N < 1000` times a cosine schedule of N steps instead (the same work per step), and
`est 1000 s` is then an estimate of the full sampler; the JSON says which.
Implementations: jax-fp32, jax-bf16 (compute dtype), torch-fp32, torch-bf16 (autocast), and the
variants above. Defaults:
jax-fp32,torch-fp32 on a CPU; jax-bf16,torch-bf16,jax-fp32,torch-fp32 on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import common  # noqa: I001 - first: sets the allocator before jax starts
import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import diffusion, sampling
from motion_ddpm_jax import model as model_lib

IMPLS = (
    "jax-fp32", "jax-bf16", "jax-fp32-stepwise", "jax-bf16-stepwise", "jax-fp32-split", "jax-bf16-split",
    "torch-fp32", "torch-bf16", "torch-fp32-hoisted", "torch-bf16-hoisted",
)  # fmt: skip
_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sampler_inputs(batch: int, frames: int, features: int, args, seed: int = 0):
    """Starting noise [B, T, D], tokens, text mask and frame mask (every sample `frames` long)."""
    host = common.random_batch(batch, frames, features, args.text_length, args.vocab, seed)
    noise = np.random.default_rng(seed + 1).standard_normal((batch, frames, features)).astype(np.float32)
    return noise, host["tokens"], host["text_mask"], np.ones((batch, frames), bool)


class Ours:
    def __init__(self, args, features: int, params, dtype: str, stepwise: bool = False, split: bool = False):
        config = common.bench_config(args, args.max_frames, dtype)
        self.model = model_lib.model_from_config(config, input_feats=features, text_vocab_size=args.vocab)
        self.params, self.stepwise, self.split = params, stepwise, split

    def _sample(self, sampler: str, schedule, num_steps: int):
        """The sampler as a function of (params, x_T, tokens, text_mask, mask, rng): captions encoded once."""
        model, stepwise = self.model, self.stepwise

        def sample(params, x_T, tokens, text_mask, mask, rng):
            encoded = model_lib.encode_text(model, params, tokens, text_mask)

            def whole_model(x_t, t):
                return model.apply({"params": params}, x_t, t, None, text_mask, mask, encoded_text=encoded)

            if stepwise:
                denoise = whole_model
            else:
                denoise = sampling.conditioned_denoiser(model, params, encoded, text_mask, mask)

            if sampler == "ddpm":
                return diffusion.ddpm_sample_loop(schedule, denoise, x_T, rng, "epsilon")
            return diffusion.ddim_sample_loop(schedule, denoise, x_T, rng, "epsilon", num_steps)

        return sample

    def compile(self, sampler: str, schedule, num_steps: int, inputs):
        sample = self._sample(sampler, schedule, num_steps)
        rng = jax.random.key(0)
        if self.split:
            return self._compile_split(sample, inputs, rng)
        arrays = [jnp.asarray(a) for a in inputs]
        start = time.perf_counter()
        compiled = jax.jit(sample).lower(self.params, *arrays, rng).compile()
        compile_s = time.perf_counter() - start
        return (lambda: compiled(self.params, *arrays, rng).block_until_ready()), compile_s

    def _compile_split(self, sample, inputs, rng):
        """`sample` under `jax.pmap`, the batch split evenly over the local devices (on a CPU, the host
        devices that XLA_FLAGS=--xla_force_host_platform_device_count=N makes), as `sampling.generate`
        splits its samples. Compile time: the first call's (pmap compiles lazily)."""
        devices = jax.local_device_count()
        batch = inputs[0].shape[0]
        if devices < 2 or batch % devices:
            raise SystemExit(
                f"-split impls need >= 2 local devices dividing the batch ({batch}); jax sees {devices}: "
                "on a CPU set XLA_FLAGS=--xla_force_host_platform_device_count=<cores> before starting"
            )
        split = [np.asarray(a).reshape(devices, -1, *np.shape(a)[1:]) for a in inputs]
        mapped = jax.pmap(sample, in_axes=(None, 0, 0, 0, 0, None))
        start = time.perf_counter()
        mapped(self.params, *split, rng).block_until_ready()
        compile_s = time.perf_counter() - start
        return (lambda: mapped(self.params, *split, rng).block_until_ready()), compile_s


class Twin:
    def __init__(self, args, features: int, flax_model, host_params, device):
        import torch_twin

        self.torch_twin, self.device = torch_twin, device
        self.model = torch_twin.twin_of(flax_model, device=device).eval()
        torch_twin.load_flax_params(self.model, host_params)
        self._cast = {}

    def _model(self, dtype: str, hoisted: bool):
        """The twin; hoisted under bf16: a copy with its Linear weights in bf16 (cast once, kept)."""
        if not (hoisted and dtype == "bfloat16"):
            return self.model
        if dtype not in self._cast:
            import torch

            self._cast[dtype] = self.torch_twin.linear_weights_in(self.model, torch.bfloat16)
        return self._cast[dtype]

    def runner(self, sampler: str, schedule, num_steps: int, inputs, dtype: str, hoisted: bool = False):
        import torch

        tt = self.torch_twin
        model = self._model(dtype, hoisted)
        twin_schedule = tt.Schedule(schedule, self.device)
        x_T, tokens, text_mask, mask = (tt.to_torch({"a": a}, self.device)["a"] for a in inputs)
        autocast = torch.bfloat16 if dtype == "bfloat16" else None
        generator = torch.Generator(self.device).manual_seed(0)
        timesteps = diffusion.ddim_timesteps(schedule.num_steps, num_steps)

        def run(steps=None):
            if sampler == "ddpm":
                out = tt.ddpm_sample(
                    model, twin_schedule, x_T, tokens, text_mask, mask, generator, autocast, steps, hoisted
                )
            else:
                chosen = timesteps if steps is None else timesteps[:steps]
                out = tt.ddim_sample(
                    model, twin_schedule, x_T, tokens, text_mask, mask, chosen, autocast, hoisted
                )
            common.torch_sync(self.device)
            return out

        return run


def parse_cases(args) -> list[tuple[str, int, int]]:
    """(sampler, batch, frames) in the order they run: --cases, else every size with every sampler."""
    if args.cases:
        cases = []
        for item in args.cases.split(","):
            sampler, _, size = item.partition(":")
            batch, _, frames = size.partition("x")
            cases.append((sampler, int(batch), int(frames)))
    else:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
        cases = [(sampler, b, t) for b, t in sizes for sampler in args.samplers.split(",")]
    unknown = sorted({sampler for sampler, _, _ in cases} - {"ddpm", "ddim"})
    if unknown:
        raise SystemExit(f"unknown samplers {unknown}; choose from ddpm, ddim")
    return cases


def describe(args, machine: dict) -> str:
    return (
        f"sampling: D={args.features}, {common.counted(args.layers, 'layer')} x {args.latent}, "
        f"L={args.text_length}; median of {common.counted(args.repeats, 'interleaved repeat')} after "
        f"{common.counted(args.warmup, 'untimed call')} of ours; "
        f"{machine['host_cpus']} CPUs ({machine['processor']}), "
        f"{machine.get('torch_device_name') or machine['jax_device']}, jax {machine['jax']}"
        f"{', torch ' + machine['torch'] if 'torch' in machine else ''}, "
        f"load {machine['load_average_1m']:.1f}; host malloc: {machine['host_malloc']}"
        + common.warning_lines(machine)
    )


HEADER = (
    f"{'impl':<19}{'sampler':<8}{'BxT':>8}{'steps':>7}{'s':>9}{'ms/step':>9}{'est 1000 s':>12}"
    f"{'x twin':>8}{'x hoisted':>10}{'FLOP/s':>10}{'compile':>9}{'1st call':>9}"
)


def format_row(row: dict) -> str:
    return (
        f"{row['impl']:<19}{row['sampler']:<8}{str(row['batch']) + 'x' + str(row['frames']):>8}"
        f"{row['steps']:>7}{row['median_s']:>9.3f}{row['per_step_ms']:>9.1f}"
        f"{common.fmt(row['estimated_1000_step_s'], '.1f'):>12}"
        f"{common.fmt(row.get('speedup_vs_twin_same_precision'), '.2f'):>8}"
        f"{common.fmt(row.get('speedup_vs_hoisted_twin_same_precision'), '.2f'):>10}"
        f"{common.human(row['achieved_flops_per_s']):>10}"
        f"{common.fmt(row.get('compile_s'), '.1f'):>9}{common.fmt(row.get('first_call_s'), '.1f'):>9}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="4x60,32x196", help="comma-separated BATCHxFRAMES")
    parser.add_argument("--samplers", default="ddpm,ddim")
    parser.add_argument(
        "--cases",
        default="",
        help="comma-separated SAMPLER:BATCHxFRAMES (e.g. ddpm:4x60,ddim:32x196), run in this order; "
        "overrides --sizes and --samplers",
    )
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="< 1000: time a shorter schedule")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--features", type=int, default=264)
    parser.add_argument("--impls", default="", help=f"comma-separated, of {', '.join(IMPLS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed full calls of ours after compiling (the twin: 2 steps; 0 times ours' first execution)",
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    parser.add_argument("--torch-device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)

    on_accelerator = jax.default_backend() != "cpu"
    default = "jax-bf16,torch-bf16,jax-fp32,torch-fp32" if on_accelerator else "jax-fp32,torch-fp32"
    impls = (args.impls or default).split(",")
    if set(impls) - set(IMPLS):
        raise SystemExit(f"unknown --impls {sorted(set(impls) - set(IMPLS))}; choose from {IMPLS}")
    cases = parse_cases(args)
    args.max_frames = max(frames for _, _, frames in cases)
    uses_torch = any(i.startswith("torch") for i in impls)
    device = common.torch_device(args.torch_device, args.torch_threads) if uses_torch else None
    machine = common.machine_info(device)
    print(describe(args, machine), flush=True)
    print(HEADER, flush=True)

    config = common.bench_config(args, args.max_frames)
    base = model_lib.model_from_config(config, input_feats=args.features, text_vocab_size=args.vocab)
    params = model_lib.init_params(base, jax.random.key(0))
    ours = {
        i: Ours(
            args,
            args.features,
            params,
            _DTYPES[i.split("-")[1]],
            i.endswith("-stepwise"),
            i.endswith("-split"),
        )
        for i in impls
        if i.startswith("jax")
    }
    twin = Twin(args, args.features, base, jax.device_get(params), device) if uses_torch else None

    rows = []
    record = {"benchmark": "sampling", "complete": False, "args": vars(args), "machine": machine}
    record["rows"] = rows
    for sampler, batch, frames in cases:
        inputs = sampler_inputs(batch, frames, args.features, args)
        steps = args.ddpm_steps if sampler == "ddpm" else args.ddim_steps
        if sampler == "ddpm" and args.ddpm_steps < 1000:  # cosine: defined for any length, same work
            schedule = diffusion.make_schedule("cosine", args.ddpm_steps)
        else:
            schedule = diffusion.make_schedule("linear", 1000)
        label = f"{sampler} {batch}x{frames}"
        runs, info = {}, {}
        for impl in impls:
            log(f"preparing {impl} {label}")
            if impl.startswith("jax"):
                runs[impl], compile_s = ours[impl].compile(sampler, schedule, steps, inputs)
                info[impl] = {"compile_s": compile_s}
                log(f"{impl} {label}: compiled in {compile_s:.1f} s")
                for w in range(args.warmup):
                    start = time.perf_counter()
                    runs[impl]()
                    if w == 0:  # the first execution, and what a user waits for: compile + first run
                        info[impl]["first_run_s"] = time.perf_counter() - start
                        info[impl]["first_call_s"] = compile_s + info[impl]["first_run_s"]
                        log(f"{impl} {label}: first run {info[impl]['first_run_s']:.2f} s")
            else:
                dtype = _DTYPES[impl.split("-")[1]]
                run = twin.runner(sampler, schedule, steps, inputs, dtype, impl.endswith("-hoisted"))
                run(2)  # warm-up: two denoising steps
                runs[impl], info[impl] = run, {}
        seconds = {impl: [] for impl in impls}
        for r in range(args.repeats):
            for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
                start = time.perf_counter()
                runs[impl]()
                seconds[impl].append(time.perf_counter() - start)
                log(f"{impl} {label} round {r + 1} of {args.repeats}: {seconds[impl][-1]:.3f} s")
        hoisted = common.model_flops(
            batch, frames, args.features, args.text_length, config.model, encode_text=False, hoisted=True
        )
        per_step = hoisted["forward"] + hoisted["once"]
        group = []
        for impl in impls:
            median = statistics.median(seconds[impl])
            # Ours and the hoisted twin compute the caption's keys, values and context once per call;
            # the stepwise rows and the twin at every step.
            once = impl.endswith("-hoisted") or (impl.startswith("jax") and not impl.endswith("-stepwise"))
            work = hoisted["forward"] * steps + hoisted["once"] if once else per_step * steps
            group.append(
                {
                    "impl": impl,
                    "sampler": sampler,
                    "batch": batch,
                    "frames": frames,
                    "steps": steps,
                    "median_s": median,
                    "seconds": seconds[impl],
                    "per_step_ms": 1e3 * median / steps,
                    "estimated_1000_step_s": median / steps * 1000 if sampler == "ddpm" else None,
                    "achieved_flops_per_s": work / median,
                    **info[impl],
                }
            )
        twin_s = {row["impl"]: row["median_s"] for row in group if row["impl"].startswith("torch")}
        for row in group:
            precision = row["impl"].split("-")[1]
            for key, reference in (
                ("speedup_vs_twin_same_precision", twin_s.get(f"torch-{precision}")),
                ("speedup_vs_hoisted_twin_same_precision", twin_s.get(f"torch-{precision}-hoisted")),
            ):
                if reference:
                    row[key] = reference / row["median_s"]
            print(format_row(row), flush=True)
        rows.extend(group)
        common.write_json(args.json, record, quiet=True)  # after every case: a killed run keeps its rows

    common.check_load_at_end(machine)
    print(f"\n{describe(args, machine)}\n{HEADER}")
    for row in rows:
        print(format_row(row))
    record["complete"] = True
    common.write_json(args.json, record)


if __name__ == "__main__":
    main()
