"""MotionTransformer: the MotionDiffuse denoiser (text-conditioned, linear-attention transformer) in Flax.

Shapes: B batch, T frames, D motion features, L text tokens, C = latent_dim, W = text_latent_dim,
E = 4 * latent_dim (the width of the time/text embedding that styles every block).

    emb  = MLP(sinusoid(t)) + Dense(text[b, last valid token])             [B, E]
    h    = Dense(x) + positions[:T]                                        [B, T, C]
    per layer: h += Style(SelfAttention(LN(h)), emb)
               h += Style(CrossAttention(LN(h), LN(text)), emb)
               h += Style(FFN(h), emb)
    out  = Dense_zero(h)                                                   [B, T, D], float32

Every block ends in a zero-initialised Dense, so a freshly initialised network outputs exactly 0.
Precision: parameters float32; Dense matmuls in `dtype` (the compute dtype; in bfloat16 on the CPU with
float32 accumulation and bias, `low_precision_affine`, and so are the linear attention's per-head
products, `low_precision_matmul`); LayerNorm statistics and every softmax in float32;
the residual stream and the output float32 (off the CPU, a Dense layer with a float32 output casts
its bf16 product, as torch's autocast rounds it). Pure: reads no file, flag or clock.

Build one with `model_from_config(config, input_feats=D, text_vocab_size=V)` and its parameters with
`init_params(model, rng)` (host-side, seconds; `model.init` works too but compiles for ~15 s on a CPU).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from motion_ddpm_jax import diffusion
from motion_ddpm_jax import kernels as pallas  # loads no Pallas until a kernel runs

ATTENTION_KINDS = ("efficient", "softmax")
COMPUTE_DTYPES = ("auto", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True)
class Initializer:
    """A parameter initializer that Flax can call (jax.random) and `init_params` can sample on the host.

    kind: 'zeros', 'ones', 'normal' (N(0, std^2)) or 'fan_in_uniform' (U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = prod(shape[:-1]): torch.nn.Linear's default weight init).
    """

    kind: str
    std: float = 1.0

    KINDS = ("zeros", "ones", "normal", "fan_in_uniform")

    def __post_init__(self):
        # Any other name had fallen through to fan_in_uniform: Initializer("zero") drew weights, not zeros.
        if self.kind not in self.KINDS:
            raise ValueError(f"Initializer kind {self.kind!r}; expected one of {self.KINDS}")

    def __call__(self, key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        if self.kind == "zeros":
            return jnp.zeros(shape, dtype)
        if self.kind == "ones":
            return jnp.ones(shape, dtype)
        if self.kind == "normal":
            return self.std * jax.random.normal(key, shape, dtype)
        bound = 1.0 / math.sqrt(math.prod(shape[:-1]))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """The same distribution drawn with numpy, float32."""
        if self.kind == "zeros":
            return np.zeros(shape, np.float32)
        if self.kind == "ones":
            return np.ones(shape, np.float32)
        if self.kind == "normal":
            return np.float32(self.std) * rng.standard_normal(shape, dtype=np.float32)
        bound = np.float32(1.0 / math.sqrt(math.prod(shape[:-1])))
        return bound * (2 * rng.random(shape, dtype=np.float32) - 1)


ZEROS = Initializer("zeros")
ONES = Initializer("ones")
LINEAR_INIT = Initializer("fan_in_uniform")  # weights; biases start at zero
TOKEN_INIT = Initializer("normal", 0.02)  # token and text-position embeddings
MOTION_POSITION_INIT = Initializer("normal", 1.0)  # MotionDiffuse's sequence_embedding: torch.randn


def _dot_f32(a: jax.Array, b: jax.Array, contracting: tuple[tuple[int], tuple[int]]) -> jax.Array:
    """A product of matrices (or of stacks of them: the leading axes of a and b are batch axes, the last
    two the matrices') accumulated and returned in float32, whatever the operands' dtype."""
    batch = tuple(range(a.ndim - 2))
    return jax.lax.dot_general(a, b, (contracting, (batch, batch)), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def low_precision_affine(x: jax.Array, kernel: jax.Array, bias: jax.Array, out_dtype: Any) -> jax.Array:
    """x [M, K] @ kernel [K, N] + bias [N] -> [M, N] in `out_dtype`; x and kernel in one low-precision
    dtype (bfloat16), bias float32: the product accumulated in float32, the bias added in float32, the
    sum rounded once to `out_dtype` (as a bf16 GPU matmul with its bias epilogue, or torch's autocast
    addmm, with a float32 output where the next op wants one). The gradient takes the same form: the
    cotangent rounded to the low dtype, both products accumulated in float32 (each rounded to its
    operand's dtype at the end), the bias gradient summed in float32.

    Why spelled out: XLA:CPU runs a bf16 x bf16 product at the AMX / AVX512-BF16 rate only when it
    accumulates into float32 (YNNPACK) and its left operand is contracted along its last axis; a bf16
    result or a float32 cotangent sends it to a float32 product instead (6x slower on such a CPU), and
    autodiff of the plain form gives both. Autodiff of a bf16 bias add also sums the bias gradient with
    bf16 rounding after every addition, in a slow reduce-window (a quarter of the bf16 step's time).
    """
    return (_dot_f32(x, kernel, ((1,), (0,))) + bias.astype(jnp.float32)).astype(out_dtype)


def _saving_operands(function):
    """The forward rule of a custom-VJP product f(*operands, out_dtype): its value, the operands saved."""
    return lambda *args: (function(*args), args[:-1])


def _differentiated_as(spelling, cotangent_through=lambda cotangent: cotangent):
    """The (fwd, bwd) rules of a custom VJP whose last argument is static: the value and the autodiff of
    `spelling`, another spelling of the same function (the one that runs faster under differentiation),
    applied to `cotangent_through(cotangent)` (the same values, e.g. `_apart_from_products`)."""

    def forward(*args):
        *arrays, static = args
        return jax.vjp(lambda *arrays: spelling(*arrays, static), *arrays)

    def backward(static, vjp, cotangent):
        return vjp(cotangent_through(cotangent))

    return forward, backward


def _rows_last(x: jax.Array) -> jax.Array:
    """x [..., M, K] -> its transpose [..., K, M] as a real copy, so that a product with x^T contracts its
    left operand along its last axis, the form XLA:CPU runs in bf16 (a transpose left to XLA is folded
    into the product, which then runs in float32, ~4x slower on an AMX Xeon). Same values in any case.

    A matrix of 2-byte elements whose rows split into blocks of 32, 16 or 8 is moved in two
    cache-friendly passes (`_blocked_transpose`); otherwise the copy is `_plain_transpose`. Measured on
    the train step (benchmarks/RESULTS.md): the plain transpose of a [6272, 512] activation read long
    after it was written, beside running products, took ~13 ms; in blocks the bf16 step ran 1.12x faster.
    """
    if x.ndim == 2 and x.dtype.itemsize == 2:
        block = next((b for b in (32, 16, 8) if x.shape[0] % b == 0), None)
        if block:
            return _blocked_transpose(x, block)
    return _plain_transpose(x)


def _plain_transpose(x: jax.Array) -> jax.Array:
    """x [..., M, K] -> [..., K, M] as one transpose of x's two halves of rows ([..., 2, M/2, K]), which
    XLA runs as a plain transpose and does not fold into a product; an odd M is left to XLA."""
    *batch, rows, features = x.shape
    if rows % 2:
        return jnp.swapaxes(x, -1, -2)
    axes = len(batch)
    halves = x.reshape(*batch, 2, rows // 2, features).transpose(*range(axes), axes + 2, axes, axes + 1)
    return halves.reshape(*batch, features, rows)


def _blocked_transpose(x: jax.Array, block: int) -> jax.Array:
    """x [M, K] of 2-byte elements (M divisible by `block`) -> x^T [K, M] in two passes that each read
    and write memory in order: blocks of `block` rows transposed one at a time ([M/b, K, b], a block's
    rows stay in cache), then the runs of b elements (b = 32: one 64-byte cache line) moved as whole
    4-byte words. The words keep XLA from merging the two transposes into the one-pass kind."""
    rows, features = x.shape
    tiles = x.reshape(rows // block, block, features).transpose(0, 2, 1)
    words = jax.lax.bitcast_convert_type(tiles.reshape(rows // block, features, block // 2, 2), jnp.uint32)
    return jax.lax.bitcast_convert_type(words.transpose(1, 0, 2), x.dtype).reshape(features, rows)


def _low_precision_affine_bwd(out_dtype, residuals, cotangent):
    x, kernel, bias = residuals
    dbias = jnp.sum(cotangent.astype(jnp.float32), axis=0).astype(bias.dtype)
    cotangent = cotangent.astype(x.dtype)
    dx = _dot_f32(cotangent, kernel, ((1,), (1,))).astype(x.dtype)
    dkernel = _dot_f32(_rows_last(x), cotangent, ((1,), (0,))).astype(kernel.dtype)
    return dx, dkernel, dbias


low_precision_affine.defvjp(_saving_operands(low_precision_affine), _low_precision_affine_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def low_precision_matmul(a: jax.Array, b: jax.Array, out_dtype: Any) -> jax.Array:
    """Stacks of products a [..., M, K] @ b [..., K, N] -> [..., M, N] in `out_dtype`, a and b in one
    low-precision dtype, accumulated in float32; the gradient products too, from the cotangent rounded
    to that dtype. `low_precision_affine`'s batched kin (the attention's per-head products), in the
    forms XLA:CPU runs at the bf16 rate: every left operand contracted along its last axis (the
    gradient of b takes a transposed copy of a), and every operand a stack with one batch axis
    (`_stacked`)."""
    out = _dot_f32(_stacked(a), _stacked(b), ((2,), (1,)))
    return out.reshape(*a.shape[:-1], b.shape[-1]).astype(out_dtype)


def _stacked(x: jax.Array) -> jax.Array:
    """x [..., M, K] -> [N, M, K], its batch axes merged into one (a reshape, free in memory).

    Why: XLA:CPU folds a transpose that feeds a product into the product's dimension numbers, and a
    bf16 product whose operand is such a transpose (the attention's heads split [B, S, heads, H] ->
    [B, heads, S, H], say) it runs with both operands converted to float32: ~2x slower than in bf16 for
    these [196, 64] x [64, 64] stacks (the transposes then copy float32, twice the bytes). A reshape
    between the transpose and the product keeps both in bf16. Measured (benchmarks/RESULTS.md, session
    10): one linear attention at B=32 T=196 ran 1.15x faster forward and backward (5 of its 6 products
    had been float32), 1.42x evaluated (both had been), and the bf16 train step 1.057x.
    """
    return x.reshape(-1, *x.shape[-2:])


def _low_precision_matmul_bwd(out_dtype, residuals, cotangent):
    a, b = residuals
    g = _stacked(cotangent.astype(a.dtype))
    da = _dot_f32(g, _stacked(b), ((2,), (2,))).reshape(a.shape).astype(a.dtype)  # g b^T
    db = _dot_f32(_rows_last(_stacked(a)), g, ((2,), (1,))).reshape(b.shape).astype(b.dtype)  # a^T g
    return da, db


low_precision_matmul.defvjp(_saving_operands(low_precision_matmul), _low_precision_matmul_bwd)


def _cpu_low_precision(dtype: Any) -> bool:
    """Whether products in `dtype` take the spelled-out float32-accumulating forms (bf16 on the CPU)."""
    return jnp.dtype(dtype) == jnp.bfloat16 and jax.default_backend() == "cpu"


def dense(
    x: jax.Array, kernel: jax.Array, bias: jax.Array | None, dtype: Any, out_dtype: Any = None
) -> jax.Array:
    """x [..., K] @ kernel [K, N] + bias [N] computed in `dtype` -> [..., N] in `out_dtype` (default
    `dtype`): nn.Dense, followed by a cast to `out_dtype`.

    The product runs on x's 2-D view [-1, K] (a free reshape) and is reshaped back: the kernel's gradient
    is then one product over the rows. From a [B, T, K] input, XLA contracts over B and T by first
    transposing the input in a fused copy that, on the CPU, ran several times slower than the product
    itself (benchmarks/RESULTS.md). On the CPU, bfloat16 goes through `low_precision_affine` (float32
    accumulation and bias, forward and backward; a float32 `out_dtype` is then never rounded to bf16);
    other backends keep XLA's own bf16 product (a GPU accumulates in float32 anyway) and a bias added in
    `dtype`, as nn.Dense does. `bias` None: the product alone (on the CPU's bf16 path, a zero bias).
    """
    out_dtype = dtype if out_dtype is None else out_dtype
    rows = x.reshape(-1, x.shape[-1]).astype(dtype)
    kernel = kernel.astype(dtype)
    if _cpu_low_precision(dtype):
        bias = jnp.zeros(kernel.shape[-1], jnp.float32) if bias is None else bias
        out = low_precision_affine(rows, kernel, bias, jnp.dtype(out_dtype))
    else:
        out = jnp.dot(rows, kernel) if bias is None else jnp.dot(rows, kernel) + bias.astype(dtype)
        out = out.astype(out_dtype)
    return out.reshape(*x.shape[:-1], kernel.shape[-1])


def _dense_parameters(module: nn.Module, features_in: int, features: int) -> tuple[jax.Array, jax.Array]:
    """Declares a Dense layer's parameters on `module` under nn.Dense's names, kernel [in, out] and bias
    [out] (float32), from the module's `kernel_init` / `bias_init` (which init_params reads too)."""
    kernel = module.param("kernel", module.kernel_init, (features_in, features))
    return kernel, module.param("bias", module.bias_init, (features,))


class Dense(nn.Module):
    """nn.Dense's parameters (kernel [in, out], bias [out], float32) and function, computed by `dense`;
    the result in `out_dtype` (default: `dtype`). Inside `setup` the attribute names it."""

    features: int
    dtype: Any
    zero_init: bool = False
    out_dtype: Any = None

    kernel_init = property(lambda self: ZEROS if self.zero_init else LINEAR_INIT)  # also read by init_params
    bias_init = property(lambda self: ZEROS)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _dense_parameters(self, x.shape[-1], self.features)
        return dense(x, kernel, bias, self.dtype, self.out_dtype)


class Dropout(nn.Module):
    """nn.Dropout's function with its keep mask drawn in float32: nn.Dropout draws it in the dtype of
    its Python-float rate, float64 under jax_enable_x64, which gives other masks for the same key (such
    a session trained another run from the same seed). Otherwise the same masks as nn.Dropout's: the
    same key (flax names this module as it names nn.Dropout, `Dropout_<i>` or its attribute) and the
    same float32 comparison."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0:
            return x
        if self.rate == 1:
            return jnp.zeros_like(x)  # no x / 0 (its gradient would be 0 / 0 where masked)
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), np.float32(keep), x.shape)
        return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


def _layer_norm(name: str | None = None) -> nn.LayerNorm:
    """LayerNorm in float32 (statistics and output), torch's epsilon."""
    return nn.LayerNorm(
        epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, scale_init=ONES, bias_init=ZEROS, name=name
    )


def _embed(num_embeddings: int, features: int, init: Initializer, name: str | None = None) -> nn.Embed:
    return nn.Embed(
        num_embeddings, features, dtype=jnp.float32, param_dtype=jnp.float32, embedding_init=init, name=name
    )


@jax.custom_vjp
def add_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x [B, S, C] + positions [S, C] (one row per position, the same for every sequence of the batch).

    The gradient of the positions, the cotangent summed over the batch, is taken as a pairwise sum of
    its [S, C] slices (`_sum_leading`), the same sum in another order. Autodiff of the broadcast gives a
    reduction over the leading axis, which XLA:CPU runs slowly when it keeps this many elements: 22-50 ms
    for [32, 360, 512] alone (46 ms in the train step at BEAT's T = 360), against 1-3 ms for the pairwise
    sum (benchmarks/RESULTS.md, session 15). x and positions share one dtype."""
    if x.dtype != positions.dtype:
        raise TypeError(
            f"add_positions: x is {x.dtype} but positions are {positions.dtype}; expected one dtype"
        )
    if x.ndim != positions.ndim + 1 or x.shape[1:] != positions.shape:
        raise ValueError(
            f"add_positions: x {x.shape} must be [batch, *positions.shape] with positions {positions.shape}"
        )
    return x + positions


def _sum_leading(x: jax.Array) -> jax.Array:
    """x [N, ...] summed over its leading axis by halves (a pairwise sum: elementwise adds, which XLA
    fuses into one pass), in x's dtype."""
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        pairs = x[:half] + x[half : 2 * half]
        x = jnp.concatenate([pairs, x[2 * half :]]) if x.shape[0] % 2 else pairs
    return x[0]


add_positions.defvjp(
    lambda x, positions: (add_positions(x, positions), None),
    lambda _, cotangent: (cotangent, _sum_leading(cotangent)),
)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of integer steps: t [B] -> float32 [B, dim] = [cos(t f), sin(t f)].

    f_i = max_period^(-i / half), i < half = dim // 2; an odd `dim` gets a final zero column.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    embedding = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
    return embedding


def _split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, S, C] -> [B, S, num_heads, C // num_heads]."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def efficient_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, num_heads: int
) -> jax.Array:
    """MotionDiffuse's linear attention: q [B, T, C], k and v [B, S, C], key_mask bool [B, S] -> [B, T, C].

    Per head (C / num_heads wide): the query is softmaxed over its features, the key over the S valid
    positions (masked ones get weight 0, as MotionDiffuse's -1e6 logits do, and its zeroed values make a
    head with no valid key output 0); context = key^T value ([H, H] per head) and the output is
    query . context. No 1/sqrt(d) scale. Softmax statistics in float32, the two contractions in q's dtype,
    which is also the output's.

    Laid out for speed, computing the same function: both contractions are plain batched matmuls over
    heads-first stacks ([B, heads, ., .]), the key softmax runs before its keys are split into heads,
    and its division is applied to the small [H, H] context instead of the [S, H] keys.
    """
    return linear_attention_read(q, linear_attention_context(k, v, key_mask, num_heads, q.dtype), num_heads)


def key_exponentials(k: jax.Array, key_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The key softmax over the S positions before its division, per feature column: k [B, S, C], key_mask
    bool [B, S] -> (exp(k - max) float32 [B, S, C], 0 at masked keys with gradient 0; their sums [B, C],
    0 where a row has no valid key)."""
    keep = key_mask[:, :, None]
    k = k.astype(jnp.float32)
    peak = jax.lax.stop_gradient(jnp.max(jnp.where(keep, k, -jnp.inf), axis=1, keepdims=True))
    weight = jnp.exp(jnp.where(keep, k - peak, -jnp.inf))  # masked keys: exp(-inf) = 0, gradient 0
    return weight, jnp.sum(weight, axis=1)


def linear_attention_context(
    k: jax.Array, v: jax.Array, key_mask: jax.Array, num_heads: int, dtype: Any
) -> jax.Array:
    """`efficient_attention`'s context, softmax_S(key)^T value per head: k, v [B, S, C] -> [B, heads, H, H]
    in `dtype`. It depends on the keys and values only: for cross-attention, on the caption alone.

    The key softmax runs in k's own layout [B, S, C] (its statistics are per feature column, so heads
    need not be split for them), and its weights go in one transpose to [B, heads, H, S], the left
    operand of the product contracted along its last axis. Measured against softmaxing in the
    heads-first layout and transposing twice: same values, 1.01-1.02x on the sampler's 4 x 60 step,
    1.01-1.05x on a 32 x 196 forward pass, 1.016x on the bf16 train step (benchmarks/RESULTS.md,
    session 9).
    """
    weight, total = key_exponentials(k, key_mask)
    batch, length, width = weight.shape
    heads_rows_last = (batch, length, num_heads, width // num_heads)
    weight = weight.astype(dtype).reshape(heads_rows_last).transpose(0, 2, 3, 1)  # [B, heads, H, S]
    v = pallas.heads_first(v, num_heads).astype(dtype)
    if _cpu_low_precision(dtype):
        context = low_precision_matmul(weight, v, jnp.float32)
    else:
        context = jnp.einsum("bhds,bhse->bhde", weight, v)
    total = total.reshape(batch, num_heads, -1)
    context = context.astype(jnp.float32) / jnp.where(total > 0, total, 1.0)[..., None]
    return context.astype(dtype)


# `kernels="pallas"` (config.model.kernels) runs parts of the blocks as Pallas kernels
# (motion_ddpm_jax/kernels.py) where the backend is one of these: a CUDA GPU, Pallas's Triton backend.
# Elsewhere, and where the shapes do not suit the kernels, the same functions in XLA's spelling. (The
# tests add "cpu": the kernels then run in Pallas's interpreter.)
KERNELS = ("xla", "pallas")
PALLAS_BACKENDS = ("gpu",)


def _pallas(kernels: str, part: str) -> bool:
    """Whether `part` of the blocks ("style": the stylization; "read": the linear attention's read and
    its stylization; "context": the linear attention's context) runs as Pallas kernels: where `kernels`
    is "pallas" and the backend is one of PALLAS_BACKENDS (benchmarks/bench_variants.py swaps this
    function to time the parts one by one)."""
    del part
    return kernels == "pallas" and jax.default_backend() in PALLAS_BACKENDS


def _interpret() -> bool:
    """The Pallas kernels run compiled on a GPU, in Pallas's interpreter elsewhere."""
    return jax.default_backend() != "gpu"


def key_value_context(
    standardized, norm, key, value, key_mask, num_heads: int, dtype: Any, kernels: str = "xla"
) -> jax.Array:
    """The linear attention's context from its source's standardized rows: keys and values the Dense
    layers `key` and `value` ((kernel, bias) each) of the LayerNorm `norm` ((scale, shift)) of
    `standardized` [B, S, W], key_mask bool [B, S] -> `linear_attention_context` [B, heads, H, H] in
    `dtype`: two Dense layers, as XLA was measured on. With `kernels` "pallas" (`_pallas`): the keys
    and values made as one product of both kernels side by side, then `kernels.key_value_context`."""
    if _pallas(kernels, "context"):
        context = _key_value_context_pallas(standardized, norm, key, value, key_mask, num_heads, dtype)
        if context is not None:
            return context
    k, v = (_norm_then_dense(standardized, norm, layer, dtype) for layer in (key, value))
    return linear_attention_context(k, v, key_mask, num_heads, dtype)


def _key_value_context_pallas(standardized, norm, key, value, key_mask, num_heads, dtype):
    """`key_value_context` by `kernels.key_value_context`, None where the shapes do not suit it."""
    (k_kernel, k_bias), (v_kernel, v_bias) = key, value
    product = jax.ShapeDtypeStruct((*standardized.shape[:-1], 2 * k_kernel.shape[1]), dtype)
    if not pallas.context_fused_available(product, key_mask, num_heads):
        return None
    side_by_side = (jnp.concatenate([k_kernel, v_kernel], 1), jnp.concatenate([k_bias, v_bias]))
    # The barrier, on the product's input as it reads it, keeps XLA from merging this product with the
    # query's (the same input) and copying each out of the merged one for the kernels: 0.46 GB per layer
    # at B=256 by benchmarks/gpu_program.py's count. (Made side by side without the kernels, XLA:GPU did
    # the same: 0.5 GB more per layer than two Dense layers.)
    rows = jax.lax.optimization_barrier(standardized.astype(dtype))
    kv, bias = _norm_then_product(rows, norm, side_by_side, dtype)
    return pallas.key_value_context(kv, key_mask, num_heads, _interpret(), bias)


# Evaluated on the CPU with at least this many query rows (B x T), the read softmaxes the queries
# before splitting them into heads; measured crossover (forward passes, bf16, session 9): 0.89x at 4 x 60
# rows, 1.00x at 8 x 120, 1.07x at 16 x 196, 1.02-1.08x at 32 x 196 against the heads-first softmax
# (float32 at 32 x 196: 1.00x).
READ_SOFTMAX_BEFORE_SPLIT_ROWS = 1024


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def linear_attention_read(q: jax.Array, context: jax.Array, num_heads: int) -> jax.Array:
    """softmax_features(query) . context per head: q [B, T, C], context [B, heads, H, H] -> [B, T, C].

    Two spellings of one function, by what XLA:CPU runs faster where each is used: differentiated
    (training; and evaluated with few query rows or off the CPU), the queries are split into heads
    ([B, heads, T, H]) and softmaxed there (`_read_heads_first`); evaluated on the CPU with at least
    READ_SOFTMAX_BEFORE_SPLIT_ROWS query rows, they are softmaxed in their own layout first
    (`_read_softmax_first`; in the train step that spelling ran 0.96x). The rows are those of the
    traced q: under `jax.vmap`, one example's. `sampling.generate` vmaps over samples of one row each,
    so it runs the heads-first spelling; a sampler loop called on a whole batch (as
    `benchmarks/bench_sampling.py` does) takes the switch.
    """
    rows = q.shape[0] * q.shape[1]
    if jax.default_backend() == "cpu" and rows >= READ_SOFTMAX_BEFORE_SPLIT_ROWS:
        return _read_softmax_first(q, context, num_heads)
    return _read_heads_first(q, context, num_heads)


@jax.custom_vjp
def softmax_features(x: jax.Array) -> jax.Array:
    """jax.nn.softmax over the last axis, with its gradient written as y (g - sum(g y)) from the output y
    alone (the form of jax's `jax_softmax_custom_jvp`, off by default in jax 0.10). Autodiff of jax's
    default spelling keeps the exponentials and their sums for the backward pass and differentiates the
    division: more inputs and more work in the one XLA:CPU fusion that also holds the read's product
    (benchmarks/RESULTS.md, session 12)."""
    return jax.nn.softmax(x, axis=-1)


def _softmax_features_bwd(y: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    return (y * (cotangent - jnp.sum(cotangent * y, axis=-1, keepdims=True)),)


softmax_features.defvjp(lambda x: (softmax_features(x),) * 2, _softmax_features_bwd)


def _read_softmax_first(q: jax.Array, context: jax.Array, num_heads: int) -> jax.Array:
    weights = softmax_features(_split_heads(q, num_heads).astype(jnp.float32))
    return _read_product(weights.astype(q.dtype).transpose(0, 2, 1, 3), context)


def _read_heads_first(q: jax.Array, context: jax.Array, num_heads: int) -> jax.Array:
    weights = softmax_features(pallas.heads_first(q, num_heads).astype(jnp.float32))
    return _read_product(weights.astype(q.dtype), context)


def _read_product(weights: jax.Array, context: jax.Array) -> jax.Array:
    """Query weights [B, heads, T, H] (the output's dtype) . context [B, heads, H, H] -> [B, T, C]."""
    dtype = weights.dtype
    if _cpu_low_precision(dtype):
        out = low_precision_matmul(weights, context.astype(dtype), dtype)
    else:
        out = jnp.einsum("bhtd,bhde->bhte", weights, context.astype(dtype))
    return out.transpose(0, 2, 1, 3).reshape(out.shape[0], out.shape[2], -1)


linear_attention_read.defvjp(*_differentiated_as(_read_heads_first))


def softmax_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, num_heads: int
) -> jax.Array:
    """Standard scaled dot-product attention, same interface as `efficient_attention`.

    Runs `jax.nn.dot_product_attention` (layout [B, S, heads, H]; logits and softmax in float32; the
    implementation is left to JAX). Values at masked positions are zeroed too, so a row whose keys are all
    masked gives 0, as in `efficient_attention`.
    """
    v = jnp.where(key_mask[:, :, None, None], _split_heads(v, num_heads), 0).astype(q.dtype)
    out = jax.nn.dot_product_attention(
        _split_heads(q, num_heads),
        _split_heads(k, num_heads),
        v,
        mask=key_mask[:, None, None, :],
    )
    return out.reshape(*out.shape[:2], -1)


class _DenseParams(nn.Module):
    """A Dense layer's parameters (kernel [in, out], bias [out]) under nn.Dense's names, for a module
    that applies them itself (e.g. with a LayerNorm folded in)."""

    features_in: int
    features: int

    kernel_init = property(lambda self: LINEAR_INIT)  # also read by init_params
    bias_init = property(lambda self: ZEROS)

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        return _dense_parameters(self, self.features_in, self.features)


class _LayerNormParams(nn.Module):
    """A LayerNorm's parameters (scale, bias [width]) under nn.LayerNorm's names."""

    width: int

    scale_init = property(lambda self: ONES)  # also read by init_params
    bias_init = property(lambda self: ZEROS)

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        shape = (self.width,)
        return self.param("scale", self.scale_init, shape), self.param("bias", self.bias_init, shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _standardize(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
    """LayerNorm without its affine part, float32: (x - mean) / sqrt(var + eps) over the last axis.

    Two spellings of one function, picked by what XLA:CPU runs faster where each is used (paired
    timings in benchmarks/RESULTS.md, session 9):
    - evaluated (the samplers, evaluation): one pass over x for both statistics, var = mean(x^2) -
      mean^2 clamped at 0, as nn.LayerNorm computes them by default (`use_fast_variance`); the two-pass
      form materialises the centred x between two reductions, and the sampler's 4 x 60 bf16 step ran
      1.08-1.11x faster without it (used on every backend, where it is nn.LayerNorm's default too).
      Its price: var's error grows as ~1e-7 mean^2 when a row's mean is large against its spread
      (largest error against float64 with a mean of 10x the spread: ~5e-5, 100x: 2.5e-3; two passes:
      1e-6 and 1.2e-5).
    - differentiated (training): the two-pass form (the variance of the centred x) and its autodiff,
      which ran the bf16 train step 1.03-1.10x faster than the one-pass form, with autodiff or with a
      hand-written backward. On the CPU its cotangent arrives through `_apart_from_products`.
    """
    x = x.astype(jnp.float32)
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.maximum(jnp.mean(jnp.square(x), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
    return (x - mean) * jax.lax.rsqrt(variance + epsilon)


def standardize_two_pass(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
    """`_standardize` as the variance of the centred x: its value under differentiation. Public as the
    function the Pallas kernels' references compute (`kernels.modulated_silu_reference`): a kernel must
    equal the model's own LayerNorm statistics, not a copy of them."""
    x = x.astype(jnp.float32)
    centered = x - jnp.mean(x, axis=-1, keepdims=True)
    return centered * jax.lax.rsqrt(jnp.mean(jnp.square(centered), axis=-1, keepdims=True) + epsilon)


def _apart_from_products(cotangent: jax.Array) -> jax.Array:
    """The cotangent unchanged, through an op that keeps XLA:CPU from fusing what consumes it into the
    product fusion that computed it: a reduce-precision to the cotangent's own exponent and mantissa
    bits (exact: every number and infinity comes out bit for bit as it went in, a NaN as a NaN), which
    XLA keeps and YNNPACK's fusions do not take in. Other backends get the cotangent as it is.

    Why: the gradient of a LayerNorm's output sums the input gradients of the products that read it
    (q, k and v of the self-attention: three [tokens, 512] x [512, 512] products), and XLA:CPU fused
    those products, their sum and the whole LayerNorm backward (two row reductions and the elementwise
    passes) into one YNNPACK fusion, which ran them slower than apart. Split there, the bf16 train step
    ran 1.04-1.06x faster, the same bits (benchmarks/RESULTS.md, session 13).
    """
    if jax.default_backend() != "cpu":
        return cotangent
    bits = jnp.finfo(cotangent.dtype)
    return jax.lax.reduce_precision(cotangent, exponent_bits=bits.nexp, mantissa_bits=bits.nmant)


_standardize.defvjp(*_differentiated_as(standardize_two_pass, _apart_from_products))


def _norm_then_dense(standardized, norm, dense_params, dtype, out_dtype=None):
    """Dense(LayerNorm(x)) from x's standardized form, the norm's (scale, bias) folded into the Dense:
    (z * scale + shift) @ W + b = z @ (scale[:, None] * W) + (shift @ W + b). Same function, one
    [tokens, width] pass fewer forward and backward."""
    scale, shift = norm
    kernel, bias = dense_params
    return dense(standardized, scale[:, None] * kernel, shift @ kernel + bias, dtype, out_dtype)


def _norm_then_product(standardized, norm, dense_params, dtype) -> tuple[jax.Array, jax.Array | None]:
    """`_norm_then_dense` as (its product, its bias in `dtype`), for the caller to add the bias as `dense`
    does off the CPU, where a fused kernel reading the product can add it (no pass of its own); on the
    CPU the whole Dense and None (XLA:CPU's programs stay as they were measured: in float32 the bias
    added apart changed its fusions, and in bf16 product and bias are one float32 affine map)."""
    if jax.default_backend() == "cpu":
        return _norm_then_dense(standardized, norm, dense_params, dtype), None
    scale, shift = norm
    kernel, bias = dense_params
    return dense(standardized, scale[:, None] * kernel, None, dtype), (shift @ kernel + bias).astype(dtype)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as torch.nn.GELU computes it: 0.5 x (1 + erf(x / sqrt 2)) (erf: cheaper than erfc),
    computed in float32 and returned in x's dtype.

    Its derivative is written out, Phi(x) + x phi(x) (the normal CDF and density), in float32 too:
    autodiff of the bf16 form rounds every intermediate of the backward pass to bf16, and XLA:CPU ran
    that ~2x slower (9.6 vs 4.6 ms for a [6272, 1024] bf16 cotangent) with twice the error against
    float64 (benchmarks/RESULTS.md, session 10). The same function for float32 x.
    """
    return _gelu_float32(x).astype(x.dtype)


def _normal_cdf(x: jax.Array) -> jax.Array:
    """Phi(x) = 0.5 (1 + erf(x / sqrt 2)), float32 x."""
    return 0.5 * (1.0 + jax.lax.erf(x * (1 / math.sqrt(2))))


def _gelu_float32(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * _normal_cdf(x)


def _gelu_bwd(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    x32 = x.astype(jnp.float32)
    density = jnp.exp(-0.5 * jnp.square(x32)) * (1 / math.sqrt(2 * math.pi))
    return ((cotangent.astype(jnp.float32) * (_normal_cdf(x32) + x32 * density)).astype(x.dtype),)


gelu.defvjp(lambda x: (gelu(x), x), _gelu_bwd)


def modulated_silu(
    h, multiplier, offset, out_dtype: Any = jnp.float32, heads: int = 1, kernels: str = "xla"
) -> jax.Array:
    """SiLU(standardize(h) * multiplier + offset) per sample: h [B, T, C], multiplier and offset [B, C]
    (float32) -> [B, T, C], computed in float32, returned in `out_dtype`; the stylization's normalized,
    modulated activation. `heads`: h was made as [B, heads, T, C / heads] and moved to [B, T, C] (a
    hint for a fused backward pass; the value does not depend on it). With `kernels` "pallas"
    (`_pallas`): differentiated by `kernels.modulated_silu`'s backward kernel."""
    if _pallas(kernels, "style") and pallas.fused_available(h, heads):
        return pallas.modulated_silu(h, multiplier, offset, out_dtype, heads, _interpret())
    return nn.silu(_standardize(h) * multiplier[:, None, :] + offset[:, None, :]).astype(out_dtype)


def stylized_read(
    q, context, multiplier, offset, out_dtype: Any, num_heads: int, q_bias=None, kernels: str = "xla"
) -> jax.Array:
    """`modulated_silu` of the linear attention's read: q [B, T, C], context [B, heads, H, H] (C = heads
    x H), multiplier and offset [B, C] -> [B, T, C] in `out_dtype`; `q_bias` [C], where given, is added
    to q first, in q's dtype (q is then the query's product without its bias: `_norm_then_product`).
    One function for all three, so that fused kernels can take them: with `kernels` "pallas"
    (`_pallas`), `kernels.stylized_read`."""
    if _pallas(kernels, "read") and pallas.read_fused_available(q, context, num_heads):
        return pallas.stylized_read(q, context, multiplier, offset, out_dtype, _interpret(), q_bias)
    if q_bias is not None:  # added to the product's rows, as `dense` adds it (XLA:GPU fuses it as before)
        q = (q.reshape(-1, q.shape[-1]) + q_bias.astype(q.dtype)).reshape(q.shape)
    read = linear_attention_read(q, context, num_heads)
    return modulated_silu(read, multiplier, offset, out_dtype, num_heads, kernels=kernels)


class StylizationBlock(nn.Module):
    """h [B, T, C] and a modulation [B, 2C] -> Dense_zero(dropout(SiLU(LN(h) * (1 + scale) + shift))).

    The modulation (scale, shift) = Dense(SiLU(emb)) depends on the step and the caption only, not on h:
    `modulation(emb)` computes it, so a sampler can compute it for many steps at once, before its loop.
    The LayerNorm's affine part and the modulation make one per-sample affine map of the standardized h:
    LN(h) * (1 + scale) + shift = z * (gamma (1 + scale)) + (beta (1 + scale) + shift).
    """

    latent_dim: int
    dropout: float
    dtype: Any
    kernels: str = "xla"

    def setup(self):
        self.emb = Dense(2 * self.latent_dim, self.dtype, out_dtype=jnp.float32)
        self.norm = _LayerNormParams(self.latent_dim)
        self.out = Dense(self.latent_dim, self.dtype, zero_init=True, out_dtype=jnp.float32)
        self.drop = Dropout(self.dropout)

    def modulation(self, emb: jax.Array) -> jax.Array:
        """emb [N, E] -> (scale, shift) concatenated, float32 [N, 2C]."""
        return self.emb(nn.silu(emb))

    def __call__(self, h: jax.Array, modulation: jax.Array, deterministic: bool = True) -> jax.Array:
        multiplier, offset = self._affine(modulation)
        dtype = self._activation_dtype(deterministic)
        y = modulated_silu(h, multiplier, offset, dtype, kernels=self.kernels)
        return self._output(y, deterministic)

    def read(self, q, q_bias, context, modulation, num_heads: int, deterministic: bool = True) -> jax.Array:
        """`self(linear_attention_read(q + q_bias, context, num_heads), modulation)` (q_bias None: q
        alone) as one function of q, its bias and the context (`stylized_read`, which a fused kernel can
        take), for `TemporalAttention`'s efficient attention."""
        multiplier, offset = self._affine(modulation)
        dtype = self._activation_dtype(deterministic)
        y = stylized_read(q, context, multiplier, offset, dtype, num_heads, q_bias, kernels=self.kernels)
        return self._output(y, deterministic)

    def _affine(self, modulation: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(multiplier, offset) [B, C] of the standardized h, from the modulation and the LayerNorm."""
        scale, shift = jnp.split(modulation, 2, axis=-1)
        gamma, beta = self.norm()
        return gamma * (1.0 + scale), beta * (1.0 + scale) + shift

    def _activation_dtype(self, deterministic: bool) -> Any:
        """The output Dense rounds y to the compute dtype; with no dropout between them y is rounded
        when it is made (the same values), so that a fused backward pass (kernels.modulated_silu) gets
        its cotangent in that dtype."""
        return self.dtype if deterministic or self.dropout == 0 else jnp.float32

    def _output(self, y: jax.Array, deterministic: bool) -> jax.Array:
        return self.out(self.drop(y, deterministic=deterministic))


class TemporalAttention(nn.Module):
    """Self-attention over frames (`context_width` 0) or cross-attention to the text, styled, plus residual.

    `__call__(h, mask, modulation, source=None)`: h [B, T, C] float32, mask bool [B, T], modulation [B, 2C]
    (`modulation(emb)`); cross-attention takes `source = text_source(text, text_mask)`, which depends on
    the caption only (a sampler computes it once). q, k and v are Dense layers of LayerNorm(h) (of
    LayerNorm(text) for k, v of cross-attention), computed with the norms folded into them
    (`_norm_then_dense`).
    """

    latent_dim: int
    num_heads: int
    attention: str
    dropout: float
    dtype: Any
    context_width: int = 0
    kernels: str = "xla"

    def setup(self):
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        width = self.latent_dim
        source_width = self.context_width or width
        self.norm = _LayerNormParams(width)
        if self.context_width:
            self.text_norm = _LayerNormParams(self.context_width)
        self.query = _DenseParams(width, width)
        self.key = _DenseParams(source_width, width)
        self.value = _DenseParams(source_width, width)
        self.style = StylizationBlock(self.latent_dim, self.dropout, self.dtype, self.kernels)

    def modulation(self, emb: jax.Array) -> jax.Array:
        return self.style.modulation(emb)

    def _source(self, standardized, norm, mask) -> dict[str, jax.Array]:
        """What the queries attend to: the linear attention's context, else the keys, values and mask."""
        if self.attention == "efficient":
            layers = (self.key(), self.value())
            context = key_value_context(
                standardized, norm, *layers, mask, self.num_heads, self.dtype, self.kernels
            )
            return {"context": context}
        k, v = (_norm_then_dense(standardized, norm, p(), self.dtype) for p in (self.key, self.value))
        return {"key": k, "value": v, "mask": mask}

    def text_source(self, text: jax.Array, text_mask: jax.Array) -> dict[str, jax.Array]:
        """Cross-attention: text [B, L, W], text_mask bool [B, L] -> what the queries attend to, which
        depends on the caption alone: the linear attention's context [B, heads, H, H] ('efficient'), the
        keys and values [B, L, C] and the mask ('softmax')."""
        return self._source(_standardize(text), self.text_norm(), jnp.asarray(text_mask, bool))

    def __call__(self, h, mask, modulation, source=None, deterministic: bool = True):
        norm = self.norm()
        x = _standardize(h)
        if source is None:
            source = self._source(x, norm, mask)
        if self.attention == "efficient":
            q, bias = _norm_then_product(x, norm, self.query(), self.dtype)
            return h + self.style.read(q, bias, source["context"], modulation, self.num_heads, deterministic)
        q = _norm_then_dense(x, norm, self.query(), self.dtype)
        y = softmax_attention(q, source["key"], source["value"], source["mask"], self.num_heads)
        return h + self.style(y, modulation, deterministic)


def _feed_forward_output_dtype(dtype: Any) -> Any:
    """The dtype of the feed-forward block's linear2 output, its stylization's input: float32 whatever the
    compute dtype (on the CPU its LayerNorm then reads unrounded sums, `low_precision_affine`; off the CPU
    `dense` casts the bf16 product, the values torch's autocast gives). A hook for
    benchmarks/bench_variants.py's `ffn=compute-dtype-output`, which counts what bf16 would save off the
    CPU."""
    del dtype
    return jnp.float32


class FeedForward(nn.Module):
    """h + Style(Dense_zero(dropout(GELU(Dense(h)))), modulation); h [B, T, C] float32 (no pre-norm)."""

    latent_dim: int
    ff_size: int
    dropout: float
    dtype: Any
    kernels: str = "xla"

    def setup(self):
        self.linear1 = Dense(self.ff_size, self.dtype)
        output_dtype = _feed_forward_output_dtype(self.dtype)
        self.linear2 = Dense(self.latent_dim, self.dtype, zero_init=True, out_dtype=output_dtype)
        self.drop = Dropout(self.dropout)
        self.style = StylizationBlock(self.latent_dim, self.dropout, self.dtype, self.kernels)

    def modulation(self, emb: jax.Array) -> jax.Array:
        return self.style.modulation(emb)

    def __call__(self, h, modulation, deterministic: bool = True):
        y = gelu(self.linear1(h))
        y = self.drop(y, deterministic=deterministic)
        y = self.linear2(y)
        return h + self.style(y, modulation, deterministic)


BLOCKS = ("self_attention", "cross_attention", "ffn")


class DecoderLayer(nn.Module):
    """One MotionDiffuse layer: frame self-attention, cross-attention to the text, feed-forward.

    What does not depend on the motion is split off: `text_source(text, text_mask)` (what the
    cross-attention attends to) and `modulations(emb)` (each block's (scale, shift), {block: [N, 2C]}).
    """

    latent_dim: int
    num_heads: int
    ff_size: int
    attention: str
    dropout: float
    dtype: Any
    text_width: int
    kernels: str = "xla"

    def setup(self):
        fields = (self.latent_dim, self.num_heads, self.attention, self.dropout, self.dtype)
        self.self_attention = TemporalAttention(*fields, kernels=self.kernels)
        self.cross_attention = TemporalAttention(*fields, context_width=self.text_width, kernels=self.kernels)
        self.ffn = FeedForward(self.latent_dim, self.ff_size, self.dropout, self.dtype, self.kernels)

    def text_source(self, text, text_mask):
        return self.cross_attention.text_source(text, text_mask)

    def modulations(self, emb) -> dict[str, jax.Array]:
        return {name: getattr(self, name).modulation(emb) for name in BLOCKS}

    def __call__(self, h, mask, text_source, modulations, deterministic: bool = True):
        h = self.self_attention(h, mask, modulations["self_attention"], None, deterministic)
        h = self.cross_attention(h, mask, modulations["cross_attention"], text_source, deterministic)
        return self.ffn(h, modulations["ffn"], deterministic)


class TextEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (torch.nn.TransformerEncoderLayer, GELU): x [B, L, W] f32."""

    num_heads: int
    ff_size: int
    dropout: float
    deterministic: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, text_mask):
        width = x.shape[-1]
        q, k, v = (Dense(width, self.dtype, name=name)(x) for name in ("query", "key", "value"))
        attended = softmax_attention(q, k, v, text_mask, self.num_heads)
        a = Dense(width, self.dtype, name="attention_out", out_dtype=jnp.float32)(attended)
        a = Dropout(self.dropout)(a, deterministic=self.deterministic)
        x = _layer_norm("norm1")(x + a)
        f = gelu(Dense(self.ff_size, self.dtype, name="linear1")(x))
        f = Dropout(self.dropout)(f, deterministic=self.deterministic)
        f = Dense(width, self.dtype, name="linear2", out_dtype=jnp.float32)(f)
        f = Dropout(self.dropout)(f, deterministic=self.deterministic)
        return _layer_norm("norm2")(x + f)


class TextEncoder(nn.Module):
    """Tokens i32 [B, L] (or features f32 [B, L, F]) and text_mask bool [B, L] -> float32 [B, L, W].

    Tokens: embedding + learned positions. Features (e.g. frozen CLIP token features, which carry their
    own positions): Dense(F -> W), as MotionDiffuse's `text_pre_proj`. Then post-norm encoder layers that
    attend only to valid tokens, and a final LayerNorm.
    """

    vocab_size: int
    max_length: int
    width: int
    num_layers: int
    num_heads: int
    ff_size: int
    dropout: float
    dtype: Any

    @nn.compact
    def __call__(self, tokens, text_features, text_mask, deterministic: bool = True):
        if text_features is None:
            x = _embed(self.vocab_size, self.width, TOKEN_INIT, "token_embedding")(tokens)
            x = add_positions(
                x, _embed(self.max_length, self.width, TOKEN_INIT, "positions")(jnp.arange(tokens.shape[1]))
            )
        else:
            x = Dense(self.width, self.dtype, name="feature_proj", out_dtype=jnp.float32)(text_features)
        for i in range(self.num_layers):
            layer = TextEncoderLayer(
                self.num_heads, self.ff_size, self.dropout, deterministic, self.dtype, name=f"layers_{i}"
            )
            x = layer(x, text_mask)
        return _layer_norm("norm")(x)


class MotionTransformer(nn.Module):
    """The MotionDiffuse denoiser. Build it with `model_from_config`; `dtype` is the concrete compute dtype.

    `attention`: 'efficient' (MotionDiffuse's linear attention) or 'softmax' (standard scaled
    dot-product attention in the same blocks). `remat` recomputes each layer's activations in the
    backward pass (less memory for long sequences, ~1/3 more compute). `kernels`: 'xla' (XLA's fusions
    everywhere) or 'pallas' (on a CUDA GPU, the stylization, the linear attention's read and its
    context as Pallas kernels, motion_ddpm_jax/kernels.py: the same functions, fewer bytes moved;
    elsewhere as 'xla').

    `__call__` is the whole network. A sampler calls it hundreds of times with the same captions, so its
    parts are methods too (`model.apply(..., method=...)`), split by what they depend on:
      encode_text(tokens, text_mask)          the caption                 -> text [B, L, W]
      condition_on_text(text, text_mask)      the caption                 -> {"emb", "layers"}
      modulations(t, condition["emb"])        the caption and the step    -> every block's (scale, shift)
      denoise(x, mask, condition, modulations) the motion                  -> output [B, T, D]
    `__call__(x, t, tokens, text_mask, mask)` = denoise(x, mask, c, modulations(t, c["emb"])) with
    c = condition_on_text(encode_text(tokens, text_mask), text_mask): one code path, not a copy.
    """

    input_feats: int
    max_motion_length: int = 196
    latent_dim: int = 512
    num_layers: int = 8
    ff_size: int = 1024
    num_heads: int = 8
    dropout: float = 0.0
    text_vocab_size: int = 49408
    text_max_length: int = 77
    text_latent_dim: int = 256
    text_num_layers: int = 4
    text_num_heads: int = 4
    text_ff_size: int = 2048
    attention: str = "efficient"
    dtype: Any = jnp.float32
    remat: bool = False
    kernels: str = "xla"

    def setup(self):
        if self.kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {self.kernels!r}")
        time_width = 4 * self.latent_dim
        self.time_embed_1 = Dense(time_width, self.dtype)
        self.time_embed_2 = Dense(time_width, self.dtype, out_dtype=jnp.float32)
        self.text_encoder = _text_encoder(self)
        self.text_proj = Dense(time_width, self.dtype, out_dtype=jnp.float32)
        self.motion_positions = _embed(self.max_motion_length, self.latent_dim, MOTION_POSITION_INIT)
        self.joint_embed = Dense(self.latent_dim, self.dtype, out_dtype=jnp.float32)
        # static_argnums counts self: (self, h, mask, text_source, modulations, deterministic)
        layer_class = nn.remat(DecoderLayer, static_argnums=(5,)) if self.remat else DecoderLayer
        fields = (self.latent_dim, self.num_heads, self.ff_size, self.attention, self.dropout, self.dtype)
        layer = functools.partial(layer_class, *fields, self.text_latent_dim, kernels=self.kernels)
        self.layers = [layer() for _ in range(self.num_layers)]
        self.out = Dense(self.input_feats, self.dtype, zero_init=True, out_dtype=jnp.float32)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        tokens: jax.Array | None,
        text_mask: jax.Array,
        mask: jax.Array,
        *,
        text_features: jax.Array | None = None,
        encoded_text: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """x f32 [B, T, D] (noisy, standardized), t i32 [B], tokens i32 [B, L] or None with text_features
        f32 [B, L, F], text_mask bool [B, L] (True on real tokens), mask bool [B, T] (True on real frames)
        -> float32 [B, T, D]. Dropout (training, `deterministic=False`) draws from the 'dropout' rng.

        `encoded_text` [B, L, text_latent_dim]: the text encoder's output for these captions, computed once
        with `encode_text` (a sampler calls the model hundreds of times with the same captions); then
        `tokens` and `text_features` are ignored and may be None.
        """
        if encoded_text is None:
            encoded_text = self.encode_text(tokens, text_mask, text_features, deterministic)
        condition = self.condition_on_text(encoded_text, text_mask)
        return self.denoise(x, mask, condition, self.modulations(t, condition["emb"]), deterministic)

    def encode_text(self, tokens, text_mask, text_features=None, deterministic: bool = True) -> jax.Array:
        """The text encoder: tokens i32 [B, L] (or text_features f32 [B, L, F]) -> float32 [B, L, W]."""
        self._check_text(tokens, text_features)  # past text_max_length the position table would give NaN
        return self.text_encoder(tokens, text_features, jnp.asarray(text_mask, bool), deterministic)

    def condition_on_text(self, text: jax.Array, text_mask: jax.Array) -> dict[str, Any]:
        """What the denoiser needs from encoded captions text [B, L, W], text_mask bool [B, L]:
        {"emb": Dense(text at the last valid token) f32 [B, E] (added to the step embedding),
         "layers": per layer what its cross-attention attends to (`TemporalAttention.text_source`)}."""
        text_mask = jnp.asarray(text_mask, bool)
        last_token = jnp.maximum(jnp.sum(text_mask, axis=1) - 1, 0)  # the end-of-text token
        pooled = jnp.take_along_axis(text, last_token[:, None, None], axis=1)[:, 0]
        emb = self.text_proj(pooled)
        return {"emb": emb, "layers": tuple(layer.text_source(text, text_mask) for layer in self.layers)}

    def modulations(self, t: jax.Array, text_emb: jax.Array) -> tuple[dict[str, jax.Array], ...]:
        """Steps t i32 [N] and `condition_on_text(...)["emb"]` rows f32 [N, E] -> per layer
        {block: (scale, shift) f32 [N, 2C]}. Rows are independent: N may cover many steps at once."""
        emb = timestep_embedding(t, self.latent_dim)
        emb = self.time_embed_2(nn.silu(self.time_embed_1(emb)))
        emb = emb + text_emb  # [N, E]
        return tuple(layer.modulations(emb) for layer in self.layers)

    def denoise(self, x, mask, condition, modulations, deterministic: bool = True) -> jax.Array:
        """x f32 [B, T, D], mask bool [B, T], `condition_on_text(...)` and `modulations(...)` of B rows
        -> float32 [B, T, D]."""
        self._check_motion(x)
        mask = jnp.asarray(mask, bool)
        h = self.joint_embed(x)
        h = add_positions(h, self.motion_positions(jnp.arange(x.shape[1])))
        for layer, source, modulation in zip(self.layers, condition["layers"], modulations, strict=True):
            h = layer(h, mask, source, modulation, deterministic)
        return self.out(h)

    def _check_text(self, tokens, text_features):
        if (tokens is None) == (text_features is None):
            raise ValueError("pass exactly one of tokens [B, L] and text_features [B, L, F]")
        if tokens is not None and tokens.shape[1] > self.text_max_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed text_max_length={self.text_max_length}")
        # An id past the vocabulary reads nn.Embed's out-of-range fill, NaN: the whole sample turns NaN
        # without an error; a negative one wraps to another token's row (-1: the last). Our tokenizer never
        # makes either; ids a caller made may. Checked where the values are known here (outside jit), as
        # diffusion checks timesteps.
        ids = None if tokens is None else diffusion.concrete_values(tokens)
        if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= self.text_vocab_size):
            bad = ids[(ids < 0) | (ids >= self.text_vocab_size)]
            raise ValueError(
                f"tokens hold id {int(bad[0])}, outside the text vocabulary [0, {self.text_vocab_size}) "
                "(model.text_vocab_size, the tokenizer's vocab_size): encode captions with the tokenizer "
                "the model was trained with"
            )

    def _check_motion(self, x):
        if x.ndim != 3 or x.shape[-1] != self.input_feats:
            raise ValueError(f"x must be [B, T, {self.input_feats}], got shape {x.shape}")
        if x.shape[1] > self.max_motion_length:
            raise ValueError(
                f"{x.shape[1]} frames exceed the positional table: max_motion_length={self.max_motion_length}"
            )


def _text_encoder(model: MotionTransformer) -> TextEncoder:
    return TextEncoder(
        model.text_vocab_size,
        model.text_max_length,
        model.text_latent_dim,
        model.text_num_layers,
        model.text_num_heads,
        model.text_ff_size,
        model.dropout,
        model.dtype,
    )


def encode_text(
    model: MotionTransformer,
    params,
    tokens: jax.Array | None,
    text_mask: jax.Array,
    text_features: jax.Array | None = None,
) -> jax.Array:
    """The text encoder's output [B, L, text_latent_dim] for `model.apply(..., encoded_text=...)`."""
    return model.apply(
        {"params": params}, tokens, text_mask, text_features, method=MotionTransformer.encode_text
    )


def resolve_compute_dtype(name: str, backend: str | None = None) -> Any:
    """'auto' -> bfloat16 on GPU/TPU, float32 elsewhere (on `backend`, by default jax's default backend);
    'bfloat16' / 'float32' as named."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
    if name == "auto":
        return jnp.bfloat16 if (backend or jax.default_backend()) in ("gpu", "tpu") else jnp.float32
    return jnp.bfloat16 if name == "bfloat16" else jnp.float32


def model_from_config(
    config, *, input_feats: int | None = None, text_vocab_size: int | None = None
) -> MotionTransformer:
    """The MotionTransformer that `config.model` (and `config.data.max_motion_length`) describes.

    `model.input_feats` and `model.text_vocab_size` may be 0 in the config, meaning "taken from the data":
    then pass the motion feature count and the tokenizer's vocabulary size here. A value given here that
    disagrees with a non-zero config value is an error.
    """
    m = config.model
    if m.attention not in ATTENTION_KINDS:
        raise ValueError(f"model.attention must be one of {ATTENTION_KINDS}, got {m.attention!r}")
    dtype = resolve_compute_dtype(m.compute_dtype)
    kernels = str(m.get("kernels", "xla"))  # configs saved before the field existed: XLA's fusions
    if kernels not in KERNELS:
        raise ValueError(f"model.kernels must be one of {KERNELS}, got {kernels!r}")
    sizes = {}
    for field, given in (("input_feats", input_feats), ("text_vocab_size", text_vocab_size)):
        configured = int(m[field])
        if given is not None and configured and given != configured:
            raise ValueError(f"model.{field}={configured} in the config, but the data gives {given}")
        sizes[field] = int(given) if given is not None else configured
        if sizes[field] <= 0:
            raise ValueError(f"model.{field} is {configured} (taken from the data): pass {field}=... too")
    for heads, width in (("num_heads", "latent_dim"), ("text_num_heads", "text_latent_dim")):
        if m[width] % m[heads]:
            raise ValueError(f"model.{width}={m[width]} must be divisible by model.{heads}={m[heads]}")
    return MotionTransformer(
        input_feats=sizes["input_feats"],
        max_motion_length=config.data.max_motion_length,
        latent_dim=m.latent_dim,
        num_layers=m.num_layers,
        ff_size=m.ff_size,
        num_heads=m.num_heads,
        dropout=m.dropout,
        text_vocab_size=sizes["text_vocab_size"],
        text_max_length=m.text_max_length,
        text_latent_dim=m.text_latent_dim,
        text_num_layers=m.text_num_layers,
        text_num_heads=m.text_num_heads,
        text_ff_size=m.text_ff_size,
        attention=m.attention,
        dtype=dtype,
        remat=m.remat,
        kernels=kernels,
    )


def _dummy_inputs(model: MotionTransformer, text_feature_dim: int | None):
    """B=1, 2 frames, 2 tokens: parameter shapes depend on the fields, not on B, T or L."""
    x = jnp.zeros((1, 2, model.input_feats), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    text_mask = jnp.ones((1, 2), bool)
    mask = jnp.ones((1, 2), bool)
    if text_feature_dim is None:
        return (x, t, jnp.zeros((1, 2), jnp.int32), text_mask, mask), {}
    return (x, t, None, text_mask, mask), {"text_features": jnp.zeros((1, 2, text_feature_dim), jnp.float32)}


def init_params(model: MotionTransformer, rng: jax.Array, text_feature_dim: int | None = None):
    """Fresh float32 parameters for `model`, drawn on the host (call it outside jit): ~100M in ~3 s.

    The parameter tree comes from `jax.eval_shape(model.init)` on tiny B=1 inputs (shapes depend on the
    fields, not on B, T or L); each parameter is then sampled with numpy from the `Initializer` its module
    declares, seeded by (rng, parameter index). The values differ from `model.init(rng, ...)` but follow
    the same distributions: a jitted `model.init` compiles one XLA random-number program per parameter,
    which costs ~0.5 s each on a CPU (~15 s at full size). The text arrives as tokens unless
    `text_feature_dim` F is given (then a Dense F -> text_latent_dim replaces the embeddings).
    """
    args, kwargs = _dummy_inputs(model, text_feature_dim)
    modules = {}

    def record_module(next_fun, call_args, call_kwargs, context):
        modules[context.module.path] = context.module
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(record_module):
        shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *args, **kwargs)["params"])
    key_data = jax.random.key_data(rng) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else rng
    seed = [int(word) for word in np.asarray(key_data, np.uint32).ravel()]
    params = {}
    for index, (path, leaf) in enumerate(sorted(traverse_util.flatten_dict(shapes).items())):
        initializer = getattr(modules[path[:-1]], f"{path[-1]}_init", None)
        if not isinstance(initializer, Initializer):
            raise TypeError(f"parameter {'/'.join(path)} has no model.Initializer ({initializer!r})")
        value = initializer.sample(np.random.default_rng([*seed, index]), leaf.shape)
        params[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(params)


def param_shapes(model: MotionTransformer, text_feature_dim: int | None = None):
    """The parameters' shapes and dtypes (a pytree of jax.ShapeDtypeStruct), computing nothing."""
    args, kwargs = _dummy_inputs(model, text_feature_dim)
    return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, *args, **kwargs)["params"])
