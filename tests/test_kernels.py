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
