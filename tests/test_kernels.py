"""motion_ddpm_jax.kernels: the Pallas backward of the stylization's modulated SiLU, run by Pallas's
interpreter on the CPU, against float64 central differences and the model's own spelling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from central_differences import checked_against_central_differences, standardize64

from motion_ddpm_jax import kernels
from motion_ddpm_jax import model as model_lib


def _modulated_silu64(h, multiplier, offset):
    pre = standardize64(h) * multiplier[:, None, :] + offset[:, None, :]
    return pre / (1.0 + np.exp(-pre))


def _inputs(seed, batch, frames, channels):
    rng = np.random.default_rng(seed)
    # rows with a large mean against their spread, where a careless LayerNorm backward loses digits
    h = rng.normal(size=(batch, frames, channels)) * 2.0 + rng.normal(size=(batch, frames, 1)) * 5.0
    return h, rng.normal(size=(batch, channels)), rng.normal(size=(batch, channels)), rng.normal(size=h.shape)


# frames: under one tile, exactly one, three with a ragged last; heads: h's layout (1: [B, T, C] itself);
# rows: frames per program (bench_variants' style=pallas-rows8 / -rows32)
@pytest.mark.parametrize(
    "frames, heads, rows", [(5, 1, 16), (16, 2, 16), (37, 4, 16), (37, 2, 8), (37, 1, 32)]
)
def test_the_kernel_backward_has_the_float64_gradient(frames, heads, rows, monkeypatch):
    monkeypatch.setattr(kernels, "ROWS_PER_PROGRAM", rows)
    h, multiplier, offset, g = _inputs(frames, 2, frames, 16)
    fused = jax.jit(lambda h, m, o: kernels.modulated_silu(h, m, o, jnp.float32, heads, True))
    checked_against_central_differences(fused, _modulated_silu64, [h, multiplier, offset], g)


def test_bfloat16_h_gets_a_bfloat16_gradient_equal_to_the_models_to_its_rounding():
    """h and the cotangent in bfloat16 (the attention blocks' stylization on a GPU): dh comes back in
    bfloat16 and equals the model's spelling (autodiff of its float32 function) to bf16's rounding; the
    modulation's gradients, float32, to float32's."""
    h, multiplier, offset, g = _inputs(7, 3, 21, 32)
    h16, g16 = jnp.asarray(h, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)
    m, o = jnp.asarray(multiplier, jnp.float32), jnp.asarray(offset, jnp.float32)

    def through(function):
        value, vjp = jax.vjp(function, h16, m, o)
        return value, vjp(g16)

    fused_value, fused = through(lambda h, m, o: kernels.modulated_silu(h, m, o, jnp.bfloat16, 8, True))
    model_value, model = through(lambda h, m, o: model_lib.modulated_silu(h, m, o, jnp.bfloat16))
    assert fused_value.dtype == jnp.bfloat16 and fused[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(fused_value, np.float32), np.asarray(model_value, np.float32), atol=0.02
    )
    scale = float(jnp.max(jnp.abs(model[0].astype(jnp.float32))))
    np.testing.assert_allclose(
        np.asarray(fused[0], np.float32), np.asarray(model[0], np.float32), atol=2**-7 * scale
    )
    for ours, theirs in zip(fused[1:], model[1:], strict=True):
        np.testing.assert_allclose(
            np.asarray(ours), np.asarray(theirs), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(theirs)))
        )


def test_fused_available_only_for_power_of_two_channels():
    assert kernels.fused_available(jnp.zeros((2, 196, 512)))
    assert kernels.fused_available(jnp.zeros((1, 3, 16)))
    assert not kernels.fused_available(jnp.zeros((2, 196, 263)))  # Triton tiles: powers of two
    assert not kernels.fused_available(jnp.zeros((196, 512)))  # [B, T, C] only
    assert not kernels.fused_available(jnp.zeros((2, 4, 8192)))
    assert kernels.fused_available(jnp.zeros((2, 196, 512)), heads=8)
    assert not kernels.fused_available(jnp.zeros((2, 196, 512)), heads=3)  # 512 / 3 is no width
    assert not kernels.fused_available(jnp.zeros((2, 196, 384)), heads=6)  # 6 heads of 64: not a power


def _stylized_read64(q, context, multiplier, offset, bias):
    """float64 numpy: per head, softmax(q + bias) over its features read through the context, then the
    stylization's SiLU(standardize(read) * multiplier + offset) over all features."""
    batch, frames, channels = q.shape
    heads, width = context.shape[1], context.shape[2]
    split = (q + bias).reshape(batch, frames, heads, width)
    weights = np.exp(split - split.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    read = np.einsum("bthd,bhde->bthe", weights, context).reshape(q.shape)
    return _modulated_silu64(read, multiplier, offset)


def _read_inputs(seed, batch, frames, heads, width):
    rng = np.random.default_rng(seed)
    channels = heads * width
    q = rng.normal(size=(batch, frames, channels)) * 1.5
    # a context whose reads have a mean large against their spread (the LayerNorm's hard case)
    context = rng.normal(size=(batch, heads, width, width)) * 0.5 + 2.0
    modulation = rng.normal(size=(batch, channels)), rng.normal(size=(batch, channels))
    return q, context, *modulation, rng.normal(size=channels), rng.normal(size=q.shape)


# frames: under one tile, exactly one, three with a ragged last; rows: frames per program (8: the read
# kernels take 16, a Triton product's fewest)
@pytest.mark.parametrize(
    "frames, heads, rows", [(5, 1, 16), (16, 2, 16), (37, 4, 16), (37, 2, 32), (21, 2, 8)]
)
def test_the_read_kernels_have_the_float64_gradient(frames, heads, rows, monkeypatch):
    """kernels.stylized_read (forward kernel, two backward kernels) interpreted, float32: its value and
    the gradients of q, its bias, the context and the modulation against central differences in
    float64."""
    monkeypatch.setattr(kernels, "ROWS_PER_PROGRAM", rows)
    *inputs, g = _read_inputs(frames + heads, 2, frames, heads, 16)
    fused = jax.jit(lambda q, c, m, o, b: kernels.stylized_read(q, c, m, o, jnp.float32, True, b))
    checked_against_central_differences(fused, _stylized_read64, inputs, g)


def test_the_read_kernels_without_a_bias_read_q_itself():
    """q_bias None: the kernels' value and gradients are the reference's of q alone."""
    q, context, multiplier, offset, _, g = _read_inputs(5, 2, 9, 2, 16)
    args = [jnp.asarray(x, jnp.float32) for x in (q, context, multiplier, offset)]
    value, vjp = jax.vjp(lambda *a: kernels.stylized_read(*a, jnp.float32, True), *args)
    expected, expected_vjp = jax.vjp(kernels.stylized_read_reference, *args)
    np.testing.assert_allclose(np.asarray(value), np.asarray(expected), atol=1e-5)
    cotangent = jnp.asarray(g, jnp.float32)
    for ours, theirs in zip(vjp(cotangent), expected_vjp(cotangent), strict=True):
        np.testing.assert_allclose(
            np.asarray(ours), np.asarray(theirs), atol=1e-4 * float(jnp.max(jnp.abs(theirs)))
        )


def test_the_read_kernels_in_bfloat16_equal_the_models_spelling_to_its_rounding():
    """q, its bias and the context in bfloat16 (the attention blocks on a GPU): the kernels' output and
    dq, d context, d bias come back in bfloat16 and equal the model's spelling (`model.stylized_read`:
    the bias, the read, then modulated_silu, under autodiff) to bf16's rounding; the modulation's
    gradients to float32's."""
    q, context, multiplier, offset, bias, g = _read_inputs(11, 3, 21, 2, 16)
    q16, context16, bias16, g16 = (jnp.asarray(x, jnp.bfloat16) for x in (q, context, bias, g))
    m, o = jnp.asarray(multiplier, jnp.float32), jnp.asarray(offset, jnp.float32)

    def through(function):
        value, vjp = jax.vjp(function, q16, context16, m, o, bias16)
        return value, vjp(g16)

    fused_value, fused = through(
        lambda q, c, m, o, b: kernels.stylized_read(q, c, m, o, jnp.bfloat16, True, b)
    )
    model_value, model = through(
        lambda q, c, m, o, b: model_lib.stylized_read(q, c, m, o, jnp.bfloat16, 2, b)
    )
    assert fused_value.dtype == fused[0].dtype == fused[1].dtype == fused[4].dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(fused_value, np.float32), np.asarray(model_value, np.float32), atol=0.02
    )
    for ours, theirs in zip(fused, model, strict=True):
        scale = float(jnp.max(jnp.abs(theirs.astype(jnp.float32))))
        tolerance = 2**-6 * scale if theirs.dtype == jnp.bfloat16 else 1e-3 * scale
        np.testing.assert_allclose(
            np.asarray(ours, np.float32), np.asarray(theirs, np.float32), atol=tolerance
        )


def test_read_fused_available_for_power_of_two_heads_of_at_least_16():
    q = jnp.zeros((2, 196, 512))
    assert kernels.read_fused_available(q, jnp.zeros((2, 8, 64, 64)), 8)
    assert kernels.read_fused_available(jnp.zeros((1, 3, 16)), jnp.zeros((1, 1, 16, 16)), 1)
    assert not kernels.read_fused_available(q, jnp.zeros((2, 8, 64, 64)), 4)  # heads as given
    assert not kernels.read_fused_available(q, jnp.zeros((2, 512, 512)), 8)  # one [C, C] context
    assert not kernels.read_fused_available(q, jnp.zeros((2, 64, 8, 8)), 64)  # heads of 8: too narrow
    assert not kernels.read_fused_available(jnp.zeros((2, 196, 384)), jnp.zeros((2, 6, 64, 64)), 6)
    assert not kernels.read_fused_available(q, jnp.zeros((3, 8, 64, 64)), 8)  # another batch


def _context64(kv, bias, mask, heads):
    """float64 numpy: per head, the keys (kv's first half, plus its bias) softmaxed over the valid
    positions, times the values (the second half): [B, heads, H, H]; 0 where a sample has no valid key."""
    batch, frames, channels = kv.shape
    split = (kv + bias).reshape(batch, frames, 2, heads, channels // (2 * heads))
    k, v = split[:, :, 0], split[:, :, 1]
    keep = mask[:, :, None, None]
    peak = np.where(keep, k, -np.inf).max(axis=1, keepdims=True)
    weights = np.where(keep, np.exp(k - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    total = weights.sum(axis=1)[..., None]  # [B, heads, H, 1]
    return np.einsum("bshd,bshe->bhde", weights, v) / np.where(total > 0, total, 1.0)


def _context_inputs(seed, batch, frames, heads, width):
    rng = np.random.default_rng(seed)
    kv = rng.normal(size=(batch, frames, 2 * heads * width)) * 1.5
    mask = np.ones((batch, frames), bool)
    mask[0, frames // 2 :] = False  # a sample's last frames are padding
    if batch > 2:
        mask[2] = False  # a sample with no valid key: its context is 0
    g = rng.normal(size=(batch, heads, width, width))
    return kv, rng.normal(size=2 * heads * width), mask, g


# frames: under one tile, exactly one, three with a ragged last; rows: positions per tile
@pytest.mark.parametrize(
    "frames, heads, rows", [(5, 1, 16), (16, 2, 16), (37, 2, 16), (37, 1, 32), (21, 2, 8)]
)
def test_the_context_kernels_have_the_float64_gradient(frames, heads, rows, monkeypatch):
    """kernels.key_value_context (forward and backward kernel) interpreted, float32: the context and
    the gradients of kv and its bias against central differences in float64, with padded positions and
    a sample whose keys are all masked."""
    monkeypatch.setattr(kernels, "ROWS_PER_PROGRAM", rows)
    kv, bias, mask, g = _context_inputs(frames + heads, 3, frames, heads, 16)
    fused = jax.jit(lambda kv, b: kernels.key_value_context(kv, mask, heads, True, b))
    checked_against_central_differences(fused, lambda kv, b: _context64(kv, b, mask, heads), [kv, bias], g)


def test_the_context_kernels_without_a_bias_read_kv_itself():
    kv, _, mask, g = _context_inputs(3, 2, 19, 2, 16)
    kv32 = jnp.asarray(kv, jnp.float32)
    value, vjp = jax.vjp(lambda kv: kernels.key_value_context(kv, mask, 2, True), kv32)
    expected, expected_vjp = jax.vjp(lambda kv: kernels.key_value_context_reference(kv, mask, 2), kv32)
    np.testing.assert_allclose(np.asarray(value), np.asarray(expected), atol=1e-5)
    (ours,), (theirs,) = vjp(jnp.asarray(g, jnp.float32)), expected_vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_allclose(
        np.asarray(ours), np.asarray(theirs), atol=1e-5 * float(jnp.max(jnp.abs(theirs)))
    )


def test_the_context_kernels_in_bfloat16_equal_the_models_spelling_to_its_rounding():
    """kv, its bias and the cotangent in bfloat16 (the attention blocks on a GPU): the context, d kv and
    d bias come back in bfloat16 and equal the model's spelling (the bias added as `model.dense` adds
    it, then `model.linear_attention_context`, under autodiff) to bf16's rounding."""
    kv, bias, mask, g = _context_inputs(13, 3, 29, 2, 16)
    kv16, bias16, g16 = (jnp.asarray(x, jnp.bfloat16) for x in (kv, bias, g))

    def through(function):
        value, vjp = jax.vjp(function, kv16, bias16)
        return value, vjp(g16)

    fused_value, fused = through(lambda kv, b: kernels.key_value_context(kv, mask, 2, True, b))
    model_value, model = through(lambda kv, b: kernels.key_value_context_reference(kv, mask, 2, b))
    assert fused_value.dtype == fused[0].dtype == fused[1].dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(model_value.astype(jnp.float32))))
    np.testing.assert_allclose(
        np.asarray(fused_value, np.float32), np.asarray(model_value, np.float32), atol=2**-7 * scale
    )
    for ours, theirs in zip(fused, model, strict=True):
        scale = float(jnp.max(jnp.abs(theirs.astype(jnp.float32))))
        np.testing.assert_allclose(
            np.asarray(ours, np.float32), np.asarray(theirs, np.float32), atol=2**-6 * scale
        )


def test_context_fused_available_for_heads_of_at_least_16_as_powers_of_two():
    kv, mask = jnp.zeros((2, 196, 1024)), jnp.ones((2, 196), bool)
    assert kernels.context_fused_available(kv, mask, 8)
    assert kernels.context_fused_available(jnp.zeros((1, 3, 32)), jnp.ones((1, 3), bool), 1)
    assert kernels.context_fused_available(kv, mask, 4)  # heads of 128
    assert not kernels.context_fused_available(kv, mask, 64)  # heads of 8: too narrow
    assert not kernels.context_fused_available(kv, mask, 3)  # 1024 / 6 is no width
    assert not kernels.context_fused_available(jnp.zeros((2, 196, 768)), mask, 4)  # heads of 96
    assert not kernels.context_fused_available(kv, jnp.ones((2, 195), bool), 8)  # another length
    assert not kernels.context_fused_available(jnp.zeros((196, 1024)), mask, 8)  # [B, S, 2C] only
