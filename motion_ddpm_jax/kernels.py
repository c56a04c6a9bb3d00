"""Hand-fused GPU kernels (Pallas, Triton backend) for passes that XLA:GPU splits into several memory-bound
fusions, each beside the plain jax.numpy spelling it must equal.

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

The kernel runs where Pallas's Triton backend does (a CUDA GPU; jax 0.11 marks that backend deprecated
in favour of Mosaic GPU) and, with `interpret=True`, anywhere (the tests run it so on the CPU);
`fused_available(h, heads)` says whether a shape suits it (heads and C / heads powers of two, as
Triton's tiles must be). Not the model's default: benchmarks/bench_variants.py's `style=pallas` swaps
it in, to be timed on a card against XLA's fusions.
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

    z = model._standardize_two_pass(h, EPSILON)
    return jax.nn.silu(z * multiplier[:, None, :] + offset[:, None, :])


def fused_available(h: jax.Array, heads: int = 1) -> bool:
    """Whether `modulated_silu`'s kernel takes h [B, T, C] split into `heads`: heads and C / heads powers
    of two (Triton's tiles), C at most 4096 (a tile of rows in registers)."""
    channels = h.shape[-1]
    width = channels // heads if heads > 0 and channels % heads == 0 else 0
    powers = all(n > 0 and n & (n - 1) == 0 for n in (heads, width))
    return h.ndim == 3 and powers and 16 <= channels <= 4096


def _backward_kernel(h_ref, multiplier_ref, offset_ref, g_ref, dh_ref, dmul_ref, doff_ref, *, frames, rows):
    """One program: frames [tile * rows, (tile + 1) * rows) of one sample (rows past `frames` masked).
    h and dh [heads, T, H] (heads first), the cotangent [T, heads, H] (the output's layout), the
    modulation [heads, H]; the tile's sums over its frames go to dmul, doff [heads, H]."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    first = pl.program_id(1) * rows
    valid = (first + jnp.arange(rows)) < frames
    window = pl.ds(first, rows)
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
    u = z * multiplier + offset
    sigmoid = 1.0 / (1.0 + jnp.exp(-u))
    gu = g * sigmoid * (1.0 + u * (1.0 - sigmoid))  # d SiLU(u) / du = s (1 + u (1 - s)); 0 on masked rows
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
    from jax.experimental.pallas import triton as plgpu

    batch, heads, frames, width = h.shape
    tiles = -(-frames // ROWS_PER_PROGRAM)
    per_sample = pl.BlockSpec((None, heads, frames, width), lambda b, t: (b, 0, 0, 0))
    per_frame = pl.BlockSpec((None, frames, heads, width), lambda b, t: (b, 0, 0, 0))
    per_channel = pl.BlockSpec((None, heads, width), lambda b, t: (b, 0, 0))
    per_tile = pl.BlockSpec((None, None, heads, width), lambda b, t: (b, t, 0, 0))
    split = (batch, heads, width)
    partial_sums = jax.ShapeDtypeStruct((batch, tiles, heads, width), jnp.float32)
    dh, dmul, doff = pl.pallas_call(
        functools.partial(_backward_kernel, frames=frames, rows=ROWS_PER_PROGRAM),
        out_shape=(jax.ShapeDtypeStruct(h.shape, h.dtype), partial_sums, partial_sums),
        grid=(batch, tiles),
        in_specs=[per_sample, per_channel, per_channel, per_frame],
        out_specs=(per_sample, per_tile, per_tile),
        compiler_params=plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=1),
        interpret=interpret,
        name="modulated_silu_backward",
    )(
        h,
        multiplier.astype(jnp.float32).reshape(split),
        offset.astype(jnp.float32).reshape(split),
        cotangent.reshape(batch, frames, heads, width),
    )
    return dh, jnp.sum(dmul, axis=1).reshape(batch, -1), jnp.sum(doff, axis=1).reshape(batch, -1)


def _heads_first(h: jax.Array, heads: int) -> jax.Array:
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
    return _modulated_silu_heads_first(_heads_first(h, heads), multiplier, offset, out_dtype, interpret)


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
