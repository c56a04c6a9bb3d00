"""Paired train-step timing of code variants in one process: which spelling of the step is faster, and does
it compute the same thing.

    .venv/bin/python benchmarks/bench_variants.py --variants current,transpose=halves \\
        [--dtype bfloat16] [--batch 32] [--frames 196] [--features 264] [--rounds 4] [--json out.json]

Each variant swaps one function of the model for another spelling (VARIANTS below), while the step is
traced and compiled; `current` swaps nothing. All variants share one train state and batch
(`bench_train_step.OurStep`), run after one untimed call each, and take turns: round r runs every variant
once, starting at a rotating one, so a change of the machine's speed hits all of them alike. The table
gives each variant's median time and its speed relative to the first variant (> 1: faster). Before
timing, every variant takes two steps from the same copy of the initial state: `max |dparam|` is the
largest difference of the parameters after them from the first variant's (0: the same bits), and
`d grad_norm` the relative difference of the second step's gradient norm (two steps: the first
updates only the zero-initialised output layers, and Adam's first update is nearly the gradient's sign,
so one step would hide most differences). `transpose=none` is a cost probe that computes a wrong
gradient on purpose, so it differs.

Variants (those named `transpose=` change how `model._rows_last` builds the transposed copy of a
Dense layer's input for its bf16 kernel gradient on the CPU; they change nothing in float32):
  current             the code as it is
  transpose=fold      a plain x.T, which XLA folds into the product (that then runs in float32)
  transpose=halves    the two halves of rows transposed and concatenated (session 7's spelling)
  transpose=plain     one transpose of the two halves of rows (not folded, not blocked)
  transpose=none      a reshape in place of the transpose: WRONG values, the transposes' cost
  standardize=twopass LayerNorm statistics in two passes (the variance of the centred input; before
                      session 9's one-pass `model._standardize`)
  attention=einsum    the linear attention's per-head products by autodiff of XLA's einsums (bf16
                      results; before the custom-VJP product `model.low_precision_matmul`)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import bench_train_step  # noqa: I001 - first: it imports common, which sets the allocator before jax
import common
import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import model as model_lib


@contextlib.contextmanager
def _replaced(name: str, value):
    """model_lib.<name> = value while the step is traced."""
    original = getattr(model_lib, name)
    setattr(model_lib, name, value)
    try:
        yield
    finally:
        setattr(model_lib, name, original)


def _halves(x):
    half = x.shape[-2] // 2
    first, second = x[..., :half, :], x[..., half:, :]
    return jnp.concatenate([jnp.swapaxes(first, -1, -2), jnp.swapaxes(second, -1, -2)], axis=-1)


def _no_transpose(x):
    return x.reshape(*x.shape[:-2], x.shape[-1], x.shape[-2])


def _einsum(spec):
    return lambda a, b, out_dtype: jnp.einsum(spec, a, b).astype(out_dtype)


VARIANTS = {
    "current": contextlib.nullcontext,
    "transpose=fold": lambda: _replaced("_rows_last", lambda x: jnp.swapaxes(x, -1, -2)),
    "transpose=halves": lambda: _replaced("_rows_last", _halves),
    "transpose=plain": lambda: _replaced("_rows_last", model_lib._plain_transpose),
    "transpose=none": lambda: _replaced("_rows_last", _no_transpose),
    "standardize=twopass": lambda: _replaced("_standardize", model_lib._standardize_two_pass),
}


VARIANTS["attention=einsum"] = lambda: _replaced("low_precision_matmul", _einsum("...mk,...kn->...mn"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="current,transpose=plain", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=196)
    parser.add_argument("--features", type=int, default=264)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    args.variants = args.variants.split(",")
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {', '.join(VARIANTS)}")
    if len(set(args.variants)) != len(args.variants) or args.rounds < 1:
        parser.error("--variants must not repeat a name, and --rounds must be at least 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    step = bench_train_step.OurStep(args, args.features)
    initial = jax.tree.map(jnp.copy, step.state)
    compiled, runs, compile_s, after_two = {}, {}, {}, {}
    for name in args.variants:
        with VARIANTS[name]():
            compiled[name], compile_s[name], _ = step.compile(args.dtype, geometric=False)
        state, _ = compiled[name](jax.tree.map(jnp.copy, initial), step.batch, step.rng)
        state, metrics = compiled[name](state, step.batch, step.rng)
        after_two[name] = (jax.tree.map(np.asarray, state.params), float(metrics["grad_norm"]))
        runs[name] = step.runner(compiled[name])
        runs[name]()  # untimed
        print(f"[{time.strftime('%H:%M:%S')}] {name}: compiled in {compile_s[name]:.1f} s", file=sys.stderr)
    first = args.variants[0]
    seconds = {name: [] for name in args.variants}
    for r in range(args.rounds):
        for name in args.variants[r % len(args.variants) :] + args.variants[: r % len(args.variants)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    rows = []
    first_params, first_grad_norm = after_two[first]
    for name in args.variants:
        params, grad_norm = after_two[name]
        differences = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, first_params)
        rows.append(
            {
                "variant": name,
                "median_s": statistics.median(seconds[name]),
                "seconds": seconds[name],
                "compile_s": compile_s[name],
                "max_param_difference": max(jax.tree.leaves(differences)),
                "grad_norm_relative_difference": abs(grad_norm - first_grad_norm) / first_grad_norm,
            }
        )
    base = rows[0]["median_s"]
    machine = common.machine_info()
    print(
        f"train step, {args.dtype}, B={args.batch} T={args.frames} D={args.features}: medians of "
        f"{args.rounds} interleaved rounds; {machine['host_cpus']} CPUs ({machine['processor']}), "
        f"{machine['jax_backend']}, jax {machine['jax']}"
    )
    print(f"{'variant':<20}{'s/step':>9}{'vs ' + first:>22}{'max |dparam|':>14}{'d grad_norm':>13}  rounds")
    for row in rows:
        rounds = " ".join(f"{s:.2f}" for s in row["seconds"])
        print(
            f"{row['variant']:<20}{row['median_s']:>9.3f}{base / row['median_s']:>21.3f}x"
            f"{row['max_param_difference']:>14.3g}{row['grad_norm_relative_difference']:>13.2g}  {rounds}"
        )
    args_record = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    common.write_json(
        args.json, {"benchmark": "bench_variants", "machine": machine, "args": args_record, "rows": rows}
    )


if __name__ == "__main__":
    main()
