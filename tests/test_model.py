"""MotionTransformer: shapes, zero init, masking, float64 numpy references of its blocks, sizes, precision."""

import functools
import math
import re
from contextlib import nullcontext
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jaxpr_walk import equations

from motion_ddpm_jax import model as model_lib
from motion_ddpm_jax.config import base_config

B, T, L, D = 3, 12, 8, 7
SMALL = dict(
    input_feats=D,
    max_motion_length=16,
    latent_dim=32,
    num_layers=2,
    ff_size=64,
    num_heads=4,
    text_vocab_size=50,
    text_max_length=L,
    text_latent_dim=16,
    text_num_layers=1,
    text_num_heads=4,
    text_ff_size=32,
)
KINDS = ("efficient", "softmax")


def small_model(**overrides) -> model_lib.MotionTransformer:
    return model_lib.MotionTransformer(**{**SMALL, **overrides})


def make_batch(seed=0):
    """Noisy motion, steps, tokens with prefix text masks (lengths 8, 5, 2) and a random frame mask."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    t = np.array([0, 17, 999], np.int32)
    tokens = rng.integers(1, SMALL["text_vocab_size"], (B, L)).astype(np.int32)
    text_mask = np.arange(L)[None] < np.array([L, 5, 2])[:, None]
    tokens[~text_mask] = 0
    mask = rng.random((B, T)) < 0.6
    mask[:, 0] = True
    mask[0] = True
    return x, t, tokens, text_mask, mask


@functools.cache
def forward(model):
    return jax.jit(lambda params, *inputs: model.apply({"params": params}, *inputs))


@functools.cache
def params_of(model, perturb=True):
    """init_params, with every leaf moved by N(0, 0.1^2) when `perturb` (so no block is zero)."""
    params = model_lib.init_params(model, jax.random.key(0))
    if not perturb:
        return params
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32), params)


# ---------------------------------------------------------------- float64 numpy references


def ref_softmax(z, axis):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def ref_efficient_attention(q, k, v, key_mask, num_heads):
    """Head by head, batch by batch: softmax(q) over features, softmax(k) over positions, k^T v."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, frames, width = q.shape
    size = width // num_heads
    out = np.zeros((batch, frames, width))
    for b in range(batch):
        valid = np.asarray(key_mask[b])
        for h in range(num_heads):
            cols = slice(h * size, (h + 1) * size)
            qh = ref_softmax(q[b, :, cols], axis=-1)
            kh = ref_softmax(np.where(valid[:, None], k[b, :, cols], -1e6), axis=0)
            vh = v[b, :, cols] * valid[:, None]
            out[b, :, cols] = qh @ (kh.T @ vh)
    return out


def ref_softmax_attention(q, k, v, key_mask, num_heads):
    """Scaled dot-product attention over the valid keys; a row with none attends to nothing (0)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, frames, width = q.shape
    size = width // num_heads
    out = np.zeros((batch, frames, width))
    for b in range(batch):
        valid = np.asarray(key_mask[b])
        for h in range(num_heads if valid.any() else 0):
            cols = slice(h * size, (h + 1) * size)
            logits = q[b, :, cols] @ k[b, :, cols].T / math.sqrt(size)
            weights = ref_softmax(np.where(valid[None, :], logits, -np.inf), axis=-1)
            out[b, :, cols] = weights @ v[b, :, cols]
    return out


def ref_dense(p, x):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def ref_layer_norm(p, x, eps=1e-5):
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return x * np.asarray(p["scale"], np.float64) + np.asarray(p["bias"], np.float64)


def ref_silu(x):
    return x / (1 + np.exp(-x))


def ref_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def ref_stylization(p, h, emb):
    scale, shift = np.split(ref_dense(p["emb"], ref_silu(emb))[:, None, :], 2, axis=-1)
    return ref_dense(p["out"], ref_silu(ref_layer_norm(p["norm"], h) * (1 + scale) + shift))


def ref_block(kind, p, h, emb, mask, text, text_mask, num_heads):
    if kind == "ffn":
        return h + ref_stylization(
            p["style"], ref_dense(p["linear2"], ref_gelu(ref_dense(p["linear1"], h))), emb
        )
    x, text = ref_layer_norm(p["norm"], h), np.asarray(text, np.float64)
    source, source_mask = (x, mask) if kind == "self" else (ref_layer_norm(p["text_norm"], text), text_mask)
    y = ref_efficient_attention(
        ref_dense(p["query"], x),
        ref_dense(p["key"], source),
        ref_dense(p["value"], source),
        source_mask,
        num_heads,
    )
    return h + ref_stylization(p["style"], y, emb)


# ---------------------------------------------------------------- the network


def test_output_is_float32_and_exactly_zero_at_init():
    model = small_model()
    out = forward(model)(params_of(model, perturb=False), *make_batch())
    assert out.shape == (B, T, D) and out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_perturbed_output_is_nonzero_and_finite():
    model = small_model()
    out = np.asarray(forward(model)(params_of(model), *make_batch()))
    assert np.all(np.isfinite(out)) and np.all(np.abs(out).max(axis=-1) > 1e-3)


@pytest.mark.parametrize("attention", KINDS)
def test_padded_frames_do_not_change_the_output_at_valid_frames(attention):
    model = small_model(attention=attention)
    x, t, tokens, text_mask, mask = make_batch()
    changed = np.where(mask[..., None], x, 100.0 * np.random.default_rng(5).standard_normal(x.shape))
    before = np.asarray(forward(model)(params_of(model), x, t, tokens, text_mask, mask))
    after = np.asarray(
        forward(model)(params_of(model), changed.astype(np.float32), t, tokens, text_mask, mask)
    )
    np.testing.assert_allclose(after[mask], before[mask], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[~mask], before[~mask])  # the padded frames themselves did change


@pytest.mark.parametrize("attention", KINDS)
def test_padded_tokens_do_not_change_the_output(attention):
    model = small_model(attention=attention)
    x, t, tokens, text_mask, mask = make_batch()
    changed = np.where(text_mask, tokens, 49).astype(np.int32)
    before = forward(model)(params_of(model), x, t, tokens, text_mask, mask)
    after = forward(model)(params_of(model), x, t, changed, text_mask, mask)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))


def test_the_pooled_text_feature_is_the_last_valid_token():
    """No text layers (per-token features) and no cross-attention values: only the pooled token remains."""
    model = small_model(text_num_layers=0)
    params = jax.tree.map(lambda a: a, params_of(model))
    for i in range(model.num_layers):
        value = params[f"layers_{i}"]["cross_attention"]["value"]
        value.update(kernel=jnp.zeros_like(value["kernel"]), bias=jnp.zeros_like(value["bias"]))
    x, t, tokens, text_mask, mask = make_batch()
    run = functools.partial(forward(model), params, x, t)
    before = np.asarray(run(tokens, text_mask, mask))
    last = text_mask.sum(1) - 1
    for position in range(L):
        changed = tokens.copy()
        changed[:, position] = (changed[:, position] + 1) % SMALL["text_vocab_size"]
        after = np.asarray(run(changed, text_mask, mask))
        for b in range(B):
            differs = not np.allclose(after[b], before[b], rtol=0, atol=1e-6)
            assert differs == (position == last[b]), (b, position)


@pytest.mark.parametrize("bad", [SMALL["text_vocab_size"], -1])
def test_a_token_id_outside_the_vocabulary_is_refused_rather_than_sampled_as_nan(bad):
    """nn.Embed reads an id past the vocabulary as a row of NaN: every output of that caption's sample
    turned NaN without an error; -1 read the last token's row, silently another caption (ids of a
    caller's own making; our tokenizer never makes one). Where the
    ids are known (outside jit) they are refused, naming the id and the vocabulary; the largest id in
    range still gives a finite output."""
    model = small_model(num_layers=1)
    params = params_of(model)
    x, t, tokens, text_mask, mask = make_batch()
    tokens[1, 2] = SMALL["text_vocab_size"] - 1
    assert np.isfinite(np.asarray(model.apply({"params": params}, x, t, tokens, text_mask, mask))).all()
    tokens[1, 2] = bad
    said = rf"tokens hold id {bad}, outside the text vocabulary \[0, {SMALL['text_vocab_size']}\)"
    with pytest.raises(ValueError, match=said):
        model.apply({"params": params}, x, t, tokens, text_mask, mask)
    with pytest.raises(ValueError, match=said):
        model_lib.encode_text(model, params, jnp.asarray(tokens), text_mask)


def test_text_features_replace_the_token_embedding():
    model = small_model(num_layers=1, text_num_layers=0)
    params = params_of(model, perturb=False)
    feature_params = model_lib.init_params(model, jax.random.key(0), text_feature_dim=12)
    assert "token_embedding" in params["text_encoder"] and "feature_proj" not in params["text_encoder"]
    assert set(feature_params["text_encoder"]) == set(params["text_encoder"]) - {
        "token_embedding",
        "positions",
    } | {"feature_proj"}
    assert feature_params["text_encoder"]["feature_proj"]["kernel"].shape == (12, SMALL["text_latent_dim"])
    x, t, _, text_mask, mask = make_batch()
    features = np.random.default_rng(3).standard_normal((B, L, 12)).astype(np.float32)
    run = jax.jit(lambda p, f: model.apply({"params": p}, x, t, None, text_mask, mask, text_features=f))
    np.testing.assert_array_equal(np.asarray(run(feature_params, features)), 0.0)
    moved = jax.tree.map(lambda a: a + 0.1, feature_params)
    out = np.asarray(run(moved, features))
    assert out.shape == (B, T, D) and np.all(np.isfinite(out)) and np.abs(out).max() > 1e-3
    padded = np.where(text_mask[..., None], features, 7.0).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(run(moved, padded)), out)
    with pytest.raises(ValueError, match="exactly one of tokens"):
        model.apply({"params": moved}, x, t, make_batch()[2], text_mask, mask, text_features=features)


def test_inputs_longer_than_the_tables_are_rejected():
    model = small_model()
    x, t, tokens, text_mask, mask = make_batch()
    long_x = np.zeros((B, SMALL["max_motion_length"] + 1, D), np.float32)
    with pytest.raises(ValueError, match="max_motion_length=16"):
        model.apply(
            {"params": params_of(model)}, long_x, t, tokens, text_mask, np.ones(long_x.shape[:2], bool)
        )
    with pytest.raises(ValueError, match=r"x must be \[B, T, 7\]"):
        model.apply({"params": params_of(model)}, x[..., :5], t, tokens, text_mask, mask)
    long_tokens = np.ones((B, SMALL["text_max_length"] + 1), np.int32)
    long_mask = np.ones(long_tokens.shape, bool)
    with pytest.raises(ValueError, match=f"exceed text_max_length={SMALL['text_max_length']}"):
        model.apply({"params": params_of(model)}, x, t, long_tokens, long_mask, mask)
    # The text encoder alone (what a sampler calls once) checks too: it gave NaN rows past the table.
    with pytest.raises(ValueError, match=f"exceed text_max_length={SMALL['text_max_length']}"):
        model_lib.encode_text(model, params_of(model), long_tokens, long_mask)


# ---------------------------------------------------------------- blocks against float64 numpy


def test_an_unknown_attention_kind_is_refused_on_every_path():
    model = small_model(attention="linear", num_layers=1, text_num_layers=0)
    params = params_of(small_model(num_layers=1, text_num_layers=0))
    x, t, tokens, text_mask, mask = make_batch()
    with pytest.raises(ValueError, match="attention must be one of"):
        model.apply({"params": params}, x, t, tokens, text_mask, mask)
    text = jnp.zeros((B, L, SMALL["text_latent_dim"]))
    with pytest.raises(ValueError, match="attention must be one of"):
        model.apply({"params": params}, text, text_mask, method=model_lib.MotionTransformer.condition_on_text)


def test_timestep_embedding_is_cos_then_sin():
    t = np.array([0, 1, 17, 999])
    dim = 10
    freqs = np.exp(-np.log(10000.0) * np.arange(5) / 5)
    expected = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(np.asarray(model_lib.timestep_embedding(t, dim)), expected, atol=2e-4)
    odd = np.asarray(model_lib.timestep_embedding(t, 11))
    np.testing.assert_allclose(odd[:, :10], expected, atol=2e-4)
    np.testing.assert_array_equal(odd[:, 10], 0.0)


@pytest.mark.parametrize("attention", KINDS)
def test_attention_matches_a_float64_reference(attention):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, 5, 12)).astype(np.float32)
    k, v = (3 * rng.standard_normal((3, 7, 12)).astype(np.float32) for _ in range(2))
    key_mask = np.array([[1, 1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]], bool)
    function = {"efficient": model_lib.efficient_attention, "softmax": model_lib.softmax_attention}[attention]
    reference = {"efficient": ref_efficient_attention, "softmax": ref_softmax_attention}[attention]
    out = function(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(key_mask), 3)
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, key_mask, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out[2]), 0.0)  # no valid key: attends to nothing


@pytest.mark.parametrize("spelling", ["this backend", "gpu"])
@pytest.mark.parametrize("block", ["self", "cross", "ffn"])
def test_one_layer_block_matches_a_float64_reference(block, spelling):
    """Each sub-block of a DecoderLayer, run alone with the perturbed parameters of layer 0; also as
    traced for a GPU (`jax.default_backend` answering "gpu": the spellings the model picks off the CPU,
    e.g. the query's bias added apart from its product, `_norm_then_product`)."""
    with mock.patch.object(jax, "default_backend", lambda: "gpu") if spelling == "gpu" else nullcontext():
        _one_layer_block_matches_a_float64_reference(block)


def _one_layer_block_matches_a_float64_reference(block):
    model = small_model()
    layer = params_of(model)["layers_0"]
    rng = np.random.default_rng(2)
    h = rng.standard_normal((B, T, SMALL["latent_dim"])).astype(np.float32)
    emb = rng.standard_normal((B, 4 * SMALL["latent_dim"])).astype(np.float32)
    text = rng.standard_normal((B, L, SMALL["text_latent_dim"])).astype(np.float32)
    _, _, _, text_mask, mask = make_batch()
    common = dict(dropout=0.0, dtype=jnp.float32)
    if block == "ffn":
        module = model_lib.FeedForward(SMALL["latent_dim"], SMALL["ff_size"], **common)
        params = layer["ffn"]
        run = lambda m: m(h, m.modulation(emb))  # noqa: E731
    else:
        width = SMALL["text_latent_dim"] if block == "cross" else 0
        module = model_lib.TemporalAttention(
            SMALL["latent_dim"], SMALL["num_heads"], "efficient", **common, context_width=width
        )
        params = layer["self_attention" if block == "self" else "cross_attention"]
        source = (lambda m: m.text_source(text, text_mask)) if block == "cross" else (lambda m: None)
        run = lambda m: m(h, mask, m.modulation(emb), source(m))  # noqa: E731
    out = module.apply({"params": params}, method=run)
    expected = ref_block(block, params, *(a.astype(np.float64) for a in (h, emb)), mask, text, text_mask, 4)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def ref_layer(p, h, emb, mask, text, text_mask, num_heads):
    h = ref_block("self", p["self_attention"], h, emb, mask, text, text_mask, num_heads)
    h = ref_block("cross", p["cross_attention"], h, emb, mask, text, text_mask, num_heads)
    return ref_block("ffn", p["ffn"], h, emb, mask, text, text_mask, num_heads)


def ref_text_encoder(p, tokens, text_mask, num_layers, num_heads):
    """Token embedding + positions, post-norm encoder layers over the valid tokens, final LayerNorm."""
    x = np.asarray(p["token_embedding"]["embedding"], np.float64)[tokens]
    x = x + np.asarray(p["positions"]["embedding"], np.float64)[: tokens.shape[1]]
    for i in range(num_layers):
        q = p[f"layers_{i}"]
        attended = ref_softmax_attention(
            ref_dense(q["query"], x), ref_dense(q["key"], x), ref_dense(q["value"], x), text_mask, num_heads
        )
        x = ref_layer_norm(q["norm1"], x + ref_dense(q["attention_out"], attended))
        x = ref_layer_norm(q["norm2"], x + ref_dense(q["linear2"], ref_gelu(ref_dense(q["linear1"], x))))
    return ref_layer_norm(p["norm"], x)


def ref_network(model, p, x, t, tokens, text_mask, mask):
    """The whole MotionTransformer in float64, as ../shared/REFERENCE.md describes MotionDiffuse: the
    caption's end token (its last valid one) through text_proj added to MLP(cos/sin(t)), Dense(x) plus
    the position table, the layers' three blocks, the output Dense."""
    text = ref_text_encoder(p["text_encoder"], tokens, text_mask, model.text_num_layers, model.text_num_heads)
    pooled = text[np.arange(len(tokens)), text_mask.sum(1) - 1]
    half = model.latent_dim // 2
    angles = np.asarray(t, np.float64)[:, None] * np.exp(-math.log(10000.0) * np.arange(half) / half)
    steps = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
    emb = ref_dense(p["time_embed_2"], ref_silu(ref_dense(p["time_embed_1"], steps)))
    emb = emb + ref_dense(p["text_proj"], pooled)
    h = ref_dense(p["joint_embed"], np.asarray(x, np.float64))
    h = h + np.asarray(p["motion_positions"]["embedding"], np.float64)[: x.shape[1]]
    attend = {"efficient": ref_efficient_attention, "softmax": ref_softmax_attention}[model.attention]
    for i in range(model.num_layers):
        layer = p[f"layers_{i}"]
        blocks = (("self_attention", None, mask), ("cross_attention", text, text_mask))
        for name, source, source_mask in blocks:
            q = layer[name]
            normed = ref_layer_norm(q["norm"], h)
            source = normed if source is None else ref_layer_norm(q["text_norm"], source)
            y = attend(
                ref_dense(q["query"], normed),
                ref_dense(q["key"], source),
                ref_dense(q["value"], source),
                source_mask,
                model.num_heads,
            )
            h = h + ref_stylization(q["style"], y, emb)
        h = ref_block("ffn", layer["ffn"], h, emb, mask, text, text_mask, model.num_heads)
    return ref_dense(p["out"], h)


@pytest.mark.parametrize("overrides", [{}, {"attention": "softmax"}, {"remat": True}])
def test_the_whole_network_matches_a_float64_reference(overrides):
    """The blocks composed: text encoder, pooling, step embedding, positions and layers at once, against
    float64 numpy (the block tests above check each part alone; this one, how they are wired)."""
    model = small_model(**overrides)
    params = params_of(model)
    x, t, tokens, text_mask, mask = make_batch()
    out = np.asarray(forward(model)(params, x, t, tokens, text_mask, mask))
    expected = ref_network(model, jax.tree.map(np.asarray, params), x, t, tokens, text_mask, mask)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-4, atol=1e-4)


def test_layer_gradients_match_float64_finite_differences():
    """The gradient of our float32 layer (as jit compiles it for this backend) of sum(layer(...) * R),
    against central differences of the float64 numpy reference: one random direction per parameter and
    per input, so each leaf's gradient is checked on its own. One sample has no valid caption token (the
    key softmax of that row is empty), padded frames are present."""
    model = small_model()
    params = jax.tree.map(np.asarray, params_of(model)["layers_0"])
    rng = np.random.default_rng(3)
    h = rng.standard_normal((B, T, SMALL["latent_dim"]))
    emb = rng.standard_normal((B, 4 * SMALL["latent_dim"]))
    text = rng.standard_normal((B, L, SMALL["text_latent_dim"]))
    _, _, _, text_mask, mask = make_batch()
    text_mask = text_mask.copy()
    text_mask[2] = False
    weights = rng.standard_normal((B, T, SMALL["latent_dim"]))
    layer = model_lib.DecoderLayer(
        SMALL["latent_dim"],
        SMALL["num_heads"],
        SMALL["ff_size"],
        "efficient",
        0.0,
        jnp.float32,
        SMALL["text_latent_dim"],
    )
    point = {"params": params, "h": h, "emb": emb, "text": text}

    def loss32(x):
        def run(m):
            return m(x["h"], mask, m.text_source(x["text"], text_mask), m.modulations(x["emb"]))

        out = layer.apply({"params": x["params"]}, method=run)
        return jnp.sum(out * weights.astype(np.float32))

    def loss64(x):
        out = ref_layer(x["params"], x["h"], x["emb"], mask, x["text"], text_mask, SMALL["num_heads"])
        return float(np.sum(out * weights))

    grads = jax.jit(jax.grad(loss32))(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), point))
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(point)[0]]
    leaves, treedef = jax.tree.flatten(point)
    grad_leaves = [np.asarray(g, np.float64) for g in jax.tree.leaves(grads)]
    scale = max(np.abs(g).max() for g in grad_leaves)
    eps = 1e-5
    for i, (leaf, grad) in enumerate(zip(leaves, grad_leaves, strict=True)):
        direction = rng.standard_normal(leaf.shape)

        def moved(step, i=i, direction=direction):
            shifted = [a + step * direction if j == i else a for j, a in enumerate(leaves)]
            return jax.tree.unflatten(treedef, shifted)

        numeric = (loss64(moved(eps)) - loss64(moved(-eps))) / (2 * eps)
        analytic = float(np.sum(grad * direction))
        tolerance = 1e-4 * abs(numeric) + 1e-6 * scale * np.sqrt(leaf.size)
        assert abs(analytic - numeric) <= tolerance, (paths[i], analytic, numeric)


# ---------------------------------------------------------------- size, init, precision, gradients


def analytic_parameter_count(
    D, latent, layers, ff, vocab, text_width, text_layers, text_ff, text_length, frames, text_feature_dim=None
):
    """Counted from the architecture: Dense = in*out + out, LayerNorm = 2*width."""
    dense = lambda i, o: i * o + o  # noqa: E731
    E = 4 * latent
    time = dense(latent, E) + dense(E, E)
    if text_feature_dim is None:
        text_input = vocab * text_width + text_length * text_width
    else:
        text_input = dense(text_feature_dim, text_width)
    text_layer = 4 * dense(text_width, text_width) + dense(text_width, text_ff) + dense(text_ff, text_width)
    text = (
        text_input + text_layers * (text_layer + 2 * 2 * text_width) + 2 * text_width + dense(text_width, E)
    )
    style = dense(E, 2 * latent) + 2 * latent + dense(latent, latent)
    self_attention = 2 * latent + 3 * dense(latent, latent) + style
    cross_attention = (
        2 * latent + 2 * text_width + dense(latent, latent) + 2 * dense(text_width, latent) + style
    )
    ffn = dense(latent, ff) + dense(ff, latent) + style
    motion = dense(D, latent) + frames * latent + layers * (self_attention + cross_attention + ffn)
    return time + text + motion + dense(latent, D)


def test_parameter_count_at_the_motiondiffuse_size():
    sizes = dict(latent=512, layers=8, ff=1024, text_width=256, text_layers=4, text_ff=2048, text_length=77)
    model = model_lib.MotionTransformer(
        input_feats=263, max_motion_length=196, text_vocab_size=49408, text_max_length=77
    )
    count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree))  # noqa: E731
    tokens = count(model_lib.param_shapes(model))
    clip = count(model_lib.param_shapes(model, text_feature_dim=512))
    print(f"\nMotionTransformer, HumanML3D size: {tokens:,} parameters with a 49408-token embedding; "
          f"{clip:,} with 512-wide CLIP features (MotionDiffuse: 87.2M)")  # fmt: skip
    assert tokens == analytic_parameter_count(263, vocab=49408, frames=196, **sizes)
    assert clip == analytic_parameter_count(263, vocab=0, frames=196, text_feature_dim=512, **sizes)
    assert round(clip / 1e6, 1) == 87.2


def test_init_params_builds_every_parameter_from_its_initializer():
    model = small_model(remat=True)
    params = model_lib.init_params(model, jax.random.key(0))
    shapes = model_lib.param_shapes(model)
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    for value, shape in zip(jax.tree.leaves(params), jax.tree.leaves(shapes), strict=True):
        assert value.shape == shape.shape and value.dtype == shape.dtype == jnp.float32
    layer = params["layers_1"]
    np.testing.assert_array_equal(np.asarray(layer["ffn"]["linear2"]["kernel"]), 0.0)  # zero-initialised
    np.testing.assert_array_equal(np.asarray(layer["ffn"]["style"]["norm"]["scale"]), 1.0)
    bound = 1 / math.sqrt(SMALL["latent_dim"])
    query = np.asarray(layer["self_attention"]["query"]["kernel"])
    assert np.abs(query).max() <= bound and query.std() > 0.8 * bound / math.sqrt(3)
    positions = np.asarray(params["motion_positions"]["embedding"])
    assert 0.8 < positions.std() < 1.2  # N(0, 1), as MotionDiffuse's sequence embedding
    again = model_lib.init_params(model, jax.random.key(0))
    other = model_lib.init_params(model, jax.random.key(1))
    kernel = lambda p, i: np.asarray(p[f"layers_{i}"]["self_attention"]["query"]["kernel"])  # noqa: E731
    np.testing.assert_array_equal(kernel(again, 0), kernel(params, 0))
    assert not np.array_equal(kernel(other, 0), kernel(params, 0))
    assert not np.array_equal(kernel(params, 1), kernel(params, 0))


@pytest.mark.parametrize("kind, std", [("fan_in_uniform", 1 / math.sqrt(3 * 256)), ("normal", 0.02)])
def test_host_and_jax_initializers_draw_the_same_distribution(kind, std):
    initializer = model_lib.Initializer(kind, std=0.02)
    host = initializer.sample(np.random.default_rng(0), (256, 512))
    device = np.asarray(initializer(jax.random.key(0), (256, 512)))
    for sample in (host, device):
        assert sample.dtype == np.float32
        assert abs(sample.mean()) < 0.01 * std and abs(sample.std() / std - 1) < 0.01
    if kind == "fan_in_uniform":
        assert np.abs(host).max() <= 1 / 16 and np.abs(device).max() <= 1 / 16


def test_an_initializer_of_an_unknown_kind_is_refused():
    """A misspelt kind had fallen through to fan_in_uniform: Initializer("zero") drew weights."""
    with pytest.raises(ValueError, match=r"'zero'; expected one of \('zeros'"):
        model_lib.Initializer("zero")


def test_bfloat16_compute_keeps_float32_parameters_and_output():
    model = small_model(text_num_layers=0)
    bf16 = small_model(text_num_layers=0, dtype=jnp.bfloat16)
    params = params_of(model)
    assert {leaf.dtype for leaf in jax.tree.leaves(model_lib.param_shapes(bf16))} == {jnp.dtype(jnp.float32)}
    reference = np.asarray(forward(model)(params, *make_batch()))
    out = forward(bf16)(params, *make_batch())
    assert out.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(out)))
    error = np.abs(np.asarray(out) - reference).max()
    assert 0 < error < 0.05 * np.abs(reference).max(), (error, np.abs(reference).max())


@pytest.mark.parametrize("attention, text_layers", [("efficient", 1), ("softmax", 0)])
def test_gradients_are_finite(attention, text_layers):
    """One motion layer; the text encoder (the same for both kinds) is differentiated once."""
    model = small_model(attention=attention, num_layers=1, text_num_layers=text_layers)
    batch = make_batch()

    def loss(params):
        out = model.apply({"params": params}, *batch)
        return jnp.mean(jnp.where(batch[-1][..., None], out, 0.0) ** 2)

    grads = jax.tree.map(np.asarray, jax.jit(jax.grad(loss))(params_of(model)))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert all(np.any(g != 0) for g in jax.tree.leaves(grads["layers_0"]))
    text_grad = grads["text_encoder"]["token_embedding"]["embedding"]
    np.testing.assert_array_equal(text_grad[0], 0.0)  # the padding id is only at padded positions


def test_dropout_draws_from_the_dropout_rng():
    model = small_model(dropout=0.5, num_layers=1, text_num_layers=0)
    params, batch = params_of(model), make_batch()
    run = jax.jit(
        lambda key: model.apply({"params": params}, *batch, deterministic=False, rngs={"dropout": key})
    )
    first, second = np.asarray(run(jax.random.key(0))), np.asarray(run(jax.random.key(1)))
    assert np.all(np.isfinite(first)) and not np.allclose(first, second)
    np.testing.assert_array_equal(np.asarray(run(jax.random.key(0))), first)


@pytest.mark.parametrize("rate", [0.1, 1 / 3, 0.5, 0.9])
def test_dropout_draws_the_masks_of_flax_nn_dropout_and_the_same_under_x64(rate):
    """model.Dropout stands in for flax's nn.Dropout only to draw its mask in float32 under jax_enable_x64.
    Without x64 it must draw nn.Dropout's masks (the same key, from the name flax gives it, auto or
    attribute, and the same comparison): a flax release that changed nn.Dropout's draw or naming would
    otherwise give runs from the same seed other masks on one version than on another, unnoticed."""

    def masks(dropout_class):
        class Three(nn.Module):
            def setup(self):
                self.drop = dropout_class(rate)

            @nn.compact
            def __call__(self, x):
                auto = [dropout_class(rate)(x, deterministic=False) for _ in range(2)]
                return np.asarray(jnp.stack([*auto, self.drop(x, deterministic=False)]))

        x = jnp.ones((2, 30, 40), jnp.float32)
        return Three().apply({}, x, rngs={"dropout": jax.random.key(3)})

    expected = masks(nn.Dropout)
    assert not np.array_equal(expected[0], expected[1])  # two modules, two keys
    np.testing.assert_array_equal(masks(model_lib.Dropout), expected)
    with jax.enable_x64(True):
        np.testing.assert_array_equal(masks(model_lib.Dropout), expected)
    # The whole model, in training mode, as it would run with nn.Dropout in each place.
    model = small_model(dropout=rate, num_layers=2, text_num_layers=1)
    params, batch = params_of(model), make_batch()

    def train_mode_output():
        rngs = {"dropout": jax.random.key(4)}
        return np.asarray(model.apply({"params": params}, *batch, deterministic=False, rngs=rngs))

    ours = train_mode_output()
    with mock.patch.object(model_lib, "Dropout", nn.Dropout):
        np.testing.assert_array_equal(train_mode_output(), ours)


# ---------------------------------------------------------------- model_from_config


def small_config(**model_fields):
    config = base_config()
    config.data.max_motion_length = 16
    config.model.update(
        {k: v for k, v in SMALL.items() if k not in ("input_feats", "max_motion_length", "text_vocab_size")}
    )
    config.model.update(model_fields)
    return config


def test_model_from_config_resolves_auto_to_float32_on_cpu():
    model = model_lib.model_from_config(small_config(), input_feats=D, text_vocab_size=50)
    assert model == small_model()  # float32, efficient attention, sizes from the config
    assert model_lib.model_from_config(small_config(compute_dtype="bfloat16"), input_feats=D,
                                       text_vocab_size=50).dtype == jnp.bfloat16  # fmt: skip
    fixed = small_config(input_feats=D, text_vocab_size=50)
    assert model_lib.model_from_config(fixed) == small_model()


@pytest.mark.parametrize(
    "fields, kwargs, message",
    [
        (dict(attention="linear"), {}, r"model.attention must be one of \('efficient', 'softmax'\)"),
        (
            dict(compute_dtype="fp16"),
            {},
            r"model.compute_dtype must be one of \('auto', 'bfloat16', 'float32'\)",
        ),
        (dict(num_heads=5), {}, "model.latent_dim=32 must be divisible by model.num_heads=5"),
        (dict(), dict(input_feats=None), r"model.input_feats is 0 \(taken from the data\)"),
        (dict(input_feats=9), {}, "model.input_feats=9 in the config, but the data gives 7"),
    ],
)
def test_model_from_config_rejects_bad_fields(fields, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model_lib.model_from_config(
            small_config(**fields), **{"input_feats": D, "text_vocab_size": 50, **kwargs}
        )


def test_encoded_text_path_equals_tokens_path():
    """A sampler encodes the captions once: the model given encode_text's output equals the token path."""
    m = model_lib.MotionTransformer(
        input_feats=6,
        max_motion_length=8,
        latent_dim=16,
        num_layers=1,
        ff_size=32,
        num_heads=2,
        text_vocab_size=20,
        text_max_length=5,
        text_latent_dim=8,
        text_num_layers=1,
        text_num_heads=2,
        text_ff_size=16,
    )
    params = model_lib.init_params(m, jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32), params)
    x = jnp.asarray(rng.standard_normal((2, 8, 6)), jnp.float32)
    t = jnp.array([1, 5])
    tokens = jnp.array([[1, 7, 2, 0, 0], [1, 9, 9, 2, 0]])
    text_mask, mask = tokens > 0, jnp.arange(8)[None] < jnp.array([[8], [5]])
    direct = m.apply({"params": params}, x, t, tokens, text_mask, mask)
    encoded = model_lib.encode_text(m, params, tokens, text_mask)
    assert encoded.shape == (2, 5, 8)
    hoisted = m.apply({"params": params}, x, t, None, text_mask, mask, encoded_text=encoded)
    assert float(jnp.abs(direct).max()) > 0.1  # the perturbed zero-init output is not trivially 0
    np.testing.assert_allclose(np.asarray(hoisted), np.asarray(direct), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the Dense layers' product


def _dot_generals(jaxpr) -> list:
    """Every dot_general equation of a traced program, sub-jaxprs (custom_vjp, pjit) included."""
    return [eqn for eqn in equations(jaxpr) if eqn.primitive.name == "dot_general"]


def _dense_and_gradients(dtype, x, kernel, bias, cotangent, out_dtype=None):
    """model.dense(x, kernel, bias) in `dtype` (bias float32, as the parameter is) and the VJP of
    `cotangent` through it, as float64 numpy."""
    out, vjp = jax.vjp(
        lambda a, w, b: model_lib.dense(a, w, b, dtype, out_dtype),
        jnp.asarray(x, dtype),
        jnp.asarray(kernel, dtype),
        jnp.asarray(bias, jnp.float32),
    )
    grads = vjp(jnp.asarray(cotangent, out.dtype))
    return [np.asarray(v, np.float64) for v in (out, *grads)]


def test_dense_computes_the_affine_map_and_its_gradients_in_float32():
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.standard_normal((2, 3, 5, 24)), rng.standard_normal((24, 7)), rng.standard_normal(7)
    cotangent = rng.standard_normal((2, 3, 5, 7))
    out, dx, dkernel, dbias = _dense_and_gradients(jnp.float32, x, kernel, bias, cotangent)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731  the inputs as the test gives them
    x, kernel, bias, cotangent = f32(x), f32(kernel), f32(bias), f32(cotangent)
    np.testing.assert_allclose(out, np.einsum("abck,kn->abcn", x, kernel) + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, np.einsum("abcn,kn->abck", cotangent, kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dkernel, np.einsum("abck,abcn->kn", x, cotangent), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dbias, cotangent.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)


def test_dense_module_is_nn_dense():
    """Same parameter names and shapes, same function (float32) as flax's nn.Dense."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5, 6)), jnp.float32)
    ours, flax_dense = model_lib.Dense(4, jnp.float32), nn.Dense(4)
    params = flax_dense.init(jax.random.key(0), x)
    shapes = jax.eval_shape(ours.init, jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, shapes)
    params = jax.tree.map(lambda p: p + 0.5, params)  # a nonzero bias
    np.testing.assert_allclose(ours.apply(params, x), flax_dense.apply(params, x), rtol=1e-6, atol=1e-6)


def test_dense_kernel_gradients_are_single_axis_products():
    """What makes the CPU step fast: from a [B, T, K] input, every product of a Dense layer's forward and
    backward pass (the kernel's gradient included) is a 2-D product with one contracting axis."""
    model = small_model(text_num_layers=0, num_layers=1)
    params, batch = params_of(model), make_batch()
    loss = lambda p: jnp.sum(model.apply({"params": p}, *batch) ** 2)  # noqa: E731
    dots = _dot_generals(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    # no batch axes, two matrices (a folded LayerNorm's bias, shift [C] @ kernel, has a vector)
    dense_dots = [
        eqn
        for eqn in dots
        if not eqn.params["dimension_numbers"][1][0] and min(v.aval.ndim for v in eqn.invars) == 2
    ]
    assert len(dense_dots) >= 3 * 8, len(dense_dots)  # forward + 2 gradients of >= 8 kernels
    for eqn in dense_dots:
        (lhs_contract, rhs_contract), _ = eqn.params["dimension_numbers"]
        assert [v.aval.ndim for v in eqn.invars] == [2, 2], eqn
        assert len(lhs_contract) == len(rhs_contract) == 1, eqn


def _round(a: np.ndarray, dtype) -> np.ndarray:
    return np.asarray(jnp.asarray(a, dtype), np.float64)


def _bf16(a: np.ndarray) -> np.ndarray:
    return _round(a, jnp.bfloat16)


def _assert_bf16_rounding_of(value, exact):
    """`value` is `exact` rounded to bfloat16 (8 significant bits): within half a bf16 step plus the
    float32 accumulation's own error, far below what accumulating in bf16 would give at this length."""
    assert value.shape == exact.shape
    np.testing.assert_array_less(np.abs(value - exact), 2.0**-8 * np.abs(exact) + 1e-3)


@pytest.mark.parametrize(
    "shape", [(64, 24), (48, 6), (40, 10), (30, 8), (15, 4), (2, 3, 30, 8), (2, 3, 15, 4)], ids=str
)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_rows_last_is_the_transpose(shape, dtype):
    """The kernel gradient's transposed copy of x, in each of its spellings (blocks of 32, 16 and 8
    rows; two halves; odd; stacks of matrices; 2- and 4-byte elements), is exactly x^T."""
    x = np.random.default_rng(7).standard_normal(shape)
    got = jax.jit(model_lib._rows_last)(jnp.asarray(x, dtype))
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(got, np.float64), np.swapaxes(_round(x, dtype), -1, -2))


@pytest.mark.parametrize("rows", [16, 15])
def test_low_precision_affine_accumulates_in_float32_forward_and_backward(rows):
    """bf16 operands, K = 2048: the result and the three gradients are the exact (float64) values from
    the bf16 operands, rounded once; the backward pass takes its cotangent in bf16 (as autocast does)
    and the bias gradient sums it in float32. 16 and 15 rows: the kernel gradient's transposed copy of x
    is then built in blocks, and left to XLA."""
    rng = np.random.default_rng(2)
    x, kernel = _bf16(rng.random((rows, 2048))), _bf16(rng.random((2048, 24)))
    bias, cotangent = rng.standard_normal(24).astype(np.float32).astype(np.float64), rng.random((rows, 24))
    out, dx, dkernel, dbias = _dense_and_gradients(jnp.bfloat16, x[None], kernel, bias, cotangent[None])
    cotangent = _bf16(cotangent)
    _assert_bf16_rounding_of(out[0], x @ kernel + bias)
    _assert_bf16_rounding_of(dx[0], cotangent @ kernel.T)
    _assert_bf16_rounding_of(dkernel, x.T @ cotangent)
    np.testing.assert_allclose(dbias, cotangent.sum(axis=0), rtol=1e-6)  # float32, not bf16, rounding
    # a bf16 running sum of 2048 positive terms of ~0.25 stalls far below the true ~512
    assert np.all(out > 0.9 * (x @ kernel + bias))


@pytest.mark.parametrize("rows", [512, 511])
def test_low_precision_batched_products_accumulate_in_float32_forward_and_backward(rows):
    """The attention's per-head products in bf16 (stacks [2, 3] of matrices): `low_precision_matmul`
    a @ b and both gradients are the exact (float64) products of the bf16 operands and the bf16-rounded
    cotangent, rounded once to their dtype. The contracted length (512 or 511 rows) is where a bf16
    accumulation would drift; an odd one takes the transpose XLA folds."""
    rng = np.random.default_rng(5)
    a = _bf16(rng.random((2, 3, 8, rows)))
    b = _bf16(rng.random((2, 3, rows, 6)))
    out, vjp = jax.vjp(
        lambda x, y: model_lib.low_precision_matmul(x, y, jnp.float32),
        jnp.asarray(a, jnp.bfloat16),
        b.astype(jnp.bfloat16),
    )
    cotangent = rng.random(out.shape)
    da, db = (np.asarray(g, np.float64) for g in vjp(jnp.asarray(cotangent, jnp.float32)))
    g = _bf16(cotangent)
    swap = lambda m: np.swapaxes(m, -1, -2)  # noqa: E731
    exact, exact_da, exact_db = a @ b, g @ swap(b), swap(a) @ g
    np.testing.assert_allclose(np.asarray(out, np.float64), exact, rtol=1e-5)  # float32 out: not rounded
    _assert_bf16_rounding_of(da, exact_da)
    _assert_bf16_rounding_of(db, exact_db)
    assert da.dtype == db.dtype == np.float64 and out.dtype == jnp.float32


def test_bfloat16_attention_products_on_the_cpu_take_the_fast_form():
    """On the CPU, every product of the bf16 linear attention, forward and backward, takes bf16 operands,
    gives a float32 result and contracts its left operand along its last axis (what XLA:CPU runs at the
    bf16 rate); and the attention still matches its float64 reference to bf16 precision."""
    if jax.default_backend() != "cpu":
        pytest.skip("the bf16 products are XLA's own on other backends")
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 6, 16)) for _ in range(3))
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    loss = lambda *a: jnp.sum(jnp.sin(model_lib.efficient_attention(*a, mask, 2).astype(jnp.float32)))  # noqa: E731
    args = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    dots = _dot_generals(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(*args).jaxpr)
    assert len(dots) == 6  # context and read, forward and two gradients each
    for eqn in dots:
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
        assert tuple(lhs_contract) == (eqn.invars[0].aval.ndim - 1,), eqn
    got = np.asarray(model_lib.efficient_attention(*args, mask, 2), np.float64)
    expected = ref_efficient_attention(*(_bf16(a) for a in (q, k, v)), mask, 2)
    np.testing.assert_allclose(got, expected, atol=3e-2)


def _compiled_dot_operand_dtypes(compiled_text: str) -> list[tuple[str, str]]:
    """The operand dtypes of every dot in a compiled XLA program's text (fused computations included)."""
    defined = dict(re.findall(r"%([\w.-]+) = (\w+)\[", compiled_text))
    operands = re.findall(r" dot\(%([\w.-]+), %([\w.-]+)\)", compiled_text)
    return [(defined[lhs], defined[rhs]) for lhs, rhs in operands]


@pytest.mark.parametrize("length", [196, 12])
def test_compiled_bfloat16_attention_products_keep_bfloat16_operands(length):
    """What XLA:CPU compiles from the bf16 linear attention, evaluated (the read with either softmax
    spelling) and differentiated: every product still takes bf16 operands. XLA converts both operands
    of a product to float32 where one is a transpose it can fold into the product (the heads split),
    which `model._stacked` prevents; before it, 5 of the 6 products here were float32."""
    if jax.default_backend() != "cpu":
        pytest.skip("the bf16 products are XLA's own on other backends")
    rng = np.random.default_rng(8)
    q, k, v = (jnp.asarray(rng.standard_normal((8, length, 64)), jnp.bfloat16) for _ in range(3))
    mask = jnp.asarray(rng.random((8, length)) < 0.8)
    forward = lambda q, k, v: model_lib.efficient_attention(q, k, v, mask, 4)  # noqa: E731
    loss = lambda *a: jnp.sum(jnp.sin(forward(*a).astype(jnp.float32)))  # noqa: E731
    for function in (forward, jax.grad(loss, argnums=(0, 1, 2))):
        dtypes = _compiled_dot_operand_dtypes(jax.jit(function).lower(q, k, v).compile().as_text())
        assert dtypes and set(dtypes) == {("bf16", "bf16")}, dtypes


def test_a_float32_result_of_a_bfloat16_dense_is_not_rounded_to_bfloat16():
    rng = np.random.default_rng(4)
    x, kernel, bias = _bf16(rng.standard_normal((6, 64))), _bf16(rng.standard_normal((64, 9))), np.zeros(9)
    out, *_ = _dense_and_gradients(jnp.bfloat16, x, kernel, bias, np.ones((6, 9)), out_dtype=jnp.float32)
    np.testing.assert_allclose(out, x @ kernel, rtol=1e-5, atol=1e-5)  # bf16 rounding would be ~4e-3
    assert np.abs(out - _bf16(x @ kernel)).max() > 1e-3  # ... as the test's own check of its scale


def test_bfloat16_products_on_the_cpu_accumulate_in_float32_in_both_passes():
    """On the CPU, a Dense product in bf16 and both its gradient products take bf16 operands and give a
    float32 result: the only form XLA:CPU runs at the bf16 rate (AMX / AVX512-BF16)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the bf16 product is XLA's own on other backends")
    x, kernel, bias = jnp.ones((2, 3, 8)), jnp.ones((8, 4)), jnp.ones(4)
    loss = lambda *a: jnp.sum(model_lib.dense(*a, jnp.bfloat16).astype(jnp.float32))  # noqa: E731
    dots = _dot_generals(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(x, kernel, bias).jaxpr)
    assert len(dots) == 3
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2, eqn
        assert eqn.outvars[0].aval.dtype == jnp.float32, eqn


def _standardized64(x: np.ndarray, epsilon: float = 1e-5) -> np.ndarray:
    centered = x - x.mean(axis=-1, keepdims=True)
    return centered / np.sqrt(np.mean(centered**2, axis=-1, keepdims=True) + epsilon)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gelu_and_its_gradient_match_float64(dtype):
    """GELU in `dtype` is the float64 value to float32 precision (bf16: one rounding of it); its
    hand-written gradient is the float64 chain rule g * (Phi(x) + x phi(x)) to the same precision, and
    that derivative agrees with central differences of the float64 function. Absolute 1e-6: where
    1 + erf(x) cancels (x < -5), float32 leaves ~1e-7 of a ~1e-8 value."""
    x64 = np.linspace(-6.0, 6.0, 2001)
    x64 = _round(x64, dtype)  # exactly representable inputs
    cotangent = _round(np.random.default_rng(12).standard_normal(x64.shape), dtype)
    value, vjp = jax.vjp(model_lib.gelu, jnp.asarray(x64, dtype))
    (grad,) = vjp(jnp.asarray(cotangent, dtype))
    assert value.dtype == grad.dtype == jnp.dtype(dtype)
    slope = 0.5 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2))) + x64 * np.exp(-0.5 * x64**2) / math.sqrt(
        2 * math.pi
    )
    h = 1e-6
    np.testing.assert_allclose(slope, (ref_gelu(x64 + h) - ref_gelu(x64 - h)) / (2 * h), atol=1e-8)
    rtol = {"float32": 1e-6, "bfloat16": 2**-8}[dtype]  # bf16: a relative half-ulp is 2^-9
    for got, exact in ((value, ref_gelu(x64)), (grad, cotangent * slope)):
        np.testing.assert_allclose(np.asarray(got, np.float64), exact, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 5, 32])
def test_add_positions_and_its_gradients_match_float64(batch):
    """x + positions broadcast over the batch; the positions' gradient is the cotangent summed over the
    batch (float64 reference, float32 rounding of a sum of `batch` terms), x's the cotangent itself,
    under jit and for batch sizes whose halving leaves odd remainders (5 -> 2 + 1 -> ...)."""
    rng = np.random.default_rng(batch)
    x, positions, cotangent = (rng.standard_normal(shape) for shape in ((batch, 7, 3), (7, 3), (batch, 7, 3)))
    value, vjp = jax.jit(lambda x, p: jax.vjp(model_lib.add_positions, x, p))(
        jnp.asarray(x, jnp.float32), jnp.asarray(positions, jnp.float32)
    )
    dx, dpositions = jax.jit(vjp)(jnp.asarray(cotangent, jnp.float32))
    assert dpositions.shape == positions.shape and dpositions.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(value, np.float64), x + positions, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx, np.float64), cotangent, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dpositions, np.float64), cotangent.sum(0), rtol=1e-5, atol=1e-5)


def test_add_positions_refuses_mixed_dtypes_and_shapes_without_one_batch_axis():
    with pytest.raises(TypeError, match="x is bfloat16 but positions are float32"):
        model_lib.add_positions(jnp.zeros((2, 3, 4), jnp.bfloat16), jnp.zeros((3, 4), jnp.float32))
    for shape in ((3, 4), (2, 2, 3, 4), (2, 5, 4)):
        with pytest.raises(ValueError, match=r"must be \[batch, \*positions.shape\]"):
            model_lib.add_positions(jnp.zeros(shape), jnp.zeros((3, 4)))


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_softmax_features_and_its_gradient_match_float64(scale):
    """The read's query softmax over the last axis: its value is the float64 softmax to float32 rounding
    (logits up to +-30 x 4 sigma, where exp would overflow without the max shift), and its written-out
    gradient y (g - sum(g y)) is the float64 Jacobian-vector product, which central differences of the
    float64 softmax confirm; the backward pass keeps the output alone (one residual)."""
    rng = np.random.default_rng(5)
    x64 = scale * rng.standard_normal((3, 2, 7, 16))
    x64 = np.asarray(np.float32(x64), np.float64)
    cotangent = rng.standard_normal(x64.shape)

    def softmax64(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    y64 = softmax64(x64)
    value, vjp = jax.vjp(model_lib.softmax_features, jnp.asarray(x64, jnp.float32))
    (grad,) = vjp(jnp.asarray(cotangent, jnp.float32))
    jacobian_product = y64 * (cotangent - np.sum(cotangent * y64, axis=-1, keepdims=True))
    h = 1e-6
    for index in [(0, 0, 0, 0), (2, 1, 6, 15), (1, 0, 3, 7)]:
        plus, minus = np.copy(x64), np.copy(x64)
        plus[index] += h
        minus[index] -= h
        numeric = np.sum(cotangent * (softmax64(plus) - softmax64(minus))) / (2 * h)
        assert abs(jacobian_product[index] - numeric) < 1e-6 * max(1.0, abs(numeric))
    np.testing.assert_allclose(np.asarray(value, np.float64), y64, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad, np.float64), jacobian_product, rtol=0, atol=2e-6)
    residuals = jax.tree.leaves(jax.vjp(model_lib.softmax_features, jnp.asarray(x64, jnp.float32))[1])
    assert [r.shape for r in residuals if hasattr(r, "shape")] == [x64.shape]


@pytest.mark.parametrize("offset", [0.0, 3.0, 10.0])
def test_standardize_matches_float64_evaluated_and_differentiated(offset):
    """LayerNorm's standardization: evaluated (one pass for both statistics) and under differentiation
    (two passes) it is the float64 value to float32 rounding, for rows whose mean is 0, 3 and 10 times
    their spread; its gradient is the float64 one: the chain rule through the float64 standardization,
    checked against central differences of it."""
    rng = np.random.default_rng(11)
    x = offset + rng.standard_normal((6, 512))
    cotangent = rng.standard_normal((6, 512))
    expected = _standardized64(x)
    evaluated = jax.jit(model_lib._standardize)(jnp.asarray(x, jnp.float32))
    value, vjp = jax.vjp(model_lib._standardize, jnp.asarray(x, jnp.float32))
    tolerance = 1e-6 * (1 + offset**2)  # one pass: var's error grows with mean^2
    np.testing.assert_allclose(np.asarray(evaluated, np.float64), expected, atol=tolerance, rtol=0)
    np.testing.assert_allclose(np.asarray(value, np.float64), expected, atol=2e-6, rtol=0)
    z, r = expected, 1 / np.sqrt(np.var(x, axis=-1, keepdims=True) + 1e-5)
    projection = z * np.mean(cotangent * z, -1, keepdims=True)
    gradient = r * (cotangent - cotangent.mean(-1, keepdims=True) - projection)
    (got,) = vjp(jnp.asarray(cotangent, jnp.float32))
    np.testing.assert_allclose(np.asarray(got, np.float64), gradient, atol=1e-5, rtol=0)
    step, row, column = 1e-5, 2, 7
    plus, minus = x.copy(), x.copy()
    plus[row, column] += step
    minus[row, column] -= step
    numeric = np.sum(cotangent * (_standardized64(plus) - _standardized64(minus))) / (2 * step)
    assert abs(gradient[row, column] - numeric) < 1e-6


@pytest.mark.parametrize("dtype, bits", [("float32", np.uint32), ("bfloat16", np.uint16)])
def test_apart_from_products_returns_every_value_bit_for_bit(dtype, bits):
    """The op that keeps the LayerNorm backward out of the products' fusion is the identity, compiled
    and eager: every bit pattern (random ones: normals, subnormals, both zeros, infinities, the largest
    values) comes back unchanged, and a NaN stays a NaN."""
    rng = np.random.default_rng(21)
    width = np.dtype(bits).itemsize * 8
    patterns = rng.integers(0, 2**width, size=20000, dtype=np.uint64).astype(bits)
    top = {np.uint32: (0x7F800000, 0x007FFFFF), np.uint16: (0x7F80, 0x007F)}[bits]  # exponent, mantissa
    specials = [0, top[0], top[1], 1, top[0] - 1, top[0] | 1 << (width - 1), 1 << (width - 1)]
    patterns = np.concatenate(
        [patterns, np.asarray(specials, bits), np.asarray(specials, bits) | (1 << (width - 1))]
    )
    values = jnp.asarray(patterns.view(jnp.dtype(dtype)))
    is_nan = np.isnan(np.asarray(values, np.float32))
    assert is_nan.any() and (~is_nan).sum() > 10000
    for apart in (model_lib._apart_from_products, jax.jit(model_lib._apart_from_products)):
        out = np.asarray(apart(values))
        assert out.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(out.view(bits)[~is_nan], patterns[~is_nan])
        assert np.isnan(np.asarray(out, np.float32)[is_nan]).all()


def test_layer_norm_backward_keeps_its_split_from_the_products_when_compiled():
    """On the CPU the standardization's cotangent passes through a reduce-precision that XLA's optimiser
    keeps in the compiled gradient (were it folded away, the LayerNorm backward would fuse into the
    products again: no error, only a slower train step); other backends compile no such op."""
    x = jnp.ones((4, 64), jnp.float32)
    kernel = jnp.ones((64, 64), jnp.bfloat16)

    def loss(x):
        z = model_lib._standardize(x)
        return jnp.sum(model_lib.dense(z, kernel, jnp.zeros(64), jnp.bfloat16).astype(jnp.float32))

    text = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    assert ("reduce-precision" in text) == (jax.default_backend() == "cpu")


def test_standardize_is_one_pass_evaluated_and_two_passes_differentiated():
    """Evaluated, the statistics are reductions of x and of x^2 (one pass over x); under
    differentiation the variance reduces the square of the centred x (x - mean)."""

    def reduced_inputs(jaxpr):
        """For each reduce_sum: its input's producer, and for a square, the square's input's producer."""
        producers = {out: eqn for eqn in equations(jaxpr) for out in eqn.outvars}

        def name(var):
            return producers[var].primitive.name if var in producers else "input"

        chains = []
        for eqn in equations(jaxpr):
            if eqn.primitive.name == "reduce_sum":
                first = name(eqn.invars[0])
                second = name(producers[eqn.invars[0]].invars[0]) if first == "square" else ""
                chains.append(f"{first}({second})" if second else first)
        return sorted(chains)

    x = jnp.ones((4, 16), jnp.float32)
    evaluated = reduced_inputs(jax.make_jaxpr(model_lib._standardize)(x))
    differentiated = reduced_inputs(jax.make_jaxpr(lambda x: jax.vjp(model_lib._standardize, x)[0])(x))
    assert evaluated == ["input", "square(input)"], evaluated
    assert differentiated == ["input", "square(sub)"], differentiated


@pytest.mark.parametrize("frames", [512, 5])
def test_attention_read_matches_float64_evaluated_and_differentiated(frames):
    """The linear attention with 2 x 512 query rows (at the threshold: evaluated on the CPU, the queries
    are softmaxed before the heads split) and with 2 x 5 (after it), float32: its value evaluated and
    under differentiation is the float64 reference, and so is its gradient (central differences of the
    reference, for a few entries of q, k and v)."""
    rng = np.random.default_rng(12)
    q, k, v = (rng.standard_normal((2, frames, 8)) for _ in range(3))
    if frames == 512:
        assert 2 * frames >= model_lib.READ_SOFTMAX_BEFORE_SPLIT_ROWS
    mask = np.ones((2, frames), bool)
    mask[1, frames // 2 :] = False
    weights = rng.standard_normal((2, frames, 8))
    args = [jnp.asarray(a, jnp.float32) for a in (q, k, v)]

    def loss(q, k, v):
        return jnp.sum(weights * model_lib.efficient_attention(q, k, v, jnp.asarray(mask), 2))

    expected = ref_efficient_attention(q, k, v, mask, 2)
    evaluated = jax.jit(model_lib.efficient_attention, static_argnums=4)(*args, jnp.asarray(mask), 2)
    value, vjp = jax.vjp(lambda *a: model_lib.efficient_attention(*a, jnp.asarray(mask), 2), *args)
    np.testing.assert_allclose(np.asarray(evaluated, np.float64), expected, atol=2e-6, rtol=0)
    np.testing.assert_allclose(np.asarray(value, np.float64), expected, atol=2e-6, rtol=0)
    gradients = jax.grad(loss, argnums=(0, 1, 2))(*args)

    def query_max_shapes(jaxpr):  # the query softmax's max: over the last axis, 4 wide
        maxima = (eqn for eqn in equations(jaxpr) if eqn.primitive.name == "reduce_max")
        return {eqn.invars[0].aval.shape for eqn in maxima if eqn.params["axes"] == (3,)}

    attention = lambda *a: model_lib.efficient_attention(*a, jnp.asarray(mask), 2)  # noqa: E731
    before_split, heads_first = {(2, frames, 2, 4)}, {(2, 2, frames, 4)}
    assert query_max_shapes(jax.make_jaxpr(attention)(*args)) == (
        before_split if frames == 512 else heads_first
    )
    assert query_max_shapes(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(*args)) == heads_first
    step = 1e-6
    for which, (b, t, c) in [(0, (0, 3, 1)), (0, (1, 2, 6)), (1, (0, 4, 5)), (1, (1, 0, 2)), (2, (1, 1, 7))]:
        plus, minus = [np.copy(a) for a in (q, k, v)], [np.copy(a) for a in (q, k, v)]
        plus[which][b, t, c] += step
        minus[which][b, t, c] -= step
        numeric = np.sum(
            weights * (ref_efficient_attention(*plus, mask, 2) - ref_efficient_attention(*minus, mask, 2))
        )
        assert abs(float(gradients[which][b, t, c]) - numeric / (2 * step)) < 1e-4, (which, b, t, c)


# ---------------------------------------------------------------- kernels="pallas"


def _pallas_names(jaxpr) -> list[str]:
    """The names of the Pallas kernels a traced program calls (differentiated: its backward's too)."""
    return sorted(
        {str(eqn.params.get("name", "")) for eqn in equations(jaxpr) if eqn.primitive.name == "pallas_call"}
    )


def _pallas_calls(function, *args):
    """The names of the Pallas kernels in `function`'s program."""
    return _pallas_names(jax.make_jaxpr(function)(*args))


def test_pallas_kernels_compute_the_models_function(monkeypatch):
    """kernels="pallas", the kernels run (here in Pallas's interpreter: "cpu" added to the backends that
    take them): the whole model's output and the gradients of all its parameters equal XLA's to
    float32's rounding. Heads of 16, the kernels' smallest (the text's cross-attention too)."""
    monkeypatch.setattr(model_lib, "PALLAS_BACKENDS", ("gpu", "cpu"))
    xla, pallas = small_model(num_heads=2), small_model(num_heads=2, kernels="pallas")
    params = params_of(xla)
    inputs = make_batch()
    weights = np.random.default_rng(4).standard_normal((B, T, D)).astype(np.float32)

    def run(model):
        """One program per model, traced once for both the Pallas kernels it calls and its run: the
        output, and the loss sum(out * weights)'s value and gradients (the pullback of `weights`). A
        forward compiled apart, and a program traced apart for its kernels, had doubled the tracing and
        compiling of the Pallas interpreter's program."""

        def output_loss_and_gradients(p):
            out, pullback = jax.vjp(lambda q: model.apply({"params": q}, *inputs), p)
            return out, jnp.sum(out * weights), pullback(jnp.asarray(weights))[0]

        traced = jax.jit(output_loss_and_gradients).trace(params)
        return _pallas_names(traced.jaxpr), traced.lower().compile()(params)

    names, (out, ours, our_grads) = run(pallas)
    assert names == sorted([
        "key_value_context", "key_value_context_backward", "stylized_read", "stylized_read_statistics",
        "stylized_read_backward", "modulated_silu_backward",
    ])  # fmt: skip
    names, (their_out, theirs, their_grads) = run(xla)
    assert names == []
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(their_out), atol=1e-5)
    leaves = jax.tree_util.tree_leaves_with_path(their_grads)
    scale = max(float(jnp.max(jnp.abs(g))) for _, g in leaves)
    for (path, theirs_), ours_ in zip(leaves, jax.tree.leaves(our_grads), strict=True):
        np.testing.assert_allclose(
            np.asarray(ours_), np.asarray(theirs_), atol=1e-5 * scale, err_msg=jax.tree_util.keystr(path)
        )


def test_pallas_kernels_are_xla_off_a_gpu():
    """kernels="pallas" on a backend without Pallas's Triton kernels (this CPU): XLA's program, no kernel
    in it, the same output."""
    pallas = small_model(num_heads=2, kernels="pallas")
    params = params_of(pallas)
    inputs = make_batch()
    assert _pallas_calls(lambda p: pallas.apply({"params": p}, *inputs), params) == []
    np.testing.assert_array_equal(
        np.asarray(forward(pallas)(params, *inputs)),
        np.asarray(forward(small_model(num_heads=2))(params, *inputs)),
    )


@pytest.mark.parametrize("source", ["motion", "text"])
def test_the_context_kernels_compute_the_models_context(source, monkeypatch):
    """`key_value_context` with kernels="pallas" (both Dense kernels side by side, the LayerNorm folded
    in, the kernels interpreted) against XLA's: the value and the gradients of the source, the norm and
    both layers in float32, for self-attention's source (width C) and for a text of another width, with
    padded positions."""
    monkeypatch.setattr(model_lib, "PALLAS_BACKENDS", ("gpu", "cpu"))
    rng = np.random.default_rng(5)
    batch, length, heads, width = 2, 11, 2, 16
    source_width = heads * width if source == "motion" else 24
    f32 = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    standardized = f32(batch, length, source_width)
    norm = (f32(source_width), f32(source_width))
    key = (f32(source_width, heads * width) * 0.3, f32(heads * width))
    value = (f32(source_width, heads * width) * 0.3, f32(heads * width))
    mask = np.arange(length)[None, :] < np.array([[length], [7]])
    g = f32(batch, heads, width, width)

    def through(kernels):
        function = functools.partial(model_lib.key_value_context, kernels=kernels)
        value_, vjp = jax.vjp(
            lambda *a: function(*a, mask, heads, jnp.float32), standardized, norm, key, value
        )
        return value_, jax.tree.leaves(vjp(g))

    ours, our_grads = through("pallas")
    theirs, their_grads = through("xla")
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), atol=1e-5)
    assert len(our_grads) == len(their_grads) == 7
    # to float32's rounding of the largest gradient (the keys' bias has none: the key softmax over
    # positions does not change when a feature's keys all move together)
    scale = max(float(jnp.max(jnp.abs(b))) for b in their_grads)
    for a, b in zip(our_grads, their_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale)


def test_kernels_must_be_xla_or_pallas_and_old_configs_take_xla():
    with pytest.raises(ValueError, match="kernels must be one of"):
        small_model(kernels="triton").init(jax.random.key(0), *make_batch())
    config = base_config()
    config.model.input_feats, config.model.text_vocab_size = D, 50
    assert config.model.kernels == "xla" and model_lib.model_from_config(config).kernels == "xla"
    config.model.kernels = "triton"
    with pytest.raises(ValueError, match=r"model.kernels must be one of \('xla', 'pallas'\)"):
        model_lib.model_from_config(config)
    saved = config.to_dict()  # a checkpoint's config from before the field
    del saved["model"]["kernels"]
    import ml_collections

    assert model_lib.model_from_config(ml_collections.ConfigDict(saved)).kernels == "xla"
