"""Gradients checked against central differences of a float64 numpy reference (shared by the tests of
written-out backward passes)."""

import jax
import jax.numpy as jnp
import numpy as np


def standardize64(rows):
    """LayerNorm standardization of the last axis in float64 (eps 1e-5)."""
    centered = rows - rows.mean(axis=-1, keepdims=True)
    return centered / np.sqrt((centered**2).mean(axis=-1, keepdims=True) + 1e-5)


def checked_against_central_differences(function, reference, args, cotangent, step=1e-6):
    """`function` (jax, float32) against `reference` (numpy, float64) at `args`: its value, and its
    vector-Jacobian product for `cotangent` against central differences of the reference, argument by
    argument, element by element."""
    value, vjp = jax.vjp(function, *(jnp.asarray(a, jnp.float32) for a in args))
    grads = vjp(jnp.asarray(cotangent, jnp.float32))
    np.testing.assert_allclose(
        np.asarray(value), reference(*args), atol=2e-5 * np.abs(reference(*args)).max()
    )
    for position, (arg, grad) in enumerate(zip(args, grads, strict=True)):
        expected = np.zeros_like(arg)
        for index in np.ndindex(*arg.shape):
            shifted = [list(args), list(args)]
            for sign, values in zip((1, -1), shifted, strict=True):
                values[position] = arg.copy()
                values[position][index] += sign * step
            difference = reference(*shifted[0]) - reference(*shifted[1])
            expected[index] = np.sum(cotangent * difference) / (2 * step)
        np.testing.assert_allclose(np.asarray(grad), expected, atol=1e-5 * np.abs(expected).max())
