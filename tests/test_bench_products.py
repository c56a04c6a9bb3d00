"""benchmarks/bench_products.py's parts: the products it reads from a traced program (counted against
hand counts of small programs) and the products it times alone in jax and torch (against float64 numpy
references spelled out per case)."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_products  # noqa: E402

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def products_of(fn, *args):
    return bench_products.collect_products(jax.make_jaxpr(fn)(*args))


def test_a_two_layer_gradient_does_three_times_the_forward_products():
    """Forward x W1 and h W2; backward the two kernel gradients and the two input gradients: every
    product of the forward pass twice more, each of the same size (2 M K N FLOPs)."""
    m, k, n, p = 6, 5, 4, 3
    x, w1, w2 = (jnp.ones(s) for s in ((m, k), (k, n), (n, p)))

    def loss(x, w1, w2):
        return jnp.sum(jnp.tanh(x @ w1) @ w2)

    counts, notes = products_of(jax.grad(loss, argnums=(0, 1, 2)), x, w1, w2)
    assert notes == []
    assert sum(counts.values()) == 6
    assert sum(p_.flops * c for p_, c in counts.items()) == 3 * (2 * m * k * n + 2 * m * n * p)
    # The forward products as written: [m, k] x [k, n] contracting k.
    forward = bench_products.Product((m, k), (k, n), "float32", "float32", "float32", ((1,), (0,)), ((), ()))
    assert counts[forward] == 1 and forward.sizes() == (1, m, k, n)


def test_scan_bodies_count_once_per_iteration_and_cond_its_costlier_branch():
    w = jnp.ones((4, 4))

    def scanned(x):
        return jax.lax.scan(lambda h, _: (h @ w, None), x, None, length=7)[0]

    counts, _ = products_of(scanned, jnp.ones((2, 4)))
    assert list(counts.values()) == [7]

    def branches(flag, x):
        return jax.lax.cond(flag, lambda v: (v @ w) @ w @ w, lambda v: v @ w, x)

    counts, _ = products_of(branches, True, jnp.ones((2, 4)))
    assert sum(counts.values()) == 3

    def looped(x):
        return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ w), (0, x))[1]

    counts, notes = products_of(looped, jnp.ones((2, 4)))
    assert sum(counts.values()) == 1 and len(notes) == 1 and "while" in notes[0]


def test_integer_products_are_not_matmul_work():
    counts, _ = products_of(lambda a, b: a @ b, jnp.ones((3, 3), jnp.int32), jnp.ones((3, 3), jnp.int32))
    assert not counts


# (lhs shape, rhs shape, contracting, batch, the same product as a numpy einsum)
CASES = {
    "plain": ((6, 5), (5, 4), ((1,), (0,)), ((), ()), "mk,kn->mn"),
    "lhs contracted on its rows": ((5, 6), (5, 4), ((0,), (0,)), ((), ()), "km,kn->mn"),
    "rhs contracted on its last axis": ((6, 5), (4, 5), ((1,), (1,)), ((), ()), "mk,nk->mn"),
    "batch axes not leading": ((3, 2, 5), (2, 5, 4), ((2,), (1,)), ((1,), (0,)), "sbk,bkn->bsn"),
    "two batch axes, contracted in the middle": (
        (2, 7, 3, 4),
        (2, 7, 3, 5),
        ((1,), (1,)),
        ((0, 2), (0, 2)),
        "bshd,bshe->bhde",
    ),
    "two contracted axes": ((2, 3, 4), (3, 4, 5), ((1, 2), (0, 1)), ((), ()), "mab,abn->mn"),
    "a vector": ((5,), (5, 4), ((0,), (0,)), ((), ()), "k,kn->n"),
}


def reference(product, spec):
    lhs, rhs = bench_products.operands(product)
    rounded = [
        np.asarray(jnp.asarray(x, d), np.float64)
        for x, d in ((lhs, product.lhs_dtype), (rhs, product.rhs_dtype))
    ]
    return np.einsum(spec, *rounded)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(CASES))
def test_products_timed_alone_compute_the_product_they_stand_for(case, dtype):
    lhs_shape, rhs_shape, contracting, batch, spec = CASES[case]
    product = bench_products.Product(lhs_shape, rhs_shape, dtype, dtype, "float32", contracting, batch)
    expected = reference(product, spec)
    b, m, k, n = product.sizes()
    assert product.flops == 2 * expected.size * k and b * m * n == expected.size
    _, result = bench_products.jax_product(product)
    got = result()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    if HAVE_TORCH:
        import torch

        call, result = bench_products.torch_product(product, torch.device("cpu"))
        call()
        got = result()
        # torch returns the operands' dtype: bf16 rounds the result (8 bits of mantissa).
        tolerance = 1e-5 if dtype == "float32" else 8e-3
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance * np.abs(expected).max())


def test_mixed_operand_dtypes_are_timed_in_torch_in_the_narrower():
    product = bench_products.Product((4, 3), (3, 2), "float32", "bfloat16", "float32", ((1,), (0,)), ((), ()))
    assert product.torch_dtype == "bfloat16"
    assert product.describe() == "[4, 3]·(1) f32 x [3, 2]·(0) bf16 -> f32"
    _, result = bench_products.jax_product(product)
    np.testing.assert_allclose(result(), reference(product, "mk,kn->mn"), rtol=1e-5, atol=1e-5)


def test_a_timed_call_launches_the_product_as_often_as_asked(monkeypatch):
    """On an accelerator one call launches the product --launches times and waits once (main divides)."""
    product = bench_products.Product((4, 3), (3, 2), "float32", "float32", "float32", ((1,), (0,)), ((), ()))
    launched = []
    real_jit = bench_products.jax.jit

    def counting_jit(function):
        compiled = real_jit(function)

        class Lowered:
            def compile(self):
                def run(*operands):
                    launched.append("jax")
                    return compiled(*operands)

                return run

        return type("Jitted", (), {"lower": lambda self, *operands: Lowered()})()

    monkeypatch.setattr(bench_products.jax, "jit", counting_jit)
    call, _ = bench_products.jax_product(product, launches=5)
    call()
    assert launched == ["jax"] * 5
    if HAVE_TORCH:
        import torch

        real_matmul = torch.matmul
        monkeypatch.setattr(torch, "matmul", lambda a, b: launched.append("torch") or real_matmul(a, b))
        call, _ = bench_products.torch_product(product, torch.device("cpu"), launches=3)
        call()
        assert launched == ["jax"] * 5 + ["torch"] * 3


def test_launches_are_one_on_a_cpu_unless_asked():
    assert bench_products.parse_args([]).launches == 0  # automatic: 1 here, ACCELERATOR_LAUNCHES on a card
    with pytest.raises(SystemExit):
        bench_products.parse_args(["--launches", "-1"])
