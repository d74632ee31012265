"""Divergences: float64 oracles, identities and bounds, the peer-bug inputs of core.md."""

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

KINDS = ["kl", "reverse_kl", "js", "squared_hellinger", "total_variation", "chi2"]
ALPHAS = [-0.5, 0.0, 1e-4, 0.3, 0.5, 0.9999, 1.0, 1.0001, 2.0, 3.0]
FLOATS = st.floats(-20, 20, allow_nan=False, width=64)
LOGITS = hnp.arrays(np.float64, (5,), elements=st.one_of(FLOATS, FLOATS, st.just(-np.inf)))
# At least one finite logit: a distribution. All-excluded rows are the `where` tests' business.
DISTS = LOGITS.filter(lambda z: np.isfinite(z).any())


def div(p_logits, q_logits, kind, alpha=None):
    if kind == "alpha":
        return entreg.f_divergence(p_logits, q_logits, "alpha", alpha=alpha)
    return entreg.f_divergence(p_logits, q_logits, kind)


@given(DISTS, DISTS, st.sampled_from(KINDS + [("alpha", a) for a in ALPHAS]))
def test_f_divergences_match_oracle(zp, zq, kind):
    kind, alpha = kind if isinstance(kind, tuple) else (kind, None)
    p, q = oracles.softmax(zp), oracles.softmax(zq)
    want = oracles.f_divergence(p, q, kind, alpha)
    got = float(div(zp, zq, kind, alpha))
    if np.isinf(want):
        assert got == np.inf
    else:
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_named_functions_and_scipy():
    rng = np.random.default_rng(0)
    zp, zq = rng.normal(size=(2, 4, 9)) * 2
    p = np.array([oracles.softmax(r) for r in zp])
    q = np.array([oracles.softmax(r) for r in zq])
    from scipy.spatial.distance import jensenshannon
    from scipy.special import rel_entr

    np.testing.assert_allclose(entreg.kl_divergence(zp, zq), rel_entr(p, q).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(
        entreg.js_divergence(zp, zq), jensenshannon(p, q, axis=-1) ** 2, rtol=1e-10
    )
    np.testing.assert_allclose(entreg.kl_divergence(zp, zq), entreg.f_divergence(zp, zq, "kl"))
    # Log-probabilities are valid logits.
    np.testing.assert_allclose(
        entreg.kl_divergence(np.log(p), np.log(q)), entreg.kl_divergence(zp, zq), rtol=1e-12
    )


@given(DISTS, DISTS)
def test_identities_and_bounds(zp, zq):
    kl = float(entreg.kl_divergence(zp, zq))
    assert kl >= -1e-12
    assert float(entreg.kl_divergence(zp, zp)) == pytest.approx(0.0, abs=1e-12)
    js, js_rev = float(entreg.js_divergence(zp, zq)), float(entreg.js_divergence(zq, zp))
    assert js == pytest.approx(js_rev, abs=1e-12)
    assert -1e-12 <= js <= np.log(2) + 1e-12
    tv = float(entreg.f_divergence(zp, zq, "total_variation"))
    assert -1e-12 <= tv <= 1 + 1e-12
    h2 = float(entreg.f_divergence(zp, zq, "squared_hellinger"))
    assert -1e-12 <= h2 <= 2 + 1e-12
    # Pinsker: TV <= sqrt(KL / 2).
    assert tv <= np.sqrt(kl / 2) + 1e-9
    # chi^2 = 2 D_alpha=2.
    chi2 = float(entreg.f_divergence(zp, zq, "chi2"))
    a2 = float(entreg.f_divergence(zp, zq, "alpha", alpha=2.0))
    assert chi2 == pytest.approx(2 * a2, rel=1e-9, abs=1e-12) or (np.isinf(chi2) and np.isinf(a2))


def test_kl_zero_only_at_equality():
    z = np.array([0.3, -1.0, 2.0])
    assert entreg.kl_divergence(z, z + 5.0) == pytest.approx(0.0, abs=1e-14)  # shift invariant
    assert entreg.kl_divergence(z, z * 1.001) > 0


def test_alpha_limits_continuous():
    rng = np.random.default_rng(1)
    zp, zq = rng.normal(size=(2, 6))
    kl_pq, kl_qp = entreg.kl_divergence(zp, zq), entreg.kl_divergence(zq, zp)
    for eps in (1e-3, 1e-6, 1e-9):
        np.testing.assert_allclose(div(zp, zq, "alpha", 1 + eps), kl_pq, rtol=3 * eps + 1e-9)
        np.testing.assert_allclose(div(zp, zq, "alpha", 1 - eps), kl_pq, rtol=3 * eps + 1e-9)
        np.testing.assert_allclose(div(zp, zq, "alpha", eps), kl_qp, rtol=3 * eps + 1e-9)
        np.testing.assert_allclose(div(zp, zq, "alpha", -eps), kl_qp, rtol=3 * eps + 1e-9)


def test_float32_precision_near_equal_distributions():
    # chi2 and squared Hellinger are sums of non-negative terms: full relative precision even
    # when p ~ q. KL-type sums p (log p - log q) have signed terms and keep float32 absolute
    # precision (~1e-7), as in every implementation of the textbook formula.
    rng = np.random.default_rng(2)
    zp = rng.normal(size=(16,)).astype(np.float32)
    zq = (zp + 1e-3 * rng.normal(size=(16,))).astype(np.float32)
    p, q = oracles.softmax(zp.astype(np.float64)), oracles.softmax(zq.astype(np.float64))
    for kind in ("chi2", "squared_hellinger"):
        np.testing.assert_allclose(div(zp, zq, kind), oracles.f_divergence(p, q, kind), rtol=1e-3)
    for kind, alpha in [("kl", None), ("alpha", 1.0001), ("alpha", 0.5), ("js", None)]:
        np.testing.assert_allclose(
            div(zp, zq, kind, alpha), oracles.f_divergence(p, q, kind, alpha), atol=3e-7
        )


def test_check_grads():
    rng = np.random.default_rng(3)
    zp, zq = (jnp.asarray(x) for x in rng.normal(size=(2, 3, 5)))
    for kind in KINDS:
        if kind == "total_variation":
            continue  # piecewise linear: checked analytically below
        check_grads(lambda a, b, k=kind: entreg.f_divergence(a, b, k), (zp, zq), order=1)
    for a in (-0.5, 0.5, 1.0001, 2.0):
        check_grads(lambda x, y, a=a: div(x, y, "alpha", a), (zp, zq), order=1)
    check_grads(entreg.kl_divergence, (zp, zq), order=2)
    check_grads(entreg.js_divergence, (zp, zq), order=2)


def test_total_variation_gradient_is_sign_and_zero_at_equality():
    z = np.array([0.0, 1.0, -1.0])
    g = jax.grad(lambda x: entreg.f_divergence(x, z, "total_variation"))(z)
    assert np.all(g == 0)


def test_peer_bug_inputs_core_sheet():
    # optax kl_divergence with a zero target: finite value, NaN gradient w.r.t. the target.
    p_logits = np.array([-np.inf, 0.0, 1.0])  # p has a zero
    q_logits = np.array([0.5, 0.0, -0.5])
    v = entreg.kl_divergence(p_logits, q_logits)
    gp, gq = jax.grad(entreg.kl_divergence, argnums=(0, 1))(p_logits, q_logits)
    assert np.isfinite(v) and np.all(np.isfinite(gp)) and np.all(np.isfinite(gq))
    np.testing.assert_allclose(
        v, oracles.kl(oracles.softmax(p_logits), oracles.softmax(q_logits)), rtol=1e-12
    )
    # optax kl_divergence_with_log_targets with a -inf log target: NaN value.
    assert np.isfinite(
        entreg.kl_divergence(np.array([-np.inf, np.log(0.5), np.log(0.5)]), q_logits)
    )
    # distrax / TFP KL(y || x) with a -inf logit in x: +inf value, NaN gradient.
    x = np.array([1.0, -np.inf, 0.0])
    y = np.array([0.0, 0.0, 0.0])
    assert entreg.kl_divergence(y, x) == np.inf
    gy, gx = jax.grad(entreg.kl_divergence, argnums=(0, 1))(y, x)
    assert np.all(np.isfinite(gy)) and np.all(np.isfinite(gx))
    for kind in KINDS + ["alpha"]:
        a = 2.0 if kind == "alpha" else None
        g = jax.grad(lambda u, v, k=kind, a=a: div(u, v, k, a), argnums=(0, 1))(y, x)
        assert all(np.all(np.isfinite(t)) for t in g), kind


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_no_nan(scale):
    zp = np.array([scale, 0.0, -scale, 1.0])
    zq = np.array([0.0, scale, 1.0, -scale])
    for dtype in (jnp.float32, jnp.float64, jnp.bfloat16):
        for kind in KINDS + ["alpha"]:
            a = 0.5 if kind == "alpha" else None
            f = lambda u, v, k=kind, a=a: div(u, v, k, a)  # noqa: E731
            u, v = jnp.asarray(zp, dtype), jnp.asarray(zq, dtype)
            val = f(u, v)
            g = jax.grad(f, argnums=(0, 1))(u, v)
            assert not np.isnan(val), (kind, dtype)
            assert all(np.all(np.isfinite(np.asarray(t, np.float32))) for t in g), (kind, dtype)


def test_fully_masked_rows():
    zp, zq = np.random.default_rng(4).normal(size=(2, 3, 4))
    where = np.array([True, False, True])
    for kind in KINDS + ["alpha"]:
        a = 0.5 if kind == "alpha" else None
        f = lambda u, k=kind, a=a: (  # noqa: E731
            entreg.f_divergence(u, zq, k, alpha=a, where=where)
        )
        assert f(zp)[1] == 0
        g = jax.grad(lambda u, f=f: f(u).sum())(zp)
        assert np.all(g[1] == 0) and np.all(np.isfinite(g))


def test_per_category_where_equals_neg_inf():
    zp, zq = np.random.default_rng(5).normal(size=(2, 6))
    where = np.array([True, True, False, True, False, True])
    for kind in KINDS:
        np.testing.assert_allclose(
            entreg.f_divergence(zp, zq, kind, where=where),
            entreg.f_divergence(np.where(where, zp, -np.inf), np.where(where, zq, -np.inf), kind),
            rtol=1e-12,
        )
