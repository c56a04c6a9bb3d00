"""Samples of mixed lengths through `sampling.generate`, in more calls than one: every call at the longest
length (`group_lengths=False`) against calls that take the samples in order of length (the default on a CPU),
side by side in one process.

    .venv/bin/python benchmarks/bench_generate.py [--samples 128] [--batch-size 64]
        [--lengths uniform:40:196] [--sampler ddim] [--steps 10] [--dtype bfloat16] [--repeats 2]
        [--json out.json] [model size flags]

What `--mode eval` does with a split's clips of many lengths (`eval.num_clips` clips, `sample.batch_size`
a call), and `--mode sample` with more captions than a call holds. The model: MotionDiffuse's sizes by
default (`--layers`, `--latent`, ...), untrained (the time of a call does not depend on the weights), no
skeleton, `--features` features; lengths drawn with a fixed seed from `--lengths`: `uniform:LO:HI`
(integers in [LO, HI]) or a comma-separated list repeated to `--samples`. The longest length drawn is
the model's max_motion_length.

Columns: `mode` (`longest`: every call at the longest length; `grouped`: each call at its samples'
longest rounded up to a multiple of `sampling.LENGTH_BUCKET` frames), `calls` compiled calls of one
generate, `programs` distinct frame counts among them (each compiles once), `frames run` the frames the
calls compute (samples x frames per call, summed) over the samples' own frames, `1st call s` the first
generate's time (compiling its programs included: each mode's first call starts with no compiled
sampler, so that the grouped mode does not reuse the longest mode's program of the longest length, which
both run, and places the parameters on the devices again; jax's persistent compilation cache is off),
`s` the median of the later ones (compiled: the
sampling alone), `x longest` the longest mode's time over this row's (above 1: faster), for the first
call and for the later ones. `max diff` is the largest difference between the two modes' samples
(standardized features over the valid frames; the model's initial weights perturbed, as initial ones
output 0 and give every mode the same x_T / sqrt(abar)): float rounding of programs of other shapes, not
another sample. Repeats are interleaved (each round runs both modes, starting with a rotating one).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import common  # noqa: F401 - sets up jax's allocation and the path before jax loads
import jax
import numpy as np

from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax import sampling, text

MODES = {"longest": False, "grouped": True}
HEADER = (
    f"{'mode':<9}{'calls':>6}{'programs':>9}{'frames run':>11}{'1st call s':>11}{'x longest':>10}"
    f"{'s':>8}{'x longest':>10}"
)
CAPTIONS = ["a person waves with the right hand", "someone walks forward and turns", "nods twice", "claps"]


def draw_lengths(spec: str, samples: int, seed: int = 0) -> np.ndarray:
    """`uniform:LO:HI` (integers in [LO, HI], drawn with `seed`) or 'a,b,c' repeated to `samples`;
    ValueError naming --lengths."""
    if spec.startswith("uniform:"):
        try:
            low, high = (int(v) for v in spec.split(":")[1:])
        except ValueError:
            raise ValueError(f"--lengths uniform:LO:HI needs two integers, got {spec!r}") from None
        if not 1 <= low <= high:
            raise ValueError(f"--lengths {spec!r}: need 1 <= LO <= HI")
        return np.random.default_rng(seed).integers(low, high + 1, samples).astype(np.int32)
    try:
        listed = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--lengths must be uniform:LO:HI or comma-separated integers, got {spec!r}"
        ) from None
    if not listed or min(listed) < 1:
        raise ValueError(f"--lengths {spec!r}: lengths must be integers >= 1")
    return np.resize(np.asarray(listed, np.int32), samples)


def untrained_model(args: argparse.Namespace, max_length: int) -> sampling.LoadedModel:
    """A LoadedModel of the flags' sizes and dtype, its initial parameters, standard statistics."""
    config = common.bench_config(args, max_length, args.dtype)
    config.diffusion.steps = args.diffusion_steps
    tokenizer = text.Tokenizer.build(CAPTIONS)
    model = model_lib.model_from_config(
        config, input_feats=args.features, text_vocab_size=tokenizer.vocab_size
    )
    params = model_lib.init_params(model, jax.random.key(0))
    # Initial parameters output exactly 0 (the output layers start at zero), which makes every sample
    # x_T / sqrt(abar) whatever the masks: the modes' `max diff` would be 0 by construction. Every weight
    # is perturbed (a call's time does not depend on the values), so the model reads its frames and masks.
    rng = np.random.default_rng(1)
    params = jax.tree.map(
        lambda a: np.asarray(a, np.float32) + rng.normal(0, 0.02, np.shape(a)).astype(np.float32), params
    )
    metadata = {
        "config": config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "mean": [0.0] * args.features,
        "std": [1.0] * args.features,
        "representation": "positions",
        "feature_size": args.features,
        "fps": 20.0,
        "skeleton": None,
    }
    return sampling.loaded_from_params(params, metadata, 0, "bench_generate's untrained model")


def main(argv=None) -> None:
    parser = common.step_parser(__doc__)
    common.add_model_flags(parser)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="sample.batch_size: samples per call")
    parser.add_argument("--lengths", default="uniform:40:196", help="uniform:LO:HI or a comma-separated list")
    parser.add_argument("--sampler", choices=sampling.SAMPLERS, default="ddim")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (ddim, dpmpp_2m)")
    parser.add_argument("--diffusion-steps", type=int, default=1000, help="the model's diffusion.steps")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16", help="compute dtype")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls of each mode after the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    if args.samples < 1 or args.batch_size < 1 or args.repeats < 0:
        parser.error("--samples and --batch-size must be >= 1, --repeats >= 0")
    try:
        lengths = draw_lengths(args.lengths, args.samples, args.seed)
    except ValueError as error:
        parser.error(str(error))
    # Compiling is part of what is measured: no program from an earlier run (JAX_COMPILATION_CACHE_DIR,
    # as gpu_check.sh sets) or from the other mode
    jax.config.update("jax_enable_compilation_cache", False)
    loaded = untrained_model(args, int(lengths.max()))
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.samples)]
    request = dict(sampler=args.sampler, steps=args.steps, seed=args.seed, batch_size=args.batch_size)

    devices = sampling.devices_for(args.samples, args.batch_size)
    chunk = sampling.call_split(args.samples, args.batch_size, devices) * devices
    plans = {mode: sampling.call_plan(lengths, chunk, grouped) for mode, grouped in MODES.items()}
    machine = common.machine_info()
    print(
        f"generate: {args.samples} samples of lengths {args.lengths} (mean {lengths.mean():.1f}, longest "
        f"{lengths.max()}), {chunk} a call on {devices} device(s), {args.sampler}"
        f"{'' if args.sampler == 'ddpm' else f' {args.steps} steps'}, {args.dtype}, D={args.features}, "
        f"{args.layers} layers x {args.latent}; {machine['processor']}, jax {machine['jax']}"
        + common.warning_lines(machine),
        flush=True,
    )

    def call(mode: str) -> tuple[float, dict]:
        start = time.perf_counter()
        with warnings.catch_warnings():  # a small --text-length cuts the captions: no matter here
            warnings.simplefilter("ignore", sampling.CaptionCutWarning)
            out = sampling.generate(loaded, captions, lengths.tolist(), group_lengths=MODES[mode], **request)
        return time.perf_counter() - start, out

    first, outputs, seconds = {}, {}, {mode: [] for mode in MODES}
    for mode in MODES:
        # Cold for each mode: otherwise the second mode's first call reuses the first's program of the
        # longest length (both modes run a call there) and its compiling is not counted. A new sampler
        # function (and text encoder) is a new jit cache; the persistent cache is off (main's start). The
        # parameters placed on the devices (kept on `loaded`) are placed again: each first call pays it.
        sampling._sample_function.cache_clear()
        sampling._encoder.cache_clear()
        loaded._cache.clear()
        first[mode], outputs[mode] = call(mode)
        print(f"[{time.strftime('%H:%M:%S')}] {mode}: first call {first[mode]:.1f} s", flush=True)
    names = list(MODES)
    for r in range(args.repeats):
        for mode in names[r % len(names) :] + names[: r % len(names)]:
            elapsed, _ = call(mode)
            seconds[mode].append(elapsed)
            print(f"[{time.strftime('%H:%M:%S')}] {mode} round {r + 1}: {elapsed:.2f} s", flush=True)

    valid = np.arange(lengths.max())[None] < lengths[:, None]
    diff = float(np.abs(outputs["grouped"]["motion"] - outputs["longest"]["motion"])[valid].max())
    rows = []
    for mode, plan in plans.items():
        run = sum(frames * len(index) for index, frames in plan)
        median = statistics.median(seconds[mode]) if seconds[mode] else None
        rows.append(
            {
                "mode": mode,
                "calls": len(plan),
                "programs": len({frames for _, frames in plan}),
                "frames_run": run,
                "frames_run_over_own": run / int(lengths.sum()),
                "first_call_s": first[mode],
                "median_s": median,
                "x_longest_first": first["longest"] / first[mode],
                "x_longest": None if median is None else statistics.median(seconds["longest"]) / median,
            }
        )
    print(HEADER)
    for row in rows:
        ratio = "-" if row["x_longest"] is None else f"{row['x_longest']:.2f}x"
        print(
            f"{row['mode']:<9}{row['calls']:>6}{row['programs']:>9}{row['frames_run_over_own']:>10.2f}x"
            f"{row['first_call_s']:>11.1f}{row['x_longest_first']:>9.2f}x"
            f"{common.fmt(row['median_s'], '.2f'):>8}{ratio:>10}"
        )
    scale = float(np.abs(outputs["longest"]["motion"])[valid].max())
    print(
        f"max diff between the modes' samples (standardized, valid frames): {diff:.2e} "
        f"(largest |value| {scale:.3g})"
    )
    common.check_load_at_end(machine)
    record = {"machine": machine, "args": vars(args), "lengths": lengths.tolist(), "rows": rows}
    common.write_json(args.json, {**record, "max_diff": diff, "max_abs": scale})


if __name__ == "__main__":
    main()
