"""Hand-fused GPU kernels (Pallas, Triton backend) for passes that XLA:GPU splits into several memory-bound
fusions, each beside the plain jax.numpy spelling it must equal (`*_reference`).

`modulated_silu(h, multiplier, offset, out_dtype, heads)`: the stylization's SiLU(standardize(h) *
multiplier + offset) per sample (h [B, T, C]; multiplier, offset [B, C] float32), the LayerNorm
statistics in float32 (the variance of the centred h, as `model._standardize` under differentiation),
the result rounded to `out_dtype`. Its forward pass is jax.numpy (XLA fuses it well); its backward pass
is one Pallas kernel: each program reads a tile of frames of h and of the cotangent once, recomputes
the standardized h and the SiLU's input, and writes dh and the tile's sums over frames for
d multiplier and d offset (XLA sums those over the tiles: [B, tiles, C], small). `heads` names the
layout h was made in ([B, heads, T, C / heads], the linear attention's read): the kernel reads h and
writes dh in it, so that XLA cancels the move to [B, T, C] and back around the kernel instead of
copying.

Why: XLA's own backward pass of this function writes the SiLU's float32 input gradient and reads it
back three times; by the deviceless count of the B=256 step compiled for an H200
(`benchmarks/gpu_program.py`, benchmarks/RESULTS.md session 21) the kernel takes the bytes beside the
products from 80.2 to 66.0 GB per step (with h taken as [B, T, C] instead, copies of h and dh left
70.8).

`stylized_read(q, context, multiplier, offset, out_dtype, q_bias=...)`: the query's bias, the linear
attention's read (each head's softmaxed query features through its [H, H] context) and the stylization
after it, `model.stylized_read`, as three kernels. Forward, per sample and tile of frames: q (the
query's product) read once in its own [B, T, C] layout and its bias added, every head's read kept in
registers for the frame's LayerNorm statistics, the stylized output written in [B, T, C]: no
heads-first copy of q or of the read, and no biased q or read output in memory at all. Backward, per
sample and tile, the LayerNorm backward's two means over a frame's features; then per sample and head,
over the frames, dq and that head's sums d context, d multiplier, d offset, d bias (no partial sums over
frames in memory).
With `style=pallas` for the feed-forward blocks, the deviceless count of the B=256 step goes from 80.2
to 62.5 GB beside the products and from 121.0 to 97.5 GB in all (the read's products move into the
kernels), the device memory from 13.6 to 12.3 GB.

`key_value_context(kv, key_mask, num_heads, kv_bias=...)`: the linear attention's context from its keys
and values made as one product of both Dense kernels side by side (kv [B, S, 2C]), `model.key_value_context`,
as two kernels, one program per sample and head. Forward: kv's head columns read in their own layout,
the biases added, the keys' maxima over the valid positions, then their softmax weights, sums and
K^T V accumulated over tiles of positions; backward: dk and dv written side by side into the product's
cotangent, the biases' gradients summed per program. No biased, transposed keys and values in memory
(XLA writes them as [B, C, S] for its batched product, and the cotangents back). With the read's and
the stylization's kernels, and the keys' and values' product kept apart from the query's (XLA merges
products of one input, then copies each out for the kernels), the B=256 step's count goes to 54.8 GB
beside the products (62.5 without these two kernels, 80.2 for XLA's own) and 85.2 GB in all (97.5,
121.0), the device memory to 11.8 GB.

The kernels run where Pallas's Triton backend does (a CUDA GPU; jax 0.11 marks that backend deprecated
in favour of Mosaic GPU) and, with `interpret=True`, anywhere (the tests run them so on the CPU);
`fused_available(h, heads)`, `read_fused_available(q, context, heads)` and
`context_fused_available(kv, key_mask, heads)` say whether shapes suit them (heads' widths, and where
a program holds every head their number, powers of two, as Triton's tiles must be). The model runs
them with `kernels="pallas"` (config.model.kernels; on a CUDA GPU, where shapes suit them), not by
default until a card has timed them against XLA's fusions: benchmarks/bench_variants.py's
`style=pallas`, `read=pallas` and `context=pallas` swap them in part by part for that.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

EPSILON = 1e-5  # torch's LayerNorm epsilon, as model._standardize
ROWS_PER_PROGRAM = 16  # frames per kernel program: 16 x C float32 per live tile (C = 512: 32 KB)
NUM_WARPS = 4


def modulated_silu_reference(h: jax.Array, multiplier: jax.Array, offset: jax.Array) -> jax.Array:
    """SiLU(standardize(h) * multiplier + offset) in float32, jax.numpy: the function the kernel computes
    (the model's two-pass statistics, the variance of the centred h, as under differentiation)."""
    from motion_ddpm_jax import model  # here: the model module is the kernels' user, not their dependency

    z = model.standardize_two_pass(h, EPSILON)
    return jax.nn.silu(z * multiplier[:, None, :] + offset[:, None, :])


def _power_of_two(n: int) -> bool:
    """Whether n is a power of two (Triton's tile sides must be)."""
    return n > 0 and n & (n - 1) == 0


def fused_available(h: jax.Array, heads: int = 1) -> bool:
    """Whether `modulated_silu`'s kernel takes h [B, T, C] split into `heads`: heads and C / heads powers
    of two (Triton's tiles), C at most 4096 (a tile of rows in registers)."""
    channels = h.shape[-1]
    width = channels // heads if heads > 0 and channels % heads == 0 else 0
    powers = all(map(_power_of_two, (heads, width)))
    return h.ndim == 3 and powers and 16 <= channels <= 4096


def _silu_and_slope(u):
    """SiLU(u) and d SiLU(u) / du = s (1 + u (1 - s)), s the sigmoid."""
    sigmoid = 1.0 / (1.0 + jnp.exp(-u))
    return u * sigmoid, sigmoid * (1.0 + u * (1.0 - sigmoid))


def _frame_window(axis, frames: int, rows: int, tile=None):
    """(the frames of a tile as a slice, which of them exist): the tile is the program's index along
    `axis`, or `tile` where given (a loop over tiles)."""
    from jax.experimental import pallas as pl

    first = (pl.program_id(axis) if tile is None else tile) * rows
    return pl.ds(first, rows), (first + jnp.arange(rows)) < frames


def _backward_kernel(h_ref, multiplier_ref, offset_ref, g_ref, dh_ref, dmul_ref, doff_ref, *, frames, rows):
    """One program: frames [tile * rows, (tile + 1) * rows) of one sample (rows past `frames` masked).
    h and dh [heads, T, H] (heads first), the cotangent [T, heads, H] (the output's layout), the
    modulation [heads, H]; the tile's sums over its frames go to dmul, doff [heads, H]."""
    from jax.experimental.pallas import triton as plgpu

    window, valid = _frame_window(1, frames, rows)
    h = plgpu.load(h_ref.at[:, window, :], mask=valid[None, :, None], other=0.0).astype(jnp.float32)
    g = plgpu.load(g_ref.at[window, :, :], mask=valid[:, None, None], other=0.0).astype(jnp.float32)
    g = jnp.transpose(g, (1, 0, 2))  # [heads, rows, H], as h

    def row_mean(x):  # over a frame's C = heads x H features, one axis at a time
        return jnp.sum(jnp.sum(x, axis=2, keepdims=True), axis=0, keepdims=True) * (
            1.0 / (x.shape[0] * x.shape[2])
        )

    multiplier = multiplier_ref[...][:, None, :]
    offset = offset_ref[...][:, None, :]
    centred = h - row_mean(h)
    rstd = jax.lax.rsqrt(row_mean(centred * centred) + EPSILON)
    z = centred * rstd
    gu = g * _silu_and_slope(z * multiplier + offset)[1]  # 0 on masked rows
    dmul_ref[...] = jnp.sum(gu * z, axis=1)
    doff_ref[...] = jnp.sum(gu, axis=1)
    dz = gu * multiplier
    dh = rstd * (dz - row_mean(dz) - z * row_mean(dz * z))
    plgpu.store(dh_ref.at[:, window, :], dh.astype(dh_ref.dtype), mask=valid[None, :, None])


def modulated_silu_backward(h, multiplier, offset, cotangent, interpret: bool = False):
    """(dh, d multiplier, d offset) of `modulated_silu_reference` for the cotangent of its output, by the
    Pallas kernel, with h given heads first: h [B, heads, T, H], multiplier and offset [B, C], the
    cotangent [B, T, C] (C = heads x H) -> dh [B, heads, T, H] in h's dtype, the others [B, C] float32."""
    from jax.experimental import pallas as pl

    batch, heads, frames, width = h.shape
    tiles = -(-frames // ROWS_PER_PROGRAM)
    per_sample = pl.BlockSpec((None, heads, frames, width), lambda b, t: (b, 0, 0, 0))
    per_frame = pl.BlockSpec((None, frames, heads, width), lambda b, t: (b, 0, 0, 0))
    per_channel = pl.BlockSpec((None, heads, width), lambda b, t: (b, 0, 0))
    per_tile = pl.BlockSpec((None, None, heads, width), lambda b, t: (b, t, 0, 0))
    split = (batch, heads, width)
    partial_sums = jax.ShapeDtypeStruct((batch, tiles, heads, width), jnp.float32)
    dh, dmul, doff = _pallas_call(
        _backward_kernel,
        "modulated_silu_backward",
        (batch, tiles),
        [per_sample, per_channel, per_channel, per_frame],
        (per_sample, per_tile, per_tile),
        (jax.ShapeDtypeStruct(h.shape, h.dtype), partial_sums, partial_sums),
        interpret,
        frames,
        ROWS_PER_PROGRAM,
    )(
        h,
        multiplier.astype(jnp.float32).reshape(split),
        offset.astype(jnp.float32).reshape(split),
        cotangent.reshape(batch, frames, heads, width),
    )
    return dh, jnp.sum(dmul, axis=1).reshape(batch, -1), jnp.sum(doff, axis=1).reshape(batch, -1)


def heads_first(h: jax.Array, heads: int) -> jax.Array:
    """[B, T, C] -> [B, heads, T, C / heads]."""
    batch, frames, channels = h.shape
    return h.reshape(batch, frames, heads, channels // heads).transpose(0, 2, 1, 3)


def _frames_first(h: jax.Array) -> jax.Array:
    """[B, heads, T, H] -> [B, T, heads x H]."""
    batch, heads, frames, width = h.shape
    return h.transpose(0, 2, 1, 3).reshape(batch, frames, heads * width)


def modulated_silu(
    h, multiplier, offset, out_dtype: Any = jnp.float32, heads: int = 1, interpret: bool = False
):
    """`modulated_silu_reference(h, multiplier, offset)` rounded to `out_dtype` (h [B, T, C]), differentiated
    by the Pallas kernel (`modulated_silu_backward`; `interpret=True` runs it without a GPU).

    `heads`: the layout h was made in, [B, heads, T, C / heads] moved to [B, T, C] (the linear
    attention's read): the kernel reads h and writes dh in that layout, so that XLA cancels the move
    and its own inverse around the kernel instead of copying h and dh (the value does not depend on it).
    """
    return _modulated_silu_heads_first(heads_first(h, heads), multiplier, offset, out_dtype, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _modulated_silu_heads_first(h, multiplier, offset, out_dtype, interpret):
    """`modulated_silu` of h given heads first ([B, heads, T, H]) -> [B, T, C] in `out_dtype`."""
    return modulated_silu_reference(_frames_first(h), multiplier, offset).astype(out_dtype)


def _forward(h, multiplier, offset, out_dtype, interpret):
    value = _modulated_silu_heads_first(h, multiplier, offset, out_dtype, interpret)
    return value, (h, multiplier, offset)


def _backward(out_dtype, interpret, residuals, cotangent):
    h, multiplier, offset = residuals
    dh, dmul, doff = modulated_silu_backward(h, multiplier, offset, cotangent, interpret)
    return dh, dmul.astype(multiplier.dtype), doff.astype(offset.dtype)


_modulated_silu_heads_first.defvjp(_forward, _backward)


# The linear attention's read and the stylization that follows it, as one forward and two backward kernels.


def stylized_read_reference(q, context, multiplier, offset, q_bias=None) -> jax.Array:
    """`modulated_silu_reference` of the linear attention's read, in float32, jax.numpy: the function
    `stylized_read`'s kernels compute. q [B, T, C] (plus q_bias [C], in q's dtype) is softmaxed over each
    head's H features in float32, the weights rounded to context's dtype and read through context
    [B, heads, H, H] (accumulated in float32, rounded to q's dtype: the model's off-CPU spelling,
    `model._read_heads_first`); the read's output is then standardized, modulated and SiLU'd as
    `modulated_silu_reference` does."""
    heads = context.shape[1]
    q = q if q_bias is None else q + q_bias.astype(q.dtype)
    weights = jax.nn.softmax(heads_first(q, heads).astype(jnp.float32), axis=-1).astype(context.dtype)
    read = jnp.einsum("bhtd,bhde->bhte", weights, context, preferred_element_type=jnp.float32)
    return modulated_silu_reference(_frames_first(read.astype(q.dtype)), multiplier, offset)


def read_fused_available(q: jax.Array, context: jax.Array, num_heads: int) -> bool:
    """Whether `stylized_read`'s kernels take q [B, T, C] and context [B, num_heads, H, H]: heads and H
    powers of two, H at least 16 (Triton's smallest product tile), C at most 4096."""
    if q.ndim != 3 or context.shape[:2] != (q.shape[0], num_heads) or context.ndim != 4:
        return False
    heads, width = context.shape[1], context.shape[2]
    powers = all(map(_power_of_two, (heads, width)))
    return powers and context.shape[3] == width and heads * width == q.shape[2] <= 4096 and width >= 16


def _dot(a, b, contracting=((1,), (0,))):
    """A tile product accumulated in float32 (float32 operands at full precision, not TF32)."""
    precision = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
    dimensions = (contracting, ((), ()))
    return jax.lax.dot_general(a, b, dimensions, precision=precision, preferred_element_type=jnp.float32)


def _softmax_rows(q):
    """Softmax over the last axis of a float32 tile, as jax.nn.softmax."""
    exponentials = jnp.exp(q - jnp.max(q, axis=1, keepdims=True))
    return exponentials / jnp.sum(exponentials, axis=1, keepdims=True)


def _index(head: int) -> jax.Array:
    """A head's index into a ref as an int32 scalar (a Python int there fails Pallas's interpreter)."""
    return jnp.asarray(head, jnp.int32)


def _biased(tile, bias, valid):
    """A tile of a Dense layer's output from its product: `tile` (a view of the product's ref, [rows, H];
    rows not `valid` read as 0) plus the bias [1, H], added in float32 and rounded to the product's dtype
    (a low-precision add, as XLA computes one), as float32."""
    from jax.experimental.pallas import triton as plgpu

    q = plgpu.load(tile, mask=valid[:, None], other=0.0).astype(jnp.float32)
    return (q + bias.astype(jnp.float32)).astype(tile.dtype).astype(jnp.float32)


def _read_heads(q_ref, bias_ref, context_ref, window, valid):
    """Every head's read of a tile of frames: q_ref [T, heads, H] and bias_ref [heads, H] (the query),
    context_ref [heads, H, H] -> per head, the read's output (rounded to q's dtype) as float32 [rows, H]."""
    reads = []
    for head in map(_index, range(context_ref.shape[0])):
        q = _biased(q_ref.at[window, head, :], bias_ref[head][None, :], valid)
        read = _dot(_softmax_rows(q).astype(context_ref.dtype), context_ref[head])
        reads.append(read.astype(q_ref.dtype).astype(jnp.float32))
    return reads


def _standardized_heads(reads):
    """The read's frames standardized over all heads' features (two passes): (z per head, mean, rstd)."""
    width = len(reads) * reads[0].shape[1]
    mean = functools.reduce(jnp.add, [jnp.sum(r, axis=1) for r in reads]) * (1.0 / width)
    centred = [r - mean[:, None] for r in reads]
    variance = functools.reduce(jnp.add, [jnp.sum(c * c, axis=1) for c in centred]) * (1.0 / width)
    rstd = jax.lax.rsqrt(variance + EPSILON)
    return [c * rstd[:, None] for c in centred], mean, rstd


def _stylized_read_kernel(
    q_ref, bias_ref, context_ref, multiplier_ref, offset_ref, out_ref, *, frames, rows
):  # fmt: skip
    """Forward, one program per (sample, tile of frames): the read of every head, its statistics over the
    frame's C features, and SiLU(z * multiplier + offset), written in out_ref's dtype ([T, heads, H])."""
    from jax.experimental.pallas import triton as plgpu

    window, valid = _frame_window(1, frames, rows)
    zs, _, _ = _standardized_heads(_read_heads(q_ref, bias_ref, context_ref, window, valid))
    for head, z in enumerate(zs):
        out, _ = _silu_and_slope(z * multiplier_ref[head][None, :] + offset_ref[head][None, :])
        plgpu.store(out_ref.at[window, _index(head), :], out.astype(out_ref.dtype), mask=valid[:, None])


def _read_statistics_kernel(
    q_ref, bias_ref, context_ref, multiplier_ref, offset_ref, g_ref, stats_ref, *, frames, rows
):  # fmt: skip
    """Backward, first pass, one program per (sample, tile of frames): what the LayerNorm's backward needs
    from all of a frame's features, stats_ref [4, T] = (mean, rstd, mean(dz), mean(dz z)) with dz the
    cotangent of the standardized read z (g_ref [T, heads, H] the cotangent of the output)."""
    from jax.experimental.pallas import triton as plgpu

    window, valid = _frame_window(1, frames, rows)
    zs, mean, rstd = _standardized_heads(_read_heads(q_ref, bias_ref, context_ref, window, valid))
    sums = [jnp.zeros_like(mean), jnp.zeros_like(mean)]
    for head, z in enumerate(zs):
        multiplier = multiplier_ref[head][None, :]
        _, slope = _silu_and_slope(z * multiplier + offset_ref[head][None, :])
        g = plgpu.load(g_ref.at[window, _index(head), :], mask=valid[:, None], other=0.0).astype(jnp.float32)
        dz = g * slope * multiplier
        sums = [sums[0] + jnp.sum(dz, axis=1), sums[1] + jnp.sum(dz * z, axis=1)]
    scale = 1.0 / (len(zs) * zs[0].shape[1])
    for row, value in enumerate((mean, rstd, sums[0] * scale, sums[1] * scale)):
        plgpu.store(stats_ref.at[_index(row), window], value, mask=valid)


def _read_backward_kernel(
    q_ref, bias_ref, context_ref, multiplier_ref, offset_ref, g_ref, stats_ref, dq_ref, dcontext_ref,
    dmul_ref, doff_ref, dbias_ref, *, frames, rows,
):  # fmt: skip
    """Backward, second pass, one program per (sample, head), over the frames tile by tile: the head's
    dq (rounded to q's dtype), and its sums over frames, d context [H, H], d multiplier, d offset and
    d bias [H] (the rounded dq's sum).
    q_ref and g_ref [T, H] (the head's columns), bias_ref [H], stats_ref [4, T] from
    `_read_statistics_kernel`. Rounded where the model's autodiff rounds: the read's cotangent to q's
    dtype, the weights' to context's."""
    from jax.experimental.pallas import triton as plgpu

    context, bias = context_ref[...], bias_ref[...][None, :]
    multiplier, offset = multiplier_ref[...][None, :], offset_ref[...][None, :]

    def tile(index, sums):
        window, valid = _frame_window(None, frames, rows, index)
        weights = _softmax_rows(_biased(q_ref.at[window, :], bias, valid))
        read = _dot(weights.astype(context.dtype), context).astype(q_ref.dtype).astype(jnp.float32)
        mean, rstd, dz_mean, dzz_mean = (
            plgpu.load(stats_ref.at[_index(row), window], mask=valid, other=0.0)[:, None] for row in range(4)
        )
        z = (read - mean) * rstd  # masked frames: rstd 0, so z, du and dread are 0
        _, slope = _silu_and_slope(z * multiplier + offset)
        du = plgpu.load(g_ref.at[window, :], mask=valid[:, None], other=0.0).astype(jnp.float32) * slope
        dread = (rstd * (du * multiplier - dz_mean - z * dzz_mean)).astype(q_ref.dtype)
        dcontext = sums[0] + _dot(weights.astype(context.dtype), dread.astype(context.dtype), ((0,), (0,)))
        dweights = _dot(dread.astype(context.dtype), context, ((1,), (1,))).astype(context.dtype)
        dweights = dweights.astype(jnp.float32)
        dq = weights * (dweights - jnp.sum(dweights * weights, axis=1, keepdims=True))
        dq = dq.astype(dq_ref.dtype)
        plgpu.store(dq_ref.at[window, :], dq, mask=valid[:, None])
        dbias = sums[3] + jnp.sum(dq.astype(jnp.float32), axis=0)  # 0 on masked frames: du is 0 there
        return dcontext, sums[1] + jnp.sum(du * z, axis=0), sums[2] + jnp.sum(du, axis=0), dbias

    width = context.shape[0]
    vector = jnp.zeros((width,), jnp.float32)
    start = (jnp.zeros((width, width), jnp.float32), vector, vector, vector)
    dcontext, dmul, doff, dbias = jax.lax.fori_loop(0, -(-frames // rows), tile, start)
    dcontext_ref[...] = dcontext.astype(dcontext_ref.dtype)
    dmul_ref[...] = dmul
    doff_ref[...] = doff
    dbias_ref[...] = dbias


def _read_specs(batch, frames, heads, width, per_head: bool):
    """BlockSpecs of q or g [B, T, heads, H], q's bias [heads, H], context [B, heads, H, H] and the
    modulation [B, heads, H], for a grid of (sample, tile) (per_head False: a program sees every head)
    or of (sample, head)."""
    from jax.experimental import pallas as pl

    if per_head:
        return (
            pl.BlockSpec((None, frames, None, width), lambda b, h: (b, 0, h, 0)),
            pl.BlockSpec((None, width), lambda b, h: (h, 0)),
            pl.BlockSpec((None, None, width, width), lambda b, h: (b, h, 0, 0)),
            pl.BlockSpec((None, None, width), lambda b, h: (b, h, 0)),
        )
    return (
        pl.BlockSpec((None, frames, heads, width), lambda b, t: (b, 0, 0, 0)),
        pl.BlockSpec((heads, width), lambda b, t: (0, 0)),
        pl.BlockSpec((None, heads, width, width), lambda b, t: (b, 0, 0, 0)),
        pl.BlockSpec((None, heads, width), lambda b, t: (b, 0, 0)),
    )


def _read_rows() -> int:
    """Frames per tile of the read kernels: ROWS_PER_PROGRAM, at least 16 (a Triton product's rows)."""
    return max(ROWS_PER_PROGRAM, 16)


def _read_call(kernel, name, grid, in_specs, out_specs, out_shape, interpret, frames):
    return _pallas_call(kernel, name, grid, in_specs, out_specs, out_shape, interpret, frames, _read_rows())


def _pallas_call(kernel, name, grid, in_specs, out_specs, out_shape, interpret, frames, rows):
    """pl.pallas_call of `kernel` (given `frames` and `rows`, its frames per tile) on the Triton backend,
    NUM_WARPS warps per program."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    return pl.pallas_call(
        functools.partial(kernel, frames=frames, rows=rows),
        out_shape=out_shape,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        compiler_params=plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=1),
        interpret=interpret,
        name=name,
    )


def _split_inputs(q, bias, context, multiplier, offset):
    batch, frames, channels = q.shape
    heads, width = context.shape[1], context.shape[2]
    split = (batch, heads, width)
    modulation = (multiplier.astype(jnp.float32).reshape(split), offset.astype(jnp.float32).reshape(split))
    inputs = (q.reshape(batch, frames, heads, width), bias.reshape(heads, width), context, *modulation)
    return (batch, frames, heads, width), inputs


def stylized_read(
    q, context, multiplier, offset, out_dtype: Any = jnp.float32, interpret: bool = False, q_bias=None
) -> jax.Array:
    """`stylized_read_reference(q + q_bias, context, multiplier, offset)` rounded to `out_dtype`: q
    [B, T, C] (q_bias [C], added in q's dtype; None: q alone), context [B, heads, H, H] (C = heads x H),
    multiplier and offset [B, C] -> [B, T, C]. One Pallas kernel forward (a program per sample and tile
    of frames reads q's tile in its own layout, adds the bias, softmaxes and reads every head,
    standardizes over the frame's C features and writes the output in [B, T, C]: no heads-first copy of
    q or of the read); two backward (per sample and tile: the LayerNorm backward's two means over a
    frame's features; per sample and head, over the frames: dq, and the head's sums d context,
    d multiplier, d offset and d q_bias; XLA sums the last over the batch). `interpret=True` runs them
    without a GPU."""
    bias = jnp.zeros(q.shape[-1], q.dtype) if q_bias is None else q_bias.astype(q.dtype)
    return _stylized_read(q, bias, context, multiplier, offset, out_dtype, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _stylized_read(q, bias, context, multiplier, offset, out_dtype, interpret):
    (batch, frames, heads, width), inputs = _split_inputs(q, bias, context, multiplier, offset)
    rows, biases, contexts, channels = _read_specs(batch, frames, heads, width, per_head=False)
    out = _read_call(
        _stylized_read_kernel, "stylized_read", (batch, -(-frames // _read_rows())),
        [rows, biases, contexts, channels, channels], rows,
        jax.ShapeDtypeStruct(inputs[0].shape, out_dtype), interpret, frames,
    )(*inputs)  # fmt: skip
    return out.reshape(q.shape)


def _stylized_read_forward(q, bias, context, multiplier, offset, out_dtype, interpret):
    residuals = (q, bias, context, multiplier, offset)
    return _stylized_read(*residuals, out_dtype, interpret), residuals


def _stylized_read_backward(out_dtype, interpret, residuals, cotangent):
    from jax.experimental import pallas as pl

    q, bias, context, multiplier, offset = residuals
    (batch, frames, heads, width), inputs = _split_inputs(q, bias, context, multiplier, offset)
    g4 = cotangent.reshape(inputs[0].shape)
    rows, biases, contexts, channels = _read_specs(batch, frames, heads, width, per_head=False)
    per_sample_stats = pl.BlockSpec((None, 4, frames), lambda b, t: (b, 0, 0))
    stats = _read_call(
        _read_statistics_kernel, "stylized_read_statistics", (batch, -(-frames // _read_rows())),
        [rows, biases, contexts, channels, channels, rows], per_sample_stats,
        jax.ShapeDtypeStruct((batch, 4, frames), jnp.float32), interpret, frames,
    )(*inputs, g4)  # fmt: skip
    rows, biases, contexts, channels = _read_specs(batch, frames, heads, width, per_head=True)
    head_stats = pl.BlockSpec((None, 4, frames), lambda b, h: (b, 0, 0))
    sums = jax.ShapeDtypeStruct((batch, heads, width), jnp.float32)
    gradients = (jax.ShapeDtypeStruct(g4.shape, q.dtype), jax.ShapeDtypeStruct(context.shape, context.dtype))
    dq, dcontext, dmul, doff, dbias = _read_call(
        _read_backward_kernel, "stylized_read_backward", (batch, heads),
        [rows, biases, contexts, channels, channels, rows, head_stats],
        (rows, contexts, channels, channels, channels), (*gradients, sums, sums, sums), interpret, frames,
    )(*inputs, g4, stats)  # fmt: skip
    return (
        dq.reshape(q.shape),
        jnp.sum(dbias, axis=0).reshape(bias.shape).astype(bias.dtype),
        dcontext,
        dmul.reshape(multiplier.shape).astype(multiplier.dtype),
        doff.reshape(offset.shape).astype(offset.dtype),
    )


_stylized_read.defvjp(_stylized_read_forward, _stylized_read_backward)


# The linear attention's context from its keys and values: the key softmax over positions and K^T V.


def key_value_context_reference(kv, key_mask, num_heads: int, kv_bias=None) -> jax.Array:
    """`model.linear_attention_context` of the keys and values held side by side, jax.numpy: the function
    `key_value_context`'s kernels compute. kv [B, S, 2C] (keys then values; plus kv_bias [2C], added in
    kv's dtype), key_mask bool [B, S] -> context [B, heads, H, H] in kv's dtype (C = heads x H)."""
    from motion_ddpm_jax import model  # here: the model module is the kernels' user, not their dependency

    kv = kv if kv_bias is None else kv + kv_bias.astype(kv.dtype)
    k, v = jnp.split(kv, 2, axis=-1)
    return model.linear_attention_context(k, v, key_mask, num_heads, kv.dtype)


def context_fused_available(kv: jax.Array, key_mask: jax.Array, num_heads: int) -> bool:
    """Whether `key_value_context`'s kernels take kv [B, S, 2C] and key_mask [B, S] split into `num_heads`
    heads: each head's width H a power of two of at least 16 (Triton's smallest product tile)."""
    if kv.ndim != 3 or key_mask.shape != kv.shape[:2] or num_heads <= 0 or kv.shape[2] % (2 * num_heads):
        return False
    width = kv.shape[2] // (2 * num_heads)
    return width >= 16 and _power_of_two(width)


def _key_and_value(kv_ref, bias_ref, mask_ref, frames, rows, index):
    """A tile of one head's keys and values, as float32 [rows, H] each (their products plus biases,
    rounded to kv's dtype; 0 past the frames), and which of its rows are valid keys (in the frames and
    the key mask). kv_ref [S, 2, H], bias_ref [2, H], mask_ref [S] (1 valid, 0 masked)."""
    from jax.experimental.pallas import triton as plgpu

    window, valid = _frame_window(None, frames, rows, index)
    keep = valid & (plgpu.load(mask_ref.at[window], mask=valid, other=0.0) > 0)
    k, v = (_biased(kv_ref.at[window, _index(i), :], bias_ref[_index(i)][None, :], valid) for i in (0, 1))
    return window, valid, keep[:, None], k, v


def _key_weights(keep, k, peak):
    """exp(k - peak) at the valid keys, 0 at the others (the key softmax before its division)."""
    return jnp.where(keep, jnp.exp(k - peak[None, :]), 0.0)


def _context_kernel(
    kv_ref, bias_ref, mask_ref, context_ref, product_ref, peak_ref, total_ref, *, frames, rows
):  # fmt: skip
    """Forward, one program per (sample, head), two loops over the tiles of positions: the keys' maxima
    per feature, then the weights exp(k - max), their sums and K^T V [H, H] (the weights rounded to
    kv's dtype, accumulated in float32). Writes the context (K^T V rounded to kv's dtype, divided by the
    sums, rounded again: the model's spelling) and, for the backward pass, the rounded K^T V, the maxima
    and the sums."""
    tiles = -(-frames // rows)
    width = context_ref.shape[0]
    dtype = product_ref.dtype

    def maxima(index, peak):
        _, _, keep, k, _ = _key_and_value(kv_ref, bias_ref, mask_ref, frames, rows, index)
        return jnp.maximum(peak, jnp.max(jnp.where(keep, k, -jnp.inf), axis=0))

    peak = jax.lax.fori_loop(0, tiles, maxima, jnp.full((width,), -jnp.inf, jnp.float32))

    def accumulate(index, sums):
        _, _, keep, k, v = _key_and_value(kv_ref, bias_ref, mask_ref, frames, rows, index)
        weights = _key_weights(keep, k, peak)
        product = sums[0] + _dot(weights.astype(dtype), v.astype(dtype), ((0,), (0,)))
        return product, sums[1] + jnp.sum(weights, axis=0)

    start = (jnp.zeros((width, width), jnp.float32), jnp.zeros((width,), jnp.float32))
    product, total = jax.lax.fori_loop(0, tiles, accumulate, start)
    product = product.astype(dtype)
    context = product.astype(jnp.float32) / jnp.where(total > 0, total, 1.0)[:, None]
    context_ref[...] = context.astype(context_ref.dtype)
    product_ref[...] = product
    peak_ref[...] = peak
    total_ref[...] = total


def _context_backward_kernel(
    kv_ref, bias_ref, mask_ref, product_ref, peak_ref, total_ref, g_ref, dkv_ref, dkb_ref, dvb_ref, *,
    frames, rows,
):  # fmt: skip
    """Backward, one program per (sample, head), one loop over the tiles of positions: dk and dv (kv's
    dtype, written into dkv_ref [S, 2, H]) and their sums over positions (the biases' gradients,
    float32 [H] each), from the context's cotangent g_ref [H, H] and the forward's saved K^T V, maxima
    and sums. Rounded where the model's autodiff rounds: K^T V's cotangent and the weights' to kv's
    dtype."""
    from jax.experimental.pallas import triton as plgpu

    dtype = product_ref.dtype
    g, total, peak = g_ref[...].astype(jnp.float32), total_ref[...], peak_ref[...]
    positive = total > 0
    safe = jnp.where(positive, total, 1.0)
    dproduct = (g / safe[:, None]).astype(dtype)
    dtotal = -jnp.sum(g * product_ref[...].astype(jnp.float32), axis=1) / (safe * safe)
    dtotal = jnp.where(positive, dtotal, 0.0)[None, :]

    def tile(index, sums):
        window, valid, keep, k, v = _key_and_value(kv_ref, bias_ref, mask_ref, frames, rows, index)
        weights = _key_weights(keep, k, peak)
        dweights = _dot(v.astype(dtype), dproduct, ((1,), (1,))).astype(dtype).astype(jnp.float32) + dtotal
        dk = (weights * dweights).astype(dkv_ref.dtype)
        dv = _dot(weights.astype(dtype), dproduct).astype(dkv_ref.dtype)
        for i, gradient in enumerate((dk, dv)):
            plgpu.store(dkv_ref.at[window, _index(i), :], gradient, mask=valid[:, None])
        return sums[0] + jnp.sum(dk.astype(jnp.float32), 0), sums[1] + jnp.sum(dv.astype(jnp.float32), 0)

    width = g.shape[0]
    start = (jnp.zeros((width,), jnp.float32), jnp.zeros((width,), jnp.float32))
    dkb_ref[...], dvb_ref[...] = jax.lax.fori_loop(0, -(-frames // rows), tile, start)


def _context_specs(frames, width):
    """BlockSpecs for a grid of (sample, head): kv [B, S, 2, heads, H], its bias [2, heads, H], the mask
    [B, S], a per-head vector [B, heads, H] and a per-head [B, heads, H, H]."""
    from jax.experimental import pallas as pl

    return (
        pl.BlockSpec((None, frames, 2, None, width), lambda b, h: (b, 0, 0, h, 0)),
        pl.BlockSpec((2, None, width), lambda b, h: (0, h, 0)),
        pl.BlockSpec((None, frames), lambda b, h: (b, 0)),
        pl.BlockSpec((None, None, width), lambda b, h: (b, h, 0)),
        pl.BlockSpec((None, None, width, width), lambda b, h: (b, h, 0, 0)),
    )


def key_value_context(kv, key_mask, num_heads: int, interpret: bool = False, kv_bias=None) -> jax.Array:
    """`key_value_context_reference(kv, key_mask, num_heads, kv_bias)`: kv [B, S, 2C] (the keys' and the
    values' products side by side, as one Dense product of both kernels computes them; kv_bias [2C]
    added in kv's dtype, None: none), key_mask bool [B, S] -> the linear attention's context
    [B, heads, H, H] in kv's dtype. One Pallas kernel forward, per sample and head (the bias added,
    the key softmax's maxima, weights and sums, and K^T V, reading kv in its own layout: no transposed
    or biased keys and values in memory), one backward (dk and dv written side by side, as the Dense
    product's cotangent; the biases' gradients summed per sample and head). `interpret=True` runs them
    without a GPU."""
    bias = jnp.zeros(kv.shape[-1], kv.dtype) if kv_bias is None else kv_bias.astype(kv.dtype)
    mask = jnp.asarray(key_mask, bool).astype(jnp.float32)
    return _key_value_context(kv, bias, mask, num_heads, interpret)[0]


def _split_key_values(kv, bias, num_heads):
    batch, frames, channels = kv.shape
    width = channels // (2 * num_heads)
    return (
        (batch, frames, width),
        kv.reshape(batch, frames, 2, num_heads, width),
        bias.reshape(2, num_heads, width),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _key_value_context(kv, bias, mask, num_heads, interpret):
    """(context, and for the backward pass: K^T V rounded, the key maxima, the weights' sums)."""
    (batch, frames, width), kv5, bias3 = _split_key_values(kv, bias, num_heads)
    pairs, biases, masks, vectors, squares = _context_specs(frames, width)
    squared = jax.ShapeDtypeStruct((batch, num_heads, width, width), kv.dtype)
    vector = jax.ShapeDtypeStruct((batch, num_heads, width), jnp.float32)
    return tuple(
        _read_call(
            _context_kernel, "key_value_context", (batch, num_heads), [pairs, biases, masks],
            (squares, squares, vectors, vectors), (squared, squared, vector, vector), interpret, frames,
        )(kv5, bias3, mask)
    )  # fmt: skip


def _key_value_context_forward(kv, bias, mask, num_heads, interpret):
    outputs = _key_value_context(kv, bias, mask, num_heads, interpret)
    return outputs, (kv, bias, mask, *outputs[1:])


def _key_value_context_backward(num_heads, interpret, residuals, cotangents):
    kv, bias, mask, product, peak, total = residuals
    (batch, frames, width), kv5, bias3 = _split_key_values(kv, bias, num_heads)
    pairs, biases, masks, vectors, squares = _context_specs(frames, width)
    vector = jax.ShapeDtypeStruct((batch, num_heads, width), jnp.float32)
    dkv, dkb, dvb = _read_call(
        _context_backward_kernel, "key_value_context_backward", (batch, num_heads),
        [pairs, biases, masks, squares, vectors, vectors, squares], (pairs, vectors, vectors),
        (jax.ShapeDtypeStruct(kv5.shape, kv.dtype), vector, vector), interpret, frames,
    )(kv5, bias3, mask, product, peak, total, cotangents[0].astype(kv.dtype))  # fmt: skip
    dbias = jnp.concatenate([jnp.sum(dkb, axis=0).reshape(-1), jnp.sum(dvb, axis=0).reshape(-1)])
    return dkv.reshape(kv.shape), dbias.astype(bias.dtype), jnp.zeros_like(mask)


_key_value_context.defvjp(_key_value_context_forward, _key_value_context_backward)
