"""The optimizer's update alone, over the model's parameters: ours vs optax's own spelling vs the twin's.

    .venv/bin/python benchmarks/bench_optimizer.py [--impls jax,jax-optax,torch] [--rounds 7]
        [--torch-threads 0] [--json out.json]

After the backward pass, every train step clips the gradients to their global norm, takes an AdamW step
and feeds the parameter EMA: memory-bound passes over the 87.3M float32 parameters, their gradients, both
Adam moments and the EMA (349 MB each at MotionDiffuse's sizes), which no product hides. Timed here
apart from the step, on the model's own parameter shapes, with random finite gradients:

  jax        `train.apply_gradients` with `train.make_optimizer` (our clipping, the update, the parameter
             update and the EMA's in one `lax.cond` on the gradients being finite), jitted, state donated
  jax-optax  the same chain as optax spells it (`bench_variants.optax_spelled_*`: optax.clip_by_global_norm
             in optax.apply_if_finite, then optax.apply_updates and the EMA outside), before session 11
  torch      the twin's `Trainer.apply_gradients` (clip_grad_norm_, torch.optim.AdamW, foreach EMA
             lerp; no finiteness check) on the twin of the same model, gradients copied from ours

Rounds are interleaved (each runs every implementation once, starting at a rotating one); the table
gives medians, the speed relative to the first implementation, and an effective bandwidth: the bytes of
the fewest passes such an update needs (read gradients, moments, parameters and EMA: 5 x 4 bytes per
parameter; write moments, parameters and EMA: 4 x 4; the norm's read of the gradients: 4), over the
time. `max |dparam|` compares each jax row's parameters after its first update with the first row's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import bench_variants  # noqa: I001 - first: it imports common, which sets the allocator before jax
import common
import jax
import jax.numpy as jnp
import numpy as np

from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax import train

IMPLS = ("jax", "jax-optax", "torch")
BYTES_PER_PARAM = (5 + 4 + 1) * 4


def _jax_update(name: str, config, params, grads):
    """(run, params after one update) for one jax spelling; the state is donated and carried."""
    lr = train.learning_rate_schedule(config.optim, 10_000, 500)
    ema = train.make_ema(config.optim)
    if name == "jax":
        optimizer, apply = train.make_optimizer(config.optim, lr), train.apply_gradients
    else:
        optimizer = bench_variants.optax_spelled_optimizer(config.optim, lr)
        apply = bench_variants.optax_spelled_apply_gradients
    update = jax.jit(lambda state, grads: apply(state, grads, optimizer, ema), donate_argnums=0)
    holder = {"state": train.create_train_state(jax.tree.map(jnp.copy, params), optimizer, ema, 0)}
    holder["state"] = update(holder["state"], grads)
    first = jax.tree.map(np.asarray, holder["state"].params)

    def run():
        holder["state"] = update(holder["state"], grads)
        jax.block_until_ready(holder["state"])

    return run, first


def _torch_update(args, config, flax_model, params, grads):
    import torch
    import torch_twin

    from motion_ddpm_jax import diffusion

    device = common.torch_device("cpu", args.torch_threads)
    twin = torch_twin.twin_of(flax_model, device=device)
    torch_twin.load_flax_params(twin, jax.device_get(params))
    schedule = diffusion.make_schedule("linear", config.diffusion.steps)
    trainer = torch_twin.Trainer(twin.train(), config, schedule, common.empty_caption(args.text_length))
    # Our gradients in the twin's layouts: loaded as the parameters of a second twin, in the same order.
    holder = torch_twin.twin_of(flax_model, device=device)
    torch_twin.load_flax_params(holder, jax.device_get(grads))
    host_grads = [p.detach() for p in holder.parameters() if p.requires_grad]

    def run():
        with torch.no_grad():
            for p, g in zip(trainer.params, host_grads, strict=True):
                p.grad = g.clone()
        start = time.perf_counter()
        trainer.apply_gradients()
        return time.perf_counter() - start

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--impls", default="jax,jax-optax,torch", help=f"comma-separated, of {IMPLS}")
    parser.add_argument("--features", type=int, default=264)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--torch-threads", type=int, default=0, help="torch's CPU threads (0: its default)")
    parser.add_argument("--json", type=Path, default=None)
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    impls = args.impls.split(",")
    if set(impls) - set(IMPLS) or len(set(impls)) != len(impls) or args.rounds < 1:
        parser.error(f"--impls: distinct names of {IMPLS}; --rounds >= 1")

    config = common.bench_config(args, 196)
    flax_model = model_lib.model_from_config(config, input_feats=args.features, text_vocab_size=args.vocab)
    params = model_lib.init_params(flax_model, jax.random.key(0))
    count = sum(p.size for p in jax.tree.leaves(params))
    rng = np.random.default_rng(0)
    grads = jax.tree.map(lambda p: jnp.asarray(1e-3 * rng.standard_normal(p.shape), jnp.float32), params)

    runs, firsts = {}, {}
    for name in impls:
        if name == "torch":
            runs[name] = _torch_update(args, config, flax_model, params, grads)
        else:
            run, firsts[name] = _jax_update(name, config, params, grads)
            runs[name] = run
        runs[name]()  # untimed
        print(f"[{time.strftime('%H:%M:%S')}] {name}: ready", file=sys.stderr)

    seconds = {name: [] for name in impls}
    for r in range(args.rounds):
        for name in impls[r % len(impls) :] + impls[: r % len(impls)]:
            start = time.perf_counter()
            inner = runs[name]()
            seconds[name].append(inner if inner is not None else time.perf_counter() - start)

    machine = common.machine_info()
    print(
        f"optimizer update (clip, AdamW, EMA) over {count / 1e6:.1f}M float32 parameters: medians of "
        f"{args.rounds} interleaved rounds; {machine['host_cpus']} CPUs ({machine['processor']}), "
        f"jax {machine['jax']}" + common.warning_lines(machine)
    )
    print(f"{'impl':<12}{'ms':>9}{'vs ' + impls[0]:>12}{'GB/s':>8}{'max |dparam|':>15}")
    rows, base = [], statistics.median(seconds[impls[0]])
    reference = firsts.get(impls[0])  # None when the first row is torch's
    for name in impls:
        median = statistics.median(seconds[name])
        difference = None
        if name in firsts and reference is not None:
            gaps = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), firsts[name], reference)
            difference = max(jax.tree.leaves(gaps))
        rows.append(
            {"impl": name, "median_s": median, "seconds": seconds[name], "max_param_difference": difference}
        )
        shown = "" if difference is None else f"{difference:.3g}"
        print(
            f"{name:<12}{median * 1e3:>9.1f}{base / median:>11.3f}x"
            f"{BYTES_PER_PARAM * count / median / 1e9:>8.1f}{shown:>15}"
        )
    record = {"benchmark": "optimizer", "machine": machine, "args": vars(args) | {"json": str(args.json)}}
    common.write_json(args.json, record | {"num_params": count, "rows": rows})


if __name__ == "__main__":
    main()
