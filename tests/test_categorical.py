"""Entropies: float64 oracles, identities and bounds, edge values and gradients."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import entreg
from tests import oracles

ORDERS = [0.0, 0.3, 0.5, 0.999, 1.0, 1.0005, 1.5, 2.0, 7.0, np.inf]


def logits_strategy(k=6, allow_neg_inf=True):
    elements = st.floats(-30, 30, allow_nan=False, width=64)
    if allow_neg_inf:
        elements = st.one_of(elements, elements, elements, st.just(-np.inf))
    return hnp.arrays(np.float64, (k,), elements=elements)


def rows(seed=0, shape=(5, 7), scale=3.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


def test_entropy_matches_scipy():
    z = rows()
    z[1, 2] = -np.inf
    where = np.ones_like(z, bool)
    where[2, :3] = False
    got = entreg.entropy(z, where=where)
    want = [oracles.entropy(oracles.softmax(r, w)) for r, w in zip(z, where, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_entropy_axis_and_batch_shape():
    z = rows(shape=(3, 4, 5))
    got = entreg.entropy(z, axis=1)
    assert got.shape == (3, 5)
    want = np.array(
        [[oracles.entropy(oracles.softmax(z[i, :, j])) for j in range(5)] for i in range(3)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-12)


@given(logits_strategy())
def test_entropy_bounds(z):
    h = float(entreg.entropy(z))
    k = int(np.isfinite(z).sum())
    assert -1e-12 <= h <= (np.log(k) if k else 0.0) + 1e-12


def test_entropy_gradient_identity():
    # dH/dz_a = -p_a (log p_a + H) (Cui et al. 2025, eq. for softmax policies).
    z = rows(1)[0]
    p = oracles.softmax(z)
    h = oracles.entropy(p)
    np.testing.assert_allclose(jax.grad(entreg.entropy)(z), -p * (np.log(p) + h), rtol=1e-10)


def test_check_grads_entropies():
    z = jnp.asarray(rows(2, (3, 5)))
    check_grads(jax.jit(entreg.entropy), (z,), order=2)
    check_grads(jax.jit(lambda z: entreg.cross_entropy(z, z[::-1])), (z,), order=2)
    for a in (0.5, 1.0, 1.0005, 2.0):
        check_grads(jax.jit(lambda z, a=a: entreg.renyi_entropy(z, a)), (z,), order=1)
        check_grads(jax.jit(lambda z, a=a: entreg.tsallis_entropy(z, a)), (z,), order=1)
    # Exactly 0 included: |x| has no second derivative there, the entropy has (-1/4).
    x = jnp.array([-40.0, -5.0, -1.5, -1e-3, 0.0, 1e-3, 2.0, 5.0])
    check_grads(jax.jit(entreg.binary_entropy), (x,), order=3)


def test_excluded_category_equals_removed_category():
    """A -inf logit or a False mask entry behaves exactly as if the category did not exist."""
    z = rows(3)[0]
    reduced = np.delete(z, 2)
    z_inf = z.copy()
    z_inf[2] = -np.inf
    where = np.arange(z.size) != 2
    fns = [
        entreg.entropy,
        lambda x, **kw: entreg.renyi_entropy(x, 2.0, **kw),
        lambda x, **kw: entreg.renyi_entropy(x, 1.0, **kw),
        lambda x, **kw: entreg.tsallis_entropy(x, 0.5, **kw),
    ]
    for f in fns:
        g_red = jax.grad(f)(reduced)
        for x, w in ((z_inf, None), (z, where)):
            np.testing.assert_allclose(f(x, where=w), f(reduced), rtol=1e-12)
            g = jax.grad(lambda x, w=w, f=f: f(x, where=w))(x)
            assert np.all(np.isfinite(g)) and g[2] == 0
            np.testing.assert_allclose(np.delete(g, 2), g_red, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "fn",
    [
        entreg.entropy,
        lambda z, **kw: entreg.renyi_entropy(z, 2.0, **kw),
        lambda z, **kw: entreg.renyi_entropy(z, 1.0, **kw),
        lambda z, **kw: entreg.renyi_entropy(z, np.inf, **kw),
        lambda z, **kw: entreg.tsallis_entropy(z, 0.5, **kw),
        lambda z, **kw: entreg.cross_entropy(z, z[..., ::-1], **kw),
    ],
)
def test_fully_masked_rows_zero_value_zero_grad(fn):
    z = rows(4, (3, 5))
    where = np.ones((3,), bool)
    where[1] = False
    val = fn(z, where=where)
    assert val[1] == 0
    g = jax.grad(lambda z: fn(z, where=where).sum())(z)
    assert np.all(g[1] == 0) and np.all(np.isfinite(g))
    all_neg_inf = np.full((2, 4), -np.inf)
    assert np.all(fn(all_neg_inf) == 0)
    assert np.all(jax.grad(lambda z: fn(z).sum())(all_neg_inf) == 0)


EDGE_LOGITS = {
    "one_hot": np.array([0.0, -np.inf, -np.inf, -np.inf]),
    "near_one_hot": np.array([1e4, 0.0, 0.0, -1e4]),
    "plus_minus_1e4": np.array([1e4, -1e4, 1e4, 3.0]),
    "neg_inf_mixed": np.array([-np.inf, 2.0, -np.inf, -1.0]),
    "very_negative": np.array([-1e4, -1e4 - 1, -1e4 + 2, -1e4]),
}


@pytest.mark.parametrize("name", sorted(EDGE_LOGITS))
def test_edges_values_and_gradients_finite(name):
    z = EDGE_LOGITS[name]
    p = oracles.softmax(z)
    k = int(np.isfinite(z).sum())
    cases = [(entreg.entropy, oracles.entropy(p))]
    for a in ORDERS:
        cases.append((lambda x, a=a: entreg.renyi_entropy(x, a), oracles.renyi(p, a, k)))
        cases.append((lambda x, a=a: entreg.tsallis_entropy(x, a), oracles.tsallis(p, a, k)))
    for f, want in cases:
        np.testing.assert_allclose(f(z), want, rtol=1e-9, atol=1e-9)
        assert np.all(np.isfinite(jax.grad(f)(z)))


def test_float32_and_bfloat16_accumulate_in_float32():
    z = rows(5, (4, 33)).astype(np.float32)
    want = [oracles.entropy(oracles.softmax(r)) for r in z.astype(np.float64)]
    h32 = entreg.entropy(jnp.asarray(z, jnp.float32))
    assert h32.dtype == jnp.float32
    np.testing.assert_allclose(h32, want, rtol=2e-6)
    zb = jnp.asarray(z, jnp.bfloat16)
    hb = entreg.entropy(zb)
    assert hb.dtype == jnp.float32
    # Oracle on the bf16-rounded logits: the only error left is float32 accumulation.
    want_b = [oracles.entropy(oracles.softmax(r)) for r in np.asarray(zb, np.float64)]
    np.testing.assert_allclose(hb, want_b, rtol=2e-6)
    g = jax.grad(lambda x: entreg.entropy(x).sum())(zb)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_reference_sheet_bf16_value():
    # core.md: true entropy 0.8323 for this input; distrax gives 0.832 and TFP 0.836 in bf16.
    z = jnp.asarray([0.0, 1.0, 2.0], jnp.bfloat16)
    np.testing.assert_allclose(
        entreg.entropy(z), oracles.entropy(oracles.softmax([0, 1, 2])), rtol=1e-6
    )


def test_cross_entropy_matches_oracle_and_identity():
    z, t = rows(6), rows(7)
    p = np.array([oracles.softmax(r) for r in t])
    q = np.array([oracles.softmax(r) for r in z])
    want = -(p * np.log(q)).sum(-1)
    np.testing.assert_allclose(entreg.cross_entropy(z, t), want, rtol=1e-12)
    np.testing.assert_allclose(entreg.cross_entropy(z, target_probs=p), want, rtol=1e-12)
    # CE(t, p) = H(t) + KL(t || p)
    np.testing.assert_allclose(
        entreg.cross_entropy(z, t), entreg.entropy(t) + entreg.kl_divergence(t, z), rtol=1e-12
    )
    g = jax.grad(lambda probs: entreg.cross_entropy(z, target_probs=probs).sum())(p)
    np.testing.assert_allclose(g, -np.log(q), rtol=1e-12)


def test_cross_entropy_peer_bug_inputs():
    # optax softmax_cross_entropy: -inf logit where the label is 0 gives NaN.
    z = np.array([2.0, -np.inf, 0.5])
    labels = np.array([1.0, 0.0, 0.0])
    assert np.isclose(entreg.cross_entropy(z, target_probs=labels), -np.log(oracles.softmax(z)[0]))
    assert np.all(np.isfinite(jax.grad(lambda x: entreg.cross_entropy(x, target_probs=labels))(z)))
    # optax safe_softmax_cross_entropy(x, softmax(x)) with a -inf logit: NaN gradient.
    f = lambda x: entreg.cross_entropy(x, target_probs=jax.nn.softmax(x))  # noqa: E731
    np.testing.assert_allclose(f(z), oracles.entropy(oracles.softmax(z)), rtol=1e-12)
    assert np.all(np.isfinite(jax.grad(f)(z)))
    # Target mass on an excluded category: +inf, finite gradient.
    bad = np.array([0.5, 0.5, 0.0])
    assert entreg.cross_entropy(z, target_probs=bad) == np.inf
    assert np.all(np.isfinite(jax.grad(lambda x: entreg.cross_entropy(x, target_probs=bad))(z)))


@given(logits_strategy(), st.sampled_from(ORDERS[:-1]))
def test_renyi_tsallis_match_oracle(z, a):
    p, k = oracles.softmax(z), int(np.isfinite(z).sum())
    np.testing.assert_allclose(
        entreg.renyi_entropy(z, a), oracles.renyi(p, a, k), rtol=1e-8, atol=1e-9
    )
    np.testing.assert_allclose(
        entreg.tsallis_entropy(z, a), oracles.tsallis(p, a, k), rtol=1e-8, atol=1e-9
    )


@given(logits_strategy())
def test_renyi_non_increasing_in_order(z):
    vals = [float(entreg.renyi_entropy(z, a)) for a in ORDERS]
    assert all(b <= a + 1e-9 for a, b in zip(vals, vals[1:], strict=False))


def test_orders_continuous_through_one_value_and_gradient():
    z = jnp.asarray(rows(8)[0])
    h = entreg.entropy(z)
    for fn in (entreg.renyi_entropy, entreg.tsallis_entropy):
        # Traced order: the same function under grad w.r.t. the order.
        orders = 1.0 + np.array(
            [-3e-3, -1.0001e-3, -0.9999e-3, -1e-6, 0.0, 1e-6, 0.9999e-3, 1.0001e-3, 3e-3]
        )
        vals = np.array([fn(z, jnp.asarray(a)) for a in orders])
        np.testing.assert_allclose(vals[4], h, rtol=1e-12)
        # Smooth: second differences tiny on both sides of the series/direct switch.
        slope = np.diff(vals) / np.diff(orders)
        np.testing.assert_allclose(slope, slope[0], rtol=2e-2)
        d_order = np.array([jax.grad(lambda a, fn=fn: fn(z, a))(jnp.asarray(a)) for a in orders])
        assert np.all(np.isfinite(d_order))
        np.testing.assert_allclose(d_order, d_order[4], rtol=2e-2)
        # Gradient w.r.t. logits at order 1 equals the Shannon gradient.
        np.testing.assert_allclose(
            jax.grad(lambda x, fn=fn: fn(x, 1.0))(z), jax.grad(entreg.entropy)(z), rtol=1e-10
        )
        # Static and traced orders agree.
        for a in (0.3, 1.0, 1.0005, 2.0):
            np.testing.assert_allclose(fn(z, a), fn(z, jnp.asarray(a)), rtol=1e-12)


def test_renyi_order_derivative_at_one_is_minus_half_variance():
    z = jnp.asarray(rows(9)[0])
    p = oracles.softmax(np.asarray(z))
    lp = np.log(p)
    var = (p * (lp - (p * lp).sum()) ** 2).sum()
    d = jax.grad(lambda a: entreg.renyi_entropy(z, a))(jnp.asarray(1.0))
    np.testing.assert_allclose(d, -var / 2, rtol=1e-9)


def test_renyi_precision_near_one_in_float32():
    z = jnp.asarray(rows(10)[0], jnp.float32)
    p = oracles.softmax(np.asarray(z, np.float64))
    for a in (1.0 + 2e-3, 1.0 - 2e-3, 1.05):
        np.testing.assert_allclose(entreg.renyi_entropy(z, a), oracles.renyi(p, a), rtol=1e-6)
        np.testing.assert_allclose(entreg.tsallis_entropy(z, a), oracles.tsallis(p, a), rtol=1e-6)


def test_binary_entropy():
    x = np.array([-1e4, -40.0, -17.0, -1.0, 0.0, 0.3, 17.0, 40.0, 1e4])
    assert np.all(entreg.binary_entropy(np.array([-np.inf, np.inf])) == 0)
    assert np.all(
        jax.grad(lambda v: entreg.binary_entropy(v).sum())(np.array([-np.inf, np.inf])) == 0
    )
    # Float64 oracle without cancellation: H = log1p(e^-|x|) + |x| e^-|x| / (1 + e^-|x|).
    a = np.abs(x)
    want = np.log1p(np.exp(-a)) + a * np.exp(-a) / (1 + np.exp(-a))
    np.testing.assert_allclose(
        entreg.binary_entropy(jnp.asarray(x, jnp.float32)), want, rtol=1e-5, atol=1e-30
    )
    p = 1 / (1 + np.exp(-x[3:6]))
    np.testing.assert_allclose(want[3:6], -(p * np.log(p) + (1 - p) * np.log1p(-p)), rtol=1e-12)
    g = jax.grad(lambda v: entreg.binary_entropy(v).sum())(x)
    assert np.all(np.isfinite(g)) and g[4] == 0
    np.testing.assert_allclose(
        entreg.binary_entropy(x), entreg.entropy(np.stack([x, np.zeros_like(x)], -1)), atol=1e-12
    )
    w = x > 0
    np.testing.assert_allclose(entreg.binary_entropy(x, where=w), np.where(w, want, 0), atol=1e-9)
