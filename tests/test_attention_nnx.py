"""attention_entropy against a numpy oracle; the NNX module records it and composes."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import entreg
from tests import oracles

RNG = np.random.default_rng(0)


def oracle_rows(s, visible):
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        out[idx] = oracles.entropy(oracles.softmax(s[idx], visible[idx]))
    return out


def test_attention_entropy_matches_oracle_with_random_masks_and_causal():
    s = RNG.normal(size=(2, 3, 6, 6)) * 3
    mask = RNG.random((2, 1, 6, 6)) > 0.3
    mask[0, 0, 2] = False  # a row with no visible key
    full = np.broadcast_to(mask, s.shape)
    np.testing.assert_allclose(
        entreg.attention_entropy(s, mask=mask), oracle_rows(s, full), rtol=1e-12, atol=1e-12
    )
    causal = full & np.tril(np.ones((6, 6), bool))
    np.testing.assert_allclose(
        entreg.attention_entropy(s, mask=mask, causal=True),
        oracle_rows(s, causal),
        rtol=1e-12,
        atol=1e-12,
    )
    assert np.all(entreg.attention_entropy(s, mask=mask)[0, :, 2] == 0)


def test_gradient_is_minus_p_times_centred_logits():
    s = RNG.normal(size=(4, 5))
    g = jax.grad(lambda x: entreg.attention_entropy(x)[1])(s)
    p = oracles.softmax(s[1])
    want = np.zeros_like(s)
    want[1] = -p * (s[1] - (p * s[1]).sum())
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-14)


def test_causal_maxima_and_normalization():
    t = 128
    flat = np.zeros((t, t))
    h = entreg.attention_entropy(flat, causal=True)
    np.testing.assert_allclose(h, np.log(np.arange(1, t + 1)), rtol=1e-12)
    # Query-averaged causal maximum log(T!)/T (3.878 for T = 128, attention.md).
    from scipy.special import gammaln

    np.testing.assert_allclose(h.mean(), gammaln(t + 1) / t, rtol=1e-12)
    assert h.mean() == pytest.approx(3.878, abs=1e-3)
    hn = entreg.attention_entropy(flat, causal=True, normalize=True)
    np.testing.assert_allclose(hn[1:], 1.0, rtol=1e-12)
    assert hn[0] == 0
    gn = jax.grad(lambda x: entreg.attention_entropy(x, causal=True, normalize=True).sum())(flat)
    assert np.all(np.isfinite(gn))


def test_attention_entropy_errors():
    with pytest.raises(ValueError, match="logits"):
        entreg.attention_entropy(np.zeros(4))
    with pytest.raises(TypeError, match="mask"):
        entreg.attention_entropy(np.zeros((4, 4)), mask=np.ones((4, 4)))
    with pytest.raises(ValueError, match="mask"):
        entreg.attention_entropy(np.zeros((4, 4)), mask=np.ones((3, 4), bool))


def make(cls, **kw):
    return cls(num_heads=2, in_features=8, qkv_features=8, rngs=nnx.Rngs(0), decode=False, **kw)


@pytest.mark.parametrize("causal", [False, True])
def test_entropy_attention_is_a_drop_in_and_records_entropy(causal):
    x = jnp.asarray(RNG.normal(size=(3, 5, 8)))
    mask = jnp.asarray(RNG.random((3, 1, 5, 5)) > 0.3)
    m, ref = make(entreg.nnx.EntropyAttention), make(nnx.MultiHeadAttention)
    y, inter = nnx.capture(m, nnx.Intermediate)(x, mask=mask, is_causal=causal)
    visible = np.broadcast_to(np.asarray(mask), (3, 2, 5, 5))
    if causal:
        visible = visible & np.tril(np.ones((5, 5), bool))
    has_key = visible.any(-1)[:, 0, :]  # [batch, q] (the mask is shared by the heads)
    # float32 parameters; flax's own path fuses differently, so compare at float32 precision.
    want = ref(x, mask=mask, is_causal=causal)
    np.testing.assert_allclose(
        np.asarray(y)[has_key], np.asarray(want)[has_key], rtol=1e-5, atol=1e-6
    )
    # A query with no visible key attends to nothing: output 0 (flax averages every value).
    assert np.all(np.asarray(y)[~has_key] == m.out.bias[...])
    (h,) = entreg.nnx.collect(inter, "attention_entropy")["attention_entropy"]
    assert h.shape == (3, 2, 5)
    # Oracle: the logits formed by hand from the module's projections.
    q, k = m.query(x), m.key(x)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(4)
    np.testing.assert_allclose(h, oracle_rows(s, visible), rtol=1e-5, atol=1e-6)
    # A forward outside capture records nothing to collect.
    with pytest.raises(ValueError, match="attention_entropy"):
        entreg.nnx.collect(m, "attention_entropy")


def test_attention_fn_with_plain_module_records_only_with_sow_weights():
    x = jnp.asarray(RNG.normal(size=(2, 4, 8)))
    m = make(nnx.MultiHeadAttention, attention_fn=entreg.nnx.entropy_attention_fn)
    _, inter = nnx.capture(m, nnx.Intermediate)(x)
    assert not jax.tree.leaves(inter)
    _, inter = nnx.capture(lambda m, x: m(x, sow_weights=True), nnx.Intermediate)(m, x)
    assert entreg.nnx.collect(inter, "attention_entropy")["attention_entropy"][0].shape == (2, 2, 4)


class TwoLayer(nnx.Module):
    def __init__(self, rngs):
        self.l1 = entreg.nnx.EntropyAttention(2, 8, rngs=rngs, decode=False)
        self.l2 = entreg.nnx.EntropyAttention(2, 8, rngs=rngs, decode=False)

    def __call__(self, x):
        h = self.l1(x, is_causal=True)
        self.sow(nnx.Intermediate, "embeddings", h)
        return self.l2(h, is_causal=True)


def test_collect_layers_and_gradient_through_composed_loss():
    model = TwoLayer(nnx.Rngs(1))
    x = jnp.asarray(RNG.normal(size=(2, 6, 8)))
    graphdef, params = nnx.split(model)

    def task(params, x):
        y, inter = nnx.capture(nnx.merge(graphdef, params), nnx.Intermediate)(x)
        sig = entreg.nnx.collect(inter, "attention_entropy", "embeddings")
        return jnp.mean(y**2), {
            "attn": jnp.stack(sig["attention_entropy"]),
            "emb": sig["embeddings"][0],
        }

    f = entreg.compose(
        task,
        entreg.constraint(
            "floor", lambda s: s["attn"].mean(), lower=5.0, lr=0.1, init_multiplier=1.0
        ),
    )
    (loss, (_, metrics)), grads = jax.value_and_grad(f, has_aux=True)(params, x, state=f.init())
    assert metrics["floor/value"].shape == ()
    chex.assert_tree_all_finite(grads)
    # The metric is differentiable w.r.t. the attention parameters of both layers.
    g_metric = jax.grad(lambda p: f(p, x, state=f.init())[1][1]["floor/value"])(params)
    assert np.any(np.asarray(g_metric["l1"]["query"]["kernel"][...]) != 0)
    assert np.any(np.asarray(g_metric["l2"]["key"]["kernel"][...]) != 0)
    jitted = jax.jit(lambda p: f(p, x, state=f.init())[0])
    np.testing.assert_allclose(jitted(params), loss, rtol=1e-12)
