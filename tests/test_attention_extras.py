"""Attention sinks, effective keys, head-band fractions and the Theorem 3.1 entropy bound."""

import jax
import numpy as np
import pytest

import entreg
from tests import oracles


def test_sink_joins_the_partition_and_its_mass_is_reported():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 3, 5, 5)) * 2  # [batch, heads, q, k]
    sink = rng.normal(size=(3, 1))  # one logit per head
    mask = rng.random((2, 1, 1, 5)) > 0.3
    mask[0, ..., :] = False  # batch 0: only the sink is visible
    h = entreg.attention_entropy(s, mask=mask, causal=True, sink=sink)
    mass = entreg.attention_sink_mass(s, mask=mask, causal=True, sink=sink)
    hn = entreg.attention_entropy(s, mask=mask, causal=True, sink=sink, normalize=True)
    for b, k, i in np.ndindex(2, 3, 5):
        visible = mask[b, 0, 0] & (np.arange(5) <= i)
        row = np.concatenate([[sink[k, 0]], np.where(visible, s[b, k, i], -np.inf)])
        p = oracles.softmax(row)
        np.testing.assert_allclose(h[b, k, i], oracles.entropy(p), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(mass[b, k, i], p[0], rtol=1e-12)
        n = 1 + visible.sum()
        want = oracles.entropy(p) / np.log(n) if n > 1 else 0.0
        np.testing.assert_allclose(hn[b, k, i], want, rtol=1e-12, atol=1e-12)
    assert np.all(np.asarray(h)[0] == 0) and np.all(np.asarray(mass)[0] == 1)
    g = jax.grad(lambda x, t: entreg.attention_entropy(x, mask=mask, sink=t).sum(), (0, 1))
    assert all(np.all(np.isfinite(x)) for x in g(s, sink))
    with pytest.raises(ValueError, match="sink"):
        entreg.attention_entropy(s, sink=np.zeros((4, 1)))


def test_sink_mass_without_sink_is_first_key_and_effective_keys_is_exp_entropy():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(4, 6, 6))
    mask = rng.random((4, 1, 6)) > 0.4
    mask[0] = False
    p0 = entreg.attention_sink_mass(s, mask=mask)
    for b, i in np.ndindex(4, 6):
        row = np.where(mask[b, 0], s[b, i], -np.inf)
        np.testing.assert_allclose(p0[b, i], oracles.softmax(row)[0], atol=1e-12)
    n = entreg.effective_keys(s, mask=mask)
    h = entreg.attention_entropy(s, mask=mask)
    np.testing.assert_allclose(np.asarray(n)[1:], np.exp(np.asarray(h)[1:]), rtol=1e-12)
    assert np.all(np.asarray(n)[0] == 0)  # no visible key
    # Uniform attention over k visible keys attends to exactly k keys.
    np.testing.assert_allclose(entreg.effective_keys(np.zeros((3, 7)), causal=True), [1, 2, 3])


def test_head_entropy_fractions():
    # Values on both sides of each default threshold (0.1 and 0.9) and at them (strict bands).
    h = np.array([[0.05, 0.09, 0.1, 0.11, 0.5, 0.7, 0.89, 0.9, 0.91, 0.99], [0.3] * 5 + [0.95] * 5])
    collapse, overload = entreg.head_entropy_fractions(h)
    np.testing.assert_allclose(collapse, [0.2, 0.0])
    np.testing.assert_allclose(overload, [0.2, 0.5])
    collapse, overload = entreg.head_entropy_fractions(h.T, axis=0, collapse_below=0.6)
    np.testing.assert_allclose(collapse, [0.5, 0.5])
    np.testing.assert_allclose(overload, [0.2, 0.5])
    with pytest.raises(ValueError, match="collapse_below"):
        entreg.head_entropy_fractions(h, collapse_below=0.9, overload_above=0.5)
    with pytest.raises(ValueError, match="normalized_entropy"):
        entreg.head_entropy_fractions(np.zeros((3, 0)))


@pytest.mark.parametrize("length", [2, 50, 197])
def test_entropy_lower_bound_is_tight_on_the_one_spike_construction(length):
    for sigma in [0.0, 0.5, 2.0, 10.0, 200.0]:
        gamma = sigma * np.sqrt(length / (length - 1))
        row = np.zeros(length)
        row[0] = gamma
        want = oracles.entropy(oracles.softmax(row))
        got = float(entreg.entropy_lower_bound(sigma, length))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(entreg.entropy_lower_bound(2.0, 50), 3.76552, atol=1e-5)
    sig = np.linspace(0, 50, 101)
    assert np.all(np.diff(np.asarray(entreg.entropy_lower_bound(sig, length))) <= 0)
    assert np.all(np.isfinite(jax.vmap(jax.grad(entreg.entropy_lower_bound), (0, None))(sig, 50)))


def test_entropy_lower_bound_holds_for_random_attention():
    """Attention logits X W_Q W_K^T X^T never go below the bound of their sigma; the inputs are
    scaled so that sigma lies in [0.2, 4], where the bound is far from 0."""
    rng = np.random.default_rng(2)
    t, d = 12, 4
    bounds, gaps = [], []
    for target in rng.uniform(0.2, 4.0, 20):
        x = rng.normal(size=(t, d))
        wq, wk = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        sigma = np.linalg.norm(wk @ wq.T, 2) * np.linalg.norm(x @ x.T, 2)
        x *= np.sqrt(target / sigma)  # sigma scales with |x|^2
        sigma = np.linalg.norm(wk @ wq.T, 2) * np.linalg.norm(x @ x.T, 2)
        h = np.asarray(entreg.attention_entropy(x @ wq @ wk.T @ x.T))
        bound = float(entreg.entropy_lower_bound(sigma, t))
        assert h.min() >= bound - 1e-9
        bounds.append(bound)
        gaps.append(h.min() - bound)
    assert min(bounds) > 0.5 and max(bounds) < np.log(t)
    assert min(gaps) < 0.5  # the bound is not vacuous on these inputs
    with pytest.raises(ValueError, match="length"):
        entreg.entropy_lower_bound(2.0, 1)
