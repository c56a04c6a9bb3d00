"""Where one decoder layer's time goes: its three blocks (feed-forward, self-attention, cross-attention),
each forward + backward under jit, against the matmul FLOPs it does and the bare matmul rate.

    .venv/bin/python benchmarks/bench_layer.py [--batch 32] [--frames 196] [--dtype float32] [--json out.json]

Each block is timed alone (the gradient of sum(sin(block(...))) with respect to its parameters, median of
--repeats after one warm-up call); `core` is the linear-attention function alone (two softmaxes and two
per-head contractions, gradient with respect to q, k, v), `dense` one latent x latent Dense layer, and
`bare matmul` one [B*T, C] x [C, C] product forward (its FLOP/s is the in-program ceiling to compare with).
Matmul FLOPs are 2 x multiply-adds, x 3 for forward + backward (the attention core's small contractions
are left out of the blocks' counts).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import common  # noqa: I001 - first: sets the allocator before jax starts (and puts the repository on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import model as model_lib


def timed(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    return statistics.median(common.time_repeats(lambda: jax.block_until_ready(fn(*args)), repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=196)
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--ff", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=77)
    parser.add_argument("--text-width", type=int, default=256)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    common.check_new_json(parser, args.json)
    machine = common.machine_info()
    b, t, c, heads, ff = args.batch, args.frames, args.latent, args.heads, args.ff
    length, width, e = args.text_length, args.text_width, 4 * args.latent
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape, np.float32))

    h, emb, text = normal(b, t, c), normal(b, e), normal(b, length, width)
    mask = jnp.asarray(np.arange(t)[None, :] < rng.integers(max(t // 5, 1), t + 1, b)[:, None])
    text_mask = jnp.asarray(np.arange(length)[None, :] < rng.integers(3, length + 1, b)[:, None])
    tokens, style = b * t, b * e * 2 * c  # style: each block's [B, E] -> [B, 2C] projection
    # Each block from emb: its modulation (the [B, E] -> [B, 2C] projection) is part of what is timed.
    blocks = {
        "feed-forward": (
            model_lib.FeedForward(c, ff, 0.0, dtype),
            lambda m: m(h, m.modulation(emb)),
            tokens * (2 * c * ff + c * c) + style,
        ),
        "self-attention": (
            model_lib.TemporalAttention(c, heads, "efficient", 0.0, dtype),
            lambda m: m(h, mask, m.modulation(emb)),
            tokens * 4 * c * c + style,
        ),
        "cross-attention": (
            model_lib.TemporalAttention(c, heads, "efficient", 0.0, dtype, context_width=width),
            lambda m: m(h, mask, m.modulation(emb), m.text_source(text, text_mask)),
            tokens * 2 * c * c + b * length * 2 * width * c + style,
        ),
    }
    rows = []
    for name, (block, run, macs) in blocks.items():
        params = block.init(jax.random.key(0), method=run)
        step = jax.jit(jax.grad(lambda p, block=block, run=run: jnp.sum(jnp.sin(block.apply(p, method=run)))))
        rows.append(
            {"part": name, "seconds": timed(step, (params,), args.repeats), "matmul_flops": 6.0 * macs}
        )
    q, k, v = normal(b, t, c), normal(b, t, c), normal(b, t, c)
    core = jax.jit(
        jax.grad(
            lambda q, k, v: jnp.sum(jnp.sin(model_lib.efficient_attention(q, k, v, mask, heads))),
            argnums=(0, 1, 2),
        )
    )
    rows.append(
        {
            "part": "core (linear attention)",
            "seconds": timed(core, (q, k, v), args.repeats),
            "matmul_flops": None,
        }
    )
    dense = model_lib.Dense(c, dtype, name="dense")
    dense_params = dense.init(jax.random.key(0), h)
    dense_step = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(dense.apply(p, h)))))
    rows.append(
        {
            "part": "dense C x C",
            "seconds": timed(dense_step, (dense_params,), args.repeats),
            "matmul_flops": 6.0 * tokens * c * c,
        }
    )
    x, w = h.reshape(tokens, c).astype(dtype), normal(c, c).astype(dtype)
    rows.append(
        {
            "part": "bare matmul (fwd)",
            "seconds": timed(jax.jit(jnp.matmul), (x, w), args.repeats),
            "matmul_flops": 2.0 * tokens * c * c,
        }
    )
    layer = sum(r["seconds"] for r in rows[:3])
    print(
        f"one decoder layer, B={b} T={t} C={c} FF={ff} heads={heads} L={length}, {args.dtype}; "
        f"{jax.devices()[0].device_kind}; host malloc: {common.host_malloc.describe()}"
        + common.warning_lines(machine)
    )
    print(f"{'part':<26}{'ms':>9}{'GFLOP/s':>10}{'% layer':>9}")
    for row in rows:
        rate = None if row["matmul_flops"] is None else row["matmul_flops"] / row["seconds"]
        row["flops_per_s"] = rate
        gflops = None if rate is None else rate / 1e9
        print(
            f"{row['part']:<26}{1e3 * row['seconds']:>9.1f}{common.fmt(gflops, '.1f'):>10}"
            f"{100 * row['seconds'] / layer:>9.1f}"
        )
    print(f"{'layer (the three blocks)':<26}{1e3 * layer:>9.1f}")
    common.check_load_at_end(machine)
    common.write_json(args.json, {"benchmark": "layer", "args": vars(args), "machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
