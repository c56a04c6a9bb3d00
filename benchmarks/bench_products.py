"""The train step's products, each alone, in jax and in torch: how much of the step is matmul at each
library's own rate, and how much of the gap between ours and the twin is the product library's.

    .venv/bin/python benchmarks/bench_products.py [--dtype bfloat16] [--batch 32] [--frames 196]
        [--features 264] [--impls jax,torch] [--repeats 7] [--step-repeats 3] [--top 20] [--json out.json]

The products are read from our train step as traced (`jax.make_jaxpr`, no compile): every
`dot_general`, in jit calls, custom-VJP functions and scans (times the scan's length), and of a `cond`
the costlier branch. Products of the same shapes, dtypes and dimension numbers form one signature. Each
signature is then timed alone, as one small program per library on random operands: jax runs the same
`lax.dot_general` (same dimension numbers and result dtype), torch `torch.matmul` on views of its
operands with the contracted axes last / first (a transposed view goes to its library without a copy;
batch axes move to the front). torch returns the operands' dtype: a bf16 product returns bf16, as under
the twin's autocast, where ours may accumulate into float32 (`model.low_precision_affine`); operands of
two dtypes go to torch in the narrower, as autocast would cast them. Each time is the median of
`--repeats` calls. On a CPU each call is one product, waited for. On an accelerator one launch and wait
costs tens of microseconds, more than most of the step's products take there, so each call launches the
product `--launches` times back to back (default ACCELERATOR_LAUNCHES) and waits once; the time is per
product. A product shorter than its launch still shows the launch rate.

The first table lists the signatures by jax's time per step (count x time per call); the second sums
them by kind (`kind_of`: over the B*T motion tokens, over the B*L text tokens, batched (the attention's
per-head products), per example). The sum is the step's products at the rate each library reaches for
them alone, in this run, beside nothing else. With
`--step-repeats N` (> 0) our compiled step and the twin's (eager, or under bf16 autocast) are timed in
the same run (`bench_train_step.interleaved`: N interleaved rounds after one untimed one), and the last
table splits each step into "its products alone" and "the rest" (everything else, and whatever the
products lose inside the step). Where the two steps differ by about what their products alone differ by,
the gap is the product library's. FLOP counts are 2 per multiply-add; their sum is checked against the
analytic count (`common.model_flops`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import bench_train_step  # noqa: I001 - first: it imports common, which sets the allocator before jax
import common
import jax
import jax.numpy as jnp
import numpy as np

IMPLS = ("jax", "torch")
_SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "float64": "f64"}


@dataclasses.dataclass(frozen=True)
class Product:
    """One product's signature: what `lax.dot_general` was called with."""

    lhs_shape: tuple[int, ...]
    rhs_shape: tuple[int, ...]
    lhs_dtype: str
    rhs_dtype: str
    out_dtype: str
    contracting: tuple[tuple[int, ...], tuple[int, ...]]
    batch: tuple[tuple[int, ...], tuple[int, ...]]

    @property
    def lhs_free(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.lhs_shape)) if i not in (*self.contracting[0], *self.batch[0]))

    @property
    def rhs_free(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.rhs_shape)) if i not in (*self.contracting[1], *self.batch[1]))

    def sizes(self) -> tuple[int, int, int, int]:
        """(batch, M, K, N): the product as `batch` matrix products [M, K] x [K, N]."""
        lhs, rhs = self.lhs_shape, self.rhs_shape
        return (
            math.prod(lhs[i] for i in self.batch[0]),
            math.prod(lhs[i] for i in self.lhs_free),
            math.prod(lhs[i] for i in self.contracting[0]),
            math.prod(rhs[i] for i in self.rhs_free),
        )

    @property
    def flops(self) -> int:
        return 2 * math.prod(self.sizes())

    def describe(self) -> str:
        """e.g. `[11520, 512]·(1) x [512, 512]·(0) -> f32`: shapes, contracted axes, batch axes, result."""

        def side(shape, contracting, batch):
            text = f"[{', '.join(map(str, shape))}]·({','.join(map(str, contracting))})"
            return text + (f"b({','.join(map(str, batch))})" if batch else "")

        dtypes = (self.lhs_dtype, self.rhs_dtype, self.out_dtype)
        lhs, rhs, out = (_SHORT.get(d, d) for d in dtypes)
        return (
            f"{side(self.lhs_shape, self.contracting[0], self.batch[0])} {lhs} x "
            f"{side(self.rhs_shape, self.contracting[1], self.batch[1])} {rhs} -> {out}"
        )

    @property
    def torch_dtype(self) -> str:
        """torch multiplies operands of one dtype: the narrower of the two (autocast's choice)."""
        return min((self.lhs_dtype, self.rhs_dtype), key=lambda d: jnp.dtype(d).itemsize)


def product_of(eqn) -> Product | None:
    """The signature of a `dot_general` equation; None for integer products (not matmul work)."""
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    if not (jnp.issubdtype(lhs.dtype, jnp.floating) and jnp.issubdtype(rhs.dtype, jnp.floating)):
        return None
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    return Product(
        lhs_shape=tuple(lhs.shape),
        rhs_shape=tuple(rhs.shape),
        lhs_dtype=str(lhs.dtype),
        rhs_dtype=str(rhs.dtype),
        out_dtype=str(eqn.outvars[0].aval.dtype),
        contracting=(tuple(lc), tuple(rc)),
        batch=(tuple(lb), tuple(rb)),
    )


def _sub_jaxprs(param):
    for sub in param if isinstance(param, tuple | list) else (param,):
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
            yield sub


def collect_products(jaxpr) -> tuple[Counter, list[str]]:
    """{Product: times per call of the program} and notes on what could not be counted exactly (a while
    loop's trip count is not known: its body counts once)."""
    counts: Counter = Counter()
    notes: list[str] = []

    def walk(jaxpr, times: int, into: Counter) -> None:
        for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                product = product_of(eqn)
                if product is not None:
                    into[product] += times
                continue
            if name == "cond":  # one branch runs: count the costlier
                branches = []
                for branch in eqn.params["branches"]:
                    branches.append(Counter())
                    walk(branch, times, branches[-1])
                into.update(max(branches, key=lambda c: sum(p.flops * n for p, n in c.items())))
                continue
            inner = times * eqn.params["length"] if name == "scan" else times
            if name == "while" and "while" not in notes:
                notes.append("while")
            for param in eqn.params.values():
                for sub in _sub_jaxprs(param):
                    walk(sub, inner, into)

    walk(jaxpr, 1, counts)
    return counts, [f"a `{n}` loop's products are counted once per call (trip count unknown)" for n in notes]


def as_matrices(product: Product):
    """(lhs axes order, rhs axes order, (batch, M, K), (batch, K, N), output shape): how to view the
    operands as batched matrices with the batch axes first and the contracted axes last (lhs) / first
    (rhs), and the dot_general result's shape (batch axes, lhs free axes, rhs free axes)."""
    lhs_order = (*product.batch[0], *product.lhs_free, *product.contracting[0])
    rhs_order = (*product.batch[1], *product.contracting[1], *product.rhs_free)
    b, m, k, n = product.sizes()
    out = (
        *(product.lhs_shape[i] for i in product.batch[0]),
        *(product.lhs_shape[i] for i in product.lhs_free),
        *(product.rhs_shape[i] for i in product.rhs_free),
    )
    return lhs_order, rhs_order, (b, m, k), (b, k, n), out


def operands(product: Product, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(product.lhs_shape).astype(np.float32),
        rng.standard_normal(product.rhs_shape).astype(np.float32),
    )


def jax_product(product: Product, seed: int = 0, launches: int = 1):
    """(call, result): the product as the program runs it, compiled alone; `call` launches it `launches`
    times back to back and then waits for the last."""
    lhs, rhs = (
        jnp.asarray(x, dtype)
        for x, dtype in zip(operands(product, seed), (product.lhs_dtype, product.rhs_dtype), strict=True)
    )
    dims = (product.contracting, product.batch)
    out_dtype = jnp.dtype(product.out_dtype)
    compiled = (
        jax.jit(lambda a, b: jax.lax.dot_general(a, b, dims, preferred_element_type=out_dtype))
        .lower(lhs, rhs)
        .compile()
    )

    def call():
        for _ in range(launches - 1):
            compiled(lhs, rhs)
        return compiled(lhs, rhs).block_until_ready()

    return call, lambda: np.asarray(compiled(lhs, rhs), np.float64)


def torch_product(product: Product, device, seed: int = 0, launches: int = 1):
    """(call, result): the same product through `torch.matmul` in the operands' dtype; `call` launches it
    `launches` times back to back, then synchronises."""
    import torch

    dtype = getattr(torch, product.torch_dtype)
    lhs, rhs = (torch.from_numpy(x).to(device=device, dtype=dtype) for x in operands(product, seed))
    lhs_order, rhs_order, lhs_3d, rhs_3d, out = as_matrices(product)
    batched = bool(product.batch[0])

    def compute():
        a = lhs.permute(lhs_order).reshape(lhs_3d if batched else lhs_3d[1:])
        b = rhs.permute(rhs_order).reshape(rhs_3d if batched else rhs_3d[1:])
        return torch.matmul(a, b)

    def call():
        with torch.no_grad():
            for _ in range(launches):
                compute()
        common.torch_sync(device)

    def result():
        with torch.no_grad():
            return compute().reshape(out).float().cpu().numpy().astype(np.float64)

    return call, result


KINDS = ("motion tokens", "text tokens", "batched", "per example")


def kind_of(row: dict, batch: int, frames: int, text_length: int) -> str:
    """Which of KINDS a product is: batched (the attention's per-head products, a batch axis), else one
    over the B*T motion tokens or the B*L text tokens (an axis of that size), else per example (the
    conditioning projections, LayerNorm scales folded into kernels and other small products)."""
    sizes = (row["m"], row["k"], row["n"])
    if row["batch"] > 1:
        return "batched"
    if batch * frames in sizes:
        return "motion tokens"
    if batch * text_length in sizes:
        return "text tokens"
    return "per example"


def by_kind(rows: list[dict], impls: list[str], batch: int, frames: int, text_length: int) -> list[dict]:
    """Per kind: products per step, GFLOP per step, and each library's seconds per step."""
    kinds = {}
    for row in rows:
        kind = kind_of(row, batch, frames, text_length)
        into = kinds.setdefault(
            kind, {"kind": kind, "count": 0, "gflop": 0.0, **{f"{i}_s": 0.0 for i in impls}}
        )
        into["count"] += row["count"]
        into["gflop"] += row["gflop"] * row["count"]
        for impl in impls:
            into[f"{impl}_s"] += row[f"{impl}_s"] * row["count"]
    return [kinds[kind] for kind in KINDS if kind in kinds]


# On an accelerator a product launched and waited for alone costs the launch and the wait (tens of us,
# more than most of the step's products take on the card: on an H200, 2026-12-04, jax's products timed
# that way summed to 116 ms against a 65 ms step whose profile showed 15 ms of products), so there each
# product is launched this many times back to back and waited for once (--launches).
ACCELERATOR_LAUNCHES = 50


def time_call(call, repeats: int, budget_s: float) -> list[float]:
    """One untimed call, then up to `repeats` timed ones, fewer where they would take past `budget_s`."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    n = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
    return common.time_repeats(call, n)


def traced_step(step: bench_train_step.OurStep, dtype: str):
    """Our train step's jaxpr in `dtype`, without the bone-length term (what `--geometric off` times)."""
    return jax.make_jaxpr(step.step_function(dtype, geometric=False))(step.state, step.batch, step.rng)


def parse_args(argv=None):
    parser = common.step_parser(__doc__)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16",
                        help="our compute dtype (the twin: float32 eager or bf16 autocast)")  # fmt: skip
    parser.add_argument("--impls", default="jax,torch", help=f"comma-separated, of {', '.join(IMPLS)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of each product (median)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds at most per product and library")
    parser.add_argument("--launches", type=int, default=0,
                        help="launches per timed call, waited for once (default 0: 1 on a CPU, "
                        f"{ACCELERATOR_LAUNCHES} on an accelerator, where a wait costs more than most "
                        "products)")  # fmt: skip
    parser.add_argument("--step-repeats", type=int, default=3,
                        help="interleaved rounds of the two whole steps (0: none)")  # fmt: skip
    parser.add_argument("--top", type=int, default=20, help="rows of the table (the totals count all)")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    parser.add_argument("--torch-device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--json", type=Path, default=None)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    impls = args.impls.split(",")
    if not impls or set(impls) - set(IMPLS) or "jax" not in impls:
        parser.error(
            f"--impls: a comma-separated list of {', '.join(IMPLS)} with jax in it, got {args.impls!r}"
        )
    args.impls = impls
    if args.launches < 0:
        parser.error(f"--launches must be 0 (automatic) or more, got {args.launches}")
    for flag in ("repeats", "top"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.step_repeats < 0:
        parser.error(f"--step-repeats must be 0 or more, got {args.step_repeats}")
    return args


def step_times(args, device) -> dict[str, float]:
    """Median seconds of our compiled step and the twin's, interleaved in this process."""
    tag = {"float32": "fp32", "bfloat16": "bf16"}[args.dtype]
    impls = [f"{framework}-{tag}" for framework in args.impls]
    # bench_train_step's twin options at their defaults (eager, no TF32), then ours.
    step_args = argparse.Namespace(**{"torch_compile_mode": "default", "torch_tf32": False, **vars(args)})
    cases = [bench_train_step.Case(impl, args.features, False) for impl in impls]
    prepared = bench_train_step.prepare(step_args, args.features, cases, device)
    seconds = bench_train_step.interleaved(prepared, args.step_repeats, warmup=1)
    return {case.framework: statistics.median(seconds[case]) for case in cases}


def main(argv=None) -> None:
    args = parse_args(argv)
    uses_torch = "torch" in args.impls
    device = common.torch_device(args.torch_device, args.torch_threads) if uses_torch else None
    machine = common.machine_info(device)
    record = {"benchmark": "products", "complete": False, "machine": machine, "rows": []}
    record["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(
        f"{machine['processor']} ({machine['host_cpus']} CPUs), jax {machine['jax']} on "
        f"{machine['jax_device']}"
        + (f", torch {machine['torch']} on {device}" if uses_torch else "")
        + common.warning_lines(machine),
        flush=True,
    )
    launches = args.launches or (1 if jax.default_backend() == "cpu" else ACCELERATOR_LAUNCHES)
    record["launches"] = launches
    if launches > 1:
        print(f"each product timed over {launches} launches back to back, one wait at the end", flush=True)
    step = bench_train_step.OurStep(args, args.features)
    counts, notes = collect_products(traced_step(step, args.dtype))
    analytic = common.model_flops(args.batch, args.frames, args.features, args.text_length, step.config.model)
    total_flops = sum(p.flops * n for p, n in counts.items())
    print(
        f"our {args.dtype} train step, B={args.batch} T={args.frames} D={args.features}: "
        f"{sum(counts.values())} products of {len(counts)} signatures, {total_flops / 1e9:.1f} GFLOP "
        f"(analytic count: {analytic['train_step'] / 1e9:.1f})",
        flush=True,
    )
    for note in notes:
        print(f"note: {note}")
    record.update(products_per_step=sum(counts.values()), gflop_per_step=total_flops / 1e9,
                  analytic_gflop_per_step=analytic["train_step"] / 1e9, notes=notes)  # fmt: skip
    rows = []
    for product, count in sorted(counts.items(), key=lambda item: -item[0].flops * item[1]):
        row = {"product": product.describe(), "count": count, "gflop": product.flops / 1e9}
        row.update(zip(("batch", "m", "k", "n"), product.sizes(), strict=True))
        for impl in args.impls:
            call = (
                jax_product(product, launches=launches)
                if impl == "jax"
                else torch_product(product, device, launches=launches)
            )[0]
            seconds = time_call(call, args.repeats, args.budget)
            row[f"{impl}_s"] = statistics.median(seconds) / launches
            row[f"{impl}_gflops"] = product.flops / row[f"{impl}_s"] / 1e9
        print(
            f"{row['product']}: x{count}, "
            + ", ".join(f"{impl} {row[f'{impl}_s'] * 1e3:.3f} ms" for impl in args.impls),
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
        record["rows"] = rows
        common.write_json(args.json, record, quiet=True)
    totals = {impl: sum(row[f"{impl}_s"] * row["count"] for row in rows) for impl in args.impls}
    record["products_alone_s_per_step"] = totals
    record["kinds"] = by_kind(rows, args.impls, args.batch, args.frames, args.text_length)
    del step  # its train state: the steps below make their own
    gc.collect()
    steps = step_times(args, device) if args.step_repeats else {}
    record["step_s"] = steps
    record["complete"] = True
    common.check_load_at_end(machine)
    print_table(args, rows, record["kinds"], totals, steps, total_flops)
    common.write_json(args.json, record)


def print_table(
    args, rows: list[dict], kinds: list[dict], totals: dict, steps: dict, total_flops: float
) -> None:
    impls = args.impls
    both = len(impls) == 2
    head = "| product | per step | M x K x N (batch) | GFLOP | " + " | ".join(
        f"{impl} ms | {impl} GFLOP/s" for impl in impls
    )
    print(f"\n{head}{' | torch time / jax time |' if both else ' |'}")
    print("|---" * (4 + 2 * len(impls) + both) + "|")
    for row in sorted(rows, key=lambda r: -r["jax_s"] * r["count"])[: args.top]:
        shape = f"{row['m']} x {row['k']} x {row['n']}" + (f" ({row['batch']})" if row["batch"] > 1 else "")
        cells = " | ".join(f"{row[f'{impl}_s'] * 1e3:.3f} | {row[f'{impl}_gflops']:.0f}" for impl in impls)
        ratio = f" | {row['torch_s'] / row['jax_s']:.2f}x" if both else ""
        print(f"| `{row['product']}` | {row['count']} | {shape} | {row['gflop']:.2f} | {cells}{ratio} |")
    if len(rows) > args.top:
        print(f"({len(rows) - args.top} more signatures in the totals and the JSON)")
    print(
        "\n| kind | products | GFLOP | " + " | ".join(f"{impl} s | {impl} GFLOP/s" for impl in impls) + " |"
    )
    print("|---" * (3 + 2 * len(impls)) + "|")
    for kind in kinds:
        cells = " | ".join(f"{kind[f'{i}_s']:.3f} | {kind['gflop'] / kind[f'{i}_s']:.0f}" for i in impls)
        print(f"| {kind['kind']} | {kind['count']} | {kind['gflop']:.1f} | {cells} |")
    print("\n| | " + " | ".join(impls) + " |")
    print("|---" * (1 + len(impls)) + "|")
    print("| the step's products alone, s | " + " | ".join(f"{totals[i]:.3f}" for i in impls) + " |")
    print(
        "| their rate, GFLOP/s | " + " | ".join(f"{total_flops / totals[i] / 1e9:.0f}" for i in impls) + " |"
    )
    if steps:
        print("| the whole step, s | " + " | ".join(f"{steps[i]:.3f}" for i in impls) + " |")
        print("| products alone / step | " + " | ".join(f"{totals[i] / steps[i]:.1%}" for i in impls) + " |")
        print("| the rest, s | " + " | ".join(f"{steps[i] - totals[i]:.3f}" for i in impls) + " |")
    if both:
        line = f"jax's products alone take {totals['jax'] / totals['torch']:.3f}x torch's"
        if steps:
            line += (
                f"; our step takes {steps['jax'] / steps['torch']:.3f}x the twin's "
                f"({steps['jax'] - steps['torch']:+.3f} s, of which the products alone "
                f"{totals['jax'] - totals['torch']:+.3f} s)"
            )
        print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
