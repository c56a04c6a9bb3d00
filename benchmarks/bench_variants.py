"""Paired timing of code variants in one process: which spelling of the train step (or of the sampler)
is faster, and does it compute the same thing.

    .venv/bin/python benchmarks/bench_variants.py --variants current,transpose=halves \\
        [--dtype bfloat16] [--batch 32] [--frames 196] [--features 264] [--rounds 4] [--json out.json]
        [--sampler-steps N]

Each variant swaps one function of the model for another spelling (VARIANTS below), while the step is
traced and compiled; `current` swaps nothing. All variants share one train state and batch
(`bench_train_step.OurStep`), run after one untimed call each, and take turns: round r runs every variant
once, starting at a rotating one, so a change of the machine's speed hits all of them alike. The table
gives each variant's median time and its speed relative to the first variant (> 1: faster). Before
timing, every variant takes two steps from the same copy of the initial state with its parameters
perturbed (+0.02 x normal noise: from the initial state's zero output layers no gradient reaches most of
the network): `max |dparam|` is the largest difference of the parameters after them from the first
variant's (0: the same bits), `d grad_norm` the relative difference of the second step's gradient
norm, and `rel dgrad` the largest relative difference, over the parameter leaves, of Adam's first
moment after the first step (0.1 x the clipped gradient: each leaf's gradient, which the parameters
hide, Adam's first update being nearly the gradient's sign; see GRADIENT_FLOOR). `transpose=none` is
a cost probe that computes a wrong gradient on purpose, so it differs.

`--sampler-steps N` times our DDPM sampler instead (`bench_sampling.Ours`: captions encoded once, a
cosine schedule of N steps, --batch x --frames, the model evaluated, never differentiated), with
parameters perturbed away from their zero-initialised output layers; the check is `max |dout|`, the
largest difference of one denoiser call's output (at step N / 2) from the first variant's, relative to
its largest value. The table then gives ms per sampler step.

`--deadline-s S` (default: $CASE_LIMIT_S, which gpu_check.sh sets to the case's time limit): a variant is
compiled only while its compile (1.5x the slowest so far) and the timed rounds still end S seconds after
the start, less a margin; the rest are named as skipped. The JSON is written after every compile
("complete": false, compile times only), so a run cut short keeps them.

Spellings joined by "+" make one variant with all their swaps (e.g.
`attention=tokens-major+style=written-backward`).

Variants (those named `transpose=` change how `model._rows_last` builds the transposed copy of a
Dense layer's input for its bf16 kernel gradient on the CPU; they change nothing in float32):
  current             the code as it is
  transpose=fold      a plain x.T, which XLA folds into the product (that then runs in float32)
  transpose=halves    the two halves of rows transposed and concatenated (session 7's spelling)
  transpose=plain     one transpose of the two halves of rows (not folded, not blocked)
  transpose=none      a reshape in place of the transpose: WRONG values, the transposes' cost
  transpose=block16-wide  blocks of 16 rows, not 32, for inputs at least 1024 wide (session 17's try,
                      not kept)
  standardize=twopass LayerNorm statistics in two passes (the variance of the centred input; before
                      session 9's one-pass `model._standardize`)
  attention=einsum    the linear attention's per-head products by autodiff of XLA's einsums (bf16
                      results; before the custom-VJP product `model.low_precision_matmul`)
  read=heads-first    the attention read always softmaxes the queries after the heads split (evaluated
                      too; before session 9, and what the train step runs)
  context=heads-first the key softmax after the heads split, its weights transposed again for the
                      product (before session 9; its gradient now takes one more transpose)
  matmul=batch-axes   the attention's per-head products over [B, heads] batch axes (before session
                      10; XLA:CPU then runs those with a transposed operand in float32)
  gelu=autodiff       GELU in its input's dtype and differentiated by autodiff (before session 10)
  optimizer=optax     the optimizer as optax spells it: optax.clip_by_global_norm (a division) in
                      optax.apply_if_finite (its own lax.cond), then optax.apply_updates and the EMA
                      update outside it (before session 11; train step only)
  softmax=autodiff    the read's query softmax differentiated by autodiff of jax.nn.softmax's
                      default spelling (before session 12; now `model.softmax_features`)
  backward=fused      the LayerNorm standardization's cotangent passed on as it is, not through
                      `model._apart_from_products`: XLA:CPU then fuses the LayerNorm backward into the
                      product fusion that computes its cotangent (before session 13; train step only)
  positions=autodiff  the learned positions added by a plain broadcast, their gradient by autodiff: a
                      reduction over the batch axis (before session 15; train step only)
  residual=transposed the bf16 Dense layers save the transposed copy of their input for the kernel
                      gradient, made in the forward pass (session 17's try, not kept; train step only)
  residual=transposed-barrier  the same, the copy tied to the product's value by an optimization
                      barrier, so that it is made while the input is fresh (not kept either)
  attention=tokens-major  the linear attention's context and read with no transpose spelled out: the
                      softmaxes in the projections' own [B, S, heads, H] layout, the per-head products as
                      einsums over those views, differentiated by autodiff (a candidate for the GPU, where
                      the query softmaxes, fused with the move of the heads in front, ran at ~0.8-1.2
                      TB/s: benchmarks/RESULTS.md, the H200 profile read for bytes)
  attention=block-diagonal  the linear attention's context as one block-diagonal [C, C] matrix per
                      sample (all heads in one product, the cross-head blocks zeroed) and the read as one
                      [T, C] x [C, C] product: no transposes and no per-head products, for 8x those
                      products' FLOPs (+1.9 TFLOP, +23% of the B=256 step's 8.25; a candidate for the
                      GPU, where the per-head products ran at ~200 TFLOP/s beside their transposes)
  standardize=saved-statistics  LayerNorm's standardization differentiated by a written-out backward
                      pass from statistics saved in the forward one (mean, 1/std per row): two row
                      reductions in the backward pass, where autodiff of the two-pass form recomputes the
                      statistics beside them (on the H200 the fusion holding two LayerNorms' backward
                      passes ran at ~1.3 TB/s; a candidate for the GPU)
  style=written-backward  the stylization's SiLU(LayerNorm(h) * multiplier + offset) with its whole
                      backward pass written out from h, its saved row statistics and the modulation (the
                      stylization blocks' backward passes moved ~26 GB per B=256 step on the H200, ~2x
                      what reading h and the cotangent a few times needs; a candidate for the GPU)
  The next three are the parts that `model.kernels = "pallas"` runs as Pallas kernels on a GPU, one by
  one (swapped in whatever the config says; `context=pallas+read=pallas+style=pallas` is all of them):
  style=pallas        the stylization's backward pass as one Pallas (Triton) kernel,
                      `kernels.modulated_silu`: h and the cotangent read once, dh written once (in the
                      attention read's heads-first layout, where h came from it), the modulation's
                      gradients summed per tile (interpreted on a CPU: slow there, for the check only;
                      where C or its heads are not powers of two, the current spelling)
  style=pallas-rows8, style=pallas-rows32  the same kernel with 8 frames per program on 2 warps, or 32 on
                      8 (the default: 16 on 4), for tuning it on a card
  read=pallas         the attention blocks' linear-attention read and the stylization after it as Pallas
                      (Triton) kernels, `kernels.stylized_read`: forward, one kernel reads q in its own
                      [B, T, C] layout and writes the stylized output (no heads-first copies, no read
                      output between them); backward, two kernels read q and the cotangent twice and
                      write dq, d context and the modulation's gradients (on the H200 the queries'
                      softmax fusions alone took ~4.8 ms of the B=256 step; interpreted on a CPU; the
                      current spelling where the shapes do not suit the kernels). The feed-forward
                      blocks' stylization is left as it is: `read=pallas+style=pallas` swaps both
  context=pallas      the attention blocks' linear-attention context as Pallas (Triton) kernels,
                      `kernels.key_value_context`: the keys and values made as one product of both
                      Dense kernels side by side ([B, S, 2C]), then per sample and head one kernel adds
                      their biases, softmaxes the keys over the positions and sums K^T V, reading that
                      product in its own layout (no biased, transposed keys and values in memory);
                      backward, one kernel writes dk and dv side by side (the product's cotangent) and
                      the biases' gradients per sample and head (interpreted on a CPU; the current
                      spelling where the shapes do not suit the kernels)
  ffn=compute-dtype-output  the feed-forward blocks' linear2 output (their stylization's input) in the
                      compute dtype instead of float32, rounded as torch's autocast rounds it (not the
                      same bits in bf16: the LayerNorm reads rounded sums); by the deviceless count 0.26
                      GB fewer per layer at B=256 (the stylization's kernel reads h and writes dh in bf16)
  xla:NAME=VALUE[+NAME=VALUE...]  the current step compiled with these XLA options (as XLA_FLAGS names
                      them, without the dashes; `jax.jit(...).lower(...).compile(compiler_options=...)`),
                      so several settings are timed in one process, e.g.
                      `xla:xla_disable_hlo_passes=triton-softmax-rewriter`. An option this XLA does not
                      know fails that variant alone: it is reported ("did not compile", `failed` in the
                      JSON) and the others are timed (the first variant must compile). Train step only.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import bench_train_step  # noqa: I001 - first: it imports common, which sets the allocator before jax
import common
import jax
import jax.numpy as jnp
import numpy as np
import optax

from motion_ddpm_jax import kernels, train
from motion_ddpm_jax import model as model_lib


@contextlib.contextmanager
def _replaced_in(module, name: str, value):
    """module.<name> = value while the step is traced."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _replaced(name: str, value):
    """model_lib.<name> = value while the step is traced."""
    return _replaced_in(model_lib, name, value)


def _halves(x):
    half = x.shape[-2] // 2
    first, second = x[..., :half, :], x[..., half:, :]
    return jnp.concatenate([jnp.swapaxes(first, -1, -2), jnp.swapaxes(second, -1, -2)], axis=-1)


_ROWS_LAST = model_lib._rows_last  # the current spelling, kept: the variant replaces the module's


def _rows_last_block16_wide(x):
    """`model._rows_last` with blocks of 16 rows (not 32) where x is at least 1024 wide: a block of 32
    rows of a 1024-wide bf16 matrix is 64 KiB, twice a 32 KiB L1 cache."""
    if x.ndim == 2 and x.dtype.itemsize == 2 and x.shape[1] >= 1024 and x.shape[0] % 16 == 0:
        return model_lib._blocked_transpose(x, 16)
    return _ROWS_LAST(x)


def _no_transpose(x):
    return x.reshape(*x.shape[:-2], x.shape[-1], x.shape[-2])


def _einsum(spec):
    return lambda a, b, out_dtype: jnp.einsum(spec, a, b).astype(out_dtype)


def _context_heads_first(k, v, key_mask, num_heads, dtype):
    """`model.linear_attention_context` as it was spelled before session 9 (same function)."""
    keep = key_mask[:, None, :, None]
    k = kernels.heads_first(k, num_heads).astype(jnp.float32)
    peak = jax.lax.stop_gradient(jnp.max(jnp.where(keep, k, -jnp.inf), axis=2, keepdims=True))
    weight = jnp.exp(jnp.where(keep, k - peak, -jnp.inf))
    total = jnp.sum(weight, axis=2)
    weight, v = weight.astype(dtype), kernels.heads_first(v, num_heads).astype(dtype)
    if model_lib._cpu_low_precision(dtype):
        context = model_lib.low_precision_matmul(model_lib._rows_last(weight), v, jnp.float32)
    else:
        context = jnp.einsum("bhsd,bhse->bhde", weight, v)
    context = context.astype(jnp.float32) / jnp.where(total > 0, total, 1.0)[..., None]
    return context.astype(dtype)


def _context_tokens_major(k, v, key_mask, num_heads, dtype):
    """`model.linear_attention_context` with no transpose spelled out: the key softmax in k's layout
    [B, S, C], then one einsum over the [B, S, heads, H] views (XLA places the heads where its product
    wants them)."""
    weight, total = model_lib.key_exponentials(k, key_mask)
    weight = model_lib._split_heads(weight.astype(dtype), num_heads)
    context = jnp.einsum("bshd,bshe->bhde", weight, model_lib._split_heads(v.astype(dtype), num_heads))
    total = total.reshape(total.shape[0], num_heads, -1)
    return (context.astype(jnp.float32) / jnp.where(total > 0, total, 1.0)[..., None]).astype(dtype)


def _read_tokens_major(q, context, num_heads):
    """`model.linear_attention_read` with no transpose spelled out, differentiated by autodiff: the
    queries' softmax over each head's features in q's own layout [B, T, heads, H] (a reduction over the
    minor axis), then one einsum with the context."""
    weights = model_lib.softmax_features(model_lib._split_heads(q, num_heads).astype(jnp.float32))
    out = jnp.einsum("bthd,bhde->bthe", weights.astype(q.dtype), context.astype(q.dtype))
    return out.reshape(*q.shape)


def _context_block_diagonal(k, v, key_mask, num_heads, dtype):
    """`model.linear_attention_context` as one [C, C] matrix per sample, block diagonal: every key feature
    against every value feature in one product (heads x the per-head FLOPs), the blocks across heads
    zeroed. No transposes and no per-head products; the read takes it whole."""
    weight, total = model_lib.key_exponentials(k, key_mask)  # [B, S, C], [B, C]
    full = jnp.einsum("bsc,bse->bce", weight.astype(dtype), v.astype(dtype))
    width = full.shape[-1]
    blocks = np.kron(np.eye(num_heads), np.ones((width // num_heads,) * 2)).astype(np.float32)
    context = full.astype(jnp.float32) / jnp.where(total > 0, total, 1.0)[:, :, None] * blocks
    return context.astype(dtype)


def _read_block_diagonal(q, context, num_heads):
    """`model.linear_attention_read` against `_context_block_diagonal`'s [B, C, C] matrix: the queries'
    softmax per head in their own layout, then one [T, C] x [C, C] product per sample."""
    weights = model_lib.softmax_features(model_lib._split_heads(q, num_heads).astype(jnp.float32))
    return jnp.einsum("btc,bce->bte", weights.reshape(q.shape).astype(q.dtype), context.astype(q.dtype))


@contextlib.contextmanager
def _block_diagonal():
    with _replaced("linear_attention_context", _context_block_diagonal):
        with _replaced("linear_attention_read", _read_block_diagonal):
            yield


@contextlib.contextmanager
def _tokens_major():
    with _replaced("linear_attention_context", _context_tokens_major):
        with _replaced("linear_attention_read", _read_tokens_major):
            yield


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_batch_axes(a, b, out_dtype):
    """`model.low_precision_matmul` as it was spelled before session 10: the products over the stacks'
    own batch axes ([B, heads]), which XLA:CPU runs in float32 where an operand is a transpose."""
    return model_lib._dot_f32(a, b, ((a.ndim - 1,), (b.ndim - 2,))).astype(out_dtype)


def _matmul_batch_axes_bwd(out_dtype, residuals, cotangent):
    a, b = residuals
    g, last = cotangent.astype(a.dtype), a.ndim - 1
    da = model_lib._dot_f32(g, b, ((last,), (last,))).astype(a.dtype)
    db = model_lib._dot_f32(model_lib._rows_last(a), g, ((last,), (last - 1,))).astype(b.dtype)
    return da, db


_matmul_batch_axes.defvjp(model_lib._saving_operands(_matmul_batch_axes), _matmul_batch_axes_bwd)


def _affine_saving_transpose(barrier: bool):
    """`model.low_precision_affine` whose forward rule saves the transposed copy of x (`_rows_last(x)`)
    in place of x, so that the copy is made while x is fresh rather than in the backward pass; with
    `barrier`, an optimization barrier ties the copy to the product's value (made before the value is
    used)."""
    original = model_lib.low_precision_affine

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def affine(x, kernel, bias, out_dtype):
        return original(x, kernel, bias, out_dtype)

    def forward(x, kernel, bias, out_dtype):
        out = original(x, kernel, bias, out_dtype)
        x_t = model_lib._rows_last(x)
        if barrier:
            out, x_t = jax.lax.optimization_barrier((out, x_t))
        return out, (x_t, kernel, bias)

    def backward(out_dtype, residuals, cotangent):
        x_t, kernel, bias = residuals
        dbias = jnp.sum(cotangent.astype(jnp.float32), axis=0).astype(bias.dtype)
        cotangent = cotangent.astype(x_t.dtype)
        dx = model_lib._dot_f32(cotangent, kernel, ((1,), (1,))).astype(x_t.dtype)
        dkernel = model_lib._dot_f32(x_t, cotangent, ((1,), (0,))).astype(kernel.dtype)
        return dx, dkernel, dbias

    affine.defvjp(forward, backward)
    return affine


def optax_spelled_optimizer(optim_config, schedule):
    """`train.make_optimizer` as it was spelled before session 11: optax's own clipping and
    apply_if_finite (the same state structure as `train.skip_nonfinite`'s)."""
    chain = optax.chain(
        optax.clip_by_global_norm(optim_config.clip_norm), train.make_adamw(optim_config, schedule)
    )
    return optax.apply_if_finite(chain, max_consecutive_errors=2**30)


def optax_spelled_apply_gradients(state, grads, optimizer, ema, ema_every: int = 1):
    """`train.apply_gradients` before session 11: the optimizer's update (with its own cond), then the
    parameter update and the EMA's, each leaf's EMA selected by whether the step was finite."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    _, new_ema_state = ema.update(params, state.ema_state)
    feed = opt_state.last_finite & ((state.step + 1) % ema_every == 0)
    ema_state = jax.tree.map(lambda new, old: jnp.where(feed, new, old), new_ema_state, state.ema_state)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_state=ema_state)


@contextlib.contextmanager
def _optax_spelled():
    with _replaced_in(train, "make_optimizer", optax_spelled_optimizer):
        with _replaced_in(train, "apply_gradients", optax_spelled_apply_gradients):
            yield


_standardize_fused = jax.custom_vjp(model_lib._standardize.fun, nondiff_argnums=(1,))
_standardize_fused.defvjp(*model_lib._differentiated_as(model_lib.standardize_two_pass))

_standardize_saved_statistics = jax.custom_vjp(model_lib.standardize_two_pass, nondiff_argnums=(1,))


def _standardize_saved_forward(x, epsilon):
    """The two-pass statistics, kept for the backward pass (mean and 1/std: [..., 1] each)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True) + epsilon)
    return (x32 - mean) * rstd, (x, mean, rstd)


def _standardized_again(x, mean, rstd):
    """z = (x - mean) / std from the saved statistics, float32."""
    return (x.astype(jnp.float32) - mean) * rstd


def _through_standardize(z, rstd, g):
    """d/dx of z = (x - mean) / std applied to g (float32): (g - mean(g) - z mean(g z)) / std, two row
    reductions (autodiff of the two-pass form recomputes the statistics beside them)."""
    return rstd * (g - jnp.mean(g, axis=-1, keepdims=True) - z * jnp.mean(g * z, axis=-1, keepdims=True))


def _standardize_saved_backward(epsilon, residuals, cotangent):
    x, mean, rstd = residuals
    dx = _through_standardize(_standardized_again(x, mean, rstd), rstd, cotangent.astype(jnp.float32))
    return (dx.astype(x.dtype),)


_standardize_saved_statistics.defvjp(_standardize_saved_forward, _standardize_saved_backward)


@jax.custom_vjp
def _modulated_silu_written(h, multiplier, offset):
    """`model.modulated_silu` with its whole backward pass written out (`style=written-backward`)."""
    return _modulated_silu_forward(h, multiplier, offset)[0]


def _modulated_silu_forward(h, multiplier, offset):
    """The value (the two-pass statistics, as under differentiation) and what the backward pass needs:
    h, its row statistics (mean, 1/std: [B, T, 1]) and the modulation."""
    z, saved = _standardize_saved_forward(h, 1e-5)
    return jax.nn.silu(z * multiplier[:, None, :] + offset[:, None, :]), (*saved, multiplier, offset)


def _modulated_silu_backward(residuals, cotangent):
    """With z = (h - mean) / std and a = z m + o: da = g silu'(a) = g s (1 + a (1 - s)), s = sigmoid(a);
    dm = sum over frames of da z, do = sum over frames of da; dz = da m, and dh is LayerNorm's
    (dz - mean(dz) - z mean(dz z)) / std. Every [B, T, C] term from h and g alone: two row reductions,
    two column ones."""
    h, mean, rstd, multiplier, offset = residuals
    z = _standardized_again(h, mean, rstd)
    pre = z * multiplier[:, None, :] + offset[:, None, :]
    sigmoid = jax.nn.sigmoid(pre)
    dpre = cotangent.astype(jnp.float32) * sigmoid * (1.0 + pre * (1.0 - sigmoid))
    dh = _through_standardize(z, rstd, dpre * multiplier[:, None, :])
    return dh.astype(h.dtype), jnp.sum(dpre * z, axis=1), jnp.sum(dpre, axis=1)


_modulated_silu_written.defvjp(_modulated_silu_forward, _modulated_silu_backward)


def _modulated_silu_written_as(h, multiplier, offset, out_dtype=jnp.float32, heads=1, kernels="xla"):
    """`model.modulated_silu`'s signature (heads and kernels ignored) for `style=written-backward`."""
    return _modulated_silu_written(h, multiplier, offset).astype(out_dtype)


@contextlib.contextmanager
def _pallas_parts(*parts: str):
    """These parts of the blocks ("style", "read", "context": `model._pallas`) as Pallas kernels, whatever
    the config's `model.kernels` and the backend (interpreted on a CPU). Nested, the parts add up."""
    previous = model_lib._pallas
    with _replaced("_pallas", lambda kernels, part: part in parts or previous(kernels, part)):
        yield


@contextlib.contextmanager
def _pallas_tiles(rows: int, warps: int):
    """`style=pallas` with `rows` frames per kernel program run by `warps` warps (16 and 4 by default;
    the read's and the context's kernels, where swapped in too, take the rows, 16 at the least)."""
    with (
        _pallas_parts("style"),
        _replaced_in(kernels, "ROWS_PER_PROGRAM", rows),
        _replaced_in(kernels, "NUM_WARPS", warps),
    ):
        yield


VARIANTS = {
    "current": contextlib.nullcontext,
    "transpose=fold": lambda: _replaced("_rows_last", lambda x: jnp.swapaxes(x, -1, -2)),
    "transpose=halves": lambda: _replaced("_rows_last", _halves),
    "transpose=plain": lambda: _replaced("_rows_last", model_lib._plain_transpose),
    "transpose=none": lambda: _replaced("_rows_last", _no_transpose),
    "transpose=block16-wide": lambda: _replaced("_rows_last", _rows_last_block16_wide),
    "standardize=twopass": lambda: _replaced("_standardize", model_lib.standardize_two_pass),
    "attention=einsum": lambda: _replaced("low_precision_matmul", _einsum("...mk,...kn->...mn")),
    "read=heads-first": lambda: _replaced("linear_attention_read", model_lib._read_heads_first),
    "context=heads-first": lambda: _replaced("linear_attention_context", _context_heads_first),
    "matmul=batch-axes": lambda: _replaced("low_precision_matmul", _matmul_batch_axes),
    "gelu=autodiff": lambda: _replaced("gelu", lambda x: 0.5 * x * (1.0 + jax.lax.erf(x * (1 / 2**0.5)))),
    "optimizer=optax": _optax_spelled,
    "softmax=autodiff": lambda: _replaced("softmax_features", lambda x: jax.nn.softmax(x, axis=-1)),
    "backward=fused": lambda: _replaced("_standardize", _standardize_fused),
    "positions=autodiff": lambda: _replaced("add_positions", lambda x, positions: x + positions),
    "residual=transposed": lambda: _replaced("low_precision_affine", _affine_saving_transpose(False)),
    "residual=transposed-barrier": lambda: _replaced("low_precision_affine", _affine_saving_transpose(True)),
    "attention=tokens-major": _tokens_major,
    "standardize=saved-statistics": lambda: _replaced("_standardize", _standardize_saved_statistics),
    "style=written-backward": lambda: _replaced("modulated_silu", _modulated_silu_written_as),
    "style=pallas": lambda: _pallas_parts("style"),
    "style=pallas-rows8": lambda: _pallas_tiles(8, 2),
    "style=pallas-rows32": lambda: _pallas_tiles(32, 8),
    "read=pallas": lambda: _pallas_parts("read"),
    "context=pallas": lambda: _pallas_parts("context"),
    "ffn=compute-dtype-output": lambda: _replaced("_feed_forward_output_dtype", lambda dtype: dtype),
    "attention=block-diagonal": _block_diagonal,
}
XLA_PREFIX = "xla:"


def compiler_options(name: str) -> dict:
    """The XLA options of a variant named "xla:NAME=VALUE[+NAME=VALUE...]" (as XLA_FLAGS names them, without
    the dashes; VALUE true/false, an integer, a number or a string), {} for any other variant."""
    if not name.startswith(XLA_PREFIX):
        return {}
    options = {}
    for item in name[len(XLA_PREFIX) :].split("+"):
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"variant {name!r}: expected xla:NAME=VALUE[+NAME=VALUE...], got {item!r}")
        value: object = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        options[key.strip()] = value
    return options


def spellings(name: str) -> list[str]:
    """The VARIANTS a variant name joins with "+" ("attention=tokens-major+style=written-backward": both
    swaps at once); [] for an `xla:` variant."""
    return [] if name.startswith(XLA_PREFIX) else name.split("+")


def check_variant(name: str) -> dict:
    """A variant name's XLA options ({} for a spelling); ValueError naming what is wrong with it."""
    unknown = sorted(set(spellings(name)) - set(VARIANTS))
    if unknown:
        raise ValueError(
            f"unknown variant {', '.join(unknown)} in {name!r}; choose from {', '.join(VARIANTS)} (several "
            f"joined by '+'), or {XLA_PREFIX}NAME=VALUE"
        )
    return compiler_options(name)


@contextlib.contextmanager
def variant_context(name: str):
    """The swaps of a spelling variant (one of VARIANTS, or several joined by "+"), none for an `xla:`
    one (its options go to the compiler)."""
    with contextlib.ExitStack() as stack:
        for spelling in spellings(name):
            stack.enter_context(VARIANTS[spelling]())
        yield


def compile_variant(step: bench_train_step.OurStep, name: str, dtype: str):
    """(compiled train step, compile seconds) of variant `name`: traced with its swaps (the optimizer
    made again inside them, as a variant may respell it), compiled with its XLA options."""
    with variant_context(name):
        step.optimizer = train.make_optimizer(step.config.optim, step.lr)
        compiled, seconds, _ = step.compile(dtype, False, compiler_options(name))
    return compiled, seconds


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
    parser.add_argument(
        "--sampler-steps", type=int, default=0, help="> 0: time the DDPM sampler of this many steps instead"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=float(os.environ.get("CASE_LIMIT_S") or 0),
        help="seconds from start by which the table must be written (0: none; default: $CASE_LIMIT_S, "
        "which gpu_check.sh sets to the case's time limit): a variant is compiled only while its compile "
        "(1.5x the slowest so far) and the timed rounds still fit; the others are reported as skipped",
    )
    common.add_model_flags(parser)
    args = parser.parse_args(argv)
    common.check_new_json(parser, args.json)
    args.variants = args.variants.split(",")
    for name in args.variants:
        try:
            options = check_variant(name)
        except ValueError as error:
            parser.error(f"--variants: {error}")
        if options and args.sampler_steps:
            parser.error(f"--variants {name}: XLA options are for the train step, not --sampler-steps")
    if len(set(args.variants)) != len(args.variants) or args.rounds < 1:
        parser.error("--variants must not repeat a name, and --rounds must be at least 1")
    return args


STARTED = time.perf_counter()  # the deadline counts from here (about when the process started)
DEADLINE_MARGIN_S = 15.0  # kept free at the end: the checks, the table and the JSON


class Progress:
    """What the compiles have given so far, written to --json after each one (a run cut at its time limit
    keeps its compile times; "complete": false), and the deadline's rule for compiling one more."""

    def __init__(self, args):
        self.args, self.compile_s, self.failed, self.skipped, self.call_s = args, {}, {}, {}, 0.0

    def fits(self, name: str) -> bool:
        """Whether compiling `name` (1.5x the slowest compile so far) and then the timed rounds of every
        variant compiled by then (at the slowest untimed call so far) still end before the deadline."""
        if not self.args.deadline_s or not self.compile_s:
            return True
        elapsed = time.perf_counter() - STARTED
        compile_next = 1.5 * max(self.compile_s.values())
        rounds = self.args.rounds * (len(self.compile_s) + 1) * self.call_s
        if elapsed + compile_next + rounds + DEADLINE_MARGIN_S <= self.args.deadline_s:
            return True
        self.skipped[name] = (
            f"not compiled: at {elapsed:.0f} s, another compile (~{compile_next:.0f} s) and the rounds "
            f"(~{rounds:.0f} s) would pass the deadline of {self.args.deadline_s:.0f} s"
        )
        print(f"[{time.strftime('%H:%M:%S')}] {name}: SKIPPED, {self.skipped[name]}", file=sys.stderr)
        self.write()
        return False

    def compiled(self, name: str, seconds: float, call_s: float) -> None:
        self.compile_s[name], self.call_s = seconds, max(self.call_s, call_s)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: compiled in {seconds:.1f} s", file=sys.stderr)
        self.write()

    def write(self) -> None:
        rows = [{"variant": name, "compile_s": s} for name, s in self.compile_s.items()]
        common.write_json(self.args.json, self.record(rows) | {"complete": False}, quiet=True)

    def record(self, rows: list[dict]) -> dict:
        args = {
            key: str(value) if isinstance(value, Path) else value for key, value in vars(self.args).items()
        }
        return {
            "benchmark": "bench_variants",
            "machine": common.machine_info(),
            "args": args,
            "rows": rows,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def _untimed_call(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


@jax.jit
def _perturbed(params):
    """`params` plus 0.02 standard normal noise (keyed by each leaf's size): every gradient of the network
    in play, not only those of the zero-initialised output layers. One program: drawn eagerly, each
    leaf's shape compiled a program of its own (2.9 s of a tiny model's run on the CPU)."""
    noise = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), params)
    return jax.tree.map(lambda a, n: a + 0.02 * n, params, noise)


def _train_step_variants(args, progress: Progress):
    """Per variant: a timed call (one train step) and (params, grad norm) after two steps from the same
    initial state; compile seconds go to `progress`, as do the variants that did not compile and why
    (`failed`; the first one must compile) and those the deadline left out (`skipped`)."""
    step = bench_train_step.OurStep(args, args.features)
    initial = jax.tree.map(jnp.copy, step.state)
    initial = initial.replace(params=_perturbed(initial.params))
    runs, checks, failed = {}, {}, progress.failed
    for name in args.variants:
        if not progress.fits(name):
            continue
        try:
            compiled, seconds = compile_variant(step, name, args.dtype)
        except Exception as error:  # noqa: BLE001 - e.g. an XLA option this jax does not know
            if name == args.variants[0]:
                raise
            failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            print(f"[{time.strftime('%H:%M:%S')}] {name}: FAILED, {failed[name]}", file=sys.stderr)
            continue
        state, _ = compiled(jax.tree.map(jnp.copy, initial), step.batch, step.rng)
        moments = _first_moments(state.opt_state)
        state, metrics = compiled(state, step.batch, step.rng)
        checks[name] = (jax.tree.map(np.asarray, state.params), float(metrics["grad_norm"]), moments)
        runs[name] = step.runner(compiled)
        progress.compiled(name, seconds, _untimed_call(runs[name]))
    return runs, checks


# `rel dgrad` measures each leaf's difference against its own largest gradient, or against this fraction
# of the largest over all leaves where that is more: a gradient that is 0 analytically (the keys' bias,
# under a softmax over the keys) holds only rounding noise, which would otherwise count as a difference.
GRADIENT_FLOOR = 1e-3


def _first_moments(opt_state) -> list[np.ndarray]:
    """Adam's first moments (`mu`, one per parameter leaf) in the optimizer's state, as host arrays."""

    def adam(node):
        return hasattr(node, "mu") and hasattr(node, "nu")

    states = [node for node in jax.tree.leaves(opt_state, is_leaf=adam) if adam(node)]
    if not states:
        raise RuntimeError("no Adam state (mu, nu) in the optimizer's state")
    return [np.asarray(leaf) for state in states for leaf in jax.tree.leaves(state.mu)]


def _train_step_checks(checks, first):
    first_params, first_grad_norm, first_moments = checks[first]
    largest = [float(np.max(np.abs(b))) for b in first_moments]
    floors = [max(leaf, GRADIENT_FLOOR * max(largest), 1e-30) for leaf in largest]
    for name, (params, grad_norm, moments) in checks.items():
        differences = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, first_params)
        relative = [
            float(np.max(np.abs(a - b))) / floor
            for a, b, floor in zip(moments, first_moments, floors, strict=True)
        ]
        yield (
            name,
            {
                "max_param_difference": max(jax.tree.leaves(differences)),
                "grad_norm_relative_difference": abs(grad_norm - first_grad_norm) / first_grad_norm,
                "gradient_relative_difference": max(relative),
            },
        )


def _sampler_variants(args, progress: Progress):
    """Per variant: a timed call (the whole DDPM sampler) and one denoiser output, compile seconds to
    `progress`; no failures (its variants are spellings, which compile or stop the run)."""
    import bench_sampling

    from motion_ddpm_jax import diffusion, sampling

    args.max_frames = args.frames
    config = common.bench_config(args, args.frames)
    base = model_lib.model_from_config(config, input_feats=args.features, text_vocab_size=args.vocab)
    params = model_lib.init_params(base, jax.random.key(0))
    params = _perturbed(params)  # zero-initialised layers: nonzero
    schedule = diffusion.make_schedule("cosine", args.sampler_steps)
    inputs = bench_sampling.sampler_inputs(args.batch, args.frames, args.features, args)
    x_T, tokens, text_mask, mask = (jnp.asarray(a) for a in inputs)
    runs, checks = {}, {}
    for name in args.variants:
        if not progress.fits(name):
            continue
        with variant_context(name):
            ours = bench_sampling.Ours(args, args.features, params, args.dtype)
            runs[name], seconds = ours.compile("ddpm", schedule, args.sampler_steps, inputs)

            @jax.jit
            def denoise_once(params, model=ours.model):
                encoded = model_lib.encode_text(model, params, tokens, text_mask)
                denoise = sampling.conditioned_denoiser(model, params, encoded, text_mask, mask)
                return denoise(x_T, jnp.full((args.batch,), args.sampler_steps // 2, jnp.int32))

            checks[name] = np.asarray(denoise_once(params), np.float64)
        progress.compiled(name, seconds, _untimed_call(runs[name]))
    return runs, checks


def _sampler_checks(checks, first):
    scale = np.max(np.abs(checks[first]))
    for name, out in checks.items():
        yield name, {"max_output_relative_difference": float(np.max(np.abs(out - checks[first])) / scale)}


def main(argv=None) -> None:
    args = parse_args(argv)
    sampler = args.sampler_steps > 0
    progress = Progress(args)
    runs, checks = (_sampler_variants if sampler else _train_step_variants)(args, progress)
    failed = progress.failed
    first = args.variants[0]
    timed = [name for name in args.variants if name in runs]
    seconds = {name: [] for name in timed}
    for r in range(args.rounds):
        for name in timed[r % len(timed) :] + timed[: r % len(timed)]:
            start = time.perf_counter()
            runs[name]()
            seconds[name].append(time.perf_counter() - start)
    differences = dict((_sampler_checks if sampler else _train_step_checks)(checks, first))
    rows = []
    for name in timed:
        row = {"variant": name, "median_s": statistics.median(seconds[name]), "seconds": seconds[name]}
        rows.append({**row, "compile_s": progress.compile_s[name], **differences[name]})
    base = rows[0]["median_s"]
    machine = common.machine_info()
    what = f"DDPM sampler of {args.sampler_steps} steps" if sampler else "train step"
    print(
        f"{what}, {args.dtype}, B={args.batch} T={args.frames} D={args.features}: medians of "
        f"{args.rounds} interleaved rounds; {machine['host_cpus']} CPUs ({machine['processor']}), "
        f"{machine['jax_backend']}, jax {machine['jax']}" + common.warning_lines(machine)
    )
    unit, per = ("ms/step", 1e3 / args.sampler_steps) if sampler else ("s/step", 1.0)
    check_header = (
        f"{'max |dout|':>14}" if sampler else f"{'max |dparam|':>14}{'d grad_norm':>13}{'rel dgrad':>11}"
    )
    width = max(20, *(len(name) + 1 for name in args.variants))
    print(f"{'variant':<{width}}{unit:>9}{'vs ' + first:>22}{check_header}  rounds (s)")
    for row in rows:
        rounds = " ".join(f"{s:.2f}" for s in row["seconds"])
        if sampler:
            check = f"{row['max_output_relative_difference']:>14.3g}"
        else:
            check = (
                f"{row['max_param_difference']:>14.3g}{row['grad_norm_relative_difference']:>13.2g}"
                f"{row['gradient_relative_difference']:>11.2g}"
            )
        speed = f"{row['median_s'] * per:>9.3f}{base / row['median_s']:>21.3f}x"
        print(f"{row['variant']:<{width}}{speed}{check}  {rounds}")
    for name, why in failed.items():
        print(f"{name:<{width}}  did not compile: {why}")
    for name, why in progress.skipped.items():
        print(f"{name:<{width}}  {why}")
    common.write_json(args.json, progress.record(rows) | {"machine": machine, "complete": True})


if __name__ == "__main__":
    main()
